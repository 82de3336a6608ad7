"""Prompt templates and the per-variant text augmentation (docs/method.md §7)."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cocu.concepts.vocabulary import Vocabulary
from cocu.config import VocabularyConfig
from cocu.data.templates import IMAGENET_TEMPLATES, SINGLE_TEMPLATE
from cocu.training import prompts as P
from cocu.training.prompts import Archive, build_texts, load_archives, make_prompt_source, wrap_in_templates

VOCAB = Vocabulary(["cat", "dog", "tree", "red car", "sky", "grass"],
                   cfg=VocabularyConfig(plural=True, max_ngram=4))


def _concept_of(prompt: str) -> str | None:
    """The concept a templated prompt wraps (None if it is no template); most specific template first."""
    for t in sorted(IMAGENET_TEMPLATES, key=len, reverse=True):
        head, tail = t.split("{}")
        if prompt.startswith(head) and prompt.endswith(tail) and len(prompt) > len(head) + len(tail):
            return prompt[len(head): len(prompt) - len(tail)]
    return None


def test_imagenet_templates():
    assert len(IMAGENET_TEMPLATES) == 80
    assert len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert SINGLE_TEMPLATE == ("a photo of a {}.",)


def test_imagenet_templates_match_open_clip():
    """Cross-check with open_clip's copy, parsed from its source (importing open_clip takes ~10 s)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip not installed")
    source = Path(spec.submodule_search_locations[0], "zero_shot_metadata.py").read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "OPENAI_IMAGENET_TEMPLATES")
    theirs = ["".join(v.value if isinstance(v, ast.Constant) else "{}" for v in lam.body.values)
              for lam in node.value.elts]
    assert list(IMAGENET_TEMPLATES) == theirs


def test_build_texts_pads_with_caption(rng):
    texts = build_texts("a cat.", ["cat"], 3, rng)
    assert texts[0] == "a cat." and texts[2:] == ["a cat.", "a cat."]
    assert _concept_of(texts[1]) == "cat"
    assert build_texts("c", [], 0, rng) == ["c"]
    assert len(build_texts("c", ["a", "b", "d", "e"], 3, rng)) == 4  # extra concepts are cut


def test_templates_are_drawn_at_random():
    rng = np.random.default_rng(0)
    used = {p.replace("QQ", "{}", 1) for p in wrap_in_templates(["QQ"] * 400, rng)}
    assert len(used) > 60 and used <= set(IMAGENET_TEMPLATES)


def test_baseline_uses_caption_concepts_without_replacement():
    source = make_prompt_source("baseline", vocab=VOCAB, num_prompts=3)
    caption = "a cat and a dog under a tree next to a red car"
    for seed in range(20):
        texts = source("k", caption, np.random.default_rng(seed))
        concepts = [_concept_of(t) for t in texts[1:]]
        assert texts[0] == caption and len(texts) == 4
        assert set(concepts) <= {"cat", "dog", "tree", "red car"}
        assert len(set(concepts)) == 3  # without replacement
    few = source("k", "one dog", np.random.default_rng(0))
    assert [_concept_of(few[1]), few[2], few[3]] == ["dog", "one dog", "one dog"]
    assert source("k", "nothing known", np.random.default_rng(0)) == ["nothing known"] * 4


def test_sources_are_deterministic_given_the_rng():
    source = make_prompt_source("baseline", vocab=VOCAB)
    caption = "cat dog tree sky grass"
    a = source("k", caption, np.random.default_rng(5))
    assert a == source("k", caption, np.random.default_rng(5))
    assert any(source("k", caption, np.random.default_rng(s)) != a for s in range(6, 12))


ARCHIVES = {
    "k1": Archive(("sky", "tree", "cat", "dog", "grass"), np.array([0.9, 0.8, 0.5, 0.4, 0.1], np.float32),
                  np.array([0, 0, 1, 1, 2], np.int32)),
    "k2": Archive(("dog",), np.array([0.7], np.float32), np.array([0], np.int32)),
}


@pytest.mark.parametrize("variant, sampler", [("cocu", "sample_cluster"), ("ranking", "sample_topk"),
                                              ("expansion", "sample_uniform")])
