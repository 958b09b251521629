"""SSTP behind a load balancer: PROXY protocol headers before TLS, and TLS offload.

The first part needs nothing special: the edge policy from the config, the commit rules, the
header read over a socket pair (never a byte past the header), and the TLS stream's plaintext
pass-through. The second part runs this file as a scenario inside a network namespace of its
own (``python -m tests.server.test_edge`` prints JSON): real daemons with TUN devices, dialers
behind a stand-in balancer that writes PROXY v1/v2 headers from a raw socket, a refused source,
bad and missing headers, and offload through a TLS terminator run by the test with its own
certificate, whose hash is configured (binding OK) or wrong (refused: certificate hash mismatch).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.dialer import Dialer
from tests.support.probes import LogCollector, dial, raw_exchange
from tests.support.scenario import run_scenario
from vpnd.config.definitions import Config
from vpnd.config.model import model_from_tree
from vpnd.config.tree import ConfigTree
from vpnd.config.verify import verify
from vpnd.proto.proxy import Endpoint, ProxyCommand, ProxyFamily, ProxyHeader, encode_v1, encode_v2
from vpnd.proto.sstp.packets import HashProtocol
from vpnd.runtime.tls_stream import PLAINTEXT_BUFFER, TlsStream
from vpnd.server import edge
from vpnd.server.daemon import Daemon
from vpnd.server.edge import EdgePolicy, HeaderReads, canonical_host, client_of
from vpnd.server.tls import make_self_signed

BASE_COMMANDS = """
set vpn sstp authentication local-users username alice password 'alice-pw'
set vpn sstp client-ip-pool P range '10.0.0.2-10.0.0.100'
set vpn sstp default-pool 'P'
set vpn sstp gateway-address '10.0.0.1'
"""


class _FreeProbe:
    def port_in_use(self, port: int) -> str | None:
        return None


def _model(extra: str) -> Config:
    return model_from_tree(ConfigTree.from_commands(BASE_COMMANDS + extra))


def _lb_messages(extra: str) -> tuple[list[str], list[str]]:
    result = verify(_model(extra), _FreeProbe())
    pick = [m for m in result.errors if "proxy" in m or "offload" in m]
    return pick, [m for m in result.warnings if "proxy" in m or "offload" in m]


# --- config ----------------------------------------------------------------------------------


def test_accept_proxy_protocol_requires_a_source() -> None:
    errors, _ = _lb_messages("set vpn sstp accept-proxy-protocol\n")
    assert errors == ["vpn sstp accept-proxy-protocol: requires at least one proxy-protocol-source (the "
                      "balancers allowed to send the header; anyone else could forge client addresses)"]
    errors, warnings = _lb_messages("set vpn sstp accept-proxy-protocol\n"
                                    "set vpn sstp proxy-protocol-source 192.0.2.0/28\n")
    assert errors == [] and warnings == []


def test_source_without_accept_is_a_warning() -> None:
    errors, warnings = _lb_messages("set vpn sstp proxy-protocol-source 192.0.2.1\n")
    assert errors == []
    assert warnings == ["vpn sstp proxy-protocol-source: set but accept-proxy-protocol is not, "
                        "so it is unused"]


def test_offload_needs_a_hash() -> None:
    errors, _ = _lb_messages("set vpn sstp tls-offload\n")
    assert len(errors) == 1 and errors[0].startswith("vpn sstp tls-offload: certificate-hash-sha256 or "
                                                     "certificate-hash-sha1 is required")
    errors, warnings = _lb_messages(f"set vpn sstp tls-offload certificate-hash-sha256 {'ab' * 32}\n")
    assert errors == [] and warnings == []
    errors, warnings = _lb_messages(f"set vpn sstp tls-offload certificate-hash-sha1 {'ab' * 20}\n")
    assert errors == [] and "only SHA-1" in warnings[0]


@pytest.mark.parametrize(("leaf", "value", "words"), [
    ("tls-offload certificate-hash-sha256", "ab" * 31, "64 hexadecimal digits"),
    ("tls-offload certificate-hash-sha256", "zz" * 32, "64 hexadecimal digits"),
    ("tls-offload certificate-hash-sha1", "ab" * 32, "40 hexadecimal digits"),
    ("proxy-protocol-source", "192.0.2.1/24", "has host bits set"),
    ("proxy-protocol-source", "not-an-address", "prefix or address"),
])
def test_bad_values_are_refused(leaf: str, value: str, words: str) -> None:
    with pytest.raises(Exception, match=words):
        _model(f"set vpn sstp {leaf} {value}\n")


def test_policy_from_config() -> None:
    sha256 = hashlib.sha256(b"balancer certificate").hexdigest()
    colons = ":".join(sha256[i:i + 2] for i in range(0, 64, 2)).upper()
    config = _model("set vpn sstp accept-proxy-protocol\n"
                    "set vpn sstp proxy-protocol-source 192.0.2.0/28\n"
                    "set vpn sstp proxy-protocol-source 2001:db8::5\n"
                    f"set vpn sstp tls-offload certificate-hash-sha256 {colons}\n")
    assert config.vpn.sstp is not None
    policy = EdgePolicy.from_config(config.vpn.sstp)
    assert policy.proxy_protocol and policy.offload
    assert policy.source_allowed("192.0.2.15") and policy.source_allowed("::ffff:192.0.2.1")
    assert not policy.source_allowed("192.0.2.16") and not policy.source_allowed("2001:db8::6")
    assert policy.source_allowed("2001:db8::5")
    own = {HashProtocol.SHA256: b"\x01" * 32, HashProtocol.SHA1: b"\x02" * 20}
    assert policy.cert_hashes(own) == {HashProtocol.SHA256: bytes.fromhex(sha256)}
    plain = EdgePolicy.from_config(_model("").vpn.sstp)  # type: ignore[arg-type]
    assert not plain.proxy_protocol and not plain.offload and plain.cert_hashes(own) == own


def test_client_of_header() -> None:
    header = ProxyHeader(2, ProxyCommand.PROXY, ProxyFamily.TCP6, Endpoint("::ffff:198.51.100.4", 5),
                         Endpoint("2001:db8::1", 443), 52)
    assert client_of(header, ("192.0.2.1", 9)) == ("198.51.100.4", 5)
    local = ProxyHeader(2, ProxyCommand.LOCAL, ProxyFamily.UNSPEC, None, None, 16)
    assert client_of(local, ("192.0.2.1", 9)) == ("192.0.2.1", 9)
    assert canonical_host("::ffff:10.0.0.1") == "10.0.0.1" and canonical_host("2001:DB8::1") == "2001:db8::1"


# --- header read over a socket pair --------------------------------------------------------


async def _read_header(chunks: list[bytes], *, timeout: float = 2.0,
                       close_after: bool = False) -> tuple[str, object, bytes]:
    """Sends ``chunks`` (50 ms apart) into a socket pair while a header read runs on the other end;
    returns what it reported and every byte left in the socket afterwards."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[tuple[str, object]] = loop.create_future()
    reads = HeaderReads()
    reads.start(ours, timeout, on_header=lambda header: outcome.set_result(("header", header)),
                on_failure=lambda kind, reason: outcome.set_result((kind, reason)))
    assert len(reads) == 1
    for chunk in chunks:
        theirs.sendall(chunk)
        await asyncio.sleep(0.05)
    if close_after:
        theirs.close()
    kind, value = await asyncio.wait_for(outcome, timeout + 2)
    assert len(reads) == 0
    left = b""
    if not close_after:
        theirs.close()
        ours.setblocking(True)
        while data := ours.recv(4096):
            left += data
    ours.close()
    return kind, value, left


