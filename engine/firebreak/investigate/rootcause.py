"""Root causes: the smallest set of dimension-value combinations that explains the anomaly.

The contributors (contributors.py) rank values one dimension at a time; a cause that is a
combination (`model=a AND region=b`) or several causes at once is then read off a list by
hand. This pass finds the *set* (Squeeze / RiskLoc / HotSpot family, docs/investigate.md
"Root causes"):

1. **Every dimension is a candidate**: the event's string fields — the standard ones, a
   team's own declared fields, and the string attributes of nested objects (``x.region``,
   ``attributes.index``) — except ids, raw text and times (`discover`). A dimension with
   more than ``MAX_VALUES`` values (user ids) keeps its ``MAX_VALUES`` values of largest
   excess; the others become one "other" value that is never a candidate, so the cost is
   bounded by events × dimensions plus the values kept.
2. The events of the scope in the two periods (the incident, the period before) are coded
   **column-wise** (each dimension's values as integers, once); the search asks for
   **tallies** — events, anomaly mass and squared mass in each period — of a combination,
   or of it split by every dimension's values, each one pass over the columns (in the Rust
   extension, ``firebreak._native.Columns``; ``_PyColumns`` is the reference).
3. A combination c's **expected** mass is what it carried before: ratio metrics (rates,
   averages, percentiles: a derived measure) its earlier mass per event × its events now,
   shrunk towards the scope's rate with ``PSEUDO_EVENTS``; volume metrics (counts, sums: a
   fundamental measure) its earlier mass × incident span / baseline span, plus one event's
   worth. ``excess`` = mass − expected; ``z`` = excess over its Poisson-like standard error.
4. **Search**: over what is still unexplained, every single value and every pair built from
   the ``BEAM`` best single values, scored ``explained × precision`` (excess / unexplained
   excess × excess / mass: a more general combination adds normal events and loses
   precision, a more specific one loses explained mass). The best is then **refined**:
   - *more specific* when another dimension splits it: a part that carries clearly less than
     the combination's lift predicts (z ≥ ``Z_SPLIT``) — `model=a` whose `region=c` part is
     normal becomes `model=a AND region=b` (and each anomalous part is refined again, up to
     ``MAX_ATTRIBUTES`` attributes) — provided what the anomalous parts leave out is not
     itself anomalous at a third of the lift (or of the excess per event, derived measures);
   - *more general* when dropping one of its attributes adds events that are anomalous as
     well and at the same lift (the rest of the parent is consistent with it): `model=a AND
     tenant=t` becomes `model=a` when the other tenants' model=a rose alike.
   The refined causes are taken, their events removed, and the search repeats while what
   remains holds a significant cause (z ≥ ``Z_MIN``, lift ≥ ``MIN_LIFT``, at least
   ``MIN_SHARE`` of the whole excess, ``MIN_EVENTS`` events carrying mass). A cause found
   after narrower ones inside it absorbs them (``_absorb``).

Pure: rows in, `Search` out; `root_causes` adapts the investigation's events to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from firebreak.core.events import NUMBER_FIELDS
from firebreak.investigate.anomaly import RATIO, Mass
from firebreak.investigate.model import Alias, RootCause, RootCauses

PSEUDO_EVENTS = 50
MAX_VALUES = 30  # values kept per dimension (by excess); the rest is "other", never a candidate
MAX_ATTRIBUTES = 3
MAX_CAUSES = 6
BEAM = 8  # single values extended to pairs
Z_MIN = 4.0  # a cause's excess is this many standard errors above expected
Z_SPLIT = 3.0  # a part this many standard errors below the combination's lift does not belong to it
Z_NORMAL = 2.5  # ... and is not itself anomalous at this many standard errors
MIN_LIFT = 1.5
MIN_SHARE = 0.05  # of the scope's whole excess
MIN_EVENTS = 3
TOO_SMALL = 10  # events' worth of mass: a part predicted to carry less cannot be told apart
PRECISION_WEIGHT = 2  # score = explained × precision²: a mixture of two causes loses to either
OTHER = -1
# Fields that are never dimensions: identifiers, times, raw text, the event's own envelope.
NOT_DIMENSIONS = frozenset(
    {
        "event_id",
        "ts",
        "type",
        "kind",
        "description",
        "ref",
        "labels",
        "prompt",
        "output",
        "comment",
        "flags",
        "scores",
        "trace_id",
        "span_id",
        "session",
        "session_id",
        "request_id",
        *NUMBER_FIELDS,
    }
)
MAX_DEPTH = 2  # x.region: nested objects are looked into this deep

Pattern = tuple[tuple[int, int], ...]  # ((dimension index, value code), ...) sorted by dimension


def discover(datas: Iterable[Mapping[str, Any]], first: Sequence[str] = (), sample: int = 2000) -> tuple[str, ...]:
    """The dimensions events carry: ``first`` (in that order), then every string-valued field
    (dotted paths into nested objects) of the first ``sample`` events, in order of appearance."""
    seen: dict[str, None] = dict.fromkeys(first)
    for i, data in enumerate(datas):
        if i >= sample:
            break
        _paths(data, (), seen)
    return tuple(seen)


def _paths(data: Mapping[str, Any], prefix: tuple[str, ...], seen: dict[str, None]) -> None:
    for key, value in data.items():
        if not prefix and key in NOT_DIMENSIONS:
            continue
        if isinstance(value, str) and key not in NOT_DIMENSIONS:
            seen.setdefault(".".join((*prefix, key)), None)
        elif isinstance(value, dict) and len(prefix) + 1 < MAX_DEPTH:
            _paths(value, (*prefix, key), seen)


@dataclass(frozen=True)
class Judged:
    """A combination's numbers: events, mass, expected mass, excess, z, lift."""

    events: int
    mass: float
    expected: float
    excess: float
    z: float
    lift: float
    carrying: int  # events carrying mass
    q: float = 0.0  # squared mass (the variance of the mass, Poisson-like)
    var_expected: float = 0.0  # the variance of the expected mass (from the period before)


