"""ml.train and ml.evaluate end to end on a small simulated cohort (through the real Silver path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml import evaluate, train
from pipelines.beam_vitals import run
from vitals_lake.model import artifact
from vitals_lake.model.features import DEVIATION_FEATURES


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("sim")
    return evaluate.simulate(out, patients=30, hours=6, interval=60, seed=3, episode_rate=0.5)


@pytest.fixture(scope="module")
def evaluated(cohort, tmp_path_factory) -> tuple[dict, Path]:
    readings, labels = cohort
    out = tmp_path_factory.mktemp("evaluation")
    return evaluate.evaluate(readings, labels, out, seed=3), out


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


def test_evaluate_reports_every_metric_for_every_detector(evaluated):
    report, tmp_path = evaluated
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["bars"].keys() == report["bars"].keys()
    expected = {*evaluate.MODELS, evaluate.COMBINED, "zscore_contaminated", "isolation_forest_contaminated",
                "autoencoder_contaminated"}  # fmt: skip
    assert set(saved["detectors"]) == expected
    metrics = {"auroc", "auprc", "precision_at_1pct_prevalence", "recall_by_type", "median_detection_delay_s",
               "false_alarms_per_patient_day"}  # fmt: skip
    for name, m in saved["detectors"].items():
        assert metrics <= set(m), name
        assert m["recall_by_type"], name
        if name != evaluate.COMBINED:  # the rule is a decision, not a score: no curve
            assert 0.0 <= m["auroc"] <= 1.0, name
    assert saved["detectors"]["zscore"]["auroc"] > 0.8  # deviations from own baseline do separate
    for fig in ("roc_pr.png", "recall_by_type.png", "detection_delay.png", "false_alarms.png"):
        assert (tmp_path / fig).read_bytes()[:4] == b"\x89PNG"
        assert fig in (tmp_path / "report.md").read_text()


def test_the_model_is_chosen_on_validation_patients_and_rule_variants_are_measured(evaluated):
    report, _ = evaluated
    sel = report["selection"]
    assert set(sel["validation_auroc"]) == set(train.CANDIDATES)
    best = max(sel["validation_auroc"], key=sel["validation_auroc"].get)
    assert sel["chosen"] == best == report["bars"]["chosen_model"] == report["detectors"]["combined"]["model"]
    variants = report["rule_variants"]
    assert sum(v["default"] for v in variants) == 1
    assert {(v["persistence_seconds"], v["red_subscore"]) for v in variants} == {
        (p, red) for p in (0.0, 60.0, 180.0) for red in (False, True)
    }
    default = next(v for v in variants if v["default"])
    assert (default["persistence_seconds"], default["red_subscore"]) == (60.0, False)
    assert default["false_alarms_per_patient_day"] == report["bars"]["combined_false_alarms_per_patient_day"]
    lo, hi = report["bars"]["combined_recall_95ci"]
    assert lo <= report["bars"]["combined_clinical_episode_recall"] <= hi


def test_auto_training_records_the_choice_in_the_artifact(cohort, tmp_path):
    readings, labels = cohort
    meta = train.train(readings, labels, tmp_path, seed=3)
    chosen = meta["training"]["selection"]["chosen"]
    assert meta["model"] == chosen in train.CANDIDATES
    assert "validation AUROC" in meta["training"]["selection"]["rule"]


def test_wilson_interval_brackets_the_proportion():
    assert evaluate.wilson_interval(15, 15)[0] == pytest.approx(0.796, abs=1e-3)
    lo, hi = evaluate.wilson_interval(9, 10)
    assert lo < 0.9 < hi < 1.0


def test_training_from_the_cli_is_tracked_in_mlflow(cohort, tmp_path, monkeypatch):
    readings, labels = cohort
    store = f"file:{tmp_path / 'mlruns'}"
    args = ["--readings", str(readings), "--labels", str(labels), "--out", str(tmp_path / "model"),
            "--model", "zscore", "--seed", "3", "--tracking-uri", store]  # fmt: skip
    assert train.main(args) == 0
    meta = json.loads((tmp_path / "model" / artifact.METADATA_FILE).read_text())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading a file store back needs the opt-in
    from mlflow import MlflowClient  # noqa: PLC0415 - slow import, only this test

    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("vitals-lake-anomaly").experiment_id])
    assert run.data.params["model"] == "zscore"
    assert run.data.tags["model_version"] == meta["model_version"]
    assert run.data.metrics["threshold"] == pytest.approx(meta["threshold"])
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {
        f"model/{artifact.METADATA_FILE}",
        f"model/{artifact.MODEL_FILE}",
    }


def test_without_validation_episodes_auto_falls_back_to_the_untrained_detector(tmp_path):
    readings, labels = evaluate.simulate(
        tmp_path / "sim", patients=6, hours=1, interval=60, seed=1, episode_rate=0.0
    )
    meta = train.train(readings, labels, tmp_path / "model", seed=1)
    assert meta["model"] == train.FALLBACK_MODEL
    assert meta["training"]["selection"]["rule"].startswith("fallback")


def test_training_on_a_lakes_silver_table(cohort, tmp_path):
    readings, labels = cohort
    lake = tmp_path / "lake"
    run(["--input-jsonl", str(readings), "--lake", str(lake)])
    meta = train.train(None, labels, tmp_path / "model", lake=str(lake), seed=3)
    from_file = train.train(readings, labels, tmp_path / "model-file", seed=3)
    assert meta["training"]["source"] == f"silver table of {lake}"
    # The lake's Silver is what the file becomes through the same gate: the same training rows.
    assert meta["training"]["rows"] == from_file["training"]["rows"] > 0
    with pytest.raises(ValueError, match="not both"):
        train.train(readings, labels, tmp_path / "x", lake=str(lake))
