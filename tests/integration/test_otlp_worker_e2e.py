"""OTLP in, end to end on the real broker: an app instrumented with the REAL OpenTelemetry Python
SDK (BatchSpanProcessor + its OTLP/HTTP exporter) emits GenAI spans — tenants, users, models, an
HTTP server span around each call, a hallucination burst on one model and an error burst on
another — to two `firebreak otlp` processes: one publishes to Kafka, where a real `firebreak
worker` detects; the other writes JSON lines. The worker's incidents equal a `firebreak replay`
of those JSON lines, byte for byte; the topic holds exactly the events of the file. Malformed
bodies get their status, are counted and dead-lettered; a re-sent batch is not published twice;
unmappable spans are dead-lettered with the reason and reported as partial success."""

from __future__ import annotations

import base64
import random
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
from firebreak.core import parse_ts
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from test_worker_live import PARTITIONS, clocks
from worker_harness import FIREBREAK, Topics, Worker, free_port, publish_raw, read_all, run, wait_for

pytestmark = pytest.mark.kafka

RULES = """
rule hallucination_spike:
  rate(hallucination) > 3x baseline over 10m by model -> sev2 contain fallback(model="small-safe")
rule model_errors:
  rate(error) > 0.3 over 5m by model min 20 events -> sev2
"""
MAPPING = """
flag_prefix = "guard."
[fields]
tenant = ["app.tenant"]
feature = ["app.feature"]
[defaults]
feature = "chat"
"""
MIN_NS = 60 * 10**9
T0_NS = parse_ts("2026-03-01T00:00:00Z") * 10**6
MODELS = {"gpt-4o": "openai", "claude-3-5-sonnet": "anthropic", "llama-3-70b": "meta"}


def instrumented_app(provider: TracerProvider, minutes: int = 95, per_minute: int = 90, seed: int = 5) -> int:
    """What an instrumented chat service emits: per call an HTTP server span and, inside it, a
    GenAI client span (OpenTelemetry GenAI semantic conventions); its guard's verdicts as
    attributes. gpt-4o hallucinates at 2% and at 35% from 70 to 85 minutes; llama fails 3% of
    its calls and 60% from 40 to 46 minutes. A call lasts less than the time between two calls,
    so the spans end — and the events come — in time order. Returns the number of GenAI spans."""
    rng = random.Random(seed)
    tracer = provider.get_tracer("chat-service", "1.4.0")
    step = MIN_NS // per_minute
    n = 0
    for i in range(minutes * per_minute):
        start = T0_NS + i * step
        minute = i // per_minute
        model = rng.choice(list(MODELS))
        burst = model == "gpt-4o" and 70 <= minute < 85
        failing = model == "llama-3-70b" and 40 <= minute < 46
        error = rng.random() < (0.6 if failing else 0.03)
        server = tracer.start_span(
            "POST /v1/chat",
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={"http.request.method": "POST", "http.route": "/v1/chat"},
        )
        duration = rng.randint(200, 600) * 10**6
        attributes = {
            "gen_ai.system": MODELS[model],
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": rng.randint(50, 900),
            "gen_ai.usage.output_tokens": rng.randint(10, 400),
            "gen_ai.response.finish_reasons": ["stop"] if not error else ["error"],
            "app.tenant": rng.choice(["acme", "globex", "initech", "umbrella"]),
            "enduser.id": f"u-{rng.randrange(300)}",
            "app.feature": rng.choice(["support", "search"]),
            "guard.hallucination": rng.random() < (0.35 if burst else 0.02),
        }
        if not error:
            attributes["gen_ai.response.model"] = f"{model}-2026-02"  # the dated snapshot that answered
        else:
            attributes["error.type"] = "RateLimitError"
        call = tracer.start_span(
            f"chat {model}",
            context=trace.set_span_in_context(server),
            kind=SpanKind.CLIENT,
            start_time=start + 10**6,
            attributes=attributes,
        )
        if error:
            call.set_status(Status(StatusCode.ERROR, "429 from the provider"))
        call.end(end_time=start + 10**6 + duration)
        server.end(end_time=start + 2 * 10**6 + duration)
        n += 1
    return n


