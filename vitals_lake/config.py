"""Typed settings, one object per backend, validated once where they enter the program.

Every setting can come from the environment (``VITALS_*``, plus Google's own
``PUBSUB_EMULATOR_HOST``) or be passed explicitly; components never read the environment themselves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from vitals_lake import contract as c

LOCAL_PROJECT: Final = "vitals-lake-local"
_BOOTSTRAP_RE = re.compile(r"^[\w.\-]+:\d{1,5}(,[\w.\-]+:\d{1,5})*$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_RESOURCE_RE = re.compile(r"^[A-Za-z][\w.\-~+%]{2,254}$")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting and what is expected."""


KafkaSecurity = Literal["PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """Where Kafka is and how to reach it. ``PLAINTEXT`` for the local broker; ``SASL_SSL`` (TLS with
    certificate checks, then SASL) for a managed Kafka, e.g. Google Cloud Managed Service for Apache
    Kafka with ``PLAIN`` and a service account's key as the password. The password comes from a file
    (a mounted secret), never from the command line, and never appears in a repr."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = c.VITALS_TOPIC
    group_id: str = "vitals-bridge"
    security_protocol: KafkaSecurity = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None  # a CA bundle to trust besides the system's

    def __post_init__(self) -> None:
        if not _BOOTSTRAP_RE.match(self.bootstrap_servers):
            raise ConfigError(
                f"kafka bootstrap_servers must be host:port[,host:port]: {self.bootstrap_servers!r}"
            )
        _check_resource("kafka topic", self.topic)
        if self.security_protocol not in ("PLAINTEXT", "SASL_SSL"):
            raise ConfigError(
                f"kafka security_protocol must be PLAINTEXT or SASL_SSL: {self.security_protocol!r}"
            )
        if self.sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise ConfigError(
                f"kafka sasl_mechanism must be PLAIN or SCRAM-SHA-256/512: {self.sasl_mechanism!r}"
            )
        if self.security_protocol == "SASL_SSL" and not (self.sasl_username and self.sasl_password):
            raise ConfigError(
                "kafka SASL_SSL needs a username and a password (VITALS_KAFKA_SASL_PASSWORD_FILE)"
            )

    def client_config(self) -> dict[str, str | int | float | bool]:
        """The librdkafka settings that connect and authenticate (every client merges them)."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol == "SASL_SSL":
            config.update(
                {
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": str(self.sasl_username),
                    "sasl.password": str(self.sasl_password),
                    "ssl.endpoint.identification.algorithm": "https",  # check the broker's host name
                }
            )
            if self.ssl_ca_location:
                config["ssl.ca.location"] = self.ssl_ca_location
        return config

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        e = os.environ if env is None else env
        password = None
        if e.get("VITALS_KAFKA_SASL_PASSWORD_FILE"):
            path = Path(e["VITALS_KAFKA_SASL_PASSWORD_FILE"])
            try:
                password = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"VITALS_KAFKA_SASL_PASSWORD_FILE={path}: cannot read it ({exc})") from exc
        return cls(
            bootstrap_servers=e.get("VITALS_KAFKA_BOOTSTRAP", cls.bootstrap_servers),
            topic=e.get("VITALS_KAFKA_TOPIC", cls.topic),
            group_id=e.get("VITALS_KAFKA_GROUP", cls.group_id),
            security_protocol=e.get("VITALS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),  # type: ignore[arg-type]  # checked
            sasl_mechanism=e.get("VITALS_KAFKA_SASL_MECHANISM", "PLAIN"),  # type: ignore[arg-type]  # checked
            sasl_username=e.get("VITALS_KAFKA_SASL_USERNAME") or None,
            sasl_password=password,
            ssl_ca_location=e.get("VITALS_KAFKA_SSL_CA") or None,
        )


@dataclass(frozen=True, kw_only=True)
class PubSubSettings:
    project: str = LOCAL_PROJECT
    topic: str = c.VITALS_TOPIC
    subscription: str = c.VITALS_SUBSCRIPTION
    emulator_host: str | None = None  # "127.0.0.1:8085" locally; None means real Pub/Sub

    def __post_init__(self) -> None:
        if not _PROJECT_RE.match(self.project):
            raise ConfigError(f"GCP project id is malformed: {self.project!r}")
        _check_resource("pubsub topic", self.topic)
        _check_resource("pubsub subscription", self.subscription)
        if self.emulator_host is not None and not _BOOTSTRAP_RE.match(self.emulator_host):
            raise ConfigError(f"PUBSUB_EMULATOR_HOST must be host:port: {self.emulator_host!r}")

    @property
    def topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"

    @property
    def subscription_path(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PubSubSettings:
        e = os.environ if env is None else env
        return cls(
            project=e.get("VITALS_GCP_PROJECT", cls.project),
            topic=e.get("VITALS_PUBSUB_TOPIC", cls.topic),
            subscription=e.get("VITALS_PUBSUB_SUBSCRIPTION", cls.subscription),
            emulator_host=e.get("PUBSUB_EMULATOR_HOST") or None,
        )


@dataclass(frozen=True, kw_only=True)
class LocalLake:
    """Delta tables on local disk."""

    root: Path

    def __post_init__(self) -> None:
        if str(self.root).startswith(("gs://", "s3://")):
            raise ConfigError(f"LocalLake root must be a local path, got {self.root!r}: use GcsLake")

    def table_uri(self, table: str) -> str:
        return str(Path(self.root).resolve() / table)

    @property
    def storage_options(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True, kw_only=True)
class GcsLake:
    """Delta tables on Cloud Storage. Credentials come from the environment (ADC) unless a
    service-account file is named; ``base_url`` points object_store at a local GCS server in tests."""

    bucket: str
    prefix: str = "lake"
    service_account_path: str | None = None
    base_url: str | None = None

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z0-9][a-z0-9._\-]{1,61}[a-z0-9]$", self.bucket):
            raise ConfigError(f"GCS bucket name is malformed: {self.bucket!r}")

    def table_uri(self, table: str) -> str:
        prefix = self.prefix.strip("/")
        return f"gs://{self.bucket}/{prefix}/{table}" if prefix else f"gs://{self.bucket}/{table}"

    @property
    def storage_options(self) -> dict[str, str]:
        opts: dict[str, str] = {}
        if self.service_account_path:
            opts["google_service_account_path"] = self.service_account_path
        if self.base_url:
            opts["google_base_url"] = self.base_url  # object_store's key (gcs_base_url is ignored)
        return opts


LakeSettings = LocalLake | GcsLake


def lake_from_uri(uri: str, *, service_account_path: str | None = None) -> LakeSettings:
    """``gs://bucket/prefix`` or a local directory."""
    if uri.startswith("gs://"):
        bucket, _, prefix = uri.removeprefix("gs://").partition("/")
        return GcsLake(bucket=bucket, prefix=prefix, service_account_path=service_account_path)
    if "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"lake URI must be a local path or gs://bucket/prefix: {uri!r}")
    return LocalLake(root=Path(uri.removeprefix("file://")))


@dataclass(frozen=True, kw_only=True)
class StreamSettings:
    """Timing of the streaming pipeline (seconds)."""

    commit_interval: float = 5.0  # one Delta commit per table per interval, never per reading
    allowed_lateness: int = 600  # the DirectRunner's watermark is wall-clock: cover restarts and backlogs
    dedup_horizon: int = 3600  # event_id duplicates are recognised this far apart (event time)
    clock_skew: int = 300  # a reading this far ahead of its ingest time is quarantined as "in the future"

    def __post_init__(self) -> None:
        if self.commit_interval <= 0:
            raise ConfigError(f"commit_interval must be > 0 seconds, got {self.commit_interval}")
        if self.allowed_lateness < 0 or self.dedup_horizon < 0:
            raise ConfigError("allowed_lateness and dedup_horizon must be >= 0")


@dataclass(frozen=True, kw_only=True)
class EnvelopeLimits:
    """How the bridge packs readings into one Pub/Sub message."""

    max_records: int = 500
    max_bytes: int = 900_000  # well under Pub/Sub's 10 MB limit
    linger_seconds: float = 0.25

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1024 or self.linger_seconds < 0:
            raise ConfigError("envelope limits: max_records >= 1, max_bytes >= 1024, linger >= 0")


@dataclass(frozen=True, kw_only=True)
class RunPaths:
    """Where a local run keeps its logs, lake and outputs."""

    root: Path = field(default_factory=lambda: Path("var"))

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def _check_resource(what: str, name: str) -> None:
    if not _RESOURCE_RE.match(name) or name.lower().startswith("goog"):
        raise ConfigError(f"{what} name is malformed: {name!r}")