def test_archive_variants_use_their_sampler(monkeypatch, variant, sampler):
    calls = []
    for name in ("sample_cluster", "sample_topk", "sample_uniform"):
        real = getattr(P, name)
        monkeypatch.setattr(P, name, lambda *a, _n=name, _r=real: (calls.append((_n, a)), _r(*a))[1])
    source = make_prompt_source(variant, archives=ARCHIVES, num_prompts=3)
    texts = source("k1", "a caption", np.random.default_rng(0))
    assert [c[0] for c in calls] == [sampler]
    assert calls[0][1][0] == ARCHIVES["k1"].concepts
    assert len(texts) == 4 and all(_concept_of(t) in ARCHIVES["k1"].concepts for t in texts[1:])


def test_ranking_is_top_k_and_short_archives_pad():
    source = make_prompt_source("ranking", archives=ARCHIVES)
    for seed in range(5):
        texts = source("k1", "cap", np.random.default_rng(seed))
        assert [_concept_of(t) for t in texts[1:]] == ["sky", "tree", "cat"]
    texts = source("k2", "cap", np.random.default_rng(0))
    assert _concept_of(texts[1]) == "dog" and texts[2:] == ["cap", "cap"]
    assert source("unknown", "cap", np.random.default_rng(0)) == ["cap"] * 4  # no archive: caption


def test_expansion_without_replacement_and_cocu_from_archive():
    expansion = make_prompt_source("expansion", archives=ARCHIVES)
    cocu = make_prompt_source("cocu", archives=ARCHIVES)
    for seed in range(20):
        picked = [_concept_of(t) for t in expansion("k1", "c", np.random.default_rng(seed))[1:]]
        assert len(set(picked)) == 3 and set(picked) <= set(ARCHIVES["k1"].concepts)
        assert {_concept_of(t) for t in cocu("k1", "c", np.random.default_rng(seed))[1:]} <= set(
            ARCHIVES["k1"].concepts)


def test_only_the_oracle_reads_ground_truth():
    gt = pd.DataFrame({"key": ["k1"], "gt_present": [("cat", "sky")], "gt_mentioned": [("cat",)]})
    for variant, kw in [("baseline", {"vocab": VOCAB}), ("cocu", {"archives": ARCHIVES}),
                        ("ranking", {"archives": ARCHIVES}), ("expansion", {"archives": ARCHIVES})]:
        assert make_prompt_source(variant, ground_truth=None, **kw)("k1", "a cat", np.random.default_rng(0))
        with pytest.raises(ValueError, match="ground truth"):
            make_prompt_source(variant, ground_truth=gt, **kw)
    with pytest.raises(ValueError, match="ground_truth"):
        make_prompt_source("oracle")
    oracle = make_prompt_source("oracle", ground_truth=gt, num_prompts=3)
    texts = oracle("k1", "a cat", np.random.default_rng(0))
    assert sorted(_concept_of(t) for t in texts[1:3]) == ["cat", "sky"] and texts[3] == "a cat"
    with pytest.raises(KeyError):
        oracle("k9", "x", np.random.default_rng(0))


def test_missing_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="vocab"):
        make_prompt_source("baseline")
    with pytest.raises(ValueError, match="archives"):
        make_prompt_source("cocu")
    with pytest.raises(ValueError, match="unknown variant"):
        make_prompt_source("nouns", vocab=VOCAB)


