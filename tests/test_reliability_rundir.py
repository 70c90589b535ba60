"""Run directories never lie and damaged checkpoints never stop a run (real tiny runs).

* a rerun into an existing ``--out`` with any setting that changes what the run
  is (task, steps, lr, batch size, seed, schedule, data, model; for
  ``distill`` the teacher and the student by identity) is refused with one
  line naming the flag, the recorded and the new value and the way out, and
  leaves ``config.json``, ``metrics.jsonl`` and the checkpoints untouched;
  ``--extend-steps N`` extends on the recorded schedule and records it in
  ``history``; ``--fresh`` starts over; the same teacher under another path
  (same parameters) is accepted;
* a damaged newest checkpoint (truncated or bit-flipped array data, truncated
  ``meta/metadata``, deleted manifest, empty stray step directory) is
  reported in one line and the run resumes from the newest intact one, ending
  bit-identical to the undamaged run; with no intact checkpoint the run is
  refused naming the directories; ``load_model`` (``sd``) names the run and step;
* the resumed ``metrics.jsonl`` equals the uninterrupted one except timing
  fields, also when ``--checkpoint-every`` does not divide ``--log-every``;
* run records follow the umask.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from dspec_cli.main import main
from tests.test_training_sft import train_straight_and_crashed

TASK = "dspec_translate_en_de"
TINY = (("d_model", 32), ("d_ff", 64), ("num_heads", 2), ("head_dim", 16), ("num_layers", 1),
        ("num_encoder_layers", 1))
OVERRIDES = sum((["--override", f"{k}={v}"] for k, v in TINY), [])
TIMING = ("tokens_per_s", "steps_per_s", "eval_seconds")


def _require_corpus():
  from dspec_models.data import task_spec

  if not task_spec(TASK).available():
    pytest.skip(f"corpus of {TASK} not installed: run `bash scripts/install_corpora.sh`")


def _train_argv(out: Path, *extra: str) -> list[str]:
  return (["train", "--task", TASK, "--model", "draft", "--out", str(out), "--batch-size", "8",
           "--train-limit", "64", "--eval-examples", "8", "--score-examples", "0",
           "--eval-every", "0", "--checkpoint-every", "2", "--log-every", "1", "--no-progress"]
          + OVERRIDES + list(extra))


def _snapshot(run: Path) -> dict:
  out = {}
  for p in sorted(run.rglob("*")):
    if p.is_file() and "plots" not in p.parts:
      out[p.relative_to(run).as_posix()] = p.read_bytes()
  return out


def _params(run: Path):
  from dspec_models.training import load_model

  return jax.tree_util.tree_leaves(load_model(run)[1])


def _assert_same_params(a: Path, b: Path) -> None:
  for x, y in zip(_params(a), _params(b)):
    np.testing.assert_array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A finished 4-step SFT run (checkpoints at steps 2 and 4), made through the CLI."""
  _require_corpus()
  out = tmp_path_factory.mktemp("rel") / "base"
  assert main(_train_argv(out, "--steps", "4")) == 0
  return out


def _copy(run: Path, dest: Path) -> Path:
  shutil.copytree(run, dest)
  return dest


CHANGED = [
    (["--steps", "8"], "--steps: recorded 4, new 8", "--extend-steps 4"),
    (["--lr", "0.02"], "--lr: recorded 0.01, new 0.02", "--fresh"),
    (["--batch-size", "4"], "--batch-size: recorded 8, new 4", "--fresh"),
    (["--seed", "3"], "--seed: recorded 0, new 3", "--fresh"),
    (["--train-limit", "32"], "--train-limit: recorded 64, new 32", "--fresh"),
    (["--warmup-steps", "1"], "--warmup-steps: recorded 0, new 1", "--fresh"),
    (["--no-param-scale"], "--no-param-scale: recorded True, new False", "--fresh"),
    (["--max-target-len", "12"], "--max-target-len: recorded", "--fresh"),
    (["--override", "d_ff=48"], "--model/--override: recorded", "--fresh"),
]


