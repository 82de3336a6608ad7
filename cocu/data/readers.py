"""Readers of the segmentation benchmarks in their standard layouts, decoding original label files.

The root is detectron2's convention: the `root` argument, else `$DETECTRON2_DATASETS`, else
`./datasets`; a card's `root` names the benchmark folder under it. Layouts are mmseg's, which
GroupViT and CoCu document (paths relative to the benchmark folder; `<id>` from the split list or
the label files):

- voc, voc20: JPEGImages/<id>.jpg and SegmentationClass/<id>.png (palette PNG), ids from
  ImageSets/Segmentation/val.txt. voc: 0 background, 1..20; voc20: 0..19, background -> 255.
- context, context59: JPEGImages/<id>.jpg and SegmentationClassContext/<id>.png, ids from
  ImageSets/SegmentationContext/val.txt (both written by `converters context`). context:
  0 background, 1..59; context59: 0..58, background -> 255.
- coco_object, coco_stuff: images/val2017/<id>.jpg and annotations/val2017/<id>.png (the
  stuffthingmaps, 182-id space). coco_object: 0 background, 1..80; coco_stuff: 0..170.
- ade20k: images/validation/<id>.jpg and annotations/validation/<id>.png: 0..149, "other" -> 255.
- cityscapes: leftImg8bit/val/<city>/<id>_leftImg8bit.png and
  gtFine/val/<city>/<id>_gtFine_labelIds.png: the 19 trainIds, everything else 255.
- imagenet_s: validation/<wnid>/<id>.JPEG and validation-segmentation/<wnid>/<id>.png (RGB,
  id = R + 256 G): 0 background, 1..K, 1000 -> the card's ignore_index.
- synthetic: images/<id>.png (or .jpg) and labels/<id>.png (255 = ignore): as stored.

Class-names files list names in label-id order, one per line (`#` lines are comments). For a
card with a background, a file may start with `background` (the synthetic layout's
class_names.txt does) or hold only the foreground classes; either way label 0 is background and
is never prompted. A card without a background must not list one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from cocu.config import ProtocolCard
from cocu.data import converters as cv
from cocu.data.converters import read_class_names, shipped_class_names

EXTRACT = "python -m cocu.data.converters extract"


class BenchmarkNotFoundError(FileNotFoundError):
    """A benchmark folder (or a file it needs) is missing; the message says how to prepare it."""


@dataclass(frozen=True)
class Item:
    id: str
    image: Path
    label: Path


Decoder = Callable[[Path, ProtocolCard, int], np.ndarray]  # (label file, card, #foreground) -> ids


@dataclass(frozen=True)
class Layout:
    required: tuple[str, ...]  # paths that must exist under the benchmark folder
    list_items: Callable[[Path], list[Item]]
    decode: Decoder
    prepare: str  # how to obtain the folder ({root} is the benchmarks root)


def _lut_decoder(kind: str) -> Decoder:
    return lambda path, card, k: cv.apply_lut(cv.read_index_png(path), cv.LABEL_MAPS[kind], str(path))


def _imagenet_s_decoder(path: Path, card: ProtocolCard, num_foreground: int) -> np.ndarray:
    with Image.open(path) as im:
        rgb = np.array(im.convert("RGB"))
    return cv.imagenet_s_decode(rgb, num_foreground, card.ignore_index, str(path))


def _from_split(split: str, images: str, image_ext: str, labels: str) -> Callable[[Path], list[Item]]:
    def list_items(folder: Path) -> list[Item]:
        ids = sorted(set((folder / split).read_text().split()))
        return [Item(i, folder / images / f"{i}{image_ext}", folder / labels / f"{i}.png") for i in ids]
    return list_items


def _from_labels(labels: str, pattern: str, image_for: Callable[[Path, Path], Path],
                 label_suffix: str = ".png") -> Callable[[Path], list[Item]]:
    def list_items(folder: Path) -> list[Item]:
        items = []
        for path in sorted((folder / labels).glob(pattern)):
            if path.name.endswith("TrainIds.png"):  # files a converter wrote beside the originals
                continue
            rel = path.relative_to(folder / labels).as_posix()
            items.append(Item(rel[: -len(label_suffix)], image_for(folder, path), path))
        return items
    return list_items


def _first_existing(candidates: Sequence[Path]) -> Path:
    return next((p for p in candidates if p.exists()), candidates[0])


_VOC_FILES = ("ImageSets/Segmentation/val.txt", "JPEGImages", "SegmentationClass")
_VOC = _from_split("ImageSets/Segmentation/val.txt", "JPEGImages", ".jpg", "SegmentationClass")
_CONTEXT = _from_split("ImageSets/SegmentationContext/val.txt", "JPEGImages", ".jpg",
                       "SegmentationClassContext")
_CONTEXT_FILES = ("ImageSets/SegmentationContext/val.txt", "JPEGImages", "SegmentationClassContext")
_COCO_FILES = ("images/val2017", "annotations/val2017")
_COCO = _from_labels("annotations/val2017", "*.png", lambda f, p: f / "images" / "val2017" / f"{p.stem}.jpg")
_CITY = _from_labels("gtFine/val", "*/*_gtFine_labelIds.png", label_suffix="_gtFine_labelIds.png",
                     image_for=lambda f, p: f / "leftImg8bit" / "val" / p.parent.name
                     / p.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png"))
_IMAGENET_S = _from_labels("validation-segmentation", "*/*.png", lambda f, p: _first_existing(
    [f / "validation" / p.parent.name / f"{p.stem}{ext}" for ext in (".JPEG", ".jpg", ".jpeg", ".png")]))
_SYNTH = _from_labels("labels", "*.png", lambda f, p: _first_existing(
    [f / "images" / f"{p.stem}{ext}" for ext in (".png", ".jpg", ".jpeg")]))

_VOC_PREP = f"download VOCtrainval_11-May-2012.tar and run `{EXTRACT} VOCtrainval_11-May-2012.tar {{root}}`"
_CTX_PREP = (f"download VOCtrainval_03-May-2010.tar and PASCAL Context's trainval.tar.gz; run `{EXTRACT} "
             "VOCtrainval_03-May-2010.tar {root}` then `python -m cocu.data.converters context --mats "
             "trainval.tar.gz --voc2010 {root}/VOCdevkit/VOC2010`")
_COCO_PREP = (f"download COCO val2017.zip and COCO-Stuff stuffthingmaps_trainval2017.zip; run `{EXTRACT} "
              f"val2017.zip {{folder}}/images` and `{EXTRACT} stuffthingmaps_trainval2017.zip "
              "{folder}/annotations`")
_IMNS_PREP = ("build ImageNet-S with the data-preparation script of the ImageNet-S project "
              "(LUSSeg/ImageNet-S) from ImageNet-1k, giving validation/ and validation-segmentation/ "
              "in {folder}")

LAYOUTS: dict[str, Layout] = {
    "voc": Layout(_VOC_FILES, _VOC, _lut_decoder("voc"), _VOC_PREP),
    "voc20": Layout(_VOC_FILES, _VOC, _lut_decoder("voc20"), _VOC_PREP),
    "context": Layout(_CONTEXT_FILES, _CONTEXT, _lut_decoder("context"), _CTX_PREP),
    "context59": Layout(_CONTEXT_FILES, _CONTEXT, _lut_decoder("context59"), _CTX_PREP),
    "coco_object": Layout(_COCO_FILES, _COCO, _lut_decoder("coco_object"), _COCO_PREP),
    "coco_stuff": Layout(_COCO_FILES, _COCO, _lut_decoder("coco_stuff"), _COCO_PREP),
    "ade20k": Layout(("images/validation", "annotations/validation"),
                     _from_labels("annotations/validation", "*.png",
                                  lambda f, p: f / "images" / "validation" / f"{p.stem}.jpg"),
                     _lut_decoder("ade20k"), f"download ADEChallengeData2016.zip and run `{EXTRACT} "
                     "ADEChallengeData2016.zip {root}`"),
    "cityscapes": Layout(("leftImg8bit/val", "gtFine/val"), _CITY, _lut_decoder("cityscapes"),
                         "download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
                         "(cityscapes-dataset.com) "
                         f"and run `{EXTRACT} <zip> {{folder}}` for each"),
    "imagenet_s": Layout(("validation", "validation-segmentation"), _IMAGENET_S, _imagenet_s_decoder,
                         _IMNS_PREP),
    "synthetic": Layout(("images", "labels", "class_names.txt"), _SYNTH, _lut_decoder("synthetic"),
                        "run the `benchmarks` stage (`dvc repro benchmarks`), which writes the synthetic "
                        "benchmarks"),
}


def resolve_root(root: Optional[Path | str] = None) -> Path:
    """The benchmarks root: the argument, else $DETECTRON2_DATASETS, else ./datasets (detectron2)."""
    return Path(root if root is not None else os.environ.get("DETECTRON2_DATASETS", "datasets"))


def foreground_names(card: ProtocolCard, folder: Path) -> list[str]:
    """The prompted class names of a card, in label-id order (see the module docstring)."""
    spec = card.class_names
    if spec is None:
        path = folder / "class_names.txt"
        if not path.is_file():
            raise BenchmarkNotFoundError(f"{path}: class-names file not found; write one name per label id "
                                         "there, "
                                         "or set the card's class_names to a shipped list or a file path")
        names = read_class_names(path)
    elif "/" in spec or spec.endswith(".txt"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"{spec}: class-names file named by the protocol card not found")
        names = read_class_names(Path(spec))
    else:
        names = shipped_class_names(spec)
    if names and names[0].lower() == "background":
        if not card.has_background:
            raise ValueError(f"class names of {card.root} start with 'background' but the card has no "
                             "background")
        names = names[1:]
    return names


class Benchmark:
    """A lazily decoded benchmark: iterating yields (id, image [H, W, 3] uint8, label [H, W] uint8/uint16)."""

    def __init__(self, card: ProtocolCard, folder: Path, items: list[Item], prompt_names: list[str]) -> None:
        self.card = card
        self.folder = folder
        self.items = items
        self.prompt_names = prompt_names  # foreground classes, the text queries
        self.class_names = (["background"] if card.has_background else []) + prompt_names  # one per label id
        self._decode = LAYOUTS[card.reader].decode

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for item in self.items:
            yield item.id, self.load_image(item), self._decode(item.label, self.card, len(self.prompt_names))

    @staticmethod
    def load_image(item: Item) -> np.ndarray:
        with Image.open(item.image) as im:
            return np.array(im.convert("RGB"))


def open_benchmark(card: ProtocolCard, root: Optional[Path | str] = None) -> Benchmark:
    """The benchmark a card describes, under the benchmarks root (see `resolve_root`).

    Raises BenchmarkNotFoundError naming the missing path and how to prepare it.
    """
    layout = LAYOUTS[card.reader]
    base = resolve_root(root)
    folder = base / card.root
    missing = [folder / r for r in layout.required if not (folder / r).exists()]
    if missing:
        how = layout.prepare.format(root=base, folder=folder)
        raise BenchmarkNotFoundError(f"benchmark folder {folder} is missing {missing[0]} "
                                     f"(reader {card.reader!r}); "
                                     f"to prepare it: {how}")
    items = layout.list_items(folder)
    if not items:
        raise BenchmarkNotFoundError(f"benchmark folder {folder} holds no labelled images "
                                     f"(reader {card.reader!r})")
    if card.num_images is not None:
        items = items[: card.num_images]
    absent = [p for it in items for p in (it.image, it.label) if not p.is_file()]
    if absent:
        raise BenchmarkNotFoundError(f"{len(absent)} image or label file(s) of {folder} are missing, "
                                     f"e.g. {absent[0]}")
    return Benchmark(card, folder, items, foreground_names(card, folder))

