"""Drafts sharing a pretrained target's tokenizer: layer-truncated self-drafts and fresh drafts."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from dspec_models import lm
from dspec_models.pretrained import load_pretrained
from dspec_models.pretrained.drafts import fresh_draft_config, truncated_draft
from tests.test_pretrained_hf import _write_folder


def test_truncated_draft_is_the_targets_first_blocks(tmp_path):
  _write_folder(str(tmp_path / "t"), "llama", seed=4)
  cfg, params, _ = load_pretrained(str(tmp_path / "t"), dtype="float64")
  targets = np.random.default_rng(0).integers(4, cfg.vocab_size, (2, 7)).astype(np.int32)
  full, _ = truncated_draft(cfg, params, cfg.num_layers)
  assert full == dataclasses.replace(cfg, name=full.name)
  np.testing.assert_array_equal(lm.forward_logits(full, params, {"targets": targets}),
                                lm.forward_logits(cfg, params, {"targets": targets}))
  one_cfg, one_params = truncated_draft(cfg, params, 1)
  assert one_cfg.num_layers == 1 and "layer_1" not in one_params
  assert one_params["layer_0"] is params["layer_0"]
  # One block differs from two: the truncation really drops the second block.
  diff = np.abs(np.asarray(lm.forward_logits(one_cfg, one_params, {"targets": targets}))
                - np.asarray(lm.forward_logits(cfg, params, {"targets": targets})))
  assert diff.max() > 1e-3
  with pytest.raises(ValueError, match="num_layers"):
    truncated_draft(cfg, params, cfg.num_layers + 1)


def test_fresh_draft_shares_vocabulary_and_special_tokens(tmp_path):
  _write_folder(str(tmp_path / "t"), "gpt2", seed=5)
  cfg, _, _ = load_pretrained(str(tmp_path / "t"))
  draft = fresh_draft_config(cfg, num_layers=1, d_model=16, num_heads=2, num_kv_heads=1, d_ff=32)
  assert (draft.vocab_size, draft.bos_id, draft.eos_id, draft.pad_id) == (
      cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id)
  params = lm.init_params(draft, jax.random.PRNGKey(0))
  assert params["layer_0"]["attention"]["key"]["kernel"].shape == (16, 1, 8)
  from dspec_models.configs import get_config
  with pytest.raises(ValueError, match="pretrained"):
    fresh_draft_config(get_config("tiny_lm_target"))
