"""Our SSTP client against SoftEther VPN Server 5.01, a real third-party SSTP server.

SoftEther runs in its own network namespace (tests/support/softether.py, with the SSTP fix to
the Debian binary). Our protocol core's ClientSession is driven over a real TLS socket by
``dial`` below; that function is the only place that knows how the client is run, so the
runtime client (`vpnd client`) can take its place later.

What SoftEther does as a peer (checked here): it offers EAP first, MS-CHAPv2 after our first
Nak and PAP after a second; its MS-CHAPv2 Success carries an authenticator response that our
client checks; IPCP waits for its SecureNAT DHCP (up to ~8 s); a wrong password gets
MS-CHAPv2 Failure E=691. It does not check the crypto binding, so the binding itself is
checked against sstpc (test_sstpc.py) instead.

Besides our client's events, ``dial`` keeps a decoded log of both directions of the SSTP
stream, so these tests can look at SoftEther's own bytes (its Call Connect Ack hash bitmask,
its LCP authentication offers, its CHAP packets) independently of our state machines.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support import peers
from tests.support.packets import icmp_echo
from tests.support.peers import require_program
from tests.support.softether import (
    FIXED_LOOP,
    HAMCORE,
    PATCH_OFFSET,
    SOURCE_SHA256,
    SOURCE_VPNSERVER,
    SoftEtherError,
    SoftEtherServer,
    patched_vpnserver,
)
from vpnd.proto.crypto.mschap import mschapv2_authenticator_response, nt_password_hash
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp import frames
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.session import (
    AuthFailed,
    AuthSucceeded,
    BindingVerified,
    ClientSession,
    ClientSessionSettings,
    HttpAccepted,
    Ipv4Up,
    LinkEstablished,
    SessionClosed,
    SessionEvent,
)
from vpnd.proto.sstp import packets as sstp

pytestmark = pytest.mark.interop

LCP_OPTION_AUTH_PROTOCOL = 3
CHAP_CHALLENGE, CHAP_RESPONSE, CHAP_SUCCESS, CHAP_FAILURE = 1, 2, 3, 4
MSCHAP_V2_ALGORITHM = 0x81
PING_IDENT = 0x5E5E
PING_COUNT = 3

EventT = TypeVar("EventT")


# ---- a decoded log of one direction of the SSTP stream --------------------------------------------


class SstpStreamLog:
    """Follows one direction of the byte stream: HTTP head, then SSTP packets.

    Keeps every SSTP control message and every PPP control-protocol packet (LCP, CHAP, PAP,
    IPCP...); IP data is skipped. Never raises: a decoding problem is kept in ``error``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_http = True
        self.http_head = b""
        self.control: list[sstp.ControlMessage] = []
        self.ppp: list[tuple[int, frames.ControlPacket]] = []
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        if self.error is not None:
            return
        self._buffer += data
        try:
            self._parse()
        except ProtocolError as exc:
            self.error = str(exc)

    def _parse(self) -> None:
        if self._in_http:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.http_head = bytes(self._buffer[:end + 4])
            del self._buffer[:end + 4]
            self._in_http = False
        while len(self._buffer) >= 4:
            header = sstp.decode_header(bytes(self._buffer[:4]))
            if len(self._buffer) < header.length:
                return
            packet = bytes(self._buffer[:header.length])
            del self._buffer[:header.length]
            if header.is_control:
                self.control.append(sstp.decode_control(packet))
                continue
            protocol, information = frames.decode_frame(packet[4:])
            if frames.is_control_protocol(protocol):
                self.ppp.append((protocol, frames.decode_control(information)))

    def packets(self, protocol: int, code: int) -> list[frames.ControlPacket]:
        return [packet for proto, packet in self.ppp if proto == protocol and packet.code == code]

    def auth_offers(self) -> list[bytes]:
        """Authentication-Protocol values of the LCP Configure-Requests, retransmissions folded."""
        offers: list[bytes] = []
        for request in self.packets(frames.PROTO_LCP, frames.CONFIGURE_REQUEST):
            for option in frames.decode_options(request.data):
                if option.type == LCP_OPTION_AUTH_PROTOCOL and (not offers or offers[-1] != option.value):
                    offers.append(option.value)
        return offers

    def connect_ack(self) -> sstp.CryptoBindingRequest | None:
        for message in self.control:
            if message.message_type == sstp.MessageType.CALL_CONNECT_ACK:
                return sstp.decode_connect_ack(message)
        return None


