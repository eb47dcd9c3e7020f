"""`firebreak` — the command line. Each command parses its arguments, calls the
core through an adapter and prints; no detection logic lives here."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from firebreak.adapters import demo
from firebreak.adapters.drive import ENGINES
from firebreak.adapters.file_replay import InputError, ReplayResult, replay_files
from firebreak.adapters.investigation import FORMATS as INVESTIGATION_FORMATS
from firebreak.adapters.rule_files import load_rules_or_report, read_sources_or_report
from firebreak.adapters.rule_tests import TEST_SUFFIX, SpecError, collect_test_files, run_test_file
from firebreak.adapters.starter_pack import StarterPackMissing, starter_companion_sources, starter_rule_sources
from firebreak.core import DEFAULT_LATENESS_MS, parse_ts
from firebreak.core.engine import DEFAULT_MAX_SKEW_MS
from firebreak.dsl import CompiledRule, load_rules
from firebreak.dsl.diagnostics import render_all
from firebreak.dsl.policy import POLICY_FILE
from firebreak.durations import DurationError, parse_duration
from firebreak.errors import EngineError
from firebreak.kafka_config import KafkaConfig, KafkaConfigError, load_kafka_config

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def cmd_check(args: argparse.Namespace) -> int:
    problem = traffic_source_problem(args)
    if problem:
        print(f"firebreak check: {problem}", file=sys.stderr)
        return 1
    read = read_sources_or_report(args.paths, "check")
    if read is None:
        return 1
    sources, vocabularies = read
    rules, problems = load_rules(sources, vocabularies)
    if problems:
        print(render_all(problems, sources | vocabularies), file=sys.stderr)
    errors = sum(1 for p in problems if p.level == "error")
    if errors:
        print(f"{errors} error(s) in {len(sources) + len(vocabularies)} file(s)", file=sys.stderr)
        return 1
    declared = "".join(
        f" ({what} {', '.join(found)})"
        for what, found in (
            ("names declared in", [p for p in vocabularies if Path(p).name != POLICY_FILE]),
            ("response policy in", [p for p in vocabularies if Path(p).name == POLICY_FILE]),
        )
        if found
    )
    json_report = args.format == "json" and (args.events or args.topic)  # stdout: the JSON report only
    print(f"ok: {len(rules)} rules in {len(sources)} file(s){declared}", file=sys.stderr if json_report else sys.stdout)
    if args.events or args.topic:
        return check_traffic(args, rules)
    return 0


KAFKA_CONFIG_HELP = "Kafka client properties: TLS, SASL (docs/kafka-security.md); also FIREBREAK_KAFKA_* variables"


def kafka_settings(args: argparse.Namespace) -> KafkaConfig:
    """The Kafka client settings of a --topic command: --kafka-config, FIREBREAK_KAFKA_*, --bootstrap."""
    return load_kafka_config(args.kafka_config, args.bootstrap)


TOPIC_OPTIONS = ("since", "until", "bootstrap", "kafka_config")  # add_topic_options: meaningful with --topic only


def add_topic_options(
    parser: argparse.ArgumentParser,
    title: str,
    since: str,
    until: str,
    topic: str = "the events topic, e.g. ai.inference.events",
) -> Any:
    """The options that read events from a Kafka topic instead of files, declared once for every
    command that can (check, replay, backtest, investigate); the group, for more options."""
    group = parser.add_argument_group(title)
    group.add_argument("--topic", metavar="TOPIC", help=topic)
    group.add_argument("--since", metavar="TIME", help=since)
    group.add_argument("--until", metavar="TIME", help=until)
    group.add_argument("--bootstrap", metavar="HOST:PORT", help=f"Kafka brokers (default {DEFAULT_BOOTSTRAP})")
    group.add_argument("--kafka-config", metavar="FILE", help=KAFKA_CONFIG_HELP)
    return group


def source_problem(
    args: argparse.Namespace,
    files: Any,
    files_text: str,
    files_required: bool,
    until_required: bool = True,
    topic_only: tuple[str, ...] = TOPIC_OPTIONS,
) -> str | None:
    """Why a command's arguments do not name exactly one source of events — ``files`` (named
    ``files_text``: "--events", "event FILEs") or --topic with --since (and --until) — or None.
    One check for every command that reads events."""
    range_text = "--since and --until" if until_required else "--since"
    if args.topic is None:
        used = [name for name in topic_only if getattr(args, name, None) not in (None, False)]
        if used:
            return f"--{used[0].replace('_', '-')} needs --topic"
        wanted = f"{files_text} FILE..." if files_text.startswith("--") else files_text
        return f"give {wanted}, or --topic with {range_text}" if files_required and not files else None
    if files:
        return f"give {files_text} or --topic, not both"
    if args.since is None or (until_required and args.until is None):
        return f"--topic needs {range_text}"
    return None


def traffic_source_problem(args: argparse.Namespace) -> str | None:
    """Why `check`'s traffic options do not name one source (--events, or --topic --since), or None."""
    if args.false_per_day is not None and not (args.events or args.topic):
        return "--false-per-day needs traffic to count on: --events FILE or --topic TOPIC --since TIME"
    return source_problem(args, args.events, "--events", files_required=False, until_required=False)


