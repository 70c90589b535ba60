"""`dspec theory convert` and the per-position curves of `dspec theory markov`."""

import json

import numpy as np
import pytest

from dspec_cli.main import main
from dspec_theory import markov, positions


def _run(capsys, *argv):
  code = main(list(argv))
  out = capsys.readouterr()
  return code, out.out, out.err


COUNTERS = "--num-drafts 10 --num-draft-tokens 30 --num-accepted 13 --per-position 8,4,1".split()


def test_convert_hand_computed(capsys):
  code, out, _ = _run(capsys, "theory", "convert", *COUNTERS, "--c", "0.1", "--as-json")
  assert code == 0
  d = json.loads(out)
  assert d["mean_acceptance_length"] == pytest.approx(2.3)
  assert d["draft_acceptance_rate"] == pytest.approx(13 / 30)
  assert d["conditional"] == pytest.approx([0.8, 0.5, 0.25])
  assert d["per_token_acceptance"] == pytest.approx(13 / 22)
  assert d["predicted_speedup"] == pytest.approx(2.3 / 1.3)
  code, out, _ = _run(capsys, "theory", "convert", *COUNTERS)
  assert code == 0 and "P(n > i | n > i-1)" in out and "0.2500" in out


def test_convert_reads_vllm_json_and_flags_override(capsys, tmp_path):
  path = tmp_path / "c.json"
  path.write_text(
    json.dumps(
      {
        "num_drafts": 10,
        "num_draft_tokens": 30,
        "num_accepted_tokens": 13,
        "num_accepted_tokens_per_pos": [8, 4, 1],
      }
    )
  )
  code, out, _ = _run(capsys, "theory", "convert", "--json", str(path), "--as-json")
  assert code == 0 and json.loads(out)["unconditional"] == pytest.approx([0.8, 0.4, 0.1])
  code, out, _ = _run(capsys, "theory", "convert", "--json", str(path), "--c", "0.0", "--as-json")
  assert json.loads(out)["predicted_speedup"] == pytest.approx(2.3)


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--num-drafts", "10", "--num-draft-tokens", "30"], "--num-accepted is required"),
    (["--num-drafts", "10", "--num-draft-tokens", "31", "--num-accepted", "3"], "not an integer"),
    (
      [
        "--num-drafts",
        "10",
        "--num-draft-tokens",
        "30",
        "--num-accepted",
        "3",
        "--per-position",
        "1,x",
      ],
      "--per-position must be comma-separated integers",
    ),
    (["--json", "/nonexistent/c.json"], "--json: cannot read"),
  ],
)
def test_convert_bad_input_exits_2_with_message(capsys, argv, message):
  code, _, err = _run(capsys, "theory", "convert", *argv)
  assert code == 2 and message in err and "Traceback" not in err


def test_markov_prints_exact_per_position_curve(capsys, tmp_path):
  save = tmp_path / "pair.npz"
  code, out, _ = _run(
    capsys,
    "theory",
    "markov",
    "--vocab",
    "5",
    "--max-len",
    "8",
    "--gamma",
    "2,3",
    "--save",
    str(save),
    "--json",
  )
  assert code == 0
  report = json.loads(out)
  row = report["per_gamma"][-1]
  data = np.load(save)
  p = markov.markov_lm(data["p_init"], data["p_trans"], int(data["eos"]))
  q = markov.markov_lm(data["q_init"], data["q_trans"], int(data["eos"]))
  exact = positions.per_position_acceptance(p, q, 8, 3)
  assert row["gamma"] == 3
  assert row["per_position"]["unconditional_exact"] == pytest.approx(
    [float(x) for x in exact.unconditional], rel=1e-9
  )
  a = report["alpha"]
  assert row["per_position"]["unconditional_iid"] == pytest.approx([a, a**2, a**3])
  code, out, _ = _run(
    capsys, "theory", "markov", "--vocab", "5", "--max-len", "8", "--gamma", "2,3"
  )
  assert "per-position acceptance at gamma = 3" in out
