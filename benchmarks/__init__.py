"""Benchmarks: speed goals measured as ratios within one run (never timed tests)."""