def check_traffic(args: argparse.Namespace, rules: tuple[CompiledRule, ...]) -> int:
    """`firebreak check --events/--topic`: every rule against real traffic (adapters/traffic_check.py)."""
    from firebreak.adapters import traffic_check

    errors: tuple[type[Exception], ...] = (InputError,)
    try:
        if args.topic is None:
            report = traffic_check.check_files(args.events, rules, args.lateness, args.false_per_day)
        else:
            from firebreak.adapters import topic_replay  # imports aiokafka: only for a topic

            errors += (topic_replay.TopicError,)
            since, until = check_time_range(args.since, args.until)
            report = traffic_check.check_topic(
                kafka_settings(args), args.topic, since, until, rules, args.lateness, args.false_per_day
            )
    except ValueError as error:
        print(f"firebreak check: {error}", file=sys.stderr)
        return 1
    except errors as error:
        print(f"firebreak check: {error}", file=sys.stderr)
        return 1
    print_bad_samples(report.bad_samples, report.bad, report.bad_noun)
    if args.format == "json":
        print(orjson.dumps(traffic_check.to_json(report), option=orjson.OPT_INDENT_2).decode())
    else:
        print(traffic_check.render_text(report))
    return 2 if args.strict and report.warnings() else 0


def check_time_range(since_text: str, until_text: str | None) -> tuple[int, int]:
    """`check --topic`'s --since and --until (default: now) as epoch ms; ValueError naming the option."""
    from firebreak.adapters import topic_replay

    times = []
    for option, text in (("since", since_text), ("until", until_text)):
        try:
            times.append(topic_replay.parse_time(text) if text else int(time.time() * 1000))
        except ValueError as error:
            raise ValueError(f"--{option}: {error}") from None
    topic_replay.check_range(times[0], times[1])
    return times[0], times[1]


def budget_arg(text: str) -> float:
    """--false-per-day: a number of incidents a day, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of incidents a day: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a number of incidents a day is 0 or more: {text!r}")
    return value


def duration_arg(text: str) -> int:
    """`30s`, `2m`, `1h30m` → milliseconds (for argparse: engine/firebreak/durations.py)."""
    try:
        return parse_duration(text)
    except DurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def skew_arg(text: str) -> int | None:
    """--max-skew: a duration, or `off` (no bound) → milliseconds or None."""
    return None if text.strip().lower() == "off" else duration_arg(text)


SKEW_HELP = (
    "refuse (dead-letter, `ahead: ...`) an event more than this after the latest event time taken, "
    "until 8 in a row agree; `off`: no bound (default 1h)"
)
TOPIC_ONLY = ("since", "until", "bootstrap", "kafka_config", "seek_slack", "emit")  # replay options that need --topic
EMIT_ONLY = ("incidents_topic", "containment_topic")


def replay_source_problem(args: argparse.Namespace) -> str | None:
    """Why the replay's arguments do not name exactly one source (files or --topic), or None."""
    problem = source_problem(args, args.files, "event FILEs", files_required=True, topic_only=TOPIC_ONLY + EMIT_ONLY)
    if problem or args.topic is None:
        return problem
    used = [name for name in EMIT_ONLY if getattr(args, name) is not None]
    if used and not args.emit:
        return f"--{used[0].replace('_', '-')} needs --emit"
    return None