@dataclass(frozen=True)
class Cause:
    """One root cause: its (dimension, value) pairs, numbers and why it was chosen."""

    pairs: tuple[tuple[str, str], ...]
    judged: Judged
    explained: float  # of the scope's whole excess
    why: str


@dataclass(frozen=True)
class Search:
    causes: tuple[Cause, ...]
    dimensions: tuple[str, ...]  # considered
    capped: tuple[str, ...]  # dimensions with values folded into "other"
    explained: float  # of the scope's whole excess, by the causes together
    total_excess: float
    notes: tuple[str, ...] = ()


@dataclass
class _Model:
    """The expected mass of a set of leaves (stats: n, m, q, n0, m0, q0, k)."""

    ratio: bool
    scale: float
    rate0: float
    unit: float  # mean mass per event before (volume: one event's worth; ratio: variance floor)

    def judge(self, s: Sequence[float]) -> Judged:
        n, m, q, n0, m0, q0, k = s
        if self.ratio:
            expected = n * (m0 + PSEUDO_EVENTS * self.rate0) / (n0 + PSEUDO_EVENTS)
            f = n / (n0 + PSEUDO_EVENTS)
        else:
            expected = self.scale * (m0 + self.unit)
            f = self.scale
        var = max(q, expected * self.unit, self.unit * self.unit) + f * f * q0
        excess = m - expected
        z = excess / math.sqrt(var) if var > 0 else 0.0
        lift = m / expected if expected > 0 else math.inf
        return Judged(int(n), m, expected, excess, z, lift, int(k), q, f * f * q0)


Tally = list[float]  # n, m, q, n0, m0, q0, k: events, mass, squared mass (incident; before); carrying


