"""Train an anomaly model on simulated readings and write a versioned artifact.

python -m ml.train --readings var/sim/readings.jsonl --labels var/sim/labels.jsonl --out var/ml/model
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml import artifact
from ml.detectors import Detector, fix_threshold, make_detector
from ml.features import features_for_history
from simulator import Episode, read_jsonl, read_labels
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.readings import parse_batch
from vitals_lake.silver import to_silver

TRAINING_KEY: Final = b"vitals-lake-ml-training"  # pseudonym key: training never needs real keys
DEFAULT_MODEL: Final = "autoencoder"
DEFAULT_TARGET_FPR: Final = 0.005
TRAIN_SHARE: Final = 0.6


@dataclass(frozen=True)
class Dataset:
    """Silver rows sorted by patient then time, their features and per-row episode labels."""

    silver: pa.Table
    features: pa.Table
    episode: np.ndarray  # index into ``episodes`` of the episode covering the row, -1 for none
    episodes: list[Episode]

    @property
    def anomalous(self) -> np.ndarray:
        return self.episode >= 0

    def patients(self) -> np.ndarray:
        return np.asarray(self.features[c.PATIENT_ID].to_numpy(zero_copy_only=False), dtype=object)

    def seconds(self) -> np.ndarray:
        ts = pc.cast(self.features[c.TIMESTAMP], pa.int64()).to_numpy(zero_copy_only=False)
        return np.asarray(ts, dtype=np.float64) / 1e6


def silver_from_lines(lines: list[bytes]) -> pa.Table:
    """Raw device lines -> Silver rows through the pipeline's own gate, enrichment and NEWS2."""
    bronze = envelope.to_bronze(envelope.records_from_lines(lines), ingest_time_us=0, ref_prefix="file:ml")
    valid = parse_batch(bronze).valid
    silver = to_silver(valid, patients=c.PATIENTS_SCHEMA.empty_table(), key=TRAINING_KEY)
    # The lake de-duplicates re-sent readings on event_id; do the same here, keeping the first.
    _, first = np.unique(np.asarray(silver[c.EVENT_ID].to_numpy(zero_copy_only=False)), return_index=True)
    silver = silver.take(pa.array(np.sort(first)))
    return silver.sort_by([(c.PATIENT_ID, "ascending"), (c.TIMESTAMP, "ascending")])


def load_dataset(readings: Path, labels: Path) -> Dataset:
    silver = silver_from_lines(read_jsonl(readings))
    features = features_for_history(silver)
    episodes = read_labels(labels)
    return Dataset(silver, features, label_rows(features, episodes), episodes)


def label_rows(features: pa.Table, episodes: list[Episode]) -> np.ndarray:
    """Per row, the episode whose patient and [start, end] window cover it (-1 when none)."""
    pid = np.asarray(features[c.PATIENT_ID].to_numpy(zero_copy_only=False), dtype=object)
    ts = np.asarray(pc.cast(features[c.TIMESTAMP], pa.int64()).to_numpy(zero_copy_only=False))
    out = np.full(features.num_rows, -1, dtype=np.int64)
    for k, e in enumerate(episodes):
        start, end = int(e.start.timestamp() * 1e6), int(e.end.timestamp() * 1e6)
        out[(pid == e.patient_id) & (ts >= start) & (ts <= end)] = k
    return out


def split_patients(patients: np.ndarray, *, seed: int, train_share: float = TRAIN_SHARE) -> set[str]:
    """The training patients: a seeded share of the distinct patients (the rest are held out)."""
    uniq = np.unique(patients)
    rng = np.random.default_rng(seed)
    return {str(p) for p in rng.permutation(uniq)[: round(train_share * len(uniq))]}


def fit_detector(
    name: str, features: pa.Table, normal: np.ndarray, *, seed: int, target_fpr: float
) -> tuple[Detector, float]:
    """Fit on the rows ``normal`` selects and fix the alert threshold on those same rows."""
    train = features.filter(pa.array(normal))
    detector = make_detector(name, seed=seed).fit(train)
    return detector, fix_threshold(detector.score(train), target_fpr)


def train(
    readings: Path,
    labels: Path,
    out: Path,
    *,
    model: str = DEFAULT_MODEL,
    target_fpr: float = DEFAULT_TARGET_FPR,
    seed: int = 42,
) -> dict[str, Any]:
    """Train on the normal rows of the training patients; write the artifact; return its metadata."""
    data = load_dataset(Path(readings), Path(labels))
    patients = data.patients()
    train_ids = split_patients(patients, seed=seed)
    in_train = np.isin(patients, list(train_ids))
    # Sensor artefacts are labelled episodes too: keep every labelled row out of "normal".
    normal = in_train & ~data.anomalous
    detector, threshold = fit_detector(model, data.features, normal, seed=seed, target_fpr=target_fpr)
    ts = data.seconds()[normal]
    training = {
        "rows": int(normal.sum()),
        "patients": len(train_ids),
        "start": _iso(ts.min()) if ts.size else None,
        "end": _iso(ts.max()) if ts.size else None,
        "seed": seed,
        "readings": str(readings),
        "labels": str(labels),
        "episode_types": sorted({str(e.type) for e in data.episodes}),
    }
    return artifact.save(
        detector,
        Path(out),
        threshold=threshold,
        target_fpr=target_fpr,
        feature_names=detector.features,
        training=training,
    )


def _iso(seconds: float) -> str:
    return str(np.datetime64(int(seconds * 1e6), "us")) + "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__)
    parser.add_argument("--readings", type=Path, required=True, help="raw device lines (JSONL)")
    parser.add_argument("--labels", type=Path, required=True, help="simulator labels.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="artifact directory")
    models = ["isolation_forest", "autoencoder", "zscore"]
    parser.add_argument("--model", choices=models, default=DEFAULT_MODEL)
    parser.add_argument("--target-fpr", type=float, default=DEFAULT_TARGET_FPR)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    meta = train(
        args.readings, args.labels, args.out, model=args.model, target_fpr=args.target_fpr, seed=args.seed
    )
    print(
        f"model {meta['model']} version {meta['model_version']}: threshold {meta['threshold']:.6g},"
        f" {meta['training']['rows']} training rows -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
