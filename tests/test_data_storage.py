"""Corpus-building helpers on small hand-made inputs (no installed corpus needed)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dspec_models.data import debian_descriptions, gsm_symbolic, libreoffice_help, storage


@given(
  st.lists(st.text(min_size=1, max_size=8), min_size=3, max_size=40, unique=True), st.randoms()
)
def test_hash_ordered_split_is_order_free_disjoint_and_sized(keys, rnd):
  held = {"test": len(keys) // 3, "validation": len(keys) // 4}
  a = storage.hash_ordered_split(keys, key=lambda k: k, held_out=held)
  shuffled = list(keys)
  rnd.shuffle(shuffled)
  b = storage.hash_ordered_split(shuffled, key=lambda k: k, held_out=held)
  assert a == b
  assert len(a["test"]) == held["test"] and len(a["validation"]) == held["validation"]
  assert sorted(a["train"] + a["validation"] + a["test"]) == sorted(keys)
  assert not set(a["train"]) & set(a["test"]) and not set(a["validation"]) & set(a["test"])


def test_hash_ordered_split_rejects_bad_sizes():
  with pytest.raises(ValueError, match="held_out"):
    storage.hash_ordered_split(["a", "b"], key=str, held_out={"test": 2, "validation": 1})
  with pytest.raises(ValueError, match="held_out"):
    storage.hash_ordered_split(["a", "b"], key=str, held_out={"test": -1})


def test_write_corpus_manifest_round_trip(tmp_path):
  splits = {
    "train": [{"inputs": "ä", "targets": "b"}],
    "validation": [],
    "test": [{"inputs": "", "targets": "c"}],
  }
  manifest = storage.write_corpus(tmp_path, splits, {"name": "x"})
  assert manifest["splits"]["train"]["count"] == 1
  assert storage.read_jsonl(tmp_path / "train.jsonl") == splits["train"]
  assert storage.corpus_is_complete(tmp_path)
  (tmp_path / "test.jsonl").write_text(json.dumps({"inputs": "", "targets": "changed"}) + "\n")
  assert not storage.corpus_is_complete(tmp_path)


def test_libreoffice_unit_parser():
  html = (
    '<html><body><script>var x = "<p id=par_id1>";</script>'
    '<h1 id="hd_id1" dir="auto">AutoCorrect has been activated</h1>'
    '<p id="par_id2" class="paragraph">Your text was corrected by <a href="x">Autocorrect</a>'
    "<br>so that   quotes\nchanged.</p>"
    '<p id="other">not a unit</p><p>no id</p>'
    '<p id="par_id3">a &amp; b</p></body></html>'
  )
  assert libreoffice_help.parse_units(html) == {
    "hd_id1": "AutoCorrect has been activated",
    "par_id2": "Your text was corrected by Autocorrect so that quotes changed.",
    "par_id3": "a & b",
  }


def test_libreoffice_alignment_rules(tmp_path):
  def page(lang, units):
    d = tmp_path / lang / "text" / "shared"
    d.mkdir(parents=True, exist_ok=True)
    body = "".join(f'<p id="par_id{i}">{t}</p>' for i, t in units.items())
    (d / "a.html").write_text(f"<html><body>{body}</body></html>", encoding="utf-8")

  page("en-US", {1: "Open a file.", 2: "OK", 3: "1234", 4: "Open a file.", 5: "Only English"})
  page("de", {1: "Datei öffnen.", 2: "OK", 3: "1234", 4: "Eine Datei öffnen."})
  pairs = libreoffice_help.extract_pairs(tmp_path, progress=False)
  # 2 dropped (untranslated), 3 dropped (no letter), 5 has no German unit; the two German
  # texts for "Open a file." tie at one occurrence each -> lexicographically smallest
  assert pairs == [{"inputs": "Open a file.", "targets": "Datei öffnen."}]


DEBIAN_STANZAS = """Package: foo
Description-md5: 0123
Description-en: frobnicate things
 Foo frobnicates things
 quickly.
 .
 Second paragraph.

Package: foo-doc
Description-md5: 0123
Description-en: frobnicate things

