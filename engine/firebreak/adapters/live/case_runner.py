"""The Kafka edge of the case stage (case_stage.py): read, call the stage, commit what it returns.

One worker of the group runs it: the one assigned the single partition of ``<app-id>.cases``
(a compacted topic, which also holds the stage's checkpoint under key ``stage``) in the
consumer group ``<app-id>.cases``. It reads, read_committed and outside any group, every
incidents partition from the checkpoint's positions and the shards' checkpoint partitions
(their heads carry each shard's committed watermark, ``mark``). A mark is applied only after
the incidents partitions were read to the end offsets they had once the head was seen, so
every record the head counts is in hand. Case records leave in one transaction with the
stage's checkpoint (positions, held records, the CaseBook): after a SIGKILL the next owner
restores it and derives the same case records, none twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from firebreak.adapters.live.case_stage import CaseStage
from firebreak.adapters.live.checkpoints import MAX_CHECKPOINT_BYTES
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.dsl import CompiledRule
from firebreak.records import record_key

log = logging.getLogger("firebreak.worker.cases")

STAGE_KEY = b"stage"
POLL_MS = 200
RETRY_S = 10.0  # after the stage failed (a refused write, say), before it restarts from its checkpoint


async def load_stage(settings: WorkerSettings) -> dict[str, Any] | None:
    """The last committed checkpoint of the case stage, or None."""
    tp = TopicPartition(settings.cases_topic, 0)
    consumer = AIOKafkaConsumer(
        **settings.client_options(),
        isolation_level="read_committed",
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_CHECKPOINT_BYTES,
        fetch_max_bytes=MAX_CHECKPOINT_BYTES,
    )
    try:
        await consumer.start()
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        latest = None
        consumer.seek(tp, 0)
        while end and await consumer.position(tp) < end:
            for message in (await consumer.getmany(tp, timeout_ms=50, max_records=100)).get(tp, []):
                if message.key == STAGE_KEY:
                    latest = message.value
        return orjson.loads(latest) if latest else None
    finally:
        await consumer.stop()


class CaseRunner:
    def __init__(self, settings: WorkerSettings, rules: Sequence[CompiledRule]) -> None:
        self.settings = settings
        self.rules = tuple(rules)
        self.stage: CaseStage | None = None
        self.committed = 0  # case records committed by this process
        self.task: asyncio.Task | None = None

    def counts(self) -> dict[str, int] | None:
        """What the metrics show of the stage (None: another worker leads it)."""
        stage = self.stage
        if stage is None or self.task is None:
            return None
        stats = stage.book.stats
        return {
            "cases": stats["cases"],
            "pages": stats["pages"],
            "grouped": stats["grouped"],
            "inhibited": stats["inhibited"],
            "updates": stats["updates"],
            "held": len(stage.held),
        }

    async def run(self) -> None:
        """Wait to be the group's case stage, then run it until this process stops."""
        s = self.settings
        leader = AIOKafkaConsumer(
            s.cases_topic,
            **s.client_options(),
            group_id=f"{s.app_id}.cases",
            enable_auto_commit=False,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=min(3000, s.session_timeout_ms // 3),
        )
        try:
            await leader.start()
        except KafkaError as error:
            log.error(
                "the case stage cannot join its group %s.cases (%s): no cases from this worker",
                s.app_id,
                type(error).__name__,
                extra={"fields": {"event": "cases_off", "reason": type(error).__name__}},
            )
            return
        retry_at = 0.0
        try:
            while True:
                leader.pause(*leader.assignment())  # membership only: the checkpoints are read by `load_stage`
                await leader.getmany(timeout_ms=1000)  # keeps the membership alive (max.poll.interval)
                mine = TopicPartition(s.cases_topic, 0) in leader.assignment()
                if mine and self.task is None and time.monotonic() >= retry_at:
                    self.task = asyncio.create_task(self._lead())
                elif not mine and self.task is not None:
                    self.task.cancel()
                    self.task = None
                if self.task is not None and self.task.done() and not self.task.cancelled():
                    error = self.task.exception()
                    log.error(
                        "the case stage stopped (%s: %s); it restarts from its checkpoint in %g s",
                        type(error).__name__,
                        error,
                        RETRY_S,
                    )
                    self.task, retry_at = None, time.monotonic() + RETRY_S
        finally:
            if self.task is not None:
                self.task.cancel()
            await leader.stop()

    async def _lead(self) -> None:
        s = self.settings
        snapshot = await load_stage(s)
        stage = self.stage = CaseStage.restore(self.rules, snapshot) if snapshot else CaseStage(self.rules, s.shards)
        producer = AIOKafkaProducer(
            **s.client_options(),
            transactional_id=f"{s.app_id}.cases",
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_CHECKPOINT_BYTES,
        )
        reader = AIOKafkaConsumer(
            **s.client_options(),
            isolation_level="read_committed",
            enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_CHECKPOINT_BYTES,
            fetch_max_bytes=MAX_CHECKPOINT_BYTES,
        )
        await producer.start()
        await reader.start()
        try:
            incidents = [TopicPartition(s.incidents_topic, p) for p in range(s.output_partitions)]
            heads = [TopicPartition(s.checkpoint_topic, p) for p in range(s.shards)]
            reader.assign(incidents + heads)
            for tp in incidents:
                reader.seek(tp, stage.positions.get(tp.partition, 0))
            for tp in heads:
                reader.seek(tp, 0)  # compacted: the latest head per shard (marks only go forward)
            log.info(
                "case stage: leading, from %s",
                "its checkpoint" if snapshot else "the start",
                extra={"fields": {"event": "cases_leading", "restored": bool(snapshot)}},
            )
            waiting: list[tuple[dict[int, int], dict[TopicPartition, int]]] = []  # marks, the ends they wait for
            while True:
                batch = await reader.getmany(timeout_ms=POLL_MS, max_records=5_000)
                marks: dict[int, int] = {}
                for tp, messages in batch.items():
                    for message in messages:
                        if tp.topic == s.incidents_topic:
                            try:
                                stage.take(tp.partition, message.offset, orjson.loads(message.value))
                            except orjson.JSONDecodeError:
                                stage.positions[tp.partition] = message.offset + 1
                        else:
                            mark = _mark(message.value)
                            if mark is not None:
                                marks[tp.partition] = max(mark, marks.get(tp.partition, mark))
                if marks:  # the heads' records are committed: below the end offsets now
                    waiting.append((marks, await reader.end_offsets(incidents)))
                applied = False
                # the reader's position, not the last record's offset + 1: a transaction's commit marker
                # takes an offset too, which read_committed consumers skip
                while waiting and all([await reader.position(tp) >= end for tp, end in waiting[0][1].items()]):
                    for shard, mark in waiting.pop(0)[0].items():
                        stage.heard(shard, mark)
                    applied = True
                out = stage.release() if applied else []
                if out:
                    await self._commit(producer, stage, out)
        except ProducerFenced:
            log.warning("case stage: fenced (another worker leads it now)")
        finally:
            await reader.stop()
            await producer.stop()

    async def _commit(self, producer: AIOKafkaProducer, stage: CaseStage, out: list[dict[str, Any]]) -> None:
        s = self.settings
        async with producer.transaction():
            for record in out:
                await producer.send(s.incidents_topic, orjson.dumps(record), key=record_key(record))
            await producer.send(s.cases_topic, orjson.dumps(stage.snapshot()), key=STAGE_KEY, partition=0)
        self.committed += len(out)


def _mark(value: bytes | None) -> int | None:
    """A shard checkpoint's committed watermark, without decoding a full snapshot's engine state."""
    if not value:
        return None
    if value.startswith(b'{"kind":"head"'):
        return orjson.loads(value).get("mark")
    at = value.find(b'"mark":')
    if at < 0:
        return None
    end = at + 7
    while end < len(value) and value[end : end + 1] in b"-0123456789":
        end += 1
    text = value[at + 7 : end]
    return int(text) if text and text != b"-" else None
