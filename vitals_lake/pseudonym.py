"""Pseudonymous patient keys: HMAC-SHA256 of the patient id under a secret key.

Silver and Gold carry ``patient_key`` instead of the name, and analysts join on it. A plain hash of
``P000123`` would be reversible by enumerating the million possible ids, so the hash is keyed: without
the key nobody can recompute it. The digest is truncated to 32 hex characters (128 bits): a collision
needs ~2^64 ids (birthday bound), 128 bits is above the NIST SP 800-107 floor for truncated HMAC, and
it halves the bytes every Silver/Gold row and join key carries.

The key is loaded once at the edge (a CLI or the pipeline's launcher) into ``PseudonymKey`` and passed
down as bytes; nothing else reads the environment:

* ``VITALS_PSEUDONYM_KEY``: the key as hex or base64 (at least 16 bytes once decoded), or
* ``VITALS_PSEUDONYM_KEY_FILE``: a file holding the same text.
* Neither set: a clearly-labelled development key, with a warning. Refused with
  ``allow_development_default=False``, and always inside a Cloud Run job or service or a Cloud
  Function (``CLOUD_RUN_JOB`` / ``K_SERVICE`` set): there a missing secret stops the job instead of
  silently pseudonymising with a public key.

In the cloud the key lives in Secret Manager (secret ``vitals-pseudonym-key``) and reaches the job as
the environment variable or a mounted file (Cloud Run / Cloud Functions ``--set-secrets``; Dataflow
workers read it at start-up through the launcher's options). Rotating it changes every pseudonym, so it
is a re-keying of the lake, not a routine operation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake.config import ConfigError

log = logging.getLogger(__name__)

KEY_ENV: Final = "VITALS_PSEUDONYM_KEY"
KEY_FILE_ENV: Final = "VITALS_PSEUDONYM_KEY_FILE"
MIN_KEY_BYTES: Final = 16
DIGEST_HEX_CHARS: Final = 32  # 128 bits; see the module docstring
# Public on purpose: it only makes local runs reproducible. Pseudonyms made with it protect nothing.
DEVELOPMENT_KEY: Final = b"vitals-lake DEVELOPMENT pseudonym key - not secret"

_HEX_RE = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


@dataclass(frozen=True, kw_only=True)
class PseudonymKey:
    """The HMAC key for ``patient_key``; ``secret`` never appears in a repr or a log."""

    secret: bytes = field(repr=False)
    source: str  # "env", "file:<path>" or "development default"

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise ConfigError(f"pseudonym key from {self.source} is {len(self.secret)} bytes: need >= 16")

    @property
    def is_development(self) -> bool:
        return self.secret == DEVELOPMENT_KEY

    @classmethod
    def from_text(cls, text: str, *, source: str) -> PseudonymKey:
        """Decode hex (preferred when the text is valid hex) or base64."""
        text = text.strip()
        if _HEX_RE.match(text):
            return cls(secret=bytes.fromhex(text), source=source)
        try:
            secret = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"pseudonym key from {source} is neither hex nor base64") from exc
        return cls(secret=secret, source=source)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, allow_development_default: bool = True
    ) -> PseudonymKey:
        e = os.environ if env is None else env
        if e.get(KEY_ENV):
            return cls.from_text(e[KEY_ENV], source="env")
        if e.get(KEY_FILE_ENV):
            path = Path(e[KEY_FILE_ENV])
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{KEY_FILE_ENV}={path}: cannot read the key file ({exc})") from exc
            return cls.from_text(text, source=f"file:{path}")
        if runtime := cloud_runtime(e):
            raise ConfigError(
                f"no pseudonym key in {runtime}: set {KEY_ENV} or {KEY_FILE_ENV} from Secret Manager"
                " (the public development key is for local runs only)"
            )
        if not allow_development_default:
            raise ConfigError(f"no pseudonym key: set {KEY_ENV} or {KEY_FILE_ENV} (Secret Manager in GCP)")
        log.warning(
            "no %s / %s set: using the PUBLIC development pseudonym key (fine locally, never in production)",
            KEY_ENV,
            KEY_FILE_ENV,
        )
        return cls(secret=DEVELOPMENT_KEY, source="development default")


# Set by Google's runtimes themselves: a Cloud Run job's tasks, Cloud Run services and Cloud Functions.
CLOUD_RUNTIME_ENV: Final = ("CLOUD_RUN_JOB", "K_SERVICE")


def cloud_runtime(env: Mapping[str, str]) -> str | None:
    """Which Google runtime this process runs in (by the variables it sets), or None for a local run."""
    found = [f"{name}={env[name]}" for name in CLOUD_RUNTIME_ENV if env.get(name)]
    return ", ".join(found) or None


@lru_cache(maxsize=1 << 17)
def _digest(key: bytes, patient_id: str) -> str:
    # Cached: the same few thousand ids recur in every micro-batch.
    return hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:DIGEST_HEX_CHARS]


def pseudonymise(patient_ids: pa.Array | pa.ChunkedArray, *, key: bytes) -> pa.Array:
    """``patient_key`` per id (32 hex chars), null for a null id; hashes each distinct id once."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"pseudonym key must be >= {MIN_KEY_BYTES} bytes")
    ids = patient_ids.combine_chunks() if isinstance(patient_ids, pa.ChunkedArray) else patient_ids
    ids = ids.cast(pa.string())
    distinct = pc.unique(ids.drop_null())
    digests = pa.array([_digest(key, i) for i in distinct.to_pylist()], pa.string())
    return digests.take(pc.index_in(ids, value_set=distinct))