Package: bar
Description-md5: 4567
Description-en: short one
"""


def test_debian_translation_parser():
  parsed = debian_descriptions.parse_translation(DEBIAN_STANZAS)
  assert set(parsed) == {"0123", "4567"}
  assert parsed["0123"]["packages"] == ["foo", "foo-doc"]
  assert parsed["0123"]["synopsis"] == "frobnicate things"
  assert parsed["0123"]["paragraphs"] == ["Foo frobnicates things quickly.", "Second paragraph."]
  assert (
    debian_descriptions.body_text(parsed["0123"])
    == "Foo frobnicates things quickly. Second paragraph."
  )
  assert parsed["4567"]["paragraphs"] == []


def test_debian_near_duplicates():
  base = " ".join(f"word{i}" for i in range(60))
  texts = [
    base,
    base + " This package contains the documentation.",  # near-duplicate of 0
    " ".join(f"other{i}" for i in range(60)),  # unrelated
    base.replace("word30", "changed"),  # near-duplicate of 0 (one word differs)
  ]
  groups = debian_descriptions.near_duplicate_groups(texts)
  assert groups == [0, 0, 2, 0]


def test_strip_calculator_annotations():
  text = "48/2 = <<48/2=24>>24 clips.\n#### 72"
  assert gsm_symbolic.strip_calculator_annotations(text) == "48/2 = 24 clips.\n#### 72"


# ------------------------------------------------------------- GSM template selection/assembly
timing_entries = st.one_of(
  st.builds(
    lambda c: {"seconds": c * 1.5, "cpu_seconds": c, "variants": 100},
    st.floats(0.0, 10.0, allow_nan=False),
  ),
  st.just({"timeout_s": 15.0}),
  st.just({"error": "worker exited with code 1"}),
)


@given(
  st.dictionaries(st.integers(0, 99), timing_entries, max_size=40),
  st.floats(0.1, 5.0),
  st.floats(0.1, 30.0),
)
def test_gsm_select_fast_templates_rule(timings, max_template, max_total):
  chosen = gsm_symbolic.select_fast_templates(timings, max_template, max_total)
  assert chosen == sorted(set(chosen))
  cpu = {i: t["cpu_seconds"] for i, t in timings.items() if "cpu_seconds" in t}
  assert all(i in cpu and cpu[i] <= max_template for i in chosen)  # no timeout/error ever
  assert sum(cpu[i] for i in chosen) <= max_total + 1e-9
  # fastest first: every qualifying template left out is at least as slow as every chosen one
  left_out = [i for i in cpu if cpu[i] <= max_template and i not in chosen]
  if chosen and left_out:
    assert min((cpu[i], i) for i in left_out) > max((cpu[i], i) for i in chosen)
  # ... and it was left out because it would break the budget
  if left_out:
    nxt = min(left_out, key=lambda i: (cpu[i], i))
    assert sum(cpu[i] for i in chosen) + cpu[nxt] > max_total


def test_gsm_select_fast_templates_known_case_and_bad_arguments():
  timings = {
    0: {"seconds": 0.9, "cpu_seconds": 0.6, "variants": 100},
    1: {"seconds": 0.1, "cpu_seconds": 0.1, "variants": 100},
    2: {"timeout_s": 15.0},
    3: {"seconds": 9.0, "cpu_seconds": 4.0, "variants": 100},
    4: {"seconds": 2.0, "cpu_seconds": 1.0, "variants": 100},
  }
  assert gsm_symbolic.select_fast_templates(timings, 3.0, 80.0) == [0, 1, 4]
  assert gsm_symbolic.select_fast_templates(timings, 3.0, 0.75) == [0, 1]
  assert gsm_symbolic.select_fast_templates(timings, 0.5, 80.0) == [1]
  with pytest.raises(ValueError, match="max_template_s"):
    gsm_symbolic.select_fast_templates(timings, 0.0, 1.0)
  with pytest.raises(ValueError, match="max_total_s"):
    gsm_symbolic.select_fast_templates(timings, 1.0, -1.0)


def test_gsm_split_assignment_and_assembly():
  originals = [
    {
      "template": t,
      "gsm8k_id": 10 * t + 3,
      "question": f"Q{t}?",
      "answer": f"{t}+1 = <<{t}+1={t + 1}>>{t + 1}\n#### {t + 1}",
    }
    for t in range(40)
  ]
  assignment = gsm_symbolic.split_assignment(originals)
  assert [len(assignment[s]) for s in ("test", "validation", "train")] == [20, 10, 10]
  keys = [e["template"] for s in storage.SPLITS for e in assignment[s]]
  assert sorted(keys) == list(range(40))
  assert assignment == gsm_symbolic.split_assignment(list(reversed(originals)))  # order-free
  test_t = assignment["test"][0]["template"]
  variants = {test_t: [{"question": "V1?", "answer": "2*3 = <<2*3=6>>6\n\n#### 6"}]}
  splits = gsm_symbolic.assemble_splits(originals, variants, assignment)
  assert [len(splits[s]) for s in ("test", "validation", "train")] == [21, 10, 10]
  first, second = splits["test"][0], splits["test"][1]
  assert first["original"] and first["variant"] == 0 and first["template"] == test_t
  assert first["inputs"] == f"Q{test_t}?" and "<<" not in first["targets"]
  assert first["targets"].endswith(f"#### {test_t + 1}") and "<<" in first["answer"]
  assert second == {
    "inputs": "V1?",
    "targets": "2*3 = 6\n\n#### 6",
    "answer": "2*3 = <<2*3=6>>6\n\n#### 6",
    "template": test_t,
    "gsm8k_id": 10 * test_t + 3,
    "variant": 1,
    "original": False,
  }
  bad = {s: [dict(e, gsm8k_id=-1) for e in assignment[s]] for s in storage.SPLITS}
  with pytest.raises(RuntimeError, match="GSM8K id"):
    gsm_symbolic.assemble_splits(originals, {}, bad)
