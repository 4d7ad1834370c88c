"""Secret keys from the environment, one rule for all of them.

A key comes from an environment variable (hex or base64, at least 16 bytes once decoded) or from a
file named by a second variable (Secret Manager mounts it or sets the variable in the cloud). With
neither set, a clearly-labelled public development key stands in, with a warning, so local runs need
no setup; it is refused when the caller says so and always inside a Cloud Run job or service, a Cloud
Function or a Dataflow worker (``CLOUD_RUN_JOB`` / ``K_SERVICE`` set by Google's runtimes,
``VITALS_DATAFLOW_WORKER`` by the workers' entrypoint, ``infra/dataflow/worker_entrypoint.sh``):
there a missing secret stops the job instead of silently protecting nothing.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vitals_lake.config import ConfigError

log = logging.getLogger(__name__)

MIN_KEY_BYTES: Final = 16
# Set by Google's runtimes themselves (a Cloud Run job's tasks, Cloud Run services and Cloud Functions)
# and by the Dataflow workers' entrypoint.
CLOUD_RUNTIME_ENV: Final = ("CLOUD_RUN_JOB", "K_SERVICE", "VITALS_DATAFLOW_WORKER")
_HEX_RE = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


def cloud_runtime(env: Mapping[str, str]) -> str | None:
    """Which Google runtime this process runs in (by the variables it sets), or None for a local run."""
    found = [f"{name}={env[name]}" for name in CLOUD_RUNTIME_ENV if env.get(name)]
    return ", ".join(found) or None


@dataclass(frozen=True, kw_only=True)
class KeySource:
    """Where one kind of key is read from, and its public stand-in for local runs."""

    label: str  # "pseudonym", "model signing"
    env: str
    file_env: str
    development: bytes

    def decode(self, text: str, *, source: str) -> bytes:
        """Hex (preferred when the text is valid hex) or base64, at least ``MIN_KEY_BYTES``."""
        text = text.strip()
        if _HEX_RE.match(text):
            secret = bytes.fromhex(text)
        else:
            try:
                secret = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(f"{self.label} key from {source} is neither hex nor base64") from exc
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(f"{self.label} key from {source} is {len(secret)} bytes: need {MIN_KEY_BYTES}")
        return secret

    def load(
        self, env: Mapping[str, str] | None = None, *, allow_development_default: bool = True
    ) -> tuple[bytes, str]:
        """(secret, where it came from: "env", "file:<path>" or "development default")."""
        e = os.environ if env is None else env
        if e.get(self.env):
            return self.decode(e[self.env], source="env"), "env"
        if e.get(self.file_env):
            path = Path(e[self.file_env])
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{self.file_env}={path}: cannot read the key file ({exc})") from exc
            return self.decode(text, source=f"file:{path}"), f"file:{path}"
        if runtime := cloud_runtime(e):
            raise ConfigError(
                f"no {self.label} key in {runtime}: set {self.env} or {self.file_env} from Secret Manager"
                " (the public development key is for local runs only)"
            )
        if not allow_development_default:
            where = f"set {self.env} or {self.file_env} (Secret Manager in GCP)"
            raise ConfigError(f"no {self.label} key: {where}")
        log.warning(
            "no %s / %s set: using the PUBLIC development %s key (fine locally, never in production)",
            self.env,
            self.file_env,
            self.label,
        )
        return self.development, "development default"
