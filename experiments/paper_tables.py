"""The paper's reported numbers, as data (cited by section, table or figure).

Only numbers printed in the paper are here; nothing is read off a plot.

Table D.1 (appendix D.1, "DistillSpec improves the speculative decoding across
various datasets, block sizes for both greedy decoding and temperature
sampling"): T5-XL (3B) target with T5-small (77M) draft on XSum, CNNDM, WMT and
GSM8K; GPT-like 234M target with a 33M draft on LM1B.  Each row gives, for
gamma = 3, 5, 7, the block efficiency tau and the wall-clock speedup without
and with distillation, the printed Delta (speedup difference) and the best
distillation method.
"""

from __future__ import annotations

from typing import NamedTuple

GAMMAS = (3, 5, 7)


class TableD1Row(NamedTuple):
  """One (dataset, temperature) row of Table D.1; tuples are over ``GAMMAS``."""

  dataset: str
  temperature: int
  tau_raw: tuple[float, float, float]
  speed_raw: tuple[float, float, float]
  tau_kd: tuple[float, float, float]
  speed_kd: tuple[float, float, float]
  delta: tuple[float, float, float]
  method: tuple[str, str, str]


TABLE_D1 = (
  TableD1Row(
    "XSum",
    0,
    (2.31, 2.57, 2.68),
    (1.44, 1.43, 1.36),
    (2.62, 3.08, 3.31),
    (1.58, 1.62, 1.57),
    (0.14, 0.19, 0.21),
    ("f-Distill",) * 3,
  ),
  TableD1Row(
    "XSum",
    1,
    (2.19, 2.39, 2.47),
    (1.40, 1.37, 1.28),
    (2.58, 3.01, 3.21),
    (1.57, 1.61, 1.55),
    (0.17, 0.25, 0.27),
    ("f-Distill",) * 3,
  ),
  TableD1Row(
    "CNNDM",
    0,
    (2.83, 3.46, 3.85),
    (1.89, 2.07, 2.07),
    (3.19, 4.13, 4.83),
    (2.11, 2.42, 2.53),
    (0.22, 0.35, 0.46),
    ("f-Distill", "GKD", "f-Distill"),
  ),
  TableD1Row(
    "CNNDM",
    1,
    (2.49, 2.89, 3.08),
    (1.71, 1.77, 1.71),
    (2.87, 3.52, 3.92),
    (1.93, 2.12, 2.12),
    (0.23, 0.35, 0.41),
    ("f-Distill",) * 3,
  ),
  TableD1Row(
    "WMT",
    0,
    (3.22, 4.17, 4.83),
    (2.08, 2.33, 2.36),
    (3.30, 4.32, 5.06),
    (2.13, 2.41, 2.46),
    (0.05, 0.08, 0.10),
    ("f-Distill",) * 3,
  ),
  TableD1Row(
    "WMT",
    1,
    (2.73, 3.29, 3.54),
    (1.77, 1.83, 1.72),
    (2.88, 3.48, 3.85),
    (1.83, 1.93, 1.84),
    (0.07, 0.10, 0.12),
    ("GKD", "GKD", "f-Distill"),
  ),
  TableD1Row(
    "GSM8K",
    0,
    (2.60, 3.06, 3.27),
    (1.51, 1.42, 1.36),
    (2.96, 3.68, 4.14),
    (1.69, 1.65, 1.60),
    (0.18, 0.22, 0.24),
    ("GKD",) * 3,
  ),
  TableD1Row(
    "GSM8K",
    1,
    (2.58, 3.03, 3.23),
    (1.48, 1.39, 1.33),
    (2.84, 3.45, 3.84),
    (1.64, 1.58, 1.53),
    (0.16, 0.19, 0.20),
    ("f-Distill",) * 3,
  ),
  TableD1Row(
    "LM1B",
    0,
    (2.96, 3.69, 4.15),
    (3.66, 3.35, 2.52),
    (3.13, 3.92, 4.55),
    (3.97, 3.51, 2.72),
    (0.31, 0.16, 0.20),
    ("f-Distill",) * 3,
  ),
  TableD1Row(
    "LM1B",
    1,
    (2.51, 2.90, 3.10),
    (2.34, 2.79, 1.98),
    (2.69, 3.20, 3.51),
    (2.45, 3.02, 2.18),
    (0.11, 0.23, 0.20),
    ("f-Distill",) * 3,
  ),
)

# The speedup claims of the text, each with where it is printed.
TEXT_CLAIMS = (
  (
    "Figure 1 caption and section 1",
    "a consistent 10-45% improvement over standard SD",
    0.10,
    0.45,
  ),
  ("Section 5.1, Results", "consistently yielding a 10-46% improvement", 0.10, 0.46),
)

# Section 3, "Walltime improvement": speedup = tau / (c gamma + 1) with c >= 0.
SPEEDUP_MODEL = "speedup = tau / (c * gamma + 1), c = draft/target latency >= 0 (section 3)"
