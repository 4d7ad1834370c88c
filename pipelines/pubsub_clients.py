"""Pub/Sub clients for a ``PubSubSettings``: the emulator over plain gRPC, or real Pub/Sub with ADC.

The emulator is reached through an explicit insecure channel instead of setting ``PUBSUB_EMULATOR_HOST`` in
``os.environ``: a library must not change its process's environment behind other code's back.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from vitals_lake.config import PubSubSettings

ACK_DEADLINE_SECONDS = 60


def _channel(host: str) -> Any:
    # No HTTP proxy for a local emulator even if the environment names one.
    return grpc.insecure_channel(host, options=[("grpc.enable_http_proxy", 0)])


def publisher_client(settings: PubSubSettings, *, batch_settings: Any = None) -> Any:
    """A ``pubsub_v1.PublisherClient`` for the settings (emulator when ``emulator_host`` is set)."""
    kwargs: dict[str, Any] = {}
    if batch_settings is not None:
        kwargs["batch_settings"] = batch_settings
    if settings.emulator_host:
        kwargs["transport"] = PublisherGrpcTransport(channel=_channel(settings.emulator_host))
    return pubsub_v1.PublisherClient(**kwargs)


def subscriber_client(settings: PubSubSettings) -> Any:
    """A ``pubsub_v1.SubscriberClient`` for the settings (emulator when ``emulator_host`` is set)."""
    if settings.emulator_host:
        return pubsub_v1.SubscriberClient(
            transport=SubscriberGrpcTransport(channel=_channel(settings.emulator_host))
        )
    return pubsub_v1.SubscriberClient()


def close_publisher(client: Any) -> None:
    """Flush and stop a publisher client, then close its channel."""
    try:
        client.stop()
    finally:
        client.transport.close()


def ensure_topic(settings: PubSubSettings, topic: str | None = None) -> str:
    """Create the topic if it does not exist; returns its path."""
    path = f"projects/{settings.project}/topics/{topic or settings.topic}"
    client = publisher_client(settings)
    try:
        client.create_topic(name=path)
    except AlreadyExists:
        pass
    finally:
        close_publisher(client)
    return path


def ensure_subscription(
    settings: PubSubSettings,
    subscription: str | None = None,
    *,
    topic: str | None = None,
    ack_deadline_seconds: int = ACK_DEADLINE_SECONDS,
) -> str:
    """Create a pull subscription on the topic if it does not exist; returns its path."""
    topic_path = f"projects/{settings.project}/topics/{topic or settings.topic}"
    path = f"projects/{settings.project}/subscriptions/{subscription or settings.subscription}"
    client = subscriber_client(settings)
    try:
        client.create_subscription(name=path, topic=topic_path, ack_deadline_seconds=ack_deadline_seconds)
    except AlreadyExists:
        pass
    finally:
        client.close()
    return path
