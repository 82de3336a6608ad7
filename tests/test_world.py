"""The synthetic world: concepts, masks vs concept lists, captions, mention rate, determinism."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from cocu.config import WorldConfig, from_dict
from cocu.data import world
from cocu.data.captions import plural
from cocu.data.render import THINGS


def make_cfg(**overrides) -> WorldConfig:
    raw = dict(
        size="smoke", sizes={"smoke": {"pairs": 8, "teacher": 8, "benchmark": 4}}, image_size=64,
        min_concepts=2, max_concepts=6, mention_rate=0.4, naming_bias=0.0, thing_scale=1.0, shard_size=10,
        jpeg_quality=90, seed=0,
        benchmarks=["synth_things", "synth_stuff", "synth_all"],
    )
    return from_dict(WorldConfig, {**raw, **overrides})


CFG = make_cfg()


@pytest.fixture(scope="module")
def samples() -> list[world.WorldSample]:
    return list(world.generate(CFG, 150, "test"))


def caption_concepts(caption: str) -> set[str]:
    """Independent matcher: lower-case words, every 1- to 4-gram looked up in the vocabulary + plurals."""
    forms = {form for w in world.vocabulary() for form in (w, plural(w))}
    words = re.findall(r"[a-z]+", caption.lower())
    grams = {" ".join(words[i : i + n]) for n in range(1, 5) for i in range(len(words) - n + 1)}
    return {world.canonical(g) for g in grams & forms}


def test_concepts_cover_both_kinds_and_vocabulary_is_consistent():
    kinds = [c.kind for c in world.CONCEPTS]
    assert len(world.CONCEPTS) >= 20 and kinds.count("thing") >= 10 and kinds.count("stuff") >= 5
    names = world.concept_names()
    assert len(set(names)) == len(names) and all(n == n.lower() for n in names)
    vocab = world.vocabulary()
    assert vocab == sorted(set(vocab)) and set(names) <= set(vocab)
    for c in world.CONCEPTS:
        for word in (c.name, *c.synonyms):
            assert world.canonical(word) == c.name
            assert world.canonical(plural(word)) == c.name
            assert world.canonical(word.upper()) == c.name
    with pytest.raises(KeyError):
        world.canonical("vacation")


def test_neither_shape_nor_colour_is_a_shortcut():
    colours_of: dict[str, set[str]] = {}  # silhouette -> colour words of the things that have it
    shapes_of: dict[str, set[str]] = {}  # colour word -> silhouettes of the things that have it
    for t in THINGS:
        for word, _ in t.colours:
            colours_of.setdefault(t.silhouette, set()).add(word)
            if word:
                shapes_of.setdefault(word, set()).add(t.silhouette)
    things_of: dict[str, int] = {}
    for t in THINGS:
        things_of[t.silhouette] = things_of.get(t.silhouette, 0) + 1
    shared_shapes = [s for s, n in things_of.items() if n >= 2 and len(colours_of[s]) >= 2]
    shared_colours = [w for w, s in shapes_of.items() if len(s) >= 2]
    assert len(shared_shapes) >= 3 and len(shared_colours) >= 3


def test_labels_agree_with_concept_lists(samples):
    for s in samples:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert s.label.shape == (64, 64) and s.label.dtype == np.uint8
        ids = set(np.unique(s.label).tolist())
        assert {world.concept_names()[i] for i in ids} == set(s.present)
        assert len(s.present) == len(set(s.present))
        kinds = [world.CONCEPTS[world.concept_names().index(p)].kind for p in s.present]
        assert "stuff" in kinds  # a stuff region is always the background
        assert len(s.present) <= CFG.max_concepts


def test_captions_name_exactly_the_mentioned_concepts(samples):
    for s in samples:
        assert s.mentioned, s.caption
        assert set(s.mentioned) <= set(s.present)
        assert len(set(s.mentioned)) == len(s.mentioned)
        assert caption_concepts(s.caption) == set(s.mentioned), s.caption


def test_captions_are_varied(samples):
    captions = [s.caption for s in samples]
    assert len(set(captions)) > 0.9 * len(captions)
    text = " ".join(captions).lower()
    for feature in ("two ", " on the ", "there ", "photo", " and "):
        assert feature in text
    synonyms = {syn for c in world.CONCEPTS for syn in c.synonyms}
    assert sum(any(re.search(rf"\b{syn}", c.lower()) for syn in synonyms) for c in captions) > 30


def test_salient_concepts_are_named_more_often(samples):
    top = np.mean([s.present[0] in s.mentioned for s in samples])
    rest = np.mean([p in s.mentioned for s in samples for p in s.present[1:]])
    assert top > 0.7 and rest < 0.4


def test_mention_rate_matches_the_parameter_quick():
    cfg = make_cfg(mention_rate=0.5, image_size=32)  # the calibration is per world; 32 px keeps it fast
    measured = world.mention_fraction(world.generate(cfg, 500, "rate"))
    assert abs(measured - 0.5) < 0.04


def test_thing_scale_grows_the_things_and_keeps_the_calibrated_mention_rate():
    # the default world's shape (2-4 concepts, naming bias 3) at 32 px, to stay fast
    from cocu.data.scene import N_STUFF

    share, rate = {}, {}
    for scale in (1.0, 2.75):
        cfg = make_cfg(thing_scale=scale, naming_bias=3.0, min_concepts=2, max_concepts=4, image_size=32)
        samples = list(world.generate(cfg, 400, "scale"))
        share[scale] = np.mean([(s.label >= N_STUFF).mean() for s in samples])
        rate[scale] = world.mention_fraction(samples)
    assert share[2.75] > 2 * share[1.0]
    assert abs(rate[2.75] - 0.4) < 0.04 and abs(rate[1.0] - 0.4) < 0.04


def test_mention_offset_is_monotone_in_the_rate():
    offsets = [world.mention_offset(rate, 32, 2, 6) for rate in (0.3, 0.4, 0.6)]
    assert offsets[0] < offsets[1] < offsets[2]
    assert world.mention_offset(0.4, 32, 2, 6) == offsets[1]  # cached, deterministic


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.3, 0.4, 0.6])
def test_mention_rate_matches_the_parameter_at_default_size(rate):
    measured = world.mention_fraction(world.generate(make_cfg(mention_rate=rate), 2000, "rate"))
    assert abs(measured - rate) < 0.03


def test_unreachable_mention_rate_is_an_error():
    with pytest.raises(ValueError, match="mention_rate"):
        next(world.generate(make_cfg(mention_rate=0.1, image_size=32), 1, "x"))


def _same(a: world.WorldSample, b: world.WorldSample) -> bool:
    return (a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
            and (a.caption, a.present, a.mentioned) == (b.caption, b.present, b.mentioned))


def test_generation_is_deterministic_and_slices_are_independent():
    full = list(world.generate(CFG, 15, "pairs"))
    again = list(world.generate(CFG, 15, "pairs"))
    tail = list(world.generate(CFG, 10, "pairs", start=5))
    assert all(_same(a, b) for a, b in zip(full, again))
    assert all(_same(a, b) for a, b in zip(full[5:], tail))
    other_stream = next(world.generate(CFG, 1, "teacher"))
    other_seed = next(world.generate(dataclasses.replace(CFG, seed=1), 1, "pairs"))
    assert not _same(full[0], other_stream) and not _same(full[0], other_seed)
    assert world.stable_hash("pairs") == 795430121  # never Python's salted hash()


@pytest.mark.parametrize("size", [32, 100])
def test_image_size_is_respected(size):
    for s in world.generate(make_cfg(image_size=size), 4, "size"):
        assert s.image.shape == (size, size, 3) and s.label.shape == (size, size)


def test_concept_count_range_is_respected():
    cfg = make_cfg(min_concepts=2, max_concepts=3, mention_rate=0.6, image_size=32)
    counts = [len(s.present) for s in world.generate(cfg, 40, "count")]
    assert max(counts) <= 3 and min(counts) >= 1 and np.mean(counts) > 1.8


def test_benchmark_labels(samples):
    names = world.concept_names()
    things = world.BENCHMARKS["synth_things"]
    stuff = world.BENCHMARKS["synth_stuff"]
    everything = world.BENCHMARKS["synth_all"]
    assert things.has_background and things.class_names[0] == "background"
    assert not stuff.has_background and not everything.has_background
    assert set(things.class_names[1:]) == {c.name for c in world.CONCEPTS if c.kind == "thing"}
    assert set(stuff.class_names) == {c.name for c in world.CONCEPTS if c.kind == "stuff"}
    assert everything.class_names == tuple(names)
    for s in samples[:50]:
        is_stuff = np.isin(s.label, [i for i, c in enumerate(world.CONCEPTS) if c.kind == "stuff"])
        t, st, a = (world.benchmark_label(s, spec) for spec in (things, stuff, everything))
        assert t.dtype == np.uint8 and t.shape == s.label.shape
        assert (t[is_stuff] == 0).all() and (t[~is_stuff] > 0).all() and (t < len(things.class_names)).all()
        assert (st[~is_stuff] == 255).all() and (st[is_stuff] < len(stuff.class_names)).all()
        assert np.array_equal(a, s.label)
        concept = np.array(names)[s.label]  # [H, W] concept name per pixel
        assert (np.array(things.class_names)[t][~is_stuff] == concept[~is_stuff]).all()
        assert (np.array(stuff.class_names)[np.minimum(st, len(stuff.class_names) - 1)][is_stuff]
                == concept[is_stuff]).all()


@pytest.mark.slow
def test_plurals_agree_with_inflect():
    import inflect

    engine = inflect.engine()
    for word in world.vocabulary():
        assert plural(word) == engine.plural_noun(word), word
