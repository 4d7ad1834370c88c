"""Secrets by name: the environment locally, Secret Manager in the cloud. Values are never logged.

For a secret named ``SMTP_PASSWORD`` the notifier reads, in order:

* ``$SMTP_PASSWORD``: the value itself (local runs, or a Cloud Functions ``--set-secrets`` mount);
* ``$SMTP_PASSWORD_SECRET``: a Secret Manager resource name, ``projects/P/secrets/S[/versions/V]``
  (``latest`` when no version is given), fetched with the function's service account.

Every value handed out is remembered so that :meth:`Secrets.redact` can scrub it from any text that is
about to be logged or stored.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

RESOURCE_SUFFIX: Final = "_SECRET"
_RESOURCE_RE: Final = re.compile(r"^projects/[^/]+/secrets/[^/]+(/versions/[^/]+)?$")
MIN_LENGTH: Final = 8
CACHE_SECONDS: Final = 600.0  # a rotated secret is picked up within this, without a redeploy


class SecretUnavailable(RuntimeError):
    """A secret is not configured or could not be read. The message names it, never its value."""


class Secrets:
    def __init__(
        self,
        env: Mapping[str, str],
        *,
        fetch: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env = env
        self._fetch = fetch or _access_secret_version
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def get(self, name: str) -> str:
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and self._clock() - cached[1] < CACHE_SECONDS:
                return cached[0]
        value = self._read(name)
        if len(value) < MIN_LENGTH:  # a short value could not be scrubbed from text reliably
            raise SecretUnavailable(f"secret {name} is shorter than {MIN_LENGTH} characters")
        with self._lock:
            self._cache[name] = (value, self._clock())
            self._seen.add(value)
        return value

    def _read(self, name: str) -> str:
        if self._env.get(name):
            return self._env[name]
        resource = self._env.get(name + RESOURCE_SUFFIX, "")
        if not resource:
            raise SecretUnavailable(
                f"secret {name} is not configured: set {name} (local) or "
                f"{name}{RESOURCE_SUFFIX}=projects/PROJECT/secrets/ID (Secret Manager)"
            )
        if not _RESOURCE_RE.match(resource):
            raise SecretUnavailable(f"{name}{RESOURCE_SUFFIX} is not a Secret Manager resource name")
        if "/versions/" not in resource:
            resource += "/versions/latest"
        try:
            return self._fetch(resource)
        except Exception as exc:  # noqa: BLE001 - any client error: name the secret, not the client's text
            raise SecretUnavailable(f"secret {name} could not be read ({type(exc).__name__})") from None

    def redact(self, text: str) -> str:
        """``text`` with every secret value handed out so far replaced by ``***``."""
        with self._lock:
            values = sorted(self._seen, key=len, reverse=True)
        for value in values:
            text = text.replace(value, "***")
        return text


@functools.cache  # one client per instance: creating one costs a credentials lookup
def _secret_manager() -> Any:
    from google.cloud import secretmanager  # noqa: PLC0415 - only the cloud reads Secret Manager

    return secretmanager.SecretManagerServiceClient()


def _access_secret_version(resource: str) -> str:
    response = _secret_manager().access_secret_version(name=resource)
    return str(response.payload.data.decode("utf-8"))
