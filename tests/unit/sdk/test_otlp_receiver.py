"""OTLP in: the REAL OpenTelemetry Python SDK and its OTLP/HTTP exporter send GenAI spans to the
receiver; its JSON lines replay through rules into the expected incidents. Also: OTLP/JSON,
a re-sent batch, unmappable spans (dead letters, partial success), 400 / 415 / 503 + Retry-After."""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import urllib.error
import urllib.request

import orjson
import pytest
from firebreak.adapters.otlp import JsonLinesSink, KafkaSink, Receiver, load_mapping, serve
from firebreak.core import parse_ts, run_events
from firebreak.core.events import validate_event
from firebreak.dsl import load_rules
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

T0 = 1_780_000_000_000_000_000  # ns: 2026-05-28T...
MINUTE = 60 * 1_000_000_000

RULES = """
rule hallucinations:
  count(hallucination) >= 3 over 5m by model -> sev2
rule failing_calls:
  count(error) >= 2 over 5m by tenant -> sev3
"""

MAPPING = """
[fields]
tenant = ["app.tenant"]
feature = ["app.feature"]
[defaults]
feature = "chat"
"""


class Server:
    """The receiver's HTTP server on its own event loop in a thread (the SDK's exporter is synchronous)."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner, port = asyncio.run_coroutine_threadsafe(serve(receiver, "127.0.0.1", 0), self.loop).result(10)
        self.url = f"http://127.0.0.1:{port}/v1/traces"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        asyncio.run_coroutine_threadsafe(self.receiver.sink.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server(tmp_path):
    mapping_file = tmp_path / "otlp.toml"
    mapping_file.write_text(MAPPING)
    sink = JsonLinesSink(str(tmp_path / "events.jsonl"), str(tmp_path / "dead.jsonl"))
    s = Server(Receiver(sink, load_mapping(str(mapping_file))))
    yield s
    s.close()


def genai_spans(provider: TracerProvider) -> None:
    """Chat calls of a support bot: gpt-4o hallucinates 4 times in 3 minutes, claude never;
    acme's calls fail twice; one HTTP span that is not GenAI."""
    tracer = provider.get_tracer("support-bot")
    for i in range(12):
        model = "gpt-4o" if i % 2 == 0 else "claude-3-5"
        start = T0 + i * 15_000_000_000
        span = tracer.start_span(
            f"chat {model}",
            start_time=start,
            attributes={
                "gen_ai.system": "openai" if model == "gpt-4o" else "anthropic",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "gen_ai.response.model": model + "-2026-05" if model == "gpt-4o" else model,
                "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 20 + i,
                "gen_ai.response.finish_reasons": ["stop"],
                "app.tenant": "acme" if i < 6 else "globex",
                "enduser.id": f"u-{i}",
                "firebreak.flag.hallucination": model == "gpt-4o" and i < 8,
                "firebreak.score.quality": 0.5,
            },
        )
        if i in (1, 3):
            span.set_status(Status(StatusCode.ERROR, "provider timeout"))
        span.end(end_time=start + (250 + i) * 1_000_000)
    other = tracer.start_span("GET /health", start_time=T0, attributes={"http.request.method": "GET"})
    other.end(end_time=T0 + 1_000_000)


def provider_exporting_to(url: str) -> tuple[TracerProvider, OTLPSpanExporter]:
    exporter = OTLPSpanExporter(endpoint=url, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def read_lines(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_sdk_spans_become_events_that_replay_into_the_expected_incidents(server, tmp_path):
    provider, _ = provider_exporting_to(server.url)
    genai_spans(provider)
    provider.shutdown()
    events = read_lines(tmp_path / "events.jsonl")
    assert len(events) == 12 and server.receiver.stats.ignored == 1  # the HTTP span is no inference
    first = min(events, key=lambda e: parse_ts(e["ts"]))
    # the model asked for (failed calls have no response model); the snapshot that answered
    assert first["model"] == "gpt-4o" and first["model_version"] == "gpt-4o-2026-05"
    assert "model_version" not in next(e for e in events if e["model"] == "claude-3-5")  # the same model answered
    assert first["event_id"].startswith("otlp-") and len(first["event_id"]) == 5 + 32 + 1 + 16
    assert first["latency_ms"] == 250 and parse_ts(first["ts"]) == (T0 + 250_000_000) // 1_000_000
    assert (first["tokens_in"], first["tokens_out"]) == (100, 20)
    assert first["tenant"] == "acme" and first["user"] == "u-0" and first["feature"] == "chat"  # default
    assert first["service"] == "support-bot" and first["gen_ai_system"] == "openai"
    assert first["gen_ai_operation"] == "chat" and first["finish_reasons"] == ["stop"]
    assert first["flags"] == {"hallucination": True} and first["scores"] == {"quality": 0.5}
    assert sum(1 for e in events if e.get("flags", {}).get("error")) == 2

    rules, problems = load_rules({"otlp.rules": RULES})
    assert not problems
    records = run_events(rules, [validate_event(e) for e in sorted(events, key=lambda e: parse_ts(e["ts"]))])
    opened = {(r["rule"], tuple(r["group"].items())) for r in records if r["type"] == "incident.opened"}
    assert opened == {("hallucinations", (("model", "gpt-4o"),)), ("failing_calls", (("tenant", "acme"),))}


def test_a_resent_batch_is_not_counted_twice(server, tmp_path):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    genai_spans(provider)
    spans = memory.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=server.url, timeout=10)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans) == SpanExportResult.SUCCESS  # the exporter re-sends the batch
    events = read_lines(tmp_path / "events.jsonl")
    assert len(events) == 12 == len({e["event_id"] for e in events})
    assert server.receiver.stats.duplicates == 12


