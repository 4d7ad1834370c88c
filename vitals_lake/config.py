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
from typing import Final

from vitals_lake import contract as c

LOCAL_PROJECT: Final = "vitals-lake-local"
_BOOTSTRAP_RE = re.compile(r"^[\w.\-]+:\d{1,5}(,[\w.\-]+:\d{1,5})*$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_RESOURCE_RE = re.compile(r"^[A-Za-z][\w.\-~+%]{2,254}$")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting and what is expected."""


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = c.VITALS_TOPIC
    group_id: str = "vitals-bridge"

    def __post_init__(self) -> None:
        if not _BOOTSTRAP_RE.match(self.bootstrap_servers):
            raise ConfigError(
                f"kafka bootstrap_servers must be host:port[,host:port]: {self.bootstrap_servers!r}"
            )
        _check_resource("kafka topic", self.topic)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        e = os.environ if env is None else env
        return cls(
            bootstrap_servers=e.get("VITALS_KAFKA_BOOTSTRAP", cls.bootstrap_servers),
            topic=e.get("VITALS_KAFKA_TOPIC", cls.topic),
            group_id=e.get("VITALS_KAFKA_GROUP", cls.group_id),
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
