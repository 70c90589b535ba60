"""Bad places and bad files give one-line errors, never tracebacks (``dspec`` CLI).

A table of filesystem faults on ``--out`` / ``--save`` (a file, a missing
parent under a file, a read-only directory, a full disk) for every command that
writes, each checked before any computation (so each case runs in well under a
second of command time); corrupt ``--load`` archives; and ``check-sampler`` on a
module that does not compile, a function of the wrong arity, and a sampler that
raises (exit code 4, distinct from "rejected" = 1).  Every case asserts the exit
code and that stderr is one line naming the flag.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dspec_cli.main import main


def _one_line(capsys) -> str:
  err = capsys.readouterr().err.strip()
  lines = [l for l in err.splitlines() if l.startswith("dspec ")]
  assert len(lines) == 1 and "Traceback" not in err, err
  return lines[0]


@pytest.fixture
def a_file(tmp_path) -> Path:
  f = tmp_path / "plain.txt"
  f.write_text("not a directory\n")
  return f


def _mount_tmpfs(path: Path, options: str) -> bool:
  path.mkdir(parents=True, exist_ok=True)
  if os.geteuid() != 0:
    return False
  return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                        capture_output=True).returncode == 0


@pytest.fixture
def read_only_dir(tmp_path):
  """A directory nobody can write in: chmod 555 (non-root) or a read-only tmpfs (root)."""
  d = tmp_path / "ro"
  if os.geteuid() != 0:
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)
    return
  if not _mount_tmpfs(d, "ro,size=64k"):
    pytest.skip("cannot make a read-only directory as root here (no tmpfs mount)")
  try:
    yield d
  finally:
    subprocess.run(["umount", str(d)], check=False)


@pytest.fixture
def full_dir(tmp_path):
  """A directory on a full file system (a 64 KiB tmpfs filled up; root only)."""
  d = tmp_path / "full"
  if not _mount_tmpfs(d, "size=64k"):
    pytest.skip("a full file system needs a tmpfs mount (root)")
  try:
    with open(d / "filler", "wb", buffering=0) as f:
      try:
        while True:
          f.write(b"\0" * 4096)
      except OSError:
        pass
    yield d
  finally:
    subprocess.run(["umount", str(d)], check=False)


TRAIN = ["train", "--steps", "2", "--no-progress", "--out"]
DISTILL = ["distill", "--teacher", "nowhere_t", "--student", "nowhere_s", "--steps", "2", "--out"]
SD = ["sd", "--target", "nowhere_t", "--draft", "nowhere_s", "--out"]
MARKOV = ["theory", "markov", "--vocab", "4", "--max-len", "3", "--gamma", "1", "--save"]
SUMMARY = ["distill-summary", "nowhere_run", "--out"]
COMMANDS = {"train": (TRAIN, "--out"), "distill": (DISTILL, "--out"), "sd": (SD, "--out"),
            "theory markov": (MARKOV, "--save"), "distill-summary": (SUMMARY, "--out")}
FILE_TARGET = {"theory markov": "pair.npz", "distill-summary": "summary.json"}


def _target(kind: str, command: str, base: Path) -> str:
  leaf = FILE_TARGET.get(command, "run")
  if kind == "is a file":
    if command not in FILE_TARGET:
      return str(base)
    (base.parent / leaf).mkdir()   # a file target that is a directory
    return str(base.parent / leaf)
  return str(base / leaf)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["is a file", "parent is a file", "read-only", "disk full"])
def test_unwritable_out_is_one_line_before_computing(command, kind, request, tmp_path, capsys):
  argv, flag = COMMANDS[command]
  if kind in ("is a file", "parent is a file"):
    base = request.getfixturevalue("a_file")
    if kind == "parent is a file":
      base = base / "sub"
  else:
    base = request.getfixturevalue("read_only_dir" if kind == "read-only" else "full_dir")
  assert main(argv + [_target(kind, command, base)]) == 2
  line = _one_line(capsys)
  assert f"{flag}:" in line, line


# --- --load of bad archives -------------------------------------------------------------

def _pair_arrays(eos):
  p = np.full((4,), 0.25)
  t = np.full((4, 4), 0.25)
  return dict(p_init=p, p_trans=t, q_init=p, q_trans=t, eos=eos)


@pytest.mark.parametrize("what,says", [
    ("corrupt zip", "cannot read"), ("text file", "cannot read"),
    ("array eos", "eos must be an integer scalar"), ("eos 1.7", "eos must be an integer scalar"),
    ("missing", "cannot read")])
def test_bad_load_archives(what, says, tmp_path, capsys):
  path = tmp_path / "pair.npz"
  if what == "corrupt zip":
    np.savez(path, **_pair_arrays(0))
    path.write_bytes(path.read_bytes()[:100])
  elif what == "text file":
    path.write_text("hello\n")
  elif what == "array eos":
    np.savez(path, **_pair_arrays(np.array([0, 1])))
  elif what == "eos 1.7":
    np.savez(path, **_pair_arrays(1.7))
  assert main(["theory", "markov", "--max-len", "3", "--gamma", "1", "--load", str(path)]) == 2
  line = _one_line(capsys)
  assert "--load" in line and says in line, line


def test_good_load_still_works(tmp_path, capsys):
  path = tmp_path / "pair.npz"
  np.savez(path, **_pair_arrays(np.int64(0)))
  assert main(["theory", "markov", "--max-len", "3", "--gamma", "1", "--load", str(path),
               "--json"]) == 0


# --- check-sampler on broken samplers ---------------------------------------------------

BROKEN = {
    "syntax": ("def step(key, target, draft, context, gamma)\n  return None\n", 2, "syntax error"),
    "arity": ("def step(key, target):\n  return None\n", 2, "cannot be called as step("),
    "raises": ("def step(key, target, draft, context, gamma):\n"
               "  raise RuntimeError('boom in the sampler')\n", 3, "the sampler"),
    "raises_value_error": ("def step(key, target, draft, context, gamma):\n"
                           "  raise ValueError('bad shapes in the sampler')\n", 3, "the sampler"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_sampler_on_broken_samplers(case, tmp_path, monkeypatch, capsys):
  source, code, says = BROKEN[case]
  name = f"broken_sampler_{case}"
  (tmp_path / f"{name}.py").write_text(source)
  monkeypatch.syspath_prepend(str(tmp_path))
  sys.modules.pop(name, None)
  assert main(["check-sampler", f"{name}:step", "--gammas", "1", "--samples", "50"]) == code
  line = _one_line(capsys)
  assert says in line, line


# --- messages that name the right thing -------------------------------------------------

def _fake_distill_summary(run: Path) -> None:
  import json

  run.mkdir()
  rec = {"step": 0, "sd": {"T1_g3": {"temperature": 1.0, "gamma": 3}}}
  (run / "summary.json").write_text(json.dumps(
      {"kind": "distill", "recipe": {"name": "gkd", "divergence": "fkl"}, "steps": 4,
       "before": rec, "after": dict(rec, step=4), "trajectory": []}))


@pytest.mark.parametrize("argv,says", [
    (["theory", "markov", "--vocab", "4", "--max-len", "3", "--gamma", "1", "--strength", "inf"],
     "strength must be a finite number >= 0"),
    (["theory", "markov", "--vocab", "4", "--max-len", "3", "--gamma", "1", "--mc", "-5"],
     "--mc must be >= 0"),
    (["distill-summary", "RUN", "--remeasure", "-1"], "--remeasure must be >= 0"),
    (["distill-summary", "RUN", "--temperature", "0.7"], "--temperature 0.7: these runs measured"),
    (["sd", "--target", "FILE", "--draft", "FILE"], "--target: "),
    (["train", "--warmup-steps", "50", "--steps", "2", "--no-progress", "--out", "OUT"],
     "warmup_steps (50) must be <= cooldown_end (2"),
])
def test_messages_name_the_right_thing(argv, says, tmp_path, a_file, capsys):
  run = tmp_path / "kd"
  _fake_distill_summary(run)
  argv = [str(run) if a == "RUN" else str(a_file) if a == "FILE" else
          str(tmp_path / "out") if a == "OUT" else a for a in argv]
  assert main(argv) == 2
  line = _one_line(capsys)
  assert says in line, line


def test_distill_summary_of_a_measured_temperature_still_works(tmp_path, capsys):
  run = tmp_path / "kd"
  _fake_distill_summary(run)
  assert main(["distill-summary", str(run), "--temperature", "1", "--out",
               str(tmp_path / "s.json")]) == 0
  assert "SD at T=1" in capsys.readouterr().out


def test_sd_report_follows_the_umask(tmp_path):
  from dspec_models.measure.report import write_report

  old = os.umask(0o022)
  try:
    write_report(tmp_path / "sd_measure.json", {"x": 1})
  finally:
    os.umask(old)
  assert (tmp_path / "sd_measure.json").stat().st_mode & 0o777 == 0o644
