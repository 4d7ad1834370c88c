"""ml.train and ml.evaluate end to end on a small simulated cohort (through the real Silver path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml import artifact, evaluate, train
from ml.features import DEVIATION_FEATURES


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("sim")
    return evaluate.simulate(out, patients=30, hours=6, interval=60, seed=3, episode_rate=0.5)


def test_train_writes_a_loadable_artifact(cohort, tmp_path):
    readings, labels = cohort
    assert train.main(["--readings", str(readings), "--labels", str(labels), "--out", str(tmp_path),
                       "--model", "isolation_forest", "--seed", "3"]) == 0  # fmt: skip
    meta = json.loads((tmp_path / artifact.METADATA_FILE).read_text())
    assert meta["model"] == "isolation_forest" and meta["features"] == list(DEVIATION_FEATURES)
    assert meta["training"]["rows"] > 0 and meta["training"]["start"] < meta["training"]["end"]
    loaded = artifact.load(tmp_path)
    data = train.load_dataset(readings, labels)
    scores = loaded.score(data.features)
    normal = ~data.anomalous
    # Above the threshold: about the target FPR on normals, far more on episodes.
    assert (scores[normal] >= loaded.threshold).mean() < 0.05
    assert (scores[data.anomalous] >= loaded.threshold).mean() > 0.2


def test_labels_cover_episode_rows(cohort):
    readings, labels = cohort
    data = train.load_dataset(readings, labels)
    assert data.anomalous.any() and (~data.anomalous).any()
    secs = data.seconds()
    pid = data.patients()
    for k in np.unique(data.episode[data.anomalous])[:5]:
        e = data.episodes[int(k)]
        rows = data.episode == k
        assert set(pid[rows]) == {e.patient_id}
        assert secs[rows].min() >= e.start.timestamp() and secs[rows].max() <= e.end.timestamp()


def test_evaluate_reports_every_metric_for_every_detector(cohort, tmp_path):
    readings, labels = cohort
    report = evaluate.evaluate(readings, labels, tmp_path, seed=3)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["bars"].keys() == report["bars"].keys()
    expected = {*evaluate.MODELS, evaluate.COMBINED, "zscore_contaminated", "isolation_forest_contaminated",
                "autoencoder_contaminated"}  # fmt: skip
    assert set(saved["detectors"]) == expected
    metrics = {"auroc", "auprc", "precision_at_1pct_prevalence", "recall_by_type", "median_detection_delay_s",
               "false_alarms_per_patient_day"}  # fmt: skip
    for name, m in saved["detectors"].items():
        assert metrics <= set(m), name
        assert 0.0 <= m["auroc"] <= 1.0 and m["recall_by_type"], name
    assert saved["detectors"]["zscore"]["auroc"] > 0.8  # deviations from own baseline do separate
    for fig in ("roc_pr.png", "recall_by_type.png", "false_alarms.png"):
        assert (tmp_path / fig).read_bytes()[:4] == b"\x89PNG"
        assert fig in (tmp_path / "report.md").read_text()
