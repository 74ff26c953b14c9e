"""The pure search: acceptance rule, cost model, best-set choice and Pareto front (no framework needed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from caloquant.errors import InputError
from caloquant.quantize.search import (
    Criterion,
    LayerCost,
    choose,
    greedy_revert,
    paired_bound,
    pareto_front,
    predicted_degradation,
    predicted_gain,
)


def test_acceptance_uses_upper_bound_not_value() -> None:
    c = Criterion(0.05, relative=True, higher_is_better=False)
    assert c.allowed(2.0) == pytest.approx(0.1)
    assert c.passes(0.099, 2.0)
    assert not c.passes(0.101, 2.0)  # value may be tiny, the bound decides
    assert not c.passes(float("nan"), 2.0)
    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 0.01, 200)
    cand = base + rng.normal(0.05, 0.05, 200)
    err, upper = paired_bound(base, cand, 0.05)
    assert err > 0.03 and upper > 0.1 and not c.passes(upper, 1.0)


def test_criterion_directions_and_bad_values() -> None:
    hib = Criterion(0.01, relative=False, higher_is_better=True)
    assert hib.degradation(0.9, 0.88) == pytest.approx(0.02)
    assert Criterion().degradation(0.9, 0.88) == pytest.approx(-0.02)
    with pytest.raises(InputError, match="use --absolute"):
        Criterion(0.05).allowed(0.0)
    with pytest.raises(InputError):
        Criterion(-1.0)


def test_choose_maximizes_gain_under_criterion_not_most_sensitive_first() -> None:
    # Reverting the most sensitive layer (c) alone is not enough; the best feasible set keeps the fast layer a.
    layers = [LayerCost("a", 10.0, 0.2), LayerCost("b", 1.0, 0.5), LayerCost("c", 2.0, 0.6),
              LayerCost("d", 0.5, 0.1)]
    full, allowed = 1.5, 0.4
    chosen = choose(layers, full, allowed)
    best = max((frozenset(s) for k in range(5) for s in itertools.combinations("abcd", k)
                if predicted_degradation(s, layers, full) <= allowed),
               key=lambda s: predicted_gain(s, layers))
    assert chosen == best == frozenset({"a", "d"})
    assert choose(layers, full, allowed, exclude=[best]) == frozenset({"a"})
    assert choose(layers, full, allowed, margin=10.0) is None
    assert choose(layers, 0.0, allowed) == frozenset("abcd")


def test_pareto_front() -> None:
    speed = [1.0, 3.0, 2.0, 3.0, 4.0]
    deg = [0.0, 0.5, 0.1, 0.2, 0.9]
    assert pareto_front(speed, deg) == [0, 2, 3, 4]


def test_greedy_revert_walks_the_sensitivity_chain_and_skips_tried_sets() -> None:
    layers = [LayerCost("a", 1.0, 0.1), LayerCost("b", 1.0, 0.5), LayerCost("c", 1.0, 0.3)]
    assert greedy_revert(layers) == frozenset("ac")  # b removes most degradation: reverted first
    assert greedy_revert(layers, exclude=[frozenset("ac")]) == frozenset("a")  # then c
    assert greedy_revert(layers, exclude=[frozenset("ac"), frozenset("a")]) is None  # never the empty set
