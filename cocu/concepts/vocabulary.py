"""The concept vocabulary and caption-concept extraction (docs/method.md §1).

A caption's concepts are the lower-cased 1- to 4-grams of its tokens that are vocabulary strings,
de-duplicated in reading order (by start token, shorter n-gram first). Matchable strings are the
canonical concepts, optional synonyms, and the plural of the last word of each (the `inflect`
library), every one mapped back to its canonical concept. Pure `str -> tuple[str, ...]` code:
no file access outside `from_file`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


from cocu.config import VocabularyConfig

log = logging.getLogger(__name__)

# Tokens are maximal runs of letters/digits (Unicode aware); everything else separates tokens.
_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lower-case and split on non-alphanumeric characters: "Traffic-cone, 2!" -> [traffic, cone, 2]."""
    return _TOKEN.findall(text.lower())


def normalize(text: str) -> str:
    """The canonical form of a concept string: its tokens joined by single spaces."""
    return " ".join(tokenize(text))


def _inflect_engine() -> "inflect.engine":  # noqa: F821
    """inflect, imported on first use: its import costs seconds (typeguard instruments it)."""
    import inflect

    return inflect.engine()


def pluralize_last_word(concept: str, engine: "inflect.engine | None" = None) -> str:  # noqa: F821
    """The inflect noun plural of the last word: "traffic cone" -> "traffic cones"."""
    engine = engine or _inflect_engine()
    *head, last = concept.split(" ")
    return " ".join([*head, engine.plural_noun(last)])


class Vocabulary:
    """Canonical concepts (the rows of the concept-embedding matrix) and their surface forms.

    `synonyms` maps other names to canonical concepts (the synthetic world's "lawn" -> "grass");
    a line of the concept list that is a synonym is a surface form of its canonical concept, not
    a concept of its own. Precedence when two surface forms collide: a canonical concept, then a
    synonym, then a generated plural (e.g. the plural of "glass" is "glasses"; if "glasses" is
    itself a concept, it stays its own concept).
    """

    def __init__(
        self,
        concepts: Sequence[str],
        synonyms: Mapping[str, str] | None = None,
        *,
        cfg: VocabularyConfig,
    ) -> None:
        syn = {normalize(k): normalize(v) for k, v in (synonyms or {}).items()}
        syn = {k: v for k, v in syn.items() if k != v}
        names = [n for n in (normalize(c) for c in concepts) if n and n not in syn]
        self.concepts: tuple[str, ...] = tuple(dict.fromkeys(names))  # lower-cased, de-duplicated
        if not self.concepts:
            raise ValueError("empty concept vocabulary")
        self.index: dict[str, int] = {c: i for i, c in enumerate(self.concepts)}
        self.max_ngram = cfg.max_ngram

        surface: dict[str, int] = dict(self.index)  # matchable string -> concept id
        for form, canonical in syn.items():
            if canonical not in self.index:
                raise ValueError(f"synonym {form!r} maps to {canonical!r}, which is not in the vocabulary")
            surface[form] = self.index[canonical]
        if cfg.plural:
            engine = _inflect_engine()
            for form, cid in list(surface.items()):
                surface.setdefault(pluralize_last_word(form, engine), cid)
        too_long = [s for s in surface if s.count(" ") >= self.max_ngram]
        if too_long:
            log.warning("%d vocabulary strings have more than %d words and never match, e.g. %r",
                        len(too_long), self.max_ngram, too_long[0])
        self.surface: dict[str, int] = surface
        # every proper word-prefix of a multi-word string: n-gram growth stops at a non-prefix
        self._prefixes = frozenset(
            " ".join(words[:n]) for words in (s.split(" ") for s in surface) for n in range(1, len(words))
        )

    @classmethod
    def from_file(
        cls,
        path: Path | str,
        synonyms: Mapping[str, str] | None = None,
        *,
        cfg: VocabularyConfig,
    ) -> Vocabulary:
        """One concept per line (blank lines and lines starting with `#` are skipped)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"concept list not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        return cls([ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")], synonyms, cfg=cfg)

    def __len__(self) -> int:
        return len(self.concepts)

    def lookup(self, text: str) -> str | None:
        """The canonical concept a string names (plural or synonym included), else None."""
        cid = self.surface.get(normalize(text))
        return None if cid is None else self.concepts[cid]

    def extract_ids(self, caption: str) -> list[int]:
        """Concept ids named by the caption, de-duplicated in reading order."""
        tokens = tokenize(caption)
        get, prefixes, n = self.surface.get, self._prefixes, len(tokens)
        found: dict[int, None] = {}  # insertion-ordered set
        for i, gram in enumerate(tokens):
            cid = get(gram)
            if cid is not None:
                found.setdefault(cid)
            if gram not in prefixes:  # no longer string starts with this word: the common case
                continue
            for j in range(i + 1, min(i + self.max_ngram, n)):
                gram = gram + " " + tokens[j]
                cid = get(gram)
                if cid is not None:
                    found.setdefault(cid)
                if gram not in prefixes:
                    break
        return list(found)

    def extract(self, caption: str) -> tuple[str, ...]:
        """Canonical concepts named by the caption, e.g. "Two traffic cones." -> ("traffic cone",)."""
        return tuple(self.concepts[i] for i in self.extract_ids(caption))

    def extract_many(self, captions: Iterable[str]) -> list[tuple[str, ...]]:
        """`extract` over many captions (dict look-ups; about 1e5 captions/s on one core here)."""
        return [self.extract(c) for c in captions]


def load_synonyms(path: Path | str | None) -> dict[str, str] | None:
    """A TSV of `synonym<TAB>concept` lines (`#` comments allowed); None -> no synonyms."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"synonyms file not found: {path} (paths.synonyms; null for none)")
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ValueError(f"{path}:{i}: expected `synonym<TAB>concept`, got {line!r}")
        out[parts[0].strip()] = parts[1].strip()
    return out


def load_vocabulary(concepts_path: Path | str, synonyms_path: Path | str | None,
                    cfg: VocabularyConfig) -> Vocabulary:
    """The vocabulary the stages share: `paths.vocabulary` + `paths.synonyms` + the `vocabulary` section."""
    return Vocabulary.from_file(concepts_path, load_synonyms(synonyms_path), cfg=cfg)
