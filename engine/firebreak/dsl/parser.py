"""Rule text → AST, with syntax problems as `Diagnostic` values.

A rules file is split into rules first: a line that starts at column 1 starts a
rule, an indented line continues the one above, and blank or comment lines
belong to nobody. Each rule is then parsed on its own, so one broken rule
yields its diagnostic and parsing goes on with the next — every broken rule in
a file is reported, not just the first.

Nothing here raises for any input text: `parse_rules` returns the rules it
could build and a diagnostic for each one it could not.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from lark import Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from firebreak.dsl import ast
from firebreak.dsl.diagnostics import Diagnostic
from firebreak.dsl.grammar import lark_parser
from firebreak.dsl.limits import MAX_DIGITS, MAX_TREE_DEPTH

_QUANTITY = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?)(.*)", re.S)

CLAUSE_ORDER = "over DURATION [by FIELD, ...] [where EXPR] [for DURATION] [min N events]"

# How terminals read in "expected ..." messages.
_TERMINAL_NAMES = {
    "ARROW": "`->`",
    "QUANTITY": "a number",
    "NAME": "a name",
    "STRING": 'a "string"',
    "CMP": "a comparison (> >= < <=)",
    "EQ": "`==`",
    "NE": "`!=`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "COMMA": "`,`",
    "DOT": "`.`",
    "COLON": "`:`",
    "EQUAL": "`=`",
    "$END": "end of rule",
}


class RuleSyntaxError(ValueError):
    """Raised by `parse_rule` (the one-rule convenience) with its diagnostics."""

    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__("; ".join(d.headline() for d in diagnostics))
        self.diagnostics = diagnostics


def parse_rules(text: str, path: str = "<rules>") -> tuple[ast.RuleFile, list[Diagnostic]]:
    rules: list[ast.Rule] = []
    problems: list[Diagnostic] = []
    for first_line, chunk in split_rules(text):
        rule, chunk_problems = _parse_chunk(chunk, first_line, path)
        problems.extend(chunk_problems)
        if rule is not None:
            rules.append(rule)
    return ast.RuleFile(path, tuple(rules)), problems


def parse_rule(text: str) -> ast.Rule:
    """Parse exactly one rule or raise `RuleSyntaxError`."""
    rule_file, problems = parse_rules(text)
    if problems:
        raise RuleSyntaxError(problems)
    if len(rule_file.rules) != 1:
        raise RuleSyntaxError([Diagnostic("<rules>", 1, 1, f"expected one rule, found {len(rule_file.rules)}")])
    return rule_file.rules[0]


def split_rules(text: str) -> list[tuple[int, str]]:
    """(first line number, text) per rule; the text keeps its original line numbers."""
    chunks: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if chunks:
                chunks[-1][1].append("")  # keep line numbering inside the chunk
            continue
        if line[0] in " \t" and chunks:
            chunks[-1][1].append(line)
        else:
            chunks.append((number, [line]))
    return [(first, "\n" * (first - 1) + "\n".join(lines).rstrip()) for first, lines in chunks]


def _parse_chunk(chunk: str, first_line: int, path: str) -> tuple[ast.Rule | None, list[Diagnostic]]:
    too_deep = _bracket_depth_problem(chunk, path)
    if too_deep is not None:
        return None, [too_deep]
    try:
        tree = lark_parser().parse(chunk)
    except UnexpectedInput as error:
        return None, [_syntax_diagnostic(error, chunk, path)]
    too_deep = _tree_depth_problem(tree, path)
    if too_deep is not None:
        return None, [too_deep]
    builder = _AstBuilder(path)
    try:
        rule = builder.transform(tree)
    except VisitError as error:  # a bug in the builder, reported like any problem, never a traceback
        return None, [Diagnostic(path, first_line, 1, f"internal error building rule: {error.orig_exc}")]
    return (None if builder.problems else rule), builder.problems


_NESTING_HINT = "write long conditions as `FIELD in [...]` (docs/dsl.md#limits)"


def _bracket_depth_problem(chunk: str, path: str) -> Diagnostic | None:
    """Brackets nested past the limit, found before Lark sees the text (strings and comments skipped)."""
    depth = 0
    for match in re.finditer(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[(\[]|[)\]]', chunk):
        token = match.group()
        if token in "([":
            depth += 1
            if depth > MAX_TREE_DEPTH:
                line = chunk.count("\n", 0, match.start()) + 1
                column = match.start() - chunk.rfind("\n", 0, match.start())
                return Diagnostic(
                    path, line, column, f"brackets nested more than {MAX_TREE_DEPTH} deep: {_NESTING_HINT}"
                )
        elif token in ")]":
            depth = max(0, depth - 1)
    return None


def _tree_depth_problem(tree: Tree, path: str) -> Diagnostic | None:
    """A parse tree deeper than the limit (`not not not …`), measured without recursion:
    building the AST walks the tree recursively."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            meta = node.meta
            line, column = getattr(meta, "line", 1), getattr(meta, "column", 1)
            return Diagnostic(
                path, line, column, f"the rule is nested more than {MAX_TREE_DEPTH} deep: {_NESTING_HINT}"
            )
        stack += [(child, depth + 1) for child in node.children if isinstance(child, Tree)]
    return None


