"""Confusion matrix and mIoU on hand-computed examples; the distributed reduce path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cocu.eval.metrics import SegEvaluator, bootstrap_miou, confusion_matrix, scores_from_confusion

IGN = 255
# 4 classes; class 3 occurs in no label and is predicted only on an ignored pixel -> absent
LABEL = np.array([[0, 0, 1, 1],
                  [0, 0, 1, IGN],
                  [2, 2, IGN, 1],
                  [2, 2, 2, 0]])
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 1, 0],
                 [2, 1, 3, 1],
                 [2, 2, 0, 0]])
# rows = ground truth, columns = prediction, counted by hand over the 14 labelled pixels
EXPECTED_CONF = np.array([[4, 1, 0, 0],
                          [0, 4, 0, 0],
                          [1, 1, 3, 0],
                          [0, 0, 0, 0]])


def test_confusion_matrix_hand_example():
    conf = confusion_matrix(PRED, LABEL, 4, IGN)
    np.testing.assert_array_equal(conf, EXPECTED_CONF)
    assert conf.sum() == 14


def test_miou_hand_example():
    ev = SegEvaluator(4, IGN, ["a", "b", "c", "d"])
    ev.process(PRED, LABEL)
    out = ev.evaluate()
    # IoU = TP / (gt + pred - TP): a 4/(5+5-4), b 4/(4+6-4), c 3/(5+3-3); d has an empty union
    assert out["IoU/a"] == pytest.approx(100 * 4 / 6)
    assert out["IoU/b"] == pytest.approx(100 * 4 / 6)
    assert out["IoU/c"] == pytest.approx(100 * 3 / 5)
    assert math.isnan(out["IoU/d"])
    assert out["mIoU"] == pytest.approx(100 * (4 / 6 + 4 / 6 + 3 / 5) / 3)
    assert out["aAcc"] == pytest.approx(100 * 11 / 14)
    assert out["mAcc"] == pytest.approx(100 * (4 / 5 + 4 / 4 + 3 / 5) / 3)


def test_class_only_in_predictions_counts_with_zero_iou():
    ev = SegEvaluator(3)
    ev.process(np.array([[0, 2], [0, 0]]), np.zeros((2, 2), dtype=np.uint8))
    out = ev.evaluate()
    assert out["IoU/2"] == 0.0  # union 1 > 0: included in the mean
    assert math.isnan(out["IoU/1"])  # never labelled, never predicted
    assert out["mIoU"] == pytest.approx((75.0 + 0.0) / 2)


def test_accumulates_over_images_and_resets():
    ev = SegEvaluator(4, IGN)
    ev.process(PRED, LABEL)
    ev.process(PRED, LABEL)
    np.testing.assert_array_equal(ev.conf, 2 * EXPECTED_CONF)
    assert ev.num_images == 2
    ev.reset()
    assert ev.conf.sum() == 0 and ev.num_images == 0


def test_matches_loop_restatement(rng):
    pred = rng.integers(0, 5, size=(13, 17))
    label = rng.integers(0, 5, size=(13, 17))
    label[rng.random(label.shape) < 0.2] = IGN
    loop = np.zeros((5, 5), dtype=np.int64)
    for g, p in zip(label.ravel(), pred.ravel()):
        if g != IGN:
            loop[g, p] += 1
    np.testing.assert_array_equal(confusion_matrix(pred, label, 5, IGN), loop)


def test_out_of_range_prediction_or_label_is_an_error():
    with pytest.raises(ValueError, match="predictions must lie"):
        confusion_matrix(np.array([[0, 4]]), np.array([[0, 0]]), 4, IGN)
    with pytest.raises(ValueError, match="predictions must lie"):
        confusion_matrix(np.array([[-1, 0]]), np.array([[0, 0]]), 4, IGN)
    with pytest.raises(ValueError, match="label values"):
        confusion_matrix(np.array([[0, 0]]), np.array([[0, 7]]), 4, IGN)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 4, IGN)


def test_class_names_must_match_count():
    with pytest.raises(ValueError):
        SegEvaluator(3, class_names=["a", "b"])


def test_evaluate_scores_the_processed_images():
    ev = SegEvaluator(4, IGN)
    ev.process(PRED, LABEL)
    out = ev.evaluate()
    expected = scores_from_confusion(EXPECTED_CONF, ev.class_names)
    assert {k: out[k] for k in expected} == pytest.approx(expected, nan_ok=True)
    assert out["mIoU_ci_lo"] == out["mIoU_ci_hi"] == pytest.approx(out["mIoU"])  # one image: no spread
    np.testing.assert_array_equal(ev.conf, EXPECTED_CONF)  # evaluate() leaves the matrix alone
    assert ev.image_counts.shape == (1, 3, 4)


def _image_counts(pred: np.ndarray, label: np.ndarray, k: int) -> np.ndarray:  # [3, K]
    conf = confusion_matrix(pred, label, k)
    return np.stack([np.diag(conf), conf.sum(axis=1), conf.sum(axis=0)])


def test_bootstrap_interval_spans_the_extreme_resamples():
    """Two images: resamples are {A,A}, {A,B}, {B,B}; with 1000 draws the 2.5% and 97.5% quantiles
    are the mIoU of the all-A and all-B datasets (each has probability 1/4 per draw)."""
    label = np.array([[0, 0], [1, 1]])
    a = _image_counts(label, label, 2)  # perfect: mIoU 100
    b = _image_counts(np.zeros_like(label), label, 2)  # all class 0: IoU 0.5 and 0
    lo, hi = bootstrap_miou(np.stack([a, b]))
    assert (lo, hi) == pytest.approx((25.0, 100.0))


def test_bootstrap_interval_of_identical_images_is_a_point_and_narrows_with_more_images():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(40, 8, 8))
    preds = np.where(rng.random((40, 8, 8)) < 0.7, labels, rng.integers(0, 3, size=(40, 8, 8)))
    counts = np.stack([_image_counts(p, l, 3) for p, l in zip(preds, labels)])  # [40, 3, K]
    point = scores_from_confusion(sum(confusion_matrix(p, l, 3) for p, l in zip(preds, labels)), "abc")["mIoU"]
    alone = scores_from_confusion(confusion_matrix(preds[0], labels[0], 3), "abc")["mIoU"]
    assert bootstrap_miou(np.repeat(counts[:1], 10, axis=0)) == pytest.approx((alone, alone))
    lo, hi = bootstrap_miou(counts[:10])
    lo4, hi4 = bootstrap_miou(counts)
    assert lo4 < point < hi4 and hi4 - lo4 < hi - lo
    assert bootstrap_miou(counts) == bootstrap_miou(counts)  # seeded: deterministic
