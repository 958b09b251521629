"""Sessions that fail or are torn down: each ends with the spec's message on the wire and a SessionClosed.

Expected bytes follow MS-SSTP §2.2 as summarised in the protocol notes §2.3; the timers are the
MS-SSTP defaults (negotiation 60 s, abort T1/T2 3/1 s, disconnect T1/T2 5/1 s, hello 60 s).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from tests.proto.test_session import (
    CALL_CONNECTED_PREFIX,
    CALL_DISCONNECT,
    DISCONNECT_ACK,
    ECHO_REQUEST,
    PROTO_CHAP,
    PROTO_LCP,
    PROTO_PAP,
    WirePacket,
    custom_wire,
    events_of,
    find_one,
    ipv4_packet,
    split_sstp,
    wire_packets,
)
from tests.support.wire import SERVER_CERT_HASHES, Wire, make_wire, seeded_random
from vpnd.proto.ppp.auth.types import AuthFailed, AuthMethod
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.session import (
    BindingVerified,
    ClientSession,
    ClientSessionSettings,
    HttpAccepted,
    Ipv4Up,
    Notice,
    ServerSession,
    ServerSessionSettings,
    SessionClosed,
)
from vpnd.proto.sstp.channel import ChannelState
from vpnd.proto.sstp.packets import HashProtocol

HTTP_REQUEST = (
    b"SSTP_DUPLEX_POST /sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/ HTTP/1.1\r\n"
    b"Host: vpn.example.net\r\n"
    b"Content-Length: 18446744073709551615\r\n"
    b"SSTPCORRELATIONID: {48B82435-1E2C-4B43-A5A4-5C3A9B0E2F11}\r\n"
    b"\r\n"
)
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n"
CONNECT_REQUEST = bytes.fromhex("1001000e 00010001 00010006 0001")
CONNECT_REQUEST_NOT_PPP = bytes.fromhex("1001000e 00010001 00010006 0002")
NAK_NOT_PPP = bytes.fromhex("10010016 00030001 0002000e 000000 01 00000004 0002")
ABORT_BINDING = bytes.fromhex("10010014 00050001 0002000c 000000 03 00000004")
ABORT_RETRY_EXCEEDED = bytes.fromhex("10010014 00050001 0002000c 000000 02 00000006")
ABORT_TIMEOUT = bytes.fromhex("10010014 00050001 0002000c 000000 02 00000008")
ABORT_BARE = bytes.fromhex("10010008 00050000")
PEER_ABORT = bytes.fromhex("10010014 00050001 0002000c 000000 02 00000007")


def abort_with(attrib_id: int, status: int) -> bytes:
    return bytes.fromhex("10010014 00050001 0002000c 000000") + bytes([attrib_id]) + status.to_bytes(4, "big")


def new_server(now: float = 0.0, *, method: AuthMethod = AuthMethod.MSCHAP_V2, http_timeout: float = 60.0,
               ) -> ServerSession:
    return ServerSession(
        ServerSessionSettings(
            cert_hashes=SERVER_CERT_HASHES,
            link=LinkSettings(lcp=LcpSettings(auth_methods=(method,))),
            http_timeout=http_timeout,
        ),
        now,
        random_bytes=seeded_random(3),
    )


def new_client() -> ClientSession:
    return ClientSession(
        ClientSessionSettings(host="vpn.example.net", username="alice", password="s3cret",
                              link=LinkSettings(lcp=LcpSettings(auth_methods=(AuthMethod.MSCHAP_V2,)))),
        random_bytes=seeded_random(4),
    )


def drain(session: ServerSession | ClientSession) -> list[object]:
    events: list[object] = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def run_timers(session: ServerSession | ClientSession, until: float) -> list[tuple[float, bytes]]:
    """Fire the session's timers up to ``until``; returns (when, bytes sent) for each firing."""
    sent: list[tuple[float, bytes]] = []
    for _ in range(1000):
        deadline = session.get_timer()
        if deadline is None or deadline > until:
            return sent
        session.handle_timer(deadline)
        data = session.data_to_send()
        if data:
            sent.append((deadline, data))
    raise AssertionError("timers kept firing")


