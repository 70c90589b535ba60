"""One iteration of Algorithm A.2 (``dspec_models.distill.train.distill_step``), checked
against the same update assembled by hand for each data source."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from dspec_models import lm
from dspec_models.distill import data_mix
from dspec_models.distill.recipes import TEACHER_DISTRIBUTION
from dspec_models.distill.sampling import length_mask, sample_outputs
from dspec_models.distill.train import distill_programs, distill_step
from dspec_models.testing import perturbed_params, tiny_config
from dspec_models.training import checkpoint as ckpt
from dspec_models.training import data as data_lib
from dspec_models.training import parallel
from dspec_models.training.schedule import ScheduleConfig, learning_rate_at
from dspec_models.training.step import init_optimizer

VOCAB, LIN, LOUT, BATCH = 13, 5, 6, 4


@pytest.fixture(scope="module")
def setup():
  t_cfg = tiny_config("encoder_decoder", VOCAB, dtype="float32", name="t")
  s_cfg = tiny_config("encoder_decoder", VOCAB, dtype="float32", name="s")
  t_params = lm.init_params(t_cfg, jax.random.PRNGKey(0))
  s_params = perturbed_params(t_params, 1, 0.5)
  rng = np.random.default_rng(0)
  targets = rng.integers(2, VOCAB, (16, LOUT)).astype(np.int32)
  targets[:, -2:] = 0  # padding
  targets[:, -3] = 1  # EOS
  train = data_lib.TokenizedSplit(
    "x", "train", rng.integers(2, VOCAB, (16, LIN)).astype(np.int32), targets
  )
  mesh = parallel.data_mesh(1)
  optimizer, update = distill_programs(s_cfg, t_cfg, "fkl", TEACHER_DISTRIBUTION, True, mesh)
  state = ckpt.TrainState(
    step=3,
    params=s_params,
    opt_state=init_optimizer(optimizer, s_params, mesh),
    rng_key=np.asarray(jax.random.PRNGKey(7), np.uint32),
    data_position=12,
  )
  return dict(
    t_cfg=t_cfg,
    s_cfg=s_cfg,
    t_params=t_params,
    train=train,
    mesh=mesh,
    update=update,
    state=state,
    sched=ScheduleConfig(0.01, 1, 5, 10),
  )


@pytest.mark.slow  # ~40 s per source on a loaded 2-core machine (three compilations)
@pytest.mark.parametrize(
  "lambda1, lambda2, source",
  [(1.0, 0.0, data_mix.FIXED), (0.0, 1.0, data_mix.STUDENT), (0.0, 0.0, data_mix.TEACHER)],
)
def test_distill_step_equals_the_update_assembled_by_hand(setup, lambda1, lambda2, source):
  st = setup["state"]
  new, metrics = distill_step(
    st,
    update=setup["update"],
    teacher=(setup["t_cfg"], setup["t_params"]),
    student_config=setup["s_cfg"],
    train=setup["train"],
    lambda1=lambda1,
    lambda2=lambda2,
    schedule=setup["sched"],
    batch_size=BATCH,
    seed=0,
    max_target_len=LOUT,
    mesh=setup["mesh"],
  )
  assert (
    metrics[f"source_{source}"] == 1.0
    and sum(metrics[f"source_{s}"] for s in data_mix.SOURCES) == 1.0
  )
  assert (new.step, new.data_position) == (st.step + 1, st.data_position + BATCH)
  # By hand: the step's coins, batch and (for generated data) samples.
  drawn, k_sample = data_mix.step_source(st.rng_key, st.step, lambda1, lambda2)
  assert drawn == source
  data = data_lib.batch_at_step(setup["train"], st.step, BATCH, 0)
  if source == data_mix.FIXED:
    batch = dict(data, mask=data_lib.target_mask(data["targets"]))
  else:
    cfg, prm = (
      (setup["s_cfg"], st.params)
      if source == data_mix.STUDENT
      else (setup["t_cfg"], setup["t_params"])
    )
    tokens, lengths = sample_outputs(cfg, prm, data["inputs"], k_sample, LOUT)
    batch = {"inputs": data["inputs"], "targets": tokens, "mask": length_mask(lengths, LOUT)}
  lr = learning_rate_at(setup["sched"], st.step)
  assert metrics["learning_rate"] == lr
  params, _, ref = setup["update"](st.params, st.opt_state, batch, lr, setup["t_params"])
  assert float(metrics["loss"]) == pytest.approx(float(ref["loss"]), rel=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  # ... and the update changed the student.
  moved = [
    np.max(np.abs(np.asarray(a) - np.asarray(b)))
    for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(st.params))
  ]
  assert max(moved) > 0
