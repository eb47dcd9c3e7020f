"""Semantic checks: a separate pass over a parsed AST that returns diagnostics.

Each check looks at one concept and says what is wrong, where, and — where it
helps — what was probably meant. Checks never stop early: every problem in
every rule is collected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from firebreak.dsl import ast, limits
from firebreak.dsl.diagnostics import Diagnostic, did_you_mean
from firebreak.dsl.metrics import FUNCTIONS, Argument
from firebreak.dsl.parser import split_quantity
from firebreak.dsl.printer import print_number, print_rule
from firebreak.durations import UNITS
from firebreak.records import SEVERITY_NAMES, Severity

SEVERITIES = SEVERITY_NAMES  # sev1 (most severe) .. sev4
CATEGORIES = ("hallucination", "data_leakage", "quality_degradation", "adversarial", "cost", "other")
IMPACT_MEASURES = ("users", "events")
DURATION_UNITS = {unit: ms for unit, ms in UNITS.items() if unit != "ms"}  # a rule's durations: s, m, h, d
ORDERING_OPS = {"<", "<=", ">", ">="}


def duration_ms(d: ast.Duration) -> int:
    """Milliseconds of a duration the checker has accepted."""
    return int(d.amount) * DURATION_UNITS[d.unit]


def rule_name(rule: ast.Rule) -> str:
    """The rule's own name, or a stable derived one for an unnamed rule:
    ``FUNC_ARG_HASH8`` where HASH8 is the first 8 hex digits of the SHA-256 of
    the rule's canonical text — so it survives reformatting and moving the
    rule around its file, and changes when the rule's meaning changes."""
    if rule.name is not None:
        return rule.name
    digest = hashlib.sha256(print_rule(rule).encode()).hexdigest()[:8]
    metric = rule.condition.metric
    arg = "_".join(metric.arg.parts) if metric.arg else "all"
    return f"{metric.func}_{arg}_{digest}"


def check_rule_files(files: Iterable[ast.RuleFile]) -> list[Diagnostic]:
    """All problems in all files, including names used twice across files."""
    problems: list[Diagnostic] = []
    seen: dict[str, tuple[str, ast.Span]] = {}
    for rule_file in files:
        for rule in rule_file.rules:
            problems.extend(check_rule(rule, rule_file.path))
            name = rule_name(rule)
            where = rule.name_span if rule.name is not None else rule.span
            if name in seen:
                first_path, first = seen[name]
                problems.append(
                    Diagnostic.at(
                        rule_file.path,
                        where,
                        f"duplicate rule name `{name}` (first defined at {first_path}:{first.line}:{first.column})",
                    )
                )
            else:
                seen[name] = (rule_file.path, where)
    return problems


def check_rule(rule: ast.Rule, path: str) -> list[Diagnostic]:
    return [Diagnostic.at(path, span, message) for span, message in _rule_problems(rule)]


Problem = tuple[ast.Span, str]


def _rule_problems(rule: ast.Rule) -> Iterator[Problem]:
    c = rule.condition
    yield from _metric_problems(c.metric)
    yield from _duration_problems(c.window, "window")
    yield from _threshold_problems(c)
    yield from _significance_problems(c)
    for path in c.by:
        if path.parts[0] in {"prompt", "output", "comment"}:
            yield path.span, f"`by {path.dotted}` would put raw text in incident records; group by an id instead"
    if len({p.dotted for p in c.by}) != len(c.by):
        yield c.by[-1].span, "a field appears twice in `by`"
    if c.where is not None:
        yield from limits.where_problems(c.where)
        yield from _expr_problems(c.where)
    if c.for_ is not None:
        yield from _duration_problems(c.for_, "`for`")
    if c.min_events is not None:
        m = c.min_events
        what = "flagged" if m.flagged else "events"
        if out_of_range := limits.number_problem(m.count, str(m.count)):
            yield m.span, out_of_range
        elif m.unit or not isinstance(m.count, int) or m.count < 1:
            yield m.span, f"`min {m.count}{m.unit} {what}` needs a whole number of events ≥ 1"
        elif m.flagged and (not _argument(c.metric).flag or c.metric.arg is None):
            yield m.span, "`min N flagged` counts flagged events: use it with rate(FLAG) or count(FLAG)"
    yield from _outcome_problems(rule.outcome)
    yield from _number_problems(rule)
    yield from _steps_problems(c)


