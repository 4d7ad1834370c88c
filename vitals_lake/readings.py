"""Turn a batch of raw records (Bronze rows) into typed Silver rows and quarantine rows.

The fast path parses the whole batch with Arrow's JSON reader against the reading contract in one
call. Only when a batch holds bad records does it bisect, so a few bad records among thousands cost
O(k log n) parses and a bad record can never take its neighbours down with it.

``parse_batch`` is total: whatever the bytes, every record ends in exactly one place (a Silver row or
a quarantine row naming its rule). Should a record still make the gate raise (a bug, not bad luck),
the batch is bisected down to that record, which is quarantined as ``unreadable_record`` with the
exception named, and the rest of the batch goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from vitals_lake import contract as c
from vitals_lake import envelope, fhir
from vitals_lake import expectations as ex
from vitals_lake.byte_search import (
    containing,
    containing_each,
    framed_by,
    impossible_dates,
    non_ascii,
    value_offsets,
)
from vitals_lake.isolation import run_isolating
from vitals_lake.masks import true_where

_UTC_US: Final = pa.timestamp("us", tz="UTC")
_LINE_BREAKS: Final = (b"\n", b"\r")  # a record holding one raw cannot share an NDJSON buffer
_PARSE_OPTIONS: Final = pj.ParseOptions(
    explicit_schema=c.READING_JSON_SCHEMA, unexpected_field_behavior="ignore", newlines_in_values=False
)
_LINEAGE_COLUMNS: Final = [f.name for f in c.BRONZE_SCHEMA if f.name not in (c.RAW, c.INGEST_DATE)]


# What the gate produces per valid reading: the gated columns before enrichment and scoring.
VALIDATED_SCHEMA: Final = pa.schema(
    [
        f
        for f in c.GATED_SCHEMA
        if f.name not in {x.name for x in c.CLINICAL_FIELDS + c.ENRICHMENT_FIELDS}
        or f.name in (c.TEMPERATURE_CONVERTED, c.CONSCIOUSNESS, c.SUPPLEMENTAL_OXYGEN)
    ]
)


@dataclass(frozen=True)
class TimeRules:
    """Timestamp sanity, judged against each record's own ingest time.

    Whatever the rules, a reading before ``c.PLAUSIBLE_AFTER`` (a device whose clock was never set)
    is quarantined in every mode; these rules add the future tolerance and the allowed age.
    """

    clock_skew: timedelta = timedelta(minutes=5)  # a device clock may run this far ahead
    max_age: timedelta | None = None  # older than this is quarantined (the allowed lateness)


@dataclass
class ParsedBatch:
    valid: pa.Table  # VALIDATED_SCHEMA
    quarantine: pa.Table  # c.QUARANTINE_SCHEMA
    rule_counts: dict[str, int] = field(default_factory=dict)  # rule -> rows failing it
    checked: dict[str, int] = field(default_factory=dict)  # rule -> rows it was evaluated on


def parse_batch(bronze: pa.Table, *, time_rules: TimeRules | None = None) -> ParsedBatch:
    """Validate Bronze rows (``c.BRONZE_SCHEMA``); each row ends in exactly one of the two outputs.

    ``time_rules`` None (model training, offline tools) skips the future and age rules; the
    plausibility floor applies always.
    """
    results, poison = run_isolating(bronze, lambda part: _parse_batch(part, time_rules))
    if poison:
        results.append(unreadable(bronze, poison))
    return merge_parsed(results) if len(results) != 1 else results[0]


def _parse_batch(bronze: pa.Table, time_rules: TimeRules | None) -> ParsedBatch:
    n = bronze.num_rows
    raw = bronze[c.RAW].combine_chunks()
    # The byte strings the checks below look for, found over one copy of the batch's bytes.
    wrapped, marked, breaks = containing_each(raw, [[b'"values"'], [fhir.FHIR_MARK], _LINE_BREAKS])
    # Records that are no reading at all: too large to be one, or a Pub/Sub envelope that could not be
    # unpacked (DecodeEnvelopeFn keeps such a message whole, as one record, so it is judged here).
    early = _oversized(raw)
    early.update(_envelopes(raw, wrapped, skip=early))
    records, fhir_errors, fhir_parts = _normalise_fhir(raw, marked, skip=early)
    fhir_errors.update(early)
    # FHIR records turned into readings are new records: their line breaks are looked for again.
    parsed, ok_idx, errors = parse_json(records, skip=fhir_errors, breaks=breaks if records is raw else None)
    errors.update(fhir_errors)

    normalised, converted = _normalise_units(_split_blood_pressure(parsed))
    failures = ex.evaluate(normalised)
    timestamps, bad_ts = _parse_timestamps(normalised[c.TIMESTAMP], ~failures.drop)
    _record(failures, bad_ts, "timestamp_iso8601_with_offset", normalised[c.TIMESTAMP])
    ingest = bronze[c.INGEST_TIME].take(pa.array(ok_idx))
    checked_ts = ~(failures.drop | bad_ts)
    implausible = checked_ts & _before_floor(timestamps)
    _record(failures, implausible, ex.RULE_TIMESTAMP_IMPLAUSIBLE, normalised[c.TIMESTAMP])
    bad_ts |= implausible
    checked_plausible = int(checked_ts.sum())
    checked_ts &= ~implausible
    if time_rules is not None:
        # Lateness applies to streamed records; a file is historical by nature, whenever replayed.
        streamed = pc.not_equal(bronze[c.SOURCE].take(pa.array(ok_idx)), "file").to_numpy(
            zero_copy_only=False
        )
        future, old = _time_sanity(timestamps, ingest, checked_ts, time_rules)
        old &= streamed
        _record(failures, future, ex.RULE_TIMESTAMP_IN_FUTURE, normalised[c.TIMESTAMP])
        _record(failures, old, ex.RULE_TIMESTAMP_TOO_OLD, normalised[c.TIMESTAMP])
        bad_ts |= future | old
    keep = ~(failures.drop | bad_ts)

    rules: dict[int, list[str]] = {i: [rule] for i, (rule, _) in errors.items()}
    details: dict[int, str] = {i: detail for i, (_, detail) in errors.items()}
    for j, names in failures.rules.items():
        if not keep[j]:
            rules[int(ok_idx[j])] = names
            details[int(ok_idx[j])] = failures.details.get(j, "")
    counts = {rule: 0 for rule in (*ex.PARSER_RULES, *fhir.FHIR_RULES)}
    for rule, _ in errors.values():
        counts[rule] = counts.get(rule, 0) + 1
    for _, problem in fhir_parts:
        counts[problem.rule] = counts.get(problem.rule, 0) + 1
    for name, count in failures.counts.items():
        counts[name] = counts.get(name, 0) + count
    # Parser rules see every record, expectations the parsed ones, time rules those still valid.
    checked = {rule: n for rule in (*ex.PARSER_RULES, *fhir.FHIR_RULES)}
    checked.update({name: len(ok_idx) for name in failures.counts})
    checked[ex.RULE_TIMESTAMP_IMPLAUSIBLE] = checked_plausible
    checked.update({name: int(checked_ts.sum()) for name in ex.TIME_RULES if name in failures.counts})

    keep_arr = pa.array(keep)
    valid = _validated_rows(
        bronze.select([c.RECORD_REF, c.INGEST_TIME]).take(pa.array(ok_idx[keep])),  # not the payloads
        normalised.filter(keep_arr),
        timestamps.filter(keep_arr),
        converted.filter(keep_arr),
    )
    quarantine = _quarantine_rows(bronze, normalised, ok_idx, rules, details)
    assert valid.num_rows + quarantine.num_rows == n, "every record lands in Silver or quarantine"
    if fhir_parts:  # entries of a FHIR Bundle rejected on their own; the rest of it is a reading
        quarantine = pa.concat_tables([quarantine, _part_rows(bronze, fhir_parts)])
    return ParsedBatch(valid=valid, quarantine=quarantine, rule_counts=counts, checked=checked)


def merge_parsed(parts: list[ParsedBatch]) -> ParsedBatch:
    """One ``ParsedBatch`` from the parsed slices of a batch (counts added rule by rule)."""
    counts: dict[str, int] = {}
    checked: dict[str, int] = {}
    for part in parts:
        for rule, k in part.rule_counts.items():
            counts[rule] = counts.get(rule, 0) + k
        for rule, k in part.checked.items():
            checked[rule] = checked.get(rule, 0) + k
    return ParsedBatch(
        valid=pa.concat_tables([p.valid for p in parts]) if parts else VALIDATED_SCHEMA.empty_table(),
        quarantine=pa.concat_tables([p.quarantine for p in parts])
        if parts
        else c.QUARANTINE_SCHEMA.empty_table(),
        rule_counts=counts,
        checked=checked,
    )


def unreadable(bronze: pa.Table, poison: list[tuple[int, str]]) -> ParsedBatch:
    """Quarantine rows for the records the gate raised on, each alone (``RULE_UNREADABLE``)."""
    rules = {i: [ex.RULE_UNREADABLE] for i, _ in poison}
    details = dict(poison)
    quarantine = _quarantine_rows(
        bronze, c.READING_JSON_SCHEMA.empty_table(), np.zeros(0, np.int64), rules, details
    )
    return ParsedBatch(
        valid=VALIDATED_SCHEMA.empty_table(),
        quarantine=quarantine,
        rule_counts={ex.RULE_UNREADABLE: len(poison)},
        checked={ex.RULE_UNREADABLE: len(poison)},
    )


def _oversized(raw: pa.Array) -> dict[int, tuple[str, str]]:
    """Records larger than ``c.MAX_RECORD_BYTES``: no reading (or FHIR resource of one) is that large."""
    sizes = pc.binary_length(raw).to_numpy(zero_copy_only=False)
    return {
        int(i): (ex.RULE_TOO_LARGE, f"record of {int(sizes[i]):,} bytes; at most {c.MAX_RECORD_BYTES:,}")
        for i in np.flatnonzero(sizes > c.MAX_RECORD_BYTES)
    }


def _envelopes(
    raw: pa.Array, wrapped: np.ndarray, *, skip: dict[int, tuple[str, str]]
) -> dict[int, tuple[str, str]]:
    """Records shaped like a Pub/Sub envelope: one that could not be unpacked, kept whole by the reader.
    ``wrapped``: the records naming a ``"values"`` key (rare), the only ones that can be."""
    out: dict[int, tuple[str, str]] = {}
    for i in np.flatnonzero(wrapped).tolist():
        value = raw[i].as_py()
        if i in skip or not envelope.is_envelope(value):
            continue
        try:
            envelope.decode_envelope(value)
            why = "a whole envelope arrived as one record"
        except envelope.EnvelopeError as exc:
            why = str(exc)
        out[i] = (ex.RULE_BAD_ENVELOPE, why)
    return out


def _before_floor(timestamps: pa.Array) -> np.ndarray:
    micros = pc.cast(timestamps, pa.int64()).to_numpy(zero_copy_only=False)
    floor = int(c.PLAUSIBLE_AFTER.timestamp() * 1_000_000)
    with np.errstate(invalid="ignore"):
        return np.asarray(np.nan_to_num(micros, nan=float(floor)) < floor, dtype=bool)


def _record(failures: ex.RuleFailures, mask: np.ndarray, rule: str, values: pa.ChunkedArray) -> None:
    """Add a rule evaluated outside ``ex.evaluate`` (it needs the parsed timestamps)."""
    failures.counts[rule] = failures.counts.get(rule, 0) + int(mask.sum())
    for i in np.flatnonzero(mask).tolist():
        failures.rules.setdefault(i, []).append(rule)
        failures.details[i] = f"{c.TIMESTAMP}={values[i].as_py()!r}"


def _time_sanity(
    timestamps: pa.Array, ingest: pa.ChunkedArray, candidates: np.ndarray, rules: TimeRules
) -> tuple[np.ndarray, np.ndarray]:
    ts = pc.cast(timestamps, pa.int64()).to_numpy(zero_copy_only=False)
    at = pc.cast(ingest, pa.int64()).to_numpy(zero_copy_only=False)
    skew_us = rules.clock_skew.total_seconds() * 1e6
    future = candidates & (ts > at + skew_us)
    if rules.max_age is None:
        return future, np.zeros_like(future)
    old = candidates & (ts < at - rules.max_age.total_seconds() * 1e6)
    return future, old


def _normalise_fhir(
    raw: pa.Array, marked: np.ndarray, *, skip: dict[int, tuple[str, str]]
) -> tuple[pa.Array, dict[int, tuple[str, str]], list[tuple[int, fhir.FhirProblem]]]:
    """FHIR R4 Observations become plain readings before parsing; the Bronze row keeps the original.
    ``marked``: the records holding ``fhir.FHIR_MARK``.

    Returns the records with FHIR ones replaced by readings, the FHIR records rejected whole, and the
    entries of otherwise valid Bundles rejected on their own (record index, problem).
    """
    mask = fhir.looks_like_fhir(raw, marked=marked)
    if skip:
        mask[list(skip)] = False
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return raw, {}, []
    errors: dict[int, tuple[str, str]] = {}
    parts: list[tuple[int, fhir.FhirProblem]] = []
    values = raw.to_pylist()
    for i, out in zip(idx.tolist(), fhir.normalise_fhir([values[i] for i in idx.tolist()]), strict=True):
        if out.reading is None:
            whole = out.problems[0]
            errors[i] = (whole.rule, whole.detail)
        else:
            values[i] = out.reading
            parts.extend((i, problem) for problem in out.problems)
    return pa.array(values, pa.binary()), errors, parts


def _normalise_units(parsed: pa.Table) -> tuple[pa.Table, pa.Array]:
    """Temperatures sent in °F become °C; the returned mask records which were converted."""
    unit = parsed[c.TEMPERATURE_UNIT]
    is_f = pc.fill_null(pc.is_in(unit, value_set=pa.array(ex.FAHRENHEIT_UNITS, pa.string())), False)
    celsius = pc.round(pc.divide(pc.multiply(pc.subtract(parsed[c.TEMPERATURE], 32.0), 5.0), 9.0), 2)
    converted = pc.and_(is_f, pc.is_valid(parsed[c.TEMPERATURE]))
    temperature = pc.if_else(converted, celsius, parsed[c.TEMPERATURE])
    out = parsed.set_column(parsed.schema.get_field_index(c.TEMPERATURE), c.TEMPERATURE, temperature)
    return out, converted.combine_chunks() if isinstance(converted, pa.ChunkedArray) else converted


def parse_json(
    raw: pa.Array, *, skip: dict[int, tuple[str, str]] | None = None, breaks: np.ndarray | None = None
) -> tuple[pa.Table, np.ndarray, dict[int, tuple[str, str]]]:
    """Parse records against ``READING_JSON_SCHEMA``.

    Returns the parsed rows, the indices of the records they came from (ascending), and per failed record
    index its parser rule and a short detail. Records in ``skip`` already failed elsewhere; ``breaks``:
    the records holding a raw line break, when the caller looked for them already.
    """
    n = len(raw)
    errors: dict[int, tuple[str, str]] = {}
    # Records that cannot share an NDJSON buffer: invalid UTF-8, or a raw line break inside.
    eligible = np.ones(n, dtype=bool)
    if skip:
        eligible[list(skip)] = False
    not_utf8 = _not_utf8(raw)
    for i in not_utf8.tolist():
        errors[i] = (ex.RULE_NOT_UTF8, _preview(raw[i].as_py()))
    eligible[not_utf8] = False
    # The checks and the parser work on the bytes (no cast, no copy); a record that failed a check
    # above is left out by ``eligible``, whatever these say about it.
    text = raw if pa.types.is_binary(raw.type) else raw.cast(pa.binary())
    if breaks is None:
        breaks = containing(text, *_LINE_BREAKS)
    for i in np.flatnonzero(breaks & eligible).tolist():
        errors[i] = (ex.RULE_MALFORMED_JSON, "raw line break inside the record")
    eligible &= ~breaks
    # Anything not shaped like one object (truncated, empty, an array) is classified directly. Most
    # records start with "{" and end with "}"; only the others need the regex (surrounding blanks).
    shaped = framed_by(text, b"{", b"}")
    unsure = np.flatnonzero(eligible & ~shaped)
    if unsure.size:
        rest = text.take(pa.array(unsure))
        shaped[unsure] = true_where(pc.match_substring_regex(rest, r"^\s*\{.*\}\s*$"))
    for i in np.flatnonzero(eligible & ~shaped).tolist():
        errors[i] = _classify(text[i].as_py(), "record is not one JSON object")
    eligible &= shaped

    idx = np.flatnonzero(eligible)
    chosen = text if idx.size == n else text.filter(pa.array(eligible))
    out = _Pieces(errors=errors)
    _parse_all(chosen, idx, out)
    if out.tables:
        # One chunk per column: a batch with bad records is parsed in many small pieces, and some
        # kernels pay per chunk (a regex is compiled per chunk: 180 chunks made a check 20x slower).
        parsed = pa.concat_tables(out.tables).combine_chunks()
        ok_idx = np.concatenate(out.kept)
    else:
        parsed = c.READING_JSON_SCHEMA.empty_table()
        ok_idx = np.zeros(0, dtype=np.int64)
    return parsed, ok_idx, errors


def _not_utf8(raw: pa.Array) -> np.ndarray:
    """Indices of the records that are not valid UTF-8. Only records with a byte above 0x7F can be
    (found in one pass over the bytes); those are validated together (one cast) and, if that fails,
    one by one."""
    suspects = np.flatnonzero(non_ascii(raw))
    if suspects.size == 0:
        return suspects.astype(np.int64)
    suspect = raw.take(pa.array(suspects))
    try:
        suspect.cast(pa.string())
        return np.zeros(0, dtype=np.int64)
    except pa.ArrowInvalid:
        pass
    bad: list[int] = []
    for i, value in zip(suspects.tolist(), suspect.to_pylist(), strict=True):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    return np.asarray(bad, dtype=np.int64)


_FAILED_ROW: Final = re.compile(r" in row (\d+)$")


@dataclass
class _Pieces:
    """What parsing a batch found: parsed tables with the record indices they hold, and failures."""

    errors: dict[int, tuple[str, str]]  # record index -> (rule, detail)
    tables: list[pa.Table] = field(default_factory=list)
    kept: list[np.ndarray] = field(default_factory=list)

    def accept(self, table: pa.Table, idx: np.ndarray) -> None:
        self.tables.append(table)
        self.kept.append(idx)


def _parse_all(text: pa.Array, idx: np.ndarray, out: _Pieces) -> None:
    """Parse the records in one pass of Arrow's streaming reader over one NDJSON buffer.

    The reader parses ``_BLOCK``-byte blocks and hands each over as it is done; when it rejects a
    record it names the row within its block, and every block before is already taken. So a bad
    record costs a new parse of the rows before it in its block (a few hundred at most, read from the
    same buffer), its verdict is the reader's message for its row (as if parsed alone: "in row 0"), and
    the reader starts again right after it in the same buffer. Anything else (no row named, a row count
    that does not match) is bisected by :func:`_parse_range`."""
    n = len(idx)
    if n == 0:
        return
    buf = _ndjson(text)
    offsets = value_offsets(text)
    starts = (offsets[:-1] - offsets[0]) + np.arange(len(text))  # each record's first byte in buf
    pos = 0
    while pos < n:
        batches: list[pa.RecordBatch] = []
        got = 0
        try:
            reader = pj.open_json(
                pa.BufferReader(buf.slice(int(starts[pos]))),
                read_options=pj.ReadOptions(use_threads=False, block_size=_BLOCK),
                parse_options=_PARSE_OPTIONS,
            )
            for batch in reader:
                batches.append(batch)
                got += batch.num_rows
        except pa.ArrowInvalid as exc:
            message = str(exc)
            found = _FAILED_ROW.search(message)
            row = got + int(found.group(1)) if found else -1
            if batches:
                out.accept(pa.Table.from_batches(batches), idx[pos : pos + got])
            if not got <= row < n - pos:
                _parse_range(text.slice(pos + got), idx[pos + got :], out)
                return
            first, bad = pos + got, pos + row
            if bad > first:  # the rows before it in its block
                ndjson = buf.slice(int(starts[first]), int(starts[bad] - starts[first]))
                _parse_range(text.slice(first, bad - first), idx[first:bad], out, ndjson=ndjson)
            out.errors[int(idx[bad])] = _classify(text[bad].as_py(), _FAILED_ROW.sub(" in row 0", message))
            pos = bad + 1
            continue
        if got == n - pos:
            if batches:
                out.accept(pa.Table.from_batches(batches), idx[pos:])
        else:
            _parse_range(text.slice(pos), idx[pos:], out)
        return


_BLOCK: Final = 64 << 10  # ~270 readings: what a bad record costs at most in parsing again


def _ndjson(text: pa.Array) -> pa.Buffer:
    """The records one per line, in one buffer (one join of a one-list array: a copy per record, no
    separator array)."""
    lists = pa.ListArray.from_arrays(pa.array([0, len(text)], pa.int32()), text)
    return _data_buffer(pc.binary_join(lists, b"\n"))


def _read_ndjson(text: pa.Array, ndjson: pa.Buffer | None = None) -> pa.Table:
    buf = _ndjson(text) if ndjson is None else ndjson
    block = max(1 << 20, buf.size + 1)
    return pj.read_json(
        pa.BufferReader(buf),
        read_options=pj.ReadOptions(use_threads=False, block_size=block),
        parse_options=_PARSE_OPTIONS,
    )


def _data_buffer(arr: pa.Array) -> pa.Buffer:
    """The contiguous bytes of a string array (all values back to back), without a Python copy per value."""
    offsets = value_offsets(arr)
    return arr.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _parse_range(text: pa.Array, idx: np.ndarray, out: _Pieces, *, ndjson: pa.Buffer | None = None) -> None:
    """Parse ``text`` (``ndjson``: its records one per line, if at hand) as one buffer; if that fails,
    each half on its own, down to the record at fault."""
    if len(idx) == 0:
        return
    problem = ""
    try:
        table = _read_ndjson(text, ndjson)
        if table.num_rows == len(idx):
            out.accept(table, idx)
            return
        problem = "record is empty or holds more than one JSON value"
    except pa.ArrowInvalid as exc:
        problem = str(exc)
    if len(idx) == 1:
        out.errors[int(idx[0])] = _classify(text[0].as_py(), problem)
        return
    mid = len(idx) // 2
    _parse_range(text.slice(0, mid), idx[:mid], out)
    _parse_range(text.slice(mid), idx[mid:], out)


def _classify(value: str | bytes, problem: str) -> tuple[str, str]:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return ex.RULE_MALFORMED_JSON, _preview(value)
    if not isinstance(doc, dict):
        return ex.RULE_NOT_AN_OBJECT, _preview(value)
    return ex.RULE_WRONG_TYPE, problem.removeprefix("JSON parse error: ")[:200]


def _preview(value: bytes | str, limit: int = 120) -> str:
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    return text[:limit] + ("…" if len(text) > limit else "")


def _split_blood_pressure(parsed: pa.Table) -> pa.Table:
    """Fill systolic/diastolic from a "120/80" string where the numeric fields are absent."""
    parts = pc.extract_regex(pc.fill_null(parsed[c.BLOOD_PRESSURE], ""), ex.BLOOD_PRESSURE_RE)
    out = parsed
    for name in (c.SYSTOLIC, c.DIASTOLIC):
        from_text = pc.cast(pc.struct_field(parts, name), pa.float64())
        merged = pc.coalesce(parsed[name], from_text)
        out = out.set_column(out.schema.get_field_index(name), name, merged)
    return out


def _parse_timestamps(ts: pa.ChunkedArray, candidates: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Cast ISO strings to UTC microseconds; strings the regex passed but Arrow rejects (Feb 31) fail.
    Days their month does not have are found first, so the cast seldom fails (each failure costs a
    bisection: 54 such days in a 716,132-reading file made 1,448 casts of 3.6 million strings)."""
    text = pc.if_else(pa.array(candidates), ts, pa.scalar(None, pa.string()))
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    impossible = impossible_dates(text)
    if impossible.any():
        text = pc.if_else(pa.array(impossible), pa.scalar(None, pa.string()), text)
    parsed, bad = _cast_isolating_failures(text)
    return parsed, bad | impossible


