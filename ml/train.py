"""Train an anomaly model on simulated readings and write a versioned artifact.

python -m ml.train --readings var/sim/readings.jsonl --labels var/sim/labels.jsonl --out var/ml/model
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import roc_auc_score

from ml import tracking
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.engine import BatchEngine, EngineSettings
from vitals_lake.envelope import read_jsonl
from vitals_lake.labels import Episode, EpisodeType, read_labels
from vitals_lake.lake import Lake
from vitals_lake.model import artifact
from vitals_lake.model.detectors import Detector, fix_threshold, make_detector
from vitals_lake.model.features import features_for_history
from vitals_lake.patient_keys import identity_map

log = logging.getLogger(__name__)
TRAINING_KEY: Final = b"vitals-lake-ml-training"  # pseudonym key: training never needs real keys
AUTO: Final = "auto"  # choose the model on a validation split of the training patients
CANDIDATES: Final = ("zscore", "isolation_forest", "autoencoder")
DEFAULT_MODEL: Final = AUTO
DEFAULT_TARGET_FPR: Final = 0.005
TRAIN_SHARE: Final = 0.6
FALLBACK_MODEL: Final = "zscore"  # when validation cannot choose: needs no training, nothing to overfit
VALIDATION_SHARE: Final = 0.25  # of the training patients: held out from fitting to choose the model


@dataclass(frozen=True)
class Dataset:
    """Silver rows sorted by patient then time (with the raw ``patient_id`` put back from the identity
    map: the labels and the patient split name patients by id), their features and per-row episode
    labels."""

    silver: pa.Table
    features: pa.Table
    episode: np.ndarray  # index into ``episodes`` of the episode covering the row, -1 for none
    episodes: list[Episode]

    @property
    def anomalous(self) -> np.ndarray:
        return self.episode >= 0

    @property
    def artefact(self) -> np.ndarray:
        """Rows inside a sensor-artefact episode (labelled, but not a deterioration)."""
        kinds = np.array([e.type is EpisodeType.SENSOR_ARTIFACT for e in self.episodes] + [False])
        return kinds[self.episode]

    def patients(self) -> np.ndarray:
        return np.asarray(self.silver[c.PATIENT_ID].to_numpy(zero_copy_only=False), dtype=object)

    def seconds(self) -> np.ndarray:
        ts = pc.cast(self.features[c.TIMESTAMP], pa.int64()).to_numpy(zero_copy_only=False)
        return np.asarray(ts, dtype=np.float64) / 1e6


def silver_from_lines(lines: list[bytes]) -> pa.Table:
    """Raw device lines -> Silver rows through the pipeline's own gate, enrichment and NEWS2, with each
    row's ``patient_id`` from the engine's identity map (``with_patient_ids``)."""
    bronze = envelope.to_bronze(envelope.records_from_lines(lines), ingest_time_us=0, ref_prefix="file:ml")
    # The batch engine without a lake: the pipeline's gate, then its de-duplication by event_id.
    engine = BatchEngine(
        None,
        settings=EngineSettings(time_rules=None),
        key=TRAINING_KEY,
        patients=c.PATIENTS_SCHEMA.empty_table(),
        restore=False,
    )
    out = engine.process(bronze, batch_id="training", window_start_us=0)
    return with_patient_ids(out.silver, out.identities)


def load_dataset(readings: Path, labels: Path) -> Dataset:
    return dataset_from_silver(silver_from_lines(read_jsonl(readings)), labels)


def silver_from_lake(uri: str) -> pa.Table:
    """The Silver table of a lake (a directory or gs://) with each row's ``patient_id`` from the lake's
    identity map (training is a restricted job: it reads the map as the identity view does)."""
    lake = Lake(lake_from_uri(uri))
    return with_patient_ids(lake.read("silver"), lake.read("patient_keys"))


def with_patient_ids(silver: pa.Table, identities: pa.Table) -> pa.Table:
    """Silver rows (keyed by ``patient_key``) with ``patient_id`` put back from identity-map rows,
    sorted by patient then time. A key the map lacks is an error: its labels could not be matched."""
    ids = identity_map(identities)
    idx = pc.index_in(silver[c.PATIENT_KEY], value_set=ids[c.PATIENT_KEY].combine_chunks())
    if idx.null_count:
        raise ValueError(f"{idx.null_count} Silver rows have a key the identity map does not know")
    silver = silver.append_column(c.PATIENT_ID, ids[c.PATIENT_ID].take(idx))
    return silver.sort_by([(c.PATIENT_ID, "ascending"), (c.TIMESTAMP, "ascending")])


def dataset_from_silver(silver: pa.Table, labels: Path | None) -> Dataset:
    """Features for Silver rows; without labels every row counts as normal (unlabelled history)."""
    features = features_for_history(silver)
    episodes = read_labels(labels) if labels else []
    return Dataset(silver, features, label_rows(silver, episodes), episodes)


def label_rows(silver: pa.Table, episodes: list[Episode]) -> np.ndarray:
    """Per row of ``silver`` (with ``patient_id``), the episode whose patient and [start, end] window
    cover it (-1 when none)."""
    pid = np.asarray(silver[c.PATIENT_ID].to_numpy(zero_copy_only=False), dtype=object)
    ts = np.asarray(pc.cast(silver[c.TIMESTAMP], pa.int64()).to_numpy(zero_copy_only=False))
    out = np.full(silver.num_rows, -1, dtype=np.int64)
    for k, e in enumerate(episodes):
        start, end = int(e.start.timestamp() * 1e6), int(e.end.timestamp() * 1e6)
        out[(pid == e.patient_id) & (ts >= start) & (ts <= end)] = k
    return out


def split_patients(patients: np.ndarray, *, seed: int, train_share: float = TRAIN_SHARE) -> set[str]:
    """The training patients: a seeded share of the distinct patients (the rest are held out)."""
    uniq = np.unique(patients)
    rng = np.random.default_rng(seed)
    return {str(p) for p in rng.permutation(uniq)[: round(train_share * len(uniq))]}


@dataclass(frozen=True)
class Selection:
    """The model chosen on validation patients, and every candidate's validation AUROC."""

    chosen: str
    validation_auroc: dict[str, float]
    fit_patients: int
    validation_patients: int
    reason: str = "best validation AUROC"


def select_model(
    data: Dataset,
    in_train: np.ndarray,
    *,
    seed: int,
    target_fpr: float,
    candidates: tuple[str, ...] = CANDIDATES,
) -> Selection:
    """Fit each candidate on part of the training patients, keep the best AUROC on the rest.

    Only training patients are used: the held-out test patients never influence the choice. Sensor
    artefact rows are left out of the AUROC (they are labelled, but not deterioration).
    """
    patients = data.patients()
    train_ids = np.unique(patients[in_train])
    fit_ids = split_patients(train_ids, seed=seed + 1, train_share=1.0 - VALIDATION_SHARE)
    fit_rows = in_train & np.isin(patients, list(fit_ids))
    val_rows = in_train & ~fit_rows & ~data.artefact
    y = data.anomalous[val_rows]
    aurocs: dict[str, float] = {}
    for name in candidates:
        detector, _ = fit_detector(
            name, data.features, fit_rows & ~data.anomalous, seed=seed, target_fpr=target_fpr
        )
        scores = detector.score(data.features.filter(pa.array(val_rows)))
        aurocs[name] = float(roc_auc_score(y, scores)) if y.any() and (~y).any() else float("nan")
    finite = {k: v for k, v in aurocs.items() if np.isfinite(v)}
    if not finite:
        # Too few patients to validate anything: the detector that needs no training is the safe pick.
        log.warning("no labelled episode among the validation patients: falling back to %s", FALLBACK_MODEL)
    return Selection(
        chosen=max(finite, key=lambda k: finite[k]) if finite else FALLBACK_MODEL,
        validation_auroc=aurocs,
        fit_patients=len(fit_ids),
        validation_patients=len(train_ids) - len(fit_ids),
        reason="best validation AUROC" if finite else "fallback: no episode among the validation patients",
    )


def fit_detector(
    name: str, features: pa.Table, normal: np.ndarray, *, seed: int, target_fpr: float
) -> tuple[Detector, float]:
    """Fit on the rows ``normal`` selects and fix the alert threshold on those same rows."""
    train = features.filter(pa.array(normal))
    detector = make_detector(name, seed=seed).fit(train)
    return detector, fix_threshold(detector.score(train), target_fpr)


def train(
    readings: Path | None,
    labels: Path | None,
    out: Path,
    *,
    lake: str | None = None,
    model: str = DEFAULT_MODEL,
    target_fpr: float = DEFAULT_TARGET_FPR,
    seed: int = 42,
    track: bool = False,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Train on the normal rows of the training patients; write the artifact; return its metadata.

    ``model="auto"`` chooses among the candidates on a validation split of the training patients.
    ``track`` logs the run to MLflow (``ml.tracking``; the CLI tracks by default). History comes from
    raw device lines (``readings``) or a lake's Silver table (``lake``); without ``labels`` every row
    is taken as normal, which the evaluation's contaminated run measures the cost of.
    """
    if (readings is None) == (lake is None):
        raise ValueError("train on readings (a JSONL file) or on a lake's Silver table, not both")
    silver = silver_from_lines(read_jsonl(Path(readings))) if readings else silver_from_lake(str(lake))
    if silver.num_rows == 0:
        raise ValueError("no readings to train on")
    data = dataset_from_silver(silver, Path(labels) if labels else None)
    patients = data.patients()
    train_ids = split_patients(patients, seed=seed)
    in_train = np.isin(patients, list(train_ids))
    selection = None
    if model == AUTO:
        selection = select_model(data, in_train, seed=seed, target_fpr=target_fpr)
        model = selection.chosen
    # Sensor artefacts are labelled episodes too: keep every labelled row out of "normal".
    normal = in_train & ~data.anomalous
    detector, threshold = fit_detector(model, data.features, normal, seed=seed, target_fpr=target_fpr)
    ts = data.seconds()[normal]
    training: dict[str, Any] = {
        "rows": int(normal.sum()),
        "patients": len(train_ids),
        "start": _iso(ts.min()) if ts.size else None,
        "end": _iso(ts.max()) if ts.size else None,
        "seed": seed,
        "source": str(readings) if readings else f"silver table of {lake}",
        "labels": str(labels) if labels else None,
        "episode_types": sorted({str(e.type) for e in data.episodes}),
        "selection": ({"rule": selection.reason, **asdict(selection)} if selection else {"rule": "given"}),
    }
    meta = artifact.save(
        detector,
        Path(out),
        threshold=threshold,
        target_fpr=target_fpr,
        feature_names=detector.features,
        training=training,
    )
    if track:
        meta["mlflow_run_id"] = tracking.track_run(
            run_name=f"train-{meta['model']}-{meta['model_version']}",
            params={"model": meta["model"], "target_fpr": target_fpr, "seed": seed, "training": training},
            metrics={
                "threshold": threshold,
                "training_rows": training["rows"],
                **{
                    f"validation_auroc.{k}": v
                    for k, v in (selection.validation_auroc if selection else {}).items()
                },
            },
            artifacts=[Path(out)],
            tags={"model_version": meta["model_version"], "sha256": meta["sha256"], "stage": "train"},
            tracking_uri=tracking_uri,
        )
    return meta


def _iso(seconds: float) -> str:
    return str(np.datetime64(int(seconds * 1e6), "us")) + "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--readings", type=Path, help="raw device lines (JSONL), e.g. a simulator run")
    source.add_argument("--lake", help="train on this lake's Silver table (a directory or gs://...)")
    parser.add_argument(
        "--labels", type=Path, help="episode labels (simulator labels.jsonl); without: all normal"
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact directory")
    parser.add_argument(
        "--model",
        choices=[AUTO, *CANDIDATES],
        default=DEFAULT_MODEL,
        help="auto: the best validation AUROC among the candidates (training patients only)",
    )
    parser.add_argument("--target-fpr", type=float, default=DEFAULT_TARGET_FPR)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else var/ml/mlruns)"
    )
    parser.add_argument("--no-track", action="store_true", help="do not log the run to MLflow")
    args = parser.parse_args(argv)
    if not 0 < args.target_fpr < 1:
        return usage_error(parser, f"--target-fpr must be within (0, 1), got {args.target_fpr}")
    if args.readings is not None and not args.readings.is_file():
        return usage_error(parser, f"--readings {args.readings}: no such file")
    if args.labels is not None and not args.labels.is_file():
        return usage_error(parser, f"--labels {args.labels}: no such file")
    try:
        meta = train(
            args.readings,
            args.labels,
            args.out,
            lake=args.lake,
            model=args.model,
            target_fpr=args.target_fpr,
            seed=args.seed,
            track=not args.no_track,
            tracking_uri=args.tracking_uri,
        )
    except ConfigError as exc:  # e.g. a malformed --lake
        return usage_error(parser, str(exc))
    print(
        f"model {meta['model']} version {meta['model_version']}: threshold {meta['threshold']:.6g},"
        f" {meta['training']['rows']} training rows -> {args.out}"
        + (f" (MLflow run {meta['mlflow_run_id']})" if "mlflow_run_id" in meta else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