def test_header_read_takes_only_the_header() -> None:
    v2 = encode_v2(Endpoint("203.0.113.7", 40001), Endpoint("127.0.0.1", 443))
    v1 = encode_v1(Endpoint("203.0.113.8", 40002), Endpoint("127.0.0.1", 443))
    hello = bytes.fromhex("160301") + b"client hello bytes"
    splits = ([v2 + hello], [v2[:7], v2[7:20], v2[20:] + hello], [v1 + hello], [v1[:30], v1[30:], hello])
    for chunks in splits:
        kind, header, left = asyncio.run(_read_header(chunks))
        assert kind == "header"
        assert isinstance(header, ProxyHeader) and header.source is not None
        assert header.source.host in ("203.0.113.7", "203.0.113.8")
        assert left == hello


def test_header_read_failures() -> None:
    kind, reason, _ = asyncio.run(_read_header([b"\x16\x03\x01\x00\x10hello"]))
    assert (kind, reason) == ("invalid", "not a PROXY protocol header")
    started = time.monotonic()
    kind, reason, _ = asyncio.run(_read_header([b"PROXY TCP4 "], timeout=0.5))
    assert kind == "timeout" and "0.5 s" in str(reason)
    assert 0.4 < time.monotonic() - started < 2.0
    kind, reason, _ = asyncio.run(_read_header([b"PROXY TCP4 1.2"], close_after=True))
    assert kind == "closed"


