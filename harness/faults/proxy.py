"""A fault-injecting HTTP proxy in front of the BigQuery emulator (or any HTTP service): real HTTP faults.

    proxy = FaultProxy(emulator.endpoint)      # point the client (or the pipeline) at proxy.endpoint
    proxy.faults = ["503", "429", "reset"]     # the next insertAll requests get these, in order
    proxy.always = "503"                       # every insertAll request, until set back to None
    proxy.fail_all = True                      # with ``always``: every request, not only insertAll
    proxy.inserts                              # forwarded insertAll requests: (table, insert ids)
    proxy.refused_ids                          # insert ids in insertAll requests that got a fault

Faults: ``"503"`` (``backendError``) and ``"429"`` (``rateLimitExceeded``) answered with BigQuery's
error body, ``"reset"`` the connection dropped without an answer. A fault is served *instead of*
forwarding, so a faulted request never reached the warehouse: the rows of a refused insertAll are known
not to have landed. Runs in a thread of the calling process; ``close()`` stops it.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

FAULTS: Final = ("503", "429", "reset")


class FaultProxy:
    """Forwards HTTP to ``upstream``. Requests for insertAll first consume ``faults``, or all get
    ``always`` while it is set (every request, not only insertAll, while ``fail_all`` is also set)."""

    def __init__(self, upstream: str) -> None:
        url = urlsplit(upstream)
        self.upstream = (url.hostname or "127.0.0.1", url.port or 80)
        self.faults: list[str] = []
        self.always: str | None = None
        self.fail_all = False
        self.served: list[str] = []  # faults served, in order
        self.inserts: list[tuple[str, list[str]]] = []  # forwarded insertAll: (table, insert ids)
        self.refused_ids: list[str] = []  # insert ids of faulted insertAll requests (may repeat)
        self.forwarded = 0  # requests of any kind forwarded upstream
        # A request whose body holds one of these texts is answered 400 with the message given (as
        # BigQuery refuses a DELETE that would touch rows in its streaming buffer).
        self.bad_request_when: dict[str, str] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _next_fault(self, *, insert_all: bool) -> str | None:
        with self._lock:
            if insert_all:
                fault = self.always or (self.faults.pop(0) if self.faults else None)
            else:
                fault = self.always if self.fail_all else None
            if fault is not None:
                if fault not in FAULTS:
                    raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
                self.served.append(fault)
            return fault

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _insert_ids(body: bytes) -> list[str]:
    try:
        return [str(r.get("insertId")) for r in json.loads(body).get("rows", [])]
    except (ValueError, AttributeError):
        return []


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            for text, message in list(proxy.bad_request_when.items()):
                if text.encode() in body:
                    self._answer(400, message, "invalidQuery")
                    return
            insert_all = "/insertAll" in self.path
            fault = proxy._next_fault(insert_all=insert_all)
            if fault is not None:
                if insert_all:
                    ids = _insert_ids(body)
                    with proxy._lock:
                        proxy.refused_ids += ids
                self._fault(fault)
                return
            if insert_all:
                table = self.path.split("/tables/")[1].split("/")[0]
                ids = _insert_ids(body)
                with proxy._lock:
                    proxy.inserts.append((table, ids))
            self._forward(body)

        def _fault(self, fault: str) -> None:
            if fault == "reset":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            code, reason = {"503": (503, "backendError"), "429": (429, "rateLimitExceeded")}[fault]
            self._answer(code, f"injected {code}", reason)

        def _answer(self, code: int, message: str, reason: str) -> None:
            payload = json.dumps(
                {
                    "error": {
                        "code": code,
                        "message": message,
                        "errors": [{"reason": reason, "message": message}],
                    }
                }
            ).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _forward(self, body: bytes) -> None:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            skip = {"host", "connection", "content-length", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            with proxy._lock:
                proxy.forwarded += 1
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler


__all__ = ["FAULTS", "FaultProxy"]
