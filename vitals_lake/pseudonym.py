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
  Function (the rule of every key, :mod:`vitals_lake.keys`).

In the cloud the key lives in Secret Manager (secret ``vitals-pseudonym-key``) and reaches the job as
the environment variable or a mounted file (Cloud Run / Cloud Functions ``--set-secrets``; Dataflow
workers read it at start-up through the launcher's options). Rotating it changes every pseudonym, so it
is a re-keying of the lake, not a routine operation.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake.config import ConfigError
from vitals_lake.keys import MIN_KEY_BYTES, KeySource

KEY_ENV: Final = "VITALS_PSEUDONYM_KEY"
KEY_FILE_ENV: Final = "VITALS_PSEUDONYM_KEY_FILE"
DIGEST_HEX_CHARS: Final = 32  # 128 bits; see the module docstring
# Public on purpose: it only makes local runs reproducible. Pseudonyms made with it protect nothing.
DEVELOPMENT_KEY: Final = b"vitals-lake DEVELOPMENT pseudonym key - not secret"


SOURCE: Final = KeySource(label="pseudonym", env=KEY_ENV, file_env=KEY_FILE_ENV, development=DEVELOPMENT_KEY)


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
        return cls(secret=SOURCE.decode(text, source=source), source=source)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, allow_development_default: bool = True
    ) -> PseudonymKey:
        """The key from the environment (:mod:`vitals_lake.keys`: the development default only in a
        local run)."""
        secret, source = SOURCE.load(env, allow_development_default=allow_development_default)
        return cls(secret=secret, source=source)


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
