"""Secured Kafka end to end: SASL_SSL with SCRAM, mutual TLS, least-privilege ACLs.

One secured broker for the module (scripts/kafka-local with KAFKA_LOCAL_SECURE=1: a throwaway
CA, SCRAM users, the StandardAuthorizer). The worker, both SDKs and topic replay connect with
the settings of docs/kafka-security.md; wrong settings fail with one clear line.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import orjson
import pytest
from firebreak.core import format_ts, parse_ts
from firebreak.kafka_config import load_kafka_config
from firebreak.sdk import AsyncPublisher, ContainmentListener
from firebreak.sdk.publisher import PublishError
from local_broker import LocalBroker, start_local_broker
from test_worker_live import RULES, before, clocks, replay, scenario
from worker_harness import FIREBREAK, Topics, Worker, read_all, records_arrived, run, wait_for

pytestmark = pytest.mark.kafka

USERS = {
    "admin": "admin-secret",
    "worker": "worker-secret",
    "publisher": "publisher-secret",
    "listener": "listener-secret",
}
T0 = parse_ts("2026-03-01T00:00:00Z")


@pytest.fixture(scope="module")
def secure(kafka_bootstrap, tmp_path_factory):
    broker = start_local_broker(
        tmp_path_factory.mktemp("secure"), secure=True, users=" ".join(f"{u}:{p}" for u, p in USERS.items())
    )
    yield broker
    broker.ctl("stop")


def sasl_properties(broker: LocalBroker, user: str, folder) -> str:
    path = folder / f"{user}-{uuid.uuid4().hex[:6]}.properties"
    path.write_text(
        f"# MSK / self-managed style: SASL_SSL with SCRAM\nbootstrap.servers={broker.sasl_ssl}\n"
        f"security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username={user}\n"
        f"ssl.ca.location={broker.tls / 'ca.crt'}\n"
    )
    return str(path)


def mtls_properties(broker: LocalBroker, folder) -> str:
    path = folder / "mtls.properties"
    path.write_text(
        f"bootstrap.servers={broker.mtls}\nsecurity.protocol=SSL\nssl.ca.location={broker.tls / 'ca.crt'}\n"
        f"ssl.certificate.location={broker.tls / 'client.crt'}\n"
        f"ssl.key.location={broker.tls / 'client.key'}\n"
    )
    return str(path)


def password(user: str) -> dict[str, str]:
    return {"FIREBREAK_KAFKA_SASL_PASSWORD": USERS[user]}


class SecTopics(Topics):
    """Input and output topics outside the app id's prefix, as in a real deployment
    (ai.inference.events read by app id `firebreak`): no prefix ACL of the worker's internal
    topics covers them by accident."""

    @property
    def events(self) -> str:
        return f"in-{self.prefix}"

    @property
    def incidents(self) -> str:
        return f"out-{self.prefix}.incidents"

    @property
    def containment(self) -> str:
        return f"out-{self.prefix}.containment"

    @property
    def dead_letter(self) -> str:
        return f"out-{self.prefix}.deadletter"


def grant_worker(broker: LocalBroker, topics: Topics, user: str = "worker", skip: str = "") -> None:
    """The worker's least privilege, as docs/kafka-security.md lists it (``skip`` leaves one out)."""
    principal = f"User:{user}"
    grants = {
        "input": (["Read", "Describe"], ["--topic", topics.events]),
        "outputs": (
            ["Write", "Describe", "Create"],
            ["--topic", topics.incidents, "--topic", topics.containment, "--topic", topics.dead_letter],
        ),
        "internal": (
            ["Read", "Write", "Describe", "Create"],
            ["--topic", f"{topics.prefix}.", "--resource-pattern-type", "prefixed"],
        ),
        "faust": (["Read", "Write", "Describe", "Create"], ["--topic", f"{topics.prefix}-__assignor-__leader"]),
        "group": (["Read"], ["--group", topics.prefix]),
        "transactions": (
            ["Write", "Describe"],
            ["--transactional-id", f"{topics.prefix}.shard.", "--resource-pattern-type", "prefixed"],
        ),
        # the case stage: it reads the shards' records, joins its own group, commits its own transactions
        "cases_read": (["Read"], ["--topic", topics.incidents]),
        "cases_group": (["Read"], ["--group", f"{topics.prefix}.cases"]),
        "cases_transactions": (
            ["Write", "Describe"],
            ["--transactional-id", f"{topics.prefix}.cases", "--resource-pattern-type", "prefixed"],
        ),
    }
    for name, (operations, resource) in grants.items():
        if name != skip:
            broker.allow(principal, operations, *resource)


