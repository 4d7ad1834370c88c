"""``vitals-lake redrive`` against the Pub/Sub emulator: dead letters go back to their topic, once."""

from __future__ import annotations

import json
import uuid

import pytest

from harness.stack.local import LocalStack
from pipelines import redrive
from pipelines.pubsub_clients import close_publisher, publisher_client, subscriber_client
from vitals_lake.config import PubSubSettings


def _pull_all(settings: PubSubSettings, subscription: str) -> list[tuple[bytes, dict[str, str]]]:
    client = subscriber_client(settings)
    got: list[tuple[bytes, dict[str, str]]] = []
    try:
        for _ in range(20):
            request = {"subscription": subscription, "max_messages": 100}
            response = client.pull(request=request, timeout=2)
            if not response.received_messages:
                break
            got += [(r.message.data, dict(r.message.attributes)) for r in response.received_messages]
            client.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [r.ack_id for r in response.received_messages],
                }
            )
    finally:
        client.close()
    return got


@pytest.fixture
def dead_letters(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> tuple[PubSubSettings, PubSubSettings]:
    """A main topic with the pipeline's subscription, and a dead-letter topic holding 7 messages."""
    suffix = uuid.uuid4().hex[:10]
    main = local_stack.create_pubsub_topic(f"vitals-{suffix}", subscriptions=(f"vitals-{suffix}-beam",))
    dead = local_stack.create_pubsub_topic(
        f"vitals-{suffix}-dl", subscriptions=(f"vitals-{suffix}-dl-inspect",)
    )
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", str(main.emulator_host))
    monkeypatch.setenv("VITALS_GCP_PROJECT", main.project)
    publisher = publisher_client(dead)
    try:
        for i in range(7):
            publisher.publish(
                dead.topic_path, f'{{"reading": {i}}}'.encode(), source="kafka", offset=str(i)
            ).result()
    finally:
        close_publisher(publisher)
    return main, dead


def test_redrive_moves_every_dead_letter_back_once(
    dead_letters: tuple[PubSubSettings, PubSubSettings], capsys: pytest.CaptureFixture[str]
) -> None:
    main, dead = dead_letters
    argv = ["--subscription", dead.subscription_path, "--topic", main.topic_path]

    assert redrive.main([*argv, "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["pulled"] == dry["released"] == 7 and dry["republished"] == 0
    assert _pull_all(main, main.subscription_path) == []  # nothing published by a dry run

    assert redrive.main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pulled"] == report["republished"] == report["acknowledged"] == 7
    assert "reading" not in json.dumps(report)  # ids and counts, never payloads

    arrived = _pull_all(main, main.subscription_path)
    assert sorted(data for data, _ in arrived) == sorted(f'{{"reading": {i}}}'.encode() for i in range(7))
    for _, attributes in arrived:
        assert attributes["source"] == "kafka"
        assert attributes[redrive.REDRIVEN_FROM] == dead.subscription_path
    assert _pull_all(dead, dead.subscription_path) == []  # acknowledged: the dead letters are gone

    assert redrive.main(argv) == 0  # again: nothing left to move
    assert "0 pulled" in capsys.readouterr().out
    assert _pull_all(main, main.subscription_path) == []


def test_redrive_stops_at_max_messages(dead_letters: tuple[PubSubSettings, PubSubSettings]) -> None:
    main, dead = dead_letters
    argv = ["--subscription", dead.subscription_path, "--topic", main.topic_path, "--max-messages", "3"]
    assert redrive.main(argv) == 0
    assert len(_pull_all(main, main.subscription_path)) == 3
    assert len(_pull_all(dead, dead.subscription_path)) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subscription", "dl", "--topic", "projects/p-12345/topics/topic1"], "--subscription must be"),
        (["--subscription", "projects/p-12345/subscriptions/sub1", "--topic", "t"], "--topic must be"),
    ],
)
def test_malformed_paths_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert redrive.main(args) == 2
    assert message in capsys.readouterr().err