# ---- the dialler: the one place that knows how our client is run ------------------------------------


@dataclass
class DialResult:
    events: list[SessionEvent]
    ping_rtts: dict[int, float]  # Echo Reply seq -> round trip (s)
    server_cert_der: bytes
    received: SstpStreamLog  # what SoftEther sent
    sent: SstpStreamLog  # what our client sent
    seconds: dict[str, float] = field(default_factory=dict)  # "auth", "ipv4" after the TLS handshake

    def all(self, kind: type[EventT]) -> list[EventT]:
        return [event for event in self.events if isinstance(event, kind)]

    def one(self, kind: type[EventT]) -> EventT:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind.__name__}, got {found}; events: {self.events}"
        return found[0]


def tls_context(server: SoftEtherServer) -> ssl.SSLContext:
    """Trusts exactly the certificate vpncmd exported, and checks the name on it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=server.server_cert_der)
    context.check_hostname = True
    return context


def echo_reply_seq(packet: bytes) -> int | None:
    """The sequence number of an ICMP Echo Reply to our pings, else None."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    icmp = packet[(packet[0] & 0x0F) * 4:]
    if len(icmp) < 8 or icmp[0] != 0:
        return None
    ident, seq = struct.unpack_from("!HH", icmp, 4)
    return seq if ident == PING_IDENT else None


def dial(server: SoftEtherServer, methods: tuple[AuthMethod, ...], *, password: str | None = None,
         ping: IPv4Address | None = None, timeout: float = 25.0) -> DialResult:
    """Connect, authenticate with ``methods``, ping ``ping`` once IPv4 is up, then hang up.

    Returns when the session has closed (by either side) or after ``timeout`` seconds.
    """
    settings = ClientSessionSettings(
        host=server.cert_cn, username=server.username,
        password=server.password if password is None else password,
        link=LinkSettings(lcp=LcpSettings(auth_methods=methods)),
    )
    session = ClientSession(settings)
    received, sent = SstpStreamLog(), SstpStreamLog()
    events: list[SessionEvent] = []
    rtts: dict[int, float] = {}
    seconds: dict[str, float] = {}
    raw = socket.create_connection((str(server.address), server.port), timeout=5)
    with tls_context(server).wrap_socket(raw, server_hostname=server.cert_cn) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        started = time.monotonic()
        session.start({sstp.HashProtocol.SHA256: hashlib.sha256(der).digest(),
                       sstp.HashProtocol.SHA1: hashlib.sha1(der).digest()}, started)
        deadline = started + timeout
        up: Ipv4Up | None = None
        ping_sent: dict[int, float] = {}
        finished = False
        while not finished and time.monotonic() < deadline:
            out = session.data_to_send()
            if out:
                sent.feed(out)
                tls.sendall(out)
            now = time.monotonic()
            timer = session.get_timer()
            tls.settimeout(min(max((timer - now) if timer is not None else 0.1, 0.005), 0.1))
            try:
                data: bytes | None = tls.recv(65536)
            except TimeoutError:
                data = None
            now = time.monotonic()
            if data == b"":
                break  # SoftEther closed the connection
            if data:
                received.feed(data)
                session.receive_data(data, now)
                for packet in session.take_ip_packets():
                    seq = echo_reply_seq(bytes(packet))
                    if seq in ping_sent and seq not in rtts:
                        rtts[seq] = now - ping_sent[seq]
            timer = session.get_timer()
            if timer is not None and timer <= now:
                session.handle_timer(now)
            while (event := session.next_event()) is not None:
                events.append(event)
                if isinstance(event, AuthSucceeded | AuthFailed):
                    seconds["auth"] = now - started
                elif isinstance(event, Ipv4Up):
                    seconds["ipv4"] = now - started
                    up = event
                elif isinstance(event, SessionClosed):
                    finished = True
            if finished or session.closed:
                break
            if up is not None and ping is not None and len(rtts) < PING_COUNT:
                # One at a time; the next one also goes out when a reply is 3 s late.
                last = max(ping_sent) if ping_sent else 0
                due = last == 0 or last in rtts or now - ping_sent[last] > 3.0
                if due and last < PING_COUNT + 2:
                    seq = last + 1
                    session.send_ip_packets([icmp_echo(up.local, ping, PING_IDENT, seq, b"vpnd" * 14)])
                    ping_sent[seq] = now
            if up is not None and (ping is None or len(rtts) >= PING_COUNT) and session.end_reason is None:
                session.close(now, "test finished")
        out = session.data_to_send()
        if out:
            sent.feed(out)
            tls.sendall(out)
    return DialResult(events, rtts, der, received, sent, seconds)


