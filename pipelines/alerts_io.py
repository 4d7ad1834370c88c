"""Alert events out of the pipeline: published to the alerts topic, one Pub/Sub message per event.

Publishing waits for every message's acknowledgement before the batch counts as done; a failure
raises, the runner retries the bundle, and the notifier de-duplicates the re-sent events on
``alert_id`` + state (at-least-once here, exactly-once to a clinician's inbox there).
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import orjson
import pyarrow as pa
from apache_beam.metrics import Metrics

from vitals_lake.alert_events import attributes, to_json

PUBLISH_TIMEOUT_SECONDS = 60.0


class PublishAlertsFn(beam.DoFn):
    def __init__(self, topic_path: str) -> None:
        self.topic_path = topic_path
        self.publisher: object | None = None
        self.published = Metrics.counter("alerts", "events_published")

    def setup(self) -> None:
        from google.cloud import pubsub_v1  # noqa: PLC0415 - a worker dependency, not a graph one

        self.publisher = pubsub_v1.PublisherClient()  # honours PUBSUB_EMULATOR_HOST locally

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[None]:
        from google.cloud import pubsub_v1  # noqa: PLC0415

        assert isinstance(self.publisher, pubsub_v1.PublisherClient)
        _, events = batch
        futures = []
        for body in to_json(events):
            event = orjson.loads(body)
            futures.append(self.publisher.publish(self.topic_path, body, **attributes(event)))
        for future in futures:
            future.result(timeout=PUBLISH_TIMEOUT_SECONDS)
        self.published.inc(len(futures))
        return iter(())


class PublishAlerts(beam.PTransform):
    """(batch_id, alert events) -> messages on the alerts topic."""

    def __init__(self, topic_path: str) -> None:
        super().__init__()
        self.topic_path = topic_path

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "Publish" >> beam.ParDo(PublishAlertsFn(self.topic_path))