def _number_problems(rule: ast.Rule) -> Iterator[Problem]:
    """Numbers no engine can hold (limits.MAX_NUMBER): thresholds, multiples, literals, parameters."""
    c, o = rule.condition, rule.outcome
    t = c.threshold
    numbers = [(t.value if isinstance(t, ast.AbsoluteThreshold) else t.factor, t.span)]
    if c.confidence is not None:
        numbers.append((c.confidence.level, c.confidence.span))
    numbers += [(e.value, e.span) for e in o.escalations]
    numbers += [(p.value, p.span) for k in o.contains for p in k.params]
    stack = [c.where] if c.where is not None else []
    while stack:  # no recursion: limits.where_problems bounds the depth, but reports it apart
        e = stack.pop()
        if isinstance(e, ast.And | ast.Or):
            stack += [e.left, e.right]
        elif isinstance(e, ast.Not):
            stack.append(e.operand)
        elif isinstance(e, ast.Compare):
            numbers.append((e.value, e.span))
        elif isinstance(e, ast.InList):
            numbers += [(v, e.span) for v in e.values]
    for value, span in numbers:
        if problem := limits.number_problem(value, str(value) if not isinstance(value, str) else ""):
            yield span, problem


def _steps_problems(c: ast.Condition) -> Iterator[Problem]:
    """Buckets per group (limits.MAX_STEPS), once the window and baseline span are valid."""
    spans = [c.window]
    if isinstance(c.threshold, ast.BaselineThreshold) and c.threshold.span_of_baseline is not None:
        spans.append(c.threshold.span_of_baseline)
    what = ("window", "baseline span")
    if any(list(_duration_problems(d, w)) for d, w in zip(spans, what, strict=False)):
        return
    window = duration_ms(c.window)
    step = limits.pick_step(window)
    baseline = 0
    if isinstance(c.threshold, ast.BaselineThreshold):
        baseline = duration_ms(spans[1]) if len(spans) > 1 else limits.BASELINE_SPAN_FACTOR * window
    if problem := limits.steps_problem(window, baseline, step):
        yield c.window.span, problem


def _argument(metric: ast.Metric) -> Argument:
    """What the metric's function takes (a field for an unknown function: reported apart)."""
    function = FUNCTIONS.get(metric.func)
    return function.argument if function is not None else Argument.FIELD


def _rates(metric: ast.Metric) -> bool:
    function = FUNCTIONS.get(metric.func)
    return function is not None and function.rates


def _metric_problems(metric: ast.Metric) -> Iterator[Problem]:
    function = FUNCTIONS.get(metric.func)
    if function is None:
        hint = did_you_mean(metric.func, FUNCTIONS)
        known = ", ".join(FUNCTIONS)
        name_span = ast.Span(
            metric.span.line, metric.span.column, metric.span.line, metric.span.column + len(metric.func)
        )
        yield name_span, f"unknown function `{metric.func}`{hint or f'; expected one of {known}'}"
        return
    arg, kind = metric.arg, function.argument
    if kind is Argument.OPTIONAL_LABEL:
        if arg is not None and len(arg.parts) != 1:
            yield arg.span, f"`reports` takes a report label, e.g. `reports(wrong)`, not `{arg.dotted}`"
        return
    if kind.flag:
        if arg is None:
            if kind is Argument.FLAG:
                yield metric.span, f"`{metric.func}()` needs a flag, e.g. `{metric.func}(hallucination)`"
        elif len(arg.parts) != 1:
            suggestion = arg.parts[-1] if arg.parts[0] == "flags" else arg.dotted
            yield (
                arg.span,
                (f"`{metric.func}` takes a flag name (it reads flags.<name>); write `{metric.func}({suggestion})`"),
            )
    elif arg is None:
        yield metric.span, f"`{metric.func}()` needs a field, e.g. `{metric.func}(latency_ms)`"


def _duration_problems(d: ast.Duration, what: str) -> Iterator[Problem]:
    text = f"{d.amount}{d.unit}"
    if d.unit not in DURATION_UNITS:
        yield d.span, f"`{text}` is not a duration; use 10s, 10m, 10h, 10d"
    elif too_long := limits.duration_problem(d, what, DURATION_UNITS[d.unit]):
        yield d.span, too_long
    elif not isinstance(d.amount, int):
        yield d.span, f"`{text}` is not a whole number of {d.unit}; write e.g. 90s instead of 1.5m"
    elif d.amount <= 0:
        yield d.span, f"the {what} must be longer than zero, not `{text}`"