@pytest.mark.parametrize("extra,says,way_out", CHANGED, ids=[c[0][0] for c in CHANGED])
def test_rerun_with_other_settings_is_refused_and_changes_nothing(base_run, tmp_path, capsys,
                                                                  extra, says, way_out):
  run = _copy(base_run, tmp_path / "run")
  before = _snapshot(run)
  capsys.readouterr()
  assert main(_train_argv(run, *extra)) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert says in err and way_out in err and str(run) in err, err
  assert _snapshot(run) == before


def test_rerun_with_another_task_is_refused(base_run, tmp_path):
  from dspec_models.training.sft import SFTOptions, train_sft

  run = _copy(base_run, tmp_path / "run")
  before = _snapshot(run)
  options = SFTOptions(run_dir=str(run), task="dspec_lm_ptb", model="draft", steps=4,
                       batch_size=8, train_limit=64, eval_examples=8, score_examples=0,
                       evaluate=False, checkpoint_every=2, log_every=1, progress=False,
                       model_overrides=TINY[:-1])
  with pytest.raises(ValueError, match="--task: recorded 'dspec_translate_en_de', new "
                                       "'dspec_lm_ptb'.*--fresh") as info:
    train_sft(options)
  assert "\n" not in str(info.value)
  assert _snapshot(run) == before


def test_same_command_resumes_and_extend_steps_records_history(base_run, tmp_path):
  from dspec_models.training import read_config, read_metrics
  from dspec_models.training.schedule import ScheduleConfig, learning_rate_at

  run = _copy(base_run, tmp_path / "run")
  recorded = read_config(run)
  assert main(_train_argv(run)) == 0            # same command, --steps inherited: nothing to do
  assert read_config(run)["train"]["steps"] == 4 and "history" not in read_config(run)
  assert main(_train_argv(run, "--extend-steps", "2", "--steps", "6")) == 2   # exclusive
  assert main(_train_argv(run, "--extend-steps", "2")) == 0
  config = read_config(run)
  assert config["train"]["steps"] == 6 and config["schedule"] == recorded["schedule"]
  assert config["history"] == [{"event": "extend_steps", "extend_steps": 2, "from_steps": 4,
                                "to_steps": 6}]
  train = read_metrics(run, "train")
  assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
  sched = ScheduleConfig(**recorded["schedule"])
  for r in train:   # the record of step s holds the rate used by the update s-1 -> s
    assert r["learning_rate"] == pytest.approx(learning_rate_at(sched, r["step"] - 1), rel=1e-12)
  assert main(_train_argv(run)) == 0            # rerun after the extension: resumes, no change
  assert read_config(run)["history"] == config["history"]
  assert main(_train_argv(run, "--steps", "4")) == 2    # below the recorded (extended) steps


def test_fresh_starts_over(base_run, tmp_path):
  from dspec_models.training import read_config, read_metrics

  run = _copy(base_run, tmp_path / "run")
  (run / "notes.txt").write_text("kept")
  assert main(_train_argv(run, "--steps", "2", "--lr", "0.02", "--fresh")) == 0
  config = read_config(run)
  assert config["train"]["learning_rate"] == 0.02 and config["train"]["steps"] == 2
  assert "history" not in config
  assert [r["step"] for r in read_metrics(run, "train")] == [1, 2]
  assert (run / "notes.txt").read_text() == "kept"


# --- distillation: teacher and student by identity -------------------------------------

@pytest.fixture(scope="module")
def distill_pair(tmp_path_factory):
  _require_corpus()
  from dspec_models.training.sft import SFTOptions, train_sft

  root = tmp_path_factory.mktemp("pair")
  common = dict(task=TASK, model="draft", batch_size=8, train_limit=64, eval_examples=8,
                score_examples=0, evaluate=False, checkpoint_every=2, log_every=1,
                model_overrides=TINY, progress=False)
  for name, seed in (("teacher", 0), ("student", 1), ("teacher2", 2)):
    train_sft(SFTOptions(run_dir=str(root / name), steps=2, seed=seed, **common))
  return root


