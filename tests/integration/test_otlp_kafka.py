"""OTLP in through a real broker: the OpenTelemetry SDK's OTLP/HTTP exporter sends GenAI spans to
`firebreak otlp`'s receiver, which publishes them to the input topic; a re-sent batch is not
published twice; the events replay from the topic into the expected incident."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from firebreak.adapters.otlp import KafkaSink, Receiver, serve
from firebreak.core import parse_ts, run_events
from firebreak.core.events import validate_event
from firebreak.dsl import load_rules
from firebreak.sdk.publisher import AsyncPublisher
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.kafka
T0 = 1_780_000_000_000_000_000


async def read_all(bootstrap: str, topic: str, n: int, timeout_s: float = 20) -> list[dict]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[dict] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            polled = await consumer.getmany(timeout_ms=500)
            out += [orjson.loads(m.value) for ms in polled.values() for m in ms]
            if len(out) >= n:
                await asyncio.sleep(1.0)  # anything past n would be a duplicate: wait for it
                polled = await consumer.getmany(timeout_ms=500)
                out += [orjson.loads(m.value) for ms in polled.values() for m in ms]
                break
    finally:
        await consumer.stop()
    return out


async def test_sdk_spans_through_the_receiver_to_the_input_topic(kafka_bootstrap, unique_topic, create_topic):
    topic = await create_topic(unique_topic("otlp-events"))
    receiver = Receiver(KafkaSink(AsyncPublisher(kafka_bootstrap, topic)))
    runner, port = await serve(receiver, "127.0.0.1", 0)
    try:
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("bot")
        for i in range(6):
            span = tracer.start_span(
                "chat",
                start_time=T0 + i * 10**10,
                attributes={
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "tenant.id": "acme",
                    "firebreak.flag.pii": i >= 3,
                },
            )
            span.end(end_time=T0 + i * 10**10 + 300_000_000)
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=20)
        spans = memory.get_finished_spans()
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, exporter.export, spans) == SpanExportResult.SUCCESS
        assert await loop.run_in_executor(None, exporter.export, spans) == SpanExportResult.SUCCESS  # a re-send
    finally:
        await runner.cleanup()
        await receiver.sink.close()
    events = await read_all(kafka_bootstrap, topic, 6)
    assert len(events) == 6 == len({e["event_id"] for e in events})
    rules, problems = load_rules({"r.rules": "rule leak:\n  count(pii) >= 3 over 5m by tenant -> sev2\n"})
    assert not problems
    records = run_events(rules, [validate_event(e) for e in sorted(events, key=lambda e: parse_ts(e["ts"]))])
    opened = [(r["rule"], r["group"]) for r in records if r["type"] == "incident.opened"]
    assert opened == [("leak", {"tenant": "acme"})]
