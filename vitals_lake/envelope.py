"""The Pub/Sub envelope: many raw readings in one message, stored column by column.

Why envelopes: the DirectRunner's Pub/Sub reader pulls at most 10 messages per bundle (about 100-290
messages/s here) and Pub/Sub bills at least 1 KB per message, so one reading per message caps the
local pipeline far below a hospital's rate. An envelope of a few hundred readings lifts the
ceiling to thousands of readings/s (see docs/design.md).

Columnar JSON keeps decoding vectorised: one ``orjson.loads`` and one ``pa.array`` per column, no
Python object per reading. Values are the readings' bytes exactly as received; values that are not
valid UTF-8 travel base64-encoded and are listed in ``b64`` so nothing is ever dropped.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.masks import true_where

ENVELOPE_VERSION: Final = 1
Source = Literal["kafka", "simulator", "file", "pubsub"]
Kind = Literal["readings", "heartbeat"]

# Attribute names on the Pub/Sub message.
ATTR_VERSION: Final = "envelope_version"
ATTR_KIND: Final = "kind"
ATTR_SOURCE: Final = "source"
ATTR_COUNT: Final = "count"
ATTR_KAFKA_TOPIC: Final = "kafka_topic"
ATTR_KAFKA_OFFSETS: Final = "kafka_offsets"  # "partition:first-last,..." so duplicates can be recognised
MAX_KEY_CHARS: Final = 256  # a Kafka key is a routing hint; Bronze keeps no more of it

# What each optional envelope column may hold: a JSON value outside these bounds makes the envelope bad.
_INT32: Final = (-(2**31), 2**31 - 1)
_INT64: Final = (-(2**63), 2**63 - 1)
# Kafka timestamps in ms that Arrow's microsecond timestamps can hold (years 1 to 9999).
_TIMESTAMP_MS: Final = (-62_135_596_800_000, 253_402_300_799_999)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record as taken from the source: its bytes and, for Kafka, its coordinates."""

    value: bytes
    key: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None


class EnvelopeError(ValueError):
    """A Pub/Sub message that is not a readable envelope (the whole message is quarantined)."""


