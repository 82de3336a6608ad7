"""Training-time concept sampling matches its definition (docs/method.md §6)."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from cocu.concepts.sampling import (
    cluster_probabilities,
    sample_cluster,
    sample_topk,
    sample_uniform,
)

CONCEPTS = ["dog", "grass", "ball", "tree", "sky"]
SCORES = [2.0, 1.5, 1.0, 0.2, -0.5]
CLUSTERS = [0, 1, 0, 1, 2]


def test_topk() -> None:
    assert sample_topk(CONCEPTS, SCORES, 3) == ["dog", "grass", "ball"]
    assert sample_topk(["b", "a"], [0.1, 0.9], 3) == ["a", "b"]  # fewer than k: all, by score
    assert sample_topk([], [], 3) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_cluster_sampling_refuses_non_finite_scores(bad: float) -> None:
    with pytest.raises(ValueError, match="score of concept 'ball' is"):
        sample_cluster(CONCEPTS, [2.0, 1.5, bad, 0.2, -0.5], CLUSTERS, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="one non-negative cluster id"):
        sample_cluster(CONCEPTS, SCORES, [0, 1, -1, 1, 2], 3, np.random.default_rng(0))


def test_cluster_probabilities() -> None:
    ids, p = cluster_probabilities(np.array(SCORES), np.array(CLUSTERS))
    means = np.array([1.5, 0.85, -0.5])  # cluster 0: (2 + 1) / 2, 1: (1.5 + 0.2) / 2, 2: -0.5
    np.testing.assert_array_equal(ids, [0, 1, 2])
    np.testing.assert_allclose(p, np.exp(means) / np.exp(means).sum())


def test_cluster_sampling_distribution() -> None:
    # each draw: P(c) = softmax(cluster means)[k(c)] * softmax(scores in k(c))[c]
    s, k = np.array(SCORES), np.array(CLUSTERS)
    _, p_cluster = cluster_probabilities(s, k)
    p = np.array([p_cluster[k[i]] * np.exp(s[i]) / np.exp(s[k == k[i]]).sum() for i in range(len(s))])
    assert p.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    draws = [c for _ in range(3000) for c in sample_cluster(CONCEPTS, SCORES, CLUSTERS, 3, rng)]
    counts = Counter(draws)
    observed = np.array([counts[c] for c in CONCEPTS])
    assert observed.sum() == 9000
    assert stats.chisquare(observed, p * observed.sum()).pvalue > 0.001
    # a wrong model (uniform over concepts) is rejected by the same test
    assert stats.chisquare(observed, np.full(5, observed.sum() / 5)).pvalue < 1e-6


def test_cluster_sampling_with_replacement_and_empty() -> None:
    rng = np.random.default_rng(1)
    assert sample_cluster(["only"], [0.3], [0], 3, rng) == ["only"] * 3
    assert sample_cluster([], [], [], 3, rng) == []


def test_uniform_sampling_distribution() -> None:
    # without replacement: every 3-subset of 5 concepts has probability 1 / C(5, 3) = 1 / 10
    rng = np.random.default_rng(0)
    draws = [sample_uniform(CONCEPTS, 3, rng) for _ in range(5000)]
    assert all(len(set(d)) == 3 for d in draws)
    counts = Counter(frozenset(d) for d in draws)
    subsets = [frozenset(c) for c in itertools.combinations(CONCEPTS, 3)]
    observed = np.array([counts[s] for s in subsets])
    assert observed.sum() == 5000
    assert stats.chisquare(observed, np.full(10, 500.0)).pvalue > 0.001
    firsts = Counter(d[0] for d in draws)  # the first draw is uniform too (order is random)
    assert stats.chisquare([firsts[c] for c in CONCEPTS], np.full(5, 1000.0)).pvalue > 0.001


def test_uniform_fewer_than_k() -> None:
    rng = np.random.default_rng(0)
    assert sorted(sample_uniform(["a", "b"], 3, rng)) == ["a", "b"]
    assert sample_uniform([], 3, rng) == []