def _significance_problems(c: ast.Condition) -> Iterator[Problem]:
    """`with C% confidence` and `Kx population`: what they can be applied to."""
    t, conf, func = c.threshold, c.confidence, c.metric.func
    function = FUNCTIONS.get(func)
    if isinstance(t, ast.PopulationThreshold):
        if t.unit != "x":
            yield t.span, f"`{t.factor}{t.unit} population` needs a multiple like `5x`"
        elif t.factor <= 0:
            yield t.span, f"the multiple must be greater than 0, not `{t.factor}{t.unit}`"
        if function is not None and not function.rates:
            example = f"rate(FLAG) > {t.factor}{t.unit} population"
            yield t.span, f"`population` compares rates: write `{example}`, not `{func}`"
        elif not c.by:
            yield (
                t.span,
                ("`population` compares each group with the rest of the rule's events; add `by`, e.g. `by user`"),
            )
    if conf is None:
        return
    text = f"{conf.level}{conf.unit}"
    if conf.unit != "%":
        yield conf.span, f"a confidence is a percentage: write `with {conf.level}% confidence`"
    elif not 50 < conf.level < 100:
        yield conf.span, f"a confidence is more than 50% and less than 100%, not `{text}`; e.g. `99.9%`"
    if function is not None and not function.counts and not function.means:
        yield (
            conf.span,
            "`with … confidence` tests counted events or a mean: use it with rate(FLAG), count(FLAG), count() "
            f"or avg(FIELD), not `{func}`",
        )


def _threshold_problems(c: ast.Condition) -> Iterator[Problem]:
    t = c.threshold
    if isinstance(t, ast.PopulationThreshold):
        return
    if isinstance(t, ast.AbsoluteThreshold):
        text = f"{t.value}{t.unit}"
        if t.unit == "%":
            fraction = print_number(round(t.value / 100, 12)) if isinstance(t.value, int | float) else "0.01"
            yield t.span, f"`{text}` is not a number; write a fraction: `{fraction}`"
        elif t.unit == "x":
            yield t.span, f"`{text}` is a multiple: write `{text} baseline`"
        elif t.unit:
            yield t.span, f"`{text}` is not a number; a threshold is a number or `Kx baseline`"
        elif _rates(c.metric) and not 0 <= t.value <= 1:
            yield t.span, f"a rate is a fraction between 0 and 1; `{text}` can never be crossed"
        return
    text = f"{t.factor}{t.unit}"
    if t.unit != "x":
        yield t.span, f"`{text} baseline` needs a multiple like `3x`"
    elif t.factor <= 0:
        yield t.span, f"the multiple must be greater than 0, not `{text}`"
    if t.span_of_baseline is not None:
        before = len(list(_duration_problems(t.span_of_baseline, "baseline span")))
        yield from _duration_problems(t.span_of_baseline, "baseline span")
        window_ok = not list(_duration_problems(c.window, "window"))
        if not before and window_ok and duration_ms(t.span_of_baseline) < duration_ms(c.window):
            yield t.span_of_baseline.span, "the baseline span must be at least as long as the window"
        yield from _fallback_problems(c, t, span_ok=not before and window_ok)


def _fallback_problems(c: ast.Condition, t: ast.BaselineThreshold, span_ok: bool) -> Iterator[Problem]:
    """`warmup D`: a duration from one window up to the span; `population`: rates with `by`;
    `prior P`: a plain number above zero (a rate's at most 1).
    docs/detection.md#cold-start-the-reference-fallback-chain."""
    if t.warmup is not None:
        bad = list(_duration_problems(t.warmup, "warm-up"))
        yield from bad
        if not bad and span_ok:
            warmup, window, span = duration_ms(t.warmup), duration_ms(c.window), duration_ms(t.span_of_baseline)
            if warmup < window:
                yield t.warmup.span, "the warm-up must be at least as long as the window"
            elif warmup >= span:
                yield t.warmup.span, "the warm-up must be shorter than the baseline span (a full span needs none)"
    if t.population is not None:
        if not _rates(c.metric):
            yield (
                t.population,
                "`population` is a rate's reference: a cold group of another metric falls back to `prior`",
            )
        elif not c.by:
            yield (
                t.population,
                "`population` compares a group with the rest of the rule's groups; add `by`, e.g. `by model`",
            )
    yield from _slices_problems(c, t, span_ok)
    if t.prior is not None:
        text = t.prior_text or str(t.prior)
        where = t.prior_span or t.span
        _, unit = split_quantity(text)
        if unit:
            yield where, f"the prior `{text}` is not a number; write the reference itself, e.g. `prior 0.02`"
        elif t.prior <= 0:
            yield where, f"the prior must be greater than 0, not `{text}`"
        elif _rates(c.metric) and t.prior > 1:
            yield where, f"a rate's prior is a fraction between 0 and 1, not `{text}`"


