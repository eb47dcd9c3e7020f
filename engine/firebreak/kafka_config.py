"""One way to configure a Kafka client, for every command and both SDKs (docs/kafka-security.md).

Settings come, later ones winning, from:

1. a properties file (``--kafka-config FILE``, or ``FIREBREAK_KAFKA_CONFIG``) with the names
   Kafka users know: ``security.protocol``, ``sasl.mechanism``, ``sasl.username``,
   ``ssl.ca.location``, ``ssl.certificate.location``, ``ssl.key.location``,
   ``ssl.endpoint.identification.algorithm``; secrets never stand in it, only the files
   that hold them: ``sasl.password.file``, ``ssl.key.password.file``;
2. the environment: ``FIREBREAK_KAFKA_<NAME>`` for each property, dots as underscores
   (``FIREBREAK_KAFKA_SECURITY_PROTOCOL``, ``FIREBREAK_KAFKA_SASL_PASSWORD``, ...) — the
   secrets themselves may come from here.

Secrets are held as `Secret`, whose ``repr`` and ``str`` are ``'***'``: they are never
printed, logged or written into records. `KafkaConfig.client_options()` gives the keyword
arguments of aiokafka's clients, `KafkaConfig.faust_credentials()` Faust's.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENV_PREFIX = "FIREBREAK_KAFKA_"
CONFIG_ENV = "FIREBREAK_KAFKA_CONFIG"

# property → (field, is a secret). A secret's `.file` form names a file holding it.
PROPERTIES: dict[str, str] = {
    "bootstrap.servers": "bootstrap",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",  # librdkafka's spelling
    "sasl.username": "sasl_username",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.endpoint.identification.algorithm": "ssl_endpoint_identification",
}
SECRETS: dict[str, str] = {"sasl.password": "sasl_password", "ssl.key.password": "ssl_key_password"}


class KafkaConfigError(ValueError):
    """A bad Kafka client setting: the message is one line, ready for the user."""


class Secret:
    """A password or key passphrase: usable, never shown."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: Secret | None = field(default=None, repr=False)
    ssl_endpoint_identification: str = "https"  # "" turns hostname verification off
    source: str = "defaults"  # where the settings came from, for messages

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def with_bootstrap(self, bootstrap: str | None) -> KafkaConfig:
        return self if not bootstrap else replace(self, bootstrap=bootstrap)

    def describe(self) -> str:
        """One line for logs: what is used, never a secret."""
        parts = [self.security_protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username}")
        if self.uses_ssl:
            parts.append(f"CA {self.ssl_ca_location or 'system'}")
            if self.ssl_certificate_location:
                parts.append(f"client certificate {self.ssl_certificate_location}")
            if not self.ssl_endpoint_identification:
                parts.append("hostname not verified")
        return ", ".join(parts)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_ssl:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ssl_ca_location)
            if self.ssl_certificate_location:
                password = self.ssl_key_password.reveal() if self.ssl_key_password else None
                context.load_cert_chain(self.ssl_certificate_location, self.ssl_key_location, password)
        except FileNotFoundError as error:
            raise KafkaConfigError(f"{error.filename}: no such file ({self.source})") from None
        except (ssl.SSLError, OSError, ValueError) as error:
            raise KafkaConfigError(f"the TLS files cannot be used: {error} ({self.source})") from None
        context.check_hostname = bool(self.ssl_endpoint_identification)
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client (bootstrap excluded)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_ssl:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.reveal() if self.sasl_password else None
        return options

    def faust_credentials(self) -> Any:
        """Faust's `broker_credentials` (None for PLAINTEXT)."""
        import faust
        from faust.types.auth import SASLMechanism

        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.reveal(),
                ssl_context=self.ssl_context(),
                mechanism=SASLMechanism(self.sasl_mechanism),
            )
        if self.uses_ssl:
            return faust.SSLCredentials(self.ssl_context())
        return None


