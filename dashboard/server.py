"""The local dashboard's HTTP server (stdlib ``ThreadingHTTPServer``) and its lake -> warehouse sync.

Routes: ``/high-risk``, ``/wards``, ``/trends``, ``/patient`` (the highest-risk patient) and
``/patient/<patient_key>``; ``?partial=1`` returns only the page's ``<main>`` content (the pages'
auto-refresh swaps it in); ``/api/<page>`` (and ``/api/patient/<patient_key>``) return the page's data
as JSON (patients by ``patient_key`` only: the raw id is read, from the identity view, for the
HTML detail page alone); ``/healthz`` says whether the warehouse answers and how the last sync went.

Exposure: a request whose ``Host`` is not the bind address, a loopback name or one given with
``--allowed-host`` is refused (421), an error answers a generic body with a reference that the log
holds the details under, and every response carries ``nosniff``, ``DENY`` framing and no referrer.

When given a lake, the server owns the DuckDB file (DuckDB allows one writing process) and a
background thread copies what changed in the lake into it every ``sync_seconds``; HTTP threads
query the views meanwhile (``DuckWarehouse`` gives each call its own cursor).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa

from dashboard import layout, pages
from dashboard.data import DashboardData, NotFound, jsonable

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS: Final = 5
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY_ADDRESS: Final = frozenset({"", "0.0.0.0", "::"})
# On every response: no MIME sniffing, no framing by other sites, no referrer leaving the dashboard.
SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a request's ``Host`` header may carry: the loopback names, the bind address
    (unless it is the any-address) and ``extra`` (the names a proxy or users reach it by). Anything
    else is refused, so a page elsewhere that rebinds its own DNS name to this machine (DNS rebinding)
    cannot read patients' data through the browser of a clinician who opens it."""
    names = set(LOOPBACK_NAMES) | {h.lower().strip("[]") for h in extra}
    if bind_host not in _ANY_ADDRESS:
        names.add(bind_host.lower().strip("[]"))
    return frozenset(names)