# ---- fixtures ------------------------------------------------------------------------------------


def require_root() -> None:
    peers.require_root("SoftEther runs in its own network namespace and its copy lives in /var/cache")


@pytest.fixture(scope="module")
def softether() -> Iterator[SoftEtherServer]:
    require_program("vpnserver")
    require_program("vpncmd")
    require_root()
    server = SoftEtherServer()
    server.start()
    try:
        yield server
    finally:
        log = server.log_text()
        server.stop()
        if "[SSTP]" not in log:
            print(f"SoftEther log (tail):\n{log[-4000:]}")


def expect_established(result: DialResult, server: SoftEtherServer, method: AuthMethod) -> Ipv4Up:
    """Shared checks for a session that authenticated with ``method``, got IPv4 and pinged."""
    assert not result.received.error and not result.sent.error, (result.received.error, result.sent.error)
    assert result.server_cert_der == server.server_cert_der
    assert result.received.http_head.startswith(b"HTTP/1.1 200 "), result.received.http_head
    result.one(HttpAccepted)
    assert result.one(LinkEstablished).auth_method is method
    succeeded = result.one(AuthSucceeded)
    assert succeeded.method is method and succeeded.username == server.username
    assert result.one(BindingVerified).hash_protocol is sstp.HashProtocol.SHA256
    connected = [m for m in result.sent.control if m.message_type == sstp.MessageType.CALL_CONNECTED]
    assert len(connected) == 1
    up = result.one(Ipv4Up)
    assert server.dhcp_start <= up.local <= server.dhcp_end
    assert up.peer == server.dhcp_gateway
    assert server.dhcp_gateway in up.dns
    assert sorted(result.ping_rtts) == list(range(1, PING_COUNT + 1)), result.ping_rtts
    closed = result.one(SessionClosed)
    assert "test finished" in closed.reason and not closed.by_peer
    assert not result.all(AuthFailed)
    return up


# ---- tests ---------------------------------------------------------------------------------------


def test_patched_copy_differs_from_the_installed_binary_only_in_the_lookup_loop() -> None:
    require_program("vpnserver")
    require_root()
    copy = patched_vpnserver()
    original, patched = SOURCE_VPNSERVER.read_bytes(), copy.read_bytes()
    assert hashlib.sha256(original).hexdigest() == SOURCE_SHA256  # the installed binary is untouched
    end = PATCH_OFFSET + len(FIXED_LOOP)
    assert len(patched) == len(original)
    assert patched[:PATCH_OFFSET] == original[:PATCH_OFFSET] and patched[end:] == original[end:]
    assert patched[PATCH_OFFSET:end] == FIXED_LOOP != original[PATCH_OFFSET:end]
    assert (copy.parent / "hamcore.se2").resolve() == HAMCORE.resolve()
    assert os.access(copy, os.X_OK)


def test_a_different_vpnserver_binary_is_not_patched(tmp_path: Path) -> None:
    other = tmp_path / "vpnserver"
    other.write_bytes(b"\x7fELF not the Debian 12 build")
    with pytest.raises(SoftEtherError, match="refusing to patch a different binary"):
        patched_vpnserver(tmp_path / "cache", source=other)
    assert not (tmp_path / "cache" / "vpnserver").exists()


