"""ServerSession ⇄ ClientSession end to end, in memory: HTTP → SSTP → LCP → auth → binding → NCPs → IP.

Every check reads the bytes that crossed the wire (``Wire.segments``) or the packets handed to the
TUN side; the compound MAC is recomputed here with hmac/hashlib, not with the binding module.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from tests.support.wire import (
    CERT_DER,
    CLIENT_ADDRESS,
    DNS,
    GATEWAY,
    SERVER_CERT_HASHES,
    Wire,
    make_wire,
    seeded_random,
)
from vpnd.proto.ppp.auth.types import AuthMethod, AuthSucceeded
from vpnd.proto.ppp.auth.verify import decide_with_password
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.session import (
    AuthRequested,
    BindingVerified,
    ClientSession,
    ClientSessionSettings,
    HttpAccepted,
    Ipv4AddressNeeded,
    Ipv4Up,
    Ipv6Up,
    LinkEstablished,
    ServerSession,
    ServerSessionSettings,
    SessionClosed,
)
from vpnd.proto.sstp.channel import ChannelSettings, ChannelState
from vpnd.proto.sstp.packets import HashProtocol

ALL_METHODS = [AuthMethod.PAP, AuthMethod.CHAP_MD5, AuthMethod.MSCHAP_V1, AuthMethod.MSCHAP_V2]
PROTO_LCP = 0xC021
PROTO_PAP = 0xC023
PROTO_CHAP = 0xC223
PROTO_IPCP = 0x8021
PROTO_IPV6CP = 0x8057
PROTO_IPV4 = 0x0021
PROTO_IPV6 = 0x0057

CALL_CONNECTED_PREFIX = bytes.fromhex("10010070 00040001 00030068 000000")
CONNECT_ACK_PREFIX = bytes.fromhex("10010030 00020001 00040028 000000")
CALL_DISCONNECT = bytes.fromhex("10010014 00060001 0002000c 00000000 00000000")
DISCONNECT_ACK = bytes.fromhex("10010008 00070000")
ECHO_REQUEST = bytes.fromhex("10010008 00080000")
ECHO_RESPONSE = bytes.fromhex("10010008 00090000")


# ---- reading the wire ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WirePacket:
    from_client: bool
    data: bytes

    @property
    def is_control(self) -> bool:
        return bool(self.data[1] & 0x01)

    @property
    def ppp_protocol(self) -> int | None:
        """PPP protocol of a data packet (the session always sends FF 03 + 2 bytes)."""
        if self.is_control:
            return None
        assert self.data[4:6] == b"\xff\x03", self.data.hex()
        return int.from_bytes(self.data[6:8], "big")

    @property
    def ppp_code(self) -> int:
        return self.data[8]

    @property
    def message_type(self) -> int | None:
        return int.from_bytes(self.data[4:6], "big") if self.is_control else None


def split_sstp(stream: bytes) -> tuple[list[bytes], bytes]:
    """Whole SSTP packets in ``stream`` and the incomplete rest."""
    packets = []
    pos = 0
    while len(stream) - pos >= 4:
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big") & 0x0FFF
        if length < 4 or len(stream) - pos < length:
            break
        packets.append(stream[pos : pos + length])
        pos += length
    return packets, stream[pos:]


def wire_packets(wire: Wire) -> list[WirePacket]:
    """Every SSTP packet in the order it crossed the wire; the HTTP heads are skipped."""
    packets: list[WirePacket] = []
    pending = {True: b"", False: b""}
    in_http = {True: True, False: True}
    for from_client, segment in wire.segments:
        data = segment
        if in_http[from_client]:
            head, separator, data = segment.partition(b"\r\n\r\n")
            assert separator, f"the first segment should hold the whole HTTP head: {head[:60]!r}"
            in_http[from_client] = False
        whole, pending[from_client] = split_sstp(pending[from_client] + data)
        packets.extend(WirePacket(from_client, p) for p in whole)
    return packets


def http_heads(wire: Wire) -> dict[bool, bytes]:
    heads: dict[bool, bytes] = {}
    for from_client, data in wire.segments:
        if from_client not in heads:
            heads[from_client] = data.partition(b"\r\n\r\n")[0]
    return heads


def find_one(packets: list[WirePacket], prefix: bytes, from_client: bool) -> WirePacket:
    found = [p for p in packets if p.from_client == from_client and p.data.startswith(prefix)]
    assert len(found) == 1, f"expected one packet starting {prefix.hex()}, found {len(found)}"
    return found[0]


def expected_compound_mac(packet: bytes, hlak: bytes, proto: int) -> bytes:
    """MS-SSTP §3.2.5.2: CMK from the HLAK (PRF+ first block, LEN little-endian), then HMAC."""
    name, size = ("sha256", 32) if proto == HashProtocol.SHA256 else ("sha1", 20)
    seed = b"SSTP inner method derived CMK" + size.to_bytes(2, "little") + b"\x01"
    cmk = hmac.new(hlak, seed, name).digest()[:size]
    mac = hmac.new(cmk, packet[:80] + bytes(32), name).digest()
    return mac.ljust(32, b"\x00")


def hlak_of(event: AuthSucceeded, *, server: bool) -> bytes:
    """The 32-byte HLAK from an AuthSucceeded event, by the table in the protocol notes (§4.1)."""
    if event.keys is None:
        return bytes(32)
    send, recv = event.keys.send_key[:16], event.keys.recv_key[:16]
    return recv + send if server else send + recv


# ---- traffic helpers ----------------------------------------------------------------------------


def ipv4_packet(size: int, seq: int, *, from_client: bool) -> bytes:
    src, dst = (CLIENT_ADDRESS, GATEWAY) if from_client else (GATEWAY, CLIENT_ADDRESS)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, seq & 0xFFFF, 0, 64, 17, 0, src.packed, dst.packed)
    body = bytes((seq * 7 + i) & 0xFF for i in range(size - len(header)))
    return header + body


def ipv6_packet(size: int, seq: int, *, from_client: bool) -> bytes:
    a = bytes.fromhex("fe800000000000000000000000000001")
    b = bytes.fromhex("fe800000000000000000000000000002")
    src, dst = (a, b) if from_client else (b, a)
    header = struct.pack("!IHBB16s16s", 0x60000000 | seq & 0xFFFFF, size - 40, 59, 64, src, dst)
    body = bytes((seq * 13 + i) & 0xFF for i in range(size - len(header)))
    return header + body


def carry(wire: Wire, sender: ServerSession | ClientSession, packets: list[bytes], *, ipv6: bool = False,
          ) -> list[bytes]:
    """Send a batch from one side and return what the other side handed to its TUN, as bytes."""
    receiver = wire.client if sender is wire.server else wire.server
    assert sender.send_ip_packets(packets, ipv6=ipv6) == len(packets)
    wire.pump()
    return [bytes(view) for view in receiver.take_ip_packets()]


def events_of(events: Sequence[object], kind: type) -> list[object]:
    return [e for e in events if isinstance(e, kind)]


def custom_wire(
    method: AuthMethod = AuthMethod.MSCHAP_V2,
    *,
    lcp_echo_interval: float = 30.0,
    channel: ChannelSettings | None = None,
    seed: int = 7,
) -> Wire:
    """Like ``make_wire`` but with LCP echo and SSTP timer knobs."""
    random_bytes = seeded_random(seed)
    channel = channel or ChannelSettings()

    def link() -> LinkSettings:
        return LinkSettings(lcp=LcpSettings(auth_methods=(method,), echo_interval=lcp_echo_interval),
                            ipv6_enabled=True)

    server = ServerSession(
        ServerSessionSettings(cert_hashes=SERVER_CERT_HASHES, link=link(), channel=channel),
        0.0,
        random_bytes=random_bytes,
    )
    client = ClientSession(
        ClientSessionSettings(host="vpn.example.net", username="alice", password="s3cret", link=link(),
                              channel=channel),
        random_bytes=random_bytes,
    )
    wire = Wire(server, client, {"alice": "s3cret"})
    client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    return wire


def assert_established(wire: Wire) -> None:
    assert wire.server.channel is not None and wire.client.channel is not None
    assert wire.server.channel.state is ChannelState.SERVER_CALL_CONNECTED
    assert wire.client.channel.state is ChannelState.CLIENT_CALL_CONNECTED
    assert not wire.server.closed and not wire.client.closed
    assert wire.server.channel.ipv4_open and wire.client.channel.ipv4_open


# ---- establishment ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.value)
def test_full_conversation_reaches_ip(method: AuthMethod) -> None:
    wire = make_wire(method)
    assert_established(wire)

    heads = http_heads(wire)
    request_line = b"SSTP_DUPLEX_POST /sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/ HTTP/1.1\r\n"
    assert heads[True].startswith(request_line)
    assert heads[False].startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n")

    packets = wire_packets(wire)
    assert packets[0] == WirePacket(True, bytes.fromhex("1001000e 00010001 00010006 0001"))
    assert packets[1].data.startswith(CONNECT_ACK_PREFIX + b"\x03") and len(packets[1].data) == 48

    server_kinds = [type(e) for e in wire.server_events]
    assert server_kinds[:3] == [HttpAccepted, LinkEstablished, AuthRequested]
    assert server_kinds.index(AuthSucceeded) < server_kinds.index(BindingVerified)
    assert server_kinds.index(BindingVerified) < server_kinds.index(Ipv4Up)
    assert server_kinds.count(Ipv4AddressNeeded) == 1
    assert SessionClosed not in server_kinds and SessionClosed not in [type(e) for e in wire.client_events]

    established = events_of(wire.server_events, LinkEstablished)
    established += events_of(wire.client_events, LinkEstablished)
    assert [e.auth_method for e in established] == [method, method]  # type: ignore[attr-defined]
    assert wire.server.username == "alice" and wire.client.username == "alice"

    (server_up,) = events_of(wire.server_events, Ipv4Up)
    (client_up,) = events_of(wire.client_events, Ipv4Up)
    assert server_up == Ipv4Up(GATEWAY, CLIENT_ADDRESS, DNS)
    assert client_up == Ipv4Up(CLIENT_ADDRESS, GATEWAY, DNS)
    (server_v6,) = events_of(wire.server_events, Ipv6Up)
    (client_v6,) = events_of(wire.client_events, Ipv6Up)
    assert isinstance(server_v6, Ipv6Up) and isinstance(client_v6, Ipv6Up)
    assert server_v6.peer_interface_id == client_v6.local_interface_id
    assert client_v6.peer_interface_id == server_v6.local_interface_id
    assert server_v6.local_interface_id != client_v6.local_interface_id

    # Both directions carry PPP in FF 03 form: LCP, the auth protocol, IPCP and IPV6CP all appear.
    protocols = {p.ppp_protocol for p in packets if not p.is_control}
    auth_protocol = PROTO_PAP if method is AuthMethod.PAP else PROTO_CHAP
    assert {PROTO_LCP, auth_protocol, PROTO_IPCP, PROTO_IPV6CP} <= protocols
    # Nothing left unsent, no session timers except keepalives.
    assert wire.server.data_to_send() == b"" and wire.client.data_to_send() == b""


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.value)
def test_call_connected_bytes_and_compound_mac(method: AuthMethod) -> None:
    wire = make_wire(method)
    packets = wire_packets(wire)
    ack = find_one(packets, CONNECT_ACK_PREFIX, from_client=False).data
    call_connected = find_one(packets, CALL_CONNECTED_PREFIX, from_client=True).data
    nonce = ack[16:48]

    assert len(call_connected) == 112
    assert call_connected[15] == HashProtocol.SHA256  # both offered → SHA256
    assert call_connected[16:48] == nonce
    assert call_connected[48:80] == hashlib.sha256(CERT_DER).digest()

    (server_ok,) = events_of(wire.server_events, AuthSucceeded)
    (client_ok,) = events_of(wire.client_events, AuthSucceeded)
    assert isinstance(server_ok, AuthSucceeded) and isinstance(client_ok, AuthSucceeded)
    server_hlak = hlak_of(server_ok, server=True)
    client_hlak = hlak_of(client_ok, server=False)
    assert server_hlak == client_hlak
    if method in (AuthMethod.PAP, AuthMethod.CHAP_MD5):
        assert server_ok.keys is None and client_ok.keys is None
        assert client_hlak == bytes(32)
    else:
        assert client_hlak != bytes(32)
        assert client_ok.keys is not None and server_ok.keys is not None
        assert client_ok.keys.send_key == server_ok.keys.recv_key
        assert client_ok.keys.recv_key == server_ok.keys.send_key

    assert call_connected[80:112] == expected_compound_mac(call_connected, client_hlak, HashProtocol.SHA256)
    # A MAC made with any other key would not match: the check above is not vacuous.
    other = bytes(32) if client_hlak != bytes(32) else b"\x01" * 32
    assert call_connected[80:112] != expected_compound_mac(call_connected, other, HashProtocol.SHA256)
    assert events_of(wire.server_events, BindingVerified) == [BindingVerified(HashProtocol.SHA256)]
    assert events_of(wire.client_events, BindingVerified) == [BindingVerified(HashProtocol.SHA256)]


def test_sha1_when_the_server_offers_only_sha1() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2, offered_hashes=HashProtocol.SHA1)
    assert_established(wire)
    packets = wire_packets(wire)
    ack = find_one(packets, CONNECT_ACK_PREFIX, from_client=False).data
    assert ack[15] == 0x01  # bitmask: SHA1 only
    call_connected = find_one(packets, CALL_CONNECTED_PREFIX, from_client=True).data
    assert call_connected[15] == HashProtocol.SHA1
    assert call_connected[48:80] == hashlib.sha1(CERT_DER).digest() + bytes(12)
    (client_ok,) = events_of(wire.client_events, AuthSucceeded)
    assert isinstance(client_ok, AuthSucceeded)
    mac = expected_compound_mac(call_connected, hlak_of(client_ok, server=False), HashProtocol.SHA1)
    assert call_connected[80:112] == mac and mac[20:] == bytes(12)
    assert events_of(wire.server_events, BindingVerified) == [BindingVerified(HashProtocol.SHA1)]


def test_sha1_when_the_client_only_knows_the_sha1_hash() -> None:
    sha1_only = {HashProtocol.SHA1: SERVER_CERT_HASHES[HashProtocol.SHA1]}
    wire = make_wire(AuthMethod.PAP, client_cert_hashes=sha1_only)
    assert_established(wire)
    packets = wire_packets(wire)
    assert find_one(packets, CONNECT_ACK_PREFIX, from_client=False).data[15] == 0x03
    call_connected = find_one(packets, CALL_CONNECTED_PREFIX, from_client=True).data
    assert call_connected[15] == HashProtocol.SHA1
    assert call_connected[80:112] == expected_compound_mac(call_connected, bytes(32), HashProtocol.SHA1)


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.value)
def test_client_sends_call_connected_right_after_auth_success_before_ipcp(method: AuthMethod) -> None:
    wire = make_wire(method)
    packets = wire_packets(wire)
    auth_protocol = PROTO_PAP if method is AuthMethod.PAP else PROTO_CHAP
    success_code = 2 if method is AuthMethod.PAP else 3  # PAP Authenticate-Ack / CHAP Success
    success = next(i for i, p in enumerate(packets)
                   if not p.from_client and p.ppp_protocol == auth_protocol and p.ppp_code == success_code)
    connected = next(i for i, p in enumerate(packets) if p.data.startswith(CALL_CONNECTED_PREFIX))
    client_ncp = [i for i, p in enumerate(packets)
                  if p.from_client and p.ppp_protocol in (PROTO_IPCP, PROTO_IPV6CP)]
    ipcp_acks = [i for i, p in enumerate(packets) if p.ppp_protocol == PROTO_IPCP and p.ppp_code == 2]
    assert success < connected
    # Windows order: Call Connected is the client's first packet after the success.
    assert all(not p.from_client for p in packets[success + 1 : connected])
    assert client_ncp and connected < min(client_ncp)
    assert len(ipcp_acks) == 2 and connected < min(ipcp_acks)


# ---- IP data ------------------------------------------------------------------------------------


IPV4_SIZES = [20, 21, 40, 64, 100, 257, 576, 1000, 1399, 1400]


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.value)
def test_ipv4_batches_both_ways_byte_for_byte(method: AuthMethod) -> None:
    wire = make_wire(method)
    to_client = [ipv4_packet(size, i, from_client=False) for i, size in enumerate(IPV4_SIZES)]
    to_server = [ipv4_packet(size, 100 + i, from_client=True) for i, size in enumerate(reversed(IPV4_SIZES))]

    before = len(wire.segments)
    assert carry(wire, wire.server, to_client) == to_client
    assert carry(wire, wire.client, to_server) == to_server

    # One batch = one write, each packet as `10 00 <len+8> FF 03 00 21 <ip>`.
    (server_write,) = [d for fc, d in wire.segments[before:] if not fc]
    expected = b"".join(struct.pack("!BBH", 0x10, 0, len(p) + 8) + b"\xff\x03\x00\x21" + p for p in to_client)
    assert server_write == expected


def test_largest_ip_packet_4087_and_one_byte_more() -> None:
    wire = make_wire(AuthMethod.PAP)
    biggest = ipv4_packet(4087, 1, from_client=False)
    before = len(wire.segments)
    assert carry(wire, wire.server, [biggest]) == [biggest]
    (write,) = [d for fc, d in wire.segments[before:] if not fc]
    assert write[:8] == bytes.fromhex("10000fff ff030021") and len(write) == 4095
    assert carry(wire, wire.client, [ipv4_packet(4087, 2, from_client=True)]) == [
        ipv4_packet(4087, 2, from_client=True)
    ]

    assert wire.server.channel is not None
    oversize_before = wire.server.channel.dropped_tx_oversize
    too_big = ipv4_packet(4088, 3, from_client=False)
    assert wire.server.send_ip_packets([too_big, biggest]) == 1
    assert wire.server.channel.dropped_tx_oversize == oversize_before + 1
    wire.pump()
    assert [bytes(v) for v in wire.client.take_ip_packets()] == [biggest]


@pytest.mark.parametrize("method", [AuthMethod.PAP, AuthMethod.MSCHAP_V2], ids=lambda m: m.value)
def test_ipv6_both_ways(method: AuthMethod) -> None:
    wire = make_wire(method)
    sizes = [40, 41, 80, 1280, 1400, 4087]
    to_client = [ipv6_packet(size, i, from_client=False) for i, size in enumerate(sizes)]
    to_server = [ipv6_packet(size, 50 + i, from_client=True) for i, size in enumerate(sizes)]
    before = len(wire.segments)
    assert carry(wire, wire.server, to_client, ipv6=True) == to_client
    assert carry(wire, wire.client, to_server, ipv6=True) == to_server
    (server_write,) = [d for fc, d in wire.segments[before:] if not fc]
    assert server_write[4:8] == b"\xff\x03\x00\x57"
    # IPv4 and IPv6 interleaved in one read come out in order.
    v4 = ipv4_packet(60, 9, from_client=True)
    assert wire.client.send_ip_packets([v4]) == 1
    assert wire.client.send_ip_packets([to_server[0]], ipv6=True) == 1
    wire.pump()
    assert [bytes(v) for v in wire.server.take_ip_packets()] == [v4, to_server[0]]


def test_ip_stream_split_at_every_byte_boundary() -> None:
    wire = make_wire(AuthMethod.PAP)
    batch = [ipv4_packet(size, i, from_client=True) for i, size in enumerate((20, 33, 1400))]
    assert wire.client.send_ip_packets(batch) == 3
    stream = wire.client.data_to_send()
    received: list[bytes] = []
    for chunk_size in (1, 3, 7, 500):
        for start in range(0, len(stream), chunk_size):
            wire.server.receive_data(stream[start : start + chunk_size], wire.now)
            received.extend(bytes(v) for v in wire.server.take_ip_packets())
            assert wire.server.channel is not None and wire.server.channel.buffered_bytes < 4095
    assert received == batch * 4


def test_counters_match_what_was_sent() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2)
    server, client = wire.server, wire.client
    assert (server.rx_packets, server.tx_packets, client.rx_packets, client.tx_packets) == (0, 0, 0, 0)
    down = [ipv4_packet(size, i, from_client=False) for i, size in enumerate((20, 500, 1400))]
    up = [ipv4_packet(size, i, from_client=True) for i, size in enumerate((28, 1000))]
    up6 = [ipv6_packet(300, 1, from_client=True)]
    carry(wire, server, down)
    carry(wire, client, up)
    carry(wire, client, up6, ipv6=True)
    assert (server.tx_packets, server.tx_bytes) == (3, 1920)
    assert (client.rx_packets, client.rx_bytes) == (3, 1920)
    assert (client.tx_packets, client.tx_bytes) == (3, 1328)
    assert (server.rx_packets, server.rx_bytes) == (3, 1328)


def test_ip_before_ipcp_opens_is_not_delivered() -> None:
    """Binding verified, but IPCP never completes (its frames are lost): no IPv4 either way."""
    wire = make_wire(AuthMethod.MSCHAP_V2, ipv6=False, start=False)

    def drop_ipcp(data: bytes) -> bytes:
        packets, rest = split_sstp(data)
        assert rest == b"" or data.startswith(b"SSTP_DUPLEX_POST")
        if rest:
            return data
        return b"".join(p for p in packets if p[1] & 1 or p[6:8] != b"\x80\x21")

    wire.tamper_to_server = drop_ipcp
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    server_channel = wire.server.channel
    assert server_channel is not None and server_channel.state is ChannelState.SERVER_CALL_CONNECTED
    assert events_of(wire.server_events, BindingVerified) and not events_of(wire.server_events, Ipv4Up)
    assert not events_of(wire.client_events, Ipv4Up)

    packet = ipv4_packet(60, 1, from_client=True)
    assert wire.server.send_ip_packets([packet]) == 0
    assert wire.client.send_ip_packets([packet]) == 0
    gated = server_channel.dropped_rx_gated
    wire.server.receive_data(struct.pack("!BBH", 0x10, 0, 68) + b"\xff\x03\x00\x21" + packet, wire.now)
    assert wire.server.take_ip_packets() == []
    assert server_channel.dropped_rx_gated == gated + 1
    assert wire.server.rx_packets == 0


# ---- teardown -----------------------------------------------------------------------------------


def teardown_packets(wire: Wire, since: int) -> list[WirePacket]:
    stream = Wire(wire.server, wire.client, {}, segments=wire.segments[since:])
    # The segments after establishment hold whole packets only; no HTTP head to skip.
    packets: list[WirePacket] = []
    for from_client, data in stream.segments:
        whole, rest = split_sstp(data)
        assert rest == b""
        packets.extend(WirePacket(from_client, p) for p in whole)
    return packets


@pytest.mark.parametrize("closer", ["server", "client"])
def test_clean_teardown_from_either_side(closer: str) -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2)
    since = len(wire.segments)
    closing = wire.server if closer == "server" else wire.client
    other = wire.client if closer == "server" else wire.server
    closing_events = wire.server_events if closer == "server" else wire.client_events
    other_events = wire.client_events if closer == "server" else wire.server_events
    from_closer = closer == "client"

    closing.close(wire.now, "administrator hung up")
    wire.pump()
    packets = teardown_packets(wire, since)
    term_req, term_ack, disconnect, disconnect_ack = packets
    assert term_req.from_client is from_closer and term_req.data[4:9] == b"\xff\x03\xc0\x21\x05"
    assert term_ack.from_client is not from_closer and term_ack.data[4:9] == b"\xff\x03\xc0\x21\x06"
    assert term_ack.data[9] == term_req.data[9]  # same identifier
    assert disconnect == WirePacket(from_closer, CALL_DISCONNECT)
    assert disconnect_ack == WirePacket(not from_closer, DISCONNECT_ACK)

    # The closer got its Disconnect Ack and closes at once; the other side waits T2 (1 s).
    assert closing.closed and closing_events[-1] == SessionClosed("administrator hung up", by_peer=False)
    assert not other.closed and other.get_timer() == pytest.approx(wire.now + 1.0)
    wire.advance(1.0)
    assert other.closed
    last = other_events[-1]
    assert isinstance(last, SessionClosed) and last.by_peer and "Terminate-Request" in last.reason
    assert sum(isinstance(e, SessionClosed) for e in other_events) == 1
    assert closing.get_timer() is None and other.get_timer() is None
    assert len(wire.segments) == since + 4  # nothing more was said
    # Closing twice changes nothing.
    closing.close(wire.now, "again")
    assert closing.data_to_send() == b"" and closing.next_event() is None


def test_ip_stops_at_teardown() -> None:
    wire = make_wire(AuthMethod.PAP)
    wire.server.close(wire.now, "bye")
    wire.pump()
    assert wire.server.send_ip_packets([ipv4_packet(40, 1, from_client=False)]) == 0
    assert wire.client.send_ip_packets([ipv4_packet(40, 1, from_client=True)]) == 0


# ---- keepalive ----------------------------------------------------------------------------------


def test_lcp_echo_keeps_the_session_up_for_ten_minutes() -> None:
    wire = custom_wire(AuthMethod.MSCHAP_V2, lcp_echo_interval=30.0)
    since = len(wire.segments)
    wire.advance(600.0, step=1.0)
    assert_established(wire)
    packets = teardown_packets(wire, since)
    for from_client in (True, False):
        requests = [p for p in packets if p.from_client is from_client
                    and p.ppp_protocol == PROTO_LCP and p.ppp_code == 9]
        replies = [p for p in packets if p.from_client is not from_client
                   and p.ppp_protocol == PROTO_LCP and p.ppp_code == 10]
        assert len(requests) == 20  # every 30 s
        assert [r.data[9] for r in replies] == [r.data[9] for r in requests]  # each one answered
    # LCP echo traffic restarts the SSTP hello timer, so SSTP echo is not needed.
    assert not [p for p in packets if p.is_control]
    assert carry(wire, wire.server, [ipv4_packet(100, 1, from_client=False)]) == [
        ipv4_packet(100, 1, from_client=False)
    ]


def test_sstp_echo_keeps_the_session_up_for_ten_minutes() -> None:
    wire = custom_wire(AuthMethod.PAP, lcp_echo_interval=0.0)
    since = len(wire.segments)
    wire.advance(600.0, step=1.0)
    assert_established(wire)
    packets = teardown_packets(wire, since)
    assert packets, "nothing was sent in ten minutes"
    assert {p.data for p in packets} == {ECHO_REQUEST, ECHO_RESPONSE}
    for side in (True, False):
        requests = [p for p in packets if p.from_client is side and p.data == ECHO_REQUEST]
        answers = [p for p in packets if p.from_client is not side and p.data == ECHO_RESPONSE]
        assert 9 <= len(requests) <= 10  # one per 60 s hello interval
        assert len(answers) == len(requests)
    assert not events_of(wire.server_events, SessionClosed)


def iter_timers(wire: Wire) -> Iterator[float]:
    for session in (wire.server, wire.client):
        timer = session.get_timer()
        if timer is not None:
            yield timer


def test_established_session_always_has_a_keepalive_timer() -> None:
    wire = custom_wire(AuthMethod.PAP, lcp_echo_interval=0.0)
    timers = list(iter_timers(wire))
    assert len(timers) == 2 and all(t <= wire.now + 60.0 for t in timers)


def test_call_connected_before_the_verifier_answers_is_checked_afterwards() -> None:
    """A Call Connected that arrives while the server still waits for its verifier (MS-SSTP allows
    the client to send it as soon as it believes auth is done) is held and verified with the HLAK."""
    wire = make_wire(AuthMethod.PAP, start=False)
    wire.answer_auth = False
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    (requested,) = events_of(wire.server_events, AuthRequested)
    assert isinstance(requested, AuthRequested)
    ack = find_one(wire_packets(wire), CONNECT_ACK_PREFIX, from_client=False).data
    unsigned = CALL_CONNECTED_PREFIX + bytes([HashProtocol.SHA256]) + ack[16:48]
    unsigned += hashlib.sha256(CERT_DER).digest() + bytes(32)
    early = unsigned[:80] + expected_compound_mac(unsigned, bytes(32), HashProtocol.SHA256)

    server = wire.server
    server.receive_data(early, wire.now)
    assert server.data_to_send() == b""
    channel = server.channel
    assert channel is not None and channel.state is ChannelState.SERVER_CALL_CONNECTED_PENDING
    assert server.next_event() is None

    server.decide(decide_with_password(requested.request, "s3cret"), wire.now)
    out, rest = split_sstp(server.data_to_send())
    assert rest == b"" and out[0][4:9] == b"\xff\x03\xc0\x23\x02"  # PAP Authenticate-Ack
    assert channel.state.value == "Server_Call_Connected"  # by value: `is` above narrowed the type
    kinds: list[object] = []
    while (event := server.next_event()) is not None:
        kinds.append(event)
    assert BindingVerified(HashProtocol.SHA256) in kinds


@pytest.mark.parametrize("method", [AuthMethod.PAP, AuthMethod.MSCHAP_V2], ids=lambda m: m.value)
def test_lcp_renegotiation_authenticates_again_and_reopens_ip(method: AuthMethod) -> None:
    """RFC 1661: a Configure-Request in Opened restarts LCP; IP is shut until the NCPs are back."""
    wire = make_wire(method)
    conf_req = next(p for p in wire_packets(wire)
                    if p.from_client and p.ppp_protocol == PROTO_LCP and p.ppp_code == 1)
    server_events = len(wire.server_events)
    wire.server.receive_data(conf_req.data, wire.now)
    assert wire.server.channel is not None and not wire.server.channel.ipv4_open
    assert wire.server.send_ip_packets([ipv4_packet(40, 1, from_client=False)]) == 0
    wire.pump()
    again = [type(e) for e in wire.server_events[server_events:]]
    assert again.count(AuthRequested) == 1 and again.count(AuthSucceeded) == 1
    assert BindingVerified not in again and SessionClosed not in again  # the call itself stays up
    assert_established(wire)
    packet = ipv4_packet(300, 2, from_client=False)
    assert carry(wire, wire.server, [packet]) == [packet]
    packet6 = ipv6_packet(300, 3, from_client=True)
    assert carry(wire, wire.client, [packet6], ipv6=True) == [packet6]
