"""The anomaly model scoring Silver in the pipeline, and new versions picked up without a restart."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.metrics.metric import MetricsFilter

from deploy.infra_names import GENERATED_DIR, NAMES_FILE
from ml import evaluate, train
from pipelines.beam_vitals import run
from simulator import read_jsonl
from tests.factories import T0, raw, reading, silver_rows
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.engine import recent_silver
from vitals_lake.lake import Lake
from vitals_lake.model import artifact
from vitals_lake.model.serving import ModelWatcher, StreamScorer


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Readings of a small simulated cohort and two model versions trained on them."""
    root = tmp_path_factory.mktemp("ml")
    readings, labels = evaluate.simulate(
        root / "sim", patients=20, hours=4, interval=60, seed=5, episode_rate=0.5
    )
    v1, v2 = root / "v1", root / "v2"
    train.train(readings, labels, v1, model="isolation_forest", seed=5)
    train.train(readings, labels, v2, model="zscore", seed=5)
    return readings, v1, v2


def version(path: Path) -> str:
    return json.loads((path / artifact.METADATA_FILE).read_text())["model_version"]


def test_the_pipeline_scores_every_silver_reading_with_the_deployed_model(models, tmp_path):
    readings, v1, _ = models
    lake_dir = tmp_path / "lake"
    result = run(["--input-jsonl", str(readings), "--lake", str(lake_dir), "--model-uri", str(v1)])
    lake = Lake(LocalLake(root=lake_dir))
    silver = lake.read("silver", columns=[c.ANOMALY_SCORE, c.IS_ANOMALY, c.MODEL_VERSION, c.ALERT_OPEN])
    assert silver.num_rows > 0
    assert silver[c.ANOMALY_SCORE].null_count == 0
    assert set(silver[c.MODEL_VERSION].to_pylist()) == {version(v1)}
    assert 0 < pc.sum(silver[c.IS_ANOMALY]).as_py() < silver.num_rows
    gold = lake.read("gold", columns=[c.gold_column(c.ANOMALY_SCORE, "max")])
    assert gold[c.gold_column(c.ANOMALY_SCORE, "max")].null_count == 0
    # The rows of alert episodes are counted: at least every row with an alert open, far fewer than
    # all rows (the rest only move their patient's clock).
    episodes = result.metrics().query(MetricsFilter().with_name("episode_rows"))["counters"]
    count = sum(m.committed for m in episodes)
    assert 0 < pc.sum(silver[c.ALERT_OPEN]).as_py() <= count < silver.num_rows
    # The counters Terraform's quarantine-ratio policy divides, by the names it selects (names.json).
    names = json.loads((GENERATED_DIR / NAMES_FILE).read_text())["monitoring"]["pipeline_counters"]
    counted = {m.key.metric.name: m.committed for m in result.metrics().query(MetricsFilter())["counters"]}
    quarantined = lake.read("quarantine", columns=[c.INGEST_DATE]).num_rows
    assert quarantined > 0
    assert counted[names["quarantined_rows"]] == quarantined
    assert counted[names["valid_rows"]] >= silver.num_rows


def test_without_a_model_readings_are_stored_unscored(tmp_path):
    scorer = StreamScorer(ModelWatcher(str(tmp_path / "nothing-here"), poll_seconds=0))
    out = scorer.score(silver_rows([raw(reading(i)) for i in range(5)]))
    assert out.num_rows == 5 and out[c.ANOMALY_SCORE].null_count == 5


def test_a_new_version_is_picked_up_and_a_tampered_one_refused(models, tmp_path):
    _, v1, v2 = models
    serving = tmp_path / "serving"
    shutil.copytree(v1, serving)
    now = [0.0]
    watcher = ModelWatcher(str(serving), poll_seconds=30, clock=lambda: now[0])
    scorer = StreamScorer(watcher)
    batch = silver_rows([raw(reading(i)) for i in range(30)])
    assert set(scorer.score(batch)[c.MODEL_VERSION].to_pylist()) == {version(v1)}

    shutil.rmtree(serving)
    shutil.copytree(v2, serving)  # a new version is published
    now[0] = 10.0  # before the next poll: still the old one
    assert watcher.current().version == version(v1)
    now[0] = 31.0
    assert set(scorer.score(batch)[c.MODEL_VERSION].to_pylist()) == {version(v2)}

    meta = json.loads((serving / artifact.METADATA_FILE).read_text())
    meta["model_version"] = "0" * 12  # a third "version" whose bytes do not match its hash
    (serving / artifact.METADATA_FILE).write_text(json.dumps(meta))
    now[0] = 62.0
    assert watcher.current().version == version(v2)  # refused: the verified model keeps serving