def test_plaintext_pass_through_stream() -> None:
    async def main() -> tuple[bytes, bytes, list[str]]:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        received = bytearray()
        lost: list[str] = []
        done = asyncio.Event()

        def on_lost(reason: str) -> None:  # as the connections do: the owner closes
            lost.append(reason)
            stream.close()

        stream = TlsStream(ours, None, server_side=True, plaintext=bytearray(PLAINTEXT_BUFFER), peer="client",
                           on_plaintext=received.extend, on_read_done=done.set,
                           on_lost=on_lost, on_backpressure=lambda paused: None)
        assert not stream.handshaking and stream.passthrough
        stream.start()
        stream.write(b"HTTP/1.1 200 OK\r\n\r\n")
        echoed = theirs.recv(100)
        theirs.sendall(b"\x10\x01\x00\x0e" + b"sstp")
        await asyncio.wait_for(done.wait(), 2)
        theirs.close()
        while not lost:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # nothing more is reported after close()
        return echoed, bytes(received), lost

    echoed, received, lost = asyncio.run(main())
    assert echoed == b"HTTP/1.1 200 OK\r\n\r\n"
    assert received == b"\x10\x01\x00\x0esstp"
    assert lost == ["client closed the TCP connection"]


# --- the scenario (runs inside the namespace) -------------------------------------------------

PROXY_PORT, OFFLOAD_PORT, WRONG_PORT = 4443, 4444, 4445
BALANCER = "127.0.0.1"  # the only allowed proxy-protocol-source
STRANGER = "127.0.0.5"  # a source that may not send PROXY headers


def _daemon_config(cert: Path, key: Path, port: int, octet: int, extra: dict[str, Any]) -> Config:
    return Config.model_validate({"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {"alice": {"password": "alice-pw"}}}},
        "client-ip-pool": {"P": {"range": [f"10.{octet}.0.0/24"]}}, "default-pool": "P",
        "gateway-address": f"10.{octet}.255.1", "port": port,
        "ssl": {"cert-file": str(cert), "key-file": str(key)}, **extra,
    }}})


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


class Balancer:
    """A stand-in load balancer: accepts clients, connects to the daemon, and, before relaying,
    writes ``header(client)`` from its socket; ``split`` sends the header in pieces, otherwise it
    waits for the client's first bytes and sends them in the same write as the header. With
    ``tls`` it terminates TLS itself and relays plaintext (TLS offload)."""

    def __init__(self, target: int, header: Callable[[Endpoint], bytes] | None = None, *,
                 split: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.target, self.header, self.split, self.tls = target, header, split, tls
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.tls)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = Endpoint(*writer.get_extra_info("peername")[:2])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target,
                                                             local_addr=(BALANCER, 0))
        if self.header is not None:
            header = self.header(client)
            if self.split:
                for piece in (header[:5], header[5:17], header[17:]):
                    up_writer.write(piece)
                    await up_writer.drain()
                    await asyncio.sleep(0.05)
            else:
                first = await reader.read(65536)
                up_writer.write(header + first)
        for task in (asyncio.create_task(_pipe(reader, up_writer)),
                     asyncio.create_task(_pipe(up_reader, writer))):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()