def server_after_http(now: float = 0.0) -> ServerSession:
    server = new_server(now)
    server.receive_data(HTTP_REQUEST, now)
    assert server.data_to_send().startswith(b"HTTP/1.1 200 OK\r\n")
    assert [type(e) for e in drain(server)] == [HttpAccepted]
    assert server.channel is not None
    assert server.channel.state is ChannelState.SERVER_CONNECT_REQUEST_PENDING
    return server


def only_closed(events: Sequence[object]) -> SessionClosed:
    closed = [e for e in events if isinstance(e, SessionClosed)]
    assert len(closed) == 1, events
    assert isinstance(closed[0], SessionClosed)
    return closed[0]


def server_packets_after(wire: Wire, since: int) -> list[bytes]:
    packets: list[bytes] = []
    for from_client, data in wire.segments[since:]:
        if not from_client:
            packets.extend(split_sstp(data)[0])
    return packets


# ---- authentication failures --------------------------------------------------------------------


def test_wrong_password_mschapv2_failure_e691() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2, server_password="not-the-password")
    packets = wire_packets(wire)
    failures = [p for p in packets if not p.from_client and p.ppp_protocol == PROTO_CHAP and p.ppp_code == 4]
    assert len(failures) == 1
    text = failures[0].data[12:].decode("ascii")
    assert re.fullmatch(r"E=691 R=0 C=[0-9A-F]{32} V=3( M=.*)?", text), text
    # The Failure's PPP length covers exactly the message.
    assert int.from_bytes(failures[0].data[10:12], "big") == 4 + len(text)
    # No binding, no IP; the link is terminated and the call disconnected.
    assert not any(p.data.startswith(CALL_CONNECTED_PREFIX) for p in packets)
    assert WirePacket(False, CALL_DISCONNECT) in packets and WirePacket(True, DISCONNECT_ACK) in packets
    wire.advance(2.0)
    for events in (wire.server_events, wire.client_events):
        closed = only_closed(events)
        assert "authentication" in closed.reason and not closed.by_peer
        assert events_of(events, AuthFailed) and not events_of(events, BindingVerified)
        assert not events_of(events, Ipv4Up)
    assert "691" in only_closed(wire.client_events).reason
    assert wire.server.get_timer() is None and wire.client.get_timer() is None


def test_wrong_password_pap_nak() -> None:
    wire = make_wire(AuthMethod.PAP, server_password="not-the-password")
    packets = wire_packets(wire)
    naks = [p for p in packets if not p.from_client and p.ppp_protocol == PROTO_PAP and p.ppp_code == 3]
    assert len(naks) == 1
    request = next(p for p in packets if p.from_client and p.ppp_protocol == PROTO_PAP)
    assert naks[0].data[9] == request.data[9]  # Nak answers the request's identifier
    message_length = naks[0].data[12]
    assert naks[0].data[13 : 13 + message_length] == b"Authentication failed"
    assert not any(p.data.startswith(CALL_CONNECTED_PREFIX) for p in packets)
    wire.advance(2.0)
    for events in (wire.server_events, wire.client_events):
        closed = only_closed(events)
        assert "authentication failed" in closed.reason
    assert wire.server.closed and wire.client.closed


@pytest.mark.parametrize("method", [AuthMethod.CHAP_MD5, AuthMethod.MSCHAP_V1], ids=lambda m: m.value)
def test_wrong_password_chap_failure(method: AuthMethod) -> None:
    wire = make_wire(method, server_password="not-the-password")
    packets = wire_packets(wire)
    assert [p.ppp_code for p in packets if not p.from_client and p.ppp_protocol == PROTO_CHAP] == [1, 4]
    wire.advance(2.0)
    for events in (wire.server_events, wire.client_events):
        assert "authentication failed" in only_closed(events).reason


