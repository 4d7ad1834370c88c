"""The second data source: daily admission files and the diagnosis reference table (CSV).

The daily file is a census as a hospital's admission system would export it, mess included: a few
gender spellings differ (``F``, ``female``, ``Male``...), an age is missing here and there, and a
row is occasionally exported twice. Cleaning them is the platform's job. Each row also carries the
bed and the hypercapnic respiratory failure flag (``Y``/``N``: NEWS2 SpO2 scale 2).

Files appear atomically (written under a hidden temporary name, then renamed), so a loader polling
the landing folder never reads half a file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Final

import numpy as np

from simulator.cohort import DIAGNOSES, Patient
from vitals_lake.contract import (
    ADMISSION_COLUMNS,
    ADMISSION_FILE_PATTERN,
    DIAGNOSIS_COLUMNS,
    DIAGNOSIS_MAPPING_FILE,
)

LANDING_DIR: Final = "landing"
REFERENCE_DIR: Final = "reference"
DIAGNOSIS_FILE: Final = DIAGNOSIS_MAPPING_FILE

_GENDER_VARIANTS: Final = {"F": ("female", "Female", "f", "FEMALE"), "M": ("male", "Male", "m", "MALE")}


def daily_file_name(day: date) -> str:
    return ADMISSION_FILE_PATTERN.format(date=day)


def write_admission_file(
    cohort: Sequence[Patient],
    landing_dir: Path,
    *,
    day: date,
    rng: np.random.Generator,
    messy_gender_rate: float = 0.08,
    missing_age_rate: float = 0.02,
    duplicate_row_rate: float = 0.01,
) -> Path:
    """Write ``landing/patients_daily_file_YYYYMMDD.csv``: every patient admitted on or before ``day``."""
    present = [p for p in cohort if p.admitted_at.date() <= day]
    n = len(present)
    messy_gender = rng.random(n) < messy_gender_rate
    variant = rng.integers(0, 4, n)
    missing_age = rng.random(n) < missing_age_rate
    repeated = rng.random(n) < duplicate_row_rate

    path = landing_dir / daily_file_name(day)
    landing_dir.mkdir(parents=True, exist_ok=True)
    # The temporary name does not match ADMISSION_FILE_GLOB, and the rename is atomic.
    partial = landing_dir / f".{path.name}.partial"
    with partial.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(ADMISSION_COLUMNS)
        for i, p in enumerate(present):
            gender = _GENDER_VARIANTS[p.sex][int(variant[i])] if messy_gender[i] else p.sex
            row = [
                p.patient_id,
                p.name,
                "" if missing_age[i] else str(p.age),
                gender,
                p.admitted_at.date().isoformat(),
                p.diagnosis_code,
                p.ward,
                p.bed,
                "Y" if p.hypercapnic else "N",
            ]
            writer.writerow(row)
            if repeated[i]:
                writer.writerow(row)
    os.replace(partial, path)
    return path


def write_diagnosis_mapping(reference_dir: Path) -> Path:
    """Write ``reference/diagnosis_mapping.csv`` (every code the simulator assigns)."""
    reference_dir.mkdir(parents=True, exist_ok=True)
    path = reference_dir / DIAGNOSIS_FILE
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(DIAGNOSIS_COLUMNS)
        writer.writerows((d.code, d.description) for d in DIAGNOSES)
    return path


def write_admissions(
    cohort: Sequence[Patient], out_dir: Path, *, days: Sequence[date], seed: int
) -> list[Path]:
    """One daily file per day (the run's dates) plus the diagnosis mapping, under ``out_dir``."""
    rng = np.random.default_rng([seed, 0xAD31])
    paths = [write_admission_file(cohort, out_dir / LANDING_DIR, day=d, rng=rng) for d in sorted(set(days))]
    paths.append(write_diagnosis_mapping(out_dir / REFERENCE_DIR))
    return paths
