"""End to end: vpnd's daemon in one namespace, `vpnd client` in another, real TUNs and TLS between.

Needs root (namespaces, TUN); skipped without it, failed under CI=true. Traffic is checked byte
for byte: ICMP echoes carry random payloads compared on return, and a TCP stream of 100 MiB is
hashed with SHA-256 on both ends. After every client the test checks that nothing is left: no
TUN or route in either namespace, no address held in the daemon's pool.
"""

from __future__ import annotations

import copy
import re
import signal
import subprocess
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.aaa.test_radius_eap import _client_certificate
from tests.e2e.conftest import DNS, E2E, GATEWAY, Client
from tests.support.daemon import TestDaemon
from tests.support.netns import PYTHON, Namespace
from tests.support.transfer import transfer

pytestmark = pytest.mark.root

STREAM_MIB = 100

# HTTP CONNECT proxy: "open" relays to the requested host:port, "refuse" answers 407. Logs requests.
PROXY = r"""
import socket, sys, threading
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, port)); server.listen(8)
print("ready", flush=True)
def pipe(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def handle(conn):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            return
        head += chunk
    request_line = head.split(b"\r\n")[0].decode()
    print(request_line, flush=True)
    if mode == "refuse":
        conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                     b"Proxy-Authenticate: Basic realm=\"e2e\"\r\nContent-Length: 0\r\n\r\n")
        conn.close()
        return
    target_host, _, target_port = request_line.split(" ")[1].rpartition(":")
    upstream = socket.create_connection((target_host.strip("[]"), int(target_port)))
    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
    pipe(conn, upstream)
while True:
    conn, _ = server.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""


def ping(namespace: Namespace, target: IPv4Address, count: int = 3) -> int:
    done = namespace.run(PYTHON, "-m", "tests.support.ping", str(target), str(count), timeout=30)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def session_interfaces(namespace: Namespace, prefix: str) -> list[str]:
    return [name for name in namespace.links() if name.startswith(prefix)
            and name[len(prefix):].isdigit()]


def assert_nothing_left(e2e: E2E, client_ifnames: list[str], timeout: float = 10) -> None:
    """No session TUN in the server namespace, no client TUN or route through it, no pool entry."""
    deadline = time.monotonic() + timeout
    while True:
        stats = e2e.daemon.statistics()
        server_tuns = session_interfaces(e2e.server, "sstp")
        client_links = [name for name in e2e.client.links() if name in client_ifnames]
        client_routes = [r for r in e2e.client.routes() if r.get("dev") in client_ifnames]
        pools_used = sum(pool["used"] for pool in stats["statistics"]["pools"].values())
        sessions = stats["statistics"]["sessions"]
        if not (server_tuns or client_links or client_routes or pools_used or any(sessions.values())):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: server TUNs {server_tuns}, client links {client_links}, "
                                 f"client routes {client_routes}, pool entries in use {pools_used}, "
                                 f"sessions {sessions}")
        time.sleep(0.1)


@pytest.mark.parametrize(("method", "user", "upload"), [("pap", "alice", True), ("mschap-v2", "bob", False)])
def test_tunnel_carries_traffic(e2e: E2E, method: str, user: str, upload: bool) -> None:
    resolv = e2e.workdir / f"resolv-{method}.conf"
    client = e2e.start_client(user, "--auth", method, "--ifname", "sstpc0", "--resolv-conf", str(resolv))
    try:
        client.wait_connected()
        assert client.ifname == "sstpc0"
        assert client.peer == GATEWAY
        assert client.address is not None
        assert f"authenticated with {method}" in e2e.daemon.log()

        # The client namespace got the p2p address, the default route and the server's DNS.
        addresses = e2e.client.ip_json("-4", "addr", "show", "dev", "sstpc0")[0]["addr_info"]
        assert [(a["local"], a.get("address")) for a in addresses] == [(str(client.address), str(GATEWAY))]
        defaults = [r for r in e2e.client.routes() if r["dst"] == "default"]
        assert defaults == [r for r in defaults if r["dev"] == "sstpc0"] and defaults, defaults
        assert resolv.read_text().splitlines()[1:] == [f"nameserver {DNS}"]

        # Both ways: the server namespace pings the client's tunnel address and the other way round.
        assert ping(e2e.server, client.address) == 3
        assert ping(e2e.client, GATEWAY) == 3

        if upload:
            transfer(e2e.client, e2e.server, GATEWAY, STREAM_MIB, seed=1)
        else:
            transfer(e2e.server, e2e.client, client.address, STREAM_MIB, seed=2)

        sessions = e2e.daemon.statistics()["sessions"]
        rows = [(s["username"], s["ip"], s["auth"]) for s in sessions]
        assert rows == [(user, str(client.address), method)]
        assert sessions[0]["rx-bytes"] + sessions[0]["tx-bytes"] > STREAM_MIB << 20
    finally:
        exit_code = client.stop()
    # SIGTERM: PPP Terminate and Call Disconnect, then exit 0; the server saw the client end it.
    assert exit_code == 0, client.log()
    assert re.search(r"disconnected after \d+ s: SIGTERM received", client.log()), client.log()
    assert not resolv.exists()
    assert_nothing_left(e2e, ["sstpc0"])
    assert "session closed by peer" in e2e.daemon.log()


@pytest.mark.parametrize("method", ["pap", "mschap-v2"])
def test_wrong_password_is_refused(e2e: E2E, method: str) -> None:
    done = e2e.run_client("carol", "--auth", method, "--ifname", "sstpc9", password="not-carols")
    assert done.returncode != 0
    assert "connection failed: authentication failed" in done.stderr
    assert "connected:" not in done.stderr
    assert_nothing_left(e2e, ["sstpc9"])


def test_eap_mschapv2_logs_in_binds_and_carries_traffic(e2e: E2E) -> None:
    """Local EAP-MSCHAPv2: the tunnel carries IP only after the server verified the Compound MAC
    made from the EAP-MSCHAPv2 keys, so pings both ways show the binding held. The EAP messages and
    the HLAK follow draft-kamath-pppext-eap-mschapv2 and MS-SSTP; no Windows peer checks them here."""
    client = e2e.start_client("carol", "--auth", "eap", "--ifname", "sstpc8", "--no-default-route")
    try:
        client.wait_connected()
        assert client.address is not None
        assert "authenticated with eap-mschap-v2" in e2e.daemon.log()
        assert ping(e2e.server, client.address) == 3
        assert ping(e2e.client, GATEWAY) == 3
        sessions = e2e.daemon.statistics()["sessions"]
        assert [(s["username"], s["auth"]) for s in sessions] == [("carol", "eap-mschap-v2")]
    finally:
        assert client.stop() == 0, client.log()
    assert_nothing_left(e2e, ["sstpc8"])

    # A wrong password, from a host of its own so the daemon's per-source log limit cannot hide it.
    done = e2e.run_client("carol", "--auth", "eap", "--ifname", "sstpc8", password="not-carols",
                          host=e2e.another_host())
    assert done.returncode != 0 and "connected:" not in done.stderr
    assert "authentication failed: EAP-MSCHAPv2 E=691: Authentication failed" in done.stderr
    assert re.search(r"carol .*: authentication failed \(eap-mschap-v2\): Authentication failed",
                     e2e.daemon.log()), e2e.daemon.log()[-3000:]


def test_local_eap_tls_logs_in_with_the_certificates_name_and_refuses_an_expired_one(e2e: E2E) -> None:
    """Local EAP-TLS: the daemon checks the client certificate against `eap-tls ca-certificate`
    and names the user after its CN; IP passes after the binding made from the TLS MSK."""
    assert e2e.users_ca is not None
    files = {}
    for name, days in (("good", (-1, 30)), ("expired", (-30, -1))):
        certificate, key, _ = _client_certificate(e2e.users_ca, "erin", days=days)
        (e2e.workdir / f"erin-{name}.pem").write_bytes(certificate)
        (e2e.workdir / f"erin-{name}.key").write_bytes(key)
        files[name] = ["--auth", "eap", "--eap-ca", str(e2e.cert),
                       "--eap-cert", str(e2e.workdir / f"erin-{name}.pem"),
                       "--eap-key", str(e2e.workdir / f"erin-{name}.key")]
    client = e2e.start_client("erin", *files["good"], "--ifname", "sstpc7", "--no-default-route",
                              password="unused")
    try:
        client.wait_connected()
        assert client.address is not None
        assert re.search(r"erin .*authenticated with eap-tls", e2e.daemon.log())
        assert ping(e2e.client, GATEWAY) == 3
        assert [s["auth"] for s in e2e.daemon.statistics()["sessions"]] == ["eap-tls"]
    finally:
        assert client.stop() == 0, client.log()
    assert_nothing_left(e2e, ["sstpc7"])

    done = e2e.run_client("erin", *files["expired"], "--ifname", "sstpc7", password="unused",
                          host=e2e.another_host())
    assert done.returncode != 0 and "connected:" not in done.stderr
    assert re.search(r"authentication failed \(eap-tls\): EAP-TLS: client certificate refused: "
                     r"certificate has expired \(CN=erin\)", e2e.daemon.log()), e2e.daemon.log()[-3000:]


def test_two_clients_at_once_get_distinct_addresses(e2e: E2E) -> None:
    # Two machines: with both tunnels in one namespace the kernel would answer the second
    # client's pings through the first tunnel, which the server rightly drops as spoofed.
    first = e2e.start_client("alice", "--ifname", "sstpc1", "--no-default-route", "--route", "10.99.1.0/24",
                             "--auth", "mschap-v2")
    other = e2e.another_host()
    second = e2e.start_client("bob", "--ifname", "sstpc2", "--no-default-route", "--auth", "pap", host=other)
    clients: list[Client] = [first, second]
    try:
        for client in clients:
            client.wait_connected()
        assert first.address != second.address
        assert (first.ifname, second.ifname) == ("sstpc1", "sstpc2")
        assert "sstpc2" in [link["ifname"] for link in other.ip_json("link")]
        routes = e2e.client.routes()
        assert not [r for r in routes if r["dst"] == "default"]
        assert [r["dev"] for r in routes if r["dst"] == "10.99.1.0/24"] == ["sstpc1"]
        stats = e2e.daemon.statistics()
        assert stats["statistics"]["sessions"]["active"] == 2
        assert sorted(s["ip"] for s in stats["sessions"]) == sorted([str(first.address), str(second.address)])
        assert len(session_interfaces(e2e.server, "sstp")) == 2
        for client in clients:
            assert client.address is not None
            assert ping(e2e.server, client.address, count=2) == 2
    finally:
        codes = [client.stop() for client in clients]
    assert codes == [0, 0]
    assert_nothing_left(e2e, ["sstpc1", "sstpc2"])


def test_serves_without_a_gateway_address(e2e: E2E) -> None:
    """VyOS only warns when gateway-address is missing (its RADIUS smoketests leave it out): the
    daemon then takes RFC 7600's dummy address, 192.0.0.8, as its own end of every client link."""
    config = copy.deepcopy(e2e.daemon.config)
    sstp = config["vpn"]["sstp"]
    del sstp["gateway-address"]
    sstp["port"] = 8443
    workdir = e2e.workdir / "no-gateway"
    workdir.mkdir()
    daemon = TestDaemon(e2e.lab, e2e.server, config, workdir)
    daemon.start()
    client: Client | None = None
    try:
        daemon.wait_listening()
        client = e2e.start_client("alice", "--port", "8443", "--ifname", "sstpc7", "--no-default-route")
        client.wait_connected()
        assert client.peer == IPv4Address("192.0.0.8")
        assert client.address is not None
        assert ping(e2e.server, client.address, count=2) == 2
    finally:
        if client is not None:
            client.stop()
        daemon.stop()
    assert_nothing_left(e2e, ["sstpc7"])