class OtlpProcess:
    """`firebreak otlp` as a real process on a free port; its summary line when stopped."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        self.stderr_path = log_dir / f"otlp-{self.port}.log"
        stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [*FIREBREAK, "otlp", "--listen", f"127.0.0.1:{self.port}", *args], stdout=subprocess.DEVNULL, stderr=stderr
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, self.stderr_path.read_text()
                assert time.monotonic() < deadline, f"firebreak otlp did not start; {self.stderr_path}"
                time.sleep(0.2)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        assert self.process.returncode == 0, self.stderr_path.read_text()
        return self.stderr_path.read_text()


def summary_counts(stderr: str) -> dict[str, int]:
    line = next(line for line in stderr.splitlines() if line.startswith("otlp: "))
    counts = {name: int(n) for n, name in re.findall(r"(\d+) (spans|events|not GenAI|duplicates|unmappable)", line)}
    counts["refused"] = int(re.search(r"(\d+) requests refused", line).group(1))
    counts |= {f"http {status}": int(n) for n, status in re.findall(r"(\d+)× (\d{3})", line)}
    return counts


def post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - 127.0.0.1
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def before(records: list[dict], cutoff: int) -> list[bytes]:
    return sorted(orjson.dumps(r) for r in records if parse_ts(r["ts"]) < cutoff)


def test_sdk_exporter_to_receiver_to_worker_equals_a_replay_of_the_mapped_events(
    kafka_bootstrap, unique_topic, create_topic, tmp_path
):
    topics = Topics(unique_topic("otlp-e2e"))
    otlp_dead = f"{topics.prefix}.otlp-deadletter"
    run(create_topic(topics.events, partitions=PARTITIONS))
    run(create_topic(otlp_dead))
    rules = tmp_path / "live.rules"
    rules.write_text(RULES)
    mapping = tmp_path / "otlp.toml"
    mapping.write_text(MAPPING)
    worker = Worker(topics, kafka_bootstrap, rules, tmp_path).start()
    to_kafka = OtlpProcess(
        tmp_path,
        "--mapping",
        str(mapping),
        "--topic",
        topics.events,
        "--bootstrap",
        kafka_bootstrap,
        "--dead-letter",
        otlp_dead,
    )
    jsonl, dead_jsonl = tmp_path / "mapped.jsonl", tmp_path / "otlp-dead.jsonl"
    to_file = OtlpProcess(tmp_path, "--mapping", str(mapping), "--out", str(jsonl), "--dead-letter", str(dead_jsonl))
    try:
        worker.wait_ready()
        # 1. bodies no exporter should send: the right status, nothing taken, each one kept
        refused = [
            (b"\x0a\xff\xff not protobuf", "application/x-protobuf", 400),
            (b'{"resourceSpans": [{"scopeSpans": 7}]}', "application/json", 400),
            (b"traces=1", "text/plain", 415),
        ]
        for body, content_type, status in refused:
            assert post(to_kafka.url, body, content_type)[0] == status
        # 2. the instrumented app: the real SDK, batching, exporting to both receivers
        provider = TracerProvider(
            resource=Resource.create({"service.name": "chat-service", "deployment.environment": "prod"})
        )
        everything = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(everything))
        for receiver in (to_kafka, to_file):
            provider.add_span_processor(
                BatchSpanProcessor(
                    OTLPSpanExporter(endpoint=receiver.url, timeout=30),
                    max_queue_size=20_000,
                    max_export_batch_size=400,
                    schedule_delay_millis=200,
                )
            )
        genai = instrumented_app(provider)
        assert provider.force_flush(120_000), "the SDK did not export every span"
        provider.shutdown()
        # 3. an exporter's retry of a batch already taken, and spans that cannot be events
        resent = [s for s in everything.get_finished_spans() if s.kind == SpanKind.CLIENT][:100]
        memory = InMemorySpanExporter()
        other = TracerProvider(resource=Resource.create({"service.name": "chat-service"}))
        other.add_span_processor(SimpleSpanProcessor(memory))
        tracer = other.get_tracer("chat-service")
        for k in range(3):  # a GenAI span without a model: dead-lettered, reported as rejected
            span = tracer.start_span(
                "embeddings",
                start_time=T0_NS + k * 10**9,
                attributes={"gen_ai.system": "openai", "gen_ai.operation.name": "embeddings", "app.tenant": "acme"},
            )
            span.end(end_time=T0_NS + k * 10**9 + 10**8)
        unmappable = memory.get_finished_spans()
        for receiver in (to_kafka, to_file):
            exporter = OTLPSpanExporter(endpoint=receiver.url, timeout=30)
            assert exporter.export(resent) == SpanExportResult.SUCCESS
            assert exporter.export(unmappable) == SpanExportResult.SUCCESS  # partial success is not an error
            exporter.shutdown()
    finally:
        kafka_summary = summary_counts(to_kafka.stop())
        file_summary = summary_counts(to_file.stop())
    try:
        mapped = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
        assert len(mapped) == genai == len({e["event_id"] for e in mapped})
        on_topic = run(read_all(kafka_bootstrap, topics.events))
        assert sorted(map(orjson.dumps, on_topic)) == sorted(map(orjson.dumps, mapped))  # each once, as mapped
        assert {e["tenant"] for e in mapped} == {"acme", "globex", "initech", "umbrella"}
        assert sum(e.get("flags", {}).get("error", False) for e in mapped) > 100
        # a failed call has no response model: the model is the one asked for, on every event, so
        # `by model` counts a model's errors with its successes; the snapshot is model_version
        assert {e["model"] for e in mapped} == set(MODELS)
        assert all(
            e.get("model_version") == (None if e.get("flags", {}).get("error") else f"{e['model']}-2026-02")
            for e in mapped
        )
        for summary in (kafka_summary, file_summary):
            assert summary["spans"] == 2 * genai + len(resent) + 3 and summary["not GenAI"] == genai
            assert summary["events"] == genai and summary["duplicates"] == len(resent) == 100
            assert summary["unmappable"] == 3
        assert kafka_summary["refused"] == 3 and kafka_summary["http 400"] == 2 and kafka_summary["http 415"] == 1
        dead = run(read_all(kafka_bootstrap, otlp_dead))
        assert Counter((d.get("status"), d.get("name")) for d in dead) == {
            (400, None): 2,
            (415, None): 1,
            (None, "embeddings"): 3,
        }
        assert sorted(base64.b64decode(d["body_base64"]) for d in dead if "status" in d) == sorted(
            body for body, _, _ in refused
        )
        assert all(d["reason"] == "no gen_ai.request.model or gen_ai.response.model" for d in dead if "name" in d)
        # 4. time moves on every partition (as in the other live = replay tests); the worker
        # detects; `firebreak replay` of the receiver's JSON lines + the same clock events
        clock = clocks(mapped)
        clock_file = tmp_path / "clock.jsonl"
        clock_file.write_bytes(b"".join(orjson.dumps(e) + b"\n" for _, e in clock))
        run(publish_raw(kafka_bootstrap, topics.events, [(p, orjson.dumps(e)) for p, e in clock]))
        replayed = subprocess.run(
            [
                *FIREBREAK,
                "replay",
                str(jsonl),
                str(clock_file),
                "--rules",
                str(rules),
                "--lateness",
                worker.lateness,
                "--out",
                str(tmp_path / "replay.jsonl"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert replayed.returncode == 0, replayed.stderr
        expected = [orjson.loads(line) for line in (tmp_path / "replay.jsonl").read_bytes().splitlines()]
        opened = {(r["rule"], tuple(r["group"].values())) for r in expected if r["type"] == "incident.opened"}
        assert opened == {("hallucination_spike", ("gpt-4o",)), ("model_errors", ("llama-3-70b",))}
        want = {(r["type"], r.get("incident_id"), r["ts"]) for r in expected}

        def arrived() -> bool:
            got = run(read_all(kafka_bootstrap, topics.incidents, settle_s=0.5))
            got += run(read_all(kafka_bootstrap, topics.containment, settle_s=0.5))
            return want <= {(r["type"], r.get("incident_id"), r["ts"]) for r in got}

        wait_for(arrived, 180, "the replay's records on the output topics", [worker])
        time.sleep(2)  # anything extra would show up now
        live = run(read_all(kafka_bootstrap, topics.incidents)) + run(read_all(kafka_bootstrap, topics.containment))
        cutoff = max(parse_ts(e["ts"]) for e in mapped) + 2 * 3_600_000
        assert before(live, cutoff) == before(expected, cutoff)
        metrics = worker.metrics()
        assert metrics["firebreak_events_total"] == len(mapped) + len(clock)
        assert metrics["firebreak_dead_lettered_total"] == 0 and metrics["firebreak_late_events_total"] == 0
        # its checkpoints (every 3 s here) went through: committed, none retried, none overdue
        assert metrics['firebreak_checkpoints_total{kind="full"}'] > 0
        assert metrics['firebreak_checkpoints_total{kind="head"}'] > 0
        assert sum(v for k, v in metrics.items() if k.startswith("firebreak_checkpoint_failures_total")) == 0
        assert all(v < 60 for k, v in metrics.items() if k.startswith("firebreak_checkpoint_pending_seconds"))
        assert metrics["firebreak_checkpoint_interval_seconds"] == 3
    finally:
        worker.stop()
