"""CPU defaults shared by ``dspec train`` and ``dspec distill``.

* ``DEFAULT_TASK``: the project's default task for CPU runs, English->German
  translation of LibreOffice help paragraphs (the paper's WMT analogue): the
  inputs are short (median 18 tokens), so tiny T5 models train in minutes.
* ``CPU_LENGTHS``: (max input, max target) tokens per task, scaled down from
  the paper's Appendix C.1 lengths (WMT 80/80, XSum 1024/64, GSM8K 256/320,
  LM1B -/128) so that a 2-core CPU step takes about a second.
* :func:`resolve_model_name`: ``"target"`` / ``"draft"`` name the tiny CPU
  model of the task's family (T5 encoder-decoder for tasks with inputs, a
  decoder-only LM for the language-modelling task); any name of
  :data:`dspec_models.configs.CONFIGS` (incl. the paper's sizes) is accepted.
"""

from __future__ import annotations

from dspec_models import configs

DEFAULT_TASK = "dspec_translate_en_de"

CPU_LENGTHS: dict[str, tuple[int, int]] = {
    "dspec_translate_en_de": (32, 32),
    "dspec_summarize_debian": (128, 32),
    "dspec_math_gsm": (128, 128),
    "dspec_lm_ptb": (0, 48),
}

TINY_MODELS = {
    ("encoder_decoder", "target"): "tiny_t5_target",
    ("encoder_decoder", "draft"): "tiny_t5_draft",
    ("decoder_only", "target"): "tiny_lm_target",
    ("decoder_only", "draft"): "tiny_lm_draft",
}


def task_family(task: str) -> str:
  """``"encoder_decoder"`` for tasks with inputs, ``"decoder_only"`` for language modelling."""
  from dspec_models.data import task_spec

  return "encoder_decoder" if task_spec(task).has_inputs else "decoder_only"


def resolve_model_name(task: str, model: str) -> str:
  """A config name: ``model`` itself, or the tiny ``"target"``/``"draft"`` of the task's family.

  Raises:
    ValueError: naming ``model`` when it is neither a role nor a config name.
  """
  if model in ("target", "draft"):
    return TINY_MODELS[(task_family(task), model)]
  if model not in configs.CONFIGS:
    raise ValueError(f"model must be 'target', 'draft' or one of {sorted(configs.CONFIGS)}; "
                     f"got {model!r}")
  return model


def default_lengths(task: str) -> tuple[int, int]:
  from dspec_models.data import task_spec

  task_spec(task)  # validates the name
  return CPU_LENGTHS[task]