def post(url: str, body: bytes, content_type: str, encoding: str | None = None):
    headers = {"Content-Type": content_type} | ({"Content-Encoding": encoding} if encoding else {})
    request = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_unmappable_genai_spans_are_dead_lettered_and_reported_as_partial_success(server, tmp_path):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    good = tracer.start_span(
        "chat", start_time=T0, attributes={"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
    )
    good.end(end_time=T0 + MINUTE)
    no_model = tracer.start_span("chat", start_time=T0, attributes={"gen_ai.operation.name": "chat"})
    no_model.end(end_time=T0 + MINUTE)
    bad_flag = tracer.start_span(
        "chat",
        start_time=T0,
        attributes={"gen_ai.system": "openai", "gen_ai.request.model": "m", "firebreak.flag.pii": "yes"},
    )
    bad_flag.end(end_time=T0 + MINUTE)
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    status, headers, raw = post(server.url, gzip.compress(body), "application/x-protobuf", "gzip")
    assert status == 200 and headers["Content-Type"].startswith("application/x-protobuf")
    response = ExportTraceServiceResponse.FromString(raw)
    assert response.partial_success.rejected_spans == 2
    assert "could not be mapped" in response.partial_success.error_message
    assert len(read_lines(tmp_path / "events.jsonl")) == 1
    dead = read_lines(tmp_path / "dead.jsonl")
    assert sorted(d["reason"] for d in dead) == [
        "firebreak.flag.pii is not a boolean: 'yes'",
        "no gen_ai.request.model or gen_ai.response.model",
    ]
    assert all(d["source"] == "otlp" and d["raw"]["name"] == "chat" for d in dead)
    assert sum(server.receiver.stats.unmappable.values()) == 2


def test_otlp_json(server, tmp_path):
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "chat",
                                "kind": 3,
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": str(T0 + 1_500_000_000),
                                "attributes": [
                                    {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
                                    {
                                        "key": "gen_ai.response.finish_reasons",
                                        "value": {"arrayValue": {"values": [{"stringValue": "length"}]}},
                                    },
                                    {"key": "app.tenant", "value": {"stringValue": "acme"}},
                                ],
                                "status": {"code": 2},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    status, headers, raw = post(server.url, orjson.dumps(body), "application/json")
    assert status == 200 and orjson.loads(raw) == {}  # full success: no partialSuccess
    [event] = read_lines(tmp_path / "events.jsonl")
    assert event["event_id"] == f"otlp-{trace_id}-{span_id}"
    assert event["latency_ms"] == 1500 and event["tokens_in"] == 42 and event["finish_reasons"] == ["length"]
    assert event["flags"] == {"error": True} and event["tenant"] == "acme" and event["service"] == "bot"


def test_malformed_bodies_get_400_and_other_content_types_415(server, tmp_path):
    status, _, raw = post(server.url, b"\xff\x00 not protobuf", "application/x-protobuf")
    assert status == 400
    assert raw[:1] == b"\x08" and raw[1] == 3  # google.rpc.Status, code INVALID_ARGUMENT
    status, _, raw = post(server.url, b"{not json", "application/json")
    assert status == 400 and orjson.loads(raw)["code"] == 3
    status, _, raw = post(server.url, b"x", "text/plain")
    assert status == 415 and "unsupported content type" in orjson.loads(raw)["message"]
    assert not (tmp_path / "events.jsonl").read_bytes()
    # exporters do not re-send a 4xx: each such request is counted and kept, body and reason
    assert server.receiver.stats.refused == {400: 2, 415: 1}
    dead = read_lines(tmp_path / "dead.jsonl")
    assert [(d["status"], base64.b64decode(d["body_base64"])) for d in dead] == [
        (400, b"\xff\x00 not protobuf"),
        (400, b"{not json"),
        (415, b"x"),
    ]
    assert dead[0]["reason"].startswith("not an ExportTraceServiceRequest") and dead[1]["reason"].startswith("not JSON")
    assert all(d["source"] == "otlp" and d["body_bytes"] == len(base64.b64decode(d["body_base64"])) for d in dead)


def test_a_body_over_the_limit_gets_413_and_is_counted(tmp_path):
    sink = JsonLinesSink(str(tmp_path / "events.jsonl"), str(tmp_path / "dead.jsonl"))
    s = Server(Receiver(sink, max_body_bytes=1024))
    try:
        status, _, raw = post(s.url, b"\x0a" * 4096, "application/x-protobuf")
        assert status == 413 and raw[:2] == b"\x08\x03"
        assert s.receiver.stats.refused == {413: 1}
    finally:
        s.close()
    [letter] = read_lines(tmp_path / "dead.jsonl")
    assert letter["status"] == 413 and "over the receiver's limit of 1024 bytes" in letter["reason"]


def test_an_unavailable_producer_gets_503_with_retry_after(tmp_path):
    from firebreak.sdk.publisher import AsyncPublisher

    dead_broker = AsyncPublisher("127.0.0.1:1", "ai.inference.events", connect_timeout_s=1.0, timeout_s=1.0)
    s = Server(Receiver(KafkaSink(dead_broker)))
    try:
        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        span = provider.get_tracer("t").start_span(
            "chat", start_time=T0, attributes={"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
        )
        span.end(end_time=T0 + MINUTE)
        status, headers, raw = post(
            s.url, encode_spans(memory.get_finished_spans()).SerializeToString(), "application/x-protobuf"
        )
        assert status == 503 and headers["Retry-After"] == "5"
        assert raw[:2] == b"\x08\x0e"  # google.rpc.Status, code UNAVAILABLE
        assert s.receiver.stats.events == 0 and not s.receiver.seen  # nothing remembered: the retry is taken
    finally:
        s.close()


def test_the_firebreak_otlp_command(tmp_path):
    """`firebreak otlp --out`: the SDK exporter to the command's port; the summary on stop."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "events.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firebreak.cli",
            "otlp",
            "--listen",
            f"127.0.0.1:{port}",
            "--out",
            str(out),
            "--duration",
            "60",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "firebreak otlp did not start"
                time.sleep(0.2)
        provider, _ = provider_exporting_to(f"http://127.0.0.1:{port}/v1/traces")
        genai_spans(provider)
        provider.shutdown()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert len(read_lines(out)) == 12
    assert (
        "otlp: 13 spans, 12 events, 1 not GenAI, 0 duplicates, 0 unmappable, 0 requests refused and dead-lettered; "
        "requests: 13× 200"
    ) in stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('flag_prefix = "guard."\n[defaults]\ntenant = "unknown"\n', None),
        (
            '[defaults]\ntenant = "unknown"\nflag_prefix = "guard."\n',
            "flag_prefix is a top-level setting, not a default: write it before [fields] and [defaults]",
        ),
        ("[fields]\ntenant = 3\n", "fields.tenant is an attribute key or a list of them"),
        ('tenant = "x"\n', "unknown setting 'tenant' (known: fields, defaults, flag_prefix, score_prefix)"),
        ('score_prefix = ""\n', "score_prefix is a non-empty string"),
        ("[fields\n", "Expected ']'"),
    ],
)
def test_mapping_files_and_their_mistakes(tmp_path, text, message):
    from firebreak.adapters.otlp import MappingError

    path = tmp_path / "otlp.toml"
    path.write_text(text)
    if message is None:
        mapping = load_mapping(str(path))
        assert mapping.flag_prefix == "guard." and mapping.defaults == {"tenant": "unknown"}
        return
    with pytest.raises(MappingError) as caught:
        load_mapping(str(path))
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_the_command_refuses_a_bad_mapping_file_in_one_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "otlp.toml"
    path.write_text('[defaults]\nflag_prefix = "guard."\n')
    done = subprocess.run(
        [sys.executable, "-m", "firebreak.cli", "otlp", "--mapping", str(path), "--out", str(tmp_path / "e.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"firebreak otlp: {path}: flag_prefix is a top-level setting, not a "
        f"default: write it before [fields] and [defaults]"
    ]