@contextmanager
def replay_outputs(args: argparse.Namespace) -> Iterator[tuple[Callable[[dict], None], IO[bytes] | None]]:
    """(emit, dead-letter file) for --out/stdout and --dead-letter; flushed and closed after."""
    out = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115
    dead = open(args.dead_letter, "wb") if args.dead_letter else None  # noqa: SIM115

    def emit(record: dict) -> None:
        out.write(orjson.dumps(record) + b"\n")

    try:
        yield emit, dead
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
        if dead is not None:
            dead.close()


def print_bad_samples(samples: Sequence[str], total: int, noun: str) -> None:
    """The first bad inputs, where and why, and how many more there were (on stderr)."""
    for sample in samples:
        print(f"bad {noun}: {sample}", file=sys.stderr)
    if total > len(samples):
        print(f"... and {total - len(samples)} more bad {noun}s", file=sys.stderr)


def print_replay_result(result: ReplayResult, tty: bool) -> None:
    if tty:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    print_bad_samples(result.bad_samples, result.bad, result.bad_noun)
    print(result.summary(), file=sys.stderr)


def progress_printer(result: ReplayResult) -> None:
    print(
        f"\r  {result.lines:,} {result.bad_noun}s  {result.events:,} events  {result.records:,} records",
        end="",
        file=sys.stderr,
        flush=True,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    problem = replay_source_problem(args)
    if problem is not None:
        print(f"firebreak replay: {problem}", file=sys.stderr)
        return 1
    if args.topic is not None:
        return cmd_replay_topic(args)
    rules = load_rules_or_report(args.rules, "replay")
    if rules is None:
        return 1
    tty = sys.stderr.isatty()
    try:
        with replay_outputs(args) as (emit, dead):
            kept: list[dict] = []  # --cases: the records first, then the cases they make
            result = replay_files(
                args.files,
                rules,
                kept.append if args.cases else emit,
                dead,
                args.lateness,
                progress_printer if tty else None,
                engine=args.engine,
                max_skew_ms=args.max_skew,
            )
            if args.cases:
                from firebreak.adapters.case_replay import with_cases

                for record in with_cases(kept, rules):
                    emit(record)
    except InputError as error:
        print(f"firebreak replay: {error}", file=sys.stderr)
        return 1
    print_replay_result(result, tty)
    return 0


def cmd_replay_topic(args: argparse.Namespace) -> int:
    from firebreak.adapters import topic_replay  # imports aiokafka: only for this command

    try:
        since, until = topic_time_range(args)
    except ValueError as error:
        print(f"firebreak replay: {error}", file=sys.stderr)
        return 1
    rules = load_rules_or_report(args.rules, "replay")
    if rules is None:
        return 1
    publish_to = None
    if args.emit:
        publish_to = topic_replay.OutputTopics(
            args.incidents_topic or topic_replay.DEFAULT_INCIDENTS_TOPIC,
            args.containment_topic or topic_replay.DEFAULT_CONTAINMENT_TOPIC,
        )
    tty = sys.stderr.isatty()
    slack = topic_replay.DEFAULT_SLACK_MS if args.seek_slack is None else args.seek_slack
    try:
        kafka = kafka_settings(args)
    except KafkaConfigError as error:
        print(f"firebreak replay: {error}", file=sys.stderr)
        return 1
    try:
        with replay_outputs(args) as (emit, dead):
            result = topic_replay.replay_topic(
                kafka,
                args.topic,
                since,
                until,
                rules,
                emit,
                dead,
                args.lateness,
                slack,
                publish_to=publish_to,
                progress=progress_printer if tty else None,
                engine=args.engine,
                max_skew_ms=args.max_skew,
            )
    except topic_replay.TopicError as error:
        print(f"firebreak replay: {error}", file=sys.stderr)
        return 1
    print_replay_result(result, tty)
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
        outcome = run_test_file(path, args.engine, args.max_skew)
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
    from firebreak.adapters.live import command  # imports Faust: only for this command

    return command.run(args)


def cmd_notify(args: argparse.Namespace) -> int:
    from firebreak.adapters import notify_command  # here: the command is this function and its parser block

    return notify_command.run(args)


def cmd_silence(args: argparse.Namespace) -> int:
    from firebreak.adapters import silence_command

    return silence_command.run_silence(args)


def cmd_ack(args: argparse.Namespace) -> int:
    from firebreak.adapters import silence_command

    return silence_command.run_ack(args)


def cmd_otlp(args: argparse.Namespace) -> int:
    from firebreak.adapters import otlp_command

    return otlp_command.run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.rules:
        rules = load_rules_or_report(args.rules, "demo")
    else:
        try:
            sources = starter_rule_sources()
        except StarterPackMissing as error:
            print(f"firebreak demo: {error}", file=sys.stderr)
            return 1
        companions = starter_companion_sources()  # its response policy (standard names only)
        rules, problems = load_rules(sources, companions)
        if problems:
            print(render_all(problems, sources | companions), file=sys.stderr)
    if not rules:
        return 1
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="firebreak-demo-"))
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if not args.quiet else (lambda _: None)
    result = demo.run_demo(out, rules, args.seed, args.rate, say)
    print(demo.render(result, rules, " ".join(args.rules) if args.rules else "rules/"))
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from firebreak.adapters import backtest, backtest_report  # here: the command is this function and its parser block

    problem = source_problem(args, args.events, "--events", files_required=True)
    if problem:
        print(f"firebreak backtest: {problem}", file=sys.stderr)
        return 1
    errors: tuple[type[Exception], ...] = (InputError,)
    source, source_label = args.events, ""
    if args.topic is not None:
        from firebreak.adapters import topic_replay  # imports aiokafka: only for a topic

        try:
            since, until = topic_time_range(args)
            kafka = kafka_settings(args)
        except ValueError as error:
            print(f"firebreak backtest: {error}", file=sys.stderr)
            return 1
        source = backtest.TopicSource(kafka, args.topic, since, until)
        source_label = f" of {args.topic} from {args.since} to {args.until}"
        errors += (topic_replay.TopicError,)
    old_rules = load_rules_or_report(args.rules, "backtest")
    new_rules = load_rules_or_report(args.against, "backtest")
    if old_rules is None or new_rules is None:
        return 1
    try:
        truths = backtest.read_truths(args.truth) if args.truth else None
    except backtest.TruthFileError as error:
        print(f"firebreak backtest: {error}", file=sys.stderr)
        return 1
    try:
        run = backtest.run_backtest(old_rules, new_rules, source, args.lateness, truths, engine=args.engine)
    except errors as error:
        print(f"firebreak backtest: {error}", file=sys.stderr)
        return 1
    print_bad_samples(run.bad_samples, run.bad, run.bad_noun)
    if args.format == "json":
        report = orjson.dumps(backtest_report.to_json(run), option=orjson.OPT_INDENT_2).decode()
    else:
        report = backtest_report.render_text(run, " ".join(args.rules), " ".join(args.against), source_label)
    if args.out:
        Path(args.out).write_text(report + "\n", encoding="utf-8")
    else:
        print(report)
    lost = run.backtest.regressions() if args.fail_on_missed else []
    for item in lost:
        print(f"firebreak backtest: {item}", file=sys.stderr)
    return 3 if lost else 0