def _distill_argv(root: Path, out: Path, teacher: str = "teacher", student: str = "student",
                  *extra: str) -> list[str]:
  return ["distill", "--teacher", str(root / teacher), "--student", str(root / student),
          "--out", str(out), "--algo", "supervised_kd", "--steps", "2", "--batch-size", "8",
          "--train-limit", "64", "--eval-every", "0", "--eval-examples", "8",
          "--score-examples", "0", "--gammas", "", "--length-samples", "1",
          "--checkpoint-every", "1", "--log-every", "1", "--no-progress"] + list(extra)


def test_distill_rerun_checks_teacher_and_student_by_identity(distill_pair, tmp_path, capsys):
  from dspec_models.training import read_config

  root = distill_pair
  out = tmp_path / "kd"
  assert main(_distill_argv(root, out)) == 0
  config = read_config(out)
  assert len(config["teacher"]["params_sha256"]) == 64
  assert config["student_init"]["step"] == 2
  before = _snapshot(out)
  capsys.readouterr()
  for teacher, student, flag in (("teacher2", "student", "--teacher"),
                                 ("teacher", "teacher2", "--student")):
    assert main(_distill_argv(root, out, teacher, student)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag}: recorded '{root}/" in err, err
    assert "(params " in err and "--fresh" in err, err
    assert _snapshot(out) == before
  assert main(_distill_argv(root, out, "teacher", "student", "--lr", "0.001")) == 2
  assert "--lr: recorded 0.003, new 0.001" in capsys.readouterr().err
  assert main(_distill_argv(root, out, "teacher", "student", "--algo", "gkd")) == 2
  assert "--algo: recorded 'supervised_kd', new 'gkd'" in capsys.readouterr().err
  # the same teacher under another path: same parameters, accepted (recorded in history)
  _copy(root / "teacher", root / "teacher_moved")
  assert main(_distill_argv(root, out, "teacher_moved", "student")) == 0
  assert read_config(out)["history"][-1]["changed"]["teacher_run"] == [
      str(root / "teacher"), str(root / "teacher_moved")]


def test_missing_teacher_names_the_flag(distill_pair, tmp_path, capsys):
  assert main(_distill_argv(distill_pair, tmp_path / "kd", "nowhere", "student")) == 2
  err = capsys.readouterr().err
  assert "--teacher: run directory" in err and "does not exist" in err


# --- damaged checkpoints ------------------------------------------------------------------

def _newest_data_file(step_dir: Path) -> Path:
  files = [p for p in (step_dir / "params").rglob("*") if p.is_file() and "/d/" in p.as_posix()]
  return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir: Path) -> None:
  f = _newest_data_file(step_dir)
  f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _bit_flip(step_dir: Path) -> None:
  f = _newest_data_file(step_dir)
  data = bytearray(f.read_bytes())
  data[len(data) // 2] ^= 0x10
  f.write_bytes(bytes(data))


def _truncate_meta(step_dir: Path) -> None:
  f = step_dir / "meta" / "metadata"
  f.write_bytes(f.read_bytes()[:5])


def _delete_manifest(step_dir: Path) -> None:
  (step_dir / "params" / "manifest.ocdbt").unlink()


DAMAGE = {"truncated array data": _truncate, "bit-flipped array data": _bit_flip,
          "truncated meta": _truncate_meta, "deleted manifest": _delete_manifest}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_latest_checkpoint_resumes_from_the_intact_one(base_run, tmp_path, capsys, how):
  from dspec_models.training import load_model, read_metrics

  run = _copy(base_run, tmp_path / "run")
  DAMAGE[how](run / "checkpoints" / "4")
  # sd / load_model: refused with the run and the step
  with pytest.raises(ValueError, match=r"cannot read checkpoint step 4") as info:
    load_model(run)
  assert str(run) in str(info.value) and "\n" not in str(info.value)
  capsys.readouterr()
  assert main(_train_argv(run)) == 0
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if "damaged" in l]
  assert len(lines) == 1 and "step 4" in lines[0] and "resuming from step 2" in lines[0], err
  assert (run / "checkpoints_damaged" / "4").is_dir()
  _assert_same_params(run, base_run)
  strip = lambda d: [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(d)]
  assert strip(run) == strip(base_run)


