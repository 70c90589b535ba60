"""Metrics against values computed by hand (see each test's comment)."""

import math
from fractions import Fraction

import pytest

from dspec_models import metrics


def test_rouge_identical_is_100():
  scores = metrics.rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
  assert scores == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeLsum": 100.0})


def test_rouge_hand_computed():
  # ref: the cat was on the mat / pred: the cat sat on the mat (6 tokens each)
  # unigram overlap: the x2, cat, on, mat = 5 -> P = R = 5/6
  # bigrams ref {the cat, cat was, was on, on the, the mat}; pred {the cat, cat sat,
  # sat on, on the, the mat}: overlap 3 of 5 -> 3/5
  # LCS "the cat on the mat" = 5 -> 5/6
  scores = metrics.rouge(["the cat sat on the mat"], ["the cat was on the mat"])
  assert scores["rouge1"] == pytest.approx(100 * 5 / 6)
  assert scores["rouge2"] == pytest.approx(60.0)
  assert scores["rougeLsum"] == pytest.approx(100 * 5 / 6)


def test_rouge_averages_over_examples():
  scores = metrics.rouge(["a b", "x y"], ["a b", "p q"])  # 100 and 0
  assert scores["rouge2"] == pytest.approx(50.0)
  assert scores["rouge1"] == pytest.approx(50.0)


def test_rouge_lsum_uses_sentence_split():
  assert (
    metrics.split_sentences("One fish. Two fish! Red? blue") == "One fish.\nTwo fish!\nRed?\nblue"
  )
  # Union-LCS over sentences: ref "a b. c d." pred "c d. a b." -> every ref token is in the
  # union LCS with some pred sentence -> ROUGE-Lsum = 100, while plain LCS would be 50.
  scores = metrics.rouge(["c d. a b."], ["a b. c d."])
  assert scores["rougeLsum"] == pytest.approx(100.0)


def test_bleu_identical_is_100():
  assert metrics.bleu(["Das ist ein Test ."], ["Das ist ein Test ."]) == pytest.approx(100.0)


def test_bleu_hand_computed():
  # hyp "a b c d e f" vs ref "a b c d e g": n-gram precisions 5/6, 4/5, 3/4, 2/3, equal
  # lengths (BP = 1): BLEU = (5/6 * 4/5 * 3/4 * 2/3) ** (1/4) = (1/3) ** 0.25
  assert metrics.bleu(["a b c d e f"], ["a b c d e g"]) == pytest.approx(
    100 * (1 / 3) ** 0.25, abs=1e-9
  )


def test_bleu_brevity_penalty():
  # hyp "a b c d e" vs ref "a b c d e f": precisions all 1, BP = exp(1 - 6/5)
  assert metrics.bleu(["a b c d e"], ["a b c d e f"]) == pytest.approx(
    100 * math.exp(1 - 6 / 5), abs=1e-9
  )


@pytest.mark.parametrize(
  "text, expected",
  [
    ("She pays 3 + 4 = 7 dollars.\n#### 7", Fraction(7)),
    ("#### 1,000", Fraction(1000)),
    ("#### -5", Fraction(-5)),
    ("#### 10%", Fraction(10)),
    ("#### $3.50", Fraction(7, 2)),
    ("Answer 12 then #### 7 and 8", Fraction(7)),
    ("first #### 3 then #### 4", Fraction(4)),
    ("so she pays $3.50 in total.", Fraction(7, 2)),
    ("2 apples and 15 pears", Fraction(15)),
    ("no number here", None),
    ("the answer is ####", None),
    ("#### .5", Fraction(1, 2)),
  ],
)
def test_extract_final_number(text, expected):
  assert metrics.extract_final_number(text) == expected


def test_exact_match_accuracy():
  preds = ["so #### 10", "the answer is 8", "I do not know", "#### 3.0"]
  refs = ["5 + 5 = 10\n#### 10", "#### 7", "#### 3", "#### 3"]
  # correct: 1st (10 == 10) and 4th (3.0 == 3); 2nd wrong, 3rd has no number
  assert metrics.exact_match_accuracy(preds, refs) == pytest.approx(50.0)


def test_seqio_metric_fns_take_targets_first():
  assert metrics.seqio_exact_match(["#### 2"], ["#### 2"]) == {"exact_match": 100.0}
  assert metrics.seqio_bleu(["a b c d"], ["a b c d"])["bleu"] == pytest.approx(100.0)
  assert metrics.seqio_rouge(["a b"], ["a b"])["rouge2"] == pytest.approx(100.0)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="same length"):
    metrics.bleu(["a"], ["a", "b"])
  with pytest.raises(ValueError, match="predictions"):
    metrics.rouge("a b", ["a b"])
  with pytest.raises(ValueError, match="empty"):
    metrics.exact_match_accuracy([], [])
  with pytest.raises(ValueError, match="references\\[0\\]"):
    metrics.exact_match_accuracy(["#### 1"], ["no number"])
  with pytest.raises(ValueError, match="text"):
    metrics.extract_final_number(5)
