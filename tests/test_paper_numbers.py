"""The reference numbers of configs/paper_numbers.yaml: the secondary SynSeg entries parse with their
source, stay unverified, and reach the report's main table and its list of sources."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cocu.reports import tables
from cocu.config import ReportConfig
from cocu.reports.page import reference_section
from cocu.reports.reference import load_reference

from .conftest import REPO

PAPER = REPO / "configs" / "paper_numbers.yaml"
MAIN = "cc3m+cc12m+yfcc14m"
REDCAPS = "cc3m+cc12m+redcaps12m"

# (method, data setting) -> benchmark -> number, as SynSeg's Table 2 lists them
SYNSEG = {
    ("cocu", MAIN): {"voc": 51.4, "coco_object": 22.7, "coco_stuff": 15.2, "cityscapes": 22.1},
    ("groupvit", REDCAPS): {"coco_stuff": 15.3, "cityscapes": 11.1},
}


@pytest.fixture(scope="module")
def ref():
    return load_reference(PAPER)


@pytest.mark.parametrize("key", list(SYNSEG), ids=lambda k: f"{k[0]}-{k[1]}")
def test_synseg_entries_parse_with_their_source(ref, key) -> None:
    method, setting = key
    for bench, value in SYNSEG[key].items():
        n = ref.lookup(method, setting, bench)
        assert n is not None and n.data == setting, (method, setting, bench)
        assert n.value == value and not n.verified and n.metric == "miou"
        assert "SynSeg" in n.source and "Table 2" in n.source and "secondary" in n.source


def test_cocu_main_setting_is_no_longer_all_unknown(ref) -> None:
    known = {n.benchmark for n in ref.numbers if (n.method, n.data) == ("cocu", MAIN)}
    assert known == set(SYNSEG[("cocu", MAIN)])
    assert ref.lookup("cocu", MAIN, "context") is None  # SynSeg gives no Context number: unknown, not guessed


def test_primary_groupvit_numbers_win_over_the_secondary_ones(ref) -> None:
    voc = ref.lookup("groupvit", REDCAPS, "voc")  # SynSeg lists 50.4; GroupViT's README 50.8
    assert voc is not None and voc.value == 50.8 and voc.verified and "NVlabs/GroupViT" in voc.source
    entry = next(n for n in ref.numbers if (n.method, n.data, n.benchmark) == ("groupvit", REDCAPS, "coco_stuff"))
    assert "50.4" in (entry.note or "")  # the differing numbers are recorded, not dropped silently


def test_report_renders_the_secondary_numbers(ref) -> None:
    benches = ["voc", "context", "coco_object", "coco_stuff", "cityscapes"]
    results = pd.DataFrame([{"variant": v, "seed": 0, "benchmark": b, "mIoU": 20.0}
                            for v in ("baseline", "cocu") for b in benches])
    from tests.test_reports import KNOBS, NO_FILES

    cfg = ReportConfig(results_dir="r", curves_dir="c", paper_numbers=str(PAPER), out_dir="o", **NO_FILES, **KNOBS)
    main = tables.main_table(tables.summarize(results, benches), benches, ["baseline", "cocu"], ref, cfg)
    data = main.data.set_index(["variant", "benchmark"])
    for bench, value in SYNSEG[("cocu", MAIN)].items():
        row = data.loc[("cocu", bench)]
        assert row.paper_status == "known" and row.paper_miou == value and not bool(row.paper_verified)
        assert row.delta == pytest.approx(20.0 - value)
    assert data.loc[("cocu", "context")].paper_status == "unknown"
    assert math.isnan(data.loc[("cocu", "context")].paper_miou)
    paper_row = main.display[(main.display["variant"] == "") & main.display["row"].str.startswith("paper: CoCu")]
    assert paper_row.iloc[0]["voc"] == "51.4*" and paper_row.iloc[0]["context"] == "unknown"
    assert any("SynSeg" in n for n in main.notes)
    listing = reference_section(ref, str(PAPER))
    assert "SynSeg (Zhang et al.), Table 2" in listing and "15.3" in listing and "11.1" in listing
