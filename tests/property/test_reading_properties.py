"""Property tests: the reading gate is total and accounts for every record.

Batches of generated records (mutations of valid readings above all: fields deleted, retyped, set to
huge, NaN or control-character values; also FHIR-shaped documents, envelope-shaped records, arbitrary
JSON and arbitrary bytes) go through ``parse_batch`` and ``to_silver``. No exception escapes; every
record ends as exactly one Silver row or one whole-record quarantine row naming known rules; quarantine
keeps the record's size and at most ``RAW_CAP_BYTES`` of it; and in a Delta lake, Bronze = Silver +
quarantine + duplicates removed.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import T0, TEST_KEY, bronze, reading
from vitals_lake import contract as c
from vitals_lake import envelope, fhir
from vitals_lake import expectations as ex
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from vitals_lake.readings import TimeRules, parse_batch
from vitals_lake.silver import to_silver

PER_EXAMPLE = 50
EXAMPLES = 210  # 210 x 50 = 10,500 generated records
INGEST_US = int((T0 + timedelta(minutes=1)).timestamp() * 1_000_000)
RULES = TimeRules(clock_skew=timedelta(minutes=5), max_age=timedelta(minutes=30))
KNOWN_RULES = (
    {e.name for e in ex.SILVER_EXPECTATIONS}
    | set(ex.PARSER_RULES)
    | set(ex.TIME_RULES)
    | {ex.RULE_TIMESTAMP_IMPLAUSIBLE}
    | set(fhir.FHIR_RULES)
)
FIELDS = [f.name for f in c.READING_JSON_SCHEMA]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included: written as the NaN / Infinity literals some senders use
    st.text(max_size=12),
    st.sampled_from(["", "120/80", "70/90", "Cel", "[degF]", "A", "v", "1970-01-01T00:00:00Z", "\u2028\x00"]),
    st.sampled_from(["2026-11-22T06:00:30Z", "2026-02-31T00:00:00Z", "2099-01-01T00:00:00+00:00"]),
)
values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=6,
)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def mutated_readings(draw: st.DrawFn) -> bytes:
    doc = reading(draw(st.integers(0, 11)), patient=draw(st.sampled_from(["P000001", "P000002"])))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from([*FIELDS, "extra"]))
        if draw(st.booleans()):
            doc.pop(key, None)
        else:
            doc[key] = draw(values)
    out = _dumps(doc)
    if draw(st.integers(0, 9)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return out


@st.composite
def fhir_documents(draw: st.DrawFn) -> bytes:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": draw(st.sampled_from(["hr-1", "hr-2"])),
        "status": draw(st.sampled_from(["final", "amended", "cancelled", None])),
        "code": {
            "coding": [{"system": fhir.LOINC, "code": draw(st.sampled_from(["8867-4", "9279-1", "1-1"]))}]
        },
        "subject": {"reference": draw(st.sampled_from(["Patient/P000001", "Group/G1", "Patient/P000002"]))},
        "effectiveDateTime": (T0 + timedelta(seconds=draw(st.integers(0, 50)))).isoformat(),
        "valueQuantity": {"value": draw(st.integers(30, 200)), "unit": "/min", "code": "/min"},
    }
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([*obs, "component", "hasMember", "contained"]))
        obs[key] = draw(values)
    if draw(st.booleans()):
        return _dumps(obs)
    entries = [{"fullUrl": f"urn:uuid:{i}", "resource": obs} for i in range(draw(st.integers(1, 3)))]
    return _dumps(
        {
            "resourceType": "Bundle",
            "type": draw(st.sampled_from(["collection", "searchset"])),
            "entry": entries,
        }
    )


records = st.one_of(
    mutated_readings(),
    mutated_readings(),
    mutated_readings(),
    fhir_documents(),
    st.binary(max_size=60),
    values.map(_dumps),
    st.just(b'{"v":1,"values":["a"],"b64":[5]}'),
)


def _bronze(lines: list[bytes]) -> pa.Table:
    return envelope.to_bronze(
        envelope.records_from_lines(lines, source="pubsub"), ingest_time_us=INGEST_US, ref_prefix="pubsub:p"
    )


def test_every_record_ends_in_silver_or_quarantine_and_nothing_raises(tmp_path):
    inputs = 0
    everything: list[bytes] = []

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(records, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def prop(lines: list[bytes]) -> None:
        nonlocal inputs
        inputs += len(lines)
        out = parse_batch(_bronze(lines), time_rules=RULES)
        whole = out.quarantine.filter(pc.is_null(out.quarantine[c.RECORD_PART]))
        assert out.valid.num_rows + whole.num_rows == len(lines)
        for rules in out.quarantine[c.RULES].to_pylist():
            assert rules and set(rules) <= KNOWN_RULES, rules
        sizes = out.quarantine[c.RAW_BYTES].to_pylist()
        kept = [len(r) for r in out.quarantine[c.RAW].to_pylist()]
        assert all(k == min(s, c.RAW_CAP_BYTES) for k, s in zip(kept, sizes, strict=True))
        silver = to_silver(out.valid, patients=c.PATIENTS_SCHEMA.empty_table(), key=TEST_KEY)
        assert silver.schema == c.GATED_SCHEMA and silver.num_rows == out.valid.num_rows
        if len(everything) < 2_000:
            everything.extend(lines)

    prop()
    assert inputs >= 10_000, inputs

    # The same generated records, as one batch into a lake: nothing is lost, nothing counted twice.
    lake = Lake(LocalLake(root=tmp_path / "lake"))
    batch = _bronze(everything)
    out = parse_batch(batch, time_rules=RULES)
    lake.append("bronze", batch)
    lake.append("quarantine", out.quarantine)
    silver = to_silver(out.valid, patients=c.PATIENTS_SCHEMA.empty_table(), key=TEST_KEY)
    result, _ = lake.insert_new(
        "silver", silver, key=c.EVENT_ID, time_column=c.TIMESTAMP, horizon=timedelta(days=3650)
    )
    parts = out.quarantine.filter(pc.is_valid(out.quarantine[c.RECORD_PART])).num_rows
    assert lake.count("bronze") == lake.count("silver") + lake.count("quarantine") - parts + result.duplicates
    assert result.duplicates > 0  # mutated readings repeat: the count is exercised, not vacuous


# --- parse_batch alone: any bytes, any JSON object ------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200) | st.text(max_size=200).map(str.encode), min_size=1, max_size=30))
def test_no_input_escapes_the_parser_and_nothing_is_lost(lines):
    out = parse_batch(bronze(lines))
    assert out.valid.num_rows + out.quarantine.num_rows == len(lines)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([c.EVENT_ID, c.PATIENT_ID, c.TIMESTAMP, c.HEART_RATE, c.SPO2, c.BLOOD_PRESSURE, "x"]),
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    )
)
def test_arbitrary_json_objects_are_silver_or_quarantine(doc):
    out = parse_batch(bronze([json.dumps(doc).encode()]))  # json: integers beyond 64 bits are valid JSON
    assert out.valid.num_rows + out.quarantine.num_rows == 1