def test_simultaneous_terminate_after_auth_failure_is_acknowledged() -> None:
    """Both ends send Terminate-Request after a failure; each answers the other's before the Disconnect."""
    wire = make_wire(AuthMethod.MSCHAP_V2, server_password="not-the-password")
    packets = wire_packets(wire)
    lcp = [(p.from_client, p.ppp_code, p.data[9]) for p in packets if p.ppp_protocol == PROTO_LCP
           and p.ppp_code in (5, 6)]
    server_req = next(ident for fc, code, ident in lcp if not fc and code == 5)
    client_req = next(ident for fc, code, ident in lcp if fc and code == 5)
    assert (True, 6, server_req) in lcp
    assert (False, 6, client_req) in lcp
    disconnect = packets.index(WirePacket(False, CALL_DISCONNECT))
    server_ack = packets.index(next(p for p in packets if not p.from_client and p.ppp_protocol == PROTO_LCP
                                    and p.ppp_code == 6))
    assert server_ack < disconnect


# ---- crypto binding failures --------------------------------------------------------------------


def flip_call_connected_byte(offset: int, value: int | None = None) -> object:
    def tamper(data: bytes) -> bytes:
        start = data.find(CALL_CONNECTED_PREFIX)
        if start < 0:
            return data
        mutable = bytearray(data)
        if value is None:
            mutable[start + offset] ^= 0x01
        else:
            mutable[start + offset] = value
        return bytes(mutable)

    return tamper


BINDING_CASES = {
    "nonce": (20, None, "nonce"),
    "cert-hash": (50, None, "certificate hash"),
    "compound-mac": (90, None, "compound MAC"),
    "compound-mac-pad": (111, None, "compound MAC"),
    "hash-protocol": (15, 0x01, "hash protocol not offered"),
}


@pytest.mark.parametrize("case", list(BINDING_CASES))
def test_tampered_call_connected_is_aborted(case: str) -> None:
    offset, value, words = BINDING_CASES[case]
    offered = HashProtocol.SHA256 if case == "hash-protocol" else HashProtocol.SHA1 | HashProtocol.SHA256
    wire = make_wire(AuthMethod.MSCHAP_V2, offered_hashes=offered, start=False)
    if case == "compound-mac-pad":
        # The SHA1 MAC is 20 bytes + 12 zero bytes; a non-zero pad must fail too.
        wire = make_wire(AuthMethod.MSCHAP_V2, offered_hashes=HashProtocol.SHA1, start=False)
    wire.tamper_to_server = flip_call_connected_byte(offset, value)  # type: ignore[assignment]
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    assert_binding_abort(wire, words)


def assert_binding_abort(wire: Wire, words: str) -> None:
    packets = wire_packets(wire)
    connected = next(i for i, p in enumerate(packets) if p.data.startswith(CALL_CONNECTED_PREFIX))
    server_after = [p.data for p in packets[connected:] if not p.from_client]
    assert server_after[0] == ABORT_BINDING
    assert WirePacket(True, ABORT_BARE) in packets[connected:]  # the client answers the Abort
    assert not events_of(wire.server_events, BindingVerified)
    assert wire.server.channel is not None
    assert wire.server.channel.state is ChannelState.CALL_ABORT_TIMEOUT_PENDING
    # No IP ever reaches the client through a failed binding.
    assert wire.server.send_ip_packets([ipv4_packet(40, 1, from_client=False)]) == 0
    wire.advance(1.0)
    server_closed = only_closed(wire.server_events)
    assert words in server_closed.reason and "crypto binding failed" in server_closed.reason
    assert not server_closed.by_peer
    client_closed = only_closed(wire.client_events)
    assert client_closed.by_peer and "VALUE_NOT_SUPPORTED" in client_closed.reason


def test_client_sees_another_certificate() -> None:
    proxy_cert = {HashProtocol.SHA256: b"\x5a" * 32, HashProtocol.SHA1: b"\xa5" * 20}
    wire = make_wire(AuthMethod.MSCHAP_V2, client_cert_hashes=proxy_cert)
    call_connected = find_one(wire_packets(wire), CALL_CONNECTED_PREFIX, from_client=True).data
    assert call_connected[48:80] == b"\x5a" * 32
    assert_binding_abort(wire, "certificate hash")
    assert "TLS-inspecting proxy" in only_closed(wire.server_events).reason