def read_properties(path: str) -> dict[str, tuple[str, int]]:
    """``key=value`` (or ``key: value``) lines; ``#`` and ``!`` start comments. → {key: (value, line)}."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KafkaConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise KafkaConfigError(f"{path}: cannot be read ({error})") from None
    out: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if cut < 0:
            raise KafkaConfigError(f"{path}:{number}: expected `name=value`, got {line[:60]!r}")
        out[line[:cut].strip()] = (line[cut + 1 :].strip(), number)
    return out


def _env_name(prop: str) -> str:
    return ENV_PREFIX + prop.upper().replace(".", "_")


def _read_secret_file(path: str, where: str) -> Secret:
    try:
        return Secret(Path(path).read_text(encoding="utf-8").strip())
    except OSError as error:
        raise KafkaConfigError(f"{where}: cannot read {path} ({error.strerror or error})") from None


def load_kafka_config(
    path: str | None = None, bootstrap: str | None = None, env: Mapping[str, str] | None = None
) -> KafkaConfig:
    """Settings from the properties file (``path``, else ``$FIREBREAK_KAFKA_CONFIG``), then the
    environment; ``bootstrap`` (a command's ``--bootstrap``) wins over both. Raises KafkaConfigError."""
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    if path:
        for key, (value, line) in read_properties(path).items():
            at = f"{path}:{line}"
            if key in SECRETS:
                raise KafkaConfigError(
                    f"{at}: `{key}` is a secret and is not read from a config file; put it "
                    f"in {_env_name(key)} or name a file holding it with `{key}.file`"
                )
            if key.endswith(".file") and key[: -len(".file")] in SECRETS:
                name = key[: -len(".file")]
                values[SECRETS[name]], where[SECRETS[name]] = _read_secret_file(value, at), at
                continue
            if key not in PROPERTIES:
                known = ", ".join(sorted([*PROPERTIES, *(f"{s}.file" for s in SECRETS)]))
                raise KafkaConfigError(f"{at}: unknown property `{key}` (known: {known})")
            values[PROPERTIES[key]], where[PROPERTIES[key]] = value, at
    for prop, name in PROPERTIES.items():
        if _env_name(prop) in env:
            values[name], where[name] = env[_env_name(prop)], _env_name(prop)
    for prop, name in SECRETS.items():
        if _env_name(prop) in env:
            values[name], where[name] = Secret(env[_env_name(prop)]), _env_name(prop)
        elif _env_name(prop + ".file") in env:
            values[name] = _read_secret_file(env[_env_name(prop + ".file")], _env_name(prop + ".file"))
            where[name] = _env_name(prop + ".file")
    if bootstrap:
        values["bootstrap"], where["bootstrap"] = bootstrap, "--bootstrap"
    sources = sorted(set(where.values()) - {"--bootstrap"})
    values["source"] = ", ".join(sources) if sources else "defaults"
    return _checked(values, where)


def _checked(values: dict[str, Any], where: dict[str, str]) -> KafkaConfig:
    def bad(name: str, message: str) -> KafkaConfigError:
        return KafkaConfigError(f"{where.get(name, 'settings')}: {message}")

    protocol = str(values.get("security_protocol", "PLAINTEXT")).upper()
    if protocol not in PROTOCOLS:
        raise bad("security_protocol", f"security.protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    values["security_protocol"] = protocol
    config = KafkaConfig(**values)
    if config.uses_sasl:
        mechanism = (config.sasl_mechanism or "").upper()
        if mechanism not in MECHANISMS:
            got = f"{config.sasl_mechanism!r} is not" if config.sasl_mechanism else "is missing; it must be"
            raise bad("sasl_mechanism", f"sasl.mechanism {got} one of {', '.join(MECHANISMS)} ({protocol})")
        if not config.sasl_username or config.sasl_password is None:
            missing = "sasl.username" if not config.sasl_username else "the password"
            raise KafkaConfigError(
                f"{protocol} needs sasl.username and a password ({_env_name('sasl.password')} "
                f"or sasl.password.file); {missing} is missing"
            )
        config = replace(config, sasl_mechanism=mechanism)
    if config.ssl_endpoint_identification.lower() not in ("https", ""):
        raise bad(
            "ssl_endpoint_identification",
            "ssl.endpoint.identification.algorithm is `https` (verify the broker's name) or empty (do not)",
        )
    if bool(config.ssl_certificate_location) != bool(config.ssl_key_location):
        raise KafkaConfigError("mutual TLS needs both ssl.certificate.location and ssl.key.location")
    if config.uses_ssl:
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            file = getattr(config, name)
            if file and not Path(file).is_file():
                raise bad(name, f"{file}: no such file")
        config.ssl_context()  # the files must be usable now, not at the first connection
    return config


def kafka_config_of(target: str | list[str] | KafkaConfig) -> KafkaConfig:
    """A client's settings: ``target`` itself, or the environment's settings with ``target`` as the
    bootstrap servers (what SDK users and library callers who pass an address get)."""
    if isinstance(target, KafkaConfig):
        return target
    return load_kafka_config(bootstrap=target if isinstance(target, str) else ",".join(target))
