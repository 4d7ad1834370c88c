"""Admissions: the daily patient CSV drops and the diagnosis reference, loaded like Auto Loader.

    landing/patients_daily_file_*.csv --discover_new_files--> load_bronze (every cell as text,
    one append per file) --clean_patients--> patients (one row per patient, MERGE by patient_id)
    reference/diagnosis_mapping.csv --load_diagnoses--> diagnoses (replaced when the file changes)

``enrich_readings`` joins ``patients`` onto Silver readings (pseudonym, ward, bed, age band, diagnosis,
NEWS2 SpO2 scale); ``PatientDirectory`` keeps that table in memory for the streaming pipeline.

Bookkeeping lives in the tables themselves, so a restart (or a crash anywhere) needs no state file:

* a file is loaded iff its name is not yet in ``bronze_admissions.source_file``;
* ``patients`` is recomputed for every patient with Bronze rows ingested at or after the table's
  latest ``updated_at`` (all patients when the diagnosis reference was reloaded after it). A crash
  between the Bronze append and the patients MERGE is therefore repaired by the next pass.

One loader process per lake is assumed (as with one Auto Loader stream per checkpoint).
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from deltalake import write_deltalake

from vitals_lake import contract as c
from vitals_lake.expectations import ID_RE
from vitals_lake.lake import BatchMarker, Lake, one_per_key
from vitals_lake.pseudonym import pseudonymise

log = logging.getLogger(__name__)

FEMALE: Final = "F"
MALE: Final = "M"
UNKNOWN_GENDER: Final = "U"
_FEMALE_SPELLINGS: Final = pa.array(["f", "female"])
_MALE_SPELLINGS: Final = pa.array(["m", "male"])
_TRUE_SPELLINGS: Final = pa.array(["y", "yes", "true", "1"])
MAX_AGE: Final = 120
OLDEST_BAND: Final = 90  # ages >= 90 share one band ("90+"), as in NHS and HIPAA de-identification
# Tolerated admission_date spellings: (guard regex, strptime format). Slashed and dashed day-first
# dates are read as UK day/month/year (the source is an NHS-style export), never US month/day.
_DATE_FORMATS: Final = (
    (r"^\d{4}-\d{1,2}-\d{1,2}$", "%Y-%m-%d"),
    (r"^\d{4}/\d{1,2}/\d{1,2}$", "%Y/%m/%d"),
    (r"^\d{1,2}/\d{1,2}/\d{4}$", "%d/%m/%Y"),
    (r"^\d{1,2}-\d{1,2}-\d{4}$", "%d-%m-%Y"),
    (r"^\d{1,2}\.\d{1,2}\.\d{4}$", "%d.%m.%Y"),
    (r"^\d{8}$", "%Y%m%d"),
)
# Control characters (C0, C1: CR, LF, tab ...), line/paragraph separators and spaces: any run of them
# becomes one space. A line break in a ward name would otherwise reach an alert email's subject.
_CONTROL_OR_SPACE: Final = r"[\p{Cc}\p{Zl}\p{Zp}\p{Zs}]+"
# Longest accepted value per column, in characters after cleaning (patient_id: ID_RE allows 128). Real
# values are far shorter; a longer one is a broken export (a shifted column, a pasted note).
MAX_LENGTHS: Final = {
    c.NAME: 200,
    c.AGE: 16,
    c.GENDER: 32,
    c.ADMISSION_DATE: 64,
    c.DIAGNOSIS_CODE: 16,
    c.WARD: 64,
    c.BED: 64,
    c.HYPERCAPNIC: 16,
}
PATIENT_ID_FORMAT: Final = "patient_id_format"
SPO2_SCALE_1: Final = 1
SPO2_SCALE_2: Final = 2  # hypercapnic respiratory failure: target SpO2 88-92 %

_UTC_US = pa.timestamp("us", tz="UTC")
# Working columns of clean_patients (never written).
_RANK_DATE: Final = "__rank_date"
_RANK_FILE: Final = "__rank_file"
_BRONZE_ROW: Final = "__bronze_row"
_BRONZE_WRITER: Final = "admissions-loader"
_SCALE_FIELD = c.SILVER_SCHEMA.field(c.SPO2_SCALE)
# What enrich_readings returns, in this order.
ENRICHED_SCHEMA: Final = pa.schema([*c.ENRICHMENT_FIELDS, _SCALE_FIELD])
_ENRICHED_FROM_PATIENTS: Final = (c.WARD, c.BED, c.AGE_BAND, c.DIAGNOSIS_CODE, c.DIAGNOSIS_DESCRIPTION)
# A patient counts as changed when one of these differs (not updated_at / source_file: a new daily
# file repeating the same census changes nothing).
_COMPARED: Final = tuple(n for n in c.PATIENTS_SCHEMA.names if n not in (c.UPDATED_AT, c.SOURCE_FILE))


@dataclass(frozen=True)
class LoadReport:
    files: tuple[str, ...]  # admission files loaded into Bronze in this pass
    rows: int  # Bronze rows appended
    patients_recomputed: int  # patient rows re-derived and merged
    patients_changed: int  # of those, new or different
    patient_ids: tuple[str, ...]  # the new or changed patients (the ones Silver should back-fill)
    diagnoses_reloaded: bool
    failed: tuple[str, ...] = ()  # files that could not be read: not recorded, retried next pass

    def summary(self) -> str:
        text = (
            f"{len(self.files)} file(s), {self.rows} row(s); patients recomputed {self.patients_recomputed},"
            f" changed {self.patients_changed}; diagnoses {'reloaded' if self.diagnoses_reloaded else 'same'}"
        )
        return text + (f"; FAILED {len(self.failed)}: {' '.join(self.failed)}" if self.failed else "")


# --- Files --------------------------------------------------------------------------------------


def _is_remote(path: str) -> bool:
    return "://" in path


def _source_name(path: str | Path) -> str:
    """How a file is recorded in SOURCE_FILE: an absolute local path or the full gs:// URI."""
    text = str(path)
    return text if _is_remote(text) else str(Path(text).resolve())


