"""Training plots read the measurement core's cells (no key parsing): a run with two
evaluation records draws loss, eval, acceptance and tau plots."""

from __future__ import annotations

from dspec_models.measure.acceptance import cell_key, cell_statistics
from dspec_models.training import plots, rundir
from tests.sd_records_fixture import fixed_result


def test_plot_run_draws_the_distillation_plots(tmp_path):
  cells = {
    cell_key(t, 3): cell_statistics(
      fixed_result(seed=int(t)),
      gamma=3,
      temperature=t,
      alpha_eq3=None if t == 0 else {"value": 0.6, "se": 0.01, "n": 12},
    )
    for t in (0.0, 1.0)
  }
  for step in (0, 4):
    rundir.append_metrics(tmp_path, {"event": "train", "step": step + 1, "loss": 1.0 / (step + 1)})
    rundir.append_metrics(
      tmp_path,
      {
        "event": "eval",
        "step": step,
        "eval_loss": 2.0,
        "score": 1.0 + step,
        "metric": "bleu",
        "sd": cells,
        "alpha_eq3": 0.6,
        "one_minus_tvd_on_references": 0.5,
        "argmax_agreement_on_references": 0.4,
        "theorem41_bound": -3.0,
        "eps_on_policy": 0.3,
        "max_len": 8,
        "mean_T_over_Lp": 2.0,
      },
    )
  written = plots.plot_run(tmp_path)
  assert sorted(p.name for p in written) == ["acceptance.png", "eval.png", "loss.png", "tau.png"]
  for p in written:
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