def _cast_isolating_failures(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """One cast for the whole array; when Arrow rejects some string, halve and recurse, so that k bad
    strings cost about k * log2(n) casts rather than one cast per row."""
    try:
        return pc.cast(text, _UTC_US), np.zeros(len(text), dtype=bool)
    except pa.ArrowInvalid:
        if len(text) == 1:
            return pa.nulls(1, _UTC_US), np.ones(1, dtype=bool)
    mid = len(text) // 2
    left, left_bad = _cast_isolating_failures(text.slice(0, mid))
    right, right_bad = _cast_isolating_failures(text.slice(mid))
    return pa.concat_arrays([left, right]), np.concatenate([left_bad, right_bad])


def _validated_rows(bronze: pa.Table, rows: pa.Table, timestamps: pa.Array, converted: pa.Array) -> pa.Table:
    # Readings without an event_id get a deterministic one from (device, instant), so a resend of
    # the same reading is still recognised as a duplicate.
    origin = pc.coalesce(rows[c.DEVICE_ID], rows[c.PATIENT_ID])
    micros = pc.cast(pc.cast(timestamps, pa.int64()), pa.string())
    derived = pc.binary_join_element_wise(pa.scalar("derived"), origin, micros, ":")
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        c.EVENT_ID: pc.coalesce(rows[c.EVENT_ID], derived),
        c.PATIENT_ID: rows[c.PATIENT_ID],
        c.DEVICE_ID: rows[c.DEVICE_ID],
        c.TIMESTAMP: timestamps,
    }
    for v in c.VITAL_SIGNS:
        values = rows[v.name]
        columns[v.name] = (
            pc.cast(pc.round(values, 0), v.arrow_type) if v.integral else pc.cast(values, v.arrow_type)
        )
    columns[c.TEMPERATURE_CONVERTED] = converted
    columns[c.CONSCIOUSNESS] = pc.utf8_upper(rows[c.CONSCIOUSNESS])
    columns[c.SUPPLEMENTAL_OXYGEN] = rows[c.SUPPLEMENTAL_OXYGEN]
    columns[c.SUPERSEDES] = rows[c.SUPERSEDES]
    columns[c.RECORD_REF] = bronze[c.RECORD_REF]
    columns[c.INGEST_TIME] = bronze[c.INGEST_TIME]
    columns[c.EVENT_DATE] = pc.cast(timestamps, pa.date32())
    return pa.table(columns, schema=VALIDATED_SCHEMA)