@pytest.mark.parametrize("method", [AuthMethod.PAP, AuthMethod.MSCHAP_V2], ids=lambda m: m.value)
def test_tampered_mac_for_each_hlak_kind(method: AuthMethod) -> None:
    wire = make_wire(method, start=False)
    wire.tamper_to_server = flip_call_connected_byte(80)  # type: ignore[assignment]
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    assert_binding_abort(wire, "compound MAC")


def test_no_usable_hash_protocol_client_aborts() -> None:
    """The server offers SHA1 only, the client knows only the SHA256 hash of what it saw."""
    sha256_only = {HashProtocol.SHA256: SERVER_CERT_HASHES[HashProtocol.SHA256]}
    wire = make_wire(AuthMethod.PAP, offered_hashes=HashProtocol.SHA1, client_cert_hashes=sha256_only)
    packets = wire_packets(wire)
    ack = next(p for p in packets if p.message_type == 2)
    assert ack.data[15] == 0x01
    after_ack = [p for p in packets[packets.index(ack):] if p.from_client]
    assert after_ack[0].data == abort_with(0x04, 0x04)
    assert WirePacket(False, ABORT_BARE) in packets
    wire.advance(3.0)
    client_closed = only_closed(wire.client_events)
    assert "hash protocol" in client_closed.reason and not client_closed.by_peer
    assert only_closed(wire.server_events).by_peer


def test_server_refuses_to_offer_a_hash_it_cannot_check() -> None:
    """A settings error is reported when the session is built, not on the first peer bytes."""
    with pytest.raises(ValueError, match="no certificate hash"):
        ServerSession(
            ServerSessionSettings(
                cert_hashes={HashProtocol.SHA1: SERVER_CERT_HASHES[HashProtocol.SHA1]},
                offered_hashes=HashProtocol.SHA256,
                link=LinkSettings(lcp=LcpSettings(auth_methods=(AuthMethod.PAP,))),
            ),
            0.0,
        )


# ---- data gating --------------------------------------------------------------------------------


def test_data_before_binding_is_dropped_and_counted() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2, start=False)
    wire.answer_auth = False  # the server waits for its verifier: Call Connected cannot come yet
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    server_channel = wire.server.channel
    assert server_channel is not None
    assert server_channel.state is ChannelState.SERVER_CALL_CONNECTED_PENDING
    packet = ipv4_packet(60, 1, from_client=True)
    data_packet = bytes.fromhex("10000044 ff030021") + packet
    ipv6_packet = bytes.fromhex("1000002c ff030057") + bytes(36)
    wire.server.receive_data(data_packet + data_packet + ipv6_packet, wire.now)
    assert wire.server.take_ip_packets() == []
    assert server_channel.dropped_rx_gated == 3
    assert wire.server.rx_packets == 0 and wire.server.rx_bytes == 0
    assert wire.server.send_ip_packets([packet]) == 0
    assert wire.client.send_ip_packets([packet]) == 0
    assert wire.server.data_to_send() == b""  # dropped silently, nothing answered
    assert not wire.server.closed


# ---- Connect Request refusals -------------------------------------------------------------------


def test_connect_request_with_another_protocol_is_nakked_then_aborted() -> None:
    server = server_after_http()
    for attempt in range(3):
        server.receive_data(CONNECT_REQUEST_NOT_PPP, float(attempt))
        assert server.data_to_send() == NAK_NOT_PPP
        assert [type(e) for e in drain(server)] == [Notice]
    server.receive_data(CONNECT_REQUEST_NOT_PPP, 3.0)
    assert server.data_to_send() == ABORT_RETRY_EXCEEDED
    assert not server.closed
    sent = run_timers(server, 10.0)
    assert sent == []
    closed = only_closed(drain(server))
    assert "refused 4 times" in closed.reason and "VALUE_NOT_SUPPORTED" in closed.reason
    assert server.closed and server.get_timer() is None


def test_connect_request_after_a_nak_can_still_succeed() -> None:
    server = server_after_http()
    server.receive_data(CONNECT_REQUEST_NOT_PPP, 0.0)
    assert server.data_to_send() == NAK_NOT_PPP
    server.receive_data(CONNECT_REQUEST, 1.0)
    out = server.data_to_send()
    assert out[:16] == bytes.fromhex("10010030 00020001 00040028 00000003")
    assert server.channel is not None and server.channel.state is ChannelState.SERVER_CALL_CONNECTED_PENDING


