"""Exact one-sided tests for `with C% confidence`: binomial for rates, Poisson for counts.

A rule ``rate(pii) > 0.0004 with 99.9% confidence`` holds when the window's k flagged
events out of n would be this many or more with probability at most 0.1% if the true
rate were 0.0004 — the p-value ``P(X ≥ k | X ~ Binomial(n, 0.0004)) ≤ 1 − 0.999``.
``count(...) > λ with C% confidence`` does the same with ``X ~ Poisson(λ)``. For ``<``
and ``<=`` the lower tail ``P(X ≤ k)`` is used.

The arithmetic is closed form plus one short deterministic loop: the probability of
the starting term from ``lgamma`` (log-gamma), then the neighbouring terms by their
ratio, summed away from the mean (where they shrink geometrically) until they no
longer change the sum, at most ``MAX_TERMS``. No library beyond ``math``: the later
native core can repeat it term for term.
"""

from __future__ import annotations

import math

from firebreak.dsl.metrics import SignificanceTest

MAX_TERMS = 100_000  # a tail that is still growing after this many terms is not significant anyway
_EPS = 1e-17


def binomial_upper(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p)."""
    if k <= 0 or p >= 1:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if k >= n * p:  # at or above the mean: the terms from k up shrink
        return _binomial_sum(k, n, p, +1)
    return max(0.0, 1.0 - _binomial_sum(k - 1, n, p, -1))


def binomial_lower(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p)."""
    if k >= n or p <= 0:
        return 1.0
    if k < 0 or p >= 1:
        return 0.0
    if k <= n * p:
        return _binomial_sum(k, n, p, -1)
    return max(0.0, 1.0 - _binomial_sum(k + 1, n, p, +1))


def poisson_upper(k: int, mean: float) -> float:
    """P(X ≥ k) for X ~ Poisson(mean)."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if k >= mean:
        return _poisson_sum(k, mean, +1)
    return max(0.0, 1.0 - _poisson_sum(k - 1, mean, -1))


def poisson_lower(k: int, mean: float) -> float:
    """P(X ≤ k) for X ~ Poisson(mean)."""
    if k < 0:
        return 0.0
    if mean <= 0:
        return 1.0
    if k <= mean:
        return _poisson_sum(k, mean, -1)
    return max(0.0, 1.0 - _poisson_sum(k + 1, mean, +1))


def _binomial_sum(start: int, n: int, p: float, step: int) -> float:
    """Σ P(X = i) from i = start, walking away from the mean (step +1 up, −1 down)."""
    log_term = math.lgamma(n + 1) - math.lgamma(start + 1) - math.lgamma(n - start + 1)
    log_term += start * math.log(p) + (n - start) * math.log1p(-p)
    term, total, i, odds = math.exp(log_term), 0.0, start, p / (1 - p)
    for _ in range(MAX_TERMS):
        total += term
        if step > 0:
            if i >= n:
                break
            term *= (n - i) / (i + 1) * odds
            i += 1
        else:
            if i <= 0:
                break
            term *= i / ((n - i + 1) * odds)
            i -= 1
        if term <= total * _EPS:
            break
    return min(1.0, total)


def _poisson_sum(start: int, mean: float, step: int) -> float:
    term = math.exp(start * math.log(mean) - mean - math.lgamma(start + 1))
    total, i = 0.0, start
    for _ in range(MAX_TERMS):
        total += term
        if step > 0:
            term *= mean / (i + 1)
            i += 1
        else:
            if i <= 0:
                break
            term *= i / mean
            i -= 1
        if term <= total * _EPS:
            break
    return min(1.0, total)


def p_value(test: SignificanceTest, op: str, k: int, n: int, reference: float) -> float:
    """The one-sided p-value of a window: ``k`` flagged events out of ``n`` against a
    reference rate (binomial), or ``k`` events against a count per window (Poisson)."""
    upper = op in {">", ">="}
    if test is SignificanceTest.BINOMIAL:
        return binomial_upper(k, n, reference) if upper else binomial_lower(k, n, reference)
    return poisson_upper(k, reference) if upper else poisson_lower(k, reference)
