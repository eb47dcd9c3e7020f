"""What each metric function of the rules language is, in one place.

Two tables, one per layer:

- `FUNCTIONS`: the functions a rule can write (`rate`, `count`, `reports`, `sum`, …) and
  what the checker needs of each — the argument it takes, whether `with C% confidence`,
  `Kx population` or `min N flagged` apply. The checker, the vocabulary check and the
  compiler read it; nothing else tests a function's name.
- `MetricKind`: what a compiled rule measures (`CompiledRule.metric`, chosen once by
  `kind_of`). It says what a bucket accumulates, reads the metric's value, its sample size
  and its impact from a window's totals, scales a baseline span to the window, names the
  significance test, and prints itself. The Python core, investigations and the traffic
  check ask it; the compiled plan carries its name and parts (engine/firebreak/dsl/plan.py)
  and implements the same kinds in Rust (native/src/engine.rs).

A window's totals (`firebreak.core.window.Summary`) are read through attributes only — `n`,
`hits`, `vn`, `total`, `lo`, `hi`, `quantiles`, `distinct` — so this module imports
nothing of the core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

SCALE = 1_000_000  # sums are exact integers of millionths (engine/firebreak/core/window.py)


class Argument(StrEnum):
    """What a function takes between its parentheses."""

    FLAG = "flag"  # rate(hallucination): a flag name, read at flags.<name>
    OPTIONAL_FLAG = "flag?"  # count() or count(pii)
    OPTIONAL_LABEL = "label?"  # reports() or reports(wrong): a report label
    FIELD = "field"  # sum(cost_usd): a field path

    @property
    def flag(self) -> bool:
        return self in (Argument.FLAG, Argument.OPTIONAL_FLAG)


@dataclass(frozen=True, slots=True)
class Function:
    """A metric function as the rules language knows it."""

    name: str
    argument: Argument
    rates: bool = False  # a fraction in [0, 1]: `Kx population` applies
    counts: bool = False  # a count of events behind it: `with C% confidence` applies
    means: bool = False  # a mean of values: `with C% confidence` applies (Student's t-test)

    @property
    def numeric(self) -> bool:
        """Whether it reads numbers at its field (not `distinct`, which reads any value)."""
        return self.argument is Argument.FIELD and self.name != "distinct"


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function("rate", Argument.FLAG, rates=True, counts=True),
        Function("count", Argument.OPTIONAL_FLAG, counts=True),
        Function("reports", Argument.OPTIONAL_LABEL, counts=True),
        *(
            Function(name, Argument.FIELD, means=name == "avg")
            for name in ("sum", "avg", "min", "max", "p50", "p90", "p95", "p99")
        ),
        Function("distinct", Argument.FIELD),
    )
}


class Accumulates(Enum):
    """What one event adds to a bucket."""

    EVENTS = "events"  # count(): every event counts
    FLAGGED = "flagged"  # rate(FLAG), count(FLAG): events, and those with the flag true
    DISTINCT = "distinct"  # distinct(FIELD): the values, in a sketch
    VALUES = "values"  # sum/avg/min/max/pNN(FIELD): numbers — count, exact sum, extremes, quantiles


class SignificanceTest(StrEnum):
    """The one-sided test behind `with C% confidence` (engine/firebreak/core/significance.py)."""

    BINOMIAL = "binomial"  # k flagged of n events against a rate
    POISSON = "poisson"  # k events against an expected count per window
    T = "t"  # a window's mean against a limit: Student's t-test of its values


@dataclass(frozen=True, slots=True)
class MetricKind:
    """What a compiled rule measures; one instance per kind, shared by all rules."""

    func: str  # the function's name, as in the rule plan and in printed rules
    accumulates: Accumulates
    read: Callable[[Any], float | None]  # the metric over a window's totals
    quantile: float | None = None  # pNN: the quantile a sketch is kept for
    rate: bool = False  # a fraction: binomial test, baselines floored at one flagged event
    additive: bool = False  # count and sum: a baseline span's value scales with its length
    # Whether the native engine implements it (native/src/plan.rs `FuncName`, `Func`); a rule of a kind it
    # does not is refused there with one line and runs on the Python core only (engine/firebreak/native/plan.py).
    native: bool = True

    def value(self, s: Any) -> float | None:
        """The metric over a window (or baseline span); None when it has no value."""
        return self.read(s)

    @property
    def numeric(self) -> bool:
        return self.accumulates is Accumulates.VALUES

    @property
    def grows_with_window(self) -> bool:
        """count, sum and distinct grow with the window: `min N events` does not gate them
        against an absolute threshold (a rate, an average or a percentile needs a sample)."""
        return self.additive or self.accumulates is Accumulates.DISTINCT

    def sample_size(self, s: Any) -> int:
        """The events behind the metric: values for numeric functions, events otherwise."""
        return s.vn if self.numeric else s.n

    def impact_events(self, s: Any) -> int:
        """`events` in records and in `escalate … if events`: flagged events for rate and
        count(FLAG), the sample otherwise."""
        return s.hits if self.accumulates is Accumulates.FLAGGED else self.sample_size(s)

    @property
    def test(self) -> SignificanceTest:
        if self.func == "avg":
            return SignificanceTest.T
        return SignificanceTest.BINOMIAL if self.rate else SignificanceTest.POISSON

    @property
    def keeps_squares(self) -> bool:
        """Whether its buckets keep their values' sum of squares when the rule has `with C%
        confidence` (the t-test's spread): avg."""
        return self.func == "avg"

    def significance_counts(self, s: Any) -> tuple[int, int]:
        """(k, n) the test weighs: flagged events of all events (rate, count(FLAG)),
        events (count())."""
        return (s.hits if self.accumulates is Accumulates.FLAGGED else s.n), s.n

    def reference(self, limit: float) -> float:
        """The test's reference: a rate (at most 1) or an expected count per window."""
        return min(limit, 1.0) if self.rate else limit

    def expected(self, limit: float, n: int) -> float:
        """What the reference expects of the window: flagged events of n, or a count."""
        return n * min(limit, 1.0) if self.rate else limit

    @property
    def slices_baseline(self) -> bool:
        """distinct: values do not add up over time (the same users return), so a baseline
        is the mean over window-length slices of its span."""
        return self.accumulates is Accumulates.DISTINCT

    def scale_baseline(self, value: float, n: int, scale: float) -> float:
        """A baseline span's metric as a window's: ``scale`` = window / span. Counts and sums
        scale with the length (a zero count reads as one event per window); a rate reads at
        least one flagged event per window's worth of the span's ``n`` events."""
        if self.additive:
            value *= scale
            if self.accumulates is not Accumulates.VALUES:
                value = max(value, 1.0)
        elif self.rate:
            value = max(value, 1 / (n * scale))
        return value

    def text(self, arg: tuple[str, ...] | None) -> str:
        """The metric as written: ``rate(pii)``, ``count()``, ``p95(latency_ms)``."""
        if arg is None:
            return f"{self.func}()"
        return f"{self.func}({arg[-1] if self.accumulates is Accumulates.FLAGGED else '.'.join(arg)})"


def _avg(s: Any) -> float | None:
    return s.total / SCALE / s.vn if s.vn else None


def _percentile(q: float) -> Callable[[Any], float | None]:
    return lambda s: s.quantiles.quantile(q)


RATE = MetricKind("rate", Accumulates.FLAGGED, lambda s: s.hits / s.n if s.n else None, rate=True)
COUNT_FLAGGED = MetricKind("count", Accumulates.FLAGGED, lambda s: float(s.hits), additive=True)
COUNT = MetricKind("count", Accumulates.EVENTS, lambda s: float(s.n), additive=True)
SUM = MetricKind("sum", Accumulates.VALUES, lambda s: s.total / SCALE, additive=True)
AVG = MetricKind("avg", Accumulates.VALUES, _avg)
MIN = MetricKind("min", Accumulates.VALUES, lambda s: s.lo)
MAX = MetricKind("max", Accumulates.VALUES, lambda s: s.hi)
DISTINCT = MetricKind("distinct", Accumulates.DISTINCT, lambda s: float(s.distinct.estimate()))
PERCENTILES = {name: q for name, q in (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99))}
_KINDS = {
    k.func: k
    for k in (
        RATE,
        SUM,
        AVG,
        MIN,
        MAX,
        DISTINCT,
        *(MetricKind(n, Accumulates.VALUES, _percentile(q), quantile=q) for n, q in PERCENTILES.items()),
    )
}


def kind_of(func: str, flagged: bool) -> MetricKind:
    """The kind of a checked function; ``flagged``: count(FLAG) rather than count()
    (reports() compiles to count() over report events)."""
    if func in ("count", "reports"):
        return COUNT_FLAGGED if flagged and func == "count" else COUNT
    return _KINDS[func]
