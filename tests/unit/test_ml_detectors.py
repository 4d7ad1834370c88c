"""vitals_lake.model.detectors and vitals_lake.model.artifact: ranking, thresholds, versioned artifacts."""

from __future__ import annotations

import hashlib
import hmac
import json
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
import skops.io as sio
from sklearn.metrics import roc_auc_score

from vitals_lake import contract as c
from vitals_lake.config import ConfigError
from vitals_lake.model import artifact, signing
from vitals_lake.model.detectors import (
    AutoencoderDetector,
    IsolationForestDetector,
    News2Detector,
    RobustZScore,
    fix_threshold,
)
from vitals_lake.model.features import DEVIATION_FEATURES


def _features(x: np.ndarray, news2: np.ndarray | None = None) -> pa.Table:
    cols = {name: x[:, j] for j, name in enumerate(DEVIATION_FEATURES)}
    cols[c.NEWS2_SCORE] = news2 if news2 is not None else np.zeros(len(x))
    return pa.table(cols)


@pytest.fixture(scope="module")
def normal() -> pa.Table:
    return _features(np.random.default_rng(1).normal(size=(3000, len(DEVIATION_FEATURES))))


@pytest.mark.parametrize(
    "detector",
    [RobustZScore(), IsolationForestDetector(seed=1), AutoencoderDetector(seed=1)],
    ids=lambda d: d.name,
)
def test_detectors_rank_a_deviation_above_normals(detector, normal):
    detector.fit(normal)
    test = np.random.default_rng(2).normal(size=(200, len(DEVIATION_FEATURES)))
    test[:20, 0] += 8  # heart rate far from the patient's own baseline
    s = detector.score(_features(test))
    assert np.median(s[:20]) > np.quantile(s[20:], 0.9)
    assert (
        roc_auc_score(np.r_[np.ones(20), np.zeros(180)], s) > 0.9
    )  # IsolationForest is the weakest on one-axis outliers (~0.93)


def test_news2_detector_scores_news2():
    s = News2Detector().score(_features(np.zeros((3, len(DEVIATION_FEATURES))), np.array([0, 3, 7])))
    np.testing.assert_array_equal(s, [0, 3, 7])


def test_threshold_gives_target_fpr_on_normals():
    rng = np.random.default_rng(3)
    train, fresh = rng.normal(size=50_000), rng.normal(size=50_000)
    t = fix_threshold(train, 0.01)
    assert (train >= t).mean() <= 0.01
    assert abs((fresh >= t).mean() - 0.01) < 0.003
    with pytest.raises(ValueError):
        fix_threshold(train, 0.0)


def test_artifact_round_trip(tmp_path, normal):
    det = IsolationForestDetector(seed=1, n_estimators=20).fit(normal)
    meta = artifact.save(
        det,
        tmp_path,
        threshold=0.6,
        target_fpr=0.005,
        feature_names=det.features,
        training={"rows": normal.num_rows, "patients": 1, "start": None, "end": None, "seed": 1},
    )
    assert len(meta["model_version"]) == 12 and meta["sha256"].startswith(meta["model_version"])
    assert (tmp_path / artifact.MODEL_CARD_FILE).read_text().startswith("# Vitals anomaly model")
    loaded = artifact.load(tmp_path)
    assert loaded.version == meta["model_version"] and loaded.threshold == 0.6
    np.testing.assert_array_equal(loaded.score(normal), det.score(normal))


def test_tampered_model_raises(tmp_path, normal):
    det = RobustZScore()
    artifact.save(det, tmp_path, threshold=4.0, target_fpr=0.005, feature_names=det.features, training={})
    blob = bytearray((tmp_path / artifact.MODEL_FILE).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / artifact.MODEL_FILE).write_bytes(bytes(blob))
    with pytest.raises(artifact.ArtifactError, match="sha256"):
        artifact.load(tmp_path)