def cmd_investigate(args: argparse.Namespace) -> int:
    from firebreak.adapters import investigation
    from firebreak.investigate import IncidentNotFound, Options, Selection

    problem = source_problem(args, args.events, "--events", files_required=True)
    if problem:
        print(f"firebreak investigate: {problem}", file=sys.stderr)
        return 1
    group = {}
    for item in args.group or []:
        field, sep, value = item.partition("=")
        if not sep or not field:
            print(f"firebreak investigate: --group {item!r} is not FIELD=VALUE", file=sys.stderr)
            return 1
        group[field] = value
    if group and not args.rule:
        print("firebreak investigate: --group needs --rule", file=sys.stderr)
        return 1
    if args.case and (args.incident or args.rule):
        print("firebreak investigate: --case or --incident/--rule, not both", file=sys.stderr)
        return 1
    if args.records and args.topic is not None:
        print("firebreak investigate: --records goes with --events files, not --topic", file=sys.stderr)
        return 1
    rules = load_rules_or_report(args.rules, "investigate")
    if rules is None:
        return 1
    options = Options(lateness_ms=args.lateness, lookback_ms=args.lookback, suggest=not args.no_suggest)
    errors: tuple[type[Exception], ...] = (InputError, ValueError)
    try:
        if args.topic is not None:
            from firebreak.adapters import topic_replay  # imports aiokafka: only for a topic

            errors += (topic_replay.TopicError,)
            since, until = topic_time_range(args)
            loaded = investigation.events_from_topic(kafka_settings(args), args.topic, since, until, rules, options)
        else:
            loaded = investigation.events_from_files(args.events)
        records = investigation.records_from_file(args.records) if args.records else None
    except errors as error:
        print(f"firebreak investigate: {error}", file=sys.stderr)
        return 1
    print_bad_samples(loaded.bad_samples, loaded.bad, "event")
    if not loaded.events:
        print("firebreak investigate: no events in the input", file=sys.stderr)
        return 1
    selection = None
    if args.incident or args.rule:
        selection = Selection(incident_id=args.incident, rule=args.rule, group=group)
    options = dataclasses.replace(options, source=loaded.source)
    try:
        outcome = investigation.run(
            rules, loaded, selection, options, engine=args.engine, records=records, case_id=args.case
        )
    except IncidentNotFound as error:
        print(f"firebreak investigate: {error}", file=sys.stderr)
        return 1
    if outcome.report is None:
        listed = outcome.incidents
        if args.topic is not None:  # not those of the warm-up before --since
            listed = [i for i in listed if since <= parse_ts(i["opened"]) < until]
        if args.format == "json":  # for scripts: the listing as one JSON array (no prose)
            text = investigation.render_listing(listed)
            if args.out:
                Path(args.out).write_text(text + "\n", encoding="utf-8")
            else:
                print(text)
            return 0
        print(f"{len(listed)} incident(s); investigate one with --incident ID (or --rule NAME)")
        for i in listed:
            group_text = ", ".join(f"{k}={v}" for k, v in i["group"].items()) or "(all)"
            print(f"  {i['incident_id']}  {i['opened']}  {i['severity']}  {i['rule']}  {group_text}")
        return 0
    text = investigation.render(outcome.report, args.format)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        what = args.case or outcome.report.incident.incident_id
        print(f"wrote {args.format} report of {what} to {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


def topic_time_range(args: argparse.Namespace) -> tuple[int, int]:
    """--since/--until as epoch ms; ValueError naming the option when they are not a range."""
    from firebreak.adapters import topic_replay

    times = []
    for option in ("since", "until"):
        text = getattr(args, option)
        if text is None:
            raise ValueError(f"--topic needs --{option}")
        try:
            times.append(topic_replay.parse_time(text))
        except ValueError as error:
            raise ValueError(f"--{option}: {error}") from None
    topic_replay.check_range(times[0], times[1])
    return times[0], times[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firebreak", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="check rule files and report every problem")
    check.add_argument(
        "paths", nargs="+", metavar="PATH", help="rule files, or directories of *.rules (and their vocabulary.toml)"
    )
    check.add_argument(
        "--events", nargs="+", metavar="FILE", help="also check every rule against these events (JSON lines, `-`, .gz)"
    )
    add_topic_options(
        check,
        "checking against a Kafka topic's events (docs/dsl.md)",
        "with --topic: from this time (RFC 3339 or epoch ms)",
        "with --topic: end of the range (default: now)",
        topic="also check every rule against this Kafka topic's events from --since",
    )
    check.add_argument(
        "--lateness",
        type=duration_arg,
        default=DEFAULT_LATENESS_MS,
        metavar="DURATION",
        help="allowed lateness of out-of-order events (default 30s)",
    )
    check.add_argument("--format", choices=("text", "json"), default="text", help="of the traffic report")
    check.add_argument("--strict", action="store_true", help="exit 2 when the traffic check has warnings")
    check.add_argument(
        "--false-per-day",
        type=budget_arg,
        metavar="N",
        help="with --events/--topic: each rule's incidents a day on that (ordinary) traffic against "
        "this budget, and the least stricter confidence or limit that meets it",
    )
    check.set_defaults(run=cmd_check)

    replay = sub.add_parser("replay", help="replay JSON-lines event files, or a Kafka topic, through the rules")
    replay.add_argument("files", nargs="*", metavar="FILE", help="event files (JSON lines; - for stdin; .gz ok)")
    replay.add_argument(
        "--rules", action="append", required=True, metavar="PATH", help="rule file or directory (repeatable)"
    )
    replay.add_argument("--out", metavar="FILE", help="write records here instead of stdout")
    replay.add_argument("--dead-letter", metavar="FILE", help="write bad and late lines here, with the reason")
    replay.add_argument(
        "--lateness",
        type=duration_arg,
        default=DEFAULT_LATENESS_MS,
        metavar="DURATION",
        help="allowed lateness of out-of-order events (default 30s)",
    )
    replay.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="native (the default) or python (the reference core, to compare)",
    )
    replay.add_argument("--max-skew", type=skew_arg, default=DEFAULT_MAX_SKEW_MS, metavar="DURATION", help=SKEW_HELP)
    replay.add_argument(
        "--cases",
        action="store_true",
        help="files: also group incidents into cases, each incident record naming its case, "
        "case records after it (docs/response.md#cases)",
    )
    topic = add_topic_options(
        replay,
        "replaying a Kafka topic instead of files (docs/detection.md)",
        "write records from this event time (RFC 3339 or epoch ms)",
        "... up to this one, exclusive",
    )
    topic.add_argument(
        "--seek-slack",
        type=duration_arg,
        metavar="DURATION",
        help="seek this much earlier by record timestamps (default 5m)",
    )
    topic.add_argument("--emit", action="store_true", help="also send the records to the live output topics")
    topic.add_argument("--incidents-topic", metavar="TOPIC", help="with --emit: instead of ai.incidents")
    topic.add_argument("--containment-topic", metavar="TOPIC", help="with --emit: instead of ai.containment.commands")
    replay.set_defaults(run=cmd_replay)

    test = sub.add_parser("test", help="run rule tests (*.test.toml) kept next to the rules")
    test.add_argument("paths", nargs="+", metavar="PATH", help="test files, or directories of *.test.toml")
    test.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="native (the default) or python (the reference core, to compare)",
    )
    test.add_argument("--max-skew", type=skew_arg, default=DEFAULT_MAX_SKEW_MS, metavar="DURATION", help=SKEW_HELP)
    test.set_defaults(run=cmd_test)

    demo_ = sub.add_parser("demo", help="replay a synthetic log with five injected incidents through the starter rules")
    demo_.add_argument("--out", metavar="DIR", help="write events, records and ground truth here (default: a temp dir)")
    demo_.add_argument(
        "--rules",
        action="append",
        metavar="PATH",
        help="rule file or directory instead of the starter pack (repeatable)",
    )
    demo_.add_argument("--seed", type=int, default=demo.DEMO_SEED, help="traffic seed (default %(default)s)")
    demo_.add_argument(
        "--rate",
        type=float,
        default=demo.DEMO_RATE,
        metavar="EVENTS_PER_S",
        help="mean inference events per second (default %(default)s)",
    )
    demo_.add_argument("--quiet", action="store_true", help="print only the report")
    demo_.set_defaults(run=cmd_demo)

    backtest = sub.add_parser("backtest", help="compare the incidents two rule versions open on the same events")
    backtest.add_argument(
        "--rules",
        action="extend",
        nargs="+",
        required=True,
        metavar="OLD",
        help="the current rules: files or directories",
    )
    backtest.add_argument(
        "--against",
        action="extend",
        nargs="+",
        required=True,
        metavar="NEW",
        help="the candidate rules: files or directories",
    )
    backtest.add_argument(
        "--events", action="extend", nargs="+", metavar="FILE", help="event files (JSON lines; - for stdin; .gz ok)"
    )
    backtest.add_argument(
        "--lateness",
        type=duration_arg,
        default=DEFAULT_LATENESS_MS,
        metavar="DURATION",
        help="allowed lateness of out-of-order events (default 30s)",
    )
    backtest.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="native (the default) or python (the reference core, to compare)",
    )
    backtest.add_argument("--truth", metavar="FILE", help="ground truth (truth.json of `firebreak demo --out DIR`)")
    backtest.add_argument("--format", choices=("text", "json"), default="text", help="report format (default text)")
    backtest.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")
    backtest.add_argument(
        "--fail-on-missed",
        action="store_true",
        help="exit 3 when NEW misses an injection OLD detects (--truth), or, without --truth, "
        "when OLD opens an incident NEW does not (for CI)",
    )
    add_topic_options(
        backtest,
        "events from a Kafka topic instead of files (docs/backtest.md)",
        "incidents from this event time (RFC 3339 or epoch ms)",
        "... up to this one, exclusive",
    )
    backtest.set_defaults(run=cmd_backtest)

    inv = sub.add_parser("investigate", help="reconstruct one incident: timeline, causes, contributors, review")
    inv.add_argument(
        "--rules",
        action="extend",
        nargs="+",
        required=True,
        metavar="PATH",
        help="the rules that detected it: files or directories",
    )
    inv.add_argument(
        "--events", action="extend", nargs="+", metavar="FILE", help="event files (JSON lines; - for stdin; .gz ok)"
    )
    inv.add_argument("--incident", metavar="ID", help="the incident id (inc_…); without it, the incidents are listed")
    inv.add_argument("--rule", metavar="NAME", help="... or the rule whose (first) incident to investigate")
    inv.add_argument("--group", action="append", metavar="FIELD=VALUE", help="with --rule: the group (repeatable)")
    inv.add_argument(
        "--case",
        metavar="ID",
        help="... or a case (case_…): its incidents on one timeline, the lead one in full (docs/investigate.md#cases)",
    )
    inv.add_argument(
        "--records",
        metavar="FILE",
        help="the records of these events (e.g. demo's records.jsonl, "
        "with or without case records) instead of replaying them",
    )
    inv.add_argument(
        "--format",
        choices=INVESTIGATION_FORMATS,
        default="markdown",
        help="markdown (default), json, or a self-contained html page with charts",
    )
    inv.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")
    inv.add_argument(
        "--lookback",
        type=duration_arg,
        default=2 * 3_600_000,
        metavar="DURATION",
        help="consider change events this far before the anomaly (default 2h)",
    )
    inv.add_argument(
        "--lateness",
        type=duration_arg,
        default=DEFAULT_LATENESS_MS,
        metavar="DURATION",
        help="allowed lateness of out-of-order events (default 30s)",
    )
    inv.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="native (the default) or python (the reference core, to compare)",
    )
    inv.add_argument("--no-suggest", action="store_true", help="skip the (replayed) monitoring suggestion")
    add_topic_options(
        inv,
        "events from a Kafka topic instead of files (docs/investigate.md)",
        "the range to search (RFC 3339 or epoch ms)",
        "... up to this time, exclusive",
    )
    inv.set_defaults(run=cmd_investigate)

    worker = sub.add_parser("worker", help="run live detection on Kafka (a Faust worker)")
    from firebreak.adapters.live.command import add_arguments as add_worker_arguments

    add_worker_arguments(worker, duration_arg)
    worker.set_defaults(run=cmd_worker)

    notify = sub.add_parser("notify", help="deliver incidents to PagerDuty, Slack or a webhook (docs/notify.md)")
    from firebreak.adapters.notify_command import add_arguments as add_notify_arguments

    add_notify_arguments(notify)
    notify.set_defaults(run=cmd_notify)

    from firebreak.adapters.silence_command import add_ack_arguments, add_silence_arguments

    silence = sub.add_parser("silence", help="hold pages of matching incidents and cases (docs/response.md#silences)")
    add_silence_arguments(silence, duration_arg)
    silence.set_defaults(run=cmd_silence)
    ack = sub.add_parser("ack", help="acknowledge a case: reminders stop, PagerDuty gets acknowledge")
    add_ack_arguments(ack)
    ack.set_defaults(run=cmd_ack)

    otlp = sub.add_parser("otlp", help="receive OpenTelemetry GenAI spans (OTLP/HTTP) as inference events")
    from firebreak.adapters.otlp_command import add_arguments as add_otlp_arguments

    add_otlp_arguments(otlp)
    otlp.set_defaults(run=cmd_otlp)
    return parser


def configure_logging(args: argparse.Namespace) -> None:
    """Logging, once, for the whole process: the worker's own (level, text or JSON lines:
    engine/firebreak/adapters/live/logs.py); for every other command warnings on stderr (`notify -v`:
    each delivery attempt), and aiokafka's retries silenced — its failures are told once, by
    the command, in one line."""
    if args.command == "worker":
        from firebreak.adapters.live.logs import configure

        configure(args.log_level, args.log_format)
        return
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except EngineError as error:  # the engine failed, not the input: one line, no traceback
        print(f"firebreak {args.command}: engine error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
