"""Crash recovery: rewind the bridge's Kafka consumer group to what the lake really holds.

The local DirectRunner's ``ReadFromPubSub`` acknowledges messages when it pulls them, so a pipeline
killed with SIGKILL loses what it had pulled but not yet committed, while the bridge has already
committed those records' Kafka offsets. Kafka still holds every record and every lake row keeps its
Kafka coordinates, so after a crash (pipeline and bridge stopped):

1. ``bronze_kafka_positions``: per (topic, partition), the first offset whose record is not *settled*
   in the lake: in Bronze and also accounted for downstream (its ``record_ref`` in Silver or
   quarantine, or its event_id already in Silver, i.e. a duplicate). Bronze alone is not enough:
   Bronze, quarantine and Silver are separate commits of one batch, and a kill can land between them.
2. ``rewind_consumer_group``: commit those offsets for the bridge's group (no member may be active);
   the restarted bridge re-sends everything from there. Records the lake already had come back as
   duplicates: Silver drops them by event_id (Bronze, append-only, keeps a second copy).
3. ``rebuild_gold``: recompute the Gold windows of the most recently ingested Silver rows from Silver,
   because Gold upserts that the kill cut off are not redone by re-sent duplicates. With
   ``--bigquery`` the rebuilt rows are also streamed to the warehouse (``warehouse.sync.send``): the pipeline
   sends Gold only as it commits it, so a closed window rebuilt in the lake would otherwise stay wrong
   in BigQuery (a newer ``updated_at`` supersedes the old row in the views).

    python -m pipelines.recovery --lake var/demo/lake              # dry run: what would be done
    python -m pipelines.recovery --lake var/demo/lake --rewind --rebuild-gold [--bigquery]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from vitals_lake import contract as c
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, KafkaSettings, lake_from_uri
from vitals_lake.lake import Lake
from vitals_lake.logs import configure as configure_logging
from vitals_lake.patient_keys import identity_map
from warehouse.sink import WarehouseSink
from warehouse.sync import send

log = logging.getLogger("pipelines.recovery")
PROG = "python -m pipelines.recovery"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

Position = tuple[str, int]  # (topic, partition)

__all__ = [
    "RecoveryError",
    "Rewind",
    "bronze_kafka_positions",
    "main",
    "rebuild_gold",
    "rewind_consumer_group",
    "unsettled_rows",
]


class RecoveryError(RuntimeError):
    """The consumer group could not be rewound (a member is active, or the broker refused)."""


@dataclass(frozen=True)
class Rewind:
    topic: str
    partition: int
    committed_before: int | None  # None: the group had no commit for the partition
    committed_after: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _event_id(raw: bytes) -> str | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = doc.get(c.EVENT_ID) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _bronze_kafka_rows(lake: Lake, topic: str | None) -> pa.Table:
    cols = [c.KAFKA_TOPIC, c.KAFKA_PARTITION, c.KAFKA_OFFSET, c.RECORD_REF, c.RAW]
    where = pc.field(c.KAFKA_OFFSET).is_valid() & pc.field(c.KAFKA_PARTITION).is_valid()
    if topic is not None:
        where &= pc.field(c.KAFKA_TOPIC) == topic
    return lake.read("bronze", columns=cols, where=where)


def _settled_mask(lake: Lake, bronze: pa.Table) -> list[bool]:
    """Per Bronze row: True when the record reached Silver or quarantine (or is a Silver duplicate)."""
    silver = lake.read("silver", columns=[c.RECORD_REF, c.EVENT_ID])
    quarantine = lake.read("quarantine", columns=[c.RECORD_REF])
    downstream = pa.chunked_array(
        [*silver[c.RECORD_REF].chunks, *quarantine[c.RECORD_REF].chunks], type=pa.string()
    )
    by_ref = pc.is_in(bronze[c.RECORD_REF], value_set=downstream.combine_chunks()).to_pylist()
    event_ids = set(silver[c.EVENT_ID].to_pylist())
    raws = bronze[c.RAW]
    # Only records whose own ref is not downstream need parsing: duplicates and cut-off batches.
    return [bool(hit) or _event_id(raws[i].as_py()) in event_ids for i, hit in enumerate(by_ref)]


def bronze_kafka_positions(
    lake: Lake, *, topic: str | None = None, settled: bool = True
) -> dict[Position, int]:
    """Per (topic, partition) in Bronze: the first offset (from 0) whose record the lake does not hold.

    With ``settled`` (the default) a Bronze row counts only when it is accounted for downstream too
    (see the module docstring); ``settled=False`` is the plain "first offset missing from Bronze".
    Everything before the returned offset is in the lake; everything from it on must be re-sent.
    Offsets are scanned from 0: ``rewind_consumer_group`` raises a position to the log's start.
    """
    bronze = _bronze_kafka_rows(lake, topic)
    if bronze.num_rows == 0:
        return {}
    keep = _settled_mask(lake, bronze) if settled else [True] * bronze.num_rows
    present: dict[Position, set[int]] = {}
    for t, p, o, ok in zip(
        bronze[c.KAFKA_TOPIC].to_pylist(),
        bronze[c.KAFKA_PARTITION].to_pylist(),
        bronze[c.KAFKA_OFFSET].to_pylist(),
        keep,
        strict=True,
    ):
        offsets = present.setdefault((t, p), set())
        if ok:
            offsets.add(o)
    positions = {}
    for key, offsets in sorted(present.items()):
        nxt = 0
        while nxt in offsets:
            nxt += 1
        positions[key] = nxt
    return positions


def unsettled_rows(lake: Lake, *, topic: str | None = None) -> int:
    """Bronze rows from Kafka not accounted for downstream (a batch a crash cut off after Bronze)."""
    bronze = _bronze_kafka_rows(lake, topic)
    return sum(not ok for ok in _settled_mask(lake, bronze)) if bronze.num_rows else 0


def _active_members(kafka: KafkaSettings, timeout: float) -> int | None:
    """Members of the group, or None when the broker cannot describe groups."""
    admin = AdminClient(kafka.client_config())
    try:
        future = admin.describe_consumer_groups([kafka.group_id], request_timeout=timeout)[kafka.group_id]
        return len(future.result(timeout=timeout).members)
    except (KafkaException, TimeoutError, ValueError, NotImplementedError) as exc:
        log.warning("cannot describe group %s (%s): make sure no bridge runs", kafka.group_id, exc)
        return None


def rewind_consumer_group(
    kafka: KafkaSettings, positions: Mapping[Position, int], *, timeout: float = 10.0
) -> list[Rewind]:
    """Commit ``positions`` (partitions of ``kafka.topic`` absent from them: the log start) for the group.

    The group must have no active member (stop the bridge first): a member's next commit would
    overwrite the rewind. Returns what was committed, before and after, per partition.
    """
    members = _active_members(kafka, timeout)
    if members:
        raise RecoveryError(f"group {kafka.group_id} has {members} active member(s): stop the bridge first")
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": kafka.group_id,
            "enable.auto.commit": False,
            "client.id": "vitals-recovery",
        }
    )
    try:
        meta = consumer.list_topics(kafka.topic, timeout=timeout).topics.get(kafka.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise RecoveryError(f"topic {kafka.topic} not found")
        parts = sorted(meta.partitions)
        before = {
            tp.partition: (tp.offset if tp.offset >= 0 else None)
            for tp in consumer.committed([TopicPartition(kafka.topic, p) for p in parts], timeout=timeout)
        }
        targets = []
        for p in parts:
            target = positions.get((kafka.topic, p), 0)
            low, _high = consumer.get_watermark_offsets(
                TopicPartition(kafka.topic, p), timeout=timeout, cached=False
            ) or (0, 0)
            if low > target:
                log.warning("partition %d: offsets %d..%d are gone from the log", p, target, low - 1)
                target = low
            targets.append(TopicPartition(kafka.topic, p, target))
        result = consumer.commit(offsets=targets, asynchronous=False) or []
        failed = [tp for tp in result if tp.error is not None]
        if failed:
            raise RecoveryError(f"commit refused: {[(tp.partition, str(tp.error)) for tp in failed]}")
        after = {
            tp.partition: tp.offset
            for tp in consumer.committed([TopicPartition(kafka.topic, p) for p in parts], timeout=timeout)
        }
    except KafkaException as exc:
        raise RecoveryError(f"rewinding group {kafka.group_id}: {exc}") from exc
    finally:
        consumer.close()
    wanted = {tp.partition: tp.offset for tp in targets}
    if after != wanted:
        raise RecoveryError(f"group {kafka.group_id} reads back {after}, expected {wanted}")
    return [Rewind(kafka.topic, p, before.get(p), wanted[p]) for p in parts]


def rebuild_gold(lake: Lake, *, minutes: float = 15.0) -> pa.Table:
    """Recompute from Silver the Gold windows of the Silver rows ingested in the last ``minutes``
    (counted back from the newest Silver row). Run it while the pipeline is stopped. Returns the Gold
    rows written (``c.GOLD_SCHEMA``)."""
    if not lake.exists("silver") or lake.count("silver") == 0:
        return c.GOLD_SCHEMA.empty_table()
    ingest = lake.read("silver", columns=[c.INGEST_TIME])[c.INGEST_TIME]
    since = pc.max(ingest).as_py() - timedelta(minutes=minutes)
    recent = lake.read(
        "silver",
        columns=[c.PATIENT_KEY, c.TIMESTAMP],
        where=pc.field(c.INGEST_TIME) >= pa.scalar(since, ingest.type),
    )
    if recent.num_rows == 0:
        return c.GOLD_SCHEMA.empty_table()
    # Imported here: pipelines.lake_io pulls in Apache Beam, which a dry run does not need.
    from vitals_lake.gold_upsert import changed_minutes, derive_trends, upsert_gold_windows  # noqa: PLC0415

    # Every (patient, minute) with a recent reading, recomputed as the pipeline's Gold writer would;
    # then the trend tables those Gold rows feed.
    changed = changed_minutes(recent)
    batch = f"recovery-{time.time_ns() // 1000}"
    gold = upsert_gold_windows(lake, changed, batch_id=batch)
    derive_trends(lake, gold, batch_id=batch)
    return gold


# --- CLI -------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    kafka = KafkaSettings.from_env()
    p = argparse.ArgumentParser(
        prog=PROG,
        description="After a pipeline crash: rewind the bridge's consumer group to what the lake holds.",
    )
    p.add_argument("--lake", required=True, help="lake root (local directory or gs://bucket/prefix)")
    p.add_argument("--bootstrap", default=kafka.bootstrap_servers, help="Kafka host:port")
    p.add_argument("--topic", default=kafka.topic, help="Kafka topic the bridge reads")
    p.add_argument("--group", default=kafka.group_id, help="the bridge's consumer group")
    p.add_argument("--rewind", action="store_true", help="commit the positions (default: dry run)")
    p.add_argument("--rebuild-gold", action="store_true", help="recompute recent Gold windows from Silver")
    p.add_argument("--gold-minutes", type=float, default=15.0, help="how far back --rebuild-gold reaches")
    p.add_argument(
        "--identity-map",
        action="store_true",
        help="with --bigquery: send the lake's identity map (patient_keys) to BigQuery (after a migration)",
    )
    p.add_argument(
        "--bigquery",
        action="store_true",
        help="with --rebuild-gold / --identity-map: stream the rebuilt Gold rows / the identity map to"
        " BigQuery (VITALS_GCP_PROJECT, VITALS_BQ_DATASET; VITALS_BQ_ENDPOINT for an emulator)",
    )
    p.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS)
    return p


def _report(positions: Mapping[Position, int], unsettled: int, rewinds: Iterable[Rewind]) -> dict[str, Any]:
    return {
        "positions": {f"{t}:{p}": o for (t, p), o in sorted(positions.items())},
        "unsettled_bronze_rows": unsettled,
        "rewound": [r.to_dict() for r in rewinds],
    }


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _parser()
    except ConfigError as exc:  # a malformed VITALS_KAFKA_* variable (the defaults)
        return usage_error(argparse.ArgumentParser(prog=PROG), f"environment: {exc}")
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper(), fmt="%(levelname)s %(name)s: %(message)s")
    if args.gold_minutes <= 0:
        return usage_error(parser, "--gold-minutes must be > 0")
    if args.bigquery and not (args.rebuild_gold or args.identity_map):
        return usage_error(
            parser,
            "--bigquery sends the rebuilt Gold rows or the identity map: it needs --rebuild-gold"
            " or --identity-map",
        )
    if args.identity_map and not args.bigquery:
        return usage_error(parser, "--identity-map sends the lake's identity map: it needs --bigquery")
    try:
        # The command line names the broker and the group; how to authenticate comes from the environment.
        kafka = replace(
            KafkaSettings.from_env(), bootstrap_servers=args.bootstrap, topic=args.topic, group_id=args.group
        )
        lake = Lake(lake_from_uri(args.lake))
        warehouse: WarehouseSink | None = None
        if args.bigquery:
            from warehouse.bigquery import BigQuerySink  # noqa: PLC0415 - the BigQuery client only when asked

            warehouse = BigQuerySink.from_env()
    except ConfigError as exc:
        return usage_error(parser, str(exc))
    positions = bronze_kafka_positions(lake, topic=kafka.topic)
    unsettled = unsettled_rows(lake, topic=kafka.topic)
    rewinds: list[Rewind] = []
    if args.rewind:
        try:
            rewinds = rewind_consumer_group(kafka, positions)
        except RecoveryError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    report = _report(positions, unsettled, rewinds)
    report["dry_run"] = not args.rewind
    if args.identity_map and warehouse is not None:
        # The whole map (one row per patient): the warehouse drops the keys it has by insert id.
        keys = identity_map(lake.read("patient_keys"))
        report.setdefault("warehouse", {})[c.PATIENT_KEYS_TABLE] = _sent(
            warehouse, c.PATIENT_KEYS_TABLE, keys
        )
    if args.rebuild_gold:
        gold = rebuild_gold(lake, minutes=args.gold_minutes)
        report["gold_rows_rebuilt"] = gold.num_rows
        if warehouse is not None:
            report.setdefault("warehouse", {})[c.GOLD_TABLE] = _sent(warehouse, c.GOLD_TABLE, gold)
    print(json.dumps(report, indent=2))
    return 0


def _sent(warehouse: WarehouseSink, table: str, rows: pa.Table) -> dict[str, int]:
    sent = send(warehouse, table, rows)
    if sent.rejected:
        log.error("recovery: %d %s rows went to the warehouse's dead letters", sent.rejected, table)
    return {"inserted": sent.inserted, "duplicates": sent.duplicates, "rejected": sent.rejected}


if __name__ == "__main__":
    sys.exit(main())
