"""Typed config of the `eval` section: one protocol card per benchmark (docs/protocol.md §2).

A card holds every choice that differs between benchmarks in the official zero-shot protocol
(resize, sliding window, background threshold, templates), so that a result is always printed
beside the exact protocol that produced it (`cocu.eval.protocol.card_text`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

ReaderName = Literal[
    "voc", "voc20", "context", "context59", "coco_object", "coco_stuff", "ade20k", "cityscapes",
    "imagenet_s", "synthetic",
]
TemplateSet = Literal["single", "imagenet80"]

from cocu.training.data_config import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402,F401 (one definition)


@dataclass(frozen=True)
class ProtocolCard:
    """How one benchmark is read and segmented. Sizes are pixels."""

    reader: ReaderName  # label format and folder layout (cocu.eval.readers)
    root: str  # folder of the benchmark under the benchmarks root (DETECTRON2_DATASETS)
    has_background: bool  # label 0 is background, never prompted; decided by `bg_thresh`
    resize: Optional[int]  # short side after resizing (aspect kept); null: original size
    crop: int  # sliding-window crop (square)
    stride: int  # sliding-window stride
    # class-names file: a bare name (`voc`) is cocu/eval/classnames/<name>.txt, anything with a
    # `/` or a `.txt` suffix is a path; null: `<benchmark folder>/class_names.txt`
    class_names: Optional[str] = None
    # ImageNet-S: an image with more than cap^2 pixels is first shrunk to a long side of `cap`;
    # it is segmented at that size and the prediction is nearest-resized to the label's size
    long_side_cap: Optional[int] = None
    max_long_side: Optional[int] = 2048  # mmseg's img_scale=(2048, resize) caps the long side too
    bg_thresh: Optional[float] = None  # background threshold; required iff has_background
    templates: TemplateSet = "single"  # "single": "a photo of a {}."; "imagenet80": CLIP's 80
    ignore_index: int = 255  # label value excluded from the metric
    num_images: Optional[int] = None  # evaluate only the first N images (sorted ids); null: all

    def __post_init__(self) -> None:
        if self.crop <= 0 or not 0 < self.stride <= self.crop:
            raise ValueError(f"protocol card: need 0 < stride <= crop, got crop={self.crop} "
                             f"stride={self.stride}")
        if self.has_background != (self.bg_thresh is not None):
            raise ValueError("protocol card: bg_thresh must be set exactly when has_background is true "
                             f"(has_background={self.has_background}, bg_thresh={self.bg_thresh})")
        for key in ("resize", "long_side_cap", "max_long_side", "num_images"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"protocol card: {key} must be positive or null, got {value}")


@dataclass(frozen=True)
class EvalConfig:
    """The `eval` section: every card, and which of them the `evaluate` stage runs."""

    benchmarks: dict[str, ProtocolCard]  # benchmark name -> protocol card
    active: tuple[str, ...]  # names evaluated by the `evaluate` stage (keys of `benchmarks`)
    overlays: int = 4  # demo overlays written per benchmark (first N images of rank 0)
    threads: int = 0  # torch threads on CPU (0: torch's default); small models run faster on 1
    # Pixel normalisation and the logit scale are not keys here: pass the pre-training data
    # config's mean/std and the model's clamped scale (`model.scale()`), so they cannot drift.

    def __post_init__(self) -> None:
        unknown = [n for n in self.active if n not in self.benchmarks]
        if unknown:
            raise ValueError(f"eval.active names unknown benchmark(s) {unknown} "
                             f"(cards: {sorted(self.benchmarks)})")
