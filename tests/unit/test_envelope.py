from __future__ import annotations

import pytest

from vitals_lake import contract as c
from vitals_lake import envelope as e


def test_kafka_envelope_round_trip_keeps_bytes_and_coordinates():
    records = [
        e.SourceRecord(value=b'{"a":1}', key="P1", partition=0, offset=10, timestamp_ms=1_700_000_000_000),
        e.SourceRecord(value=b"\xff\xfe not utf-8", key="P2", partition=3, offset=7, timestamp_ms=None),
        e.SourceRecord(value=b"", key=None, partition=0, offset=11, timestamp_ms=1),
    ]
    data, attrs = e.encode_envelope(records, source="kafka", kafka_topic=c.VITALS_TOPIC)
    table = e.decode_envelope(data)
    assert table[c.RAW].to_pylist() == [r.value for r in records]
    assert table[c.KAFKA_PARTITION].to_pylist() == [0, 3, 0]
    assert table[c.KAFKA_OFFSET].to_pylist() == [10, 7, 11]
    assert table[c.KAFKA_KEY].to_pylist() == ["P1", "P2", None]
    assert attrs[e.ATTR_COUNT] == "3"
    assert attrs[e.ATTR_KAFKA_OFFSETS] == "0:10-11,3:7-7"
    bronze = e.to_bronze(table, ingest_time_us=1, message_id="m1")
    assert bronze[c.RECORD_REF].to_pylist() == [
        f"kafka:{c.VITALS_TOPIC}:0:10",
        f"kafka:{c.VITALS_TOPIC}:3:7",
        f"kafka:{c.VITALS_TOPIC}:0:11",
    ]
    assert bronze.schema == c.BRONZE_SCHEMA


def test_simulator_envelope_refs_fall_back_to_message_id():
    data, _ = e.encode_envelope([e.SourceRecord(value=b"x"), e.SourceRecord(value=b"y")], source="simulator")
    bronze = e.to_bronze(e.decode_envelope(data), ingest_time_us=1, message_id="42")
    assert bronze[c.RECORD_REF].to_pylist() == ["pubsub:42:0", "pubsub:42:1"]


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"v": 99, "values": []}', b'{"v": 1, "values": [1]}'])
def test_undecodable_envelopes_raise_envelope_error(data):
    with pytest.raises(e.EnvelopeError):
        e.decode_envelope(data)


def test_heartbeat_is_recognised():
    _, attrs = e.heartbeat()
    assert e.is_heartbeat(attrs)
    assert not e.is_heartbeat({e.ATTR_KIND: "readings"})
    assert not e.is_heartbeat(None)


def test_a_message_holding_one_reading_is_one_record_not_a_bad_envelope():
    from datetime import UTC, datetime  # noqa: PLC0415

    from apache_beam.io import PubsubMessage  # noqa: PLC0415

    from pipelines.sources import DecodeEnvelopeFn  # noqa: PLC0415

    envelope_data, _ = e.encode_envelope([e.SourceRecord(value=b'{"a": 1}')], source="simulator")
    assert e.is_envelope(envelope_data)
    assert not e.is_envelope(b'{"patient_id": "P000001", "heart_rate": 72}')
    assert not e.is_envelope(b"not json")
    fn = DecodeEnvelopeFn()
    reading = b'{"patient_id": "P000001", "heart_rate": 72}'
    message = PubsubMessage(reading, {}, message_id="7", publish_time=datetime.now(UTC))
    (bronze,) = list(fn.process(message))
    assert bronze[c.RAW].to_pylist() == [reading]
    assert bronze[c.RECORD_REF].to_pylist() == ["pubsub:7:0"]