def _quarantine_rows(
    bronze: pa.Table,
    normalised: pa.Table,
    ok_idx: np.ndarray,
    rules: dict[int, list[str]],
    details: dict[int, str],
) -> pa.Table:
    if not rules:
        return c.QUARANTINE_SCHEMA.empty_table()
    rows = np.array(sorted(rules), dtype=np.int64)
    # Best-effort identifiers for triage, only where they parsed and passed their own format rule.
    # Each quarantined record's parsed row, if it parsed (ok_idx: parsed rows' records, ascending).
    at = np.minimum(np.searchsorted(ok_idx, rows), max(len(ok_idx) - 1, 0))
    parsed = (ok_idx[at] == rows) if len(ok_idx) else np.zeros(len(rows), dtype=bool)
    event_ids: list[str | None] = []
    patient_ids: list[str | None] = []
    for r, j_at, found in zip(rows.tolist(), at.tolist(), parsed.tolist(), strict=True):
        j = j_at if found else None
        names = rules[r]
        event_ids.append(
            normalised[c.EVENT_ID][j].as_py() if j is not None and "event_id_format" not in names else None
        )
        patient_ids.append(
            normalised[c.PATIENT_ID][j].as_py()
            if j is not None and "patient_id_format" not in names
            else None
        )
    picked = bronze.take(pa.array(rows))
    return _quarantine_table(
        picked,
        rules=[rules[r] for r in rows.tolist()],
        details=[details.get(r) for r in rows.tolist()],
        event_ids=event_ids,
        patient_ids=patient_ids,
        parts=[None] * len(rows),
    )


