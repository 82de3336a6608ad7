"""The per-concept analysis (cocu.reports.mechanism) against hand-computed cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from cocu.eval.runner import write_image_counts
from cocu.reports import mechanism

KINDS = {"sky": "stuff", "grass": "stuff", "car": "thing", "ball": "thing"}
KIND_BENCHES = {"stuff": "stuff_set", "thing": "thing_set"}


def write_iou(root: Path, variant: str, seed: int, bench: str, iou: dict[str, float | None]) -> None:
    path = root / variant / f"s{seed}" / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"variant": variant, "seed": seed, "benchmark": bench, "IoU": iou}))


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """Seeds 0-2. On the own-kind sets the oracle gains 10 + seed on each stuff class and 1 on each
    thing; on the all-concepts set it gains nothing on stuff and 2 on things."""
    root = tmp_path / "results"
    for s in range(3):
        write_iou(root, "baseline", s, "stuff_set", {"sky": 10.0, "grass": 20.0 + s})
        write_iou(root, "baseline", s, "thing_set", {"background": 50.0, "car": 5.0, "ball": 7.0})
        write_iou(root, "baseline", s, "all_set", {"sky": 3.0, "grass": 4.0, "car": 5.0, "ball": None})
        write_iou(root, "oracle", s, "stuff_set", {"sky": 20.0 + s, "grass": 30.0 + 2 * s})
        write_iou(root, "oracle", s, "thing_set", {"background": 60.0, "car": 6.0, "ball": 8.0})
        write_iou(root, "oracle", s, "all_set", {"sky": 3.0, "grass": 4.0, "car": 7.0, "ball": 9.0})
    return root


SEEDS = {"baseline": [0, 1, 2], "oracle": [0, 1, 2]}


def test_concept_gains_are_paired_by_seed_with_a_t_interval(results: Path) -> None:
    g = mechanism.concept_gains(results, SEEDS, "all_set", ["oracle"]).set_index("concept")
    assert g.loc["car", "gain/oracle"] == pytest.approx(2.0) and g.loc["car", "n/oracle"] == 3
    assert g.loc["car", "gain_lo/oracle"] == pytest.approx(2.0)  # no spread: a zero-width interval
    assert g.loc["sky", "gain/oracle"] == pytest.approx(0.0)
    assert g.loc["ball", "n/oracle"] == 0 and math.isnan(g.loc["ball", "gain/oracle"])  # baseline IoU undefined


def test_kind_gains_judge_each_concept_on_its_own_kind_set(results: Path) -> None:
    g = mechanism.kind_gains(results, SEEDS, KIND_BENCHES, KINDS, ["oracle"]).set_index("concept")
    assert set(g.index) == set(KINDS)  # the background is no concept of the thing set's kind
    assert g.loc["sky", "benchmark"] == "stuff_set" and g.loc["car", "benchmark"] == "thing_set"
    # sky: gains 10, 11, 12 -> mean 11, t-interval 11 +- t(0.975, 2) * 1 / sqrt(3)
    half = sps.t.ppf(0.975, 2) / math.sqrt(3)
    assert g.loc["sky", "gain/oracle"] == pytest.approx(11.0)
    assert (g.loc["sky", "gain_lo/oracle"], g.loc["sky", "gain_hi/oracle"]) == pytest.approx((11 - half, 11 + half))
    assert g.loc["grass", "gain/oracle"] == pytest.approx(11.0)  # 10, 11, 12 again
    assert g.loc["ball", "gain/oracle"] == pytest.approx(1.0)


def test_kind_contrast_is_the_per_seed_difference_of_kind_means(results: Path) -> None:
    iv = mechanism.kind_contrast(results, SEEDS, KIND_BENCHES, KINDS, "oracle", "stuff", "thing")
    # per seed: stuff mean (10 + s) minus thing mean 1 -> 9, 10, 11
    half = sps.t.ppf(0.975, 2) / math.sqrt(3)
    assert (iv.estimate, iv.n) == (pytest.approx(10.0), 3)
    assert (iv.lo, iv.hi) == pytest.approx((10 - half, 10 + half))
    one = mechanism.kind_contrast(results, {"baseline": [0], "oracle": [0]}, KIND_BENCHES, KINDS, "oracle",
                                  "stuff", "thing")
    assert one.n == 1 and not one.defined  # one seed: no interval


def test_kind_pixel_shares_from_the_per_image_counts(tmp_path: Path) -> None:
    names = ["sky", "car"]
    # two images; rows: true positives, labelled, predicted pixels per class
    counts = np.array([[[10, 5], [30, 10], [15, 25]],
                       [[0, 5], [10, 10], [5, 15]]])
    write_image_counts(tmp_path / "oracle" / "s0" / "all_set.counts.npz", counts, ["a", "b"])
    shares = mechanism.kind_pixel_shares(tmp_path, "oracle", [0, 1], "all_set", names, KINDS).set_index("kind")
    # summed: sky tp 10, labelled 40, predicted 20; car tp 10, labelled 20, predicted 40
    assert shares.loc["stuff", "labelled"] == pytest.approx(40 / 60)
    assert shares.loc["stuff", "predicted"] == pytest.approx(20 / 60)
    assert shares.loc["stuff", "recall"] == pytest.approx(10 / 40)
    assert shares.loc["thing", "precision"] == pytest.approx(10 / 40)
    assert shares.loc["thing", "n"] == 1  # seed 1 has no counts file
    with pytest.raises(ValueError, match="3 class names"):
        mechanism.kind_pixel_shares(tmp_path, "oracle", [0], "all_set", [*names, "ball"], KINDS)


def test_mention_rates_from_the_hidden_ground_truth(tmp_path: Path) -> None:
    path = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"key": ["a", "b", "c", "d"],
                             "gt_present": [["sky", "car"], ["sky"], ["car"], ["sky", "car"]],
                             "gt_mentioned": [["car"], [], ["car"], ["sky", "car"]]}), path)
    assert mechanism.has_ground_truth(path)
    rates = mechanism.mention_rates(path).set_index("concept")
    assert rates.loc["sky", "mention_rate"] == pytest.approx(1 / 3)
    assert rates.loc["car", "mention_rate"] == pytest.approx(1.0)


def test_inclusion_probabilities_by_hand() -> None:
    # two clusters of one concept each, scores 1 and 0: p(cluster) = softmax of the means
    e = math.e
    p1 = mechanism.inclusion_probabilities(np.array([1.0, 0.0]), np.array([0, 1]), 1)
    assert p1 == pytest.approx([e / (e + 1), 1 / (e + 1)])
    p2 = mechanism.inclusion_probabilities(np.array([1.0, 0.0]), np.array([0, 1]), 2)
    assert p2 == pytest.approx(1 - (1 - p1) ** 2)
    # one cluster of two: the cluster is certain, the concept drawn by the softmax inside it
    p = mechanism.inclusion_probabilities(np.array([1.0, 0.0]), np.array([3, 3]), 1)
    assert p == pytest.approx([e / (e + 1), 1 / (e + 1)]) and len(mechanism.inclusion_probabilities(
        np.zeros(0), np.zeros(0, int), 3)) == 0


def test_spearman_needs_three_finite_pairs_and_no_constant_side() -> None:
    rho, p = mechanism.spearman([0.1, 0.5, 0.9, math.nan], [3.0, 2.0, 1.0, 5.0])
    assert rho == pytest.approx(-1.0) and 0 <= p <= 1
    assert all(math.isnan(x) for x in mechanism.spearman([0.1, 0.2], [1.0, 2.0]))
    assert all(math.isnan(x) for x in mechanism.spearman([0.1, 0.2, 0.3], [1.0, 1.0, 1.0]))
