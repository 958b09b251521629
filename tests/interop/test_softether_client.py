"""The real `vpnd client` process against SoftEther VPN Server 5.01, through a veth.

SoftEther runs in its own network namespace (tests/support/softether.py); the other end of its
veth pair sits in a client namespace made by a `Lab`, where `vpnd client` runs with a real TUN.
The client trusts exactly the certificate vpncmd exported and checks its name: ``--ca`` plus
``--sni`` with the certificate's common name (it has no SAN, and OpenSSL falls back to the CN);
a name the certificate does not carry is refused, so the check is real (no ``--no-verify``).

Per method (MS-CHAPv2, PAP): the client logs ``connected:`` with an address from SecureNAT's
DHCP range, the TUN holds that address with SecureNAT's gateway as its peer, ICMP echoes to the
gateway go out through the TUN and come back with the same payload; SIGTERM by PID ends the
client with exit 0 and the TUN goes, and SoftEther no longer lists the user's session. A wrong
password ends a ``--once`` client with a non-zero exit and "authentication failed".
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.netns import PYTHON, REPO, Lab, Namespace, namespaces, require_root_netns
from tests.support.peers import require_program
from tests.support.softether import SoftEtherServer
from tests.support.vpn_client import Client

pytestmark = [pytest.mark.interop, pytest.mark.root]

PING_COUNT = 3
VPND = REPO / ".venv" / "bin" / "vpnd"
VPND_CLIENT = [str(VPND), "client"] if VPND.exists() else [PYTHON, "-m", "vpnd.cli.main", "client"]

# Echo requests over a raw socket (there is no ping binary). Prints one line per echo: the
# sequence number and whether a reply with the same identifier, sequence and payload came back.
PING = r"""
import os, socket, struct, sys, time
def checksum(data):
    if len(data) % 2: data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF: total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
target, count = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF
for seq in range(1, count + 1):
    payload = os.urandom(48)
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    sock.sendto(struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload, (target, 0))
    deadline, answered = time.monotonic() + 3, False
    while not answered and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, (source, _) = sock.recvfrom(65535)
        except socket.timeout:
            break
        icmp = data[(data[0] & 15) * 4:]
        answered = source == target and icmp[0] == 0 and icmp[4:8] == struct.pack("!HH", ident, seq) \
            and icmp[8:] == payload
    print(seq, int(answered), flush=True)