def encode_envelope(
    records: Sequence[SourceRecord],
    *,
    source: Source,
    kafka_topic: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Pack records into one message body and its attributes.

    Whatever the records hold, ``decode_envelope`` reads the result back: a value over
    ``c.MAX_RECORD_BYTES`` travels cut to one byte more than that (the gate quarantines it as too large,
    and its Kafka coordinates say where the whole record is), a key is cut to ``MAX_KEY_CHARS``, and a
    producer timestamp outside what Arrow can hold travels as null.
    """
    values: list[str] = []
    b64: list[int] = []
    for i, r in enumerate(records):
        value = r.value[: c.MAX_RECORD_BYTES + 1]
        try:
            values.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(base64.b64encode(value).decode("ascii"))
            b64.append(i)
    body: dict[str, object] = {"v": ENVELOPE_VERSION, "source": source, "values": values, "b64": b64}
    attributes = {
        ATTR_VERSION: str(ENVELOPE_VERSION),
        ATTR_KIND: "readings",
        ATTR_SOURCE: source,
        ATTR_COUNT: str(len(records)),
    }
    if source == "kafka":
        body["topic"] = kafka_topic
        body["keys"] = [None if r.key is None else r.key[:MAX_KEY_CHARS] for r in records]
        body["partitions"] = [r.partition if _is_int(r.partition, _INT32) else None for r in records]
        body["offsets"] = [r.offset if _is_int(r.offset, _INT64) else None for r in records]
        body["timestamps_ms"] = [
            r.timestamp_ms if _is_int(r.timestamp_ms, _TIMESTAMP_MS) else None for r in records
        ]
        attributes[ATTR_KAFKA_TOPIC] = kafka_topic or ""
        attributes[ATTR_KAFKA_OFFSETS] = _offset_ranges(records)
    return orjson.dumps(body), attributes


def heartbeat() -> tuple[bytes, dict[str, str]]:
    """A keep-alive message: it makes the DirectRunner pull again instead of idling for 30 s."""
    return b"{}", {ATTR_VERSION: str(ENVELOPE_VERSION), ATTR_KIND: "heartbeat", ATTR_COUNT: "0"}


def is_heartbeat(attributes: Mapping[str, str] | None) -> bool:
    return bool(attributes) and attributes.get(ATTR_KIND) == "heartbeat"  # type: ignore[union-attr]


ENVELOPE_COLUMNS: Final = pa.schema(
    [
        pa.field(c.RAW, pa.binary(), nullable=False),
        pa.field(c.SOURCE, pa.string(), nullable=False),
        pa.field(c.KAFKA_TOPIC, pa.string()),
        pa.field(c.KAFKA_PARTITION, pa.int32()),
        pa.field(c.KAFKA_OFFSET, pa.int64()),
        pa.field(c.KAFKA_KEY, pa.string()),
        pa.field(c.KAFKA_TIMESTAMP, pa.timestamp("us", tz="UTC")),
    ]
)


def is_envelope(data: bytes) -> bool:
    """Whether a message claims to be an envelope (a JSON object with a version ``v``); anything
    else is taken as one record."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and "v" in body and "values" in body


def decode_envelope(data: bytes) -> pa.Table:
    """Unpack a message body into one Arrow row per record (schema ``ENVELOPE_COLUMNS``).

    Total: any body that is not a well-formed envelope raises ``EnvelopeError`` (never another
    exception), so the caller can quarantine the whole message and carry on with the bundle.
    """
    try:
        return _decode(data)
    except EnvelopeError:
        raise
    except Exception as exc:  # a decoder bug must not stop the stream: name it instead
        raise EnvelopeError(f"undecodable envelope ({type(exc).__name__}: {_clip(str(exc))})") from exc


def _decode(data: bytes) -> pa.Table:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"envelope is not JSON: {_clip(str(exc))}") from exc
    if not isinstance(body, dict) or body.get("v") != ENVELOPE_VERSION or isinstance(body.get("v"), bool):
        version = body.get("v") if isinstance(body, dict) else body
        raise EnvelopeError(f"unsupported envelope version: {_clip(repr(version))}")
    values = body.get("values")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise EnvelopeError("envelope 'values' must be a list of strings")
    n = len(values)
    raw = pa.array(values, pa.string()).cast(pa.binary())
    b64 = body.get("b64") or []
    if not isinstance(b64, list) or not all(_is_int(i, (0, n - 1)) for i in b64):
        raise EnvelopeError(f"envelope 'b64' must list indices of 'values' (0..{n - 1})")
    if b64:
        fixed = raw.to_pylist()
        for i in b64:
            try:
                fixed[i] = base64.b64decode(values[i], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise EnvelopeError(f"envelope value {i} is listed in 'b64' but is not base64") from exc
        raw = pa.array(fixed, pa.binary())
    source = body.get("source", "simulator")
    topic = body.get("topic")
    if not isinstance(source, str) or not (topic is None or isinstance(topic, str)):
        raise EnvelopeError("envelope 'source' and 'topic' must be strings")

    ts_ms = _column(body, "timestamps_ms", n, pa.int64(), _TIMESTAMP_MS)
    return pa.Table.from_arrays(
        [
            raw,
            pa.repeat(pa.scalar(source, pa.string()), n),
            pa.repeat(pa.scalar(topic, pa.string()), n),
            _column(body, "partitions", n, pa.int32(), _INT32),
            _column(body, "offsets", n, pa.int64(), _INT64),
            _column(body, "keys", n, pa.string(), None),
            ts_ms.cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("us", tz="UTC")),
        ],
        schema=ENVELOPE_COLUMNS,
    )


def _column(
    body: dict[str, object], name: str, n: int, typ: pa.DataType, bounds: tuple[int, int] | None
) -> pa.Array:
    """An optional per-record column: absent is all nulls; each item null or of the column's type."""
    col = body.get(name)
    if col is None:
        return pa.nulls(n, typ)
    if not isinstance(col, list) or len(col) != n:
        size = len(col) if isinstance(col, list) else type(col).__name__
        raise EnvelopeError(f"envelope column {name!r} has {size} items for {n} values")
    ok = (
        (lambda x: x is None or isinstance(x, str))
        if bounds is None
        else (lambda x: x is None or _is_int(x, bounds))
    )
    if not all(ok(x) for x in col):
        raise EnvelopeError(f"envelope column {name!r} holds an item that is not a {typ} in range")
    return pa.array(col, typ)


def _is_int(value: object, bounds: tuple[int, int]) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]


def _clip(text: str, limit: int = 200) -> str:
    return text[:limit] + ("…" if len(text) > limit else "")


def _offset_ranges(records: Sequence[SourceRecord]) -> str:
    ranges: dict[int, tuple[int, int]] = {}
    for r in records:
        if r.partition is None or r.offset is None:
            continue
        lo, hi = ranges.get(r.partition, (r.offset, r.offset))
        ranges[r.partition] = (min(lo, r.offset), max(hi, r.offset))
    return ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(ranges.items()))


