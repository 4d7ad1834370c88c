"""Child processes in their own session: started with a log file, probed for readiness, stopped as a group.

Each service runs in a new session (``start_new_session=True``) so that a stop reaches everything it
forked, and so that a Ctrl-C in the terminal does not kill it behind the owner's back: the owner
stops it in order (SIGTERM, wait, SIGKILL, reap).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from harness.waiting import WaitTimeout, wait_until

_PROC = Path("/proc")


class StackError(RuntimeError):
    """A local service could not be started, probed or stopped."""


class MissingPrerequisite(StackError):
    """Something the local stack needs is not installed; the message says what to install."""


class ServiceExited(StackError):
    """The service process exited before it became ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it; a small race with other programs remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on the port and a server could bind it again."""
    if port_open(host, port, timeout=0.2):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Servers bind with SO_REUSEADDR; without it a TIME_WAIT connection would look like "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a process from /proc, or None when it does not exist."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def pid_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie (orphaned zombies linger if PID 1 never reaps)."""
    if _PROC.is_dir():
        st = _stat(pid)
        return st is not None and st[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    if not _PROC.is_dir():  # not Linux: can only tell whether the group exists at all
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
        return [pgid]
    members = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def cmdline(pid: int) -> str:
    """The command line of a process, or '' when it cannot be read."""
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(pgid: int, timeout: float, leader: subprocess.Popen[bytes] | None) -> bool:
    def gone() -> bool:
        if leader is not None:
            leader.poll()  # reaps our own child so it does not stay a zombie
        return (leader is None or leader.returncode is not None) and not group_members(pgid)

    try:
        wait_until(gone, timeout=timeout, interval=0.02, what=f"process group {pgid} to exit")
    except WaitTimeout:
        return False
    return True


def stop_process_group(
    pgid: int, *, timeout: float = 10.0, leader: subprocess.Popen[bytes] | None = None
) -> bool:
    """SIGTERM the group, wait, then SIGKILL what is left; reap ``leader`` if it is our child.

    Returns True when the group had to be killed (it ignored SIGTERM for ``timeout`` seconds).
    """
    _signal_group(pgid, signal.SIGTERM)
    if _wait_gone(pgid, timeout, leader):
        return False
    _signal_group(pgid, signal.SIGKILL)
    if not _wait_gone(pgid, 5.0, leader):
        raise StackError(f"process group {pgid} survived SIGKILL: members {group_members(pgid)}")
    return True


class ManagedProcess:
    """One service process: its own session, output appended to a log file, stopped as a group."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        if self._proc is not None:
            raise StackError(f"{self.name} was already started (pid {self._proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # own process group: a stop reaches its children; Ctrl-C does not
                close_fds=True,
            )

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Poll ``probe`` until it is true; fail with the log tail if the process exits or time runs out."""
        proc = self._proc
        if proc is None:
            raise StackError(f"{self.name} was not started")

        def ready() -> bool:
            rc = proc.poll()
            if rc is not None:
                raise ServiceExited(
                    f"{self.name} exited with code {rc} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            return probe()

        try:
            wait_until(ready, timeout=timeout, interval=0.05, what=f"{self.name} to be ready")
        except WaitTimeout:
            self.stop()
            raise StackError(
                f"{self.name} was not ready after {timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}"
            ) from None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the whole process group and reap the leader. Harmless when already stopped."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is not None and not group_members(proc.pid):
            return
        stop_process_group(proc.pid, timeout=timeout, leader=proc)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