def test_worker_and_sdks_over_sasl_ssl_with_least_privilege(secure, tmp_path, unique_topic):
    topics = SecTopics(unique_topic("sec"))
    rules = tmp_path / "live.rules"
    rules.write_text(RULES)
    grant_worker(secure, topics)
    secure.allow("User:publisher", ["Write", "Describe"], "--topic", topics.events)
    secure.allow("User:listener", ["Read", "Describe"], "--topic", topics.containment)
    secure.allow("User:listener", ["Read"], "--group", f"{topics.prefix}-gateway")
    run(create_input(secure, topics.events))
    events = scenario(minutes=80, seed=51)
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000

    worker = Worker(
        topics,
        secure.sasl_ssl,
        rules,
        tmp_path,
        env=password("worker"),
        extra=["--kafka-config", sasl_properties(secure, "worker", tmp_path)],
    ).start()
    received: set[str] = set()
    commands = {r["command_id"] for r in expected if r["type"] == "containment.command"}
    assert commands
    try:
        worker.wait_ready(90)
        publisher_config = load_kafka_config(sasl_properties(secure, "publisher", tmp_path), env=password("publisher"))
        run(publish_with_sdk(publisher_config, topics.events, events + [e for _, e in clock]))
        listener_config = load_kafka_config(sasl_properties(secure, "listener", tmp_path), env=password("listener"))
        arrived = records_arrived(secure.bootstrap, topics, expected)
        wait_for(arrived, 180, "the replay's records from a worker on SASL_SSL", [worker])
        received = run(listen_with_sdk(listener_config, topics.containment, f"{topics.prefix}-gateway", commands))
    finally:
        worker.stop()
    records = run(read_all(secure.bootstrap, topics.incidents)) + run(read_all(secure.bootstrap, topics.containment))
    assert before(records, cutoff) == before(expected, cutoff)
    assert commands <= received  # the gateway's listener, over SASL_SSL as `listener`, applied every command
    log = (tmp_path / f"worker-{worker.port}.log").read_text()
    assert USERS["worker"] not in log and "Traceback" not in log

    # Topic replay over mutual TLS (a client certificate): the same records.
    out = tmp_path / "replayed.jsonl"
    mtls = mtls_properties(secure, tmp_path)
    window = ["--since", format_ts(T0), "--until", format_ts(cutoff - 3_600_000), "--lateness", "2s"]
    done = subprocess.run(
        [
            *FIREBREAK,
            "replay",
            "--topic",
            topics.events,
            "--kafka-config",
            mtls,
            "--rules",
            str(rules),
            *window,
            "--out",
            str(out),
        ],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    replayed = [orjson.loads(line) for line in out.read_bytes().splitlines() if line]
    assert before(replayed, cutoff) == before(expected, cutoff)


async def create_input(broker: LocalBroker, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)  # PLAINTEXT: a super user here
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()


async def publish_with_sdk(config, topic: str, events: list[dict]) -> None:
    async with AsyncPublisher(config.bootstrap, topic, kafka_config=config) as publisher:
        await publisher.publish_many(events)


async def listen_with_sdk(config, topic: str, group: str, want: set[str]) -> set[str]:
    """A gateway's ContainmentListener over SASL_SSL: the command ids it applied."""
    seen: set[str] = set()

    def apply(command: dict) -> None:
        seen.add(command["command_id"])

    actions = ("fallback", "disable_feature", "block_user", "throttle", "rollback", "circuit_breaker", "page")
    handlers = {action: (apply, lambda command: None) for action in actions}
    # clock 0: the scenario's commands expire in its own (past) event time; here they must still apply
    listener = ContainmentListener(config.bootstrap, group, topic, handlers, kafka_config=config, clock=lambda: 0.0)
    try:
        await listener.run_until(lambda _: want <= seen, timeout_s=150)
    finally:
        await listener.stop()
    return seen


@pytest.mark.parametrize(
    "missing", ["group", "transactions", "input", "cases_read", "cases_group", "cases_transactions"]
)
def test_a_worker_missing_one_acl_says_which_and_does_not_start(secure, tmp_path, unique_topic, missing):
    topics = SecTopics(unique_topic(f"noacl-{missing}"))
    rules = tmp_path / "live.rules"
    rules.write_text(RULES)
    run(create_input(secure, topics.events))
    grant_worker(secure, topics, skip=missing)
    worker = Worker(
        topics,
        secure.sasl_ssl,
        rules,
        tmp_path,
        env=password("worker"),
        extra=["--kafka-config", sasl_properties(secure, "worker", tmp_path)],
    ).start()
    assert worker.process.wait(60) == 2
    log = (tmp_path / f"worker-{worker.port}.log").read_text()
    expected = {
        "group": f"not allowed to READ consumer group '{topics.prefix}'",
        "transactions": f"not allowed to WRITE transactional ids {topics.prefix}.shard.*",
        "input": f"not allowed to DESCRIBE topic '{topics.events}'",
        "cases_read": f"not allowed to READ topic '{topics.incidents}' (the case stage",
        "cases_group": f"not allowed to READ consumer group '{topics.prefix}.cases' (the case stage",
        "cases_transactions": f"not allowed to WRITE transactional ids {topics.prefix}.cases* (the case stage",
    }[missing]
    assert expected in log, log
    assert "permission(s) missing" in log and "Traceback" not in log


def replay_cli(properties: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [
            *FIREBREAK,
            "replay",
            "--topic",
            "ai.inference.events",
            "--kafka-config",
            properties,
            "--rules",
            str(write_rules(tmp_path)),
            "--since",
            "2026-03-01T00:00:00Z",
            "--until",
            "2026-03-01T01:00:00Z",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def write_rules(tmp_path):
    path = tmp_path / "r.rules"
    path.write_text(RULES)
    return path


def other_ca(tmp_path) -> str:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(tmp_path / "o.key"),
            "-out",
            str(tmp_path / "o.crt"),
            "-days",
            "1",
            "-subj",
            "/CN=someone-else",
        ],
        check=True,
        capture_output=True,
    )
    return str(tmp_path / "o.crt")


def test_wrong_settings_are_one_clear_line(secure, tmp_path):
    good = sasl_properties(secure, "admin", tmp_path)
    cases = [
        (
            good,
            {"FIREBREAK_KAFKA_SASL_PASSWORD": "not-the-password"},
            "refused the login of 'admin' (SCRAM-SHA-512): wrong user or password",
        ),
        (
            good,
            {"FIREBREAK_KAFKA_SASL_PASSWORD": USERS["admin"], "FIREBREAK_KAFKA_SSL_CA_LOCATION": other_ca(tmp_path)},
            f"the TLS certificate of {secure.sasl_ssl} is not trusted",
        ),
        (
            good,
            {"FIREBREAK_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
            f"{secure.sasl_ssl} speaks TLS but security.protocol is PLAINTEXT",
        ),
        (
            mtls_properties(secure, tmp_path),
            {"FIREBREAK_KAFKA_SSL_CERTIFICATE_LOCATION": "", "FIREBREAK_KAFKA_SSL_KEY_LOCATION": ""},
            f"{secure.mtls} closed the TLS connection: it may require a client certificate",
        ),
    ]
    for properties, env, message in cases:
        started = time.monotonic()
        done = replay_cli(properties, env, tmp_path)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr
        assert "not-the-password" not in done.stderr and "Traceback" not in done.stderr
        assert time.monotonic() - started < 30


def test_the_sdk_and_the_worker_say_the_same(secure, tmp_path):
    wrong = {"FIREBREAK_KAFKA_SASL_PASSWORD": "x"}
    config = load_kafka_config(sasl_properties(secure, "publisher", tmp_path), env=wrong)
    with pytest.raises(PublishError, match=r"refused the login of 'publisher' \(SCRAM-SHA-512\)"):
        run(publish_with_sdk(config, "anything", []))
    topics = Topics(f"fbt-badpw-{uuid.uuid4().hex[:8]}")
    worker = Worker(
        topics,
        secure.sasl_ssl,
        write_rules(tmp_path),
        tmp_path,
        env=wrong,
        extra=["--kafka-config", sasl_properties(secure, "worker", tmp_path)],
    ).start()
    assert worker.process.wait(60) == 1
    log = (tmp_path / f"worker-{worker.port}.log").read_text()
    assert f"firebreak worker: no Kafka broker at {secure.sasl_ssl} — " in log
    assert "refused the login of 'worker'" in log and "Traceback" not in log


def test_a_worker_refused_writing_its_records_stops_with_one_line(secure, tmp_path, unique_topic):
    """WRITE on the output topics cannot be tried before there is something to write."""
    from worker_harness import publish

    topics = SecTopics(unique_topic("nowrite"))
    rules = tmp_path / "live.rules"
    rules.write_text(RULES)
    run(create_input(secure, topics.events))
    grant_worker(secure, topics, skip="outputs")
    secure.allow(
        "User:worker",
        ["Describe"],
        "--topic",
        topics.incidents,
        "--topic",
        topics.containment,
        "--topic",
        topics.dead_letter,
    )
    run(create_outputs(secure, topics))
    worker = Worker(
        topics,
        secure.sasl_ssl,
        rules,
        tmp_path,
        env=password("worker"),
        extra=["--kafka-config", sasl_properties(secure, "worker", tmp_path), "--commit-timeout", "15s"],
    ).start()
    worker.wait_ready(90)
    events = scenario(minutes=75, seed=52)
    run(publish(secure.bootstrap, topics.events, events + [e for _, e in clocks(events)]))
    assert worker.process.wait(120) == 2
    log = (tmp_path / f"worker-{worker.port}.log").read_text()
    assert "the broker refused to let this worker write its records (TopicAuthorizationFailedError)" in log
    assert f"--operation Write --topic {topics.incidents} --topic {topics.containment}; stopping" in log
    assert "Traceback" not in log
    assert run(read_all(secure.bootstrap, topics.incidents)) == []


async def create_outputs(broker: LocalBroker, topics: Topics) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        names = (topics.incidents, topics.containment, topics.dead_letter)
        await admin.create_topics([NewTopic(name, 4, 1) for name in names])
    finally:
        await admin.close()


def test_every_topic_command_and_the_publisher_over_mutual_tls_and_sasl(secure, tmp_path, unique_topic):
    """check, backtest and investigate --topic read through the same client settings as replay."""
    topic = unique_topic("cmds")
    run(create_input(secure, topic))
    events = scenario(minutes=75, seed=53)
    mtls = load_kafka_config(mtls_properties(secure, tmp_path), env={})
    run(publish_with_sdk(mtls, topic, events))  # the publisher SDK over mutual TLS
    rules = write_rules(tmp_path)
    since, until = "2026-03-01T00:00:00Z", "2026-03-01T01:15:00Z"
    commands = {
        "check": ["check", str(rules), "--topic", topic, "--since", since, "--until", until],
        "backtest": [
            "backtest",
            "--rules",
            str(rules),
            "--against",
            str(rules),
            "--topic",
            topic,
            "--since",
            since,
            "--until",
            until,
        ],
        "investigate": [
            "investigate",
            "--rules",
            str(rules),
            "--topic",
            topic,
            "--since",
            since,
            "--until",
            until,
            "--format",
            "json",
        ],
    }
    import os

    for properties, env in (
        (mtls_properties(secure, tmp_path), {}),
        (sasl_properties(secure, "admin", tmp_path), password("admin")),
    ):
        for name, args in commands.items():
            done = subprocess.run(
                [*FIREBREAK, *args, "--kafka-config", properties],
                capture_output=True,
                text=True,
                timeout=180,
                env={**os.environ, **env},
            )
            assert done.returncode == 0, (name, properties, done.stderr)
            assert "Traceback" not in done.stderr
    listed = orjson.loads(done.stdout)
    assert {incident["rule"] for incident in listed} >= {"jailbreaker", "leak"}  # read over SASL_SSL


def test_worker_and_listener_over_mutual_tls(secure, tmp_path, unique_topic):
    """A client certificate instead of a password (its principal, User:CN=firebreak-client, is a super user here)."""
    from worker_harness import publish

    topics = SecTopics(unique_topic("mtls"))
    rules = write_rules(tmp_path)
    run(create_input(secure, topics.events))
    events = scenario(minutes=80, seed=54)
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000
    properties = mtls_properties(secure, tmp_path)
    worker = Worker(topics, secure.mtls, rules, tmp_path, extra=["--kafka-config", properties]).start()
    commands = {r["command_id"] for r in expected if r["type"] == "containment.command"}
    try:
        worker.wait_ready(90)
        run(publish(secure.bootstrap, topics.events, events + [e for _, e in clock]))
        received = run(
            listen_with_sdk(
                load_kafka_config(properties, env={}), topics.containment, f"{topics.prefix}-gateway", commands
            )
        )
        arrived = records_arrived(secure.bootstrap, topics, expected)
        wait_for(arrived, 180, "the replay's records from a worker on mutual TLS", [worker])
    finally:
        worker.stop()
    assert commands and commands <= received
    records = run(read_all(secure.bootstrap, topics.incidents)) + run(read_all(secure.bootstrap, topics.containment))
    got, want = before(records, cutoff), before(expected, cutoff)

    def brief(raw: bytes) -> str:
        record = orjson.loads(raw)
        return f"{record['type']} {record.get('rule')} {record['ts']}"

    missing, extra = [brief(r) for r in want if r not in got], [brief(r) for r in got if r not in want]
    assert got == want, {"missing": missing, "extra": extra}
