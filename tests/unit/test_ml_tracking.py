"""ml.tracking: runs logged to a local MLflow file store (always under tmp_path) and read back."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from ml import tracking

ALLOW = "MLFLOW_ALLOW_FILE_STORE"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own MLflow settings must not redirect or unlock these tests.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(ALLOW, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return (tmp_path / "mlruns").as_uri()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    (d / "nested").mkdir(parents=True)
    (d / "metadata.json").write_text("{}\n")
    (d / "nested" / "card.md").write_text("# card\n")
    return d


def _reader(uri: str, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    # Only after track_run returned: unlocking earlier would hide whether track_run unlocks itself.
    monkeypatch.setenv(ALLOW, "true")
    return MlflowClient(tracking_uri=uri)


def _runs(client: MlflowClient, experiment: str = tracking.EXPERIMENT) -> list[mlflow.entities.Run]:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else list(client.search_runs([exp.experiment_id]))


def test_run_is_logged_and_read_back(
    store: str, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    run_id = tracking.track_run(
        run_name="train-autoencoder",
        params={
            "model": "autoencoder",
            "target_fpr": 0.005,
            "features": ("hr_dev", "spo2_dev"),
            "training": {"rows": 1200, "range": {"start": "2026-01-01"}},
            "notes": "x" * 7000,
        },
        metrics={"auroc": 0.93, "recall/sepsis": 1, "fa per patient-day (K=2)": 12.4},
        artifacts=[report, model_dir],
        tags={"stage": "train"},
        tracking_uri=store,
    )
    assert os.environ.get(ALLOW) is None  # the file-store opt-out did not outlive the call
    assert mlflow.active_run() is None

    client = _reader(store, monkeypatch)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train-autoencoder"
    assert client.get_experiment(run.info.experiment_id).name == tracking.EXPERIMENT

    params = run.data.params
    assert params["model"] == "autoencoder"
    assert params["target_fpr"] == "0.005"
    assert params["features"] == '["hr_dev", "spo2_dev"]'
    assert params["training.rows"] == "1200"
    assert params["training.range.start"] == "2026-01-01"
    assert len(params["notes"]) == 6000
    assert params["notes"].endswith("...[truncated]")

    assert run.data.metrics == {
        "auroc": pytest.approx(0.93),
        "recall/sepsis": 1.0,
        "fa per patient-day _K_2_": pytest.approx(12.4),  # '(', '=', ')' are not allowed in keys
    }
    assert run.data.tags["stage"] == "train"
    assert tracking.SKIPPED_METRICS_TAG not in run.data.tags

    # files at the root, directories under their own name
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["model", "report.md"]
    assert sorted(a.path for a in client.list_artifacts(run_id, "model")) == [
        "model/metadata.json",
        "model/nested",
    ]
    assert [a.path for a in client.list_artifacts(run_id, "model/nested")] == ["model/nested/card.md"]


def test_non_finite_metrics_are_skipped_and_named(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # evaluation results arrive as JSON-like dicts: nested values are flattened like params
    metrics: dict[str, Any] = {
        "auroc": 0.9,
        "auprc": math.nan,
        "delay": math.inf,
        "recall": {"sepsis": -math.inf},
    }
    run_id = tracking.track_run(run_name="evaluate", params={}, metrics=metrics, tracking_uri=store)
    run = _reader(store, monkeypatch).get_run(run_id)
    assert run.data.metrics == {"auroc": pytest.approx(0.9)}
    assert run.data.tags[tracking.SKIPPED_METRICS_TAG] == "auprc,delay,recall.sepsis"


def test_env_tracking_uri_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_store = (tmp_path / "from-env").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_store)
    assert tracking.tracking_uri() == env_store
    assert tracking.tracking_uri("file:///elsewhere") == "file:///elsewhere"  # explicit still wins

    run_id = tracking.track_run(run_name="env", params={"a": 1}, metrics={"m": 1.0})
    assert (tmp_path / "from-env").is_dir()
    assert _reader(env_store, monkeypatch).get_run(run_id).data.params == {"a": "1"}


def test_default_is_an_absolute_file_uri_under_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # resolve only: nothing is written
    assert tracking.tracking_uri() == (tmp_path / "var" / "ml" / "mlruns").as_uri()
    assert not (tmp_path / "var").exists()


def test_second_run_gets_its_own_id(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tracking.track_run(run_name="a", params={}, metrics={"m": 1.0}, tracking_uri=store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = tracking.track_run(run_name="b", params={}, metrics={"m": 2.0}, tracking_uri=store)
    assert [str(w.message) for w in caught] == []  # a warm call is silent: nothing to suppress
    assert first != second

    client = _reader(store, monkeypatch)
    assert client.get_run(first).info.experiment_id == client.get_run(second).info.experiment_id
    assert sorted(r.data.metrics["m"] for r in _runs(client)) == [1.0, 2.0]


def test_missing_artifact_raises_before_any_run(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match=r"artifact paths do not exist: .*nope\.json"):
        tracking.track_run(
            run_name="bad", params={}, metrics={"m": 1.0}, artifacts=[missing], tracking_uri=store
        )
    assert mlflow.active_run() is None
    assert _runs(_reader(store, monkeypatch)) == []  # no half-logged run


def test_failure_inside_the_run_marks_it_failed(
    store: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: MlflowClient, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(MlflowClient, "log_artifacts", broken)
    with pytest.raises(OSError, match="disk full") as info:
        tracking.track_run(
            run_name="broken", params={"a": 1}, metrics={"m": 1.0}, artifacts=[model_dir], tracking_uri=store
        )
    assert any("marked FAILED" in note for note in info.value.__notes__)
    assert mlflow.active_run() is None
    assert os.environ.get(ALLOW) is None

    (run,) = _runs(_reader(store, monkeypatch))
    assert run.info.status == "FAILED"  # ended, not left RUNNING
    assert run.data.params == {"a": "1"}


def test_explicit_file_store_refusal_is_respected(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW, "false")
    with pytest.raises(mlflow.exceptions.MlflowException, match="maintenance mode"):
        tracking.track_run(run_name="r", params={}, metrics={}, tracking_uri=store)
    assert os.environ[ALLOW] == "false"


def test_colliding_keys_are_refused(store: str) -> None:
    with pytest.raises(ValueError, match="both become 'a_b'"):
        tracking.track_run(run_name="r", params={"a(b": 1, "a)b": 2}, metrics={}, tracking_uri=store)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("auroc", "auroc"),
        ("recall/sepsis", "recall/sepsis"),
        ("a:b=c", "a_b_c"),
        ("/lead//trail/", "lead/trail"),
        ("../up/./x", "_/up/_/x"),
        ("", "_"),
        ("é", "_"),
        ("k" * 300, "k" * 250),
    ],
)
def test_keys_are_sanitised(raw: str, clean: str) -> None:
    assert tracking._sanitise_key(raw) == clean
