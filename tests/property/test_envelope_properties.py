"""Property tests: the envelope decoder and the Pub/Sub reader are total.

Whatever bytes a Pub/Sub message holds (arbitrary bytes, arbitrary JSON, and above all mutations of
valid envelopes, the shape a buggy or hostile producer sends), ``decode_envelope`` returns one row per
value or raises ``EnvelopeError``, nothing else; ``DecodeEnvelopeFn`` never raises and emits exactly one
Bronze table per message, holding the whole message when it is not a decodable envelope. And whatever a
Kafka record holds, what the bridge encodes decodes back.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pyarrow as pa
from apache_beam.io import PubsubMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.sources import DecodeEnvelopeFn
from vitals_lake import contract as c
from vitals_lake import envelope as e

PER_EXAMPLE = 40
EXAMPLES = 260  # 260 x 40 = 10,400 generated inputs per property
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
source_records = st.builds(
    e.SourceRecord,
    value=st.one_of(st.binary(max_size=60), st.text(max_size=40).map(str.encode)),
    key=st.one_of(st.none(), st.text(max_size=10)),
    partition=st.one_of(st.none(), st.integers(min_value=-(2**40), max_value=2**40)),
    offset=st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70)),
    timestamp_ms=st.one_of(st.none(), st.integers(min_value=-(2**66), max_value=2**66)),
)
ENVELOPE_KEYS = ("v", "source", "values", "b64", "topic", "keys", "partitions", "offsets", "timestamps_ms")


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # the standard library writes integers of any size, as senders may


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    """A valid envelope, then one to three mutations: a key replaced, deleted, or a list item changed."""
    records = draw(st.lists(source_records, min_size=1, max_size=5))
    data, _ = e.encode_envelope(
        records, source=draw(st.sampled_from(["kafka", "simulator"])), kafka_topic="t"
    )
    body: dict[str, Any] = orjson.loads(data)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(ENVELOPE_KEYS))
        action = draw(st.sampled_from(["replace", "delete", "item"]))
        if action == "delete":
            body.pop(key, None)
        elif action == "item" and isinstance(body.get(key), list) and body[key]:
            body[key][draw(st.integers(0, len(body[key]) - 1))] = draw(json_values)
        else:
            body[key] = draw(json_values)
    out = _dumps(body)
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter are also cut short
        out = out[: draw(st.integers(0, len(out)))]
    return out


message_bodies = st.one_of(
    mutated_envelopes(),
    mutated_envelopes(),  # weighted: the shape that used to stop the stream
    st.binary(max_size=80),
    json_values.map(_dumps),
    st.dictionaries(st.sampled_from(ENVELOPE_KEYS), json_values, max_size=6).map(_dumps),
)


def test_decode_envelope_raises_only_envelope_error_and_the_reader_never_raises():
    inputs = 0
    fn = DecodeEnvelopeFn()

    @SETTINGS
    @given(st.lists(message_bodies, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def prop(bodies: list[bytes]) -> None:
        nonlocal inputs
        inputs += len(bodies)
        for i, body in enumerate(bodies):
            try:
                table = e.decode_envelope(body)
            except e.EnvelopeError:
                expected_rows = 1  # kept whole: the gate quarantines it
            else:
                assert table.schema == e.ENVELOPE_COLUMNS
                assert table.num_rows == len(orjson.loads(body)["values"])
                expected_rows = table.num_rows if e.is_envelope(body) else 1
            (bronze,) = list(fn.process(PubsubMessage(body, {}, message_id=str(i))))
            assert bronze.schema == c.BRONZE_SCHEMA
            assert bronze.num_rows == expected_rows
            if expected_rows == 1 and bronze.num_rows == 1 and not e.is_envelope(body):
                assert bronze[c.RAW][0].as_py() == body  # a single record travels byte for byte

    prop()
    assert inputs >= 10_000, inputs


def test_whatever_the_bridge_encodes_decodes_back():
    inputs = 0

    @SETTINGS
    @given(st.lists(source_records, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def prop(records: list[e.SourceRecord]) -> None:
        nonlocal inputs
        inputs += len(records)
        data, attrs = e.encode_envelope(records, source="kafka", kafka_topic="vitals")
        table = e.decode_envelope(data)  # never EnvelopeError for what we encoded ourselves
        assert table[c.RAW].to_pylist() == [r.value[: c.MAX_RECORD_BYTES + 1] for r in records]
        assert attrs[e.ATTR_COUNT] == str(len(records))
        offsets = table[c.KAFKA_OFFSET].to_pylist()
        for r, got in zip(records, offsets, strict=True):
            assert got == r.offset or (got is None and r.offset is not None and abs(r.offset) >= 2**63 - 1)

    prop()
    assert inputs >= 10_000, inputs


def test_an_oversized_record_travels_cut_just_past_the_limit():
    big = e.SourceRecord(value=b"x" * (c.MAX_RECORD_BYTES * 2), partition=0, offset=1)
    table = e.decode_envelope(e.encode_envelope([big], source="kafka", kafka_topic="t")[0])
    assert len(table[c.RAW][0].as_py()) == c.MAX_RECORD_BYTES + 1  # the gate rejects it as too large


def test_the_issue_reproducer_is_an_envelope_error_not_an_index_error():
    body = b'{"v":1,"values":["a"],"b64":[5]}'
    try:
        e.decode_envelope(body)
    except e.EnvelopeError as exc:
        assert "b64" in str(exc)
    else:
        raise AssertionError("decoded an envelope whose b64 index is out of range")
    (bronze,) = list(DecodeEnvelopeFn().process(PubsubMessage(body, {}, message_id="1")))
    assert bronze[c.RAW].to_pylist() == [body]
    assert isinstance(bronze, pa.Table)
