"""Before the worker joins its group: does the broker let it do what it must? (docs/kafka-security.md)

A worker without one of its ACLs does not fail by itself: without its consumer group's, it
waits in silence; without a topic's, Faust's agents crash mid-stream. So it asks first, and
each missing permission is one line naming the ACL to add:

- DESCRIBE on every topic it uses (metadata);
- READ on the input topic (a fetch) and on its consumer group (its committed offsets);
- WRITE on its transactional ids (``<app-id>.shard.*``: a transaction begun and aborted) and
  on its internal topics (an aborted write to the checkpoints topic, which is read only in
  the read_committed view, so nobody ever sees it);
- for the case stage (unless ``--no-cases``): READ on the incidents topic (it reads the
  shards' records) and on its consumer group ``<app-id>.cases``,
  and WRITE on its transactional ids (prefix ``<app-id>.cases``: a transaction begun and
  aborted under ``<app-id>.cases.preflight-<pid>`` — the stage's own id would fence the
  running leader) and on its topic ``<app-id>.cases`` (read only read_committed, too).

WRITE on the output and dead-letter topics cannot be checked without writing to topics
others read; a refusal there stops the worker with one line too (app.py).
"""

from __future__ import annotations

import asyncio
import os

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from firebreak.adapters.live.settings import WorkerSettings
from firebreak.sdk._kafka import close_quietly

TIMEOUT_S = 10.0
METADATA_TRIES = 8


def acl(settings: WorkerSettings, operation: str, resource: str) -> str:
    user = settings.kafka.sasl_username or "<principal>"
    return f"(kafka-acls --add --allow-principal User:{user} --operation {operation} {resource})"


async def missing_permissions(settings: WorkerSettings) -> list[str]:
    """One line per permission the worker lacks; [] when it has them all."""
    problems: list[str] = []
    hidden: list[str] = []
    s = settings
    topics = [
        s.input_topic,
        s.incidents_topic,
        s.containment_topic,
        s.dead_letter_topic,
        s.routed_topic,
        s.checkpoint_topic,
        *([s.cases_topic] if s.cases else []),
    ]
    consumer = AIOKafkaConsumer(
        **s.client_options(), group_id=s.app_id, enable_auto_commit=False, request_timeout_ms=int(TIMEOUT_S * 1000)
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await consumer.start()
            for _ in range(METADATA_TRIES):  # topics created a moment ago take a moment to show
                cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - no auto-creation by name
                hidden = [t for t in topics if not cluster.partitions_for_topic(t)]
                if not hidden:
                    break
                await asyncio.sleep(0.5)
        problems += [
            f"not allowed to DESCRIBE topic {t!r}, or it does not exist {acl(s, 'Describe', '--topic ' + t)}"
            for t in hidden
        ]
        tp = TopicPartition(s.input_topic, 0)
        if s.input_topic not in hidden:
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    await consumer.committed(tp)
            except GroupAuthorizationFailedError:
                problems.append(
                    f"not allowed to READ consumer group {s.app_id!r} {acl(s, 'Read', '--group ' + s.app_id)}"
                )
            problems += await _can_read(settings, tp)
        if s.cases and s.cases_topic not in hidden:
            problems += await _can_join_cases(settings)
        if s.cases and s.incidents_topic not in hidden:
            problems += await _can_read(settings, TopicPartition(s.incidents_topic, 0), cases=True)
    except (TimeoutError, KafkaError, OSError) as error:
        problems.append(f"checking permissions failed: {type(error).__name__}: {error}")
    finally:
        await close_quietly(consumer, 5)
    if not problems or s.checkpoint_topic not in hidden:
        problems += await _can_transact(settings)
    if s.cases and (not problems or s.cases_topic not in hidden):
        problems += await _can_transact(settings, cases=True)
    return problems


async def _can_join_cases(settings: WorkerSettings) -> list[str]:
    """READ on the case stage's consumer group (its committed offset, as for the worker's own)."""
    s = settings
    group = f"{s.app_id}.cases"
    consumer = AIOKafkaConsumer(
        **s.client_options(), group_id=group, enable_auto_commit=False, request_timeout_ms=int(TIMEOUT_S * 1000)
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await consumer.start()
            await consumer.committed(TopicPartition(s.cases_topic, 0))
    except GroupAuthorizationFailedError:
        return [
            f"not allowed to READ consumer group {group!r} (the case stage; or run with --no-cases) "
            f"{acl(s, 'Read', '--group ' + group)}"
        ]
    finally:
        await close_quietly(consumer, 5)
    return []


async def _can_read(settings: WorkerSettings, tp: TopicPartition, cases: bool = False) -> list[str]:
    reader = AIOKafkaConsumer(
        **settings.client_options(), group_id=None, enable_auto_commit=False, request_timeout_ms=int(TIMEOUT_S * 1000)
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await reader.start()
            reader.assign([tp])
            await reader.seek_to_end(tp)
            await reader.getmany(tp, timeout_ms=200)
    except TopicAuthorizationFailedError:
        who = " (the case stage reads the shards' records; or run with --no-cases)" if cases else ""
        return [f"not allowed to READ topic {tp.topic!r}{who} {acl(settings, 'Read', '--topic ' + tp.topic)}"]
    except (TimeoutError, KafkaError, OSError) as error:
        return [f"reading {tp.topic!r} failed: {type(error).__name__}: {error}"]
    finally:
        await close_quietly(reader, 5)
    return []


async def _can_transact(settings: WorkerSettings, cases: bool = False) -> list[str]:
    """A transaction begun and aborted under a transactional id of the shards' prefix (or, with
    ``cases``, the case stage's), writing to the checkpoints topic (the cases topic)."""
    s = settings
    prefix, topic = (f"{s.app_id}.cases", s.cases_topic) if cases else (f"{s.app_id}.shard.", s.checkpoint_topic)
    who = " (the case stage; or run with --no-cases)" if cases else ""
    txn = f"{prefix}{'.' if cases else ''}preflight-{os.getpid()}"
    producer = AIOKafkaProducer(
        **s.client_options(), transactional_id=txn, enable_idempotence=True, request_timeout_ms=int(TIMEOUT_S * 1000)
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await producer.start()
    except TransactionalIdAuthorizationFailed:
        await close_quietly(producer, 5)
        resource = f"--transactional-id {prefix} --resource-pattern-type prefixed"
        return [f"not allowed to WRITE transactional ids {prefix}*{who} {acl(s, 'Write', resource)}"]
    except (TimeoutError, KafkaError, OSError) as error:
        await close_quietly(producer, 5)
        return [f"starting a transactional producer failed: {type(error).__name__}: {error}"]
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await producer.begin_transaction()
            try:
                await producer.send_and_wait(topic, b"{}", key=b"preflight", partition=0)
            finally:
                await producer.abort_transaction()
    except TopicAuthorizationFailedError:
        return [f"not allowed to WRITE topic {topic!r}{who} {acl(s, 'Write', '--topic ' + topic)}"]
    except (TimeoutError, KafkaError, OSError) as error:
        return [f"a test transaction failed: {type(error).__name__}: {error}"]
    finally:
        await close_quietly(producer, 5)
    return []
