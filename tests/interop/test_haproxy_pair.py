"""Two vpnd instances behind one HAProxy: scale-out and fail-over without a cluster of our own.

The deployment of the README's "Behind a load balancer" section, in network namespaces:

    client ns ×N ──veth── edge ns (HAProxy :443, leastconn, health checks, send-proxy-v2)
                          ├──veth── vpn-a ns (vpnd, pool 10.71.0.0/24)
                          └──veth── vpn-b ns (vpnd, pool 10.72.0.0/24)

Both daemons share the certificate and the users; each has its own pool, so an address tells
which instance serves a session. Four `vpnd client` processes, each on a client machine (namespace)
of its own, spread over both instances and ping
their gateways; then instance A is killed (SIGKILL: no goodbye to anyone). Its clients reconnect
on their own and land on B, and a new client goes to B as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import TestDaemon
from tests.support.haproxy import HAProxy, Route
from tests.support.netns import PYTHON, Lab, Namespace, require_root_netns
from tests.support.peers import require_program
from tests.support.vpn_client import Client
from vpnd.server.tls import make_self_signed

pytestmark = pytest.mark.interop

SERVER_NAME = "vpn.pair.test"
USERS = {f"user{number}": f"secret-{number}" for number in range(6)}
POOLS = {"a": IPv4Network("10.71.0.0/24"), "b": IPv4Network("10.72.0.0/24")}


def _daemon_config(cert: Path, key: Path, instance: str, balancer: str) -> dict[str, Any]:
    return {"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {
            name: {"password": secret} for name, secret in USERS.items()}}},
        "client-ip-pool": {instance.upper(): {"range": [str(POOLS[instance])]}},
        "gateway-address": _gateway(instance),
        "port": 443, "accept-proxy-protocol": True, "proxy-protocol-source": [f"{balancer}/32"],
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
    }}}


def _gateway(instance: str) -> str:
    return f"10.{71 if instance == 'a' else 72}.255.1"


def _instance_of(address: IPv4Address | None) -> str | None:
    return next((name for name, pool in POOLS.items() if address in pool), None)


@dataclass
class Pair:
    lab: Lab
    edge: Namespace
    daemons: dict[str, TestDaemon]
    haproxy: HAProxy
    cert: Path
    workdir: Path
    hosts: dict[str, tuple[Namespace, str]] = field(default_factory=dict)  # ifname -> (host, its address)

    def client(self, user: str) -> Client:
        """A client on a machine of its own, joined to the balancer by its own link."""
        host = self.lab.namespace()
        link = self.lab.veth(host, self.edge)
        ifname = f"pair{len(self.hosts) + 1}"
        self.hosts[ifname] = (host, str(link.address_a.ip))
        log_path = self.workdir / f"client-{ifname}.log"
        argv = [PYTHON, "-m", "vpnd.cli.main", "client", "--server", str(link.address_b.ip),
                "--sni", SERVER_NAME, "--ca", str(self.cert), "--user", user, "--password", USERS[user],
                "--ifname", ifname, "--no-default-route", "--keepalive", "5"]
        return Client(self.lab.start(host, *argv, log=log_path), log_path, self.lab, argv=argv)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    require_root_netns()
    program = require_program("haproxy")
    workdir = tmp_path_factory.mktemp("pair")
    cert, key = make_self_signed(workdir, SERVER_NAME)
    lab = Lab()
    haproxy: HAProxy | None = None
    try:
        edge = lab.namespace()
        daemons: dict[str, TestDaemon] = {}
        servers: list[str] = []
        for instance in POOLS:
            namespace = lab.namespace()
            link = lab.veth(edge, namespace)
            state = workdir / instance
            state.mkdir()
            daemons[instance] = TestDaemon(lab, namespace, _daemon_config(cert, key, instance,
                                                                          str(link.address_a.ip)), state)
            servers.append(f"{link.address_b.ip}:443")
        for daemon in daemons.values():
            daemon.start()
        for daemon in daemons.values():
            daemon.wait_listening()
        haproxy = HAProxy(program, workdir / "haproxy", [Route(
            "sstp", 443, 0, send_proxy="v2", bind="0.0.0.0", servers=tuple(servers), check=True,
        )], namespace_prefix=edge.command())
        haproxy.start()
        yield Pair(lab, edge, daemons, haproxy, cert, workdir)
    finally:
        if haproxy is not None:
            haproxy.stop()
        lab.cleanup()
    lab.assert_clean()


def _ping(pair: Pair, client: Client) -> bool:
    assert client.peer is not None and client.ifname is not None
    host = pair.hosts[client.ifname][0]
    done = host.run(PYTHON, "-m", "tests.support.ping", str(client.peer), "2", client.ifname, timeout=15)
    return done.stdout.strip() == "2"


def test_sessions_spread_over_both_instances_and_survive_the_loss_of_one(pair: Pair) -> None:
    clients = [pair.client(f"user{number}") for number in range(4)]
    for client in clients:
        client.wait_connected(30)
    served = {client.ifname: _instance_of(client.address) for client in clients}
    # Least connections: two sessions on each instance, each with an address of that instance's pool.
    assert sorted(served.values()) == ["a", "a", "b", "b"], served
    for client in clients:
        assert str(client.peer) == _gateway(served[client.ifname] or ""), client.log()
        assert _ping(pair, client), client.log()
    for instance, daemon in pair.daemons.items():
        active = [row for row in daemon.statistics()["sessions"] if row["state"] == "active"]
        assert len(active) == 2 and {_instance_of(IPv4Address(row["ip"])) for row in active} == {instance}
        # The daemon sees each client machine's own address (PROXY v2), not HAProxy's.
        expected = {pair.hosts[c.ifname][1] for c in clients if c.ifname and served[c.ifname] == instance}
        assert {row["calling-sid"] for row in active} == expected

    process = pair.daemons["a"].process
    assert process is not None
    process.kill()  # no Call Disconnect, no FIN from a clean shutdown: the instance is just gone
    process.wait(10)
    pair.daemons["a"].process = None

    moved = [client for client in clients if served[client.ifname] == "a"]
    for client in moved:
        client.wait_log(r"connected: 10\.72\.", timeout=60)
        client.wait_connected(1)
    late = pair.client("user4")
    late.wait_connected(30)
    assert _instance_of(late.address) == "b"
    for client in [*moved, late]:
        assert _ping(pair, client), client.log()
    active = [row for row in pair.daemons["b"].statistics()["sessions"] if row["state"] == "active"]
    assert len(active) == 5
    assert "vpnd0" in pair.haproxy.log() and "DOWN" in pair.haproxy.log(), pair.haproxy.log()
    # HAProxy's health checks (PROXY v2 LOCAL) were served and counted, not logged as sessions.
    survivor = pair.daemons["b"]
    assert survivor.statistics()["statistics"]["counters"].get("proxy_health_checks", 0) > 0
    assert "session closed" not in "".join(line for line in survivor.log().splitlines(keepends=True)
                                           if " - - " in line)
    for client in [*clients, late]:
        assert client.stop() is not None