def host_name(header: str | None) -> str | None:
    """The host part of a ``Host`` header, lower case, without port or IPv6 brackets."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else None
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Queryable(Protocol):
    def query(self, sql: str) -> pa.Table: ...


@dataclass
class SyncStatus:
    runs: int = 0
    last_ok: float | None = None  # epoch seconds
    last_error: str | None = None
    inserted: dict[str, int] = field(default_factory=dict)  # totals per table since start


class LakeSync:
    """Runs ``sync_once`` every ``seconds`` in a daemon thread until stopped; never dies on an error."""

    def __init__(self, sync_once: Callable[[], dict[str, int]], *, seconds: float) -> None:
        self.sync_once = sync_once
        self.seconds = seconds
        self.status = SyncStatus()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lake-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                copied = self.sync_once()
                for table, n in copied.items():
                    self.status.inserted[table] = self.status.inserted.get(table, 0) + n
                if any(copied.values()):
                    log.info("lake -> warehouse: %s", ", ".join(f"{t} +{n}" for t, n in copied.items() if n))
                self.status.last_ok = time.time()
                self.status.last_error = None
            except Exception as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("lake -> warehouse sync failed (retrying in %.0f s)", self.seconds)
            self.status.runs += 1
            self._stop.wait(self.seconds)


class Dashboard:
    """Pages and JSON over a warehouse; ``handle(path)`` -> (status, content type, body)."""

    def __init__(
        self,
        warehouse: Queryable,
        *,
        refresh_seconds: int = DEFAULT_REFRESH_SECONDS,
        sync: LakeSync | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.data = DashboardData(warehouse.query)
        self.refresh_seconds = refresh_seconds
        self.sync = sync

    def handle(self, raw_path: str) -> tuple[int, str, bytes, dict[str, str]]:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        partial = parse_qs(parts.query).get("partial", ["0"])[0] == "1"
        if path == "/":
            return self._redirect("/high-risk")
        if path == "/healthz":
            return self._json(self.health())
        if path.startswith("/api/"):
            return self._api(path.removeprefix("/api/"))
        if path == "/patient":
            key = self.data.top_patient_key()
            if key is None:
                return self._html(
                    "patient_detail",
                    "Patient detail",
                    pages.empty_state("patients"),
                    "/api/high-risk",
                    partial=partial,
                )
            # Keep the query: the refresh script's ?partial=1 must survive the redirect.
            return self._redirect(f"/patient/{key}" + (f"?{parts.query}" if parts.query else ""))
        if path.startswith("/patient/"):
            key = path.removeprefix("/patient/")
            try:
                body = pages.patient(self.data.patient(key, identify=True), self.data.patient_choices())
            except NotFound:
                return self._html(
                    "patient_detail",
                    "Patient not found",
                    pages.not_found(key),
                    "/api/high-risk",
                    partial=partial,
                    status=HTTPStatus.NOT_FOUND,
                )
            return self._html(
                "patient_detail", "Patient detail", body, f"/api/patient/{key}", partial=partial
            )
        routes: dict[str, tuple[str, str, Callable[[], str]]] = {
            "/high-risk": ("high_risk", "High-risk patients", lambda: pages.high_risk(self.data.high_risk())),
            "/wards": ("ward_overview", "Ward overview", lambda: pages.wards(self.data.wards())),
            "/trends": ("hospital_trends", "Hospital-wide trends", lambda: pages.trends(self.data.trends())),
        }
        if path in routes:
            page_id, title, render = routes[path]
            return self._html(page_id, title, render(), f"/api{path}", partial=partial)
        return self._text(HTTPStatus.NOT_FOUND, "not found\n")

    def _api(self, name: str) -> tuple[int, str, bytes, dict[str, str]]:
        if name.startswith("patient/"):
            try:
                return self._json(self.data.patient(name.removeprefix("patient/")))
            except NotFound:
                return self._json({"error": "no such patient"}, status=HTTPStatus.NOT_FOUND)
        getters: dict[str, Callable[[], dict[str, Any]]] = {
            "high-risk": self.data.high_risk,
            "wards": self.data.wards,
            "trends": self.data.trends,
        }
        if name not in getters:
            return self._json(
                {"error": f"no such endpoint; one of {sorted(getters)} or patient/<key>"}, status=404
            )
        return self._json(getters[name]())

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": True}
        try:
            self.warehouse.query("SELECT 1 AS one")
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        if self.sync is not None:
            st = self.sync.status
            out["sync"] = {
                "runs": st.runs,
                "last_ok": st.last_ok,
                "last_error": st.last_error,
                "inserted": st.inserted,
            }
        return out

    def _html(
        self,
        page_id: str,
        title: str,
        body: str,
        data_url: str,
        *,
        partial: bool,
        status: int = HTTPStatus.OK,
    ) -> tuple[int, str, bytes, dict[str, str]]:
        html = (
            body
            if partial
            else layout.page(
                title=title,
                active=page_id,
                body=body,
                refresh_seconds=self.refresh_seconds,
                data_url=data_url,
            )
        )
        return status, "text/html; charset=utf-8", html.encode(), {}

    @staticmethod
    def _json(doc: dict[str, Any], status: int = HTTPStatus.OK) -> tuple[int, str, bytes, dict[str, str]]:
        return status, "application/json", json.dumps(jsonable(doc), indent=1).encode(), {}

    @staticmethod
    def _text(status: int, text: str) -> tuple[int, str, bytes, dict[str, str]]:
        return status, "text/plain; charset=utf-8", text.encode(), {}

    @staticmethod
    def _redirect(to: str) -> tuple[int, str, bytes, dict[str, str]]:
        return HTTPStatus.FOUND, "text/plain; charset=utf-8", b"", {"Location": to}


def make_handler(dashboard: Dashboard, *, hosts: frozenset[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "VitalsLakeDashboard/1"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            text = "text/plain; charset=utf-8"
            status: int
            headers: dict[str, str]
            if host_name(self.headers.get("Host")) not in hosts:
                log.warning(
                    "refused a request for host %r (allowed: %s)", self.headers.get("Host"), sorted(hosts)
                )
                status, ctype, body, headers = HTTPStatus.MISDIRECTED_REQUEST, text, b"unknown host\n", {}
            else:
                try:
                    status, ctype, body, headers = dashboard.handle(self.path)
                except Exception:
                    # The details go to the log under a reference; the body names nothing internal.
                    reference = uuid.uuid4().hex[:12]
                    log.exception("error %s serving %s", reference, self.path)
                    status, ctype = HTTPStatus.INTERNAL_SERVER_ERROR, text
                    body, headers = f"internal error (reference {reference})\n".encode(), {}
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in {**SECURITY_HEADERS, **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s - %s", self.address_string(), format % args)

    return Handler


class DashboardServer:
    """``start()`` serves in a thread; ``stop()`` shuts the server and the sync down cleanly."""

    def __init__(
        self, dashboard: Dashboard, *, host: str = "127.0.0.1", port: int = 0, extra_hosts: Iterable[str] = ()
    ) -> None:
        self.dashboard = dashboard
        self.hosts = allowed_hosts(host, extra_hosts)
        self.httpd = ThreadingHTTPServer((host, port), make_handler(dashboard, hosts=self.hosts))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> None:
        if self.dashboard.sync is not None:
            self.dashboard.sync.start()
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.dashboard.sync is not None:
            self.dashboard.sync.stop()