# ---- syntax errors → diagnostics ------------------------------------------------


def _syntax_diagnostic(error: UnexpectedInput, chunk: str, path: str) -> Diagnostic:
    line, column = error.line, error.column
    if isinstance(error, UnexpectedCharacters):
        char = chunk[error.pos_in_stream] if error.pos_in_stream < len(chunk) else ""
        if char == '"':
            return Diagnostic(path, line, column, 'unterminated string: add the closing `"` on the same line')
        if char == "'":
            return Diagnostic(path, line, column, 'strings use double quotes: write "..."')
        if char == "=":
            return Diagnostic(path, line, column, "unexpected `=`: compare with `==`")
        return Diagnostic(path, line, column, f"unexpected character `{char}`")
    if isinstance(error, UnexpectedToken):
        return _unexpected_token(error, chunk, path)
    return Diagnostic(path, max(line, 1), max(column, 1), "syntax error")


_OUTCOME_KEYWORDS = {"contain", "notify", "escalate", "category"}
_CLAUSE_WORDS = {"by", "where", "for", "min"}


def _is_token(item: object, kind: str) -> bool:
    return isinstance(item, Token) and item.type == kind


def _unexpected_token(error: UnexpectedToken, chunk: str, path: str) -> Diagnostic:
    token: Token = error.token
    expected = set(error.expected)
    at_end = token.type == "$END"
    previous = error.token_history[-1] if error.token_history else None
    if at_end:
        line, column, previous = _last_word(chunk)
    else:
        line, column = token.line or 1, token.column or 1
    prev_type = previous.type if previous is not None else None
    prev_text = str(previous) if previous is not None else ""
    end = None if at_end else (token.end_column if token.end_line == token.line else None)
    text = str(token)

    def diag(message: str) -> Diagnostic:
        return Diagnostic(path, line, column, message, end)

    if text == "=" and prev_type != "EQUAL":
        return diag("unexpected `=`: compare with `==`")
    if prev_type == "NAME" and prev_text in _OUTCOME_KEYWORDS and expected & {"CONTAIN", "NOTIFY"}:
        return diag(f"expected a severity (sev1..sev4) after `->`, found `{prev_text}`")
    if prev_type == "COLON" and at_end:
        return diag("the rule block has no body: indent its lines under `rule NAME:`")
    if prev_type == "CMP" and expected == {"QUANTITY"} and previous is not None and _in_condition(error):
        return diag(f"missing threshold after `{prev_text}`: a number, or `Kx baseline`")
    if prev_type == "BY" and "NAME" in expected:
        return diag("`by` needs at least one field, e.g. `by model`")
    stack = _value_stack(error)
    if len(stack) >= 2 and _is_token(stack[-2], "BY") and _is_token(stack[-1], "NAME") and stack[-1] in _CLAUSE_WORDS:
        word = stack[-1]  # `by where …`: the contextual lexer read the keyword as a field name
        return Diagnostic(
            path, word.line, word.column, "`by` needs at least one field, e.g. `by model`", word.end_column
        )
    if prev_type == "ARROW":
        return diag(f"expected a severity (sev1..sev4) after `->`, found {_describe(token)}")
    if "ARROW" in expected:
        if at_end:
            return diag("missing `->` and a severity: a rule ends `-> sev1..sev4 [contain ACTION]`")
        if token.type == "NAME" and re.fullmatch(r"sev\w*", text):
            return diag(f"missing `->` before `{text}`")
        if text in {"by", "where", "for", "min"}:
            return diag(f"`{text}` is out of place: clauses go {CLAUSE_ORDER}")
    if "CONFIDENCE" in expected:
        return diag(f"missing `confidence` after `{prev_text}`: write `with {prev_text} confidence`")
    if text == "with" and "WITH" not in expected:
        return diag(
            "`with C% confidence` goes right after the threshold: `rate(pii) > 0.0004 with 99.9% confidence over 10m`"
        )
    if prev_type == "OVER" or (expected == {"QUANTITY"} and prev_text in {"over", "for"}):
        return diag(f"expected a duration after `{prev_text}` (10s, 10m, 10h, 10d), found {_describe(token)}")
    if text in _CLAUSE_WORDS | {"over"}:
        return diag(f"`{text}` is out of place: clauses go {CLAUSE_ORDER}")
    if at_end:
        return diag(f"rule ends early; expected {_expected(expected)}")
    return diag(f"unexpected {_describe(token)}; expected {_expected(expected)}")


