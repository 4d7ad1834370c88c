"""The whole local stack: Tansu + the Pub/Sub emulator with the project's topics, as one context manager.

``<run_dir>/stack.json`` records ports and PIDs so that ``python -m harness.stack down`` can stop the
services by process group even when the process that started them was killed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

from harness.stack.process import (
    StackError,
    cmdline,
    group_members,
    port_open,
    stop_process_group,
)
from harness.stack.services import PubSubEmulator, TansuBroker
from pipelines.pubsub_clients import ACK_DEADLINE_SECONDS, ensure_subscription, ensure_topic
from vitals_lake import contract as c
from vitals_lake.config import LOCAL_PROJECT, KafkaSettings, PubSubSettings

STATE_FILE = "stack.json"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class LocalStack:
    """Tansu and the Pub/Sub emulator, with topic ``patient-vitals`` (Kafka, 4 partitions) and Pub/Sub topic
    ``patient-vitals`` + pull subscription ``patient-vitals-beam``.

    Use as a context manager; everything is stopped on exit, on an exception and at interpreter exit.
    With ``handle_signals=True`` (CLI / top-level scripts only) SIGTERM and SIGHUP also stop it.
    """

    def __init__(
        self,
        run_dir: Path | str,
        *,
        project: str = LOCAL_PROJECT,
        kafka_port: int | None = None,
        pubsub_port: int | None = None,
        kafka_partitions: int = 4,
        start_timeout: float = 30.0,
        handle_signals: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.project = project
        self.kafka_partitions = kafka_partitions
        self.start_timeout = start_timeout
        self.tansu = TansuBroker(self.run_dir, port=kafka_port)
        self.emulator = PubSubEmulator(self.run_dir, port=pubsub_port)
        self._handle_signals = handle_signals
        self._old_handlers: dict[int, Any] = {}
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._started:
            return self
        running = running_services(self.run_dir)
        if running:
            raise StackError(
                f"a stack from {self.state_path} is still running ({', '.join(running)}): "
                f"python -m harness.stack down --run-dir {self.run_dir}"
            )
        # Fail on a missing prerequisite before anything runs, so nothing is left behind.
        self.tansu.check_prerequisites()
        self.emulator.check_prerequisites()
        self._started = True
        atexit.register(self.stop)
        if self._handle_signals:
            self._install_signal_handlers()
        try:
            self.emulator.launch()  # the JVM takes longest: let it boot while Tansu starts
            self.tansu.start(self.start_timeout)
            self.emulator.wait_ready(self.start_timeout)
            self.tansu.create_topic(c.VITALS_TOPIC, self.kafka_partitions)
            self.create_pubsub_topic(c.VITALS_TOPIC, subscriptions=(c.VITALS_SUBSCRIPTION,))
            self.create_pubsub_topic(c.ALERTS_TOPIC)  # the pipeline publishes alert events here
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both services (process groups, SIGKILL after ``timeout``). Harmless when called twice."""
        with self._lock:
            if not self._started or self._stopped:
                return
            self._stopped = True
        errors = []
        for service in (self.tansu, self.emulator):
            try:
                service.stop(timeout)
            except (StackError, OSError) as exc:  # stop the other one regardless
                errors.append(f"{service.name}: {exc}")
        self._mark_stopped()
        atexit.unregister(self.stop)
        self._restore_signal_handlers()
        if errors:
            raise StackError("; ".join(errors))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- settings for clients --------------------------------------------------------------------------
    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.tansu.bootstrap)

    @property
    def pubsub(self) -> PubSubSettings:
        return PubSubSettings(project=self.project, emulator_host=self.emulator.host_port)

    def env(self) -> dict[str, str]:
        """Environment variables that point child processes at this stack."""
        return {
            "VITALS_KAFKA_BOOTSTRAP": self.tansu.bootstrap,
            "PUBSUB_EMULATOR_HOST": self.emulator.host_port,
            "VITALS_GCP_PROJECT": self.project,
        }

    @property
    def alerts_topic_path(self) -> str:
        return f"projects/{self.project}/topics/{c.ALERTS_TOPIC}"

    # --- extra resources ---------------------------------------------------------------------------------
    def create_kafka_topic(self, name: str, partitions: int = 4) -> KafkaSettings:
        self.tansu.create_topic(name, partitions)
        return KafkaSettings(bootstrap_servers=self.tansu.bootstrap, topic=name)

    def create_pubsub_topic(
        self,
        topic: str,
        *,
        subscriptions: Iterable[str] = (),
        ack_deadline_seconds: int = ACK_DEADLINE_SECONDS,
    ) -> PubSubSettings:
        """Create a Pub/Sub topic and pull subscriptions; returns settings naming the first subscription."""
        subs = tuple(subscriptions)
        kw = {"subscription": subs[0]} if subs else {}
        settings = PubSubSettings(
            project=self.project, topic=topic, emulator_host=self.emulator.host_port, **kw
        )
        ensure_topic(settings)
        for sub in subs:
            ensure_subscription(settings, sub, ack_deadline_seconds=ack_deadline_seconds)
        return settings

    def create_pubsub_subscription(
        self,
        subscription: str,
        *,
        topic: str = c.VITALS_TOPIC,
        ack_deadline_seconds: int = ACK_DEADLINE_SECONDS,
    ) -> PubSubSettings:
        settings = PubSubSettings(
            project=self.project,
            topic=topic,
            subscription=subscription,
            emulator_host=self.emulator.host_port,
        )
        ensure_subscription(settings, ack_deadline_seconds=ack_deadline_seconds)
        return settings

    # --- state file ----------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    def _write_state(self) -> None:
        services = {}
        for s in (self.tansu, self.emulator):
            services[s.name] = {
                "pid": s.pid,
                "pgid": s.pid,  # started with start_new_session: the group id is the leader's pid
                "host": s.host,
                "port": s.port,
                "marker": s.marker,
                "log": str(s.log_path),
            }
        state = {
            "version": 1,
            "run_dir": str(self.run_dir),
            "project": self.project,
            "owner_pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stopped_at": None,
            "services": services,
            "env": self.env(),
        }
        _write_json(self.state_path, state)

    def _mark_stopped(self) -> None:
        state = read_state(self.run_dir)
        if state is not None and state.get("owner_pid") == os.getpid():
            state["stopped_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            _write_json(self.state_path, state)

    # --- signals -----------------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _STOP_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Unwind like Ctrl-C does, so `with` blocks and finally clauses run and the stack is stopped.
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


# --- stopping and inspecting a stack from its state file (another process started it) -------------------
@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int
    port: int
    running: bool  # its process group holds a process whose command line is the service's
    listening: bool


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def read_state(run_dir: Path | str) -> dict[str, Any] | None:
    path = Path(run_dir) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise StackError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else None


def _own_members(info: dict[str, Any]) -> list[int]:
    """Members of the service's process group, only if one of them is really the service (PIDs get reused)."""
    members = group_members(int(info["pgid"]))
    if any(info["marker"] in cmdline(pid) for pid in members):
        return members
    return []


def stack_status(run_dir: Path | str) -> list[ServiceStatus]:
    state = read_state(run_dir)
    if state is None:
        return []
    return [
        ServiceStatus(
            name=name,
            pid=int(info["pid"]),
            port=int(info["port"]),
            running=bool(_own_members(info)),
            listening=port_open(info["host"], int(info["port"]), timeout=0.3),
        )
        for name, info in state.get("services", {}).items()
    ]


def running_services(run_dir: Path | str) -> list[str]:
    return [f"{s.name} pid {s.pid}" for s in stack_status(run_dir) if s.running]


def stop_stack(run_dir: Path | str, timeout: float = 10.0) -> list[str]:
    """Stop the services recorded in ``stack.json`` by process group; returns the names that were running."""
    state = read_state(run_dir)
    if state is None:
        return []
    stopped = []
    for name, info in state.get("services", {}).items():
        if _own_members(info):
            stop_process_group(int(info["pgid"]), timeout=timeout)
            stopped.append(name)
    if state.get("stopped_at") is None:
        state["stopped_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with contextlib.suppress(OSError):
            _write_json(Path(run_dir) / STATE_FILE, state)
    return stopped