def _sub(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _empty(t: Sequence[float]) -> bool:
    return t[0] + t[3] == 0


class _Codes(dict):
    """A dimension's values → integer codes, in order of first appearance (None: ``OTHER``)."""

    def __init__(self) -> None:
        super().__init__({None: OTHER})
        self.values: list[Any] = []

    def __missing__(self, value: Any) -> int:
        self[value] = code = len(self.values)
        self.values.append(value)
        return code


class _PyColumns:
    """The reference for ``firebreak._native.Columns`` (native/src/rootcause.rs): the events as
    one column of codes per dimension, their period and mass; tallies of the remaining events
    carrying a pattern, whole or split by every dimension's values, added in event order."""

    def __init__(self, codes: list[list[int]], cards: list[int], now: list[bool], weight: list[float]) -> None:
        self.codes, self.cards, self.now, self.weight = codes, list(cards), now, weight
        self.alive = [True] * len(weight)

    def recode(self, d: int, mapping: list[int], card: int) -> None:
        to = [*mapping, OTHER]  # code -1 (none) stays -1
        self.codes[d] = list(map(to.__getitem__, self.codes[d]))
        self.cards[d] = card

    def _matching(self, pattern: Pattern) -> Iterable[int]:
        alive, codes = self.alive, self.codes
        for i in range(len(self.weight)):
            if alive[i] and all(codes[d][i] == c for d, c in pattern):
                yield i

    def _add(self, t: list[float], i: int) -> None:
        w = self.weight[i]
        if self.now[i]:
            t[0] += 1.0
            t[1] += w
            t[2] += w * w
            if w > 0.0:
                t[6] += 1.0
        else:
            t[3] += 1.0
            t[4] += w
            t[5] += w * w

    def tally(self, pattern: Pattern) -> Tally:
        t = [0.0] * 7
        for i in self._matching(pattern):
            self._add(t, i)
        return t

    def marginals(self, pattern: Pattern) -> list[list[Tally]]:
        out = [[[0.0] * 7 for _ in range(k)] for k in self.cards]
        for i in self._matching(pattern):
            for d, col in enumerate(self.codes):
                if col[i] >= 0:
                    self._add(out[d][col[i]], i)
        return out

    def remove(self, pattern: Pattern) -> None:
        for i in list(self._matching(pattern)):
            self.alive[i] = False

    def reset(self) -> None:
        self.alive = [True] * len(self.weight)


def _columns(native: bool) -> Callable[..., Any]:
    """The native tallies, or the Python reference where the extension is not built (as the
    Driver falls back to the Python core, firebreak/native): the same numbers, slower."""
    if native:
        try:
            from firebreak._native import Columns

            return Columns
        except ImportError:  # a source tree without the extension built
            pass
    return _PyColumns


class _Table:
    """The events column-wise (``columns``: ``_PyColumns`` or its native twin) with what the
    search reads: tallies of patterns over the remaining events, memoised until a removal."""

    def __init__(
        self, dims: tuple[str, ...], names: list[list[str]], columns: Any, model: _Model, capped: tuple[str, ...]
    ) -> None:
        self.dims, self.names, self.columns, self.model, self.capped = dims, names, columns, model, capped
        self._tallies: dict[Pattern, Tally] = {}
        self._marginals: dict[Pattern, list[list[Tally]]] = {}

    def tally(self, pattern: Pattern) -> Tally:
        t = self._tallies.get(pattern)
        if t is None:
            self._tallies[pattern] = t = list(self.columns.tally(list(pattern)))
        return t

    def judge(self, pattern: Pattern) -> Judged:
        return self.model.judge(self.tally(pattern))

    def marginals(self, pattern: Pattern) -> list[list[Tally]]:
        m = self._marginals.get(pattern)
        if m is None:
            self._marginals[pattern] = m = self.columns.marginals(list(pattern))
        return m

    def parts(self, pattern: Pattern, d: int) -> list[tuple[int, Tally]]:
        """``pattern``'s remaining events split by dimension ``d``'s values (those kept)."""
        return [(c, t) for c, t in enumerate(self.marginals(pattern)[d]) if not _empty(t)]

    def remove(self, pattern: Pattern) -> None:
        self.columns.remove(list(pattern))
        self._tallies.clear()
        self._marginals.clear()

    def reset(self) -> None:
        self.columns.reset()
        self._tallies.clear()
        self._marginals.clear()

    def text(self, pattern: Pattern) -> tuple[tuple[str, str], ...]:
        return tuple((self.dims[d], self.names[d][c]) for d, c in pattern)


def tabulate(
    dims: Sequence[str],
    rows_now: Iterable[tuple[Sequence[Any], float]],
    rows_before: Iterable[tuple[Sequence[Any], float]],
    ratio: bool,
    scale: float = 1.0,
    max_values: int = MAX_VALUES,
    native: bool = True,
) -> _Table:
    """``tabulate_columns`` from rows of (values per dimension — None when missing —, mass)."""
    periods = []
    for rows in (rows_now, rows_before):
        rows = list(rows)
        cols = list(zip(*(v for v, _ in rows), strict=True)) if rows else [() for _ in dims]
        periods.append((cols, [w for _, w in rows]))
    (cols_now, w_now), (cols_before, w_before) = periods
    return tabulate_columns(dims, cols_now, w_now, cols_before, w_before, ratio, scale, max_values, native)


def tabulate_columns(
    dims: Sequence[str],
    cols_now: Sequence[Sequence[Any]],
    w_now: Sequence[float],
    cols_before: Sequence[Sequence[Any]],
    w_before: Sequence[float],
    ratio: bool,
    scale: float = 1.0,
    max_values: int = MAX_VALUES,
    native: bool = True,
) -> _Table:
    """The events column-wise (per period: one column of values per dimension — None when
    missing —, and the events' masses), each dimension's values coded once; high-cardinality
    dimensions folded to their ``max_values`` values of largest excess. ``native``: the
    tallies in the Rust extension (the same numbers as the Python reference, faster)."""
    coders = [_Codes() for _ in dims]
    cols: list[list[int]] = [[] for _ in dims]
    for period in (cols_now, cols_before):
        for d, col in enumerate(period):
            cols[d].extend(map(coders[d].__getitem__, col))
    weight = [float(w) for w in (*w_now, *w_before)]
    now = [True] * len(w_now) + [False] * len(w_before)
    columns = _columns(native)(cols, [len(c.values) for c in coders], now, weight)
    n, m, _, n0, m0, _, _ = columns.tally([])
    rate0 = m0 / n0 if n0 else (m / n if n else 0.0)
    unit = m0 / n0 if n0 and m0 > 0 else (m / n if n and m > 0 else 1.0)
    # The variance floor: one event's worth (ratio metrics: a flag or an exceedance, 0 or 1).
    model = _Model(ratio, scale, rate0, 1.0 if ratio else unit)
    names: list[list[str]] = []
    capped: list[str] = []
    wide = [d for d, c in enumerate(coders) if len(c.values) > max_values]
    marg = columns.marginals([]) if wide else []
    for d, coder in enumerate(coders):
        kept = list(range(len(coder.values)))
        if d in wide:  # the values of largest excess; the rest "other", never a candidate
            kept.sort(key=lambda c: -model.judge(marg[d][c]).excess)
            kept = kept[:max_values]
            mapping = [OTHER] * len(coder.values)
            for new, old in enumerate(kept):
                mapping[old] = new
            columns.recode(d, mapping, len(kept))
            capped.append(dims[d])
        names.append([_text(coder.values[c]) for c in kept])
    return _Table(tuple(dims), names, columns, model, tuple(capped))


MAX_ROUNDS = 3 * MAX_CAUSES  # candidates tried before the search gives up


def search(table: _Table) -> Search:
    """The root causes of the table's anomaly, largest first (module docstring)."""
    table.reset()
    whole = table.judge(())
    total = whole.excess
    causes: list[Cause] = []
    if total <= 0 or whole.carrying < MIN_EVENTS:
        return Search((), table.dims, table.capped, 0.0, total, ("no excess to explain",))
    tried: set[Pattern] = set()
    for _ in range(MAX_ROUNDS):
        if len(causes) >= MAX_CAUSES:
            break
        rest = table.judge(())
        best = _best(table, rest.excess, total, tried)
        if best is None:
            break
        tried.add(best)
        for pattern, why in _refine(table, best, total, 0):
            j = table.judge(pattern)
            if _significant(j, total) and len(causes) < MAX_CAUSES:
                causes.append(Cause(table.text(pattern), j, j.excess / total, why))
                table.remove(pattern)
    causes = _absorb(table, causes, total)
    explained = sum(c.judged.excess for c in causes) / total if causes else 0.0
    causes.sort(key=lambda c: -c.judged.excess)
    return Search(tuple(causes), table.dims, table.capped, explained, total)


def _absorb(table: _Table, causes: list[Cause], total: float) -> list[Cause]:
    """A cause found after narrower ones inside it (its rest rose as well) is the cause: the
    narrower ones are dropped, and every cause is judged again, in the order found, each on
    the events the ones before it did not take."""
    sets = [frozenset(c.pairs) for c in causes]
    kept = [c for c, s in zip(causes, sets, strict=True) if not any(o < s for o in sets)]
    if len(kept) == len(causes):
        return causes
    code = [{v: i for i, v in enumerate(names)} for names in table.names]
    index = {d: i for i, d in enumerate(table.dims)}
    table.reset()
    out = []
    for c in kept:
        pattern = tuple(sorted((index[d], code[index[d]][v]) for d, v in c.pairs))
        j = table.judge(pattern)
        out.append(Cause(c.pairs, j, j.excess / total, c.why))
        table.remove(pattern)
    return out


def _significant(j: Judged, total: float) -> bool:
    return j.z >= Z_MIN and j.lift >= MIN_LIFT and j.excess >= MIN_SHARE * total and j.carrying >= MIN_EVENTS


def _candidate(j: Judged, total: float) -> bool:
    """Worth refining: significant but for its lift (a parent of a narrow cause is diluted)."""
    return j.z >= Z_MIN and j.lift > 1 and j.excess >= MIN_SHARE * total and j.carrying >= MIN_EVENTS


def _score(j: Judged, rest_excess: float) -> float:
    if j.excess <= 0 or j.mass <= 0 or rest_excess <= 0:
        return 0.0
    return min(1.0, j.excess / rest_excess) * (j.excess / j.mass) ** PRECISION_WEIGHT


def _best(table: _Table, rest_excess: float, total: float, tried: set[Pattern]) -> Pattern | None:
    """The best single value or pair (from the BEAM best single values) over what remains."""
    ndim = len(table.dims)
    judge = table.model.judge
    scored: list[tuple[float, Pattern]] = []
    for d in range(ndim):
        for c, t in table.parts((), d):
            j = judge(t)
            if _candidate(j, total):
                scored.append((_score(j, rest_excess), ((d, c),)))
    scored.sort(key=lambda t: -t[0])
    candidates = list(scored)
    for _, pattern in scored[:BEAM]:
        ((d, c),) = pattern
        for d2 in range(ndim):
            if d2 == d:
                continue
            for c2, t in table.parts(pattern, d2):
                j = judge(t)
                if _candidate(j, total):
                    candidates.append((_score(j, rest_excess), tuple(sorted(((d, c), (d2, c2))))))
    candidates = [(s, p) for s, p in candidates if p not in tried]
    if not candidates:
        return None
    # Ties (a value and a pair covering the same events): the more general first.
    candidates.sort(key=lambda t: (-round(t[0], 9), len(t[1])))
    return candidates[0][1]


def _below(model: _Model, part: Judged, whole: Judged) -> float:
    """How many standard errors ``part`` carries less than its share of ``whole``'s mass —
    its expected mass / the whole's — predicts: given the whole, a homogeneous part's mass is
    binomial, plus the noise of the part's own expected mass (from the period before)."""
    p = min(1.0, part.expected / whole.expected) if whole.expected > 0 else 0.0
    predicted = whole.mass * p
    lift = whole.mass / whole.expected if whole.expected > 0 else 0.0
    var = max(predicted * model.unit, part.q) * (1 - p) + lift * lift * part.var_expected + model.unit * model.unit
    return (predicted - part.mass) / math.sqrt(var)


def _refine(table: _Table, pattern: Pattern, total: float, depth: int) -> list[tuple[Pattern, str]]:
    """``pattern`` made more specific where another dimension splits it, or more general where
    a parent rose alike; each result with why it was chosen over its neighbours."""
    mine = table.tally(pattern)
    j = table.model.judge(mine)
    # More general: a parent whose other events rose alike (and that nothing splits).
    if depth < 4 and len(pattern) > 1:
        for i in range(len(pattern)):
            parent = pattern[:i] + pattern[i + 1 :]
            others = _sub(table.tally(parent), mine)
            if _empty(others):  # the attribute adds nothing: the same events without it
                return _refine(table, parent, total, depth + 1)
            sib = table.model.judge(others)
            # Rose alike, or too small to tell (the narrower combination adds no explanatory power).
            alike = sib.z >= Z_MIN / 2 or sib.expected * j.lift < TOO_SMALL * table.model.unit
            if (
                sib.expected > 0
                and alike
                and _below(table.model, sib, _plus(j, sib)) < Z_SPLIT / 2
                and _splits(table, parent) is None
            ):
                return _refine(table, parent, total, depth + 1)
    # More specific: the dimension that splits it most.
    split = _splits(table, pattern) if len(pattern) < MAX_ATTRIBUTES else None
    if split is not None:
        d, parts = split
        out: list[tuple[Pattern, str]] = []
        for c, pj in parts:
            if pj.z >= Z_MIN and pj.lift >= MIN_LIFT and pj.carrying >= MIN_EVENTS:
                child = tuple(sorted((*pattern, (d, c))))
                out.extend(_refine(table, child, total, depth + 1))
        if out:
            return out
    return [(pattern, _why(table, pattern, j))]


def _plus(a: Judged, b: Judged) -> Judged:
    """The two as one (for the shares of ``_below``)."""
    return Judged(
        a.events + b.events,
        a.mass + b.mass,
        a.expected + b.expected,
        a.excess + b.excess,
        0.0,
        0.0,
        a.carrying + b.carrying,
        a.q + b.q,
        a.var_expected + b.var_expected,
    )


def _splits(table: _Table, pattern: Pattern) -> tuple[int, list[tuple[int, Judged]]] | None:
    """The other dimension along which ``pattern`` has a part that does not belong to it — one
    carrying clearly less than its lift predicts (``Z_SPLIT`` standard errors) that is normal
    itself or rose by under a third as much — while another part is anomalous: the dimension
    with the most such missing mass, and its parts that belong. None when every dimension's
    parts rose alike."""
    mine = table.tally(pattern)
    j = table.model.judge(mine)
    if j.lift <= 1 or math.isinf(j.lift):
        return None
    used = {d for d, _ in pattern}
    best, best_missing, best_parts = None, 0.0, []
    for d in range(len(table.dims)):
        if d in used:
            continue
        missing, belong, rest = 0.0, [], mine
        for c, t in table.parts(pattern, d):
            pj = table.model.judge(t)
            below = _below(table.model, pj, j) >= Z_SPLIT
            if below and (pj.z < Z_NORMAL or pj.lift - 1 < (j.lift - 1) / 3):
                missing += pj.expected * j.lift - pj.mass
            elif pj.z >= Z_MIN:
                belong.append((c, pj))
                rest = _sub(rest, t)
        # What the parts that belong leave out is normal, or rose by under a third as much: a
        # slice whose parts all rose, some less (their normal levels differ), is not split.
        # Derived measures (rates) also on the additive scale: the excess per event.
        left = table.model.judge(rest)
        alike = left.lift - 1 >= (j.lift - 1) / 3
        if table.model.ratio:
            alike = alike or left.excess * j.events >= j.excess * left.events / 3
        if left.z >= Z_MIN and alike:
            continue
        if missing > best_missing and belong:
            best, best_missing, best_parts = d, missing, belong
    if best is None:
        return None
    return best, sorted(best_parts, key=lambda t: -t[1].excess)


def _why(table: _Table, pattern: Pattern, j: Judged) -> str:
    """Why this combination and not its neighbours: each parent's other events, and the
    narrower ones (no other dimension splits it)."""
    parts = []
    mine = table.tally(pattern)
    for i in range(len(pattern)):
        parent = pattern[:i] + pattern[i + 1 :]
        d = pattern[i][0]
        sib = table.model.judge(_sub(table.tally(parent), mine))
        where = " AND ".join(f"{a}={b}" for a, b in table.text(parent)) or "the rest of the scope"
        parts.append(f"more specific than {where}: its other {table.dims[d]} values show lift {_lift(sib.lift)}")
    if len(pattern) < MAX_ATTRIBUTES:
        parts.append("more general than any narrower combination: no other dimension splits it")
    return f"lift {_lift(j.lift)}; " + "; ".join(parts)


def _lift(x: float) -> str:
    return "new" if math.isinf(x) else f"{x:.2f}×"


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


# --- the investigation's events ----------------------------------------------------------------


def root_causes(
    dims: Sequence[str],
    mass: Mass,
    incident: Sequence[Any],
    baseline: Sequence[Any],
    incident_ms: int,
    baseline_ms: int,
    getter: Callable[[tuple[str, ...]], Callable],
) -> Search:
    """The root causes among ``dims`` of the anomaly of ``incident`` (events) against
    ``baseline``. ``getter``: the compiler's path getter."""
    gets = [getter(tuple(d.split("."))) for d in dims]
    weight = mass.weight

    def columns(events: Sequence[Any]) -> list[list[Any]]:
        datas = [e.data for e in events]
        out = []
        for d, get in zip(dims, gets, strict=True):
            raw = [x.get(d) for x in datas] if "." not in d else [get(x) for x in datas]
            out.append([None if isinstance(v, dict | list) else v for v in raw])
        return out

    scale = incident_ms / baseline_ms if baseline_ms > 0 else 1.0
    w_now = [weight(e.data) for e in incident]
    w_before = [weight(e.data) for e in baseline]
    table = tabulate_columns(dims, columns(incident), w_now, columns(baseline), w_before, mass.mode == RATIO, scale)
    return search(table)


def _carried(pairs: Sequence[tuple[str, str]], events: Sequence[Any], mass: Mass, getter: Callable) -> float:
    """The anomaly mass of ``events`` carrying every one of ``pairs``."""
    get = [(getter(tuple(d.split("."))), v) for d, v in pairs]
    return sum(mass.weight(e.data) for e in events if all(_text(g(e.data)) == v for g, v in get))


def explain(
    first: Sequence[str],
    mass: Mass,
    group: Mapping[str, Any],
    incident: Sequence[Any],
    baseline: Sequence[Any],
    incident_ms: int,
    baseline_ms: int,
    getter: Callable[[tuple[str, ...]], Callable],
) -> RootCauses:
    """The report's root causes: searched over the rule's population (``incident``,
    ``baseline``: its events in the two periods) on every dimension the events carry
    (``first``: the standard ones and the rule's `by` fields, first); for a grouped rule, the
    causes that can touch the incident's group (none names another value of a group field)."""
    dims = discover((e.data for e in (*incident[:1000], *baseline[:1000])), first)
    found = root_causes(dims, mass, incident, baseline, incident_ms, baseline_ms, getter)
    own = {k: _text(v) for k, v in group.items()}
    kept = [c for c in found.causes if not any(d in own and own[d] != v for d, v in c.pairs)]
    if own:  # what stands out in the group first: the causes by the excess they carry inside it
        get = [(getter(tuple(k.split("."))), v) for k, v in own.items()]
        inside = [e for e in incident if all(_text(g(e.data)) == v for g, v in get)]
        carried = {c.pairs: _carried(c.pairs, inside, mass, getter) for c in kept}
        kept.sort(key=lambda c: -carried[c.pairs])
    notes = list(found.notes)
    if len(kept) < len(found.causes):
        notes.append(f"{len(found.causes) - len(kept)} root cause(s) in other groups of the rule left out")
    causes = tuple(
        RootCause(
            values=tuple(Alias(d, v) for d, v in c.pairs),
            events=c.judged.events,
            flagged=round(c.judged.mass, 6),
            expected=round(c.judged.expected, 6),
            excess=round(c.judged.excess, 6),
            lift=None if math.isinf(c.judged.lift) else round(c.judged.lift, 2),
            explained=round(c.explained, 3),
            why=c.why,
        )
        for c in kept
    )
    return RootCauses(
        causes=causes,
        explained=round(sum(c.explained for c in kept), 3),
        measure="derived" if mass.mode == RATIO else "fundamental",
        scope="the rule's population" + (" (causes touching the incident's group)" if group else ""),
        dimensions=found.dimensions,
        capped=found.capped,
        notes=tuple(notes),
    )
