"""The simulated ward population: who is admitted, where, with what, wearing which monitor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
from faker import Faker

MAX_PATIENTS: Final = 999_999  # patient ids are P + six digits


@dataclass(frozen=True)
class Diagnosis:
    code: str  # ICD-10-CM
    description: str
    wards: tuple[str, ...]
    weight: float  # relative frequency in the cohort
    hypercapnic_share: float  # share of these patients on NEWS2 SpO2 scale 2
    mean_age: float


WARDS: Final = ("ICU", "CARDIO", "RESP", "GENMED", "SURG")

DIAGNOSES: Final[tuple[Diagnosis, ...]] = (
    Diagnosis("I21.9", "Acute myocardial infarction, unspecified", ("CARDIO", "ICU"), 6, 0.0, 68),
    Diagnosis("I50.9", "Heart failure, unspecified", ("CARDIO", "GENMED"), 8, 0.02, 76),
    Diagnosis("I48.91", "Unspecified atrial fibrillation", ("CARDIO",), 6, 0.0, 72),
    Diagnosis("I10", "Essential (primary) hypertension", ("GENMED", "CARDIO"), 4, 0.0, 64),
    Diagnosis("I63.9", "Cerebral infarction, unspecified", ("GENMED", "ICU"), 4, 0.0, 73),
    Diagnosis(
        "J44.1", "Chronic obstructive pulmonary disease with (acute) exacerbation", ("RESP",), 9, 0.45, 71
    ),
    Diagnosis(
        "J44.0",
        "Chronic obstructive pulmonary disease with (acute) lower respiratory infection",
        ("RESP", "GENMED"),
        5,
        0.35,
        73,
    ),
    Diagnosis("J96.02", "Acute respiratory failure with hypercapnia", ("RESP", "ICU"), 2, 1.0, 69),
    Diagnosis("J18.9", "Pneumonia, unspecified organism", ("RESP", "GENMED"), 9, 0.01, 67),
    Diagnosis("J45.901", "Unspecified asthma with (acute) exacerbation", ("RESP",), 3, 0.0, 41),
    Diagnosis("U07.1", "COVID-19", ("RESP", "ICU"), 3, 0.01, 62),
    Diagnosis("A41.9", "Sepsis, unspecified organism", ("ICU", "GENMED"), 5, 0.0, 66),
    Diagnosis("N17.9", "Acute kidney failure, unspecified", ("GENMED", "ICU"), 5, 0.0, 70),
    Diagnosis("N39.0", "Urinary tract infection, site not specified", ("GENMED",), 6, 0.0, 74),
    Diagnosis("E11.9", "Type 2 diabetes mellitus without complications", ("GENMED",), 4, 0.0, 63),
    Diagnosis("K35.80", "Unspecified acute appendicitis", ("SURG",), 4, 0.0, 34),
    Diagnosis(
        "K80.20", "Calculus of gallbladder without cholecystitis without obstruction", ("SURG",), 4, 0.0, 52
    ),
    Diagnosis(
        "S72.001A",
        "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture",
        ("SURG",),
        5,
        0.0,
        81,
    ),
)
DIAGNOSIS_BY_CODE: Final = {d.code: d for d in DIAGNOSES}


@dataclass(frozen=True)
class Patient:
    patient_id: str  # P000123
    name: str
    age: int
    sex: str  # "F" | "M"
    ward: str
    bed: str  # e.g. ICU-07
    admitted_at: datetime  # UTC
    diagnosis_code: str
    hypercapnic: bool  # hypercapnic respiratory failure: NEWS2 SpO2 scale 2 (target 88-92 %)
    device_id: str  # the one bedside/wearable monitor this patient wears


def make_cohort(n: int, *, seed: int, as_of: datetime | None = None) -> list[Patient]:
    """``n`` patients admitted before ``as_of`` (default now); the same seed gives the same cohort."""
    if not 1 <= n <= MAX_PATIENTS:
        raise ValueError(f"patients must be in 1..{MAX_PATIENTS}, got {n}")
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    rng = np.random.default_rng([seed, 0xC0407])
    fake = Faker("en_GB")
    fake.seed_instance(seed)

    weights = np.array([d.weight for d in DIAGNOSES], dtype=float)
    dx_idx = rng.choice(len(DIAGNOSES), size=n, p=weights / weights.sum())
    sexes = np.where(rng.random(n) < 0.5, "F", "M")
    ward_pick = rng.random(n)
    hyper_draw = rng.random(n)
    age_noise = rng.normal(0.0, 11.0, n)
    # Admitted 1 hour to 12 days ago, to the second.
    stay_s = rng.integers(3_600, 12 * 86_400, n)
    # Monitor serials: unique random hex, so ids do not give away the patient order.
    serials = rng.choice(16**6, size=n, replace=False)

    beds_used: dict[str, int] = {}
    cohort: list[Patient] = []
    for i in range(n):
        dx = DIAGNOSES[int(dx_idx[i])]
        ward = dx.wards[min(int(ward_pick[i] * len(dx.wards)), len(dx.wards) - 1)]
        beds_used[ward] = beds_used.get(ward, 0) + 1
        sex = str(sexes[i])
        first = fake.first_name_female() if sex == "F" else fake.first_name_male()
        cohort.append(
            Patient(
                patient_id=f"P{i + 1:06d}",
                name=f"{first} {fake.last_name()}",
                age=int(np.clip(round(dx.mean_age + age_noise[i]), 18, 99)),
                sex=sex,
                ward=ward,
                bed=f"{ward}-{beds_used[ward]:02d}",
                admitted_at=(as_of - timedelta(seconds=int(stay_s[i]))).replace(microsecond=0),
                diagnosis_code=dx.code,
                hypercapnic=bool(hyper_draw[i] < dx.hypercapnic_share),
                device_id=f"MON-{int(serials[i]):06X}",
            )
        )
    return cohort
