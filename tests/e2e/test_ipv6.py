"""IPv6 end to end: the daemon in one namespace, `vpnd client` in another, one veth between them.

The daemon announces a /64 per session from its pool with its own router advertisements and
delegates a /56 by DHCPv6; the client takes its address by SLAAC, its DNS from RDNSS and puts
the first /64 of the delegated prefix on a LAN interface. Traffic goes from the client and from
the host inside the delegated prefix to an address on the server's side. Dual-stack and
IPv6-only sessions; afterwards nothing is left (no TUN, no route, no lease).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import TestDaemon
from tests.support.netns import PYTHON, Lab, Namespace, Veth, require_root_netns
from tests.support.transfer import transfer
from tests.support.vpn_client import Client
from vpnd.server.tls import make_self_signed

SERVER_NAME = "vpn6.e2e.test"
USERS = {"alice": "alice-6", "bob": "bob-6"}
PREFIX_POOL = IPv6Network("2001:db8:66::/48")
DELEGATE_POOL = IPv6Network("2001:db8:6600::/40")
SERVER_SIDE = IPv6Address("2001:db8:ffff::1")  # an address on the server's side of the tunnel
DNS6 = IPv6Address("2001:db8::53")
SLAAC = re.compile(r"IPv6 address (\S+) via (\S+) \(SLAAC\)")
DELEGATED = re.compile(r"delegated prefix (\S+): (\S+) on (\S+)")
STREAM_MIB = 20


def server_config(cert: Path, key: Path) -> dict[str, Any]:
    return {"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {u: {"password": p} for u, p in USERS.items()}}},
        "client-ip-pool": {"V4": {"range": ["10.67.0.0/24"]}}, "default-pool": "V4",
        "client-ipv6-pool": {"V6": {"prefix": {str(PREFIX_POOL): {"mask": 64}},
                                    "delegate": {str(DELEGATE_POOL): {"delegation-prefix": 56}}}},
        "default-ipv6-pool": "V6",
        "gateway-address": "10.67.255.1",
        "name-server": ["10.67.255.53", str(DNS6)],
        "ppp-options": {"ipv6": "prefer"},
        "port": 443,
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
    }}}


@dataclass
class Lab6:
    lab: Lab
    server: Namespace
    client: Namespace
    veth: Veth
    daemon: TestDaemon
    cert: Path
    workdir: Path
    clients: list[Client] = field(default_factory=list)

    def start_client(self, user: str, ifname: str, *extra: str) -> Client:
        log_path = self.workdir / f"{ifname}.log"
        argv = [PYTHON, "-m", "vpnd.cli.main", "client", "--server", str(self.veth.address_a.ip),
                "--sni", SERVER_NAME, "--ca", str(self.cert), "--user", user, "--password", USERS[user],
                "--ifname", ifname, "--resolv-conf", str(self.workdir / f"{ifname}.resolv.conf"), *extra]
        client = Client(self.lab.start(self.client, *argv, log=log_path), log_path, self.lab, argv=argv)
        self.clients.append(client)
        return client


@pytest.fixture(scope="module")
def lab6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab6]:
    require_root_netns()
    workdir = tmp_path_factory.mktemp("e2e6")
    cert, key = make_self_signed(workdir, SERVER_NAME)
    lab = Lab()
    try:
        server, client = lab.namespace(), lab.namespace()
        veth = lab.veth(server, client)
        server.run("ip", "-6", "addr", "add", f"{SERVER_SIDE}/128", "dev", "lo", check=True)
        # The client's LAN: a veth pair inside its namespace (this kernel has no dummy interfaces).
        client.run("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p", check=True)
        for end in ("lan0", "lan0p"):
            client.run("ip", "link", "set", end, "up", check=True)
        daemon = TestDaemon(lab, server, server_config(cert, key), workdir)
        daemon.start()
        daemon.wait_listening()
        yield Lab6(lab, server, client, veth, daemon, cert, workdir)
    finally:
        lab.cleanup()
    lab.assert_clean()


def ping6(namespace: Namespace, target: IPv6Address, source: IPv6Address | None = None) -> int:
    done = namespace.run(PYTHON, "-m", "tests.support.ping", str(target), "3", "", str(source or ""),
                         timeout=30)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def addresses(namespace: Namespace, ifname: str) -> set[str]:
    shown = namespace.ip_json("-6", "addr", "show", "dev", ifname)
    return {f"{a['local']}/{a['prefixlen']}" for a in shown[0]["addr_info"]} if shown else set()


def session_row(lab6: Lab6, user: str) -> dict[str, Any]:
    rows = [r for r in lab6.daemon.statistics()["sessions"]
            if r["username"] == user and r["state"] == "active"]
    assert len(rows) == 1, rows
    return rows[0]


def test_dual_stack_session_with_slaac_rdnss_and_a_delegated_prefix(lab6: Lab6) -> None:
    client = lab6.start_client("alice", "v6dual", "--delegated-prefix-interface", "lan0")
    client.wait_connected()
    slaac = client.wait_log(SLAAC)
    address = IPv6Interface(slaac[1])
    delegated = client.wait_log(DELEGATED)
    prefix, lan_address = IPv6Network(delegated[1]), IPv6Interface(delegated[2])

    # SLAAC: a /64 of the pool, with the interface identifier negotiated by IPV6CP.
    assert address.network.subnet_of(PREFIX_POOL) and address.network.prefixlen == 64
    assert str(address) in addresses(lab6.client, "v6dual")
    assert prefix.subnet_of(DELEGATE_POOL) and prefix.prefixlen == 56
    assert lan_address.ip in prefix and str(lan_address) in addresses(lab6.client, "lan0")
    # RDNSS went into the resolver file beside the IPv4 server from IPCP.
    resolv = (lab6.workdir / "v6dual.resolv.conf").read_text()
    assert f"nameserver {DNS6}" in resolv and "nameserver 10.67.255.53" in resolv
    # The daemon shows both, and routes the delegated prefix via the client's link-local address.
    row = session_row(lab6, "alice")
    assert row["ip6"] == str(address.network) and row["ip6-dp"] == str(prefix) and row["ip"]
    routes = {r["dst"]: r for r in lab6.server.ip_json("-6", "route", "show", "dev", row["ifname"])}
    assert routes[str(prefix)]["gateway"].startswith("fe80::")

    # Traffic: from the client's SLAAC address and from the host in the delegated prefix.
    assert ping6(lab6.client, SERVER_SIDE) == 3
    assert ping6(lab6.client, SERVER_SIDE, source=lan_address.ip) == 3
    assert ping6(lab6.server, address.ip) == 3
    transfer(lab6.client, lab6.server, SERVER_SIDE, STREAM_MIB, seed=61)
    transfer(lab6.server, lab6.client, lan_address.ip, STREAM_MIB, seed=62)
    assert client.stop() == 0


def test_ipv6_only_session(lab6: Lab6) -> None:
    client = lab6.start_client("bob", "v6only", "--no-ipv4", "--no-prefix-delegation")
    slaac = client.wait_log(SLAAC)
    address = IPv6Interface(slaac[1])
    assert "connected:" not in client.log()  # no IPv4 at all
    row = session_row(lab6, "bob")
    assert row["ip"] is None and row["ip6"] == str(address.network) and row["ip6-dp"] is None
    assert ping6(lab6.client, SERVER_SIDE) == 3
    transfer(lab6.client, lab6.server, SERVER_SIDE, 5, seed=63)
    assert client.stop() == 0


def test_a_spoofed_ipv6_source_is_dropped(lab6: Lab6) -> None:
    client = lab6.start_client("alice", "v6spoof", "--no-prefix-delegation")
    client.wait_log(SLAAC)
    before = lab6.daemon.statistics()["statistics"]["counters"].get("dropped_spoofed_source", 0)
    # An address outside the session's prefix, put on the client's LAN and used as source.
    lab6.client.run("ip", "-6", "addr", "add", "2001:db8:bad::1/128", "dev", "lan0", "nodad", check=True)
    try:
        assert ping6(lab6.client, SERVER_SIDE, source=IPv6Address("2001:db8:bad::1")) == 0
    finally:
        lab6.client.run("ip", "-6", "addr", "del", "2001:db8:bad::1/128", "dev", "lan0")
    after = lab6.daemon.statistics()["statistics"]["counters"].get("dropped_spoofed_source", 0)
    assert after - before >= 3
    assert client.stop() == 0


def test_nothing_is_left_behind(lab6: Lab6) -> None:
    for client in lab6.clients:
        client.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = lab6.daemon.statistics()
        if not data["sessions"]:
            break
        time.sleep(0.1)
    statistics = data["statistics"]
    assert not data["sessions"]
    assert statistics["ipv6-pools"]["V6"]["prefix"]["used"] == 0
    assert statistics["ipv6-pools"]["V6"]["delegate"]["used"] == 0
    assert statistics["pools"]["V4"]["used"] == 0
    assert not [name for name in lab6.server.links() if name.startswith("sstp")]
    assert not [name for name in lab6.client.links() if name.startswith("v6")]
    # The address from the delegated prefix went with the session.
    assert all(a.startswith("fe80") for a in addresses(lab6.client, "lan0"))