def test_load_archives_joins_by_key(tmp_path):
    schema = pa.schema([("key", pa.string()), ("concepts", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float32())), ("clusters", pa.list_(pa.int32()))])
    pq.write_table(pa.table({"key": ["a", "b"], "concepts": [["cat", "dog"], []], "scores": [[0.9, 0.5], []],
                             "clusters": [[0, 1], []]}, schema=schema), tmp_path / "archive-00000.parquet")
    pq.write_table(pa.table({"key": ["c"], "concepts": [["dog", "sky", "tree"]], "scores": [[0.8, 0.7, 0.1]],
                             "clusters": [[0, 0, 1]]}, schema=schema), tmp_path / "archive-00001.parquet")
    archives = load_archives(tmp_path, keys=["a", "b", "c", "d", "e"])
    assert len(archives) == 3 and archives.num_missing == 2
    concepts, scores, clusters = archives["c"]
    assert concepts == ("dog", "sky", "tree")
    np.testing.assert_allclose(scores, [0.8, 0.7, 0.1], rtol=1e-6)
    assert clusters.tolist() == [0, 0, 1]
    assert archives["a"].concepts == ("cat", "dog") and archives["b"].concepts == ()
    assert archives.lookup("d").concepts == () and "d" not in archives
    source = make_prompt_source("ranking", archives=archives, num_prompts=2)
    assert [_concept_of(t) for t in source("c", "x", np.random.default_rng(0))[1:]] == ["dog", "sky"]
    assert source("d", "x", np.random.default_rng(0)) == ["x", "x", "x"]


@pytest.mark.parametrize("score, cluster", [(float("nan"), 0), (float("inf"), 1), (0.5, -1)])
def test_load_archives_refuses_a_bad_entry_naming_its_key(tmp_path, score, cluster):
    schema = pa.schema([("key", pa.string()), ("concepts", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float32())), ("clusters", pa.list_(pa.int32()))])
    pq.write_table(pa.table({"key": ["a", "b"], "concepts": [["cat"], ["dog", "sky"]], "scores": [[0.9], [0.5, score]],
                             "clusters": [[0], [0, cluster]]}, schema=schema), tmp_path / "archive-00000.parquet")
    with pytest.raises(ValueError, match=r"archive of key 'b'.*re-run the `curate` stage"):
        load_archives(tmp_path)


def _write_archives(folder: Path) -> list[str]:
    """60 archives of 0-7 of 30 concepts in 3 parquet shards; returns 65 keys (5 without)."""
    rng = np.random.default_rng(4)
    names = [f"thing{i}" for i in range(30)]
    schema = pa.schema([("key", pa.string()), ("concepts", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float32())), ("clusters", pa.list_(pa.int32()))])
    for part in range(3):
        keys, concepts, scores, clusters = [], [], [], []
        for i in range(part * 20, part * 20 + 20):
            n = int(rng.integers(0, 8))
            pick = rng.choice(30, n, replace=False)
            keys.append(f"key{i:03d}")
            concepts.append([names[j] for j in pick])
            scores.append(sorted(rng.random(n).astype(np.float32).tolist(), reverse=True))
            clusters.append(rng.integers(0, 3, n).tolist())
        pq.write_table(pa.table({"key": keys, "concepts": concepts, "scores": scores, "clusters": clusters},
                                schema=schema), folder / f"archive-{part:05d}.parquet")
    return [f"key{i:03d}" for i in range(65)]


# Recorded from the implementation that held a dict key -> row (archives) and a dict key -> tuple
# (oracle): the flat arrays must give the same prompts for every key.
@pytest.mark.parametrize("variant, expected", [
    ("cocu", "1769e595fc2d09e3"), ("ranking", "274f3390fa950547"),
    ("expansion", "65ad6e318ace6679"), ("oracle", "0782e47fa2d5c004"),
])
def test_prompts_equal_the_saved_expectations(tmp_path, variant, expected):
    keys = _write_archives(tmp_path)
    archives = load_archives(tmp_path, keys=pd.Series(keys))
    assert archives.num_missing == 5
    rng = np.random.default_rng(9)
    gt = pd.DataFrame({"key": keys, "gt_present": [
        tuple(f"thing{j}" for j in rng.choice(30, int(rng.integers(0, 6)), replace=False)) for _ in keys]})
    source = make_prompt_source(variant, archives=None if variant == "oracle" else archives,
                                ground_truth=gt if variant == "oracle" else None, num_prompts=3)
    h = hashlib.sha256()
    for seed, key in enumerate(keys):
        h.update("\n".join(source(key, f"cap {key}", np.random.default_rng([seed, 1]))).encode())
    assert h.hexdigest()[:16] == expected