def _slices_problems(c: ast.Condition, t: ast.BaselineThreshold, span_ok: bool) -> Iterator[Problem]:
    """`median`, `trimmed P%` (0 < P <= 50, not both) over at least three windows of the span;
    `seasonal P`: a duration from one window up to the span (and up to a warm-up).
    docs/detection.md#robust-and-seasonal-references."""
    if t.trimmed is not None:
        text = t.trimmed_text or str(t.trimmed)
        where = t.trimmed_span or t.span
        _, unit = split_quantity(text)
        if t.median is not None:
            yield where, "`median` is `trimmed 50%`: give one of them"
        elif unit != "%":
            yield where, f"`trimmed` takes the percentage cut from each end, e.g. `trimmed 10%`, not `{text}`"
        elif not 0 < t.trimmed <= 50:
            yield where, f"`trimmed` cuts more than 0% and at most 50% from each end, not `{text}`"
    if t.seasonal is not None:
        bad = list(_duration_problems(t.seasonal, "season"))
        yield from bad
        if not bad and span_ok:
            season, window, span = duration_ms(t.seasonal), duration_ms(c.window), duration_ms(t.span_of_baseline)
            if season < window:
                yield (
                    t.seasonal.span,
                    "the season must be at least as long as the window (the same hour yesterday: `seasonal 1d`)",
                )
            elif season > span:
                yield (
                    t.seasonal.span,
                    "the baseline span must hold at least one season, e.g. `baseline(7d, seasonal 1d)`",
                )
            elif t.warmup is not None and not list(_duration_problems(t.warmup, "warm-up")):
                if duration_ms(t.warmup) < season:
                    yield t.warmup.span, "a warm-up shorter than the season holds no season to compare with"
    if (t.median is not None or t.trimmed is not None) and t.seasonal is None and span_ok:
        if duration_ms(t.span_of_baseline) < 3 * duration_ms(c.window):
            where = t.median if t.median is not None else t.trimmed_span or t.span
            yield where, "a median or trimmed mean needs at least three windows in the baseline span"


def _expr_problems(e: ast.Expr) -> Iterator[Problem]:
    if isinstance(e, ast.And | ast.Or):
        yield from _expr_problems(e.left)
        yield from _expr_problems(e.right)
    elif isinstance(e, ast.Not):
        yield from _expr_problems(e.operand)
    elif isinstance(e, ast.Compare):
        if e.op in ORDERING_OPS and (isinstance(e.value, bool) or not isinstance(e.value, int | float)):
            yield e.span, f"`{e.op}` compares numbers; use `==` or `!=` for strings and booleans"
    elif isinstance(e, ast.InList) and not e.values:
        yield e.span, "an empty list: `in []` is never true"


def _outcome_problems(o: ast.Outcome) -> Iterator[Problem]:
    base = o.severity
    if base.name not in SEVERITIES:
        yield base.span, f"unknown severity `{base.name}`; expected sev1..sev4"
    for esc in o.escalations:
        if esc.severity.name not in SEVERITIES:
            yield esc.severity.span, f"unknown severity `{esc.severity.name}`; expected sev1..sev4"
        elif base.name in SEVERITIES and not Severity.parse(esc.severity.name).more_severe(Severity.parse(base.name)):
            yield (
                esc.severity.span,
                (f"`escalate {esc.severity.name}` is not above the rule's {base.name}; sev1 is the most severe"),
            )
        if esc.measure not in IMPACT_MEASURES:
            hint = did_you_mean(esc.measure, IMPACT_MEASURES)
            yield esc.span, f"unknown impact measure `{esc.measure}`{hint or '; expected users or events'}"
        if esc.value < 0:
            yield esc.span, "an impact threshold cannot be negative"
    for extra in o.extra_categories:
        yield extra.span, "`category` is given twice"
    if o.category is not None and o.category.name not in CATEGORIES:
        hint = did_you_mean(o.category.name, CATEGORIES)
        yield o.category.span, f"unknown category `{o.category.name}`{hint or '; expected ' + ', '.join(CATEGORIES)}"
    actions = [c.action for c in o.contains]
    for contain in o.contains:
        if actions.count(contain.action) > 1:
            yield contain.span, f"`contain {contain.action}` appears twice"
            break
    for contain in o.contains:
        keys = [p.key for p in contain.params]
        for param in contain.params:
            if keys.count(param.key) > 1:
                yield param.span, f"parameter `{param.key}` is given twice"
                break
        if contain.for_ is not None:
            yield from _duration_problems(contain.for_, "containment duration")
    for notify in o.notifies:
        if not notify.target.strip():
            yield notify.span, "`notify` needs a channel name"
