"""A versioned, signed model artifact: ``model.skops`` + ``metadata.json`` + ``MODEL_CARD.md``.

The version is the first 12 hex digits of the skops file's SHA-256, which the metadata records. The
whole metadata (that hash, the alert threshold, the features, the training facts) is signed: an
Ed25519 signature over its canonical JSON (:mod:`vitals_lake.model.signing`). The training job signs
with the private key (``VITALS_MODEL_SIGNING_KEY``); the pipeline verifies with the public one
(``VITALS_MODEL_VERIFY_KEY``), so what serves models cannot make one. :func:`load` checks the
signature, then the file's hash, BEFORE
deserialising, and then lets skops rebuild only an explicit list of trusted types: a changed byte of
the model, a changed field of the metadata (a threshold set to infinity turned the model's alert arm
off and loaded fine before the metadata was signed) or an unsigned artifact raises instead of being
served. Never pickle or joblib.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import platform
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from threadpoolctl import ThreadpoolController

if TYPE_CHECKING:
    from vitals_lake.model.detectors import Detector

# scikit-learn and skops (about 4 s to import) are imported where a model is saved or loaded, so the
# pipeline's workers and tools that never touch a model start without them.

from vitals_lake.model import signing

MODEL_FILE: Final = "model.skops"
METADATA_FILE: Final = "metadata.json"
MODEL_CARD_FILE: Final = "MODEL_CARD.md"
FORMAT_VERSION: Final = 3  # 2: the metadata is signed (HMAC); 3: signed with Ed25519
SIGNATURE: Final = "signature"

# Beyond skops' own defaults (numpy, builtins, common sklearn types): our detector classes and the
# sklearn internals their models hold. Anything else in a file makes load() refuse it.
TRUSTED_TYPES: Final = [
    "vitals_lake.model.detectors.RobustZScore",
    "vitals_lake.model.detectors.IsolationForestDetector",
    "vitals_lake.model.detectors.AutoencoderDetector",
    "vitals_lake.model.detectors.News2Detector",
    "sklearn.tree._tree.Tree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
]


class ArtifactError(Exception):
    """The artifact is incomplete, tampered with or holds untrusted types."""


@dataclass(frozen=True)
class LoadedModel:
    detector: Detector
    threshold: float
    metadata: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.metadata["model_version"])

    def score(self, features: Any) -> np.ndarray:
        # One BLAS thread: the runner already runs a scoring thread per shard, and BLAS's own threads
        # on top spin between calls (3 % of the pipeline's CPU on 2 cores, under perf).
        with _single_threaded_blas():
            return self.detector.score(features)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def _single_threaded_blas() -> AbstractContextManager[object]:
    return _blas_controller().limit(limits=1, user_api="blas")


def save(
    detector: Detector,
    out_dir: Path,
    *,
    threshold: float,
    target_fpr: float,
    feature_names: tuple[str, ...],
    training: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    signing_key: bytes | None = None,
) -> dict[str, Any]:
    """Write the three files into ``out_dir``; returns the (signed) metadata. ``signing_key``: the
    model signing key (None: from the environment)."""
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import sklearn  # noqa: PLC0415 - see the module's imports
    import skops  # noqa: PLC0415
    import skops.io as sio  # noqa: PLC0415

    blob = sio.dumps(detector)
    digest = hashlib.sha256(blob).hexdigest()
    (out_dir / MODEL_FILE).write_bytes(blob)
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_version": digest[:12],
        "sha256": digest,
        "model": detector.name,
        "features": list(feature_names),
        "threshold": threshold,
        "target_fpr": target_fpr,
        "training": training,  # time range, row counts, patients, seed
        "metrics": metrics or {},
        "libraries": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "skops": skops.__version__,
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    metadata[SIGNATURE] = signature(
        metadata, key=signing_key if signing_key is not None else signing.SIGNING.load()[0]
    )
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    (out_dir / MODEL_CARD_FILE).write_text(_model_card(metadata))
    return metadata


def canonical(metadata: dict[str, Any]) -> bytes:
    """What is signed: the metadata's canonical JSON (sorted keys, no spaces, ASCII; every field but the
    signature itself)."""
    body = {k: v for k, v in metadata.items() if k != SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def signature(metadata: dict[str, Any], *, key: bytes) -> str:
    """The metadata's Ed25519 signature under the private key ``key``."""
    return signing.sign(canonical(metadata), private_key=key)