def test_untrusted_certificate_is_refused(e2e: E2E) -> None:
    done = e2e.run_client("alice", "--ca", str(e2e.other_cert))
    assert done.returncode != 0
    assert "server certificate rejected: self-signed certificate in chain" in done.stderr


def test_name_not_in_certificate_is_refused(e2e: E2E) -> None:
    # Dialled by address, and the certificate names only SERVER_NAME: with and without SNI.
    for extra in (["--sni", e2e.server_address], ["--no-sni", "--sni", e2e.server_address]):
        done = e2e.run_client("alice", *extra)
        assert done.returncode != 0
        assert "server certificate rejected: server address does not match the certificate" in done.stderr


def test_reconnects_after_the_server_restarts(e2e: E2E) -> None:
    client = e2e.start_client("alice", "--ifname", "sstpc3", "--no-default-route")
    try:
        client.wait_connected()
        e2e.daemon.stop()
        client.wait_log(r"disconnected after \d+ s: peer sent SSTP Call Disconnect|disconnected after \d+ s: "
                        r"peer sent Terminate-Request")
        e2e.daemon.start()
        e2e.daemon.wait_listening()
        client.wait_log(r"connected: ", count=2, timeout=30)
        assert ping(e2e.client, GATEWAY, count=2) == 2
    finally:
        assert client.stop() == 0
    assert_nothing_left(e2e, ["sstpc3"])


