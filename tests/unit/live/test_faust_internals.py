"""Faust's private internals, touched in one module only (engine/firebreak/adapters/live/batches.py):
these tests fail loudly when the pinned faust-streaming changes what that module reads or copies."""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path

import faust
import faust.transport.consumer as faust_consumer
from firebreak.adapters.live import batches

LIVE = Path(batches.__file__).parent


def test_the_pinned_faust_is_the_one_batches_py_was_written_against():
    assert faust.__version__ == batches.FAUST_VERSION, (
        f"faust-streaming {faust.__version__} installed; batches.py copies code of {batches.FAUST_VERSION}: "
        "compare Consumer._drain_messages/getmany/ack of both, adapt batches.py, then update FAUST_VERSION"
    )


def test_the_faust_code_batches_py_copies_is_unchanged():
    changed = {}
    for name, digest in batches.FAUST_SOURCES.items():
        source = inspect.getsource(getattr(faust_consumer.Consumer, name))
        found = hashlib.sha256(source.encode()).hexdigest()[:16]
        if found != digest:
            changed[name] = found
    assert not changed, f"Faust's Consumer changed where batches.py copies it: {changed}; re-read and adapt"


def test_every_private_name_batches_py_reads_is_still_faust_s():
    import mode.services

    source = inspect.getsource(faust_consumer) + inspect.getsource(mode.services)  # Consumer and its base
    missing = [name for name in batches.FAUST_PRIVATE if f"self.{name}" not in source and f"def {name}" not in source]
    assert not missing, f"Faust's Consumer (or mode's Service) no longer has {missing}"
    used = set(re.findall(r"consumer\.(_[a-z_]+)", Path(batches.__file__).read_text()))
    assert used <= set(batches.FAUST_PRIVATE), f"batches.py reads {used - set(batches.FAUST_PRIVATE)}: list them"


def test_no_other_worker_module_touches_faust_private_names():
    pattern = re.compile(r"\b(?:consumer|app|fetcher|stream)\.(_[a-z][a-z_]*)")
    touching = {
        path.name: sorted(set(pattern.findall(path.read_text())))
        for path in LIVE.glob("*.py")
        if path.name != "batches.py" and pattern.search(path.read_text())
    }
    assert touching == {"preflight.py": ["_client"]}  # aiokafka's consumer (metadata without auto-creation)


def test_the_consumer_thread_code_batches_py_wraps_is_unchanged():
    """`batches.fetch_wait` wraps Faust's worker consumer creation and sets aiokafka's
    `_fetch_max_wait_ms` before the consumer starts (which hands it to its fetcher)."""
    import aiokafka.consumer.consumer as aiokafka_consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    changed = {}
    for name, digest in batches.FAUST_THREAD_SOURCES.items():
        source = inspect.getsource(getattr(AIOKafkaConsumerThread, name))
        found = hashlib.sha256(source.encode()).hexdigest()[:16]
        if found != digest:
            changed[name] = found
    assert not changed, f"Faust's consumer thread changed where batches.py wraps it: {changed}; re-read and adapt"
    assert "return self._create_worker_consumer(transport)" in inspect.getsource(
        AIOKafkaConsumerThread._create_consumer
    )
    start = inspect.getsource(aiokafka_consumer.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start  # read when the fetcher is made


def test_the_worker_consumer_waits_at_most_fetch_max_wait_ms_in_a_fetch():
    from types import SimpleNamespace

    made = SimpleNamespace(_fetch_max_wait_ms=1500)
    thread = SimpleNamespace(_create_worker_consumer=lambda transport: made)
    batches.fetch_wait(SimpleNamespace(_thread=thread), batches.FETCH_MAX_WAIT_MS)
    assert thread._create_worker_consumer("transport") is made and made._fetch_max_wait_ms == 100