def load(path: Path, *, verify_key: bytes | None = None) -> LoadedModel:
    """Load an artifact directory, verifying the metadata's signature and the model file's hash before
    anything is deserialised. ``verify_key``: the model verification (public) key (None: from the
    environment)."""
    path = Path(path)
    try:
        metadata = json.loads((path / METADATA_FILE).read_text())
        blob = (path / MODEL_FILE).read_bytes()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read artifact at {path}: {exc}") from exc
    if not isinstance(metadata, dict) or not isinstance(metadata.get(SIGNATURE), str):
        raise ArtifactError(
            f"{path / METADATA_FILE} is not signed: retrain, or re-sign with the training job"
        )
    if metadata[SIGNATURE].startswith(signing.RETIRED_SCHEMES):
        raise ArtifactError(
            f"{path / METADATA_FILE} is signed with the retired HMAC scheme: retrain, or re-sign with the"
            " training job's Ed25519 key"
        )
    key = verify_key if verify_key is not None else signing.VERIFYING.load()[0]
    if not signing.verify(canonical(metadata), metadata[SIGNATURE], public_key=key):
        raise ArtifactError(f"{path / METADATA_FILE}: the signature does not match (changed, or another key)")
    threshold = metadata.get("threshold")
    if not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ArtifactError(f"{path / METADATA_FILE}: threshold {threshold!r} is not a finite number")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != metadata.get("sha256") or digest[:12] != metadata.get("model_version"):
        raise ArtifactError(f"{path / MODEL_FILE}: sha256 {digest[:12]} does not match the metadata")
    import skops.io as sio  # noqa: PLC0415 - see the module's imports

    from vitals_lake.model.detectors import Detector  # noqa: PLC0415

    untrusted = set(sio.get_untrusted_types(data=blob)) - set(TRUSTED_TYPES)
    if untrusted:
        raise ArtifactError(f"{path / MODEL_FILE} holds untrusted types: {sorted(untrusted)}")
    detector = sio.loads(blob, trusted=TRUSTED_TYPES)
    if not isinstance(detector, Detector):
        raise ArtifactError(f"{path / MODEL_FILE} does not hold a detector")
    return LoadedModel(detector=detector, threshold=float(threshold), metadata=metadata)


def _model_card(m: dict[str, Any]) -> str:
    t = m["training"]
    lines = [
        f"# Vitals anomaly model {m['model_version']}",
        "",
        f"- Detector: `{m['model']}`; score higher = more anomalous; alert threshold {m['threshold']:.6g}"
        f" (fixed on training normals at a false-positive rate of {m['target_fpr']}).",
        f"- Features: {', '.join(m['features'])} (deviations from each patient's own robust baseline,"
        " `vitals_lake.model.features`).",
        f"- Training data: {t.get('rows')} normal rows of {t.get('patients')} patients,"
        f" {t.get('start')} to {t.get('end')} (simulated cohort, seed {t.get('seed')}).",
        "- Intended use: decision support next to NEWS2 through the combined rule in `vitals_lake.alerting`"
        " (persistence suppresses short sensor artefacts). Not a diagnostic device.",
        "- Limits: trained and evaluated on simulated patients only; real-patient performance unknown.",
        f"- Integrity: sha256 `{m['sha256']}`, metadata signed (`{m[SIGNATURE][:24]}...`); load with"
        " `vitals_lake.model.artifact.load`"
        " (hash checked first, explicit skops trusted types).",
        "",
    ]
    if m.get("metrics"):
        lines += ["## Metrics (held-out patients)", "", "```", json.dumps(m["metrics"], indent=2), "```", ""]
    return "\n".join(lines)
