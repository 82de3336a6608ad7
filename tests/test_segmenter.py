"""GroupViT zero-shot segmentation rules, sliding window, protocol cards, and an end-to-end run
on a fake model whose groups are the true classes."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cocu.config import ConfigError, EvalConfig, ProtocolCard, from_dict
from cocu.data.readers import open_benchmark
from cocu.eval.protocol import (IMAGENET_TEMPLATES, OFFICIAL_CARDS, SYNTHETIC_CARDS, card_text,
                                cards_as_params, protocol_deviations, templates_for)
from cocu.eval.runner import benchmark_text_embeddings, evaluate_benchmark
from cocu.eval.segmenter import (background_logits, capped_size, class_embeddings, group_class_probs,
                                 groupvit_crop_logits, pixel_logits, rescale_size, resize_argmax, segment,
                                 slide_inference)

STEP = 20  # the fake images store label id * STEP in the red channel
PATCH = 8
ZERO_MEAN, UNIT_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


class OracleModel:
    """Patch 8; one group per label id with a one-hot feature, so its groups are the true classes.

    Label id l is foreground class f = l - has_bg (feature e_f); the background group's feature
    e_K is orthogonal to every text embedding. Expects images normalised with mean 0, std 1.
    """

    def __init__(self, num_fg: int, has_bg: bool) -> None:
        self.num_fg, self.has_bg = num_fg, int(has_bg)
        self.num_ids = num_fg + self.has_bg
        self.calls = 0

    def text_emb(self) -> torch.Tensor:
        return torch.eye(self.num_fg, self.num_fg + 1)  # [K, C]

    def feature_dim(self, label_id: int) -> int:
        return self.num_fg if (self.has_bg and label_id == 0) else label_id - self.has_bg

    def encode_image_groups(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        ids = torch.round(image[:, 0] * 255 / STEP).long().clamp(0, self.num_ids - 1)  # [B, H, W]
        patch_ids = ids[:, PATCH // 2::PATCH, PATCH // 2::PATCH]  # [B, h, w] centre pixel of each patch
        assignment = F.one_hot(patch_ids, self.num_ids).permute(0, 3, 1, 2).float()  # [B, G, h, w]
        dims = torch.tensor([self.feature_dim(g) for g in range(self.num_ids)])
        groups = F.one_hot(dims, self.num_fg + 1).float()[None].expand(image.shape[0], -1, -1)  # [B, G, C]
        present = torch.zeros(image.shape[0], self.num_fg + 1)
        for b in range(image.shape[0]):
            for g in patch_ids[b].unique().tolist():
                present[b, self.feature_dim(g)] = 1
        return {"group_features": groups, "image_features": F.normalize(present, dim=-1),
                "assignment": assignment}


def _card(**kw) -> ProtocolCard:
    base = dict(reader="synthetic", root="bench", has_background=True, bg_thresh=0.95, resize=None, crop=64,
                stride=32, class_names=None, long_side_cap=None, max_long_side=2048, templates="single",
                ignore_index=255, num_images=None)
    return ProtocolCard(**{**base, **kw})


def _blocky_label(rng: np.random.Generator, h: int, w: int, ids: list[int]) -> np.ndarray:
    """Vertical stripes 8 px wide with ids drawn from `ids`, every id at least once.

    Stripes, because upsampling a one-hot patch assignment bilinearly and taking the argmax
    group is exact across a straight patch border but not at a corner where three patches of
    another group meet (GroupViT's rule behaves the same way).
    """
    stripes = np.concatenate([ids, rng.choice(ids, size=w // PATCH - len(ids))])
    rng.shuffle(stripes)
    return np.repeat(np.repeat(stripes[None], PATCH, axis=1), h, axis=0).astype(np.uint8)


def _image_of(label: np.ndarray) -> np.ndarray:
    red = label.astype(np.int64) * STEP
    return np.stack([red, np.full_like(red, 7), np.full_like(red, 200)], axis=-1).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# sliding window


@pytest.mark.parametrize("size", [(64, 64), (70, 101), (20, 30), (32, 90)])
def test_slide_identity_reassembles_input(size):
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    seen = []

    def identity(crop: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(crop.shape[-2:]))
        return crop

    out = slide_inference(identity, image, crop=32, stride=16, num_classes=3)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)
    assert all(h <= 32 and w <= 32 for h, w in seen)
    if min(size) >= 32:
        assert set(seen) == {(32, 32)}


def test_slide_window_count_follows_mmseg():
    calls = []
    slide_inference(lambda c: calls.append(1) or c, torch.zeros(1, 3, 70, 101), 32, 16, 3)
    # rows: (70 - 32 + 15) // 16 + 1 = 4, columns: (101 - 32 + 15) // 16 + 1 = 6
    assert len(calls) == 24


def test_slide_rejects_wrong_crop_output():
    with pytest.raises(ValueError, match="infer_crop returned"):
        slide_inference(lambda c: c[:, :2], torch.zeros(1, 3, 16, 16), 8, 8, 3)


def test_resize_argmax_in_chunks_matches_full(rng):
    logits = torch.from_numpy(rng.standard_normal((1, 7, 9, 11))).float()
    full = F.interpolate(logits, size=(20, 25), mode="bilinear", align_corners=False)[0].argmax(0)
    torch.testing.assert_close(resize_argmax(logits, (20, 25), chunk=3), full)


def test_resize_rules():
    assert rescale_size(375, 500, 448, 2048) == (448, 597)  # short side to 448
    assert rescale_size(100, 1000, 448, 2048) == (205, 2048)  # the long side cap wins
    assert rescale_size(375, 500, None, 2048) == (375, 500)
    assert capped_size(3000, 1500, 1000) == (1000, 500)  # more than 1000^2 pixels: long side 1000
    assert capped_size(1200, 800, 1000) == (1200, 800)  # 960k pixels: left alone
    assert capped_size(1200, 800, None) == (1200, 800)


# --------------------------------------------------------------------------------------------
# GroupViT rules


def test_background_rule_hand_built():
    probs = torch.tensor([[0.90, 0.05], [0.30, 0.20], [0.50, 0.40]])
    # threshold = min(0.95, max P = 0.90) = 0.90: rows whose max is below it are background
    torch.testing.assert_close(background_logits(probs, 0.95), torch.tensor([0.0, 1.0, 1.0]))
    # threshold = min(0.40, 0.90) = 0.40: only the 0.30 row
    torch.testing.assert_close(background_logits(probs, 0.40), torch.tensor([0.0, 1.0, 0.0]))
    # a row equal to the threshold is not background (strict <)
    torch.testing.assert_close(background_logits(probs, 0.50), torch.tensor([0.0, 1.0, 0.0]))


def test_pixel_logits_take_the_argmax_group_and_background_channel():
    probs = torch.tensor([[0.90, 0.05], [0.30, 0.20]])
    assignment = torch.tensor([[[0.8, 0.4]], [[0.2, 0.6]]])  # [G=2, h=1, w=2]: pixel 0 -> g0, pixel 1 -> g1
    out = pixel_logits(assignment, probs, (1, 2), bg_thresh=0.95)  # [1 + K, 1, 2]
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 0.90, 0.05]))
    torch.testing.assert_close(out[:, 0, 1], torch.tensor([1.0, 0.30, 0.20]))
    assert out[:, 0].argmax(0).tolist() == [1, 0]  # class 0 (id 1), then background (id 0)
    assert pixel_logits(assignment, probs, (1, 2), bg_thresh=None).shape == (2, 1, 2)


def test_group_class_probs_formula_and_topk_mask(rng):
    K, C, G, s = 8, 16, 4, 30.0
    text = F.normalize(torch.from_numpy(rng.standard_normal((K, C))).float(), dim=-1)
    groups = F.normalize(torch.from_numpy(rng.standard_normal((G, C))).float(), dim=-1)
    image = F.normalize(torch.from_numpy(rng.standard_normal(C)).float(), dim=-1)
    probs = group_class_probs(groups, image, text, s)
    keep = (s * image @ text.T).softmax(-1).topk(5).indices.numpy()
    logits = (s * groups @ text.T).numpy()
    masked = np.full_like(logits, -np.inf)
    masked[:, keep] = logits[:, keep]

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    np.testing.assert_allclose(probs.numpy(), softmax(masked) * softmax(logits), rtol=1e-5, atol=1e-7)
    dropped = np.setdiff1d(np.arange(K), keep)
    assert (probs[:, dropped] == 0).all()


def test_class_outside_image_topk_never_wins():
    K = 8
    text = torch.eye(K)
    image = F.normalize(torch.tensor([1.0] * 5 + [0.0] * 3), dim=0)  # image level: classes 0..4
    groups = torch.eye(K)[[7, 6, 2]]  # groups that best match classes 7, 6 and 2
    probs = group_class_probs(groups, image, text, 100.0)
    assert (probs[:, 5:] == 0).all()
    assert set(probs.argmax(-1).tolist()) <= {0, 1, 2, 3, 4}
    assert probs[2].argmax().item() == 2
    assert group_class_probs(groups, image, text[:3], 100.0).shape == (3, 3)  # K < 5 keeps all


def test_class_embeddings_normalise_before_and_after_the_mean():
    vocab: dict[str, int] = {}
    raw = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 10.0], [1.0, 1.0, 1.0]])

    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[vocab.setdefault(t, len(vocab))] for t in texts])

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:  # deliberately not unit norm
        return raw[tokens[:, 0]]

    emb = class_embeddings(encode_text, tokenize, ["cat", "dog"], ["a {}.", "the {}!"], batch_size=3)
    assert emb.shape == (2, 3)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    # cat: normalise (3,0,0) and (0,1,0) -> mean (0.5, 0.5, 0) -> normalised; raw mean would tilt to x
    torch.testing.assert_close(emb[0], F.normalize(torch.tensor([0.5, 0.5, 0.0]), dim=0))
    dog = torch.tensor([1.0, 1.0, 1.0]) / 3 ** 0.5 + torch.tensor([0.0, 0.0, 1.0])  # sum of the unit vectors
    torch.testing.assert_close(emb[1], F.normalize(dog, dim=0))
    assert list(vocab) == ["a cat.", "the cat!", "a dog.", "the dog!"]


# --------------------------------------------------------------------------------------------
# end to end on the oracle model


def test_crop_logits_shape_and_background_channel(rng):
    model = OracleModel(num_fg=4, has_bg=True)
    label = _blocky_label(rng, 32, 48, [0, 1, 3])
    crop = torch.from_numpy(_image_of(label)).permute(2, 0, 1)[None].float() / 255
    out = groupvit_crop_logits(model, crop, model.text_emb(), 100.0, _card())
    assert out.shape == (1, 5, 32, 48)
    np.testing.assert_array_equal(out[0].argmax(0).numpy(), label)


@pytest.mark.parametrize("has_bg", [True, False])
def test_segment_recovers_blocky_labels_exactly(rng, has_bg):
    model = OracleModel(num_fg=6, has_bg=has_bg)
    ids = [0, 2, 3, 5] if has_bg else [0, 1, 4, 5]
    label = _blocky_label(rng, 48, 64, ids)
    card = _card(has_background=has_bg, bg_thresh=0.95 if has_bg else None)
    pred = segment(model, _image_of(label), model.text_emb(), card, scale=100.0, mean=ZERO_MEAN, std=UNIT_STD)
    assert pred.shape == label.shape and pred.dtype == np.int64
    np.testing.assert_array_equal(pred, label)


def test_segment_sliding_without_background_is_exact(rng):
    model = OracleModel(num_fg=5, has_bg=False)
    label = _blocky_label(rng, 80, 96, [0, 1, 2, 3, 4])
    card = _card(has_background=False, bg_thresh=None, crop=32, stride=16)
    pred = segment(model, _image_of(label), model.text_emb(), card, scale=100.0, mean=ZERO_MEAN, std=UNIT_STD)
    np.testing.assert_array_equal(pred, label)
    assert model.calls == 4 * 5  # rows (80 - 32 + 15) // 16 + 1, columns (96 - 32 + 15) // 16 + 1


def test_segment_resizes_back_to_the_original_size(rng):
    model = OracleModel(num_fg=3, has_bg=False)
    label = _blocky_label(rng, 64, 96, [0, 1, 2])
    image = _image_of(label)
    card = _card(has_background=False, bg_thresh=None, resize=128, crop=64, stride=32)  # 128 x 192
    pred = segment(model, image, model.text_emb(), card, scale=100.0, mean=ZERO_MEAN, std=UNIT_STD)
    assert pred.shape == (64, 96)
    assert (pred == label).mean() > 0.95
    capped = segment(model, image, model.text_emb(), dataclasses.replace(card, resize=None, long_side_cap=40),
                     scale=100.0, mean=ZERO_MEAN, std=UNIT_STD)
    assert capped.shape == (64, 96)  # predicted at 26 x 40, nearest-resized to the label's size


def test_evaluate_benchmark_on_synthetic_layout(tmp_path, rng):
    folder = tmp_path / "synth_things"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    names = ["background", "circle", "square", "star", "moon"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    for i in range(3):
        label = _blocky_label(rng, 48, 64, [0, 1, 2, 4])
        Image.fromarray(_image_of(label)).save(folder / "images" / f"{i:05d}.png")
        label[:8, :8] = 255  # ignored
        Image.fromarray(label).save(folder / "labels" / f"{i:05d}.png")
    bench = open_benchmark(dataclasses.replace(SYNTHETIC_CARDS["synth_things"], crop=64), tmp_path)
    model = OracleModel(num_fg=4, has_bg=True)
    assert bench.prompt_names == names[1:] and bench.num_classes == 5
    text = model.text_emb()
    scores = evaluate_benchmark(model, bench, text, scale=100.0, mean=ZERO_MEAN, std=UNIT_STD,
                                overlay_dir=tmp_path / "overlays", num_overlays=2, name="synth_things")
    assert scores["mIoU"] == pytest.approx(100.0)
    assert np.isnan(scores["IoU/star"])  # never present, never predicted
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == ["00000.png", "00001.png"]


def test_benchmark_text_embeddings_use_card_templates(tmp_path):
    folder = tmp_path / "b"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "class_names.txt").write_text("red\nblue\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "images" / "0.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "labels" / "0.png")
    card = _card(root="b", has_background=False, bg_thresh=None, templates="imagenet80")
    bench = open_benchmark(card, tmp_path)
    seen: list[str] = []

    class TextModel:
        def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(tokens), 4)

    emb = benchmark_text_embeddings(TextModel(), lambda t: seen.extend(t) or torch.zeros(len(t), 1), bench)
    assert emb.shape == (2, 4) and len(seen) == 160 and seen[0] == "a bad photo of a red."


# --------------------------------------------------------------------------------------------
# protocol cards


def test_official_cards_follow_method_table():
    table = {  # docs/protocol.md §2: background threshold, resize, crop, stride
        "voc": (0.95, 448, 448, 224), "context": (0.35, 448, 448, 224), "coco_object": (0.95, 448, 448, 224),
        "imagenet_s50": (0.95, 448, 448, 224), "imagenet_s300": (0.75, 448, 448, 224),
        "cityscapes": (None, None, 448, 224), "ade20k": (None, 512, 224, 112),
        "coco_stuff": (None, 512, 224, 112),
        "voc20": (None, 448, 448, 224), "context59": (None, 448, 448, 224),
    }
    assert set(OFFICIAL_CARDS) == set(table)
    for name, (thresh, resize, crop, stride) in table.items():
        card = OFFICIAL_CARDS[name]
        assert (card.bg_thresh, card.resize, card.crop, card.stride) == (thresh, resize, crop, stride), name
        assert card.has_background == (thresh is not None) and card.templates == "single"
    assert OFFICIAL_CARDS["imagenet_s50"].long_side_cap == 1000


def test_templates():
    assert templates_for(OFFICIAL_CARDS["voc"]) == ("a photo of a {}.",)
    assert len(IMAGENET_TEMPLATES) == 80 == len(set(IMAGENET_TEMPLATES))
    # open_clip holds the same public list (as lambdas); load that one file, not the whole package
    spec = importlib.util.find_spec("open_clip")
    path = Path(spec.origin).parent / "zero_shot_metadata.py"
    meta = importlib.util.spec_from_file_location("_open_clip_zero_shot_metadata", path)
    module = importlib.util.module_from_spec(meta)
    meta.loader.exec_module(module)
    assert list(IMAGENET_TEMPLATES) == [t("{}") for t in module.OPENAI_IMAGENET_TEMPLATES]


def test_card_text_is_one_line_with_the_protocol():
    text = card_text(OFFICIAL_CARDS["voc"], "voc")
    assert "\n" not in text and text.startswith("voc: ")
    for part in ("thresh=0.95", "short448", "slide=448/224", "templates=single(1)", "topk=5"):
        assert part in text
    assert "cap1000" in card_text(OFFICIAL_CARDS["imagenet_s300"])


def test_card_validation():
    with pytest.raises(ValueError, match="bg_thresh"):
        _card(has_background=False)  # a threshold without a background
    with pytest.raises(ValueError, match="bg_thresh"):
        _card(bg_thresh=None)
    with pytest.raises(ValueError, match="stride"):
        _card(stride=65)


def test_cards_load_strictly_from_params_mapping():
    raw = {"benchmarks": cards_as_params({**OFFICIAL_CARDS, **SYNTHETIC_CARDS}), "active": ["synth_things"],
           "overlays": 4, "threads": 1}
    cfg = from_dict(EvalConfig, raw)
    assert cfg.benchmarks == {**OFFICIAL_CARDS, **SYNTHETIC_CARDS}
    assert protocol_deviations("voc", cfg.benchmarks["voc"]) == []
    assert protocol_deviations("voc", dataclasses.replace(OFFICIAL_CARDS["voc"], bg_thresh=0.9)) == [
        "bg_thresh: 0.9 != 0.95"]
    bad = {**raw, "benchmarks": {"voc": {**raw["benchmarks"]["voc"], "bg_treshold": 0.9}}}
    with pytest.raises(ConfigError, match="bg_treshold"):
        from_dict(EvalConfig, bad)
    with pytest.raises(ValueError, match="names no entry of benchmarks"):
        from_dict(EvalConfig, {**raw, "active": ["nope"]})


def test_contract_with_the_tiny_groupvit():
    """The real (untrained) tiny model satisfies the contract segment() relies on."""
    from cocu.config import tiny_model_config
    from cocu.models.factory import build_model

    torch.manual_seed(0)
    cfg = tiny_model_config()
    model = build_model(cfg).eval()
    tokens = torch.randint(1, cfg.text.vocab_size - 1, (3, cfg.text.context_length))
    with torch.no_grad():
        text = model.encode_text(tokens)  # [3, C]
    image = np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    no_bg = _card(has_background=False, bg_thresh=None, resize=64, crop=64, stride=32)
    for card in (_card(crop=64, stride=32), no_bg):
        pred = segment(model, image, text, card, scale=model.scale())
        assert pred.shape == (80, 120)
        assert 0 <= pred.min() and pred.max() < 3 + int(card.has_background)


def test_per_image_counts_are_written_in_benchmark_order_and_sum_to_the_scores(tmp_path, rng):
    from cocu.eval.runner import read_image_counts
    from cocu.reports.stats import miou_of_counts

    folder = tmp_path / "synth_things"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "class_names.txt").write_text("background\ncircle\nsquare\nstar\nmoon\n")
    for i in range(4):
        label = _blocky_label(rng, 48, 64, [0, 1, 2, 4])
        Image.fromarray(_image_of(label)).save(folder / "images" / f"{i:05d}.png")
        Image.fromarray(label).save(folder / "labels" / f"{i:05d}.png")
    bench = open_benchmark(dataclasses.replace(SYNTHETIC_CARDS["synth_things"], crop=64), tmp_path)
    model = OracleModel(num_fg=4, has_bg=True)
    text = model.text_emb()[[1, 0, 2, 3]]  # circle and square swapped: a model that errs
    path = tmp_path / "counts.npz"
    scores = evaluate_benchmark(model, bench, text, scale=100.0, mean=ZERO_MEAN, std=UNIT_STD, counts_path=path)
    counts, ids = read_image_counts(path)
    assert ids == [it.id for it in bench.items] and counts.shape == (len(bench), 3, bench.num_classes)
    assert scores["mIoU"] < 90 and miou_of_counts(counts.sum(0)) == pytest.approx(scores["mIoU"])
