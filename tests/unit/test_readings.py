"""The Silver gate: every record lands in Silver or quarantine, with the right rule (over generated
input: tests/property/test_reading_properties.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pyarrow.compute as pc
import pytest

from tests.factories import DROP, bronze, raw, reading
from vitals_lake import contract as c
from vitals_lake.readings import parse_batch, parse_json

BAD = [
    (b'{"patient_id": "P1", "timestamp": ', "malformed_json"),
    (b"not json at all", "malformed_json"),
    (b"", "malformed_json"),
    (b"\xff\xfe\x00garbage", "not_utf8"),
    (b"[1, 2, 3]", "not_a_json_object"),
    (b'{"a": 1}\n{"b": 2}', "malformed_json"),
    (raw(reading(heart_rate="fast")), "wrong_type"),
    (raw(reading(patient_id=12345)), "wrong_type"),
    (raw(reading(patient_id=DROP)), "patient_id_required"),
    (raw(reading(patient_id="")), "patient_id_required"),
    (raw(reading(patient_id="P1\u0000; DROP TABLE patients")), "patient_id_format"),
    (raw(reading(timestamp=DROP)), "timestamp_required"),
    (raw(reading(timestamp="2026-11-22T06:00:00")), "timestamp_iso8601_with_offset"),
    (raw(reading(timestamp="yesterday")), "timestamp_iso8601_with_offset"),
    (raw(reading(timestamp="2026-02-31T06:00:00Z")), "timestamp_iso8601_with_offset"),
    (raw(reading(heart_rate=999)), "heart_rate_possible_range"),
    (raw(reading(spo2=150.0)), "spo2_possible_range"),
    (raw(reading(temperature=-4.0)), "temperature_possible_range"),
    (b'{"patient_id": "P1", "timestamp": "2026-11-22T06:00:00Z", "heart_rate": NaN}', "heart_rate_finite"),
    (raw(reading(blood_pressure="high")), "blood_pressure_format"),
    (raw(reading(blood_pressure=DROP, systolic=70, diastolic=90)), "systolic_above_diastolic"),
    (
        raw(
            reading(heart_rate=DROP, temperature=DROP, spo2=DROP, respiration_rate=DROP, blood_pressure=DROP)
        ),
        "vital_required",
    ),
]


@pytest.mark.parametrize(("record", "rule"), BAD)
def test_each_bad_record_is_quarantined_with_its_rule(record, rule):
    good = [raw(reading(i)) for i in range(50)]
    out = parse_batch(bronze([*good[:25], record, *good[25:]]))
    assert out.valid.num_rows == 50
    assert out.quarantine.num_rows == 1
    q = out.quarantine.to_pylist()[0]
    assert rule in q[c.RULES]
    assert q[c.RAW] == record  # exactly as received
    assert q[c.RECORD_REF] == "file:test:25"


def test_all_bad_records_together_and_conservation():
    lines = [raw(reading(i)) for i in range(300)] + [b for b, _ in BAD]
    out = parse_batch(bronze(lines))
    assert out.valid.num_rows == 300
    assert out.quarantine.num_rows == len(BAD)
    assert sorted(r[0] for r in out.quarantine[c.RULES].to_pylist()) == sorted(rule for _, rule in BAD)


def test_valid_reading_is_typed_and_normalised_to_utc():
    doc = reading(1, timestamp="2026-11-22T07:30:00.250+01:00", heart_rate=71.6)
    row = parse_batch(bronze([raw(doc)])).valid.to_pylist()[0]
    assert row[c.TIMESTAMP] == datetime(2026, 11, 22, 6, 30, 0, 250000, tzinfo=UTC)
    assert row[c.EVENT_DATE].isoformat() == "2026-11-22"
    assert row[c.HEART_RATE] == 72  # integral vitals are rounded
    assert (row[c.SYSTOLIC], row[c.DIASTOLIC]) == (120, 80)  # "120/80" split


def test_blood_pressure_as_two_fields_is_accepted():
    doc = reading(1, blood_pressure=DROP, systolic=131, diastolic=84)
    row = parse_batch(bronze([raw(doc)])).valid.to_pylist()[0]
    assert (row[c.SYSTOLIC], row[c.DIASTOLIC]) == (131, 84)


def test_unknown_fields_are_ignored_in_silver_but_kept_raw_in_bronze():
    record = raw(reading(1, firmware="2.1", battery=0.8))
    b = bronze([record])
    out = parse_batch(b)
    assert out.valid.num_rows == 1 and "firmware" not in out.valid.column_names
    assert b[c.RAW][0].as_py() == record


def test_missing_event_id_gets_a_deterministic_one_from_device_and_instant():
    a = parse_batch(bronze([raw(reading(3, event_id=DROP))])).valid[c.EVENT_ID][0].as_py()
    b = parse_batch(bronze([raw(reading(3, event_id=DROP))])).valid[c.EVENT_ID][0].as_py()
    other = parse_batch(bronze([raw(reading(4, event_id=DROP))])).valid[c.EVENT_ID][0].as_py()
    assert a == b != other
    assert a.startswith("derived:dev-P000001:")


def test_rule_counts_add_up():
    out = parse_batch(bronze([raw(reading(heart_rate=999)), raw(reading(spo2=150.0)), raw(reading(1))]))
    assert out.rule_counts["heart_rate_possible_range"] == 1
    assert out.rule_counts["spo2_possible_range"] == 1
    assert pc.sum(out.valid[c.HEART_RATE]).as_py() == 72


def test_impossible_dates_scattered_through_a_large_batch_fail_alone():
    # One cast per batch; a string Arrow rejects is isolated by halving, not by a cast per row.
    good = [raw(reading(i)) for i in range(2_000)]
    bad_at = {17, 1_003, 1_999}
    lines = [
        raw(reading(i, timestamp="2026-02-31T06:00:00Z")) if i in bad_at else line
        for i, line in enumerate(good)
    ]
    out = parse_batch(bronze(lines))
    assert out.quarantine.num_rows == 3
    assert all("timestamp_iso8601_with_offset" in q[c.RULES] for q in out.quarantine.to_pylist())
    assert sorted(int(q[c.RECORD_REF].rsplit(":", 1)[1]) for q in out.quarantine.to_pylist()) == sorted(
        bad_at
    )
    valid = out.valid.sort_by(c.EVENT_ID)
    expected = parse_batch(bronze([line for i, line in enumerate(good) if i not in bad_at])).valid.sort_by(
        c.EVENT_ID
    )
    assert valid[c.TIMESTAMP].equals(expected[c.TIMESTAMP])


def test_bad_records_scattered_over_many_chunks_get_the_verdict_they_get_alone():
    # A batch is parsed in chunks, going on past each record Arrow rejects: every record must get the
    # rule and detail it gets when parsed on its own, and every other record must parse as usual.
    rng = random.Random(5)
    lines = [raw(reading(i)) for i in range(6_000)]
    bad_at = sorted(rng.sample(range(len(lines)), 3 * len(BAD)))
    for n, i in enumerate(bad_at):
        lines[i] = BAD[n % len(BAD)][0]
    out = parse_batch(bronze(lines))

    def verdict(q: dict) -> tuple:
        return tuple(q[c.RULES]), q[c.DETAIL]

    got = {int(q[c.RECORD_REF].rsplit(":", 1)[1]): verdict(q) for q in out.quarantine.to_pylist()}
    alone = {i: verdict(parse_batch(bronze([lines[i]])).quarantine.to_pylist()[0]) for i in bad_at}
    assert got == alone
    good = parse_batch(bronze([line for i, line in enumerate(lines) if i not in set(bad_at)])).valid
    same = [name for name in good.column_names if name not in (c.RECORD_REF, c.INGEST_TIME)]  # per batch
    assert out.valid.select(same).sort_by(c.EVENT_ID).equals(good.select(same).sort_by(c.EVENT_ID))


REJECTED_BY_THE_PARSER = [raw(reading(heart_rate="fast")), raw(reading(patient_id=12345))]


@pytest.mark.parametrize("bad_at", [[0, 1, 2], [5_999], [0, 2_999, 3_000, 3_001, 5_998, 5_999]])
def test_records_the_parser_rejects_back_to_back_or_at_either_end(bad_at):
    # The streaming parser starts again right after each record it rejects, in the same buffer: a
    # rejected record first, last, or right after another must neither shift nor swallow a neighbour.
    lines = [raw(reading(i)) for i in range(6_000)]
    for n, i in enumerate(bad_at):
        lines[i] = REJECTED_BY_THE_PARSER[n % 2]
    parsed, kept, errors = parse_json(bronze(lines)[c.RAW].combine_chunks())
    assert sorted(errors) == bad_at and all(rule == "wrong_type" for rule, _ in errors.values())
    assert kept.tolist() == [i for i in range(len(lines)) if i not in set(bad_at)]
    assert parsed[c.EVENT_ID].to_pylist() == [f"evt-P000001-{i}" for i in kept.tolist()]
    alone = {i: parse_json(bronze([lines[i]])[c.RAW].combine_chunks())[2][0] for i in bad_at}
    assert errors == alone


def test_a_slice_of_a_larger_array_parses_as_its_own_records():
    # Offsets of a slice start past the buffer's first: the parser's restart positions must use them.
    lines = [raw(reading(i)) for i in range(3_000)]
    lines[2_500] = REJECTED_BY_THE_PARSER[0]
    whole = bronze(lines)[c.RAW].combine_chunks()
    parsed, kept, errors = parse_json(whole.slice(1_000))
    assert list(errors) == [1_500] and errors[1_500][0] == "wrong_type"
    assert parsed[c.EVENT_ID].to_pylist() == [f"evt-P000001-{i + 1_000}" for i in kept.tolist()]
    assert len(kept) == 1_999
