"""The dashboard's HTTP exposure: Host checked (DNS rebinding), generic errors, security headers. A real
server over a real (empty, in-memory) DuckDB warehouse, spoken to over a socket."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from dashboard.server import Dashboard, DashboardServer, allowed_hosts, host_name
from warehouse.duck import DuckWarehouse


@pytest.fixture
def served() -> Iterator[tuple[DashboardServer, DuckWarehouse]]:
    warehouse = DuckWarehouse(":memory:")
    warehouse.ensure()
    server = DashboardServer(Dashboard(warehouse, refresh_seconds=0), extra_hosts=["vitals.ward7.example"])
    server.start()
    try:
        yield server, warehouse
    finally:
        server.stop()
        warehouse.close()


def _get(server: DashboardServer, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    address, port = server.httpd.server_address[:2]
    conn = http.client.HTTPConnection(str(address), port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host.format(port=port))
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "vitals.ward7.example"]
)
def test_the_bind_address_loopback_and_allowed_names_are_served(served, host):
    server, _ = served
    status, headers, _ = _get(server, "/healthz", host)
    assert status == 200
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    "host", ["attacker.example:{port}", "127.0.0.1.attacker.example", "", "[::2]:{port}"]
)
def test_any_other_host_is_refused_before_any_data_is_read(served, host):
    server, _ = served
    status, headers, body = _get(server, "/api/high-risk", host)
    assert status == 421 and body == b"unknown host\n"
    assert headers["x-content-type-options"] == "nosniff"


def test_an_error_answers_a_generic_body_and_logs_the_details(served, caplog):
    server, warehouse = served
    warehouse.close()  # every query now fails inside DuckDB
    status, headers, body = _get(server, "/api/high-risk", "127.0.0.1:{port}")
    assert status == 500 and body.startswith(b"internal error (reference ")
    reference = body.decode().split("reference ")[1].rstrip(")\n")
    assert "duckdb" not in body.decode().lower() and "Error" not in body.decode()
    assert headers["x-content-type-options"] == "nosniff"
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the details are in the log, under the reference


def test_host_names_parse_ports_and_brackets():
    assert host_name("Example.org:8050") == "example.org"
    assert host_name("[::1]:8050") == "::1" and host_name("::1") == "::1"
    assert host_name(None) is None and host_name("") is None
    assert allowed_hosts("0.0.0.0") == {"localhost", "127.0.0.1", "::1"}  # any-address: not a name
    assert "10.0.0.5" in allowed_hosts("10.0.0.5", ["Ward.Example"]) and "ward.example" in allowed_hosts(
        "10.0.0.5", ["Ward.Example"]
    )