def _list_admission_files(landing: str) -> list[str]:
    if _is_remote(landing):
        # Imported lazily: Beam's import costs ~1 s and only the gs:// case needs it.
        from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415

        pattern = posixpath.join(landing.rstrip("/"), c.ADMISSION_FILE_GLOB)
        paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    else:
        paths = [_source_name(p) for p in Path(landing).glob(c.ADMISSION_FILE_GLOB) if p.is_file()]
    # Name order is date order (patients_daily_file_YYYYMMDD.csv): older days load first.
    return sorted(paths, key=lambda p: (posixpath.basename(p), p))


def _read_bytes(path: str) -> bytes:
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415

        with FileSystems.open(path) as fh:
            data: bytes = fh.read()
            return data
    return Path(path).read_bytes()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Spreadsheet exports from Windows are often cp1252; never fail a file on its encoding.
        return data.decode("cp1252", errors="replace")


def _loaded_files(lake: Lake) -> set[str]:
    files = lake.read("bronze_admissions", columns=[c.SOURCE_FILE])[c.SOURCE_FILE]
    return set(pc.unique(files).to_pylist())


def discover_new_files(landing: str, lake: Lake) -> list[str]:
    """Admission files under ``landing`` (local folder or gs://) whose name is not yet in Bronze.

    Files are identified by name, like Auto Loader's default: a file rewritten under the same name is
    not reloaded. An empty file (or one still being created) is not recorded and is looked at again.
    """
    candidates = _list_admission_files(str(landing))
    if not candidates:
        return []
    done = _loaded_files(lake)
    return [p for p in candidates if p not in done]


# --- Bronze -------------------------------------------------------------------------------------


def _read_text_csv(text: str, names: list[str], on_invalid: Callable[[pcsv.InvalidRow], str]) -> pa.Table:
    """Every cell as text (cleaning decides types later); unreadable rows go to ``on_invalid``."""
    return pcsv.read_csv(
        pa.BufferReader(text.encode("utf-8")),
        read_options=pcsv.ReadOptions(use_threads=False, skip_rows=1, column_names=names),
        parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
    )


def _header_name(raw: str) -> str:
    return raw.strip().strip("\ufeff").strip().lower().replace(" ", "_").replace("-", "_")