def test_after_a_restart_baselines_and_alert_state_are_rebuilt_from_silver(models, tmp_path):
    readings, v1, _ = models
    silver = train.silver_from_lines(read_jsonl(readings))
    cut = pc.quantile(pc.cast(silver[c.TIMESTAMP], pa.int64()), q=0.6).to_pylist()[0]
    early = silver.filter(pc.less(pc.cast(silver[c.TIMESTAMP], pa.int64()), cut))
    late = silver.filter(pc.greater_equal(pc.cast(silver[c.TIMESTAMP], pa.int64()), cut))

    running = StreamScorer(ModelWatcher(str(v1), poll_seconds=1e9))
    stored = running.score(early)  # what the lake holds when the pipeline stops
    expected = running.score(late)

    lake = Lake(LocalLake(root=tmp_path / "lake"))
    lake.append("silver", stored)
    restarted = StreamScorer(ModelWatcher(str(v1), poll_seconds=1e9), history=partial(recent_silver, lake))
    got = restarted.score(late)
    cold = StreamScorer(ModelWatcher(str(v1), poll_seconds=1e9)).score(late)  # no history: starts cold

    for col in (c.ANOMALY_SCORE, c.IS_ANOMALY, c.ALERT_OPEN):
        assert got[col].to_pylist() == expected[col].to_pylist(), col
    assert cold[c.ANOMALY_SCORE].to_pylist() != expected[c.ANOMALY_SCORE].to_pylist()
    assert pc.sum(expected[c.ALERT_OPEN]).as_py() > 0  # the comparison covers open alerts too


def test_the_combined_rule_opens_alerts_in_the_stream_even_without_a_model():
    scorer = StreamScorer(None)
    # NEWS2 >= 7 held for two readings a minute apart: the NEWS2 arm alone opens an alert.
    sick = {
        c.HEART_RATE: 135,
        c.RESPIRATION_RATE: 28,
        c.SPO2: 90,
        c.BLOOD_PRESSURE: "88/50",
        c.TEMPERATURE: 39.4,
    }
    rows = [raw(reading(i, patient="P-SICK", at=T0 + timedelta(minutes=i), **sick)) for i in range(3)]
    out = scorer.score(silver_rows(rows))
    assert out[c.NEWS2_SCORE].to_pylist()[0] >= 7
    assert out[c.ALERT_OPENED].to_pylist() == [False, True, False]
    assert out[c.ALERT_OPEN].to_pylist() == [False, True, True]
    assert out[c.ANOMALY_SCORE].null_count == 3


def test_dofn_copies_in_one_process_share_one_model_watcher_and_keep_no_patient_state(tmp_path):
    """Runners deserialise a DoFn per bundle or thread: the model watcher is shared per process, and
    per-patient state is not on the DoFn at all (it is the shard's keyed state)."""
    from apache_beam.internal import pickler  # noqa: PLC0415

    from pipelines.validation import AdvanceShardFn  # noqa: PLC0415
    from vitals_lake.engine import EngineSettings  # noqa: PLC0415

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    fn = AdvanceShardFn(LocalLake(root=tmp_path), EngineSettings(), str(model_dir), 30.0)
    wire = pickler.dumps(fn)
    first, second = pickler.loads(wire), pickler.loads(wire)
    first.setup()
    second.setup()
    assert first.watcher is second.watcher is not None
    other_pipeline = pickler.loads(
        pickler.dumps(AdvanceShardFn(LocalLake(root=tmp_path), EngineSettings(), str(model_dir), 30.0))
    )
    other_pipeline.setup()
    assert other_pipeline.watcher is not first.watcher
    assert not any("scorer" in name or "baseline" in name for name in vars(first))