def test_dead_server_is_noticed_by_keepalive(e2e: E2E) -> None:
    # --keepalive 1.5: an LCP echo every 0.5 s, the link is dead after 3 unanswered.
    client = e2e.start_client("carol", "--ifname", "sstpc4", "--no-default-route", "--keepalive", "1.5")
    daemon = e2e.daemon.process
    assert daemon is not None
    try:
        client.wait_connected()
        time.sleep(2)  # echoes are answered: the session stays up
        assert "disconnected" not in client.log()
        started = time.monotonic()
        daemon.send_signal(signal.SIGSTOP)
        try:
            client.wait_log(r"disconnected after \d+ s: LCP echo timeout", timeout=10)
            noticed = time.monotonic() - started
        finally:
            daemon.send_signal(signal.SIGCONT)
        assert noticed < 4, f"took {noticed:.1f} s"
        # The server wakes up and the client dials again.
        client.wait_log(r"connected: ", count=2, timeout=30)
    finally:
        assert client.stop() == 0
    assert_nothing_left(e2e, ["sstpc4"])


def start_proxy(e2e: E2E, port: int, mode: str) -> Path:
    log = e2e.workdir / f"proxy-{port}.log"
    e2e.lab.start(e2e.server, PYTHON, "-c", PROXY, e2e.server_address, str(port), mode, log=log)
    deadline = time.monotonic() + 10
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "proxy did not start"
        time.sleep(0.05)
    return log