def test_connect_request_pipelined_behind_the_http_head() -> None:
    server = new_server()
    server.receive_data(HTTP_REQUEST + CONNECT_REQUEST, 0.0)
    out = server.data_to_send()
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    packets, tail = split_sstp(rest)
    assert tail == b"" and packets[0][:16] == bytes.fromhex("10010030 00020001 00040028 00000003")
    assert packets[1][4:8] == bytes.fromhex("ff03c021")  # LCP starts right away


def test_client_gives_up_after_repeated_naks() -> None:
    client = new_client()
    client.start(SERVER_CERT_HASHES, 0.0)
    client.data_to_send()
    client.receive_data(HTTP_OK, 0.0)
    assert client.data_to_send() == CONNECT_REQUEST
    for attempt in range(3):
        client.receive_data(NAK_NOT_PPP, float(attempt))
        assert client.data_to_send() == CONNECT_REQUEST
    client.receive_data(NAK_NOT_PPP, 3.0)
    assert client.data_to_send() == ABORT_RETRY_EXCEEDED
    run_timers(client, 10.0)
    assert "refused the Connect Request 4 times" in only_closed(drain(client)).reason


# ---- timeouts -----------------------------------------------------------------------------------


def test_http_timeout_without_a_request() -> None:
    server = new_server(100.0, http_timeout=60.0)
    assert server.get_timer() == 160.0
    server.receive_data(b"SSTP_DUPLEX_POST /sra_", 120.0)  # an unfinished head does not extend it
    assert run_timers(server, 159.9) == []
    assert not server.closed
    assert run_timers(server, 160.0) == []  # nothing is said: there is no SSTP channel yet
    closed = only_closed(drain(server))
    assert closed == SessionClosed("no SSTP_DUPLEX_POST within 60 s", by_peer=False)
    assert server.get_timer() is None
    server.receive_data(b"more", 161.0)
    assert server.data_to_send() == b"" and drain(server) == []


def test_client_http_timeout_without_an_answer() -> None:
    client = new_client()
    client.start(SERVER_CERT_HASHES, 5.0)
    assert client.data_to_send().startswith(b"SSTP_DUPLEX_POST ")
    assert client.get_timer() == 65.0
    run_timers(client, 65.0)
    assert only_closed(drain(client)) == SessionClosed("no HTTP answer within 60 s", by_peer=False)


def test_negotiation_timeout_waiting_for_connect_request() -> None:
    server = server_after_http(10.0)
    assert server.get_timer() == 70.0
    sent = run_timers(server, 70.0)
    assert sent == [(70.0, ABORT_TIMEOUT)]
    assert not server.closed
    assert run_timers(server, 72.9) == []
    assert not server.closed
    run_timers(server, 73.0)  # Abort T1: 3 s without an answer
    closed = only_closed(drain(server))
    assert "negotiation timeout" in closed.reason and "Connect Request" in closed.reason


def test_negotiation_timeout_waiting_for_call_connected() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2, start=False)

    def drop_call_connected(data: bytes) -> bytes:
        start = data.find(CALL_CONNECTED_PREFIX)
        return data if start < 0 else data[:start] + data[start + 112 :]

    wire.tamper_to_server = drop_call_connected
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    assert wire.client.channel is not None and wire.client.channel.state is ChannelState.CLIENT_CALL_CONNECTED
    assert wire.server.channel is not None
    assert wire.server.channel.state is ChannelState.SERVER_CALL_CONNECTED_PENDING
    assert not events_of(wire.server_events, Ipv4Up)  # IPCP may open, but IP stays shut
    since = len(wire.segments)
    wire.advance(59.5)
    assert [p for p in server_packets_after(wire, since) if p[1] & 1] == []
    wire.advance(0.5)
    assert next(p for p in server_packets_after(wire, since) if p[1] & 1) == ABORT_TIMEOUT
    wire.advance(1.0)  # the client answers at once, so T2 (1 s) ends it
    closed = only_closed(wire.server_events)
    assert "negotiation timeout" in closed.reason and "Call Connected" in closed.reason
    assert only_closed(wire.client_events).by_peer


