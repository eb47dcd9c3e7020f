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


def two_sample_p_value(op: str, k: int, exposure: float, k_ref: int, exposure_ref: float, factor: float) -> float:
    """The one-sided p-value of a window's count against a *measured* reference's count: ``k``
    events over ``exposure`` (a length) against ``k_ref`` over ``exposure_ref``, for the
    null hypothesis that the window's rate is ``factor`` times the reference's.

    The conditional test for two Poisson rates (Przyborowski and Wilenski, 1940): given the
    ``k + k_ref`` events of both, the window's share is ``Binomial(k + k_ref, π)`` with
    ``π = factor·exposure / (factor·exposure + exposure_ref)`` under the null, so the p-value
    is that binomial's upper tail at ``k`` for ``>``/``>=`` and its lower tail for ``<``/``<=``.
    A reference measured over a short history holds few events and weighs less: the test
    carries its uncertainty instead of treating it as a known rate.
    """
    if exposure <= 0 or exposure_ref <= 0 or factor <= 0:
        return 1.0
    share = factor * exposure / (factor * exposure + exposure_ref)
    total = k + k_ref
    if op in {">", ">="}:
        return binomial_upper(k, total, share)
    return binomial_lower(k, total, share)


def two_sample_rate_p_value(op: str, k: int, n: int, k_ref: int, n_ref: int, factor: float) -> float:
    """The one-sided p-value of a window's rate (``k`` flagged of ``n`` events) against a
    *measured* reference's (``k_ref`` of ``n_ref``), for the null hypothesis that the
    window's rate is ``factor`` times the reference's.

    Conditional on the ``k + k_ref`` flagged events of both, the window's count follows
    Fisher's noncentral hypergeometric distribution, ``P(X = x) ∝ C(n, x)·C(n_ref, K − x)·ψˣ``,
    whose odds ratio ψ is the null's at the reference's rate p₀ = k_ref / n_ref:
    ``ψ = F·p₀·(1 − p₀) / (p₀·(1 − F·p₀))`` (ψ = F where rates are small). With ψ = 1 this is
    Fisher's exact test. The p-value is its upper tail at ``k`` for ``>``/``>=`` and its lower
    tail for ``<``/``<=``. Unlike the Poisson conditional test it knows a window of eight
    events cannot hold nine flagged ones, so a small group's strong rate is not understated;
    and like it, a reference of few events weighs less than a long one.
    """
    if n <= 0 or n_ref <= 0 or factor <= 0:
        return 1.0
    k_ref = min(k_ref, n_ref)
    rate = k_ref / n_ref
    at_limit = factor * rate
    total = k + k_ref
    lo, hi = max(0, total - n_ref), min(n, total)
    if rate <= 0 or rate >= 1 or at_limit >= 1 or hi - lo > MAX_TERMS:
        # No odds to scale (a reference with none or all flagged, a limit at every event
        # flagged), or more flagged events than an exact sum is for (a reference that large
        # is as good as known): the limit is tested as a known rate, as without a reference.
        limit = min(at_limit, 1.0)
        return binomial_upper(k, n, limit) if op in {">", ">="} else binomial_lower(k, n, limit)
    log_odds = math.log(at_limit) - math.log1p(-at_limit) - math.log(rate) + math.log1p(-rate)
    logs = [
        _log_choose(n, lo) + _log_choose(n_ref, total - lo) + lo * log_odds,
    ]
    for x in range(lo, hi):  # each term from the one before, by their ratio
        step = math.log((n - x) * (total - x)) - math.log((x + 1) * (n_ref - total + x + 1))
        logs.append(logs[-1] + step + log_odds)
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    whole = math.fsum(weights)
    if op in {">", ">="}:
        tail = math.fsum(weights[k - lo :]) if k >= lo else whole
    else:
        tail = math.fsum(weights[: k - lo + 1]) if k >= lo else 0.0
    return min(1.0, tail / whole)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


# ---- a window's mean: `avg(FIELD) … with C% confidence` ------------------------------------------

# The largest sum of squares a bucket keeps (an i128's largest, as the native engine keeps it):
# a sum that reaches it saturates there, and a window whose squares saturated has no known
# spread, so its test is never significant (p = 1).
SQ_MAX = 2**127 - 1
_NORMAL_DF = 100_000  # past this many degrees of freedom Student's t is the normal distribution
_CF_TERMS = 10_000
_CF_EPS = 1e-15


def mean_p_value(op: str, vn: int, total: int, sq: int, limit: float, scale: int) -> float:
    """The one-sided p-value of a window's mean against ``limit``: Student's t-test of the
    window's ``vn`` values — their sum ``total`` and sum of squares ``sq``, as integers of
    ``1/scale`` (the value x·scale, rounded, is what a bucket adds) — for the null hypothesis
    that the values' mean is the limit. The limit is taken as known: a baseline measured over a
    span several times the window holds many more values than the window (docs/dsl.md).

    ``t = (mean − limit) / (s / √vn)`` with ``s²`` the window's sample variance, computed from
    the exact integers (``vn·sq − total²`` has no rounding in it); ``P(T ≥ t)`` for ``>``/``>=``
    and ``P(T ≤ t)`` for ``<``/``<=``, T with ``vn − 1`` degrees of freedom. Fewer than two
    values, or squares past `SQ_MAX`, have no spread to test against: p = 1. All values equal
    (no spread at all): p = 0 when the mean is past the limit, else 1."""
    spread = mean_spread(vn, total, sq)
    if spread is None:
        return 1.0
    mean = total / scale / vn
    beyond = mean - limit if op in {">", ">="} else limit - mean
    if spread == 0:
        return 0.0 if beyond > 0 else 1.0
    se = math.sqrt(spread / (vn * (vn - 1)) / vn) / scale
    return student_t_upper(beyond / se, vn - 1)


def mean_spread(vn: int, total: int, sq: int | None) -> int | None:
    """``vn · Σ(x − x̄)²`` of values with sum ``total`` and sum of squares ``sq``, exactly (no
    rounding: integers); None where the spread is not known — fewer than two values, or squares
    not kept or saturated at `SQ_MAX`."""
    if vn < 2 or sq is None or sq >= SQ_MAX:
        return None
    return max(0, vn * sq - total * total)


def student_t_upper(t: float, df: int) -> float:
    """P(T ≥ t) for T ~ Student's t with ``df`` degrees of freedom: half the regularized
    incomplete beta function I_x(df/2, 1/2) at x = df / (df + t²) on the far side of zero."""
    if t != t:  # NaN
        return 1.0
    if df >= _NORMAL_DF:
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def _beta_regularized(a: float, b: float, x: float) -> float:
    """I_x(a, b), by its continued fraction (Lentz's method) on the side where it converges."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return min(1.0, front * _beta_fraction(a, b, x) / a)
    return max(0.0, 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b)


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, _CF_TERMS + 1):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < _CF_EPS:
            break
    return h
