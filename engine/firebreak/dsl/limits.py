"""What a rule may ask of the engines, in one place (docs/dsl.md#limits).

A rule past one of these limits is refused by `firebreak check` (and by every command that
loads rules) with a diagnostic at the offending text, instead of passing the check and then
failing at run time: a containment that expires after the year 9999, a baseline whose
buckets do not fit in memory, a number the record writer or the native engine cannot hold,
an expression too deep to walk.

    MAX_WINDOW_MS      `over D`: at most 7 days
    MAX_BASELINE_MS    `baseline(D)`: at most 42 days (6 × the longest window: the default span)
    MAX_FOR_MS         `for D`: at most 7 days
    MAX_CONTAIN_MS     `contain ACTION for D`: at most 30 days
    MAX_STEPS          buckets one group may hold (window + baseline span, in steps): 100,000
    MAX_NUMBER         any number in a rule: at most 2**53 either side of zero
    MAX_WHERE_TERMS    tests in one `where`: 64
    MAX_WHERE_DEPTH    `and` / `or` / `not` nested in one `where`: 64
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from firebreak.dsl import ast

DAY_MS = 86_400_000
MAX_WINDOW_MS = 7 * DAY_MS
MAX_BASELINE_MS = 42 * DAY_MS
MAX_FOR_MS = 7 * DAY_MS
MAX_CONTAIN_MS = 30 * DAY_MS
MAX_STEPS = 100_000
# Every number is held as a float by the Python core and as an f64 or i64 by the native
# engine; up to 2**53 both hold an integer exactly, so both engines read the same value.
MAX_NUMBER = 2**53
# Longer digit strings are not even converted (Python refuses to print ints past 4300 digits):
# the parser reads them as infinite, and the check below refuses them.
MAX_DIGITS = 64
MAX_WHERE_TERMS = 64
MAX_WHERE_DEPTH = 64
# The parse tree's own depth (a `where` is most of it): a rule nested deeper is refused
# before its tree is walked (the walk is recursive).
MAX_TREE_DEPTH = MAX_WHERE_DEPTH + 16

# The checker's name for a duration → (its limit, the limit as written, the duration in a message)
DURATION_LIMITS = {
    "window": (MAX_WINDOW_MS, "7d", "the window"),
    "baseline span": (MAX_BASELINE_MS, "42d", "the baseline span"),
    "warm-up": (MAX_BASELINE_MS, "42d", "the warm-up"),
    "season": (MAX_BASELINE_MS, "42d", "the season"),
    "`for`": (MAX_FOR_MS, "7d", "the `for` duration"),
    "containment duration": (MAX_CONTAIN_MS, "30d", "the containment duration"),
}

Problem = tuple[ast.Span, str]

# The evaluation step, which sets how many buckets a window and a baseline span take.
BASELINE_SPAN_FACTOR = 6  # default baseline span = 6 × the window
STEPS_MS = (1_000, 5_000, 10_000, 15_000, 30_000, 60_000, 300_000, 900_000, 1_800_000, 3_600_000)
MIN_STEPS_PER_WINDOW = 10


def pick_step(window_ms: int) -> int:
    """The evaluation step: the largest of STEPS_MS that cuts the window into
    at least MIN_STEPS_PER_WINDOW whole parts; 1s when none does."""
    fitting = [s for s in STEPS_MS if window_ms % s == 0 and window_ms // s >= MIN_STEPS_PER_WINDOW]
    return max(fitting) if fitting else 1_000


def number_problem(value: object, text: str) -> str | None:
    """Why ``value`` (written ``text``) is out of range, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value) or abs(value) > MAX_NUMBER:
        shown = f"`{_short(text)}`" if math.isfinite(value) else f"a number of more than {MAX_DIGITS} digits"
        return f"{shown} is out of range: numbers in a rule are at most 2**53 (9007199254740992) either side of 0"
    return None


def duration_problem(d: ast.Duration, what: str, unit_ms: int) -> str | None:
    """Why a duration in a known unit is too long for ``what`` (one of DURATION_LIMITS), or None."""
    limit, shown, named = DURATION_LIMITS[what]
    if isinstance(d.amount, int | float) and math.isfinite(d.amount) and d.amount * unit_ms <= limit:
        return None
    written = f"`{_short(str(d.amount))}{d.unit}`" if math.isfinite(d.amount) else f"of more than {MAX_DIGITS} digits"
    return f"{named} {written} is longer than the limit, {shown}"


def steps_problem(window_ms: int, baseline_ms: int, step_ms: int) -> str | None:
    """Why one group of a rule would hold too many buckets, or None."""
    steps = (window_ms + max(window_ms, baseline_ms)) // step_ms
    if steps <= MAX_STEPS:
        return None
    return (
        f"the window and baseline span hold {steps} steps of {step_ms // 1000}s per group (the limit is {MAX_STEPS}): "
        "write the window in round units (10m, 1h, 1d) or shorten the baseline"
    )


def where_problems(e: ast.Expr) -> Iterator[Problem]:
    """Too many tests, or nested too deeply (walked without recursion)."""
    terms, depth, stack = 0, 0, [(e, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, ast.And | ast.Or):
            depth = max(depth, level)
            stack += [(node.left, level + 1), (node.right, level + 1)]
        elif isinstance(node, ast.Not):
            depth = max(depth, level)
            stack.append((node.operand, level + 1))
        else:
            terms += 1
    if terms > MAX_WHERE_TERMS:
        yield (
            e.span,
            (
                f"`where` has {terms} tests (the limit is {MAX_WHERE_TERMS}): "
                "test one field against many values with `in [...]`"
            ),
        )
    elif depth > MAX_WHERE_DEPTH:
        yield (
            e.span,
            f"`where` is nested {depth} deep (the limit is {MAX_WHERE_DEPTH}): remove `not not` and parentheses",
        )


def _short(text: str) -> str:
    return text if len(text) <= 24 else text[:10] + "…" + text[-6:]
