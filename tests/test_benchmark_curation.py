"""benchmarks/curation.py runs and its two paths agree (the smoke run; timings are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_curation_benchmark_quick_run_agrees_with_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "curation.py"), "--quick", "--skip-memory",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    none = {"order": 0, "scores": 0, "clusters": 0}
    assert res["exact"]["mismatches"] == none  # the stage's search + run_curation = the per-pair loop
    assert res["cluster"]["numpy"]["mismatches"] == none  # clusters too, against both k-means references
    assert res["cluster"]["sklearn"]["mismatches"] == none
    assert res["ivf"]["recall_at_l"] >= 0.95
    for key in ("search_s", "search_gflops", "matmul_peak_gflops"):
        assert res[key] > 0
    assert res["exact"]["matmul_bound_speedup"] > 0 and res["cluster"]["sklearn"]["matmul_bound_speedup"] > 0