"""


@dataclass
class Setup:
    lab: Lab
    client_ns: Namespace
    server: SoftEtherServer
    ca: Path
    workdir: Path
    runs: int = 0

    def client_argv(self, method: str, *extra: str, password: str | None = None) -> list[str]:
        return [*VPND_CLIENT, "--server", str(self.server.address), "--port", str(self.server.port),
                "--user", self.server.username,
                "--password", self.server.password if password is None else password,
                "--ca", str(self.ca), "--sni", self.server.cert_cn, "--auth", method,
                "--once", "--no-default-route", *extra]


def tun_links(namespace: Namespace) -> list[str]:
    return [name for name in namespace.links() if name.startswith("sstpc")]


def user_sessions(server: SoftEtherServer) -> list[str]:
    """SoftEther's own view: the session names of our user's sessions on hub DEFAULT."""
    output = server.vpncmd("SessionList", hub="DEFAULT")
    names: list[str] = []
    current = ""
    for line in output.splitlines():
        key, _, value = (part.strip() for part in line.partition("|"))
        if key == "Session Name":
            current = value
        elif key == "User Name" and value.lower() == server.username.lower():
            names.append(current)
    return names


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_program("vpnserver")
    require_program("vpncmd")
    require_root_netns()
    workdir = tmp_path_factory.mktemp("softether-client")
    lab = Lab()
    server: SoftEtherServer | None = None
    try:
        client_ns = lab.namespace()
        server = SoftEtherServer(client_netns=client_ns.name)
        server.start()
        ca = workdir / "softether.pem"
        ca.write_text(ssl.DER_cert_to_PEM_cert(server.server_cert_der))
        yield Setup(lab, client_ns, server, ca, workdir)
    finally:
        try:
            if server is not None:
                log = server.log_text()
                server.stop()
                if "[SSTP]" not in log:
                    print(f"SoftEther log (tail):\n{log[-4000:]}")
        finally:
            lab.cleanup()
    lab.assert_clean()
    assert server.netns not in namespaces()


def test_name_check_is_real(setup: Setup) -> None:
    # The same CA file with a name the certificate does not carry: refused in the handshake.
    argv = setup.client_argv("mschap-v2", "--sni", "not-" + setup.server.cert_cn)
    done = setup.client_ns.run(*argv, timeout=30)
    assert done.returncode != 0, done.stderr
    assert "server certificate rejected: server address does not match the certificate" in done.stderr, \
        done.stderr
    assert tun_links(setup.client_ns) == []


@pytest.mark.parametrize("method", ["mschap-v2", "pap"])
def test_client_connects_pings_the_gateway_and_leaves_on_sigterm(setup: Setup, method: str) -> None:
    server, client_ns = setup.server, setup.client_ns
    setup.runs += 1
    log = setup.workdir / f"client-{setup.runs}-{method}.log"
    process = setup.lab.start(client_ns, *setup.client_argv(method), log=log)
    try:
        client = Client(process, log, setup.lab)
        client.wait_connected(timeout=30)
        address, peer, ifname = client.address, client.peer, client.ifname
        assert address is not None and peer is not None and ifname is not None
        assert server.dhcp_start <= address <= server.dhcp_end, client.log()
        assert peer == server.dhcp_gateway, client.log()
        assert ifname == "sstpc0"

        # The TUN in the client namespace: point to point, our DHCP address, the gateway as peer.
        addresses = client_ns.ip_json("-4", "addr", "show", "dev", ifname)[0]["addr_info"]
        assert [(a["local"], a.get("address")) for a in addresses] == [(str(address), str(peer))]
        # --no-default-route: the gateway is reached through the TUN, nothing else is.
        routes = client_ns.routes()
        assert not [r for r in routes if r["dst"] == "default"], routes
        assert client_ns.ip_json("route", "get", str(peer))[0]["dev"] == ifname
        assert user_sessions(server), "SoftEther lists no session for the user"

        rx_before = client_ns.ip_json("-s", "link", "show", "dev", ifname)[0]["stats64"]["rx"]["packets"]
        done = client_ns.run(PYTHON, "-c", PING, str(peer), str(PING_COUNT), timeout=30)
        assert done.returncode == 0, done.stderr
        answered = [line.split() for line in done.stdout.splitlines()]
        assert answered == [[str(seq), "1"] for seq in range(1, PING_COUNT + 1)], done.stdout
        rx_after = client_ns.ip_json("-s", "link", "show", "dev", ifname)[0]["stats64"]["rx"]["packets"]
        assert rx_after - rx_before >= PING_COUNT  # the replies came in through the TUN
    finally:
        exit_code = setup.lab.stop(process)
    text = log.read_text()
    assert exit_code == 0, text
    assert re.search(r"disconnected after \d+ s: SIGTERM received", text), text
    assert tun_links(client_ns) == []
    # The client said goodbye (PPP Terminate, Call Disconnect): SoftEther drops the session.
    deadline = time.monotonic() + 10
    while (left := user_sessions(server)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], f"SoftEther still lists {left}"


def test_wrong_password_fails_and_exits_non_zero(setup: Setup) -> None:
    argv = setup.client_argv("mschap-v2", password=setup.server.password + "-wrong")
    done = setup.client_ns.run(*argv, timeout=30)
    assert done.returncode != 0, done.stderr
    # SoftEther's MS-CHAPv2 Failure carries E=691 (authentication failure); the client reports it.
    assert "connection failed: authentication failed: E=691" in done.stderr, done.stderr
    assert "connected:" not in done.stderr
    assert tun_links(setup.client_ns) == []
