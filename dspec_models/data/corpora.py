"""The four corpora and the task specifications built on them (one place to look up).

==========================  ==========================  =====================  ==============
task                        corpus (module)             format                 paper analogue
==========================  ==========================  =====================  ==============
``dspec_lm_ptb``            Penn Treebank (``ptb``)     targets = sentence     LM1B
``dspec_translate_en_de``   LibreOffice help en/de      inputs=en, targets=de  WMT14 En-De
``dspec_summarize_debian``  Debian descriptions         body -> synopsis       XSum
``dspec_math_gsm``          GSM-Symbolic (GSM8K)        question -> solution   GSM8K
==========================  ==========================  =====================  ==============

``paper_lengths`` are the maximum input / output lengths of the paper's Appendix C.1 for the
analogue dataset (LM1B 128/128, WMT 80/80, XSum 1024/64, GSM8K 256/320).
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Callable

from dspec_models.data import debian_descriptions, gsm_symbolic, libreoffice_help, ptb


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  name: str
  corpus: ModuleType
  has_inputs: bool
  metric: str  # "perplexity" | "bleu" | "rouge" | "exact_match"
  paper_lengths: tuple[int, int]  # (max input length, max target length)
  character_coverage: float
  description: str
  user_defined_symbols: tuple[str, ...] = ()

  def examples(self, split: str) -> list[dict]:
    return self.corpus.examples(split)

  def available(self) -> bool:
    return self.corpus.available()


TASK_SPECS: dict[str, TaskSpec] = {
  spec.name: spec
  for spec in (
    TaskSpec(
      "dspec_lm_ptb",
      ptb,
      False,
      "perplexity",
      (0, 128),
      1.0,
      "Penn Treebank language modelling (Mikolov's PTB, research-use licence)",
      user_defined_symbols=("<unk>",),
    ),
    TaskSpec(
      "dspec_translate_en_de",
      libreoffice_help,
      True,
      "bleu",
      (80, 80),
      0.9995,
      "English->German LibreOffice help paragraphs (MPL-2.0)",
    ),
    TaskSpec(
      "dspec_summarize_debian",
      debian_descriptions,
      True,
      "rouge",
      (1024, 64),
      0.9995,
      "Debian package description body -> synopsis (per-package DFSG licences)",
    ),
    TaskSpec(
      "dspec_math_gsm",
      gsm_symbolic,
      True,
      "exact_match",
      (256, 320),
      1.0,
      "GSM8K problems (MIT) and GSM-Symbolic variants generated locally from their templates (CC BY-NC-ND 4.0, not redistributed)",
    ),
  )
}


def task_spec(name: str) -> TaskSpec:
  if name not in TASK_SPECS:
    raise ValueError(f"task must be one of {sorted(TASK_SPECS)}, got {name!r}")
  return TASK_SPECS[name]


def vocabulary_training_lines(spec: TaskSpec) -> Callable[[], list[str]]:
  """Lines the task's SentencePiece model is trained on: its train split, inputs and targets."""

  def lines() -> list[str]:
    out = []
    for ex in spec.examples("train"):
      if spec.has_inputs:
        out.append(ex["inputs"])
      out.append(ex["targets"])
    return out

  return lines
