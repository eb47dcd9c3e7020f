"""OTLP in: an OTLP/HTTP receiver (`POST /v1/traces`, protobuf or JSON) that turns OpenTelemetry
GenAI spans into Firebreak inference events (docs/integrations.md#otlp-in).

A span is a GenAI span when it carries ``gen_ai.system``, ``gen_ai.provider.name`` or
``gen_ai.operation.name`` (the OpenTelemetry GenAI semantic conventions); other spans of the
same batch (HTTP, database...) are counted as ignored. A GenAI span becomes one event:

    event_id   "otlp-<trace id>-<span id>" (hex): a re-sent batch gives the same ids, and the
               receiver drops ids it wrote recently (a bounded memory), so it is not counted twice
    ts         the span's end (epoch ms); latency_ms = end - start
    model      gen_ai.request.model, else gen_ai.response.model (required): the model the app asked
               for, which failed calls carry too (instrumentations set the response model only on
               a response), so a rule `by model` sees a model's errors beside its successes
    model_version   gen_ai.response.model when it differs (the dated snapshot that answered:
               gpt-4o -> gpt-4o-2024-08-06), unless the mapping's model_version attributes give one
    tokens_in / tokens_out   gen_ai.usage.input_tokens / output_tokens (or the older prompt_tokens / completion_tokens)
    flags.error              the span's status is ERROR (or it has error.type)
    service    the resource's service.name
    tenant, user, feature, prompt_template, model_version, ...   from attributes, through the mapping file
    flags.<name> / scores.<name>   from attributes with the mapping's prefixes (firebreak.flag.*, firebreak.score.*)
    gen_ai_system, gen_ai_operation, finish_reasons   kept as they are (rules can read them)

A GenAI span that cannot be an event (no model, no times, an end before its start, a flag that
is not a boolean...) is counted, dead-lettered with the reason, and reported to the exporter
as rejected in the OTLP partial-success response. Malformed bodies get 400, other content
types 415, bodies over the size limit 413 — exporters do not retry those, so each such request
is counted and dead-lettered with the reason and its body (base64, the first 256 KiB). A sink
that cannot take events (the Kafka producer unavailable) gets 503 with Retry-After: the
exporter retries the whole batch, and the ids make that safe.
"""

from __future__ import annotations

import base64
import gzip
import logging
import tomllib
import zlib
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from firebreak.core import format_ts

log = logging.getLogger("firebreak.otlp")

PROTOBUF, JSON = "application/x-protobuf", "application/json"
STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR
RETRY_AFTER_S = 5
MAX_DEAD_BODY_BYTES = 256 * 1024  # of a refused request's body, in its dead letter
GENAI_MARKERS = ("gen_ai.system", "gen_ai.provider.name", "gen_ai.operation.name")

DEFAULT_FIELDS: dict[str, list[str]] = {
    "tenant": ["tenant.id", "firebreak.tenant", "enduser.tenant"],
    "user": ["enduser.id", "user.id", "firebreak.user"],
    "feature": ["firebreak.feature", "feature.name", "feature"],
    "prompt_template": ["firebreak.prompt_template", "gen_ai.prompt.template", "prompt_template"],
    "model_version": ["firebreak.model_version", "gen_ai.response.model_version"],
    "service": ["service.name"],
    "cost_usd": ["firebreak.cost_usd", "gen_ai.usage.cost"],
}


class MappingError(ValueError):
    """A bad mapping file: one line."""


@dataclass(frozen=True)
class OtlpMapping:
    """Which attributes (span first, then resource) give each event field, and the defaults.

    ``fields``: event field -> attribute keys, the first present wins; ``defaults``: field ->
    value when no attribute gives it; ``flag_prefix`` / ``score_prefix``: attributes
    ``<prefix><name>`` become ``flags.<name>`` (booleans) / ``scores.<name>`` (numbers)."""

    fields: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_FIELDS.items()})
    defaults: dict[str, Any] = field(default_factory=dict)
    flag_prefix: str = "firebreak.flag."
    score_prefix: str = "firebreak.score."