def test_archives_and_ground_truth_are_flat_arrays(tmp_path):
    """No Python object per key: every per-key field is a numpy array (shared after fork)."""
    keys = _write_archives(tmp_path)
    archives = load_archives(tmp_path)
    per_key = {"order": archives.index.order, "sorted": archives.index.sorted, "offsets": archives.offsets,
               "ids": archives.ids, "scores": archives.scores, "clusters": archives.clusters}
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in per_key.values())
    assert len(archives) == 60 and len(archives.names) <= 30 and list(archives) == keys[:60]
    assert not any(isinstance(v, (list, dict, tuple)) and len(v) >= 60 for v in vars(archives).values())
    truth = P._present_concepts({"b": ("cat",), "a": (), "c": ("dog", "cat")})
    assert isinstance(truth, P.ConceptLists) and dict(truth) == {"b": ("cat",), "a": (), "c": ("dog", "cat")}
    assert "d" not in truth and truth.get("d") is None
    with pytest.raises(ValueError, match="concept archives: 1 duplicate keys, e.g. 'a'"):
        P.ConceptArchives(["a", "a"], ["x"], np.array([0, 1, 2]), np.array([0, 0]), np.zeros(2), np.zeros(2))


# --------------------------------------------------------------------------------------------
# the curation-precision ablation (dose-response)


def test_variant_names_of_the_precision_ablation():
    from cocu.training.prompts import check_variant, reads_ground_truth, variant_precision

    assert variant_precision("precision25") == 0.25 and variant_precision("precision100") == 1.0
    assert variant_precision("cocu") is None and reads_ground_truth("precision50") and not reads_ground_truth("cocu")
    with pytest.raises(ValueError, match="0-100"):
        variant_precision("precision150")
    with pytest.raises(ValueError, match="precision<P>"):
        check_variant("precisionx")


@pytest.mark.parametrize("precision", [0.0, 0.25, 0.5, 1.0])
def test_precision_archive_has_the_asked_precision_and_size(precision):
    from cocu.training.prompts import precision_archive

    caption, missed = ["ball"], [f"m{i}" for i in range(10)]
    absent = [f"w{i}" for i in range(10)]
    out = precision_archive(caption, missed, absent, size=9, precision=precision, rng=np.random.default_rng(0))
    new = out[1:]
    assert out[0] == "ball" and len(out) == 9 and len(set(out)) == 9
    assert sum(c.startswith("m") for c in new) == round(precision * 8)


def test_precision_archive_uses_every_missed_concept_when_too_few():
    from cocu.training.prompts import precision_archive

    absent = ["w0", "w1", "w2", "w3"]
    out = precision_archive([], ["m0"], absent, size=4, precision=1.0, rng=np.random.default_rng(0))
    assert out == ("m0",)  # precision 1: nothing wrong is added to fill the size
    out = precision_archive([], ["m0"], absent, size=4, precision=0.5, rng=np.random.default_rng(0))
    assert out[0] == "m0" and len(out) == 2 and out[1] in absent  # precision kept, size smaller
    out = precision_archive([], ["m0"], absent, size=4, precision=0.0, rng=np.random.default_rng(0))
    assert len(out) == 4 and set(out) == set(absent)


def test_precision_source_reads_truth_and_sizes_and_is_fixed_per_key():
    from cocu.training.prompts import Archive, make_prompt_source

    truth = {"a": ("ball", "sky", "grass"), "b": ("car", "road")}
    archives = {"a": Archive(("ball", "kite", "box", "sky", "tent"), np.zeros(5, np.float32), np.zeros(5, np.int32))}
    captions = {"a": ["ball"], "b": ["car"]}
    src = make_prompt_source("precision50", archives=archives, ground_truth=truth, caption_concepts=captions,
                             num_prompts=3)
    built = src.picker.archives
    assert built["a"][0] == "ball" and len(built["a"]) == 5  # CoCu's size for "a"
    new = built["a"][1:]
    assert sum(c in truth["a"] for c in new) == 2  # half of the 4 new ones are missed ground truth
    assert built["b"] == ("car",)  # no archive: the caption's concepts only
    again = make_prompt_source("precision50", archives=archives, ground_truth=truth, caption_concepts=captions)
    assert again.picker.archives == built
    with pytest.raises(ValueError, match="needs ground_truth"):
        make_prompt_source("precision50", archives=archives, caption_concepts=captions)
