"""Shared fixtures: one real local stack (Tansu + Pub/Sub emulator) per test session; and the tiers.

A missing prerequisite FAILS the tests that need it (with what to install) instead of skipping them:
a green run must mean the integration tests really ran.

Tiers by cost (tests/tiers.py): every test under ``tests/<tier>/`` is marked ``<tier>`` here, so
``pytest -m unit`` selects exactly what ``pytest tests/unit`` collects; a test marked with another tier,
or outside a tier folder, stops the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from harness.stack import LocalStack, MissingPrerequisite, PubSubEmulator, TansuBroker
from harness.stack.bigquery import BigQueryEmulator
from tests.tiers import mark_tiers
from vitals_lake.config import KafkaSettings, PubSubSettings

TESTS_DIR: Final = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_tiers(items, TESTS_DIR)


@pytest.fixture(scope="session", autouse=True)
def _mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs tracked by the ML CLIs go to a temporary store, never the repository's var/ml/mlruns."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path_factory.mktemp('mlruns')}")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """One BigQuery emulator per session (its own venv, built on first use), stopped at the end."""
    emu = BigQueryEmulator(tmp_path_factory.mktemp("bigquery"))
    try:
        emu.start()
    except MissingPrerequisite as exc:
        pytest.fail(f"BigQuery emulator prerequisite missing: {exc}", pytrace=False)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A started LocalStack (topics patient-vitals / patient-vitals-beam created), stopped at session end."""
    stack = LocalStack(tmp_path_factory.mktemp("stack"))
    try:
        stack.start()
    except MissingPrerequisite as exc:
        pytest.fail(f"local stack prerequisite missing: {exc}", pytrace=False)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def tansu(local_stack: LocalStack) -> TansuBroker:
    """The session's running Tansu broker (shared with ``local_stack``: one broker per session)."""
    return local_stack.tansu


@pytest.fixture(scope="session")
def pubsub_emulator(local_stack: LocalStack) -> PubSubEmulator:
    """The session's running Pub/Sub emulator (shared with ``local_stack``)."""
    return local_stack.emulator


@dataclass(frozen=True)
class FreshTopics:
    """A Kafka topic (4 partitions) + group and a Pub/Sub topic + subscription, unique to one test."""

    kafka: KafkaSettings
    pubsub: PubSubSettings
    partitions: int


@pytest.fixture
def fresh_topics(local_stack: LocalStack) -> FreshTopics:
    suffix = uuid.uuid4().hex[:10]
    kafka = local_stack.create_kafka_topic(f"vitals-{suffix}", partitions=4)
    kafka = KafkaSettings(
        bootstrap_servers=kafka.bootstrap_servers, topic=kafka.topic, group_id=f"bridge-{suffix}"
    )
    pubsub = local_stack.create_pubsub_topic(f"vitals-{suffix}", subscriptions=(f"vitals-{suffix}-sub",))
    return FreshTopics(kafka=kafka, pubsub=pubsub, partitions=4)