def test_through_an_http_proxy(e2e: E2E) -> None:
    proxy_log = start_proxy(e2e, 3128, "open")
    client = e2e.start_client("alice", "--ifname", "sstpc5", "--no-default-route",
                              "--http-proxy", f"{e2e.server_address}:3128")
    try:
        client.wait_connected()
        assert client.address is not None
        assert ping(e2e.server, client.address, count=2) == 2
    finally:
        assert client.stop() == 0
    assert f"CONNECT {e2e.server_address}:443 HTTP/1.1" in proxy_log.read_text()
    assert_nothing_left(e2e, ["sstpc5"])


def test_proxy_refusal_is_reported(e2e: E2E) -> None:
    start_proxy(e2e, 3129, "refuse")
    done = e2e.run_client("alice", "--http-proxy", f"{e2e.server_address}:3129")
    assert done.returncode != 0
    assert "connection failed: proxy requires authentication: HTTP 407" in done.stderr


def test_retries_back_off_and_sigterm_ends_the_wait(e2e: E2E) -> None:
    client = e2e.start_client("alice", "--ca", str(e2e.other_cert), "--ifname", "sstpc6")
    client.wait_log(r"reconnecting in 1 s")
    client.wait_log(r"reconnecting in 2 s", timeout=10)
    started = time.monotonic()
    assert client.stop() == 0
    assert time.monotonic() - started < 2
    assert client.log().count("self-signed certificate in chain") >= 2


def test_sigterm_while_dialling_exits_at_once(e2e: E2E) -> None:
    # A TCP listener that never speaks TLS: the client waits in its handshake until told to stop.
    silent = e2e.lab.start(e2e.server, PYTHON, "-c",
                           "import socket, sys, time; s = socket.create_server((sys.argv[1], 4443)); "
                           "print('ready', flush=True); time.sleep(120)", e2e.server_address,
                           stdout=subprocess.PIPE)
    assert silent.stdout is not None and silent.stdout.readline().strip() == "ready"
    client = e2e.start_client("alice", "--port", "4443", "--ifname", "sstpc7")
    client.wait_log(r"connecting to ")
    time.sleep(0.5)
    started = time.monotonic()
    assert client.stop() == 0
    assert time.monotonic() - started < 2
    assert "connection failed: SIGTERM received" in client.log()
    e2e.lab.stop(silent)
