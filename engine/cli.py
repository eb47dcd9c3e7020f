"""`firebreak` — the command line. Each command parses its arguments, calls the
core through an adapter and prints; no detection logic lives here."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import orjson

from engine.adapters import demo
from engine.adapters.file_replay import InputError, ReplayResult, replay_files
from engine.adapters.rule_files import RuleFileError, read_rule_sources
from engine.adapters.rule_tests import TEST_SUFFIX, SpecError, collect_test_files, run_test_file
from engine.adapters.starter_pack import StarterPackMissing, starter_rule_sources
from engine.core import DEFAULT_LATENESS_MS
from engine.dsl import CompiledRule, load_rules
from engine.dsl.checker import DURATION_UNITS
from engine.dsl.diagnostics import render_all


def read_sources_or_report(paths: list[str], command: str) -> dict[str, str] | None:
    """The rule files' texts, or None after printing why there are none."""
    try:
        sources = read_rule_sources(paths)
    except RuleFileError as error:
        print(f"firebreak {command}: {error}", file=sys.stderr)
        return None
    if not sources:
        print(f"firebreak {command}: no *.rules files under {' '.join(paths)}", file=sys.stderr)
        return None
    return sources


def cmd_check(args: argparse.Namespace) -> int:
    sources = read_sources_or_report(args.paths, "check")
    if sources is None:
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


def load_rules_or_report(paths: list[str], command: str) -> tuple[CompiledRule, ...] | None:
    """Compiled rules, or None after printing why there are none."""
    sources = read_sources_or_report(paths, command)
    if sources is None:
        return None
    rules, problems = load_rules(sources)
    if problems:
        print(render_all(problems, sources), file=sys.stderr)
    if not rules:
        if not problems:
            print(f"firebreak {command}: no rules in {' '.join(paths)}", file=sys.stderr)
        return None
    return rules


def duration_arg(text: str) -> int:
    """`30s`, `2m` → milliseconds (for argparse)."""
    unit = text[-1:]
    if unit not in DURATION_UNITS or not text[:-1].isdigit():
        raise argparse.ArgumentTypeError(f"`{text}` is not a duration; use e.g. 30s, 2m, 1h")
    return int(text[:-1]) * DURATION_UNITS[unit]