def _row(daemon: Daemon, username: str) -> dict[str, object]:
    rows = [row for row in daemon.sessions() if row["username"] == username and row["state"] == "active"]
    return rows[-1] if rows else {}


async def scenario() -> dict[str, Any]:
    edge.PROXY_HEADER_TIMEOUT = 1.0  # the deadline test need not wait 5 s
    logs = LogCollector.on()
    work = Path(tempfile.mkdtemp(prefix="vpnd-edge-"))
    cert, key = make_self_signed(work, "vpn.test")
    balancer_cert, balancer_key = make_self_signed(work / "balancer", "vpn.test")
    balancer_der = ssl.PEM_cert_to_DER_cert(balancer_cert.read_text())
    result: dict[str, Any] = {"balancer_sha256": hashlib.sha256(balancer_der).hexdigest()}

    proxied = Daemon(_daemon_config(cert, key, PROXY_PORT, 78, {
        "accept-proxy-protocol": True, "proxy-protocol-source": [f"{BALANCER}/32"]}),
        listen_host="127.0.0.1", ifname_prefix="ppa")
    offload = Daemon(_daemon_config(cert, key, OFFLOAD_PORT, 79, {
        "tls-offload": {"certificate-hash-sha256": result["balancer_sha256"]}}),
        listen_host="127.0.0.1", ifname_prefix="ppb")
    wrong = Daemon(_daemon_config(cert, key, WRONG_PORT, 80, {
        "tls-offload": {"certificate-hash-sha256": hashlib.sha256(b"another certificate").hexdigest()}}),
        listen_host="127.0.0.1", ifname_prefix="ppc")
    for daemon in (proxied, offload, wrong):
        await daemon.start()
    result["own_sha256"] = hashlib.sha256(proxied.tls.leaf_der).hexdigest()

    # PROXY v1 (header and ClientHello in one write) and v2 with an IPv6 client (header in pieces).
    destination = Endpoint("192.0.2.1", 443)
    v1 = Balancer(PROXY_PORT, lambda client: encode_v1(Endpoint("203.0.113.7", 40001), destination))
    v2 = Balancer(PROXY_PORT, lambda client: encode_v2(Endpoint("2001:db8::7", 40002),
                                                       Endpoint("2001:db8::1", 443)), split=True)
    local = Balancer(PROXY_PORT, lambda client: encode_v2(None, None, local=True))
    for name, balancer in (("v1", v1), ("v2", v2), ("local", local)):
        dialer = await dial(await balancer.start())
        result[name] = {"up": dialer.up.is_set(), "pings": await dialer.ping() if dialer.up.is_set() else 0,
                        "row": _row(proxied, "alice"), "close_reason": dialer.close_reason}
        await dialer.hang_up()
        await balancer.stop()
        await asyncio.sleep(0.3)

    header = encode_v2(Endpoint("203.0.113.9", 40003), destination)
    result["stranger"] = await raw_exchange(STRANGER, PROXY_PORT, header)
    result["garbage"] = await raw_exchange(BALANCER, PROXY_PORT, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    result["silent"] = await raw_exchange(BALANCER, PROXY_PORT, b"")
    result["partial"] = await raw_exchange(BALANCER, PROXY_PORT, header[:20])
    direct = Dialer("127.0.0.1", PROXY_PORT, "alice", "alice-pw")  # TLS straight away: no header
    try:
        await asyncio.wait_for(direct.connect(), 5)
        await asyncio.wait_for(direct.ended.wait(), 5)
        result["direct_tls"] = {"refused": True, "how": direct.close_reason}
    except (ConnectionError, ssl.SSLError, OSError) as error:
        result["direct_tls"] = {"refused": True, "how": f"{type(error).__name__}: {error}"}
    result["proxied_counters"] = proxied.statistics()["counters"]
    result["proxied_connections_left"] = len(proxied.connections)

    # TLS offload: the test terminates TLS with its own certificate and relays plaintext.
    terminator = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    terminator.load_cert_chain(balancer_cert, balancer_key)
    good = Balancer(OFFLOAD_PORT, tls=terminator)
    dialer = await dial(await good.start())
    result["offload"] = {"up": dialer.up.is_set(), "pings": await dialer.ping() if dialer.up.is_set() else 0,
                         "seen_sha256": dialer.cert_sha256.hex(), "row": _row(offload, "alice")}
    await dialer.hang_up()
    await good.stop()
    # The offload listener is plain TCP: a TLS client straight to it gets no TLS.
    tls_direct = Dialer("127.0.0.1", OFFLOAD_PORT, "alice", "alice-pw")
    try:
        await asyncio.wait_for(tls_direct.connect(), 5)
        result["offload_direct_tls"] = "connected"
    except (ConnectionError, ssl.SSLError, OSError, TimeoutError) as error:
        result["offload_direct_tls"] = f"{type(error).__name__}"

    bad = Balancer(WRONG_PORT, tls=terminator)
    dialer = await dial(await bad.start())
    await asyncio.wait_for(dialer.ended.wait(), 15)
    result["wrong_hash"] = {"up": dialer.up.is_set(), "close_reason": dialer.close_reason,
                            "counters": wrong.statistics()["counters"]}
    await dialer.hang_up()
    await bad.stop()
    await asyncio.sleep(0.5)
    result["logs"] = logs.lines
    for daemon in (proxied, offload, wrong):
        await daemon.stop()
    return result


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    return run_scenario("tests.server.test_edge")


@pytest.mark.root
@pytest.mark.parametrize(("name", "client"), [("v1", "203.0.113.7"), ("v2", "2001:db8::7")])
def test_proxy_header_names_the_client(outcome: dict[str, Any], name: str, client: str) -> None:
    case = outcome[name]
    assert case["up"], case["close_reason"]
    assert case["pings"] == 3
    assert case["row"]["calling-sid"] == client


@pytest.mark.root
def test_local_header_keeps_the_balancer_address(outcome: dict[str, Any]) -> None:
    assert outcome["local"]["up"] and outcome["local"]["pings"] == 3
    assert outcome["local"]["row"]["calling-sid"] == BALANCER


@pytest.mark.root
def test_other_source_is_dropped_and_counted(outcome: dict[str, Any]) -> None:
    assert outcome["stranger"]["closed"] and outcome["stranger"]["answer"] == ""
    assert outcome["proxied_counters"]["proxy_refused_source"] == 1
    assert any(f"dropped a connection from {STRANGER}: not a proxy-protocol-source" in line
               for line in outcome["logs"])


@pytest.mark.root
def test_bad_or_missing_header_is_dropped_and_counted(outcome: dict[str, Any]) -> None:
    counters = outcome["proxied_counters"]
    assert outcome["garbage"]["closed"] and outcome["garbage"]["answer"] == ""
    assert outcome["direct_tls"]["refused"]
    assert counters["proxy_header_invalid"] == 2  # the HTTP request and the bare ClientHello
    for case in ("silent", "partial"):
        assert outcome[case]["closed"]
        assert 0.8 < outcome[case]["after"] < 3.0  # the header deadline (1 s in this scenario)
    assert counters["proxy_header_timeout"] == 2
    # Only v1, v2 and LOCAL became connections; LOCAL (a balancer's health check) is counted apart.
    assert counters["connections_accepted"] == 2 and counters["proxy_health_checks"] == 1
    assert outcome["proxied_connections_left"] == 0


@pytest.mark.root
def test_offload_binds_to_the_configured_hash(outcome: dict[str, Any]) -> None:
    case = outcome["offload"]
    assert case["seen_sha256"] == outcome["balancer_sha256"] != outcome["own_sha256"]
    assert case["up"] and case["pings"] == 3
    assert case["row"]["calling-sid"] == BALANCER
    assert outcome["offload_direct_tls"] != "connected"


@pytest.mark.root
def test_offload_with_a_wrong_hash_is_refused(outcome: dict[str, Any]) -> None:
    case = outcome["wrong_hash"]
    assert not case["up"]
    assert any(line.startswith("ppc0 alice") and "certificate hash mismatch" in line
               for line in outcome["logs"])
    assert case["counters"].get("sessions_established", 0) == 0


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario()), default=str))
    sys.stdout.flush()
