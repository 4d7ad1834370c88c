"""Webhooks: a JSON POST signed with HMAC-SHA256, with an ``Idempotency-Key``.

Signature: ``X-Vitals-Signature: sha256=<hex>`` where hex is HMAC-SHA256(key, f"{timestamp}.{body}") and
``timestamp`` (Unix seconds) is sent as ``X-Vitals-Timestamp``. A receiver recomputes it over the raw
body it got, compares in constant time and rejects old timestamps (replays). The timestamp is new on
every try; the Idempotency-Key stays the same, so a receiver can drop a retry it already processed. It is
the notification id, percent-encoded where it is not printable ASCII (never for the pipeline's ids).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any, Final

import requests

from notifier.render import header_token
from notifier.retry import PermanentError, TransientError, http_status_error

TIMESTAMP_HEADER: Final = "X-Vitals-Timestamp"
SIGNATURE_HEADER: Final = "X-Vitals-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
USER_AGENT: Final = "vitals-lake-alert-notifier/1"


def encode_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode("utf-8")


def sign(key: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(key.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def post_webhook(
    session: requests.Session,
    url: str,
    body: bytes,
    *,
    idempotency_key: str,
    signing_key: str | None,
    timeout: float,
    clock: Callable[[], float] = time.time,
) -> int:
    """POST once; return the status on 2xx, else raise TransientError or PermanentError.

    Error details name the exception type or status only: a requests error message contains the URL,
    and a Slack webhook URL is a credential.
    """
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: header_token(idempotency_key),  # built from the event: made header-safe
    }
    if signing_key is not None:
        timestamp = str(int(clock()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(signing_key, timestamp, body)
    try:
        response = session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except (requests.Timeout, requests.ConnectionError) as exc:  # refused, reset, DNS, TLS, timeouts
        raise TransientError(f"webhook {type(exc).__name__}") from None
    except requests.RequestException as exc:
        raise PermanentError(f"webhook {type(exc).__name__}") from None
    with response:
        error = http_status_error(response.status_code, response.headers.get("Retry-After"))
    if error is not None:
        raise error
    return response.status_code