def cmd_replay(args: argparse.Namespace) -> int:
    rules = load_rules_or_report(args.rules, "replay")
    if rules is None:
        return 1
    out = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115
    dead = open(args.dead_letter, "wb") if args.dead_letter else None  # noqa: SIM115
    tty = sys.stderr.isatty()

    def emit(record: dict) -> None:
        out.write(orjson.dumps(record) + b"\n")

    def progress(result: ReplayResult) -> None:
        print(f"\r  {result.lines:,} lines  {result.events:,} events  {result.records:,} records",
              end="", file=sys.stderr, flush=True)  # fmt: skip

    try:
        result = replay_files(args.files, rules, emit, dead, args.lateness, progress if tty else None)
    except InputError as error:
        print(f"firebreak replay: {error}", file=sys.stderr)
        return 1
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
        if dead is not None:
            dead.close()
    if tty:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    for sample in result.bad_samples:
        print(f"bad line: {sample}", file=sys.stderr)
    if result.bad > len(result.bad_samples):
        print(f"... and {result.bad - len(result.bad_samples)} more bad lines", file=sys.stderr)
    print(result.summary(), file=sys.stderr)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    try:
        files = collect_test_files(args.paths)
    except SpecError as error:
        print(f"firebreak test: {error}", file=sys.stderr)
        return 1
    if not files:
        print(f"firebreak test: no *{TEST_SUFFIX} files under {' '.join(args.paths)}", file=sys.stderr)
        return 1
    failed = 0
    expectations = 0
    for path in files:
        outcome = run_test_file(path)
        expectations += outcome.expectations
        if outcome.passed:
            print(f"PASS {path} ({outcome.expectations} expectations)")
            continue
        failed += 1
        print(f"FAIL {path}")
        if outcome.error:
            print(f"  error: {outcome.error}")
        for failure in outcome.failures:
            print("  " + failure.replace("\n", "\n  "))
    print(f"{len(files) - failed} passed, {failed} failed ({expectations} expectations in {len(files)} files)")
    return 1 if failed else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.adapters.live import command  # imports Faust: only for this command

    return command.run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.rules:
        rules = load_rules_or_report(args.rules, "demo")
    else:
        try:
            sources = starter_rule_sources()
        except StarterPackMissing as error:
            print(f"firebreak demo: {error}", file=sys.stderr)
            return 1
        rules, problems = load_rules(sources)
        if problems:
            print(render_all(problems, sources), file=sys.stderr)
    if not rules:
        return 1
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="firebreak-demo-"))
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if not args.quiet else (lambda _: None)
    result = demo.run_demo(out, rules, args.seed, args.rate, say)
    print(demo.render(result, rules))
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from engine.adapters import backtest  # imported here: the whole command is this function and its parser block

    old_rules = load_rules_or_report(args.rules, "backtest")
    new_rules = load_rules_or_report(args.against, "backtest")
    if old_rules is None or new_rules is None:
        return 1
    try:
        truths = backtest.read_truths(args.truth) if args.truth else None
    except backtest.TruthFileError as error:
        print(f"firebreak backtest: {error}", file=sys.stderr)
        return 1
    source = args.events  # event files; a topic source (--topic/--since/--until/--bootstrap) would go here
    try:
        run = backtest.run_backtest(old_rules, new_rules, source, args.lateness, truths)
    except InputError as error:
        print(f"firebreak backtest: {error}", file=sys.stderr)
        return 1
    for sample in run.bad_samples:
        print(f"bad line: {sample}", file=sys.stderr)
    if run.bad > len(run.bad_samples):
        print(f"... and {run.bad - len(run.bad_samples)} more bad lines", file=sys.stderr)
    if args.format == "json":
        report = orjson.dumps(backtest.to_json(run), option=orjson.OPT_INDENT_2).decode()
    else:
        report = backtest.render_text(run, " ".join(args.rules), " ".join(args.against))
    if args.out:
        Path(args.out).write_text(report + "\n", encoding="utf-8")
    else:
        print(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firebreak", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="check rule files and report every problem")
    check.add_argument("paths", nargs="+", metavar="PATH", help="rule files, or directories of *.rules")
    check.set_defaults(run=cmd_check)

    replay = sub.add_parser("replay", help="replay JSON-lines event files through the rules")
    replay.add_argument("files", nargs="+", metavar="FILE", help="event files (JSON lines; - for stdin; .gz ok)")
    replay.add_argument("--rules", action="append", required=True, metavar="PATH",
                        help="rule file or directory (repeatable)")  # fmt: skip
    replay.add_argument("--out", metavar="FILE", help="write records here instead of stdout")
    replay.add_argument("--dead-letter", metavar="FILE", help="write bad and late lines here, with the reason")
    replay.add_argument("--lateness", type=duration_arg, default=DEFAULT_LATENESS_MS, metavar="DURATION",
                        help="allowed lateness of out-of-order events (default 30s)")  # fmt: skip
    replay.set_defaults(run=cmd_replay)

    test = sub.add_parser("test", help="run rule tests (*.test.toml) kept next to the rules")
    test.add_argument("paths", nargs="+", metavar="PATH", help="test files, or directories of *.test.toml")
    test.set_defaults(run=cmd_test)

    demo_ = sub.add_parser("demo", help="replay a synthetic log with five injected incidents through the starter rules")
    demo_.add_argument("--out", metavar="DIR", help="write events, records and ground truth here (default: a temp dir)")
    demo_.add_argument("--rules", action="append", metavar="PATH",
                       help="rule file or directory instead of the starter pack (repeatable)")  # fmt: skip
    demo_.add_argument("--seed", type=int, default=demo.DEMO_SEED, help="traffic seed (default %(default)s)")
    demo_.add_argument("--rate", type=float, default=demo.DEMO_RATE, metavar="EVENTS_PER_S",
                       help="mean inference events per second (default %(default)s)")  # fmt: skip
    demo_.add_argument("--quiet", action="store_true", help="print only the report")
    demo_.set_defaults(run=cmd_demo)

    backtest = sub.add_parser("backtest", help="compare the incidents two rule versions open on the same events")
    backtest.add_argument("--rules", action="extend", nargs="+", required=True, metavar="OLD",
                          help="the current rules: files or directories")  # fmt: skip
    backtest.add_argument("--against", action="extend", nargs="+", required=True, metavar="NEW",
                          help="the candidate rules: files or directories")  # fmt: skip
    backtest.add_argument("--events", action="extend", nargs="+", required=True, metavar="FILE",
                          help="event files (JSON lines; - for stdin; .gz ok)")  # fmt: skip
    backtest.add_argument("--lateness", type=duration_arg, default=DEFAULT_LATENESS_MS, metavar="DURATION",
                          help="allowed lateness of out-of-order events (default 30s)")  # fmt: skip
    backtest.add_argument("--truth", metavar="FILE", help="ground truth (truth.json of `firebreak demo --out DIR`)")
    backtest.add_argument("--format", choices=("text", "json"), default="text", help="report format (default text)")
    backtest.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")
    backtest.set_defaults(run=cmd_backtest)

    worker = sub.add_parser("worker", help="run live detection on Kafka (a Faust worker)")
    from engine.adapters.live.command import add_arguments as add_worker_arguments

    add_worker_arguments(worker, duration_arg)
    worker.set_defaults(run=cmd_worker)
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
