"""Paired comparison tables of the report (cocu/reports/comparisons.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cocu.reports import comparisons as C
from cocu.reports.stats import t_interval

BENCHES = ["b1", "b2"]


def _results(table: dict[tuple[str, int], tuple[float, float]]) -> pd.DataFrame:
    rows = [{"variant": v, "seed": s, "benchmark": b, "mIoU": x}
            for (v, s), xs in table.items() for b, x in zip(BENCHES, xs)]
    return pd.DataFrame(rows)


RESULTS = _results({
    ("baseline", 0): (10.0, 20.0), ("baseline", 1): (12.0, 18.0), ("baseline", 2): (11.0, 22.0),
    ("oracle", 0): (20.0, 30.0), ("oracle", 1): (21.0, 29.0), ("oracle", 2): (19.0, 34.0),
    ("cocu", 0): (15.0, 25.0), ("cocu", 1): (15.0, 22.0), ("cocu", 3): (99.0, 99.0),  # seed 3: no baseline
})


def test_seed_scores_and_the_mean_over_benchmarks():
    assert C.seed_scores(RESULTS, "baseline", "b1", BENCHES) == {0: 10.0, 1: 12.0, 2: 11.0}
    assert C.seed_scores(RESULTS, "oracle", C.MEAN, BENCHES) == {0: 25.0, 1: 25.0, 2: 26.5}


def test_paired_differences_pair_by_seed_with_a_t_interval():
    comps = C.compare(RESULTS, "oracle", BENCHES, counts=None)
    mean = next(c for c in comps if c.benchmark == C.MEAN)
    # per seed: (25 - 15), (25 - 15), (26.5 - 16.5) -> all 10: an interval of zero width
    assert mean.seeds == (0, 1, 2) and mean.diff.estimate == pytest.approx(10.0)
    assert mean.diff.lo == pytest.approx(10.0) and mean.diff.excludes_zero
    b1 = next(c for c in comps if c.benchmark == "b1")
    assert b1.diff == t_interval([10.0, 9.0, 8.0])
    cocu = C.compare(RESULTS, "cocu", BENCHES, counts=None)
    assert next(c for c in cocu if c.benchmark == "b1").seeds == (0, 1)  # seed 3 has no baseline: left out


def test_one_seed_gives_interval_undefined_in_the_table():
    one = _results({("baseline", 0): (10.0, 20.0), ("cocu", 0): (12.0, 21.0)})
    table_t, table_b, comps = C.paired_tables(one, BENCHES, ["baseline", "cocu"], None, 2)
    assert table_t.display.iloc[0]["mean over benchmarks"] == "+1.50 [interval undefined: 1 seed]"
    assert not comps[0].diff.defined


def _fake_counts(variant: str, seed: int, benchmark: str) -> np.ndarray:
    rng = np.random.default_rng([len(variant), seed, len(benchmark)])
    labelled = rng.integers(10, 50, size=(12, 3))
    better = {"baseline": 0.3, "cocu": 0.5, "oracle": 0.8}[variant]
    tp = np.floor(labelled * better)
    return np.stack([tp, labelled, labelled], axis=1).astype(np.int64)  # [N, 3, K]


def test_bootstrap_column_uses_the_counts_and_covers_the_estimate():
    comps = C.compare(RESULTS, "oracle", BENCHES, counts=_fake_counts, draws=300)
    for c in comps:
        assert c.images.defined and c.images.lo <= c.images.hi
    mean = next(c for c in comps if c.benchmark == C.MEAN)
    assert mean.images.lo > 0  # the fake oracle is better on every image
    missing = C.compare(RESULTS, "oracle", BENCHES, counts=lambda v, s, b: None)
    assert all(not c.images.defined for c in missing)


def test_gap_closure_with_fieller_and_one_seed():
    table = C.gap_closure_table(RESULTS, BENCHES, ["baseline", "cocu", "oracle"], 2)
    mean_row = table.data[(table.data["benchmark"] == C.MEAN) & (table.data["variant"] == "cocu")].iloc[0]
    # seeds 0 and 1: cocu - baseline = 5, 3.5; oracle - baseline = 10, 10 -> 0.425
    assert mean_row["closure"] == pytest.approx(0.425) and mean_row["status"] == "ok"
    assert mean_row["lo"] < 0.425 < mean_row["hi"]
    one = _results({("baseline", 0): (10.0, 20.0), ("cocu", 0): (12.0, 21.0), ("oracle", 0): (20.0, 30.0)})
    t1 = C.gap_closure_table(one, BENCHES, ["baseline", "cocu", "oracle"], 2)
    assert set(t1.display["closure: cocu"]) == {"n/a (1 seed)"}


def test_gap_closure_is_undefined_when_the_oracle_does_not_beat_the_baseline():
    flat = _results({("baseline", 0): (10.0, 20.0), ("baseline", 1): (12.0, 18.0),
                     ("oracle", 0): (11.0, 19.0), ("oracle", 1): (11.0, 19.0),
                     ("cocu", 0): (15.0, 25.0), ("cocu", 1): (15.0, 22.0)})
    t = C.gap_closure_table(flat, BENCHES, ["baseline", "cocu", "oracle"], 2)
    assert t.data["status"].str.startswith("undefined").all()


def test_fmt_interval_forms():
    from cocu.reports.stats import Interval

    assert C.fmt_interval(Interval(1.234, 0.5, 2.0, 3), 2) == "+1.23 [+0.50, +2.00] (3 seeds)"
    assert C.fmt_interval(Interval(0.4, -math.inf, math.inf, 3), 2, signed=False) == "0.40 [−∞, +∞] (3 seeds)"
    assert C.fmt_interval(Interval(math.nan, math.nan, math.nan, 0), 2) == "—"