def parse_admission_csv(data: bytes) -> tuple[dict[str, pa.Array], pa.Array]:
    """The ADMISSION_COLUMNS of a daily file as text, and each row's record number (header = 1).

    Columns are matched by (normalised) header name: a missing column is all null, an extra one is
    ignored. A row that cannot be split into the header's fields is kept as an all-null row.
    """
    text = _decode(data)
    header = next(csv.reader(io.StringIO(text)), None)
    if not header:
        empty = pa.array([], pa.string())
        return {name: empty for name in c.ADMISSION_COLUMNS}, pa.array([], pa.int64())
    names: list[str] = []
    for i, raw in enumerate(header):
        name = _header_name(raw)
        names.append(name if name not in names else f"{name}__dup{i}")  # the first column of a name wins

    bad: list[int | None] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        log.warning("unreadable row %s (%d fields, expected %d)", row.number, row.actual_columns, len(names))
        bad.append(row.number)
        return "skip"

    table = _read_text_csv(text, names, on_invalid)
    n_valid = table.num_rows
    total = n_valid + len(bad)
    # pyarrow numbers records (header = 1, blank lines not counted); valid rows fill the gaps.
    bad_known = {b for b in bad if b is not None}
    valid_lines = [n for n in range(2, total + 2) if n not in bad_known]
    if len(bad_known) != len(bad) or len(valid_lines) != n_valid:
        valid_lines = list(range(2, n_valid + 2))  # numbering unknown: valid rows first, then bad ones
        bad_lines = list(range(n_valid + 2, total + 2))
    else:
        bad_lines = sorted(bad_known)
    order = pc.sort_indices(pa.array(valid_lines + bad_lines, pa.int64()))
    columns = {}
    for name in c.ADMISSION_COLUMNS:
        valid = table[name].combine_chunks() if name in table.column_names else pa.nulls(n_valid, pa.string())
        columns[name] = pa.concat_arrays([valid, pa.nulls(len(bad_lines), pa.string())]).take(order)
    return columns, pa.array(valid_lines + bad_lines, pa.int64()).take(order)


def read_admission_file(path: str, *, now: datetime | None = None) -> pa.Table:
    """One daily file as Bronze rows (BRONZE_ADMISSIONS_SCHEMA)."""
    now = now or datetime.now(UTC)
    columns, lines = parse_admission_csv(_read_bytes(path))
    n = len(lines)
    arrays = [
        *(columns[name] for name in c.ADMISSION_COLUMNS),
        pa.repeat(pa.scalar(_source_name(path), pa.string()), n),
        lines,
        pa.repeat(pa.scalar(now, _UTC_US), n),
        pa.repeat(pa.scalar(now.date(), pa.date32()), n),
    ]
    return pa.Table.from_arrays(arrays, schema=c.BRONZE_ADMISSIONS_SCHEMA)


def load_bronze(path: str, lake: Lake, *, now: datetime | None = None) -> int:
    """Append one admission file to ``bronze_admissions`` (one commit); rows appended, 0 if already there.

    Idempotent per file: the name is checked against the table right before appending, and the append
    is the only record that the file was loaded, so there is no gap for a crash to double-load it.
    """
    source = _source_name(path)
    if source in _loaded_files(lake):
        log.info("%s is already in %s: skipped", source, c.BRONZE_ADMISSIONS_TABLE)
        return 0
    rows = read_admission_file(path, now=now)
    # The batch marker (a Delta application transaction per file) also stops a second, concurrent
    # loader from committing the same file; the name check above covers the marker's retention.
    appended = lake.append("bronze_admissions", rows, marker=BatchMarker(_BRONZE_WRITER, source))
    return rows.num_rows if appended else 0


# --- Cleaning -----------------------------------------------------------------------------------


def _text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One-line text: control characters, line breaks and whitespace runs become one space, trimmed;
    empty or blank becomes null."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    spaced = pc.replace_substring_regex(arr.cast(pa.string()), _CONTROL_OR_SPACE, " ")
    trimmed = pc.utf8_trim_whitespace(spaced)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def rejection_reasons(rows: pa.Table) -> pa.Array:
    """Per Bronze admission row, the first rule it fails (null: none): ``patient_id_format`` (the
    readings' id format) or ``<column>_too_long`` (MAX_LENGTHS). A row without a patient_id fails none:
    it is left out as unattributable."""
    ids = _text(rows[c.PATIENT_ID])
    bad_id = pc.and_(pc.is_valid(ids), pc.invert(pc.match_substring_regex(ids, ID_RE)))
    checks = [(PATIENT_ID_FORMAT, bad_id)]
    for name, limit in MAX_LENGTHS.items():
        checks.append(
            (f"{name}_too_long", pc.fill_null(pc.greater(pc.utf8_length(_text(rows[name])), limit), False))
        )
    reasons = pa.nulls(rows.num_rows, pa.string())
    for reason, failed in reversed(checks):  # the first failed rule wins
        reasons = pc.if_else(failed, pa.scalar(reason, pa.string()), reasons)
    return reasons