def load_mapping(path: str | None) -> OtlpMapping:
    """The mapping file (TOML); the defaults without one.

    [fields]                       # added to / replacing the defaults' attribute keys
    tenant = ["app.tenant"]
    [defaults]
    tenant = "unknown"
    feature = "chat"
    flag_prefix = "guard."         # optional, top level
    """
    if path is None:
        return OtlpMapping()
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise MappingError(f"{path}: cannot be read ({error.strerror or error})") from None
    except tomllib.TOMLDecodeError as error:
        raise MappingError(f"{path}: {error}") from None
    unknown = set(data) - {"fields", "defaults", "flag_prefix", "score_prefix"}
    if unknown:
        raise MappingError(
            f"{path}: unknown setting {sorted(unknown)[0]!r} (known: fields, defaults, flag_prefix, score_prefix)"
        )
    fields = {k: list(v) for k, v in DEFAULT_FIELDS.items()}
    for name, keys in (data.get("fields") or {}).items():
        keys = [keys] if isinstance(keys, str) else keys
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise MappingError(f"{path}: fields.{name} is an attribute key or a list of them")
        fields[name] = keys
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise MappingError(f"{path}: defaults is a table")
    for key in ("flag_prefix", "score_prefix"):
        if key in defaults:  # TOML puts a key written under [defaults] into that table
            raise MappingError(
                f"{path}: {key} is a top-level setting, not a default: write it before [fields] and [defaults]"
            )
    mapping = OtlpMapping(fields, dict(defaults))
    for key in ("flag_prefix", "score_prefix"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise MappingError(f"{path}: {key} is a non-empty string")
            mapping = OtlpMapping(
                mapping.fields,
                mapping.defaults,
                **{"flag_prefix": mapping.flag_prefix, "score_prefix": mapping.score_prefix, key: data[key]},
            )
    return mapping


# ---- decoding: both encodings to one shape -----------------------------------------------------


@dataclass
class Span:
    trace_id: str  # hex
    span_id: str  # hex
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    status_message: str
    raw: Any  # for dead letters: the span as JSON-able data


class BadRequest(ValueError):
    """The body is not an OTLP trace export request (400)."""


def decode_protobuf(body: bytes) -> list[Span]:
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        request = ExportTraceServiceRequest.FromString(body)
    except DecodeError as error:
        raise BadRequest(f"not an ExportTraceServiceRequest: {error}") from None
    out = []
    for rs in request.resource_spans:
        resource = {a.key: _pb_value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    Span(
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.name,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        {a.key: _pb_value(a.value) for a in s.attributes},
                        resource,
                        s.status.code,
                        s.status.message,
                        lambda s=s: MessageToDict(s),
                    )
                )
    return out


def _pb_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def decode_json(body: bytes) -> list[Span]:
    """OTLP/JSON: lowerCamelCase keys, trace and span ids as hex strings, 64-bit integers as
    strings or numbers, enums as integers."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise BadRequest("not an ExportTraceServiceRequest: the body is not a JSON object")
    out = []
    try:
        for rs in data.get("resourceSpans") or []:
            resource = _json_attributes((rs.get("resource") or {}).get("attributes"))
            for ss in rs.get("scopeSpans") or []:
                for s in ss.get("spans") or []:
                    status = s.get("status") or {}
                    out.append(
                        Span(
                            str(s.get("traceId", "")).lower(),
                            str(s.get("spanId", "")).lower(),
                            str(s.get("name", "")),
                            int(s.get("startTimeUnixNano") or 0),
                            int(s.get("endTimeUnixNano") or 0),
                            _json_attributes(s.get("attributes")),
                            resource,
                            _status_code(status.get("code")),
                            str(status.get("message", "")),
                            s,
                        )
                    )
    except (TypeError, ValueError, AttributeError) as error:
        raise BadRequest(f"not an ExportTraceServiceRequest: {error}") from None
    return out


def _status_code(code: Any) -> int:
    if isinstance(code, str):  # the enum's name is accepted too
        return {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(code, 0)
    return int(code or 0)


def _json_attributes(attributes: Any) -> dict[str, Any]:
    return {a["key"]: _json_value(a.get("value") or {}) for a in attributes or []}


def _json_value(value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_json_value(v) for v in (value["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in value:
        return _json_attributes((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


# ---- spans to events (pure) ----------------------------------------------------------------------


def is_genai(span: Span) -> bool:
    return any(key in span.attributes for key in GENAI_MARKERS)


class Unmappable(ValueError):
    """A GenAI span that cannot be an event; the message is the dead letter's reason."""


def span_event(span: Span, mapping: OtlpMapping) -> dict[str, Any]:
    """The inference event of a GenAI span; raises Unmappable with the reason."""
    a = span.attributes
    if len(span.trace_id) != 32 or len(span.span_id) != 16 or not _hex(span.trace_id + span.span_id):
        raise Unmappable("no valid trace id and span id (the event id is made of them)")
    if not span.end_ns or not span.start_ns:
        raise Unmappable("no start or end time")
    if span.end_ns < span.start_ns:
        raise Unmappable("the span ends before it starts")
    requested, answered = a.get("gen_ai.request.model"), a.get("gen_ai.response.model")
    model = requested or answered
    if not isinstance(model, str) or not model:
        raise Unmappable("no gen_ai.request.model or gen_ai.response.model")
    event: dict[str, Any] = {
        "event_id": f"otlp-{span.trace_id}-{span.span_id}",
        "type": "inference",
        "ts": format_ts(span.end_ns // 1_000_000),
        "model": model,
        "latency_ms": round((span.end_ns - span.start_ns) / 1e6, 3),
    }
    system = a.get("gen_ai.system") or a.get("gen_ai.provider.name")
    if system:
        event["gen_ai_system"] = str(system)
    if a.get("gen_ai.operation.name"):
        event["gen_ai_operation"] = str(a["gen_ai.operation.name"])
    if answered and answered != model:
        event["model_version"] = str(answered)  # the mapping's model_version attributes, below, win
    for out, keys in (
        ("tokens_in", ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")),
        ("tokens_out", ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")),
    ):
        for key in keys:
            if key in a:
                if not isinstance(a[key], int | float) or isinstance(a[key], bool) or a[key] < 0:
                    raise Unmappable(f"{key} is not a number of tokens: {a[key]!r}")
                event[out] = a[key]
                break
    reasons = a.get("gen_ai.response.finish_reasons")
    if reasons is not None:
        event["finish_reasons"] = [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)]
    for name, keys in mapping.fields.items():
        for key in keys:
            value = a.get(key, span.resource.get(key))
            if value is not None and value != "":
                event[name] = value
                break
    for name, value in mapping.defaults.items():
        event.setdefault(name, value)
    flags: dict[str, bool] = {}
    scores: dict[str, float] = {}
    for key, value in a.items():
        if key.startswith(mapping.flag_prefix):
            if not isinstance(value, bool):
                raise Unmappable(f"{key} is not a boolean: {value!r}")
            flags[key[len(mapping.flag_prefix) :]] = value
        elif key.startswith(mapping.score_prefix):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise Unmappable(f"{key} is not a number: {value!r}")
            scores[key[len(mapping.score_prefix) :]] = value
    if span.status_code == STATUS_ERROR or a.get("error.type"):
        flags["error"] = True
        if a.get("error.type"):
            event["error_type"] = str(a["error.type"])
    if flags:
        event["flags"] = flags
    if scores:
        event["scores"] = scores
    return event


def _hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return set(text) != {"0"}  # an all-zero id is invalid in OTLP


# ---- sinks ------------------------------------------------------------------------------------


class SinkUnavailable(RuntimeError):
    """The sink cannot take events now (503 + Retry-After)."""


class Sink(Protocol):
    async def write(self, events: list[dict[str, Any]]) -> None: ...
    async def dead_letter(self, letters: list[dict[str, Any]]) -> None: ...


class JsonLinesSink:
    """Events (and dead letters) appended as JSON lines to files, flushed per request."""

    def __init__(self, path: str, dead_letter_path: str | None = None) -> None:
        self.file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self.dead = open(dead_letter_path, "ab") if dead_letter_path else None  # noqa: SIM115

    async def write(self, events: list[dict[str, Any]]) -> None:
        try:
            self.file.write(b"".join(orjson.dumps(e) + b"\n" for e in events))
            self.file.flush()
        except OSError as error:
            raise SinkUnavailable(f"cannot write events: {error.strerror or error}") from error

    async def dead_letter(self, letters: list[dict[str, Any]]) -> None:
        if self.dead is not None:
            self.dead.write(b"".join(orjson.dumps(d) + b"\n" for d in letters))
            self.dead.flush()

    async def close(self) -> None:
        self.file.close()
        if self.dead is not None:
            self.dead.close()


class KafkaSink:
    """Events to the input topic with the SDK's publisher (idempotent producer, acks=all, key =
    tenant); dead letters as JSON to a dead-letter topic, if one is given. Each request waits
    until its events are acknowledged: only then does the exporter hear success."""

    def __init__(self, publisher: Any, dead_letter_topic: str | None = None) -> None:
        self.publisher = publisher
        self.dead_letter_topic = dead_letter_topic

    async def write(self, events: list[dict[str, Any]]) -> None:
        from firebreak.sdk.publisher import InvalidEvent, PublishError

        try:
            if not self.publisher.started:
                await self.publisher.start()
            for event in events:
                try:
                    await self.publisher.publish(event)
                except InvalidEvent as error:  # span_event makes valid events; a mapping default may not be
                    log.warning("event %s not published: %s", event.get("event_id"), error)
            await self.publisher.flush()
        except (PublishError, OSError, TimeoutError) as error:
            raise SinkUnavailable(str(error)) from error

    async def dead_letter(self, letters: list[dict[str, Any]]) -> None:
        """Each letter to the dead-letter topic, acknowledged before the request is answered (a
        refused body can come before any event has started the publisher)."""
        if not (self.dead_letter_topic and letters):
            return
        from aiokafka.errors import KafkaError

        from firebreak.sdk.publisher import PublishError

        try:
            if not self.publisher.started:
                await self.publisher.start()
            producer = self.publisher._require()  # noqa: SLF001 - the same connection, another topic
            sent = [await producer.send(self.dead_letter_topic, orjson.dumps(letter)) for letter in letters]
            for delivery in sent:
                await delivery
        except (PublishError, KafkaError, OSError, TimeoutError) as error:
            raise SinkUnavailable(str(error)) from error

    async def close(self) -> None:
        await self.publisher.stop()


# ---- the receiver -----------------------------------------------------------------------------


@dataclass
class OtlpStats:
    requests: Counter[int] = field(default_factory=Counter)  # by HTTP status
    spans: int = 0
    events: int = 0
    ignored: int = 0  # not GenAI spans
    duplicates: int = 0  # event ids written recently (a re-sent batch)
    unmappable: Counter[str] = field(default_factory=Counter)  # by reason
    refused: Counter[int] = field(default_factory=Counter)  # requests dead-lettered whole, by HTTP status

    def summary(self) -> str:
        statuses = ", ".join(f"{n}× {s}" for s, n in sorted(self.requests.items())) or "none"
        return (
            f"otlp: {self.spans} spans, {self.events} events, {self.ignored} not GenAI, "
            f"{self.duplicates} duplicates, {sum(self.unmappable.values())} unmappable, "
            f"{sum(self.refused.values())} requests refused and dead-lettered; requests: {statuses}"
        )


class Receiver:
    """The OTLP/HTTP trace receiver as an aiohttp application (`app()`)."""

    def __init__(
        self,
        sink: Sink,
        mapping: OtlpMapping | None = None,
        remember: int = 100_000,
        max_body_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.sink, self.mapping = sink, mapping or OtlpMapping()
        self.stats = OtlpStats()
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.remember, self.max_body_bytes = remember, max_body_bytes

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/v1/traces", self.handle)
        return app

    async def handle(self, request: Any) -> Any:
        status, response = await self._handle(request)
        self.stats.requests[status] += 1
        return response

    async def _handle(self, request: Any) -> tuple[int, Any]:
        from aiohttp import web

        content_type = request.content_type
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            message = f"the body is over the receiver's limit of {self.max_body_bytes} bytes"
            return await self._refuse(413, content_type, message, b"")
        except (OSError, ValueError) as error:  # a broken chunked or compressed stream
            return await self._refuse(400, content_type, f"the body cannot be read: {error}", b"")
        if content_type not in (PROTOBUF, JSON):
            message = f"unsupported content type {content_type!r}: use {PROTOBUF} or {JSON}"
            return await self._refuse(415, content_type, message, body)
        encoding = request.headers.get("Content-Encoding", "").lower()
        if encoding not in ("", "identity", "gzip", "deflate"):
            return await self._refuse(415, content_type, f"unsupported content encoding {encoding!r}", body)
        try:
            # aiohttp has already decoded gzip and deflate bodies (auto_decompress); a body still
            # compressed (a server without it) is decoded here
            if encoding == "gzip" and body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            spans = decode_protobuf(body) if content_type == PROTOBUF else decode_json(body)
        except (BadRequest, OSError, EOFError, zlib.error) as error:
            return await self._refuse(400, content_type, str(error), body)
        self.stats.spans += len(spans)
        events, letters, fresh = [], [], []
        for span in spans:
            if not is_genai(span):
                self.stats.ignored += 1
                continue
            try:
                event = span_event(span, self.mapping)
            except Unmappable as error:
                reason = str(error)
                self.stats.unmappable[reason.split(":")[0]] += 1
                raw = span.raw() if callable(span.raw) else span.raw
                letters.append(
                    {
                        "source": "otlp",
                        "trace_id": span.trace_id,
                        "span_id": span.span_id,
                        "name": span.name,
                        "reason": reason,
                        "raw": raw,
                    }
                )
                continue
            if event["event_id"] in self.seen or event["event_id"] in fresh:
                self.stats.duplicates += 1
                continue
            fresh.append(event["event_id"])
            events.append(event)
        try:
            if events:
                await self.sink.write(events)
        except SinkUnavailable as error:
            log.warning("events not accepted (%s): the exporter is asked to retry in %d s", error, RETRY_AFTER_S)
            return 503, self._error(
                503, content_type, f"the event sink is unavailable: {error}", {"Retry-After": str(RETRY_AFTER_S)}
            )
        for event_id in fresh:
            self.seen[event_id] = None
        while len(self.seen) > self.remember:
            self.seen.popitem(last=False)
        self.stats.events += len(events)
        if letters:
            try:
                await self.sink.dead_letter(letters)
            except SinkUnavailable as error:  # the events are written: the exporter must not re-send them
                log.error("%d dead letters not written: %s", len(letters), error)
        rejected = len(letters)
        message = f"{rejected} GenAI spans could not be mapped to events: {letters[0]['reason']}" if letters else ""
        return 200, self._success(content_type, rejected, message)

    async def _refuse(self, status: int, content_type: str, message: str, body: bytes) -> tuple[int, Any]:
        """A request the exporter will not send again (4xx): counted, and dead-lettered with the
        reason and its body, so what it carried can still be looked at and re-sent."""
        self.stats.refused[status] += 1
        letter: dict[str, Any] = {
            "source": "otlp",
            "status": status,
            "reason": message,
            "content_type": content_type,
            "body_bytes": len(body),
            "body_base64": base64.b64encode(body[:MAX_DEAD_BODY_BYTES]).decode(),
        }
        if len(body) > MAX_DEAD_BODY_BYTES:
            letter["body_truncated"] = True
        try:
            await self.sink.dead_letter([letter])
        except SinkUnavailable as error:
            log.error("a refused request (%d: %s) not dead-lettered: %s", status, message, error)
        answer_type = content_type if content_type in (PROTOBUF, JSON) else JSON
        return status, self._error(status, answer_type, message)

    def _success(self, content_type: str, rejected: int, message: str) -> Any:
        from aiohttp import web

        if content_type == PROTOBUF:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

            response = ExportTraceServiceResponse()
            if rejected:
                response.partial_success.rejected_spans = rejected
                response.partial_success.error_message = message
            return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)
        body: dict[str, Any] = {}
        if rejected:
            body["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
        return web.Response(body=orjson.dumps(body), content_type=JSON)

    @staticmethod
    def _error(status: int, content_type: str, message: str, headers: Mapping[str, str] | None = None) -> Any:
        """A google.rpc.Status body (code: INVALID_ARGUMENT / UNAVAILABLE), in the request's encoding."""
        from aiohttp import web

        code = 14 if status == 503 else 3
        if content_type == PROTOBUF:
            text = message.encode()
            body = b"\x08" + bytes([code]) + b"\x12" + _varint(len(text)) + text
        else:
            body = orjson.dumps({"code": code, "message": message})
        return web.Response(status=status, body=body, content_type=content_type, headers=headers)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def serve(receiver: Receiver, host: str, port: int) -> tuple[Any, int]:
    """Start the receiver's HTTP server; (runner, the port it listens on)."""
    from aiohttp import web

    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # noqa: SLF001
