"""Task quality metrics as in the paper (Appendix C.1), all on a 0-100 scale.

* Summarisation (XSum-like): ROUGE-1 / ROUGE-2 / ROUGE-Lsum F-measure via ``rouge-score``
  (Porter stemmer on, as T5), averaged over examples. ROUGE-2 is the paper's headline
  number. For ROUGE-Lsum, sentences are put on separate lines first
  (``split_sentences``: a break after ``.``, ``!`` or ``?`` followed by whitespace), since
  rouge-score's own splitter needs NLTK data that is not installed offline.
* Translation (WMT-like): corpus BLEU via ``sacrebleu`` (defaults: 13a tokenisation,
  exponential smoothing, case-sensitive) -- the number WMT papers report.
* Math (GSM8K-like): exact-match accuracy of the final number (``extract_final_number``).

Every function validates its inputs and raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Sequence

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A number: optional minus, digits with optional thousands separators, optional decimals.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
  if isinstance(predictions, str):
    raise ValueError("predictions must be a sequence of strings, not one string")
  if isinstance(references, str):
    raise ValueError("references must be a sequence of strings, not one string")
  if len(predictions) != len(references):
    raise ValueError(
      f"predictions and references must have the same length, "
      f"got {len(predictions)} and {len(references)}"
    )
  if len(predictions) == 0:
    raise ValueError("predictions must not be empty")


def split_sentences(text: str) -> str:
  """Put each sentence on its own line (for ROUGE-Lsum)."""
  return _SENTENCE_END.sub("\n", text.strip())


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE-1/2/Lsum F-measure x 100: ``{"rouge1", "rouge2", "rougeLsum"}``."""
  from rouge_score import rouge_scorer

  _check_pairs(predictions, references)
  scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=True)
  totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeLsum": 0.0}
  for pred, ref in zip(predictions, references):
    scores = scorer.score(split_sentences(ref), split_sentences(pred))
    for key in totals:
      totals[key] += scores[key].fmeasure
  return {key: 100.0 * value / len(predictions) for key, value in totals.items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
  """Corpus BLEU (sacrebleu defaults) of ``predictions`` against one reference each."""
  import sacrebleu

  _check_pairs(predictions, references)
  return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def extract_final_number(text: str) -> Fraction | None:
  """The final answer of a GSM8K-style solution, as an exact ``Fraction``.

  Rule: if the text contains ``####``, the first number after the *last* ``####``;
  otherwise the last number anywhere in the text. Numbers may have a minus sign, thousands
  separators (``1,000``) and decimals (``3.50`` == ``3.5``); currency signs, units and
  ``%`` around them are ignored. Returns ``None`` when there is no number.
  """
  if not isinstance(text, str):
    raise ValueError(f"text must be a string, got {type(text).__name__}")
  if "####" in text:
    match = _NUMBER.search(text.rsplit("####", 1)[1])
    found = match.group(0) if match else None
  else:
    matches = _NUMBER.findall(text)
    found = matches[-1] if matches else None
  if found is None:
    return None
  return Fraction(found.replace(",", ""))


def exact_match_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
  """Percentage of predictions whose final number equals the reference's final number.

  A prediction without a number is wrong; a reference without a number is an error.
  """
  _check_pairs(predictions, references)
  correct = 0
  for i, (pred, ref) in enumerate(zip(predictions, references)):
    target = extract_final_number(ref)
    if target is None:
      raise ValueError(f"references[{i}] contains no number: {ref!r}")
    correct += extract_final_number(pred) == target
  return 100.0 * correct / len(predictions)


# seqio-style metric functions: fn(targets, predictions) -> {name: value}.
def seqio_rouge(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  return rouge(predictions, targets)


def seqio_bleu(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  return {"bleu": bleu(predictions, targets)}


def seqio_exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  return {"exact_match": exact_match_accuracy(predictions, targets)}