_WORD_TYPES = {":": "COLON", "by": "BY", "->": "ARROW", "over": "OVER", "for": "FOR"}


def _last_word(chunk: str) -> tuple[int, int, Token | None]:
    """Where a rule that ends early ends: the position just past its last
    character, and its last word as a token (for a message about it)."""
    lines = chunk.splitlines()
    for number in range(len(lines), 0, -1):
        text = (
            re.sub(r"#.*", "", lines[number - 1]).rstrip()
            if '"' not in lines[number - 1]
            else lines[number - 1].rstrip()
        )
        if text:
            match = re.search(r"(->|[<>]=?|:|[A-Za-z_0-9.]+|\S)$", text)
            word = match.group(1) if match else ""
            kind = _WORD_TYPES.get(word, "CMP" if word in {"<", ">", "<=", ">="} else "WORD")
            token = Token(kind, word, line=number, column=len(text) - len(word) + 1)
            return number, len(text) + 1, token
    return 1, 1, None


def _in_condition(error: UnexpectedToken) -> bool:
    """Whether the parser has not reached `->` yet. The token history holds
    only the last token; the parser's value stack holds all shifted so far."""
    stack = _value_stack(error) or error.token_history or []
    return not any(isinstance(t, Token) and t.type == "ARROW" for t in stack)


def _value_stack(error: UnexpectedToken) -> list:
    return list(getattr(getattr(error, "state", None), "value_stack", None) or [])


def _describe(token: Token) -> str:
    if token.type == "$END":
        return "end of rule"
    return f"`{token}`"


def _expected(expected: set[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(t, f"`{t.lower()}`") for t in expected if not t.startswith("__")})
    if not names:
        return "something else"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


# ---- parse tree → AST -------------------------------------------------------------


def _span_of(item) -> ast.Span:
    if isinstance(item, Token):
        return ast.Span(item.line, item.column, item.end_line, item.end_column)
    return ast.Span(item.line, item.column, item.end_line, item.end_column)


def split_quantity(text: str) -> tuple[int | float, str]:
    """``"10m"`` → ``(10, "m")``; ``"0.8x"`` → ``(0.8, "x")``; ``"50"`` → ``(50, "")``."""
    match = _QUANTITY.fullmatch(text)
    if match is None:  # the grammar's QUANTITY always matches; defensive
        return 0, text
    number, unit = match.groups()
    if len(number.split(".")[0].lstrip("-")) > MAX_DIGITS:  # refused by the checker (limits.number_problem)
        return (-math.inf if number.startswith("-") else math.inf), unit
    return (float(number) if "." in number else int(number)), unit


