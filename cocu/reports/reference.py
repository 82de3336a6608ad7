"""The paper's reference numbers (configs/paper_numbers.yaml): strict loading and look-up.

Every number records its source; a number nobody could read is `null` and shows as "unknown".
A look-up prefers the requested data setting and falls back to entries whose setting is
`unknown` (third-party numbers), which the report flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Optional

from cocu.config import ConfigError, from_dict, read_yaml

UNKNOWN_SETTING = "unknown"


@dataclass(frozen=True)
class MethodInfo:
    name: str  # short name shown in tables
    title: str  # paper title and venue
    reference: str  # arXiv id, code repository


@dataclass(frozen=True)
class EntryGroup:
    """Numbers of one method, data setting and metric that come from one source (one table row)."""

    method: str  # key of `methods`
    data: str  # key of `settings`
    metric: Literal["miou", "top1"]  # x100
    verified: bool  # true: read in the named primary source
    values: dict[str, Optional[float]]  # benchmark -> number, null = unknown
    source: Optional[str] = None  # required when any value is known
    note: Optional[str] = None


@dataclass(frozen=True)
class ReferenceFile:
    methods: dict[str, MethodInfo]
    settings: dict[str, str]  # data-setting key -> description
    benchmarks: dict[str, str]  # the paper's benchmarks: key -> description
    entries: tuple[EntryGroup, ...]


@dataclass(frozen=True)
class PaperNumber:
    method: str
    data: str
    benchmark: str
    metric: str
    value: float
    verified: bool
    source: str
    note: Optional[str]

    @property
    def setting_unknown(self) -> bool:
        return self.data == UNKNOWN_SETTING


@dataclass(frozen=True)
class PaperReference:
    """The validated reference file, as known numbers plus the vocabulary they use."""

    methods: dict[str, MethodInfo]
    settings: dict[str, str]
    benchmarks: dict[str, str]
    numbers: tuple[PaperNumber, ...]  # known numbers only (unknown ones are simply absent)

    def is_paper_benchmark(self, benchmark: str) -> bool:
        return benchmark in self.benchmarks

    def lookup(self, method: str, setting: str, benchmark: str, metric: str = "miou") -> Optional[PaperNumber]:
        """The number for (method, setting, benchmark), else one whose setting is unknown, else None."""
        hits = [n for n in self.numbers if (n.method, n.benchmark, n.metric) == (method, benchmark, metric)]
        exact = [n for n in hits if n.data == setting]
        fallback = [n for n in hits if n.data == UNKNOWN_SETTING]
        return (exact or fallback or [None])[0]


def load_reference(path: Path | str) -> PaperReference:
    """Load and validate the reference file; any unknown key or inconsistent entry is a ConfigError."""
    raw = read_yaml(path)
    ref: ReferenceFile = from_dict(ReferenceFile, raw, str(path))
    numbers: list[PaperNumber] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    for i, group in enumerate(ref.entries):
        where = f"{path}: entries[{i}]"
        if group.method not in ref.methods:
            raise ConfigError(f"{where}: method {group.method!r} is not a key of `methods` "
                              f"({sorted(ref.methods)})")
        if group.data not in ref.settings:
            raise ConfigError(f"{where}: data {group.data!r} is not a key of `settings` ({sorted(ref.settings)})")
        bad = sorted(set(group.values) - set(ref.benchmarks))
        if bad:
            raise ConfigError(f"{where}: benchmark(s) {bad} are not keys of `benchmarks`")
        known = {b: v for b, v in group.values.items() if v is not None}
        if known and not (group.source and group.source.strip()):
            raise ConfigError(f"{where}: {sorted(known)} have numbers but no `source`")
        for bench, value in known.items():
            key = (group.method, group.data, bench, group.metric)
            if key in seen:
                raise ConfigError(f"{where}: {key} already has a number in entries[{seen[key]}]")
            seen[key] = i
            numbers.append(PaperNumber(group.method, group.data, bench, group.metric, float(value),
                                       group.verified, str(group.source).strip(), group.note))
    return PaperReference(ref.methods, ref.settings, ref.benchmarks, tuple(numbers))


def check_mapping(ref: PaperReference, paper_methods: Mapping[str, str], setting: str,
                  source: str = "report") -> None:
    """The report's variant -> method mapping and data setting must name entries of the reference file."""
    bad = sorted(m for m in paper_methods.values() if m not in ref.methods)
    if bad:
        raise ConfigError(f"{source}: paper_methods names {bad}, not methods of the reference file "
                          f"({sorted(ref.methods)})")
    if setting not in ref.settings:
        raise ConfigError(f"{source}: paper_setting {setting!r} is not a setting of the reference file "
                          f"({sorted(ref.settings)})")


def all_numbers_table(ref: PaperReference) -> list[dict[str, object]]:
    """Every known number as rows (method, data, benchmark, metric, value, verified, source), sorted."""
    rows = [{"method": n.method, "data": n.data, "benchmark": n.benchmark, "metric": n.metric, "value": n.value,
             "verified": n.verified, "source": n.source} for n in ref.numbers]
    order = {b: i for i, b in enumerate(ref.benchmarks)}
    return sorted(rows, key=lambda r: (str(r["method"]), str(r["data"]), str(r["metric"]),
                                       order.get(str(r["benchmark"]), len(order))))
