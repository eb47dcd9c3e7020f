"""firebreak.kafka_config: one way to configure every Kafka client, secrets never shown."""

from __future__ import annotations

import ssl
import subprocess

import pytest
from firebreak.kafka_config import KafkaConfig, KafkaConfigError, Secret, load_kafka_config, read_properties


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> str:
    """A throwaway CA certificate (openssl), so TLS settings can be checked for real."""
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(folder / "ca.key"),
            "-out",
            str(folder / "ca.crt"),
            "-days",
            "1",
            "-subj",
            "/CN=firebreak-test-ca",
        ],
        check=True,
        capture_output=True,
    )
    return str(folder / "ca.crt")


def write(tmp_path, text: str) -> str:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return str(path)


def test_plaintext_by_default():
    config = load_kafka_config(env={})
    assert config == KafkaConfig()
    assert config.client_options() == {"security_protocol": "PLAINTEXT"}
    assert config.faust_credentials() is None


def test_a_confluent_cloud_style_file_with_the_password_from_the_environment(tmp_path, ca):
    path = write(
        tmp_path,
        f"""# Confluent Cloud style
bootstrap.servers=pkc-123.europe-west1.gcp.confluent.cloud:9092
security.protocol=SASL_SSL
sasl.mechanisms=PLAIN
sasl.username=ABCDEFGH
ssl.ca.location={ca}
""",
    )
    config = load_kafka_config(path, env={"FIREBREAK_KAFKA_SASL_PASSWORD": "s3cret/+="})
    assert config.bootstrap == "pkc-123.europe-west1.gcp.confluent.cloud:9092"
    options = config.client_options()
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "PLAIN"
    assert options["sasl_plain_username"] == "ABCDEFGH" and options["sasl_plain_password"] == "s3cret/+="
    assert isinstance(options["ssl_context"], ssl.SSLContext) and options["ssl_context"].check_hostname
    credentials = config.faust_credentials()
    assert credentials.username == "ABCDEFGH" and credentials.mechanism.value == "PLAIN"
    assert "s3cret" not in repr(config) and "s3cret" not in config.describe() and "s3cret" not in str(config)
    assert config.describe() == f"SASL_SSL, PLAIN as ABCDEFGH, CA {ca}"


def test_an_msk_style_scram_setup_from_the_environment_alone(tmp_path, ca):
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    env = {
        "FIREBREAK_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "FIREBREAK_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "FIREBREAK_KAFKA_SASL_USERNAME": "firebreak",
        "FIREBREAK_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "FIREBREAK_KAFKA_SSL_CA_LOCATION": ca,
    }
    config = load_kafka_config(bootstrap="b-1.msk.example:9096", env=env)
    assert config.bootstrap == "b-1.msk.example:9096"  # --bootstrap wins
    assert config.security_protocol == "SASL_SSL" and config.sasl_mechanism == "SCRAM-SHA-512"
    assert config.sasl_password == Secret("from-a-file")
    assert (
        config.source == "FIREBREAK_KAFKA_SASL_MECHANISM, FIREBREAK_KAFKA_SASL_PASSWORD_FILE, "
        "FIREBREAK_KAFKA_SASL_USERNAME, FIREBREAK_KAFKA_SECURITY_PROTOCOL, FIREBREAK_KAFKA_SSL_CA_LOCATION"
    )


def test_the_environment_wins_over_the_file(tmp_path):
    path = write(tmp_path, "security.protocol=SSL\nssl.endpoint.identification.algorithm=\n")
    config = load_kafka_config(path, env={"FIREBREAK_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"})
    assert config.security_protocol == "PLAINTEXT" and config.ssl_endpoint_identification == ""


def test_config_file_named_by_the_environment(tmp_path):
    path = write(tmp_path, "bootstrap.servers=k1:9093\n")
    assert load_kafka_config(env={"FIREBREAK_KAFKA_CONFIG": path}).bootstrap == "k1:9093"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        (
            "sasl.password=hunter2\n",
            {},
            r"client.properties:1: `sasl.password` is a secret and is not read from a "
            r"config file; put it in FIREBREAK_KAFKA_SASL_PASSWORD",
        ),
        (
            "security.protocol=TLS\n",
            {},
            r"client.properties:1: security.protocol 'TLS' is not one of PLAINTEXT, SSL, "
            r"SASL_PLAINTEXT, SASL_SSL",
        ),
        ("security.protocl=SSL\n", {}, r"client.properties:1: unknown property `security.protocl`"),
        ("just words\n", {}, r"client.properties:1: expected `name=value`"),
        ("security.protocol=SASL_SSL\n", {}, r"sasl.mechanism is missing; it must be one of PLAIN, SCRAM-SHA-256"),
        ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=GSSAPI\n", {}, r"sasl.mechanism 'GSSAPI' is not one of"),
        (
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=u\n",
            {},
            r"SASL_PLAINTEXT needs sasl.username and a password .*; the password is missing",
        ),
        ("security.protocol=SSL\nssl.ca.location=/nowhere/ca.pem\n", {}, r"/nowhere/ca.pem: no such file"),
        ("ssl.certificate.location=/a.pem\n", {}, r"mutual TLS needs both ssl.certificate.location and ssl.key"),
        ("ssl.endpoint.identification.algorithm=none\n", {}, r"is `https` \(verify the broker's name\) or empty"),
    ],
)
def test_mistakes_are_one_clear_line(tmp_path, text, env, message):
    with pytest.raises(KafkaConfigError, match=message) as caught:
        load_kafka_config(write(tmp_path, text), env=env)
    assert "\n" not in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_missing_config_file_is_one_line(tmp_path):
    with pytest.raises(KafkaConfigError, match=r"nope.properties: no such file"):
        load_kafka_config(str(tmp_path / "nope.properties"), env={})


def test_a_password_file_that_cannot_be_read(tmp_path):
    path = write(tmp_path, "sasl.password.file=/nowhere/secret\n")
    with pytest.raises(KafkaConfigError, match=r"client.properties:1: cannot read /nowhere/secret"):
        load_kafka_config(path, env={})


def test_properties_syntax(tmp_path):
    path = write(tmp_path, "# comment\n! also a comment\n\n a = b \nc: d=e\n")
    assert read_properties(path) == {"a": ("b", 4), "c": ("d=e", 5)}


def test_secret_is_never_shown():
    secret = Secret("p")
    assert repr(secret) == str(secret) == "'***'" and f"{secret}" == "'***'" and secret.reveal() == "p"