def to_bronze(
    records: pa.Table,
    *,
    ingest_time_us: int,
    message_id: str | None = None,
    publish_time_us: int | None = None,
    ref_prefix: str | None = None,
    first_index: int = 0,
) -> pa.Table:
    """Bronze rows (``c.BRONZE_SCHEMA``) for decoded records: add lineage and ingest time.

    ``record_ref`` names where each record came from: ``kafka:topic:partition:offset`` when the Kafka
    coordinates are known, else ``<ref_prefix or pubsub:message_id>:index`` (indices counted from
    ``first_index``: a file's line numbers).
    """
    n = records.num_rows
    utc = pa.timestamp("us", tz="UTC")
    prefix = ref_prefix or f"pubsub:{message_id}"
    index = pa.array(np.arange(first_index, first_index + n, dtype=np.int64))
    fallback = pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(index, pa.string()), ":")
    if records[c.KAFKA_TOPIC].null_count == n:  # a file or Pub/Sub without Kafka coordinates
        record_ref = fallback
    else:
        kafka_ref = pc.binary_join_element_wise(
            pa.scalar("kafka"),
            records[c.KAFKA_TOPIC],
            pc.cast(records[c.KAFKA_PARTITION], pa.string()),
            pc.cast(records[c.KAFKA_OFFSET], pa.string()),
            ":",
        )
        record_ref = pc.coalesce(kafka_ref, fallback)
    ingest = pa.scalar(ingest_time_us, pa.int64()).cast(utc)
    return pa.table(
        {
            c.RAW: records[c.RAW],
            c.RECORD_REF: record_ref,
            c.SOURCE: records[c.SOURCE],
            c.KAFKA_TOPIC: records[c.KAFKA_TOPIC],
            c.KAFKA_PARTITION: records[c.KAFKA_PARTITION],
            c.KAFKA_OFFSET: records[c.KAFKA_OFFSET],
            c.KAFKA_KEY: records[c.KAFKA_KEY],
            c.KAFKA_TIMESTAMP: records[c.KAFKA_TIMESTAMP],
            # One value repeated: no Python list of n elements.
            c.PUBSUB_MESSAGE_ID: pa.repeat(pa.scalar(message_id, pa.string()), n),
            c.PUBLISH_TIME: pa.repeat(pa.scalar(publish_time_us, pa.int64()).cast(utc), n),
            c.INGEST_TIME: pa.repeat(ingest, n),
            c.INGEST_DATE: pa.repeat(ingest.cast(pa.date32()), n),
        },
        schema=c.BRONZE_SCHEMA,
    )


def records_from_lines(lines: list[bytes] | pa.Array, *, source: Source = "file") -> pa.Table:
    """Decoded-envelope rows (``ENVELOPE_COLUMNS``) for raw lines read from a file."""
    n = len(lines)
    return pa.Table.from_arrays(
        [
            lines if isinstance(lines, pa.Array) else pa.array(lines, pa.binary()),
            pa.repeat(pa.scalar(source, pa.string()), n),
            *(pa.nulls(n, f.type) for f in list(ENVELOPE_COLUMNS)[2:]),
        ],
        schema=ENVELOPE_COLUMNS,
    )


def split_lines(data: bytes, *, final: bool) -> tuple[pa.Array, bytes]:
    """The lines of a block of a file as one binary array, each without its line break and trailing
    carriage returns (``line.rstrip(b"\\r\\n")`` of iterating the file), and the unfinished last line
    (``final``: the file ends there, so it is a line of its own). Array operations over the block: no
    Python step per line (only lines ending in a carriage return, rare, are trimmed one by one)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(buf == ord("\n"))
    end = int(breaks[-1]) + 1 if breaks.size else 0
    rest = data[end:]
    if final and end < len(buf):  # the unfinished last line, given the break it lacks
        data, breaks, end, rest = data + b"\n", np.r_[breaks, len(buf)], len(buf) + 1, b""
    # Each line with its break is a slice of the block as it is (no copy); one slice kernel then
    # copies every line without its last byte.
    offsets = np.r_[0, breaks + 1].astype(np.int32)
    with_breaks = pa.Array.from_buffers(
        pa.binary(), len(breaks), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    lines = pc.binary_slice(with_breaks, 0, -1)
    crlf = true_where(pc.ends_with(lines, b"\r"))
    if crlf.any():
        trimmed = [value.rstrip(b"\r") for value in lines.filter(pa.array(crlf)).to_pylist()]
        lines = pc.replace_with_mask(lines, pa.array(crlf), pa.array(trimmed, pa.binary()))
    return lines, rest


def read_jsonl(path: Path | str) -> list[bytes]:
    """The records of a JSONL file (one raw record per line, as the simulator's file sink writes), byte
    for byte."""
    data = Path(path).read_bytes()
    return data.split(b"\n")[:-1] if data else []
