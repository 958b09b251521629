"""A real Prometheus scrapes a daemon with live sessions, and its HTTP API answers from vpnd's metrics.

The daemon authenticates through a private FreeRADIUS (accounting spool and dynamic
authorization on), with `vpn sstp prometheus` on 127.0.0.1:9101; Debian's Prometheus scrapes it
every second. All three run in the server namespace, `vpnd client` in the client namespace. Two
sessions come up and carry pings, a third login is rejected, one session is disconnected by a
RADIUS Disconnect-Request; each step is checked through Prometheus's queries, and every query of
the Grafana dashboard in packaging/ is run against the same Prometheus.

Needs root (namespaces, TUN), freeradius, radclient, prometheus and curl. About 40 s on a busy
2-core machine (set-up, the checks, and the namespaces taken down), most of it waiting for scrapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import E2E, GATEWAY, SERVER_NAME, USERS, server_config
from tests.support.daemon import TestDaemon
from tests.support.freeradius import FreeRadius, free_udp_ports, freeradius_in
from tests.support.netns import PYTHON, REPO, Lab, require_root_netns
from tests.support.peers import require_program
from tests.support.prometheus import Prometheus
from tests.support.vpn_client import Client
from vpnd.server.tls import make_self_signed

pytestmark = pytest.mark.root

METRICS = "127.0.0.1:9101"
DAE_SECRET = "dae-metrics-secret"
DASHBOARD = REPO / "packaging" / "grafana-vpnd.json"
# alice and bob are RADIUS users; carol (a local name in the e2e users) is not, so she is rejected.
RADIUS_USERS = f"""\
alice   Cleartext-Password := "{USERS['alice']}"
bob     Cleartext-Password := "{USERS['bob']}"
"""


@dataclass
class MetricsLab:
    e2e: E2E
    radius: FreeRadius
    prometheus: Prometheus
    dae_port: int


@pytest.fixture(scope="module")
def metrics_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsLab]:
    require_root_netns()
    for program in ("freeradius", "radclient"):
        require_program(program)
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    cert, key = make_self_signed(workdir, SERVER_NAME)
    lab = Lab()
    radius: FreeRadius | None = None
    try:
        server = lab.namespace()
        client = lab.namespace()
        veth = lab.veth(server, client)
        radius = freeradius_in(server, workdir, RADIUS_USERS)
        radius.start()
        dae_port = free_udp_ports(1)[0]
        config: dict[str, Any] = server_config(cert, key)
        sstp = config["vpn"]["sstp"]
        sstp["authentication"] = {"mode": "radius", "radius": {
            "server": {"127.0.0.1": {"key": radius.secret, "port": radius.auth_port,
                                     "acct-port": radius.acct_port}},
            "nas-identifier": "vpnd-metrics",
            "dynamic-author": {"server": "127.0.0.1", "port": dae_port, "key": DAE_SECRET},
        }}
        host, port = METRICS.split(":")
        sstp["prometheus"] = {"listen-address": host, "port": int(port)}
        daemon = TestDaemon(lab, server, config, workdir, state_dir=workdir / "state")
        daemon.start()
        daemon.wait_listening()
        prometheus = Prometheus.start(lab, server, workdir / "prometheus", [METRICS])
        yield MetricsLab(E2E(lab, server, client, veth, daemon, cert, cert, workdir), radius, prometheus,
                         dae_port)
    finally:
        if radius is not None:
            radius.cleanup()
        lab.cleanup()
    lab.assert_clean()


def _ping_through(e2e: E2E, client: Client, count: int) -> None:
    assert client.ifname is not None
    done = e2e.client.run(PYTHON, "-m", "tests.support.ping", str(GATEWAY), str(count), client.ifname)
    assert done.stdout.strip() == str(count), done.stdout + done.stderr


def test_prometheus_reads_sessions_radius_accounting_and_dae(metrics_lab: MetricsLab) -> None:
    e2e, prometheus = metrics_lab.e2e, metrics_lab.prometheus
    alice = e2e.start_client("alice", "--ifname", "sstpc0", "--no-default-route")
    bob = e2e.start_client("bob", "--ifname", "sstpc1", "--no-default-route", "--once")
    try:
        alice.wait_connected()
        bob.wait_connected()
        for client in (alice, bob):
            _ping_through(e2e, client, 3)
        rejected = e2e.run_client("carol")
        assert rejected.returncode != 0, rejected.stdout + rejected.stderr

        prometheus.wait_value('up{job="vpnd"}', 1)
        prometheus.wait_value('vpnd_sessions{state="active"}', 2)
        prometheus.wait_value('vpnd_refusals_total{cause="auth_failed"}', 1)
        assert prometheus.value('vpnd_sessions{state="starting"}') == 0
        assert prometheus.value("vpnd_session_setups_total") == 2
        assert prometheus.value("vpnd_session_setup_duration_seconds_count") == 2
        assert prometheus.value('vpnd_session_setup_failures_total{cause="auth_failed"}') == 1
        for direction in ("rx", "tx"):
            assert (prometheus.value(f'vpnd_session_bytes_total{{direction="{direction}"}}') or 0) > 0
            # 3 echo requests from each client, 3 replies to each
            assert (prometheus.value(f'vpnd_session_packets_total{{direction="{direction}"}}') or 0) >= 6
        pool = e2e.daemon.statistics()["statistics"]["pools"]["E2E"]
        assert prometheus.value('vpnd_pool_size{pool="E2E"}') == pool["total"]
        assert prometheus.value('vpnd_pool_used{pool="E2E"}') == 2
        assert prometheus.value("vpnd_workers") == 1
        assert prometheus.value("count(vpnd_build_info)") == 1

        server = '{server="127.0.0.1"}'
        assert prometheus.value(f"vpnd_radius_state{server}") == 1
        assert prometheus.value('vpnd_radius_replies_total{server="127.0.0.1",code="access_accept"}') == 2
        assert prometheus.value('vpnd_radius_replies_total{server="127.0.0.1",code="access_reject"}') == 1
        assert (prometheus.value(f"vpnd_radius_requests_total{server}") or 0) >= 3
        assert prometheus.value(f"vpnd_radius_timeouts_total{server}") == 0
        assert (prometheus.value(f"vpnd_radius_request_duration_seconds_count{server}") or 0) >= 3
        assert prometheus.value(f"sum(vpnd_radius_dropped_replies_total{server})") == 0
        # Accounting-On and two Starts were acknowledged: nothing waits in the spool.
        prometheus.wait_value("vpnd_accounting_spool_records", 0)
        assert (prometheus.value("vpnd_accounting_records_sent_total") or 0) >= 3
        assert prometheus.value("vpnd_accounting_spool_oldest_age_seconds") == 0

        answer = e2e.server.run("radclient", "-r", "1", "-t", "3", f"127.0.0.1:{metrics_lab.dae_port}",
                                "disconnect", DAE_SECRET, input='User-Name = "bob"\n', timeout=20)
        assert "Disconnect-ACK" in answer.stdout + answer.stderr, answer.stdout + answer.stderr
        prometheus.wait_value('vpnd_dae_requests_total{type="disconnect",result="ack"}', 1)
        prometheus.wait_value('vpnd_sessions{state="active"}', 1)
        prometheus.wait_value('vpnd_pool_used{pool="E2E"}', 1)
        assert prometheus.value('vpnd_dae_requests_total{type="coa",result="nak"}') == 0
        assert prometheus.value('vpnd_session_bytes_total{direction="rx"}') is not None

        _check_dashboard(prometheus)
    finally:
        alice.stop()
        bob.stop()


def _check_dashboard(prometheus: Prometheus) -> None:
    """Every query of the Grafana dashboard runs, and every metric it reads is exported."""
    exported = set(prometheus.label_values("__name__"))
    panels = json.loads(DASHBOARD.read_text())["panels"]
    expressions = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    assert len(expressions) >= 20
    for expression in expressions:
        query = expression.replace("$__rate_interval", "10s").replace("$instance", ".*")
        prometheus.query(query)  # fails on a query Prometheus refuses
        for name in re.findall(r"\b(?:vpnd|process)_[a-z_]+\b", query):
            assert name in exported, f"the dashboard reads {name}, which is not exported"
