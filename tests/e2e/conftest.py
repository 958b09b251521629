"""One lab per module: the daemon in a server namespace, clients in a client namespace, one veth.

Clients are `vpnd client` processes started in the client namespace. Everything is created under
random names and removed by name and PID at the end; the module then checks nothing is left.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tests.config.test_session import Pki, b64_der
from tests.support.daemon import TestDaemon
from tests.support.netns import PYTHON, Lab, Namespace, Veth, require_root_netns
from tests.support.vpn_client import Client
from vpnd.server.tls import make_self_signed

USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
POOL = "10.66.0.0/24"
GATEWAY = IPv4Address("10.66.255.1")
DNS = IPv4Address("10.66.255.53")
SERVER_NAME = "vpn.e2e.test"


def server_config(cert: Path, key: Path) -> dict[str, Any]:
    return {"vpn": {"sstp": {
        "authentication": {
            "local-users": {"username": {name: {"password": secret} for name, secret in USERS.items()}},
            # eap is offered first: clients that ask for pap or mschap-v2 Nak it (the fall-back path).
            "protocols": ["pap", "mschap-v2", "eap"],
        },
        "client-ip-pool": {"E2E": {"range": [POOL]}},
        "default-pool": "E2E",
        "gateway-address": str(GATEWAY),
        "name-server": [str(DNS)],
        "port": 443,
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
    }}}


@dataclass
class E2E:
    lab: Lab
    server: Namespace
    client: Namespace
    veth: Veth
    daemon: TestDaemon
    cert: Path
    other_cert: Path  # a certificate the server does not use
    workdir: Path
    users_ca: Pki | None = None  # the CA of local EAP-TLS client certificates
    _clients: int = 0
    _host_links: dict[str, str] = field(default_factory=dict)  # namespace name -> its veth end

    @property
    def server_address(self) -> str:
        return str(self.veth.address_a.ip)

    def client_argv(self, user: str, *extra: str, password: str | None = None,
                    server: str | None = None) -> list[str]:
        return [PYTHON, "-m", "vpnd.cli.main", "client", "--server", server or self.server_address,
                "--sni", SERVER_NAME, "--ca", str(self.cert), "--user", user,
                "--password", USERS[user] if password is None else password, *extra]

    def start_client(self, user: str, *extra: str, password: str | None = None,
                     host: Namespace | None = None) -> Client:
        """A client in the client namespace, or on ``host``: another client machine with its
        own link to the server (see ``another_host``)."""
        self._clients += 1
        log_path = self.workdir / f"client-{self._clients}.log"
        argv = self.client_argv(user, *extra, password=password, server=self._server_seen_from(host))
        process = self.lab.start(host or self.client, *argv, log=log_path)
        return Client(process, log_path, self.lab, argv=argv)

    def another_host(self) -> Namespace:
        """A second client machine joined to the server by a veth of its own."""
        host = self.lab.namespace()
        link = self.lab.veth(self.server, host)
        self._host_links[host.name] = link.b
        return host

    def _server_seen_from(self, host: Namespace | None) -> str | None:
        if host is None:
            return None
        return str(next(v.address_a.ip for v in self.lab.veths if v.b == self._host_links[host.name]))

    def run_client(self, user: str, *extra: str, password: str | None = None, timeout: float = 30,
                   host: Namespace | None = None) -> subprocess.CompletedProcess[str]:
        """A client with --once that is expected to end by itself (a refused connection)."""
        server = self._server_seen_from(host)
        argv = self.client_argv(user, "--once", *extra, password=password, server=server)
        return (host or self.client).run(*argv, timeout=timeout)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    require_root_netns()
    workdir = tmp_path_factory.mktemp("e2e")
    (workdir / "other").mkdir()
    cert, key = make_self_signed(workdir, SERVER_NAME)
    other_cert, _ = make_self_signed(workdir / "other", SERVER_NAME)
    lab = Lab()
    try:
        server = lab.namespace()
        client = lab.namespace()
        veth = lab.veth(server, client)
        users_ca = Pki()
        config = server_config(cert, key)
        # Local EAP-TLS is offered first to --auth eap clients; those without a certificate Nak it.
        config["pki"] = {"ca": {"users": {"certificate": b64_der(users_ca.ca)}}}
        config["vpn"]["sstp"]["authentication"]["eap-tls"] = {"ca-certificate": "users"}
        daemon = TestDaemon(lab, server, config, workdir)
        daemon.start()
        daemon.wait_listening()
        yield E2E(lab, server, client, veth, daemon, cert, other_cert, workdir, users_ca)
    finally:
        lab.cleanup()
    lab.assert_clean()