def _part_rows(bronze: pa.Table, parts: list[tuple[int, fhir.FhirProblem]]) -> pa.Table:
    """One quarantine row per rejected part of a record; the record itself reached Silver."""
    picked = bronze.take(pa.array([i for i, _ in parts], pa.int64()))
    return _quarantine_table(
        picked,
        rules=[[p.rule] for _, p in parts],
        details=[p.detail for _, p in parts],
        event_ids=[None] * len(parts),
        patient_ids=[None] * len(parts),
        parts=[p.part or "?" for _, p in parts],
    )


def _quarantine_table(
    picked: pa.Table,
    *,
    rules: list[list[str]],
    details: list[str | None],
    event_ids: list[str | None],
    patient_ids: list[str | None],
    parts: list[str | None],
) -> pa.Table:
    """``c.QUARANTINE_SCHEMA`` rows for Bronze rows: raw capped at ``c.RAW_CAP_BYTES`` (Bronze has it all)."""
    raw = picked[c.RAW]
    size = pc.binary_length(raw)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        c.RAW: pc.binary_slice(raw, 0, c.RAW_CAP_BYTES),
        c.RULES: pa.array(rules, pa.list_(pa.string())),
        c.DETAIL: pa.array(details, pa.string()),
        c.EVENT_ID: pa.array(event_ids, pa.string()),
        c.PATIENT_ID: pa.array(patient_ids, pa.string()),
        c.RAW_BYTES: pc.cast(size, pa.int64()),
        c.RAW_TRUNCATED: pc.greater(size, c.RAW_CAP_BYTES),
        c.RECORD_PART: pa.array(parts, pa.string()),
    }
    for name in _LINEAGE_COLUMNS:
        columns[name] = picked[name]
    columns[c.INGEST_DATE] = picked[c.INGEST_DATE]
    return pa.table(columns, schema=c.QUARANTINE_SCHEMA)
