"""Runs every benchmark of the exact layer: ``python -m benchmarks``."""

from benchmarks import bench_theory

if __name__ == "__main__":
  bench_theory.main()
