from __future__ import annotations

import orjson

from pipelines.kafka_bridge_packing import EnvelopePacker, encode_bounded
from vitals_lake.config import EnvelopeLimits
from vitals_lake.envelope import ATTR_COUNT, ATTR_KAFKA_OFFSETS, SourceRecord, decode_envelope


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _rec(i: int, value: bytes | None = None, partition: int = 0) -> SourceRecord:
    return SourceRecord(
        value=value if value is not None else orjson.dumps({"event_id": f"e{i}", "heart_rate": 70}),
        key=f"p{i % 3}",
        partition=partition,
        offset=i,
        timestamp_ms=1_700_000_000_000 + i,
    )


def _offsets(envelopes: list) -> list[int]:
    return [r.offset for env in envelopes for r in env.records]


def test_count_limit_cuts_envelopes() -> None:
    packer = EnvelopePacker(
        EnvelopeLimits(max_records=3, linger_seconds=60), kafka_topic="t", clock=FakeClock()
    )
    out = []
    sizes_at_add = []
    for i in range(7):
        got = packer.add(_rec(i))
        sizes_at_add.append(len(got))
        out += got
    assert sizes_at_add == [0, 0, 1, 0, 0, 1, 0]
    assert [len(e.records) for e in out] == [3, 3]
    assert len(packer) == 1
    out += packer.flush()
    assert _offsets(out) == list(range(7))
    assert [e.attributes[ATTR_COUNT] for e in out] == ["3", "3", "1"]
    assert packer.flush() == []


def test_byte_limit_keeps_every_envelope_under_max_bytes() -> None:
    limits = EnvelopeLimits(max_records=1000, max_bytes=2048, linger_seconds=60)
    packer = EnvelopePacker(limits, kafka_topic="t", clock=FakeClock())
    out = []
    for i in range(40):
        out += packer.add(_rec(i, b'{"note": "' + b"x" * 250 + b'"}'))
    out += packer.flush()
    assert len(out) > 5
    assert all(len(e.data) <= limits.max_bytes for e in out)
    assert _offsets(out) == list(range(40))


def test_an_underestimated_batch_is_split_until_it_fits() -> None:
    # Control bytes are escaped by JSON as \u0001 (6 bytes each): far above the estimate.
    records = [_rec(i, b"\x01" * 150) for i in range(10)]
    envelopes = encode_bounded(records, 2048, "t")
    assert len(envelopes) > 1
    assert all(len(e.data) <= 2048 for e in envelopes)
    assert _offsets(envelopes) == list(range(10))


def test_a_record_bigger_than_max_bytes_travels_alone() -> None:
    limits = EnvelopeLimits(max_records=100, max_bytes=1024, linger_seconds=60)
    packer = EnvelopePacker(limits, kafka_topic="t", clock=FakeClock())
    out = packer.add(_rec(0))
    out += packer.add(_rec(1, b"y" * 5000))
    out += packer.add(_rec(2))
    out += packer.flush()
    assert [len(e.records) for e in out] == [1, 1, 1]
    assert len(out[1].data) > 5000
    assert _offsets(out) == [0, 1, 2]


def test_linger_is_measured_from_the_oldest_buffered_record() -> None:
    clock = FakeClock()
    packer = EnvelopePacker(
        EnvelopeLimits(max_records=100, linger_seconds=0.25), kafka_topic="t", clock=clock
    )
    assert not packer.due()  # nothing buffered
    packer.add(_rec(0))
    clock.now += 0.2
    packer.add(_rec(1))
    assert not packer.due()
    clock.now += 0.05
    assert packer.due()  # 0.25 s since record 0, only 0.05 s since record 1
    assert len(packer.flush()[0].records) == 2
    assert not packer.due()
    clock.now += 10
    packer.add(_rec(2))
    assert not packer.due()  # the clock restarts with the next record
    clock.now += 0.25
    assert packer.due()


def test_zero_linger_is_due_at_once() -> None:
    packer = EnvelopePacker(EnvelopeLimits(linger_seconds=0), kafka_topic="t", clock=FakeClock())
    packer.add(_rec(0))
    assert packer.due()


def test_malformed_values_survive_the_envelope_byte_for_byte() -> None:
    values = [b"\xff\xfe\x00binary", b"{not json", b"", b'{"ok": "\xc3\xa9"}', b"\x01\x02"]
    records = [_rec(i, v, partition=i % 2) for i, v in enumerate(values)]
    (env,) = encode_bounded(records, 900_000, "patient-vitals")
    table = decode_envelope(env.data)
    assert table.column("raw").to_pylist() == values
    assert table.column("kafka_offset").to_pylist() == list(range(5))
    assert table.column("kafka_partition").to_pylist() == [0, 1, 0, 1, 0]
    assert env.attributes[ATTR_KAFKA_OFFSETS] == "0:0-4,1:1-3"
