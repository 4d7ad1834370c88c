"""A local webhook receiver: a real HTTP server that checks the notifier's signature and records deliveries.

    with WebhookReceiver(secret="...") as hooks:
        url = hooks.url("/icu")                  # configure the notifier with it
        hooks.fail("/icu", status=500, times=2)  # then 200
        hooks.fail("/ehr", status=400)           # always
        hooks.slow("/ehr", seconds=2, times=1)   # answer late once (client timeout)
        [d] = hooks.wait_for(1, path="/icu")     # accepted deliveries
        d.json, d.headers["Idempotency-Key"], d.signature_valid

Verification is written here independently of the notifier, as a receiving service would: HMAC-SHA256
over ``f"{timestamp}.{body}"`` with the shared key, compared in constant time, timestamp no older than
``tolerance`` seconds. A bad signature gets 401. Every request is recorded (``deliveries(accepted=None)``),
whatever the answer was.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from harness.stack.process import StackError, free_port

TIMESTAMP_HEADER = "X-Vitals-Timestamp"
SIGNATURE_HEADER = "X-Vitals-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    signature_valid: bool | None  # None when the receiver has no key
    received_at: float

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get(IDEMPOTENCY_HEADER.lower())


@dataclass
class _Plan:
    fail_status: int = 0
    fail_times: int | None = None  # None: always
    slow_seconds: float = 0.0
    slow_times: int | None = None


def verify_signature(key: str, timestamp: str, body: bytes, signature: str, *, tolerance: float) -> bool:
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    expected = "sha256=" + mac.hexdigest()
    return age <= tolerance and hmac.compare_digest(expected, signature)


class WebhookReceiver:
    """ThreadingHTTPServer on 127.0.0.1 in a thread of the calling process; answers 200 unless told not to."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        tolerance: float = 300,
    ) -> None:
        self.secret = secret
        self.host = host
        self.port = port or 0
        self.tolerance = tolerance
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._plans: dict[str, _Plan] = {}
        self._deliveries: list[Delivery] = []
        self._cond = threading.Condition()

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        if self.port == 0:
            self.port = free_port(self.host)
        try:
            server = ThreadingHTTPServer((self.host, self.port), _make_handler(self))
        except OSError as exc:
            raise StackError(f"webhook receiver could not listen on {self.host}:{self.port}: {exc}") from exc
        server.daemon_threads = True  # a slow answer in progress must not block stop()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    # --- failure injection -------------------------------------------------------------------------------
    def fail(self, path: str, *, status: int = 500, times: int | None = None) -> None:
        """Answer ``status`` to the next ``times`` requests on ``path`` (every request when None)."""
        with self._cond:
            plan = self._plans.setdefault(path, _Plan())
            plan.fail_status, plan.fail_times = status, times

    def slow(self, path: str, *, seconds: float, times: int | None = None) -> None:
        """Wait ``seconds`` before answering the next ``times`` requests on ``path``."""
        with self._cond:
            plan = self._plans.setdefault(path, _Plan())
            plan.slow_seconds, plan.slow_times = seconds, times

    def reset(self, path: str | None = None) -> None:
        with self._cond:
            if path is None:
                self._plans.clear()
            else:
                self._plans.pop(path, None)

    def _next_answer(self, path: str) -> tuple[int, float]:
        """(status to answer, seconds to wait first) for one request, consuming the plan."""
        with self._cond:
            plan = self._plans.get(path)
            if plan is None:
                return 200, 0.0
            delay = 0.0
            if plan.slow_seconds and plan.slow_times != 0:
                delay = plan.slow_seconds
                plan.slow_times = None if plan.slow_times is None else plan.slow_times - 1
            status = 200
            if plan.fail_status and plan.fail_times != 0:
                status = plan.fail_status
                plan.fail_times = None if plan.fail_times is None else plan.fail_times - 1
            return status, delay

    # --- what arrived -------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget the deliveries recorded so far."""
        with self._cond:
            self._deliveries.clear()

    def _record(self, delivery: Delivery) -> None:
        with self._cond:
            self._deliveries.append(delivery)
            self._cond.notify_all()

    def deliveries(self, path: str | None = None, *, accepted: bool | None = True) -> list[Delivery]:
        """Deliveries to ``path`` (any when None); ``accepted=None`` includes the refused ones too."""
        with self._cond:
            return [
                d
                for d in self._deliveries
                if (path is None or d.path == path) and (accepted is None or d.accepted == accepted)
            ]

    def wait_for(
        self, count: int, *, path: str | None = None, accepted: bool | None = True, timeout: float = 10.0
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    d
                    for d in self._deliveries
                    if (path is None or d.path == path) and (accepted is None or d.accepted == accepted)
                ]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} deliveries to {path} in {timeout} s")
                self._cond.wait(left)


def _make_handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?", 1)[0]
            valid: bool | None = None
            if receiver.secret is not None:
                valid = verify_signature(
                    receiver.secret,
                    self.headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                    tolerance=receiver.tolerance,
                )
            status, delay = receiver._next_answer(path)
            if valid is False:
                status = 401
            if delay:
                time.sleep(delay)
            receiver._record(
                Delivery(
                    path=path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    status=status,
                    signature_valid=valid,
                    received_at=time.time(),
                )
            )
            answer = json.dumps({"ok": 200 <= status < 300}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the client gave up waiting (a slow answer): nothing to tell it
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass  # deliveries are recorded; no access log on stderr

    return Handler
