"""`firebreak` — the command line. Each command parses its arguments, calls the
core through an adapter and prints; no detection logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.adapters.rule_files import RuleFileError, read_rule_sources
from engine.dsl import load_rules
from engine.dsl.diagnostics import render_all


def cmd_check(args: argparse.Namespace) -> int:
    try:
        sources = read_rule_sources(args.paths)
    except RuleFileError as error:
        print(f"firebreak check: {error}", file=sys.stderr)
        return 1
    if not sources:
        print(f"firebreak check: no *.rules files under {' '.join(args.paths)}", file=sys.stderr)
        return 1
    rules, problems = load_rules(sources)
    if problems:
        print(render_all(problems, sources), file=sys.stderr)
    errors = sum(1 for p in problems if p.level == "error")
    if errors:
        print(f"{errors} error(s) in {len(sources)} file(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(rules)} rules in {len(sources)} file(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firebreak", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="check rule files and report every problem")
    check.add_argument("paths", nargs="+", metavar="PATH", help="rule files, or directories of *.rules")
    check.set_defaults(run=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