def test_empty_stray_step_dir_is_set_aside(base_run, tmp_path, capsys):
  run = _copy(base_run, tmp_path / "run")
  (run / "checkpoints" / "9").mkdir()
  capsys.readouterr()
  assert main(_train_argv(run)) == 0
  err = capsys.readouterr().err
  assert "checkpoint step 9" in err and "empty directory" in err and "resuming from step 4" in err
  _assert_same_params(run, base_run)


def test_no_intact_checkpoint_is_refused_naming_the_directories(base_run, tmp_path, capsys):
  run = _copy(base_run, tmp_path / "run")
  for step in (2, 4):
    _truncate_meta(run / "checkpoints" / str(step))
  before = _snapshot(run)
  capsys.readouterr()
  assert main(_train_argv(run)) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert str(run / "checkpoints" / "4") in err and str(run / "checkpoints" / "2") in err
  after = _snapshot(run)   # config.json may record the copy's own path; nothing else moves
  assert {k: v for k, v in after.items() if k != "config.json"} == {
      k: v for k, v in before.items() if k != "config.json"}


# --- metrics after a resume --------------------------------------------------------------

def test_resumed_metrics_equal_uninterrupted_ones_except_timing(tmp_path):
  _require_corpus()
  from dspec_models.training import read_metrics

  common = dict(task=TASK, model="draft", steps=7, batch_size=8, train_limit=64,
                eval_examples=8, score_examples=0, eval_every=4, checkpoint_every=2,
                log_every=3, model_overrides=TINY, progress=False)
  straight_dir, crashed_dir = train_straight_and_crashed(tmp_path, common, crash_step=5)
  strip = lambda d: [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(d)]
  straight = strip(straight_dir)
  assert [r["step"] for r in straight if r["event"] == "train"] == [3, 6, 7]
  assert strip(crashed_dir) == straight


# --- permissions ------------------------------------------------------------------------

def test_run_records_follow_the_umask(base_run):
  for name in ("config.json", "summary.json", "metrics.jsonl"):
    mode = (base_run / name).stat().st_mode & 0o777
    assert mode & 0o044 == 0o044 or os.umask(os.umask(0o022)) & 0o044, (name, oct(mode))


def test_write_json_mode_is_0666_less_umask(tmp_path):
  from dspec_models.training.rundir import write_json

  old = os.umask(0o027)
  try:
    write_json(tmp_path / "a.json", {"x": 1})
  finally:
    os.umask(old)
  assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
  old = os.umask(0o002)
  try:
    write_json(tmp_path / "b.json", {"x": 1})
  finally:
    os.umask(old)
  assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o664


def test_distill_resumes_past_a_damaged_checkpoint(distill_pair, tmp_path, capsys):
  from dspec_models.training import read_metrics

  root = distill_pair
  out = tmp_path / "kd"
  assert main(_distill_argv(root, out)) == 0        # checkpoints at steps 1 and 2
  damaged = _copy(out, tmp_path / "kd_damaged")
  _bit_flip(damaged / "checkpoints" / "2")
  capsys.readouterr()
  assert main(_distill_argv(root, damaged)) == 0
  err = capsys.readouterr().err
  assert "checkpoint step 2" in err and "resuming from step 1" in err, err
  _assert_same_params(damaged, out)
  strip = lambda d: [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(d)]
  assert strip(damaged) == strip(out)


def test_an_option_the_recorded_run_predates_is_not_a_rerun_change(tmp_path):
  from dspec_models.training import rundir

  recorded = {"kind": "sft", "task": "t", "train": {"steps": 10, "log_every": 5}}
  rundir.write_config(tmp_path, recorded)
  new = {"kind": "sft", "task": "t",
         "train": {"steps": 10, "log_every": 5, "param_sharding": "replicated"}}
  assert rundir.HISTORY_KEY not in rundir.check_rerun(tmp_path, new, rundir.SFT_SETTINGS)
  new["train"]["log_every"] = 2  # a recorded option that changed is still noted
  out = rundir.check_rerun(tmp_path, new, rundir.SFT_SETTINGS)
  assert out[rundir.HISTORY_KEY] == [{"event": "rerun", "changed": {"log_every": [5, 2]}}]
