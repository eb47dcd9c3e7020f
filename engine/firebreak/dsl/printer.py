"""AST → canonical rule text.

Canonical means: clauses in the documented order, single spaces, outcome
clauses as ``contain… escalate… category… notify…``, minimal parentheses.
``parse_rule(print_rule(rule)) == rule`` for every rule the parser can build.
"""

from __future__ import annotations

from firebreak.dsl import ast


def print_rule(rule: ast.Rule) -> str:
    condition = print_condition(rule.condition)
    outcome = print_outcome(rule.outcome)
    if rule.name is None:
        return f"{condition} -> {outcome}"
    return f"rule {rule.name}:\n  {condition}\n  -> {outcome}"


def print_rule_file(rule_file: ast.RuleFile) -> str:
    return "\n\n".join(print_rule(rule) for rule in rule_file.rules) + "\n"


def print_condition(c: ast.Condition) -> str:
    arg = c.metric.arg.dotted if c.metric.arg else ""
    parts = [f"{c.metric.func}({arg})", c.op, print_threshold(c.threshold)]
    if c.confidence is not None:
        parts += ["with", f"{print_number(c.confidence.level)}{c.confidence.unit}", "confidence"]
    parts += ["over", print_duration(c.window)]
    if c.by:
        parts += ["by", ", ".join(p.dotted for p in c.by)]
    if c.where is not None:
        parts += ["where", print_expr(c.where)]
    if c.for_ is not None:
        parts += ["for", print_duration(c.for_)]
    if c.min_events is not None:
        what = "flagged" if c.min_events.flagged else "events"
        parts += ["min", f"{print_number(c.min_events.count)}{c.min_events.unit}", what]
    return " ".join(parts)


def print_threshold(t: ast.Threshold) -> str:
    if isinstance(t, ast.AbsoluteThreshold):
        return f"{print_number(t.value)}{t.unit}"
    if isinstance(t, ast.PopulationThreshold):
        return f"{print_number(t.factor)}{t.unit} population"
    text = f"{print_number(t.factor)}{t.unit} baseline"
    if t.span_of_baseline is not None:
        options = [print_duration(t.span_of_baseline)]
        if t.warmup is not None:
            options.append(f"warmup {print_duration(t.warmup)}")
        if t.population is not None:
            options.append("population")
        if t.prior is not None:
            options.append(f"prior {t.prior_text if t.prior_text is not None else print_number(t.prior)}")
        if t.seasonal is not None:
            options.append(f"seasonal {print_duration(t.seasonal)}")
        if t.median is not None:
            options.append("median")
        if t.trimmed is not None:
            options.append(f"trimmed {t.trimmed_text if t.trimmed_text is not None else print_number(t.trimmed)}")
        text += f"({', '.join(options)})"
    return text


def print_duration(d: ast.Duration) -> str:
    return f"{print_number(d.amount)}{d.unit}"


def print_number(n: ast.Number) -> str:
    if isinstance(n, bool):
        raise TypeError("a bool is not a number here")
    if isinstance(n, int):
        return str(n)
    text = repr(n)
    if "e" in text or "inf" in text or "nan" in text:
        text = f"{n:.12f}".rstrip("0")
        if text.endswith("."):
            text += "0"
    return text


def print_literal(value: ast.Literal) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    return print_number(value)


_PRECEDENCE = {ast.Or: 1, ast.And: 2, ast.Not: 3}


def _precedence(e: ast.Expr) -> int:
    return _PRECEDENCE.get(type(e), 4)


def print_expr(e: ast.Expr) -> str:
    if isinstance(e, ast.Or | ast.And):
        word = "or" if isinstance(e, ast.Or) else "and"
        mine = _precedence(e)
        left = _wrap(e.left, _precedence(e.left) < mine)
        right = _wrap(e.right, _precedence(e.right) <= mine)
        return f"{left} {word} {right}"
    if isinstance(e, ast.Not):
        return f"not {_wrap(e.operand, _precedence(e.operand) < 3)}"
    if isinstance(e, ast.Compare):
        return f"{e.path.dotted} {e.op} {print_literal(e.value)}"
    if isinstance(e, ast.InList):
        values = ", ".join(print_literal(v) for v in e.values)
        return f"{e.path.dotted} {'not in' if e.negated else 'in'} [{values}]"
    if isinstance(e, ast.Truthy):
        return e.path.dotted
    raise TypeError(f"not an expression: {e!r}")


def _wrap(e: ast.Expr, parens: bool) -> str:
    text = print_expr(e)
    return f"({text})" if parens else text


def print_outcome(o: ast.Outcome) -> str:
    parts = [o.severity.name]
    for contain in o.contains:
        text = f"contain {contain.action}"
        if contain.params:
            text += "(" + ", ".join(f"{p.key}={print_literal(p.value)}" for p in contain.params) + ")"
        if contain.hold:
            text += " hold"
        if contain.for_ is not None:
            text += f" for {print_duration(contain.for_)}"
        parts.append(text)
    for esc in o.escalations:
        parts.append(f"escalate {esc.severity.name} if {esc.measure} {esc.op} {print_number(esc.value)}")
    for category in (o.category, *o.extra_categories):
        if category is not None:
            parts.append(f"category {category.name}")
    for notify in o.notifies:
        parts.append(f"notify {print_literal(notify.target)}")
    return " ".join(parts)
