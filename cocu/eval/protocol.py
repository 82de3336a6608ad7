"""The zero-shot segmentation protocol per benchmark (docs/protocol.md §2): reference cards and templates.

`params.yaml` (`eval.benchmarks`) is the single source of the cards a run uses; `OFFICIAL_CARDS`
restates the published protocol so that a deviating card is flagged beside its result
(`protocol_deviations`), and `SYNTHETIC_CARDS` are the defaults for the generated benchmarks.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Optional

from cocu.config import ProtocolCard

from cocu.data.templates import IMAGENET_TEMPLATES, SINGLE_TEMPLATE  # noqa: E402 (one list for training and eval)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"single": SINGLE_TEMPLATE, "imagenet80": IMAGENET_TEMPLATES}


def templates_for(card: ProtocolCard) -> tuple[str, ...]:
    """The prompt templates a card names."""
    return TEMPLATE_SETS[card.templates]


# what every published card shares: mmseg's long-side cap, one template, label 255 ignored, all images
_COMMON: dict[str, object] = {"max_long_side": 2048, "templates": "single", "ignore_index": 255, "num_images": None,
                              "long_side_cap": None}


def _fg(reader: str, root: str, names: Optional[str], thresh: float, **kw: object) -> ProtocolCard:
    """A with-background card at GroupViT's 448 / 448 / 224 setting."""
    kw = {**_COMMON, "resize": 448, "crop": 448, "stride": 224, **kw}
    return ProtocolCard(reader=reader, root=root, class_names=names, has_background=True, bg_thresh=thresh,
                        **kw)


def _nobg(reader: str, root: str, names: Optional[str], resize: Optional[int], crop: int,
          stride: int) -> ProtocolCard:
    return ProtocolCard(reader=reader, root=root, class_names=names, has_background=False, bg_thresh=None,
                        resize=resize, crop=crop, stride=stride, **_COMMON)


# docs/protocol.md §2. ImageNet-S: images larger than 1000 x 1000 pixels are first shrunk to a long side
# of 1000 (mmseg's ImageNet-S loader); S300 keeps the dataset's ignore id 1000 because 301
# classes do not fit in uint8 beside 255.
OFFICIAL_CARDS: dict[str, ProtocolCard] = {
    "voc": _fg("voc", "VOCdevkit/VOC2012", "voc", 0.95),
    "context": _fg("context", "VOCdevkit/VOC2010", "context59", 0.35),
    "coco_object": _fg("coco_object", "coco_stuff164k", "coco_object", 0.95),
    "imagenet_s50": _fg("imagenet_s", "ImageNetS50", "imagenet_s50", 0.95, long_side_cap=1000),
    "imagenet_s300": _fg("imagenet_s", "ImageNetS300", "imagenet_s300", 0.75, long_side_cap=1000,
                         ignore_index=1000),
    "cityscapes": _nobg("cityscapes", "cityscapes", "cityscapes", None, 448, 224),
    "ade20k": _nobg("ade20k", "ADEChallengeData2016", "ade20k", 512, 224, 112),
    "coco_stuff": _nobg("coco_stuff", "coco_stuff164k", "coco_stuff", 512, 224, 112),
    "voc20": _nobg("voc20", "VOCdevkit/VOC2012", "voc", 448, 448, 224),
    "context59": _nobg("context59", "VOCdevkit/VOC2010", "context59", 448, 448, 224),
}

# The generated benchmarks (64 x 64 images, a model pre-trained at 64 px): no resize, and a
# 64-px window, so each image is one crop at the training resolution; the 32-px stride only
# matters if the world is rendered larger than the training size. Class names come from the
# benchmark folder. synth_things keeps VOC's background protocol and threshold (not tuned).
SYNTHETIC_CARDS: dict[str, ProtocolCard] = {
    "synth_things": _fg("synthetic", "synth_things", None, 0.95, resize=None, crop=64, stride=32),
    "synth_stuff": _nobg("synthetic", "synth_stuff", None, None, 64, 32),
    "synth_all": _nobg("synthetic", "synth_all", None, None, 64, 32),
}


def card_text(card: ProtocolCard, name: Optional[str] = None) -> str:
    """The card on one line, printed beside every result."""
    size = "original" if card.resize is None else f"short{card.resize}"
    if card.resize is not None and card.max_long_side:
        size += f"(long<={card.max_long_side})"
    if card.long_side_cap:
        size = f"cap{card.long_side_cap}(if>{card.long_side_cap}^2px)+{size}"
    parts = [
        f"reader={card.reader}", f"root={card.root}", f"names={card.class_names or '<root>/class_names.txt'}",
        "bg=" + (f"yes(thresh={card.bg_thresh:g})" if card.has_background else "no"),
        f"resize={size}", f"slide={card.crop}/{card.stride}",
        f"templates={card.templates}({len(templates_for(card))})", "topk=5", f"ignore={card.ignore_index}",
        f"images={card.num_images if card.num_images is not None else 'all'}",
    ]
    return (f"{name}: " if name else "") + " ".join(parts)


def protocol_deviations(name: str, card: ProtocolCard) -> list[str]:
    """`key: ours != official` for every field that differs from the published card (empty if none)."""
    official = OFFICIAL_CARDS.get(name) or SYNTHETIC_CARDS.get(name)
    if official is None:
        return [f"{name}: no reference card"]
    return [f"{f.name}: {getattr(card, f.name)!r} != {getattr(official, f.name)!r}"
            for f in fields(ProtocolCard) if getattr(card, f.name) != getattr(official, f.name)]


def cards_as_params(cards: dict[str, ProtocolCard]) -> dict[str, dict[str, object]]:
    """Cards as the plain mapping `eval.benchmarks` holds in params.yaml (every field)."""
    return {name: asdict(card) for name, card in cards.items()}