def test_mschapv2_with_authenticator_response_dhcp_address_and_ping(
        softether: SoftEtherServer, record_property: Callable[[str, object], None]) -> None:
    result = dial(softether, (AuthMethod.MSCHAP_V2,), ping=softether.dhcp_gateway)
    expect_established(result, softether, AuthMethod.MSCHAP_V2)

    # SoftEther's own offers: EAP first, MS-CHAPv2 after our Nak.
    offers = result.received.auth_offers()
    assert offers[:2] == [frames.PROTO_EAP.to_bytes(2, "big"),
                          frames.PROTO_CHAP.to_bytes(2, "big") + bytes([MSCHAP_V2_ALGORITHM])], offers
    assert result.one(AuthSucceeded).keys is not None  # MPPE keys: the HLAK of the binding

    # The authenticator response, recomputed here from the wire: SoftEther's Challenge, our
    # Response and the password. Our client accepted it (AuthSucceeded); this shows it was right.
    challenge = result.received.packets(frames.PROTO_CHAP, CHAP_CHALLENGE)[-1].data
    response = result.sent.packets(frames.PROTO_CHAP, CHAP_RESPONSE)[-1].data
    success = result.received.packets(frames.PROTO_CHAP, CHAP_SUCCESS)
    assert challenge[0] == 16 and response[0] == 49 and len(success) == 1
    peer_challenge, nt_response = response[1:17], response[25:49]
    expected = mschapv2_authenticator_response(nt_password_hash(softether.password), nt_response,
                                               peer_challenge, challenge[1:17], softether.username)
    assert success[0].data.decode("ascii", "replace")[:42].upper() == expected.upper()

    ack = result.received.connect_ack()
    assert ack is not None and len(ack.nonce) == 32
    assert ack.hash_bitmask & sstp.HashProtocol.SHA256
    assert not ack.hash_bitmask & ~(sstp.HashProtocol.SHA1 | sstp.HashProtocol.SHA256)
    names = [p.name for p in sstp.HashProtocol if ack.hash_bitmask & p]
    record_property("softether_connect_ack_hash_bitmask", f"0x{ack.hash_bitmask:02x}")
    print(f"SoftEther Call Connect Ack hash bitmask: 0x{ack.hash_bitmask:02x} ({' | '.join(names)}); "
          f"auth {result.seconds.get('auth', 0):.2f} s, IPv4 {result.seconds.get('ipv4', 0):.2f} s, "
          f"first ping {result.ping_rtts[1] * 1000:.0f} ms, startup {softether.startup_seconds:.1f} s")


def test_pap_after_refusing_eap_and_mschapv2(softether: SoftEtherServer) -> None:
    result = dial(softether, (AuthMethod.PAP,), ping=softether.dhcp_gateway)
    expect_established(result, softether, AuthMethod.PAP)
    assert result.one(AuthSucceeded).keys is None  # PAP: the binding uses the all-zero HLAK
    offers = result.received.auth_offers()
    assert offers[:3] == [frames.PROTO_EAP.to_bytes(2, "big"),
                          frames.PROTO_CHAP.to_bytes(2, "big") + bytes([MSCHAP_V2_ALGORITHM]),
                          frames.PROTO_PAP.to_bytes(2, "big")], offers
    assert len(result.sent.packets(frames.PROTO_PAP, 1)) >= 1  # Authenticate-Request
    assert len(result.received.packets(frames.PROTO_PAP, 2)) == 1  # Authenticate-Ack


def test_wrong_password_is_refused_with_error_691(softether: SoftEtherServer) -> None:
    result = dial(softether, (AuthMethod.MSCHAP_V2,), password=softether.password + "-wrong", timeout=15)
    assert result.one(LinkEstablished).auth_method is AuthMethod.MSCHAP_V2
    failed = result.one(AuthFailed)
    assert failed.method is AuthMethod.MSCHAP_V2 and failed.reason.startswith("E=691"), failed
    failure = result.received.packets(frames.PROTO_CHAP, CHAP_FAILURE)
    assert len(failure) == 1 and failure[0].data.startswith(b"E=691 "), failure
    assert not result.all(AuthSucceeded) and not result.all(BindingVerified) and not result.all(Ipv4Up)
    assert not [m for m in result.sent.control if m.message_type == sstp.MessageType.CALL_CONNECTED]
    closed = result.one(SessionClosed)
    assert "authentication failed" in closed.reason, closed
