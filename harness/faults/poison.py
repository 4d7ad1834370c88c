"""Poison input mid-stream: valid readings, then messages and records of many bad shapes, then valid
readings again, into a running pipeline, straight into Pub/Sub and through the Kafka bridge.

What a producer anywhere upstream can send: envelope-shaped garbage (the shape that once stopped the
local runner after four tries and lost every reading of the bundle), non-JSON, invalid UTF-8, deep
nesting, a record larger than any reading, a Kafka tombstone. Every valid reading must reach Silver,
every poison message or record must be quarantined under a named rule, and the pipeline (and the
bridge) must still be running afterwards: proven by a last valid reading that arrives after the poison.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

import orjson
from confluent_kafka import Producer

from harness.demo import pipeline_tables_created
from harness.faults import FaultReport
from harness.faults.harness import (
    ScenarioError,
    children,
    distinct,
    fresh_topics,
    own_stack,
    record_clean_run,
    settle,
    start_bridge,
    start_pipeline,
    wait_for,
)
from harness.stack import LocalStack, publisher_client
from pipelines.pubsub_clients import close_publisher
from vitals_lake import contract as c
from vitals_lake import expectations as ex
from vitals_lake.config import LocalLake
from vitals_lake.envelope import SourceRecord, encode_envelope, heartbeat
from vitals_lake.lake import Lake

NAME: Final = "poison"
DESCRIPTION: Final = "poison messages and records mid-stream, into Pub/Sub and through the Kafka bridge"
ENVELOPE_RECORDS: Final = 25
_DEEP: Final = 5_000  # nesting deeper than any JSON parser's recursion limit

# Pub/Sub message bodies: (name, body). Each is one poison message (one quarantine row).
POISON_MESSAGES: Final[list[tuple[str, bytes]]] = [
    ("b64 index out of range", b'{"v":1,"values":["a"],"b64":[5]}'),
    ("partitions not a list", b'{"v":1,"values":["a"],"partitions":5}'),
    ("partition out of range", b'{"v":1,"values":["a"],"partitions":[99999999999]}'),
    ("timestamp beyond year 9999", b'{"v":1,"values":["a"],"timestamps_ms":[99999999999999999]}'),
    ("b64 value not base64", b'{"v":1,"values":["@@@"],"b64":[0]}'),
    ("values not strings", b'{"v":1,"values":[1,{"a":2}]}'),
    ("offsets of the wrong length", b'{"v":1,"values":["a","b"],"offsets":[1]}'),
    ("keys of the wrong type", b'{"v":1,"values":["a"],"keys":[7]}'),
    ("not JSON", b"\x00\x01 not json at all"),
    ("invalid UTF-8", b"\xff\xfe\xfd\xfc"),
    ("empty body (Pub/Sub takes it with an attribute)", b""),
    ("deep nesting", b"[" * _DEEP + b"]" * _DEEP),
    ("deeply nested envelope", b'{"v":1,"values":' + b"[" * _DEEP + b"]" * _DEEP + b"}"),
    ("larger than any reading", b'{"patient_id":"P1","pad":"' + b"x" * (c.MAX_RECORD_BYTES + 10) + b'"}'),
]

# Kafka record values through the bridge: each is one record (one quarantine row).
POISON_RECORDS: Final[list[tuple[str, bytes | None]]] = [
    ("envelope-shaped garbage", b'{"v":1,"values":["a"],"b64":[5]}'),
    ("invalid UTF-8", b"\xff\xfe\xfd"),
    ("tombstone (null value)", None),
    ("deep nesting", b"{" + b'"a":{' * 2000 + b"}" * 2001),
    ("larger than any reading", b'{"patient_id":"P1","pad":"' + b"y" * (c.MAX_RECORD_BYTES + 10) + b'"}'),
    ("control characters", b'{"patient_id":"P\x00\x07","heart_rate":72}'),
    ("NaN and huge numbers", b'{"patient_id":"P1","timestamp":"2026-01-01T00:00:00Z","heart_rate":1e999}'),
    ("clock never set", None),  # filled in by _clock_never_set(): a valid reading stamped 1970
]


def _clock_never_set(line: bytes) -> bytes:
    doc = orjson.loads(line)
    doc[c.TIMESTAMP] = "1970-01-01T00:00:12Z"
    doc[c.EVENT_ID] = f"clock-never-set-{uuid.uuid4().hex[:8]}"
    return orjson.dumps(doc)


def _envelopes(lines: list[bytes]) -> list[bytes]:
    out = []
    for start in range(0, len(lines), ENVELOPE_RECORDS):
        chunk = lines[start : start + ENVELOPE_RECORDS]
        data, _ = encode_envelope([SourceRecord(value=v) for v in chunk], source="simulator")
        out.append(data)
    return out


def _event_ids(lines: list[bytes]) -> set[str]:
    return {orjson.loads(line)[c.EVENT_ID] for line in lines}


def _pubsub_path(st: LocalStack, workdir: Path, lines: list[bytes], report: FaultReport) -> None:
    """Valid envelopes, the poison messages, valid envelopes, then one last valid reading."""
    lake_dir, logs = workdir / "pubsub-lake", workdir / "pubsub-logs"
    lake = Lake(LocalLake(root=lake_dir))
    first, second, last = lines[: len(lines) // 2], lines[len(lines) // 2 : -1], lines[-1:]
    suffix = uuid.uuid4().hex[:10]
    pubsub = st.create_pubsub_topic(f"poison-{suffix}", subscriptions=(f"poison-{suffix}-sub",))
    with children() as procs:
        pipeline = start_pipeline(procs, stack=st, pubsub=pubsub, lake_dir=lake_dir, logs=logs)
        pipeline.wait_ready(pipeline_tables_created(lake), timeout=90)
        client = publisher_client(pubsub)
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeats, args=(client, pubsub.topic_path, stop), daemon=True)
        try:
            beat.start()
            sent = [client.publish(pubsub.topic_path, d) for d in _envelopes(first)]
            # An attribute on each: Pub/Sub refuses a message with neither data nor attributes.
            sent += [client.publish(pubsub.topic_path, body, origin="poison") for _, body in POISON_MESSAGES]
            sent += [client.publish(pubsub.topic_path, d) for d in _envelopes(second)]
            for f in sent:
                f.result(timeout=30)
            expected = len(first) + len(second) + len(POISON_MESSAGES)
            wait_for(
                "every message in Bronze",
                lambda: lake.count("bronze") >= expected,
                timeout=90,
                alive=[pipeline],
            )
            # Still running after the poison: a reading published now must reach Silver.
            client.publish(pubsub.topic_path, last[0]).result(timeout=30)
            wait_for("the last reading in Silver", lambda: _has(lake, last), timeout=90, alive=[pipeline])
            settled = settle(lake, timeout=60, alive=[pipeline], min_bronze=expected + 1, gold=False)
        finally:
            stop.set()
            beat.join(timeout=5)
            close_publisher(client)
        running = pipeline.running()
        pipeline.stop(timeout=40)
    _judge(
        report,
        "pubsub",
        lake=lake,
        lines=lines,
        poison=len(POISON_MESSAGES),
        counts=settled.counts,
        running=running,
    )


def _kafka_path(st: LocalStack, workdir: Path, lines: list[bytes], report: FaultReport) -> None:
    """The same through Kafka (Tansu) and the bridge: valid records, poison records, valid, a last one."""
    lake_dir, logs = workdir / "kafka-lake", workdir / "kafka-logs"
    lake = Lake(LocalLake(root=lake_dir))
    poison = [(n, _clock_never_set(lines[0]) if n == "clock never set" else v) for n, v in POISON_RECORDS]
    first, second, last = lines[: len(lines) // 2], lines[len(lines) // 2 : -1], lines[-1:]
    topics = fresh_topics(st, prefix="poison", partitions=2)
    producer = Producer(
        {
            "bootstrap.servers": topics.kafka.bootstrap_servers,
            "acks": "all",
            "message.max.bytes": 4 * c.MAX_RECORD_BYTES,
        }
    )

    def produce(values: list[bytes | None]) -> None:
        for i, v in enumerate(values):
            producer.produce(topics.kafka.topic, value=v, key=f"k{i % 7}".encode())
        if producer.flush(30):
            raise ScenarioError("Kafka did not acknowledge every record")

    with children() as procs:
        pipeline = start_pipeline(procs, stack=st, pubsub=topics.pubsub, lake_dir=lake_dir, logs=logs)
        pipeline.wait_ready(pipeline_tables_created(lake), timeout=90)
        bridge = start_bridge(procs, stack=st, topics=topics, logs=logs)
        produce(list(first))
        produce([v for _, v in poison])
        produce(list(second))
        expected = len(first) + len(second) + len(poison)
        alive = [pipeline, bridge]
        wait_for("every record in Bronze", lambda: lake.count("bronze") >= expected, timeout=120, alive=alive)
        produce(list(last))
        wait_for("the last reading in Silver", lambda: _has(lake, last), timeout=90, alive=alive)
        settled = settle(lake, timeout=60, alive=alive, min_bronze=expected + 1, gold=False)
        running = pipeline.running() and bridge.running()
    _judge(
        report, "kafka", lake=lake, lines=lines, poison=len(poison), counts=settled.counts, running=running
    )


def _heartbeats(client: Any, topic_path: str, stop: threading.Event) -> None:
    # As the bridge does: an idle pull would hold the pipeline's processing-time triggers for 30 s.
    data, attrs = heartbeat()
    while not stop.wait(1.0):
        client.publish(topic_path, data, **attrs)


def _has(lake: Lake, lines: list[bytes]) -> bool:
    if not lake.count("silver"):
        return False
    ids = set(lake.read("silver", columns=[c.EVENT_ID])[c.EVENT_ID].to_pylist())
    return _event_ids(lines) <= ids


def _judge(
    report: FaultReport, path: str, *, lake: Lake, lines: list[bytes], poison: int, counts: Any, running: bool
) -> None:
    quarantine = lake.read("quarantine", columns=[c.RULES, c.RAW_BYTES, c.RAW_TRUNCATED])
    rules = [r[0] for r in quarantine[c.RULES].to_pylist()]
    silver_ids = set(lake.read("silver", columns=[c.EVENT_ID])[c.EVENT_ID].to_pylist())
    report.figures.update(
        {
            f"{path}_valid_sent": len(lines),
            f"{path}_poison_sent": poison,
            f"{path}_bronze_rows": counts.bronze,
            f"{path}_silver_rows": counts.silver,
            f"{path}_quarantine_rows": counts.quarantine,
            f"{path}_quarantine_rules": json.dumps(dict(sorted(_count(rules).items()))),
            f"{path}_largest_quarantined_bytes": max(quarantine[c.RAW_BYTES].to_pylist(), default=0),
        }
    )
    checks = report.checks
    checks[f"{path}: every valid reading in Silver"] = _event_ids(lines) <= silver_ids
    checks[f"{path}: Silver holds nothing else"] = (
        counts.silver == distinct(lake, "silver", c.EVENT_ID) == len(lines)
    )
    checks[f"{path}: every poison input quarantined, once"] = counts.quarantine == poison
    checks[f"{path}: every quarantine row names a rule"] = all(rules) and len(rules) == poison
    checks[f"{path}: quarantine keeps at most {c.RAW_CAP_BYTES:,} bytes of a record"] = all(
        t == (b > c.RAW_CAP_BYTES)
        for t, b in zip(
            quarantine[c.RAW_TRUNCATED].to_pylist(), quarantine[c.RAW_BYTES].to_pylist(), strict=True
        )
    )
    checks[f"{path}: Bronze = Silver + quarantine"] = counts.bronze == counts.silver + counts.quarantine
    checks[f"{path}: still running after the poison"] = running
    if path == "pubsub":
        checks["pubsub: undecodable envelopes named bad_envelope"] = rules.count(ex.RULE_BAD_ENVELOPE) >= 8
    else:
        checks["kafka: a reading whose clock was never set is quarantined"] = (
            ex.RULE_TIMESTAMP_IMPLAUSIBLE in rules
        )


def _count(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def run_scenario(workdir: Path, *, quick: bool = False, stack: LocalStack | None = None) -> FaultReport:
    """Both paths, one after the other, on ``stack`` (or a fresh local stack under ``workdir``)."""
    started = time.monotonic()
    report = FaultReport(NAME, DESCRIPTION)
    _, lines = record_clean_run(
        workdir, patients=10 if quick else 40, duration_s=20, seed=11, extra_args=("--late-rate", "0")
    )
    with own_stack(workdir, stack) as st:
        _pubsub_path(st, workdir, lines, report)
        _kafka_path(st, workdir, lines, report)
    report.notes.append(
        f"{len(lines)} valid readings each way ({ENVELOPE_RECORDS} per envelope on Pub/Sub), half before"
        f" and half after {len(POISON_MESSAGES)} poison messages / {len(POISON_RECORDS)} poison Kafka"
        " records; one more valid reading after they settled proves the stream still runs"
    )
    report.seconds = time.monotonic() - started
    return report