def unescape(quoted: str) -> str:
    """Decode a double-quoted literal without eval: \\" \\\\ \\n \\t, others kept."""
    body = quoted[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


@v_args(meta=True)
class _AstBuilder(Transformer):
    """Builds nodes only; judging them is the checker's job. Literals whose
    form the AST cannot hold (``10m`` where a number belongs) are noted in
    ``problems``."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.problems: list[Diagnostic] = []

    def start(self, meta, children):
        return children[0]

    def named_rule(self, meta, children):
        name, rule = children
        return replace(rule, name=str(name), name_span=_span_of(name), span=_span_of(meta))

    def rule(self, meta, children):
        condition, _arrow, outcome = children
        return ast.Rule(None, condition, outcome, span=_span_of(meta))

    def condition(self, meta, children):
        metric, op, threshold, *rest = children
        confidence = rest.pop(0) if rest and isinstance(rest[0], ast.Confidence) else None
        window, *clauses = rest
        fields = dict(clauses)
        return ast.Condition(
            metric=metric,
            op=str(op),
            threshold=threshold,
            window=window,
            by=fields.get("by", ()),
            where=fields.get("where"),
            for_=fields.get("for"),
            min_events=fields.get("min"),
            confidence=confidence,
            span=_span_of(meta),
        )

    def metric(self, meta, children):
        func, arg = children
        return ast.Metric(str(func), arg, span=_span_of(meta))

    def func_name(self, meta, children):
        return children[0]

    def absolute_threshold(self, meta, children):
        value, unit = split_quantity(children[0])
        return ast.AbsoluteThreshold(value, unit, span=_span_of(meta))

    def baseline_threshold(self, meta, children):
        factor, unit = split_quantity(children[0])
        span_of_baseline, options = children[1] if children[1] is not None else (None, {})
        prior, trimmed = options.get("prior"), options.get("trimmed")
        return ast.BaselineThreshold(
            factor,
            unit,
            span_of_baseline,
            span=_span_of(meta),
            warmup=options.get("warmup"),
            population=options.get("population"),
            prior=split_quantity(prior)[0] if prior is not None else None,
            prior_text=str(prior) if prior is not None else None,
            prior_span=_span_of(prior) if prior is not None else None,
            median=options.get("median"),
            trimmed=split_quantity(trimmed)[0] if trimmed is not None else None,
            trimmed_text=str(trimmed) if trimmed is not None else None,
            trimmed_span=_span_of(trimmed) if trimmed is not None else None,
            seasonal=options.get("seasonal"),
        )

    def baseline_args(self, meta, children):
        """``(6h, warmup 1h, prior 0.02)``: the span and its options (the last of a repeated one wins;
        the checker says so)."""
        span_of_baseline, *options = children
        seen: dict[str, object] = {}
        for name, value in options:
            if name in seen:
                where = value if isinstance(value, ast.Span) else getattr(value, "span", None) or _span_of(value)
                self.problems.append(Diagnostic.at(self.path, where, f"`{name}` is given twice in `baseline(...)`"))
            seen[name] = value
        return span_of_baseline, seen

    def warmup_option(self, meta, children):
        return ("warmup", children[0])

    def population_option(self, meta, children):
        # the word itself (the option's own span starts at its comma)
        word = ast.Span(meta.end_line, meta.end_column - len("population"), meta.end_line, meta.end_column)
        return ("population", word)

    def prior_option(self, meta, children):
        return ("prior", children[0])

    def median_option(self, meta, children):
        word = ast.Span(meta.end_line, meta.end_column - len("median"), meta.end_line, meta.end_column)
        return ("median", word)

    def trimmed_option(self, meta, children):
        return ("trimmed", children[0])

    def seasonal_option(self, meta, children):
        return ("seasonal", children[0])

    def population_threshold(self, meta, children):
        factor, unit = split_quantity(children[0])
        return ast.PopulationThreshold(factor, unit, span=_span_of(meta))

    def confidence_clause(self, meta, children):
        level, unit = split_quantity(children[0])
        return ast.Confidence(level, unit, span=_span_of(children[0]))

    def duration(self, meta, children):
        amount, unit = split_quantity(children[0])
        return ast.Duration(amount, unit, span=_span_of(children[0]))

    def by_clause(self, meta, children):
        return ("by", tuple(children))

    def where_clause(self, meta, children):
        return ("where", children[0])

    def for_clause(self, meta, children):
        return ("for", children[0])

    def min_clause(self, meta, children):
        count, unit = split_quantity(children[0])
        return ("min", ast.MinEvents(count, unit, children[1] == "flagged", span=_span_of(children[0])))

    def min_what(self, meta, children):
        return str(children[0])

    def field_path(self, meta, children):
        return ast.FieldPath(tuple(str(c) for c in children), span=_span_of(meta))

    # where expressions
    def or_(self, meta, children):
        return ast.Or(children[0], children[1], span=_span_of(meta))

    def and_(self, meta, children):
        return ast.And(children[0], children[1], span=_span_of(meta))

    def not_(self, meta, children):
        return ast.Not(children[0], span=_span_of(meta))

    def compare(self, meta, children):
        path, op, value = children
        return ast.Compare(path, op, value, span=_span_of(meta))

    def in_(self, meta, children):
        return ast.InList(children[0], children[1], False, span=_span_of(meta))

    def not_in(self, meta, children):
        return ast.InList(children[0], children[1], True, span=_span_of(meta))

    def truthy(self, meta, children):
        return ast.Truthy(children[0], span=_span_of(meta))

    def compare_op(self, meta, children):
        return str(children[0])

    def list(self, meta, children):
        return tuple(c for c in children if c is not None)

    def string(self, meta, children):
        return unescape(str(children[0]))

    def number(self, meta, children):
        token = children[0]
        value, unit = split_quantity(token)
        if unit:
            self.problems.append(
                Diagnostic.at(self.path, _span_of(token), f"`{token}` is not a number; write a plain number")
            )
        return value

    def true(self, meta, children):
        return True

    def false(self, meta, children):
        return False

    # outcome
    def outcome(self, meta, children):
        severity_token, *clauses = children
        contains = tuple(c for c in clauses if isinstance(c, ast.Contain))
        escalations = tuple(c for c in clauses if isinstance(c, ast.Escalate))
        notifies = tuple(c for c in clauses if isinstance(c, ast.Notify))
        categories = [c for c in clauses if isinstance(c, ast.CategoryOverride)]
        return ast.Outcome(
            severity=ast.Severity(str(severity_token), span=_span_of(severity_token)),
            contains=contains,
            escalations=escalations,
            category=categories[0] if categories else None,
            notifies=notifies,
            extra_categories=tuple(categories[1:]),
            span=_span_of(meta),
        )

    def contain(self, meta, children):
        action, params, hold, for_ = children
        return ast.Contain(str(action), params or (), hold is not None, for_, span=_span_of(meta))

    def action_args(self, meta, children):
        return tuple(c for c in children if c is not None)

    def kwarg(self, meta, children):
        key, value = children
        return ast.Param(str(key), value, span=_span_of(meta))

    def hold(self, meta, children):
        return True

    def notify(self, meta, children):
        return ast.Notify(unescape(str(children[0])), span=_span_of(meta))

    def escalate(self, meta, children):
        severity, measure, op, value = children
        number, unit = split_quantity(value)
        if unit:
            self.problems.append(
                Diagnostic.at(self.path, _span_of(value), f"`{value}` is not a number; write a plain number")
            )
        return ast.Escalate(
            ast.Severity(str(severity), span=_span_of(severity)),
            str(measure),
            str(op),
            number,
            span=_span_of(meta),
        )

    def category(self, meta, children):
        return ast.CategoryOverride(str(children[0]), span=_span_of(children[0]))