def test_negotiation_timeout_client_waiting_for_ack() -> None:
    client = new_client()
    client.start(SERVER_CERT_HASHES, 0.0)
    client.data_to_send()
    client.receive_data(HTTP_OK, 1.0)
    assert client.data_to_send() == CONNECT_REQUEST
    assert client.get_timer() == 61.0
    assert run_timers(client, 61.0) == [(61.0, ABORT_TIMEOUT)]
    assert not client.closed
    run_timers(client, 64.0)
    closed = only_closed(drain(client))
    assert "negotiation timeout" in closed.reason and "Connect Ack" in closed.reason


def test_negotiation_timeout_client_waiting_for_authentication() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2, start=False)
    wire.answer_auth = False
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    since = len(wire.segments)
    wire.advance(65.0)
    client_sent = [p for fc, d in wire.segments[since:] if fc for p in split_sstp(d)[0]]
    assert ABORT_TIMEOUT in client_sent
    assert wire.client.closed and wire.server.closed


# ---- dead peers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("deaf", ["client", "server"])
def test_dead_peer_is_dropped_without_call_abort(deaf: str) -> None:
    wire = custom_wire(AuthMethod.PAP, lcp_echo_interval=0.0)
    # From now on the deaf side hears nothing; the other side still hears everything.
    if deaf == "client":
        wire.tamper_to_client = lambda data: b""
    else:
        wire.tamper_to_server = lambda data: b""
    deaf_session = wire.client if deaf == "client" else wire.server
    deaf_events = wire.client_events if deaf == "client" else wire.server_events
    since = len(wire.segments)
    wire.advance(119.0, step=1.0)
    assert not deaf_session.closed
    wire.advance(1.0)
    assert deaf_session.closed
    closed = only_closed(deaf_events)
    assert "dead peer" in closed.reason and not closed.by_peer
    said = [p for fc, d in wire.segments[since:] if fc is (deaf == "client") for p in split_sstp(d)[0]]
    assert said == [ECHO_REQUEST]  # one Echo Request at 60 s, then silence: no Call Abort


def test_lcp_echo_failure_takes_the_link_down() -> None:
    wire = custom_wire(AuthMethod.PAP, lcp_echo_interval=30.0)

    def drop_echo_replies(data: bytes) -> bytes:
        packets, rest = split_sstp(data)
        return b"".join(p for p in packets if p[4:9] != bytes.fromhex("ff03c0210a")) + rest

    wire.tamper_to_client = drop_echo_replies
    since = len(wire.segments)
    wire.advance(125.0, step=1.0)
    client_sent = [p for fc, d in wire.segments[since:] if fc for p in split_sstp(d)[0]]
    echo_requests = [p for p in client_sent if p[4:9] == bytes.fromhex("ff03c02109")]
    assert len(echo_requests) == 3
    # A courtesy Terminate-Request, then the connection is dropped at once: no Call Disconnect
    # and no waiting for acknowledgements from a peer that stopped answering.
    assert any(p[4:9] == bytes.fromhex("ff03c02105") for p in client_sent)
    assert CALL_DISCONNECT not in client_sent
    assert wire.client.closed
    closed = only_closed(wire.client_events)
    assert "echo" in closed.reason and not closed.by_peer
    wire.advance(10.0, step=1.0)  # the server got the Terminate-Request and ends its side too
    assert wire.server.closed
    assert only_closed(wire.server_events).by_peer


# ---- the peer ends the call ---------------------------------------------------------------------


def test_peer_terminate_request() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2)
    server = wire.server
    server.receive_data(bytes.fromhex("1000000c ff03c021 05770004"), wire.now)
    assert server.data_to_send() == bytes.fromhex("1000000c ff03c021 06770004")
    assert server.channel is not None and not server.channel.ipv4_open
    assert server.send_ip_packets([ipv4_packet(40, 1, from_client=False)]) == 0
    sent = run_timers(server, wire.now + 3.0)  # RFC 1661: Stopping lasts one restart interval
    assert sent == [(wire.now + 3.0, CALL_DISCONNECT)]
    server.receive_data(DISCONNECT_ACK, wire.now + 3.1)
    assert only_closed(drain(server)) == SessionClosed("peer sent Terminate-Request", by_peer=True)
    assert server.get_timer() is None


