"""``vitals-lake redrive``: send the messages held on a dead-letter subscription back to their topic.

    python -m pipelines.redrive --subscription projects/P/subscriptions/patient-vitals-dead-letter-inspect \\
        --topic projects/P/topics/patient-vitals [--max-messages N] [--dry-run] [--json]

Pub/Sub moves a message to a dead-letter topic after too many failed deliveries (the readings'
subscription, the notifier's trigger). Once the cause is fixed, this pulls the dead-letter
subscription in batches, publishes each message again to ``--topic`` with its data and attributes
(plus ``redriven_from``: the subscription), waits until Pub/Sub has accepted every publish of the
batch, and only then acknowledges the batch. Nothing is acknowledged that was not republished.

A crash between publishing and acknowledging sends those messages twice: the pipeline drops the
second copy of a reading as a counted duplicate (its event id), and the notifier sends an alert once
per notification id, so a redrive can simply be run again. ``--dry-run`` pulls one batch (up to 100),
counts and releases it (the messages stay on the subscription). With ``PUBSUB_EMULATOR_HOST`` set it
talks to the emulator. The output gives counts and message ids, never the payloads.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from pipelines.pubsub_clients import close_publisher, publisher_client, subscriber_client
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, PubSubSettings
from vitals_lake.logs import configure as configure_logging

PROG: Final = "python -m pipelines.redrive"
REDRIVEN_FROM: Final = "redriven_from"  # attribute added to each republished message
BATCH: Final = 100
# Pub/Sub may answer a pull with nothing while messages remain; an empty pull waits its timeout out.
EMPTY_PULLS_TO_STOP: Final = 2
PULL_TIMEOUT_S: Final = 5.0
_SUBSCRIPTION_RE: Final = re.compile(
    r"^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/subscriptions/[A-Za-z][\w.~+%-]{2,254}$"
)
_TOPIC_RE: Final = re.compile(r"^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/topics/[A-Za-z][\w.~+%-]{2,254}$")

log = logging.getLogger("redrive")


@dataclass
class RedriveReport:
    subscription: str
    topic: str
    dry_run: bool
    pulled: int = 0
    republished: int = 0
    acknowledged: int = 0
    released: int = 0  # --dry-run: handed back to the subscription
    message_ids: list[str] = field(default_factory=list)  # the dead-letter subscription's ids


def redrive(
    *,
    subscription: str,
    topic: str,
    settings: PubSubSettings,
    max_messages: int | None = None,
    dry_run: bool = False,
    on_batch: Callable[[RedriveReport], None] | None = None,
) -> RedriveReport:
    """Move up to ``max_messages`` (all when None) from ``subscription`` to ``topic``."""
    report = RedriveReport(subscription=subscription, topic=topic, dry_run=dry_run)
    subscriber = subscriber_client(settings)
    publisher = None if dry_run else publisher_client(settings)
    empty = 0
    try:
        while empty < EMPTY_PULLS_TO_STOP and (max_messages is None or report.pulled < max_messages):
            want = BATCH if max_messages is None else min(BATCH, max_messages - report.pulled)
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": want}, timeout=PULL_TIMEOUT_S
            )
            received = list(response.received_messages)
            if not received:
                empty += 1
                continue
            empty = 0
            report.pulled += len(received)
            report.message_ids.extend(r.message.message_id for r in received)
            ack_ids = [r.ack_id for r in received]
            if publisher is None:
                # Released at once, so a dry run leaves the subscription as it found it. Released
                # messages come straight back: one batch shows what is there (a second would count
                # them again).
                subscriber.modify_ack_deadline(
                    request={"subscription": subscription, "ack_ids": ack_ids, "ack_deadline_seconds": 0}
                )
                report.released += len(received)
                break
            futures = [
                publisher.publish(
                    topic, r.message.data, **{**dict(r.message.attributes), REDRIVEN_FROM: subscription}
                )
                for r in received
            ]
            for future in futures:
                future.result(timeout=60)  # raises: the batch stays unacknowledged and is redelivered
            report.republished += len(futures)
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids})
            report.acknowledged += len(ack_ids)
            if on_batch is not None:
                on_batch(report)
    finally:
        if publisher is not None:
            close_publisher(publisher)
        subscriber.close()
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n")[0])
    p.add_argument("--subscription", required=True, help="the dead-letter subscription (full path)")
    p.add_argument("--topic", required=True, help="where the messages go again (full path)")
    p.add_argument("--max-messages", type=int, help="stop after this many (default: until it is empty)")
    p.add_argument("--dry-run", action="store_true", help="pull, count and release; publish nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not _SUBSCRIPTION_RE.match(args.subscription):
        return usage_error(
            parser, f"--subscription must be projects/P/subscriptions/S: {args.subscription!r}"
        )
    if not _TOPIC_RE.match(args.topic):
        return usage_error(parser, f"--topic must be projects/P/topics/T: {args.topic!r}")
    if args.max_messages is not None and args.max_messages < 1:
        return usage_error(parser, "--max-messages must be at least 1")
    configure_logging(logging.INFO, fmt="%(levelname)s %(name)s: %(message)s")
    try:
        settings = PubSubSettings.from_env()
    except ConfigError as exc:
        return usage_error(parser, str(exc))

    def progress(report: RedriveReport) -> None:
        log.info("redrive batch", extra={"fields": _counts(report)})

    report = redrive(
        subscription=args.subscription,
        topic=args.topic,
        settings=settings,
        max_messages=args.max_messages,
        dry_run=args.dry_run,
        on_batch=progress,
    )
    log.info("redrive done", extra={"fields": _counts(report)})
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        verb = "released (dry run)" if report.dry_run else "republished and acknowledged"
        done = report.released if report.dry_run else report.acknowledged
        print(f"{report.subscription} -> {report.topic}: {report.pulled} pulled, {done} {verb}")
    return 0


def _counts(report: RedriveReport) -> dict[str, Any]:
    return {k: v for k, v in asdict(report).items() if k != "message_ids"}


if __name__ == "__main__":
    sys.exit(main())