def _log_rejections(rows: pa.Table, reasons: pa.Array) -> None:
    """Name the rule and the file:line of rejected rows (never their values: they identify patients)."""
    rejected = rows.filter(pc.is_valid(reasons)).append_column("reason", reasons.drop_null())
    if rejected.num_rows == 0:
        return
    counts = {r["values"]: r["counts"] for r in pc.value_counts(rejected["reason"]).to_pylist()}
    where = [
        f"{posixpath.basename(f)}:{n} {r}"
        for f, n, r in zip(
            *(rejected[k].to_pylist()[:5] for k in (c.SOURCE_FILE, c.SOURCE_LINE, "reason")), strict=True
        )
    ]
    log.warning(
        "%d admission row(s) rejected (kept in Bronze, left out of patients): %s; first: %s",
        rejected.num_rows,
        counts,
        ", ".join(where),
    )


def _in(values: pa.Array, spellings: pa.Array) -> pa.Array:
    return pc.fill_null(pc.is_in(pc.utf8_lower(values), value_set=spellings), False)


def clean_gender(values: pa.Array) -> pa.Array:
    """F/f/female/Female... -> "F", M variants -> "M", anything else (blank included) -> "U"."""
    text = _text(values)
    return pc.if_else(
        _in(text, _FEMALE_SPELLINGS), FEMALE, pc.if_else(_in(text, _MALE_SPELLINGS), MALE, UNKNOWN_GENDER)
    )


def clean_age(values: pa.Array) -> pa.Array:
    """Whole years as int16; missing, non-numeric, negative or > 120 -> null (decimals are floored)."""
    text = _text(values)
    numeric = pc.fill_null(pc.match_substring_regex(text, r"^\d{1,3}(\.\d+)?$"), False)
    number = pc.cast(pc.if_else(numeric, text, pa.scalar(None, pa.string())), pa.float64())
    plausible = pc.fill_null(pc.less_equal(number, MAX_AGE), False)
    return pc.cast(pc.floor(pc.if_else(plausible, number, pa.scalar(None, pa.float64()))), pa.int16())


def age_band(ages: pa.Array) -> pa.Array:
    """Decade bands "0-9" ... "80-89", then "90+"; null for a null age."""
    ages32 = pc.cast(ages, pa.int32())
    decade = pc.multiply(pc.divide(ages32, 10), 10)  # integer division
    band = pc.binary_join_element_wise(
        pc.cast(decade, pa.string()), pc.cast(pc.add(decade, 9), pa.string()), "-"
    )
    return pc.if_else(pc.greater_equal(ages32, OLDEST_BAND), f"{OLDEST_BAND}+", band)


def parse_admission_date(values: pa.Array) -> pa.Array:
    """date32 from the tolerated spellings (a time part is ignored); anything else -> null."""
    text = _text(values)
    date_part = pc.replace_substring_regex(text, r"[T ].*$", "")
    parsed = [
        pc.strptime(
            pc.if_else(pc.fill_null(pc.match_substring_regex(date_part, guard), False), date_part, None),
            format=fmt,
            unit="s",
            error_is_null=True,
        )
        for guard, fmt in _DATE_FORMATS
    ]
    return pc.cast(pc.coalesce(*parsed), pa.date32())


def spo2_scale(values: pa.Array) -> pa.Array:
    """NEWS2 SpO2 scale: 2 when the hypercapnic flag is Y/yes/true/1 (any case), else 1."""
    hyper = _in(_text(values), _TRUE_SPELLINGS)
    return pc.cast(pc.if_else(hyper, SPO2_SCALE_2, SPO2_SCALE_1), pa.int8())