def established_server() -> tuple[ServerSession, float]:
    wire = make_wire(AuthMethod.MSCHAP_V2)
    wire.server_events.clear()
    return wire.server, wire.now


def pending_server() -> tuple[ServerSession, float]:
    wire = make_wire(AuthMethod.MSCHAP_V2, start=False)
    wire.answer_auth = False
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    assert wire.server.channel is not None
    assert wire.server.channel.state is ChannelState.SERVER_CALL_CONNECTED_PENDING
    return wire.server, wire.now


def connect_request_pending_server() -> tuple[ServerSession, float]:
    return server_after_http(), 0.0


def terminating_server() -> tuple[ServerSession, float]:
    server, now = established_server()
    server.close(now, "maintenance")
    assert server.data_to_send()[4:9] == bytes.fromhex("ff03c02105")
    assert server.channel is not None and server.channel.state is ChannelState.SERVER_CALL_CONNECTED
    return server, now


def disconnecting_server() -> tuple[ServerSession, float]:
    server, now = established_server()
    server.close(now, "maintenance")
    (term_req,) = split_sstp(server.data_to_send())[0]
    server.receive_data(bytes.fromhex("1000000c ff03c021 06") + term_req[9:10] + b"\x00\x04", now)
    assert server.data_to_send() == CALL_DISCONNECT
    assert server.channel is not None
    assert server.channel.state is ChannelState.CALL_DISCONNECT_ACK_PENDING
    return server, now


STATES = {
    "connect-request-pending": connect_request_pending_server,
    "call-connected-pending": pending_server,
    "call-connected": established_server,
    "lcp-terminating": terminating_server,
    "disconnect-ack-pending": disconnecting_server,
}


@pytest.mark.parametrize("state", list(STATES))
def test_peer_call_abort_is_answered_with_abort(state: str) -> None:
    server, now = STATES[state]()
    drain(server)
    server.receive_data(PEER_ABORT, now)
    assert server.data_to_send() == ABORT_BARE
    assert server.channel is not None and server.channel.state is ChannelState.CALL_ABORT_TIMEOUT_PENDING
    assert server.send_ip_packets([ipv4_packet(40, 1, from_client=False)]) == 0
    assert run_timers(server, now + 0.99) == [] and not server.closed
    run_timers(server, now + 1.0)  # T2
    closed = only_closed(drain(server))
    if state in ("lcp-terminating", "disconnect-ack-pending"):
        assert closed.reason == "maintenance" and not closed.by_peer
    else:
        assert closed.by_peer and "INVALID_FRAME_RECEIVED" in closed.reason
    assert server.get_timer() is None and server.data_to_send() == b""


@pytest.mark.parametrize("state", list(STATES))
def test_peer_call_disconnect_is_acknowledged(state: str) -> None:
    server, now = STATES[state]()
    drain(server)
    server.receive_data(CALL_DISCONNECT, now)
    assert server.data_to_send() == DISCONNECT_ACK
    assert server.channel is not None
    assert server.channel.state is ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING
    assert run_timers(server, now + 0.99) == [] and not server.closed
    run_timers(server, now + 1.0)  # T2
    closed = only_closed(drain(server))
    if state in ("lcp-terminating", "disconnect-ack-pending"):
        assert closed.reason == "maintenance" and not closed.by_peer
    else:
        assert closed.by_peer and "Call Disconnect" in closed.reason
    assert server.get_timer() is None


def test_peer_abort_answering_our_abort_ends_after_t2() -> None:
    server = server_after_http()
    run_timers(server, 60.0)  # our Abort (negotiation timeout)
    server.receive_data(PEER_ABORT, 61.0)
    assert server.data_to_send() == b""  # their Abort is the answer to ours: nothing more to say
    run_timers(server, 62.0)
    assert "negotiation timeout" in only_closed(drain(server)).reason


