"""Captions of the synthetic world: natural-language sentences from varied templates.

A caption names exactly the concepts it is given (with synonyms, plurals, adjectives) and adds
only words that are not vocabulary concepts (relations, counts, distractors such as "today" or
"vacation"). Which concepts to name is decided by the caller (`cocu.data.world`, by saliency).
Plural forms are the ones `inflect` produces (checked by a test), so that a vocabulary expanded
with `inflect` plurals matches them, without importing `inflect` here (its import takes seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

# irregular plurals (inflect agrees); everything else gets "s" / "es"
_IRREGULAR = {"fish": "fish", "goldfish": "goldfish", "starfish": "starfish", "sky": "skies"}


def plural(noun: str) -> str:
    """Plural of a (possibly multi-word) noun, inflecting the last word."""
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        p = _IRREGULAR[last]
    elif last.endswith(("s", "x", "ch", "sh")):
        p = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return f"{head} {p}" if head else p


@dataclass(frozen=True)
class Mention:
    """One concept to name, with what the picture shows about it."""

    name: str  # canonical name
    kind: Literal["thing", "stuff"]
    synonyms: tuple[str, ...]
    count: int = 1  # visible instances (things)
    colour: str = ""  # colour word of the drawn variant ("" = none)
    size: str = ""  # "small" | "large" | "" (things)


_COUNT = {2: ("two", "two", "a couple of", "some"), 3: ("three", "three", "several", "a few", "some")}
_SMALL, _LARGE = ("small", "tiny", "little"), ("big", "large", "huge")
_FILLER = ("shiny", "old", "new", "lovely", "cute", "plastic", "fancy", "nice", "funny", "pretty")
_STUFF_ADJ = {
    "sky": ("blue", "clear", "cloudy", "bright"),
    "grass": ("green", "fresh", "tall"),
    "sand": ("golden", "warm", "soft"),
    "water": ("calm", "blue", "deep"),
    "wall": ("old", "red", "tall"),
    "road": ("empty", "busy", "long"),
    "snow": ("white", "fresh", "deep"),
    "floor": ("clean", "old", "polished"),
}
_PLURAL_STUFF = {"sky", "water", "sand", "sea"}
_UNCOUNTABLE = {"grass", "sand", "water", "snow", "asphalt", "parquet"}  # no "a" before these
_REL = {
    "sky": ("under", "against", "below"),
    "grass": ("on", "in"),
    "sand": ("on", "in"),
    "water": ("on", "in", "by", "near"),
    "wall": ("in front of", "near", "against"),
    "road": ("on", "near", "in the middle of"),
    "snow": ("in", "on"),
    "floor": ("on",),
}
_GENERIC_REL = ("near", "next to", "with")
# a participle before the relation, for things that do something, and where it makes sense
_VERB: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # thing -> (verbs, stuff it applies to)
    "boat": (("floating", "sailing"), ("water",)),
    "fish": (("swimming",), ("water",)),
    "car": (("parked", "driving"), ("road", "snow", "grass", "sand", "wall")),
    "tent": (("standing", "pitched"), ("grass", "sand", "snow")),
    "clock": (("hanging",), ("wall",)),
}
_KITE_REL = {"sky": ("flying in", "high in", "flying against"), "": ("flying over", "flying above", "high above")}
_PREFIX = ("wow,", "finally,", "look,", "today,", "yesterday,", "oh,")
_TAIL = (
    "today", "on vacation", "this morning", "last summer", "on a sunny afternoon", "from our trip",
    "during the holidays", "what a beautiful day", "so lovely", "at sunset", "in the evening",
    "taken yesterday", "by my friend", "on the weekend",
)
_INTRO = ("a photo of", "my photo of", "a picture of", "an image of", "look at", "close up of")
_STUFF_INTRO = ("view of", "a photo of", "beautiful view of", "nothing but", "a picture of", "just")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun(m: Mention, rng: np.random.Generator) -> str:
    return m.name if (not m.synonyms or rng.random() < 0.6) else _pick(rng, m.synonyms)


def thing_phrase(m: Mention, rng: np.random.Generator) -> str:
    """'a small red ball', 'two boxes', 'the kite', 'some shiny traffic cones'."""
    noun = _noun(m, rng)
    adjs = []
    if rng.random() < 0.15:
        adjs.append(_pick(rng, _FILLER))
    if m.size and rng.random() < 0.3:
        adjs.append(_pick(rng, _SMALL if m.size == "small" else _LARGE))
    if m.colour and rng.random() < 0.5:
        adjs.append(m.colour)
    words = " ".join([*adjs, noun])
    if m.count > 1:
        return f"{_pick(rng, _COUNT[min(m.count, 3)])} {' '.join([*adjs, plural(noun)])}"
    return f"the {words}" if rng.random() < 0.15 else f"{_article(words)} {words}"


def stuff_phrase(m: Mention, rng: np.random.Generator) -> str:
    """'the grass', 'a clear sky', 'the seas', 'fresh snow'."""
    noun = _noun(m, rng)
    if noun in _PLURAL_STUFF and rng.random() < 0.15:
        noun = plural(noun)
    if rng.random() < 0.3:
        noun = f"{_pick(rng, _STUFF_ADJ[m.name])} {noun}"
    if rng.random() < 0.75 or noun.endswith("s"):
        return f"the {noun}"
    return noun if noun.rpartition(" ")[2] in _UNCOUNTABLE else f"{_article(noun)} {noun}"


def _join(phrases: list[str], rng: np.random.Generator) -> str:
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) == 2 and rng.random() < 0.3:
        return f"{phrases[0]} with {phrases[1]}"
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _setting(stuff: list[Mention], first_thing: Mention | None, rng: np.random.Generator) -> str:
    """'on the grass under a blue sky', 'by the lake with a brick wall in the background'."""
    s0 = stuff[0]
    rel = _pick(rng, _GENERIC_REL) if rng.random() < 0.15 else _pick(rng, _REL[s0.name])
    subject = first_thing.name if first_thing is not None else ""
    if subject == "kite" and rng.random() < 0.6:
        rel = _pick(rng, _KITE_REL["sky" if s0.name == "sky" else ""])
    elif subject in _VERB and s0.name in _VERB[subject][1] and rng.random() < 0.4:
        rel = f"{_pick(rng, _VERB[subject][0])} {'near' if rel == 'with' else rel}"
    out = f"{rel} {stuff_phrase(s0, rng)}"
    for s in stuff[1:]:
        if s.name == "sky":
            out += f" {_pick(rng, ('under', 'below'))} {stuff_phrase(s, rng)}"
        else:
            form = _pick(rng, (" with {} in the background", " and {}", " near {}"))
            out += form.format(stuff_phrase(s, rng))
    return out


def write_caption(
    things: list[Mention], stuff: list[Mention], rng: np.random.Generator
) -> tuple[str, tuple[str, ...]]:
    """A caption naming exactly `things` and `stuff` (at least one of them).

    Returns the caption and the canonical names in the order the caption names them.
    """
    if not things and not stuff:
        raise ValueError("a caption must name at least one concept")
    order = [m.name for m in things] + [m.name for m in stuff]
    if things:
        subject = _join([thing_phrase(m, rng) for m in things], rng)
        plural_subject = len(things) > 1 or things[0].count > 1
        if stuff and rng.random() < 0.15:  # setting first: "on the beach, two red balls"
            text = f"{_setting(stuff, None, rng)}, {subject}"
            order = [m.name for m in stuff] + [m.name for m in things]
        else:
            setting = f" {_setting(stuff, things[0], rng)}" if stuff else ""
            form = rng.random()
            if form < 0.35:
                text = f"{subject}{setting}"
            elif form < 0.55:
                verb = "are" if plural_subject else "is"
                text = f"{_pick(rng, ('there', 'there', 'here'))} {verb} {subject}{setting}"
            else:
                text = f"{_pick(rng, _INTRO)} {subject}{setting}"
    else:
        scene = _join([stuff_phrase(m, rng) for m in stuff], rng)
        text = scene if rng.random() < 0.4 else f"{_pick(rng, _STUFF_INTRO)} {scene}"
    extra = rng.random()
    if extra < 0.1:
        text = f"{_pick(rng, _PREFIX)} {text}"
    elif extra < 0.4:
        text = f"{text} {_pick(rng, _TAIL)}"
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text += "."
    return text, tuple(order)
