"""The comparison statistics against hand-computed cases (cocu/reports/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cocu.reports.stats import (
    fieller_interval, miou_of_counts, paired_bootstrap, paired_differences, t_interval,
)


def test_t_interval_matches_a_hand_computed_case():
    # mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.302653 -> half width 2.484138
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.estimate == pytest.approx(2.0)
    assert iv.lo == pytest.approx(2.0 - 2.484138, abs=1e-5)
    assert iv.hi == pytest.approx(2.0 + 2.484138, abs=1e-5)
    assert iv.n == 3 and iv.defined and not iv.excludes_zero


def test_t_interval_excludes_zero_when_all_differences_agree():
    # mean 5, sd 1, n 4: t(0.975, 3) = 3.182446, half width 1.591223
    iv = t_interval([4.0, 5.0, 6.0, 5.0 + 0.0])
    sd = np.std([4, 5, 6, 5], ddof=1)
    assert iv.hi - iv.estimate == pytest.approx(3.182446 * sd / 2, abs=1e-5)
    assert iv.excludes_zero


def test_one_seed_gives_an_undefined_interval_not_a_number():
    iv = t_interval([3.5])
    assert iv.estimate == 3.5 and math.isnan(iv.lo) and math.isnan(iv.hi)
    assert not iv.defined and not iv.excludes_zero
    assert math.isnan(t_interval([]).estimate)


def test_paired_differences_use_common_seeds_in_order():
    seeds, d = paired_differences({0: 5.0, 1: 7.0, 3: 1.0}, {1: 2.0, 0: 1.0, 2: 9.0})
    assert seeds == [0, 1] and d.tolist() == [4.0, 5.0]


def test_fieller_matches_a_hand_computed_case():
    num, den = [1.0, 2.0, 3.0], [10.0, 11.0, 12.0]
    # means 2 and 11, var of means 1/3 each, covariance 1/3; t = 4.302653
    t = 4.302653
    r = 2 / 11
    v = 1 / 3
    g = t * t * v / 121
    disc = v - 2 * r * v + r * r * v - g * (v - v * v / v)
    centre = r - g * v / v
    half = t / 11 * math.sqrt(disc)
    iv = fieller_interval(num, den)
    assert iv.estimate == pytest.approx(r)
    assert iv.lo == pytest.approx((centre - half) / (1 - g), rel=1e-5)
    assert iv.hi == pytest.approx((centre + half) / (1 - g), rel=1e-5)


def test_fieller_is_unbounded_when_the_denominator_is_not_clearly_positive():
    iv = fieller_interval([1.0, 2.0, 1.5], [0.5, -0.4, 0.3])
    assert iv.lo == -math.inf and iv.hi == math.inf
    assert math.isnan(fieller_interval([1.0], [2.0]).lo)  # one pair: undefined


def test_fieller_covers_the_ratio_of_noise_free_pairs_exactly():
    iv = fieller_interval([2.0, 2.0, 2.0], [4.0, 4.0, 4.0])
    assert iv.estimate == 0.5 and iv.lo == pytest.approx(0.5) and iv.hi == pytest.approx(0.5)


def _counts(rng: np.random.Generator, seeds: int, images: int, classes: int) -> np.ndarray:
    labelled = rng.integers(0, 50, size=(seeds, images, classes))
    predicted = rng.integers(0, 50, size=(seeds, images, classes))
    tp = np.minimum(labelled, predicted) * rng.uniform(0, 1, size=labelled.shape)
    return np.stack([tp.round(), labelled, predicted], axis=2).astype(np.float64)  # [S, N, 3, K]


def test_miou_of_counts_is_the_mean_class_iou():
    c = np.array([[[2.0, 0.0], [4.0, 0.0], [2.0, 0.0]]])  # one image: class 0 tp 2, gt 4, pred 2; class 1 empty
    assert miou_of_counts(c.sum(0)) == pytest.approx(50.0)  # IoU 2 / (4 + 2 - 2); empty class left out


def test_paired_bootstrap_of_a_variant_against_itself_is_zero():
    c = _counts(np.random.default_rng(0), 3, 20, 4)
    iv = paired_bootstrap(c, c, draws=200)
    assert iv.estimate == 0.0 and iv.lo == 0.0 and iv.hi == 0.0


def test_paired_bootstrap_agrees_with_a_loop_over_draws():
    rng = np.random.default_rng(1)
    a, b = _counts(rng, 2, 15, 3), _counts(rng, 2, 15, 3)
    iv = paired_bootstrap(a, b, draws=300, seed=7)
    picks = np.random.default_rng(7).integers(0, 15, size=(300, 15))
    diffs = []
    for p in picks:  # the same resample for both variants and both seeds
        da = [miou_of_counts(a[s, p].sum(0)) for s in range(2)]
        db = [miou_of_counts(b[s, p].sum(0)) for s in range(2)]
        diffs.append(np.mean(np.subtract(da, db)))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    assert iv.lo == pytest.approx(lo) and iv.hi == pytest.approx(hi)
    assert iv.estimate == pytest.approx(np.mean([miou_of_counts(a[s].sum(0)) - miou_of_counts(b[s].sum(0))
                                                  for s in range(2)]))


def test_paired_bootstrap_is_narrow_for_a_uniform_shift_and_wide_for_noise():
    rng = np.random.default_rng(2)
    base = _counts(rng, 1, 40, 3)
    better = base.copy()
    better[:, :, 0] = np.minimum(base[:, :, 0] + 3, np.minimum(base[:, :, 1], base[:, :, 2]))  # more tp everywhere
    iv = paired_bootstrap(better, base, draws=500)
    assert iv.lo > 0  # a consistent gain on every image is resolved by the paired bootstrap


def test_paired_bootstrap_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="S, N, 3, K"):
        paired_bootstrap(np.zeros((1, 3, 3, 2)), np.zeros((1, 4, 3, 2)))


# --------------------------------------------------------------------------------------------
# robustness: comparisons per setting and the reproduction tolerance


def test_reproduction_tolerance_is_the_prediction_interval_of_a_new_mean():
    from cocu.reports.robustness import Reproduction, reproduction, tolerance

    # values 10, 12, 14: s = 2, n = 3, t(0.975, 2) = 4.302653 -> 4.302653 * 2 * sqrt(2/3)
    assert tolerance([10.0, 12.0, 14.0]) == pytest.approx(4.302653 * 2 * math.sqrt(2 / 3), rel=1e-6)
    assert math.isnan(tolerance([10.0]))
    committed = {("baseline", s): {"b": v} for s, v in enumerate([10.0, 12.0, 14.0])}
    near = {("baseline", s): {"b": v} for s, v in enumerate([13.0, 15.0, 17.0])}  # mean 15: +3 < 7.03
    far = {("baseline", s): {"b": v} for s, v in enumerate([20.0, 22.0, 24.0])}  # mean 22: +10
    assert all(r.within for r in reproduction(committed, near, ["baseline"], ["b"]))
    assert not any(r.within for r in reproduction(committed, far, ["baseline"], ["b"]))
    assert not Reproduction("v", "b", 1.0, math.nan, 1.0).within  # no tolerance: not reproduced


def test_paired_comparison_of_a_setting_uses_the_mean_over_benchmarks():
    from cocu.reports.robustness import MEAN, paired, run_scores

    runs = {("baseline", 0): {"a": 10.0, "b": 20.0}, ("oracle", 0): {"a": 14.0, "b": 30.0},
            ("baseline", 1): {"a": 12.0, "b": 22.0}, ("oracle", 1): {"a": 15.0, "b": 31.0}}
    assert run_scores(runs, "oracle", MEAN) == {0: 22.0, 1: 23.0}
    iv = paired(runs, "oracle")
    assert iv.estimate == pytest.approx((7.0 + 6.0) / 2) and iv.n == 2


def test_pooled_comparison_concatenates_the_paired_seeds_of_every_setting():
    from cocu.reports.robustness import pooled

    one = {("baseline", 0): {"a": 10.0}, ("oracle", 0): {"a": 12.0}, ("baseline", 1): {"a": 10.0},
           ("oracle", 1): {"a": 13.0}}
    two = {("baseline", 0): {"a": 20.0}, ("oracle", 0): {"a": 24.0}, ("oracle", 5): {"a": 99.0}}  # seed 5 unpaired
    iv = pooled([one, two], "oracle")
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # differences 2, 3, 4: mean 3, sd 1, t(0.975, 2)
    assert (iv.estimate, iv.n) == (pytest.approx(3.0), 3)
    assert (iv.lo, iv.hi) == pytest.approx((3 - half, 3 + half))


def test_robustness_table_leaves_out_experiments_made_with_other_params() -> None:
    import importlib.util

    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("studies", repo / "scripts" / "studies.py")
    studies = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(studies)
    current = {"world": {"seed": 0, "mention_rate": 0.4}, "model": {"projector": {"activation": "none"}}, "x": 1}
    same = {"world": {"seed": 1, "mention_rate": 0.4}, "model": {"projector": {"activation": "none"}}, "x": 1}
    assert studies.stale_keys(current, same, ["world.seed=1"]) == []
    older = {"world": {"seed": 1, "mention_rate": 0.4}, "model": {"projector": {"activation": "relu"}}, "x": 1}
    assert studies.stale_keys(current, older, ["world.seed=1"]) == ["model.projector.activation"]
    assert studies.stale_keys(current, same, []) == ["world.seed"]  # the override is what makes it differ
    assert studies.stale_keys(current, {**same, "y": 2}, ["world.seed=1"]) == ["y"]
    # a report knob changes how results are shown, never a result
    assert studies.stale_keys({**current, "report": {"k": 1}}, same, ["world.seed=1"]) == []