def test_peer_disconnect_while_our_abort_is_pending_is_acked_and_otherwise_ignored() -> None:
    server = server_after_http()
    run_timers(server, 60.0)
    drain(server)
    server.receive_data(CALL_DISCONNECT, 61.0)
    assert server.data_to_send() == DISCONNECT_ACK  # §3.2.4.2: always acknowledged
    assert not server.closed
    run_timers(server, 63.0)  # T1 ends it
    assert "negotiation timeout" in only_closed(drain(server)).reason


def test_unexpected_disconnect_ack_is_aborted() -> None:
    server, now = established_server()
    server.receive_data(DISCONNECT_ACK, now)
    assert server.data_to_send() == abort_with(0x02, 0x05)
    run_timers(server, now + 3.0)
    assert "Disconnect Ack" in only_closed(drain(server)).reason


def test_framing_failure_closes_without_a_word() -> None:
    server, now = established_server()
    server.receive_data(b"\x11\x00\x00\x08abcd", now)
    assert server.data_to_send() == b""
    closed = only_closed(drain(server))
    assert "framing" in closed.reason
    assert server.get_timer() is None


# ---- the administrator ends it ------------------------------------------------------------------


def test_admin_close_on_an_established_session() -> None:
    wire = make_wire(AuthMethod.PAP)
    since = len(wire.segments)
    wire.server.close(wire.now, "disconnected by the administrator")
    wire.pump()
    server_sent = server_packets_after(wire, since)
    assert server_sent[0][4:9] == bytes.fromhex("ff03c02105") and server_sent[-1] == CALL_DISCONNECT
    expected = SessionClosed("disconnected by the administrator", by_peer=False)
    assert only_closed(wire.server_events) == expected
    wire.advance(1.0)
    assert only_closed(wire.client_events).by_peer


def test_admin_close_when_the_peer_never_acknowledges() -> None:
    server, now = established_server()
    server.close(now, "kicked")
    assert server.data_to_send()[4:9] == bytes.fromhex("ff03c02105")
    sent = run_timers(server, now + 60.0)
    # Terminate-Request retried (Max-Terminate 2, 3 s apart), then Call Disconnect, then T1 (5 s).
    kinds = [data[4:9].hex() if data[1] == 0 else data.hex() for _, data in sent]
    assert kinds.count(CALL_DISCONNECT.hex()) == 1
    assert all(k in ("ff03c02105", CALL_DISCONNECT.hex()) for k in kinds)
    disconnect_at = next(t for t, data in sent if data == CALL_DISCONNECT)
    closed = only_closed(drain(server))
    assert closed == SessionClosed("kicked", by_peer=False)
    assert server.get_timer() is None
    assert disconnect_at <= now + 9.0


def test_admin_close_before_http() -> None:
    server = new_server()
    server.close(0.0, "shutting down")
    assert server.data_to_send() == b""
    assert only_closed(drain(server)) == SessionClosed("shutting down", by_peer=False)


def test_admin_close_while_waiting_for_connect_request() -> None:
    server = server_after_http()
    server.close(1.0, "shutting down")
    assert server.data_to_send() == CALL_DISCONNECT
    server.receive_data(DISCONNECT_ACK, 1.5)
    assert only_closed(drain(server)) == SessionClosed("shutting down", by_peer=False)


def test_admin_close_while_authenticating() -> None:
    server, now = pending_server()
    drain(server)
    server.close(now, "shutting down")
    out, _ = split_sstp(server.data_to_send())
    assert out[0][4:9] == bytes.fromhex("ff03c02105")
    run_timers(server, now + 30.0)
    assert only_closed(drain(server)) == SessionClosed("shutting down", by_peer=False)


def test_http_request_for_another_resource_is_refused() -> None:
    server = new_server()
    server.receive_data(b"GET / HTTP/1.1\r\nHost: vpn.example.net\r\n\r\n", 0.0)
    answer = server.data_to_send()
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and answer.endswith(b"\r\n\r\n")
    events = drain(server)
    refused = [e for e in events if not isinstance(e, SessionClosed)]
    assert [(type(e).__name__, getattr(e, "status", None)) for e in refused] == [("HttpRefused", 404)]
    assert "HTTP" in only_closed(events).reason
    assert server.channel is None and server.get_timer() is None
