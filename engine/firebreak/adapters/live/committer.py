"""The committer: a shard's records leave in a transaction with its checkpoint, and the worker's
exit codes when that cannot be.

Records of a shard are sent only inside a transaction of the shard's own producer
(checkpoints.py `ShardWriter`), with its head checkpoint (or, every --checkpoint-interval, its
full snapshot, which also acks the routed messages it covers). When the broker refuses or a
transaction does not end, the worker stops with one line and an exit code a supervisor can
act on; nothing uncommitted was visible, and a restart resumes from the last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, NoReturn

from aiokafka.errors import (
    IllegalOperation,
    KafkaError,
    ProducerFenced,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from firebreak.adapters.live.settings import WorkerSettings

if TYPE_CHECKING:
    from firebreak.adapters.live.shard_host import Shard

log = logging.getLogger("firebreak.worker")

EXIT_REFUSED = 2  # the broker refuses a permission the worker needs
EXIT_COMMIT_TIMEOUT = 3  # a transaction of records does not end within --commit-timeout
EXIT_CHECKPOINT = 4  # a shard's checkpoint (or routed message) was written by a release this one cannot read
EXIT_SHARDS = 5  # --shards is not the partition count of the group's existing routed topic


class Committer:
    def __init__(self, settings: WorkerSettings, metrics: Any) -> None:
        self.settings = settings
        self.metrics = metrics

    async def commit(self, shard: Shard, full: bool) -> bool:
        """Commit the shard's pending records with its head (or full snapshot); a full snapshot
        also acks the routed messages it covers. False when the shard was fenced (another worker
        owns it now: its transaction was aborted, nothing was committed)."""
        records = shard.state.pending
        try:
            async with asyncio.timeout(self.settings.commit_timeout_ms / 1000):
                await shard.writer.commit(records, shard.state.checkpoint() if full else shard.state.header())
        except ProducerFenced:
            return False
        except (KafkaError, IllegalOperation) as error:  # refused, or a send after the transaction failed
            self.refused(shard.writer.transaction_error() or error)
        except TimeoutError:
            # aiokafka can leave a refused transaction waiting forever: say what it knows, and stop
            self.refused(shard.writer.transaction_error())
        self.metrics.count_records(records)
        self.metrics.checkpoints["full" if full else "head"] += 1
        shard.state.pending = []
        shard.taken_since_commit = 0
        shard.committed_mark = shard.state.engine.watermark
        if full:
            shard.checkpointed_at = time.monotonic()
            shard.full_next = covered = shard.state.routed_next  # (the shard's lock is held: as checkpointed)
            unacked, shard.unacked, fetched = shard.unacked, [], []
            for stream, event in unacked:
                if stream is None:  # a fetched copy skipped before Faust's agent (the local hand-off)
                    if event < covered:
                        fetched.append(event)
                    else:  # queued, not taken yet: acked with the next full checkpoint
                        shard.unacked.append((stream, event))
                else:
                    await stream.ack(event)
            if fetched and shard.ack_fetched is not None:
                shard.ack_fetched(fetched)
        return True

    def refused(self, error: BaseException | None) -> NoReturn:
        """Records cannot be committed: the broker refused a write the permission check could
        not try (the output topics), or a transaction did not end within --commit-timeout. The
        worker stops with one line rather than retry forever or die with a traceback."""
        s = self.settings
        if isinstance(error, TopicAuthorizationFailedError | TransactionalIdAuthorizationFailed):
            user = s.kafka.sasl_username or "<principal>"
            log.critical(
                "the broker refused to let this worker write its records (%s); allow it: kafka-acls --add "
                "--allow-principal User:%s --operation Write --topic %s --topic %s; stopping",
                type(error).__name__,
                user,
                s.incidents_topic,
                s.containment_topic,
                extra={"fields": {"event": "stopped", "reason": type(error).__name__}},
            )
            stop(EXIT_REFUSED)
        log.critical(
            "records could not be committed within %g s (%s); stopping: a restart resumes from the last checkpoint",
            s.commit_timeout_ms / 1000,
            type(error).__name__ if error else "no answer",
            extra={"fields": {"event": "stopped", "reason": "commit timeout"}},
        )
        stop(EXIT_COMMIT_TIMEOUT)


def stop(code: int, message: str | None = None, reason: str | None = None) -> NoReturn:
    """End the worker now with ``code`` (after logging ``message``, when given): what it had not
    committed, the next owner of its shards takes again from their last checkpoints."""
    if message is not None:
        log.critical(message, extra={"fields": {"event": "stopped", "reason": reason or str(code)}})
    logging.shutdown()
    os._exit(code)
