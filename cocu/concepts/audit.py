"""Inputs of the curation metrics that live outside the archives: ground truth and class names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cocu.concepts.curation import CSR
from cocu.concepts.metrics import names_to_csr
from cocu.config import ProtocolCard
from cocu.data import world
from cocu.data.converters import shipped_class_names
from cocu.data.manifest import GROUND_TRUTH_COLUMNS, read_ground_truth


def ground_truth_csr(manifest: Path | str, names: Sequence[str]) -> tuple[CSR, CSR] | None:
    """(present, mentioned) of the synthetic world in the vocabulary's ids; None for real data."""
    try:
        truth = read_ground_truth(manifest)
    except KeyError:
        return None
    present, mentioned = (truth[c].tolist() for c in GROUND_TRUTH_COLUMNS)
    return names_to_csr(present, names), names_to_csr(mentioned, names)


def benchmark_class_names(cards: Mapping[str, ProtocolCard]) -> dict[str, list[str]]:
    """Class names of every configured benchmark (without background), for the leakage audit."""
    out: dict[str, list[str]] = {}
    for name, card in cards.items():
        if card.reader == "synthetic" and name in world.BENCHMARKS:
            classes = list(world.BENCHMARKS[name].class_names)
        elif card.class_names and not card.class_names.endswith(".txt"):
            classes = shipped_class_names(card.class_names)
        else:
            continue
        out[name] = [c for c in classes if c != "background"]
    return out