def test_tampered_metadata_raises(tmp_path):
    det = RobustZScore()
    artifact.save(det, tmp_path, threshold=4.0, target_fpr=0.005, feature_names=det.features, training={})
    meta = json.loads((tmp_path / artifact.METADATA_FILE).read_text())
    meta["sha256"] = "0" * 64
    (tmp_path / artifact.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(artifact.ArtifactError):
        artifact.load(tmp_path)


def test_untrusted_type_refused_even_with_matching_hash(tmp_path):
    blob = sio.dumps({"x": Fraction(1, 3)})  # not on the trusted list
    (tmp_path / artifact.MODEL_FILE).write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    meta = {"sha256": digest, "model_version": digest[:12], "threshold": 1.0}
    meta[artifact.SIGNATURE] = artifact.signature(meta, key=signing.DEVELOPMENT_SIGNING_KEY)  # even signed
    (tmp_path / artifact.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(artifact.ArtifactError, match="untrusted"):
        artifact.load(tmp_path)


SIGNING_KEY = hashlib.sha256(b"model-signing-test-key").digest()  # an Ed25519 seed
VERIFY_KEY = signing.public_key(SIGNING_KEY)


def _save_signed(path):
    det = RobustZScore()
    kw = {"threshold": 4.0, "target_fpr": 0.005, "feature_names": det.features, "training": {}}
    artifact.save(det, path, **kw, signing_key=SIGNING_KEY)


@pytest.mark.parametrize(
    "change",
    [
        {"threshold": float("inf")},  # the model's alert arm silently off
        {"threshold": 1e9},
        {"features": ["hr_dev"]},
        {"training": {"rows": 1}},
        {"model_version": "0" * 12},
    ],
)
def test_a_changed_metadata_field_is_refused(tmp_path, change):
    _save_signed(tmp_path)
    assert artifact.load(tmp_path, verify_key=VERIFY_KEY).threshold == 4.0
    meta = json.loads((tmp_path / artifact.METADATA_FILE).read_text())
    (tmp_path / artifact.METADATA_FILE).write_text(json.dumps({**meta, **change}))
    with pytest.raises(artifact.ArtifactError, match=r"signature|signed"):
        artifact.load(tmp_path, verify_key=VERIFY_KEY)


def test_an_unsigned_artifact_or_another_key_is_refused(tmp_path):
    _save_signed(tmp_path)
    with pytest.raises(artifact.ArtifactError, match="signature does not match"):
        artifact.load(tmp_path, verify_key=signing.DEVELOPMENT_VERIFY_KEY)
    meta = json.loads((tmp_path / artifact.METADATA_FILE).read_text())
    del meta[artifact.SIGNATURE]
    (tmp_path / artifact.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(artifact.ArtifactError, match="not signed"):
        artifact.load(tmp_path, verify_key=VERIFY_KEY)


def test_the_verify_key_cannot_sign_and_an_hmac_signed_artifact_is_refused(tmp_path):
    # The pipeline holds the public key only: used as a private key it makes another key's signatures.
    _save_signed(tmp_path)
    meta = json.loads((tmp_path / artifact.METADATA_FILE).read_text())
    forged = {**meta, "threshold": 1e9}
    forged[artifact.SIGNATURE] = artifact.signature(forged, key=VERIFY_KEY)
    (tmp_path / artifact.METADATA_FILE).write_text(json.dumps(forged))
    with pytest.raises(artifact.ArtifactError, match="signature does not match"):
        artifact.load(tmp_path, verify_key=VERIFY_KEY)
    # An artifact of the HMAC era, correctly signed under its shared key, is refused by name.
    body = artifact.canonical(meta)
    old = {
        **meta,
        artifact.SIGNATURE: "hmac-sha256:" + hmac.new(SIGNING_KEY, body, hashlib.sha256).hexdigest(),
    }
    (tmp_path / artifact.METADATA_FILE).write_text(json.dumps(old))
    with pytest.raises(artifact.ArtifactError, match="retired HMAC"):
        artifact.load(tmp_path, verify_key=VERIFY_KEY)


def test_the_keys_come_from_the_environment_and_never_default_in_the_cloud(tmp_path):
    assert signing.SIGNING.load({signing.SIGNING_KEY_ENV: SIGNING_KEY.hex()})[0] == SIGNING_KEY
    assert signing.VERIFYING.load({signing.VERIFY_KEY_ENV: VERIFY_KEY.hex()})[0] == VERIFY_KEY
    assert signing.SIGNING.load({})[0] == signing.DEVELOPMENT_SIGNING_KEY  # a local run
    assert signing.VERIFYING.load({})[0] == signing.DEVELOPMENT_VERIFY_KEY
    with pytest.raises(ConfigError, match="model signing"):
        signing.SIGNING.load({"CLOUD_RUN_JOB": "vitals-train"})
    with pytest.raises(ConfigError, match="model verification"):
        signing.VERIFYING.load({"VITALS_DATAFLOW_WORKER": "1"})


def test_keygen_gives_a_pair_that_signs_and_verifies():
    pair = signing.keygen()
    private, public = bytes.fromhex(pair["signing_key"]), bytes.fromhex(pair["verify_key"])
    assert signing.public_key(private) == public
    sig = signing.sign(b"metadata", private_key=private)
    assert signing.verify(b"metadata", sig, public_key=public)
    assert not signing.verify(b"metadata!", sig, public_key=public)
    with pytest.raises(ConfigError, match="32 bytes"):
        signing.sign(b"x", private_key=b"short-key-of-twenty-b")


def test_keygen_writes_the_private_key_for_its_owner_only(tmp_path, capsys, monkeypatch):
    assert signing.main(["keygen", "--out", str(tmp_path / "k")]) == 0
    private, public = tmp_path / "k" / "signing.key", tmp_path / "k" / "verify.key"
    assert private.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, private.read_text())
    capsys.readouterr()
    assert signing.main(["public"]) == 0
    assert capsys.readouterr().out.strip() == public.read_text()
    with pytest.raises(SystemExit):  # never over an existing pair
        signing.main(["keygen", "--out", str(tmp_path / "k")])
