"""A corpus of bad (and tricky-but-valid) input: every record ends in Silver or in quarantine with the
expected rule, and Bronze = Silver + quarantine + duplicates exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pytest

from tests.factories import DROP, T0, raw, reading
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from vitals_lake.readings import TimeRules, parse_batch

INGEST = T0 + timedelta(minutes=1)
RULES = TimeRules(clock_skew=timedelta(minutes=5), max_age=timedelta(minutes=10))
SILVER = "silver"


def j(**overrides) -> bytes:
    return raw(reading(7, **overrides))


def obs(*, subject: str = "Patient/P000001", **value: object) -> dict:
    """A FHIR R4 heart-rate Observation stamped like the corpus readings; ``value`` replaces its value."""
    return {
        "resourceType": "Observation",
        "id": "hr-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": orjson.loads(j())[c.TIMESTAMP],
        **(
            value
            or {
                "valueQuantity": {
                    "value": 88,
                    "unit": "/min",
                    "system": "http://unitsofmeasure.org",
                    "code": "/min",
                }
            }
        ),
    }


def bundle(*entries: dict) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:e{i}", "resource": r} for i, r in enumerate(entries)],
        }
    )


CORPUS: list[tuple[str, bytes, str]] = [
    # --- not JSON / not an object ---
    ("truncated json", j()[:-15], "malformed_json"),
    ("plain text", b"hello monitor", "malformed_json"),
    ("empty record", b"", "malformed_json"),
    ("whitespace only", b"   ", "malformed_json"),
    ("non-utf8 bytes", b"\xff\xfe\xfd", "not_utf8"),
    ("utf-16 encoded", j().decode().encode("utf-16"), "not_utf8"),
    ("json array", b"[1, 2, 3]", "not_a_json_object"),
    ("json string", b'"a reading"', "not_a_json_object"),
    ("json number", b"42", "not_a_json_object"),
    ("two objects", j() + j(), "malformed_json"),
    (
        "raw line break inside",
        j().replace(b", ", b",\n ", 1) if b", " in j() else j()[:10] + b"\n" + j()[10:],
        "malformed_json",
    ),
    # --- wrong types ---
    ("heart rate as text", j(heart_rate="fast"), "wrong_type"),
    ("heart rate as object", j(heart_rate={"value": 72}), "wrong_type"),
    ("heart rate as array", j(heart_rate=[72]), "wrong_type"),
    ("heart rate as boolean", j(heart_rate=True), "wrong_type"),
    ("patient id as number", j(patient_id=12345), "wrong_type"),
    ("supplemental oxygen as text", j(supplemental_oxygen="yes"), "wrong_type"),
    (
        "number too big for a double",
        b'{"patient_id":"P1","timestamp":"2026-11-22T06:00:00Z","heart_rate":1e999}',
        "malformed_json",
    ),
    # --- NaN / Infinity ---
    (
        "NaN literal",
        b'{"patient_id":"P1","timestamp":"2026-11-22T06:00:30Z","heart_rate":NaN}',
        "heart_rate_finite",
    ),
    # --- missing fields ---
    ("empty object", b"{}", "patient_id_required"),
    ("missing patient id", j(patient_id=DROP), "patient_id_required"),
    ("empty patient id", j(patient_id=""), "patient_id_required"),
    ("missing timestamp", j(timestamp=DROP), "timestamp_required"),
    (
        "no vitals at all",
        j(heart_rate=DROP, temperature=DROP, spo2=DROP, respiration_rate=DROP, blood_pressure=DROP),
        "vital_required",
    ),
    # --- identifiers: control characters, injection, huge ---
    ("control character in patient id", j(patient_id="P1\u0007"), "patient_id_format"),
    ("sql injection in patient id", j(patient_id="P1'; DROP TABLE patients;--"), "patient_id_format"),
    ("html injection in device id", j(device_id="<script>alert(1)</script>"), "device_id_format"),
    ("spaces in event id", j(event_id="evt 1"), "event_id_format"),
    ("huge patient id", j(patient_id="P" * 5000), "patient_id_format"),
    ("huge payload field", j(patient_id="P" + "9" * 1_000_000), "patient_id_format"),
    # --- timestamps ---
    ("timestamp without offset", j(timestamp="2026-11-22T06:00:30"), "timestamp_iso8601_with_offset"),
    ("timestamp as words", j(timestamp="yesterday"), "timestamp_iso8601_with_offset"),
    ("impossible date", j(timestamp="2026-02-31T06:00:30Z"), "timestamp_iso8601_with_offset"),
    ("month 13", j(timestamp="2026-13-01T06:00:30Z"), "timestamp_iso8601_with_offset"),
    ("leap second", j(timestamp="2026-11-22T06:00:60Z"), "timestamp_iso8601_with_offset"),
    ("future beyond skew", j(timestamp=(INGEST + timedelta(hours=2)).isoformat()), "timestamp_in_future"),
    ("old but plausible", j(timestamp="2025-01-01T00:00:00Z"), "timestamp_older_than_lateness"),
    (
        "device clock never set (Unix epoch)",
        j(timestamp="1970-01-01T00:00:12Z"),
        "timestamp_before_plausible_floor",
    ),
    (
        "device clock never set (RTC epoch)",
        j(timestamp="2000-01-01T00:00:00Z"),
        "timestamp_before_plausible_floor",
    ),
    ("year 1", j(timestamp="0001-01-01T00:00:00Z"), "timestamp_before_plausible_floor"),
    ("year 9999", j(timestamp="9999-12-31T23:59:59Z"), "timestamp_in_future"),
    # --- records that are no reading at all ---
    ("record over 1 MiB", b'{"patient_id":"P1","pad":"' + b"x" * (1 << 20) + b'"}', "record_too_large"),
    ("undecodable envelope as a record", b'{"v":1,"values":["a"],"b64":[5]}', "bad_envelope"),
    ("envelope with non-list partitions", b'{"v":1,"values":["a"],"partitions":5}', "bad_envelope"),
    ("envelope with a huge timestamp", b'{"v":1,"values":["a"],"timestamps_ms":[1e300]}', "bad_envelope"),
    ("whole valid envelope as a record", envelope.encode_envelope([], source="file")[0], "bad_envelope"),
    ("deeply nested json", b"[" * 5000 + b"]" * 5000, "malformed_json"),
    ("nul bytes", b"\x00" * 10, "malformed_json"),
    ("unicode line separator in a value", j(patient_id="P1\u2028"), "patient_id_format"),
    ("correction of an unreadable id", j(supersedes="evt 1; drop"), "supersedes_format"),
    # --- FHIR that is no plain measurement of one patient ---
    (
        "fhir value with a comparator",
        orjson.dumps(obs(valueQuantity={"value": 40, "comparator": "<", "code": "/min"})),
        "fhir_comparator",
    ),
    ("fhir value as a string", orjson.dumps(obs(valueString="72")), "fhir_not_a_measurement"),
    ("fhir subject a Group", orjson.dumps(obs(subject="Group/ward-7")), "fhir_subject_not_patient"),
    (
        "fhir bundle whose every entry fails",
        bundle(obs(subject="Group/g"), obs(valueString="x")),
        "fhir_subject_not_patient",
    ),
    # --- absurd values ---
    ("heart rate 999", j(heart_rate=999), "heart_rate_possible_range"),
    ("negative heart rate", j(heart_rate=-5), "heart_rate_possible_range"),
    ("pulse oximeter no-pulse code 255", j(heart_rate=255), "heart_rate_device_code"),
    ("spo2 over 100", j(spo2=150.0), "spo2_possible_range"),
    ("spo2 zero", j(spo2=0.0), "spo2_possible_range"),
    ("negative temperature", j(temperature=-4.0), "temperature_possible_range"),
    ("respiration 500", j(respiration_rate=500), "respiration_rate_possible_range"),
    ("unknown temperature unit", j(temperature=310.0, temperature_unit="K"), "temperature_unit_known"),
    ("consciousness not ACVPU", j(consciousness="X"), "consciousness_acvpu"),
    # --- blood pressure variants ---
    ("bp as words", j(blood_pressure="high"), "blood_pressure_format"),
    ("bp with spaces", j(blood_pressure="120 / 80"), "blood_pressure_format"),
    ("bp with three parts", j(blood_pressure="120/80/60"), "blood_pressure_format"),
    ("bp systolic below diastolic", j(blood_pressure="70/90"), "systolic_above_diastolic"),
    (
        "bp fields systolic below diastolic",
        j(blood_pressure=DROP, systolic=70, diastolic=90),
        "systolic_above_diastolic",
    ),
    # --- tricky but valid ---
    ("extra unknown fields", j(firmware="2.1", battery=0.8), SILVER),
    ("fahrenheit temperature", j(temperature=100.4, temperature_unit="[degF]"), SILVER),
    ("bp as two fields", j(blood_pressure=DROP, systolic=131, diastolic=84), SILVER),
    ("offset +05:30", j(timestamp=(INGEST - timedelta(seconds=20)).astimezone().isoformat()), SILVER),
    ("Z suffix", j(timestamp=(INGEST - timedelta(seconds=25)).strftime("%Y-%m-%dT%H:%M:%SZ")), SILVER),
    ("lower-case consciousness", j(consciousness="v"), SILVER),
    ("missing event id", j(event_id=DROP), SILVER),
    ("a correction of an earlier reading", j(event_id="evt-7-v2", supersedes="evt-P000001-7"), SILVER),
    ("fhir heart rate", orjson.dumps(obs()), SILVER),
    ("only heart rate", j(temperature=DROP, spo2=DROP, respiration_rate=DROP, blood_pressure=DROP), SILVER),
    ("abnormal but possible", j(heart_rate=180, spo2=82.0), SILVER),
    ("extreme tachycardia 254, one below the no-pulse code", j(heart_rate=254), SILVER),
]


def test_corpus_has_at_least_forty_distinct_bad_kinds():
    bad = [name for name, _, outcome in CORPUS if outcome != SILVER]
    assert len(set(bad)) >= 40


@pytest.mark.parametrize(("name", "record", "outcome"), CORPUS, ids=[n for n, _, _ in CORPUS])
def test_each_record_lands_where_expected(name, record, outcome):
    out = parse_batch(_bronze([record]), time_rules=RULES)
    if outcome == SILVER:
        assert out.valid.num_rows == 1, out.quarantine.to_pylist()
        assert out.quarantine.num_rows == 0
    else:
        assert out.valid.num_rows == 0
        rules = out.quarantine[c.RULES][0].as_py()
        assert outcome in rules, (name, rules, out.quarantine[c.DETAIL][0].as_py())
        # Kept exactly as received, up to the cap; the size says how much there was.
        assert out.quarantine[c.RAW][0].as_py() == record[: c.RAW_CAP_BYTES]
        assert out.quarantine[c.RAW_BYTES][0].as_py() == len(record)
        assert out.quarantine[c.RAW_TRUNCATED][0].as_py() == (len(record) > c.RAW_CAP_BYTES)


def test_a_bundle_with_one_bad_entry_reaches_silver_and_quarantines_the_entry():
    record = bundle(obs(), obs(valueQuantity={"value": 40, "comparator": "<", "code": "/min"}))
    out = parse_batch(_bronze([record]), time_rules=RULES)
    assert out.valid.num_rows == 1 and out.valid[c.HEART_RATE][0].as_py() == 88
    assert out.quarantine[c.RULES].to_pylist() == [["fhir_comparator"]]
    assert out.quarantine[c.RECORD_PART].to_pylist() == ["urn:uuid:e1"]
    assert out.quarantine[c.RAW].to_pylist() == [record]


def test_a_replayed_file_is_not_judged_by_lateness():
    records = envelope.records_from_lines([j(timestamp="2019-01-01T00:00:00Z")], source="file")
    bronze = envelope.to_bronze(records, ingest_time_us=int(INGEST.timestamp() * 1e6), ref_prefix="file:x")
    assert parse_batch(bronze, time_rules=RULES).valid.num_rows == 1


@pytest.mark.parametrize("rules", [RULES, None], ids=["pipeline rules", "no time rules (training)"])
@pytest.mark.parametrize("source", ["file", "pubsub"])
def test_a_clock_never_set_is_quarantined_in_every_mode(source, rules):
    records = envelope.records_from_lines([j(timestamp="1970-01-01T00:00:00Z")], source=source)
    bronze = envelope.to_bronze(records, ingest_time_us=int(INGEST.timestamp() * 1e6), ref_prefix="file:x")
    out = parse_batch(bronze, time_rules=rules)
    assert out.valid.num_rows == 0
    assert out.quarantine[c.RULES].to_pylist() == [["timestamp_before_plausible_floor"]]


def test_a_replayed_file_is_judged_by_the_future_tolerance():
    records = envelope.records_from_lines([j(timestamp="2099-01-01T00:00:00Z")], source="file")
    bronze = envelope.to_bronze(records, ingest_time_us=int(INGEST.timestamp() * 1e6), ref_prefix="file:x")
    assert parse_batch(bronze, time_rules=RULES).quarantine[c.RULES].to_pylist() == [["timestamp_in_future"]]


def test_a_record_that_makes_the_gate_raise_is_isolated_and_named(monkeypatch):
    """A bug, not bad luck: the batch is bisected down to the record, which alone is quarantined."""
    from vitals_lake import readings  # noqa: PLC0415

    real = readings._split_blood_pressure

    def fragile(parsed):
        if parsed.num_rows and "boom" in parsed[c.PATIENT_ID].to_pylist():
            raise ZeroDivisionError("a bug in the gate")
        return real(parsed)

    monkeypatch.setattr(readings, "_split_blood_pressure", fragile)
    lines = (
        [raw(reading(i)) for i in range(20)]
        + [j(patient_id="boom")]
        + [raw(reading(i, patient="P2")) for i in range(9)]
    )
    out = parse_batch(_bronze(lines), time_rules=RULES)
    assert out.valid.num_rows == 29
    assert out.quarantine[c.RULES].to_pylist() == [["unreadable_record"]]
    assert "ZeroDivisionError" in out.quarantine[c.DETAIL][0].as_py()
    assert out.quarantine[c.RAW].to_pylist() == [j(patient_id="boom")]
    assert out.rule_counts["unreadable_record"] == 1


def test_fahrenheit_is_converted_and_recorded():
    row = parse_batch(_bronze([j(temperature=100.4, temperature_unit="[degF]")]), time_rules=RULES).valid
    assert row[c.TEMPERATURE][0].as_py() == pytest.approx(38.0)
    assert row[c.TEMPERATURE_CONVERTED][0].as_py() is True


def test_whole_corpus_in_one_batch_with_duplicates_conserves_every_record(tmp_path):
    records = [r for _, r, _ in CORPUS]
    duplicates = [j(), j(), raw(reading(8))]  # the same reading three times, one more once
    batch = _bronze([*records, *duplicates])
    out = parse_batch(batch, time_rules=RULES)
    from tests.factories import TEST_KEY  # noqa: PLC0415
    from vitals_lake.silver import to_silver  # noqa: PLC0415

    lake = Lake(LocalLake(root=tmp_path / "lake"))
    lake.append("bronze", batch)
    lake.append("quarantine", out.quarantine)
    silver = to_silver(out.valid, patients=c.PATIENTS_SCHEMA.empty_table(), key=TEST_KEY)
    result, _ = lake.insert_new(
        "silver", silver, key=c.EVENT_ID, time_column=c.TIMESTAMP, horizon=timedelta(hours=1)
    )
    assert lake.count("bronze") == lake.count("silver") + lake.count("quarantine") + result.duplicates
    assert lake.count("quarantine") == sum(1 for _, _, o in CORPUS if o != SILVER)
    assert result.duplicates >= 2


def _bronze(lines: list[bytes]) -> pa.Table:
    records = envelope.records_from_lines(lines, source="pubsub")  # streamed: lateness applies
    ingest_us = int(INGEST.timestamp() * 1_000_000)
    return envelope.to_bronze(records, ingest_time_us=ingest_us, ref_prefix="file:corpus")


def test_corpus_readings_default_to_the_test_clock():
    # Valid corpus readings sit a few seconds before the fixed ingest time, inside every rule.
    doc = orjson.loads(j())
    at = datetime.fromisoformat(doc[c.TIMESTAMP])
    assert at.tzinfo is not None and INGEST - at < timedelta(minutes=10)
    assert at.astimezone(UTC) < INGEST
