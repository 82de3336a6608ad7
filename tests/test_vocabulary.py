"""Vocabulary: normalisation, plurals (inflect), n-gram matching, synonyms (docs/method.md §1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocu.config import VocabularyConfig
from cocu.concepts.vocabulary import Vocabulary, pluralize_last_word, tokenize

OFFICIAL = VocabularyConfig(plural=True, max_ngram=4)  # the method's settings
CONCEPTS = ["Traffic Cone", "cat", "cattle", "grass", "person", "traffic light pole", "light", "cat"]


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(CONCEPTS, synonyms={"kitty": "cat"}, cfg=OFFICIAL)


def test_concepts_are_lower_cased_and_deduplicated(vocab: Vocabulary) -> None:
    want = ("traffic cone", "cat", "cattle", "grass", "person", "traffic light pole", "light")
    assert vocab.concepts == want


def test_plural_of_last_word() -> None:
    assert pluralize_last_word("traffic cone") == "traffic cones"
    assert pluralize_last_word("person") == "people"


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        # multi-word concept in its plural form, then a 1-gram; upper case and punctuation ignored
        ("Two TRAFFIC CONES near a cat.", ("traffic cone", "cat")),
        # synonym plural -> canonical; "cattle" is its own concept, not a plural of "cat"
        ("kitties and cattle on the grasses, cat again", ("cat", "cattle", "grass")),
        # irregular plural; a 3-gram and the 1-gram inside it both match, in reading order
        ("people under a traffic light pole", ("person", "traffic light pole", "light")),
        # a hyphen separates tokens; "traffic light" alone is no concept, "light" is
        ("traffic-light, cats", ("light", "cat")),
    ],
)
def test_extract(vocab: Vocabulary, caption: str, expected: tuple[str, ...]) -> None:
    got = vocab.extract(caption)
    assert isinstance(got, tuple)
    assert got == expected


def test_extract_many_and_ids(vocab: Vocabulary) -> None:
    assert vocab.extract_many(["a cat", "", "grass grass"]) == [("cat",), (), ("grass",)]
    assert vocab.extract_ids("grass and a cat") == [vocab.index["grass"], vocab.index["cat"]]


def test_ngram_limit() -> None:
    vocab = Vocabulary(["big red fire truck", "big red fire truck door"], cfg=OFFICIAL)
    assert vocab.extract("the big red fire truck door") == ("big red fire truck",)


def test_plural_off() -> None:
    vocab = Vocabulary(["cat"], cfg=VocabularyConfig(plural=False, max_ngram=4))
    assert vocab.extract("cats and a cat") == ("cat",)
    assert "cats" not in vocab.surface


def test_concept_wins_over_generated_plural() -> None:
    vocab = Vocabulary(["glass", "glasses"], cfg=OFFICIAL)
    assert vocab.extract("glasses") == ("glasses",)


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "concepts.txt"
    path.write_text("# a comment\nDog\n\ndog\nhot dog\n")
    vocab = Vocabulary.from_file(path, synonyms={"puppy": "dog"}, cfg=OFFICIAL)
    assert vocab.concepts == ("dog", "hot dog")
    assert vocab.extract("two hot dogs and a puppy") == ("hot dog", "dog")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        Vocabulary.from_file(tmp_path / "missing.txt", cfg=OFFICIAL)


def test_bad_synonym() -> None:
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Vocabulary(["cat"], synonyms={"kitty": "feline"}, cfg=OFFICIAL)


def test_synonym_lines_fold_into_their_concept() -> None:
    synonyms = {"lawn": "grass", "cone": "traffic cone"}
    vocab = Vocabulary(["cone", "lawn", "grass", "traffic cone"], synonyms=synonyms, cfg=OFFICIAL)
    assert vocab.concepts == ("grass", "traffic cone")
    assert vocab.extract("Two cones on a lawn next to a traffic cone") == ("traffic cone", "grass")


def test_synthetic_world_forms_map_to_canonical_names() -> None:
    from cocu.data import world
    from cocu.data.captions import plural

    synonyms = {s: c.name for c in world.CONCEPTS for s in c.synonyms}
    vocab = Vocabulary(world.vocabulary(), synonyms=synonyms, cfg=OFFICIAL)
    assert sorted(vocab.concepts) == sorted(world.concept_names())
    for c in world.CONCEPTS:
        for form in (c.name, *c.synonyms):
            assert vocab.extract(f"a photo of two {plural(form)} and one {form}.") == (c.name,), form


def test_tokenize() -> None:
    assert tokenize("Café-au-lait_2 x!") == ["café", "au", "lait", "2", "x"]
