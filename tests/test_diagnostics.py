"""The segmentation diagnostics: hand-computed cases, and agreement with the evaluation itself."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cocu.data.readers import open_benchmark
from cocu.eval.diagnostics import check_single_window, diagnose_benchmark, majority_labels, presence_auc
from cocu.eval.protocol import OFFICIAL_CARDS, SYNTHETIC_CARDS
from cocu.eval.runner import evaluate_benchmark

from .conftest import REPO, write_params
from .test_segmenter import UNIT_STD, ZERO_MEAN, OracleModel, _blocky_label, _image_of


def test_majority_labels_hand_case():
    group = np.array([[0, 0, 1], [1, 1, 1], [2, 2, 2]])
    label = np.array([[3, 3, 3], [2, 2, 255], [255, 255, 255]])
    # group 0: 3, 3; group 1: 3, 2, 2 (255 ignored); group 2: nothing labelled -> 0
    assert majority_labels(group, label, num_groups=4, num_classes=5, ignore_index=255).tolist() == [3, 2, 0, 0]
    tie = majority_labels(np.zeros((1, 2), int), np.array([[4, 1]]), 1, 5, 255)
    assert tie.tolist() == [1]  # ties go to the lowest id


def test_presence_auc_hand_cases():
    scores = np.array([[0.1, 0.5, 1.0], [0.4, 0.5, 2.0], [0.35, 0.2, 3.0], [0.8, 0.9, 4.0]])
    present = np.array([[0, 1, 1], [0, 0, 1], [1, 0, 1], [1, 1, 1]])
    auc = presence_auc(scores, present)
    # column 0: positives 0.35, 0.8 vs negatives 0.1, 0.4 -> 3 of 4 pairs ordered
    assert auc[0] == pytest.approx(0.75)
    # column 1: positives 0.5, 0.9 vs negatives 0.5, 0.2 -> (0.5 ties 0.5: 1/2) + 1 + 1 + 1 = 3.5 of 4
    assert auc[1] == pytest.approx(0.875)
    assert np.isnan(auc[2])  # present everywhere: undefined, never a number
    assert presence_auc(-scores[:, :2], present[:, :2]) == pytest.approx(1.0 - auc[:2])


def _bench(tmp_path, rng, n=3):
    folder = tmp_path / "synth_things"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "class_names.txt").write_text("background\ncircle\nsquare\nstar\nmoon\n")
    ids = [[0, 1, 2, 4], [0, 3], [1, 2]]
    for i in range(n):
        label = _blocky_label(rng, 48, 64, ids[i % 3])
        Image.fromarray(_image_of(label)).save(folder / "images" / f"{i:05d}.png")
        label[:8, :8] = 255
        Image.fromarray(label).save(folder / "labels" / f"{i:05d}.png")
    return open_benchmark(dataclasses.replace(SYNTHETIC_CARDS["synth_things"], crop=64), tmp_path), ids


def test_a_model_whose_segments_are_the_classes_scores_100_everywhere(tmp_path, rng):
    bench, ids = _bench(tmp_path, rng)
    model = OracleModel(num_fg=4, has_bg=True)
    r = diagnose_benchmark(model, bench, model.text_emb(), scale=100.0, mean=ZERO_MEAN, std=UNIT_STD)
    for p in ("protocol", "true_background", "grouping_bound"):
        assert r[p] == pytest.approx(100.0), p
    assert r["segments_per_image"] == pytest.approx(np.mean([len(i) for i in ids]))
    assert r["presence_auc"] == pytest.approx(1.0)
    assert r["images"] == 3
    assert r["foreground_on_background"] == 0.0 and r["images_foreground_mostly_background"] == 0.0


def test_where_the_foreground_lands_when_the_background_looks_like_a_class(tmp_path, rng):
    bench, _ = _bench(tmp_path, rng)
    model = OracleModel(num_fg=4, has_bg=True)
    text = model.text_emb()
    text[0] = torch.eye(5)[4]  # "circle" names the background's feature; circle segments match nothing
    r = diagnose_benchmark(model, bench, text, scale=100.0, mean=ZERO_MEAN, std=UNIT_STD)
    # every segment but the circle's is certain (P ~ 1 >= 0.95) and stays foreground: the background
    # segment as "circle"; the circle segment (P = 1/16) becomes background
    fg = on_bg = mostly = with_fg = 0
    for _, _, label in bench:
        valid = label != 255
        f, b = int((valid & (label != 1)).sum()), int((valid & (label == 0)).sum())
        fg, on_bg, with_fg, mostly = fg + f, on_bg + b, with_fg + (f > 0), mostly + (2 * b > f)
    assert on_bg > 0 and r["foreground_on_background"] == pytest.approx(100.0 * on_bg / fg)
    assert r["images_foreground_mostly_background"] == pytest.approx(100.0 * mostly / with_fg)


def test_protocol_column_is_what_the_evaluation_reports(tmp_path, rng):
    bench, _ = _bench(tmp_path, rng)
    model = OracleModel(num_fg=4, has_bg=True)
    text = model.text_emb()[torch.tensor([2, 0, 3, 1])]  # classes misnamed: segments right, names wrong
    r = diagnose_benchmark(model, bench, text, scale=100.0, mean=ZERO_MEAN, std=UNIT_STD)
    scores = evaluate_benchmark(model, bench, text, scale=100.0, mean=ZERO_MEAN, std=UNIT_STD)
    assert r["protocol"] == pytest.approx(scores["mIoU"])
    assert r["protocol"] < 60.0  # the names are wrong ...
    assert r["grouping_bound"] == pytest.approx(100.0)  # ... the segments are not


def test_only_cards_with_one_window_per_image():
    check_single_window(SYNTHETIC_CARDS["synth_things"], 64, 64)
    with pytest.raises(ValueError, match="one window"):
        check_single_window(OFFICIAL_CARDS["voc"], 375, 500, "voc/2007_000033")


def test_script_prints_one_row_per_checkpoint(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "scripts"))
    import diagnose

    from cocu.config import load_params, to_dict
    from cocu.data.benchmarks import write_synthetic_benchmark
    from cocu.models.factory import build_model
    from cocu.training.checkpoint import save_checkpoint

    params_file = write_params(tmp_path)
    params = load_params(params_file)
    write_synthetic_benchmark(params.world, "synth_things", 3, Path(params.paths.benchmarks_root))
    torch.manual_seed(0)
    model = build_model(params.model)
    for name in ("a.pt", "b.pt"):
        save_checkpoint({"model": model.state_dict(), "model_config": to_dict(params.model)}, tmp_path / name)
    assert diagnose.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--params", str(params_file)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| checkpoint | protocol | no_background_rule | true_background | grouping_bound")
    assert [r.split(" | ")[0] for r in rows[1:]] == [f"| {tmp_path / 'a.pt'}", f"| {tmp_path / 'b.pt'}"]
    assert rows[1].split(" | ")[1:] == rows[2].split(" | ")[1:]  # the same weights, the same numbers
    assert rows[0].endswith("| segments / image | presence AUC | foreground_on_background (%) | "
                            "images_foreground_mostly_background (%) | images |")
    assert rows[1].rstrip(" |").endswith("| 3")  # every image

    with pytest.raises(SystemExit):
        diagnose.main(["x.pt", "--benchmark", "nope", "--params", str(params_file)])
    assert "not a card of eval.benchmarks" in capsys.readouterr().err