def _diagnosis_codes(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pc.utf8_upper(_text(values))


def clean_patients(
    bronze_rows: pa.Table, diagnoses: pa.Table, *, key: bytes, now: datetime | None = None
) -> pa.Table:
    """One cleaned row per patient_id (PATIENTS_SCHEMA), sorted by patient_id.

    The winning row per patient is the one with the latest admission_date (an unreadable date ranks
    lowest), then the latest file (by name, i.e. by day), then the latest line. Rows without a
    patient_id cannot be attributed and are left out; so are rows failing ``rejection_reasons`` (logged
    with the rule's name), so a patient keeps their last valid row.
    """
    now = now or datetime.now(UTC)
    ids = _text(bronze_rows[c.PATIENT_ID])
    reasons = rejection_reasons(bronze_rows)
    _log_rejections(bronze_rows, reasons)
    dates = parse_admission_date(bronze_rows[c.ADMISSION_DATE].combine_chunks())
    rows = pa.table(
        {
            c.PATIENT_ID: ids,
            # An unreadable date ranks below every real one (a sentinel, not null_placement, which
            # pyarrow only takes per sort key from 25 on).
            _RANK_DATE: pc.fill_null(dates, pa.scalar(date.min, pa.date32())),
            _RANK_FILE: pc.replace_substring_regex(bronze_rows[c.SOURCE_FILE].combine_chunks(), r"^.*/", ""),
            c.SOURCE_LINE: bronze_rows[c.SOURCE_LINE].combine_chunks(),
            _BRONZE_ROW: pa.array(range(bronze_rows.num_rows), pa.int64()),
        }
    ).filter(pc.and_(pc.is_valid(ids), pc.is_null(reasons)))
    order = pc.sort_indices(
        rows,
        sort_keys=[(n, "ascending") for n in (c.PATIENT_ID, _RANK_DATE, _RANK_FILE, c.SOURCE_LINE)],
    )
    latest = one_per_key(rows.take(order), (c.PATIENT_ID,), keep="last")
    src = bronze_rows.take(latest[_BRONZE_ROW])
    patient_ids = latest[c.PATIENT_ID].combine_chunks()

    ages = clean_age(src[c.AGE].combine_chunks())
    codes = _diagnosis_codes(src[c.DIAGNOSIS_CODE])
    ref_codes = _diagnosis_codes(diagnoses[c.DIAGNOSIS_CODE])
    ref_descriptions = diagnoses[c.DIAGNOSIS_DESCRIPTION].combine_chunks()
    descriptions = ref_descriptions.take(pc.index_in(codes, value_set=ref_codes))
    columns = {
        c.PATIENT_ID: patient_ids,
        c.PATIENT_KEY: pseudonymise(patient_ids, key=key),
        c.NAME: _text(src[c.NAME]),
        c.AGE: ages,
        c.AGE_BAND: age_band(ages),
        c.GENDER: clean_gender(src[c.GENDER].combine_chunks()),
        c.ADMISSION_DATE: dates.take(latest[_BRONZE_ROW]),
        c.DIAGNOSIS_CODE: codes,
        c.DIAGNOSIS_DESCRIPTION: descriptions,
        c.WARD: pc.utf8_upper(_text(src[c.WARD])),
        c.BED: pc.utf8_upper(_text(src[c.BED])),
        c.SPO2_SCALE: spo2_scale(src[c.HYPERCAPNIC].combine_chunks()),
        c.SOURCE_FILE: src[c.SOURCE_FILE],
        c.UPDATED_AT: pa.repeat(pa.scalar(now, _UTC_US), len(patient_ids)),
    }
    return pa.table(columns).select(c.PATIENTS_SCHEMA.names).cast(c.PATIENTS_SCHEMA)


# --- Diagnosis reference ------------------------------------------------------------------------


def read_diagnosis_mapping(path: str) -> pa.Table:
    """(diagnosis_code, diagnosis_description) from the mapping CSV: trimmed, codes upper-cased,
    blank codes dropped, one row per code (a later line corrects an earlier one)."""
    text = _decode(_read_bytes(path))
    header = next(csv.reader(io.StringIO(text)), None) or []
    names = [_header_name(h) for h in header]
    if not names:
        return pa.table({n: pa.array([], pa.string()) for n in c.DIAGNOSIS_COLUMNS})

    def on_invalid(row: pcsv.InvalidRow) -> str:
        log.warning("%s: unreadable row %s skipped", path, row.number)
        return "skip"

    table = _read_text_csv(text, names, on_invalid)
    cols = {
        n: (table[n] if n in table.column_names else pa.nulls(table.num_rows, pa.string()))
        for n in c.DIAGNOSIS_COLUMNS
    }
    mapping = pa.table(
        {
            c.DIAGNOSIS_CODE: _diagnosis_codes(cols[c.DIAGNOSIS_CODE]),
            c.DIAGNOSIS_DESCRIPTION: _text(cols[c.DIAGNOSIS_DESCRIPTION]),
        }
    )
    mapping = mapping.filter(pc.is_valid(mapping[c.DIAGNOSIS_CODE]))
    return one_per_key(mapping, (c.DIAGNOSIS_CODE,), keep="last")


def load_diagnoses(path: str, lake: Lake, *, now: datetime | None = None) -> bool:
    """Replace the ``diagnoses`` table with the mapping file when its content differs; True if replaced.

    Content, not modification time, decides: a re-exported identical file is a no-op. An empty
    mapping never wipes the table (it is far more likely a broken export than an intended reset).
    """
    mapping = read_diagnosis_mapping(str(path))
    if mapping.num_rows == 0:
        log.warning("%s has no diagnosis rows: the reference table is kept as it is", path)
        return False
    current = lake.read("diagnoses", columns=list(c.DIAGNOSIS_COLUMNS))
    if _pairs(current) == _pairs(mapping):
        return False
    now = now or datetime.now(UTC)
    rows = mapping.append_column(
        pa.field(c.LOADED_AT, _UTC_US), pa.repeat(pa.scalar(now, _UTC_US), mapping.num_rows)
    ).cast(c.DIAGNOSIS_SCHEMA)
    # Lake has no "replace" yet: an overwrite commit swaps the whole (small) reference atomically.
    write_deltalake(lake.ensure("diagnoses"), rows, mode="overwrite")
    return True


def _pairs(table: pa.Table) -> set[tuple[str, str | None]]:
    return set(zip(*(table[n].to_pylist() for n in c.DIAGNOSIS_COLUMNS), strict=True))


# --- Patients -----------------------------------------------------------------------------------


def _latest(values: pa.ChunkedArray) -> datetime | None:
    if len(values) == 0:
        return None
    latest: datetime | None = pc.max(values).as_py()
    return latest


def _changed(new: pa.Table, old: pa.Table) -> pa.Array:
    """True per row of ``new`` that is not in ``old`` (by patient_id) or differs in a compared column."""
    idx = pc.index_in(new[c.PATIENT_ID], value_set=old[c.PATIENT_ID].combine_chunks())
    changed = pc.is_null(idx)
    for name in _COMPARED:
        a, b = new[name], old[name].take(idx)
        same = pc.or_(pc.and_(pc.is_null(a), pc.is_null(b)), pc.fill_null(pc.equal(a, b), False))
        changed = pc.or_(changed, pc.invert(same))
    return changed


def update_patients(lake: Lake, *, key: bytes, now: datetime | None = None) -> tuple[int, list[str]]:
    """Recompute and MERGE the patients touched since the last update; (rows merged, changed ids)."""
    patients = lake.read("patients")
    watermark = _latest(patients[c.UPDATED_AT])
    reference_at = _latest(lake.read("diagnoses", columns=[c.LOADED_AT])[c.LOADED_AT])
    ingested = lake.read("bronze_admissions", columns=[c.PATIENT_ID, c.INGEST_TIME])
    if ingested.num_rows == 0:
        return 0, []
    everyone = watermark is None or (reference_at is not None and reference_at >= watermark)
    if everyone:
        stale_ids = None
    else:
        fresh = pc.greater_equal(ingested[c.INGEST_TIME], pa.scalar(watermark, _UTC_US))
        stale_ids = pc.unique(_text(ingested[c.PATIENT_ID].filter(fresh)).drop_null())
        if len(stale_ids) == 0:
            return 0, []
    bronze = lake.read("bronze_admissions")
    if stale_ids is not None:
        bronze = bronze.filter(pc.is_in(_text(bronze[c.PATIENT_ID]), value_set=stale_ids))
    recomputed = clean_patients(bronze, lake.read("diagnoses"), key=key, now=now)
    if recomputed.num_rows == 0:
        return 0, []
    changed = recomputed[c.PATIENT_ID].filter(_changed(recomputed, patients)).to_pylist()
    # Lake.upsert bounds its MERGE by a time column, which does not fit this small, unpartitioned
    # table (a patient's old row has an older updated_at): merge on patient_id alone.
    (
        lake.ensure("patients")
        .merge(
            recomputed,
            predicate=f"t.{c.PATIENT_ID} = s.{c.PATIENT_ID}",
            source_alias="s",
            target_alias="t",
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    return recomputed.num_rows, changed


def refresh(
    landing: str,
    reference_file: str | None,
    lake: Lake,
    *,
    key: bytes,
    on_load: Callable[[str, int], None] | None = None,
) -> LoadReport:
    """One Auto Loader-style pass: reference, new files into Bronze, then the affected patients."""
    reloaded = load_diagnoses(reference_file, lake) if reference_file is not None else False
    files: list[str] = []
    failed: list[str] = []
    rows = 0
    for path in discover_new_files(landing, lake):
        try:
            n = load_bronze(path, lake)
        except (OSError, pa.ArrowException):
            # One unreadable file (vanished, no permission) must not hold back the files after it.
            log.exception("%s could not be loaded; it is retried on the next pass", path)
            failed.append(path)
            continue
        files.append(path)
        rows += n
        if on_load is not None:
            on_load(path, n)
    recomputed, changed = update_patients(lake, key=key)
    return LoadReport(tuple(files), rows, recomputed, len(changed), tuple(changed), reloaded, tuple(failed))


# --- Enrichment ---------------------------------------------------------------------------------


def enrich_readings(silver: pa.Table, patients: pa.Table, *, key: bytes) -> pa.Table:
    """ENRICHMENT_FIELDS + spo2_scale for each row of ``silver``, in the same order (hash join on id).

    Unknown patients are kept: known_patient false, null enrichment, scale 1. patient_key is computed
    from the id for every row (cached), so one patient's readings carry one key before and after the
    admission record arrives. The name is never read.
    """
    ids = silver[c.PATIENT_ID].combine_chunks()
    idx = pc.index_in(ids, value_set=patients[c.PATIENT_ID].combine_chunks())
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        c.PATIENT_KEY: pseudonymise(ids, key=key),
        c.KNOWN_PATIENT: pc.is_valid(idx),
        c.SPO2_SCALE: pc.fill_null(patients[c.SPO2_SCALE].take(idx), SPO2_SCALE_1),
    }
    for name in _ENRICHED_FROM_PATIENTS:
        columns[name] = patients[name].take(idx)
    return pa.Table.from_arrays([columns[n] for n in ENRICHED_SCHEMA.names], schema=ENRICHED_SCHEMA)


class PatientDirectory:
    """The patients table held in memory for the pipeline, reloaded when its Delta version changes.

    The version is looked at most every ``refresh_seconds`` (a cheap log read), so a new admission
    reaches the enrichment within that delay. Thread-safe. A failed reload keeps the last table.
    """

    def __init__(
        self,
        lake: Lake,
        *,
        refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lake = lake
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._table: pa.Table = c.PATIENTS_SCHEMA.empty_table()
        self._version: int | None = None
        self._checked_at: float | None = None
        self.reloads = 0

    @property
    def version(self) -> int | None:
        return self._version

    def table(self) -> pa.Table:
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self.refresh_seconds:
                self._checked_at = now
                self._reload_if_changed()
            return self._table

    def _reload_if_changed(self) -> None:
        try:
            version = self._lake.version("patients")
            if version != self._version:
                self._table = self._lake.read("patients")
                self._version = version
                self.reloads += 1
        except Exception:  # a storage hiccup must not stop enrichment: keep the last table
            if self._version is None:
                raise
            log.warning("patients reload failed; keeping version %s", self._version, exc_info=True)

    def enrich(self, silver: pa.Table, *, key: bytes) -> pa.Table:
        return enrich_readings(silver, self.table(), key=key)
