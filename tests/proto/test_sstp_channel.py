"""SSTP channel state machines, server and client back to back with a fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpnd.proto.sstp.binding import BindingFailure, build_call_connected
from vpnd.proto.sstp.channel import (
    BindingRefused,
    CallConnected,
    ChannelAborted,
    ChannelClosed,
    ChannelDisconnected,
    ChannelEvent,
    ChannelSettings,
    ChannelState,
    ConnectAckReceived,
    ConnectNakReceived,
    ConnectRequestAccepted,
    ConnectRequestRejected,
    SstpClientChannel,
    SstpServerChannel,
)
from vpnd.proto.sstp.packets import (
    AttributeId,
    HashProtocol,
    MessageType,
    Status,
    StatusInfo,
    decode_control,
    encode_abort,
    encode_attribute,
    encode_call_connected,
    encode_connect_ack,
    encode_connect_nak,
    encode_connect_request,
    encode_control,
    encode_disconnect,
    encode_disconnect_ack,
    encode_echo_request,
    encode_echo_response,
)

CERT256 = bytes(range(100, 132))
CERT1 = bytes(range(200, 220))
HASHES = {HashProtocol.SHA256: CERT256, HashProtocol.SHA1: CERT1}
HLAK = bytes(range(1, 33))
NONCE = bytes(range(0x40, 0x60))


def fixed_random(n: int) -> bytes:
    return NONCE[:n]


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


def abort_bytes(attrib_id: int, status: int) -> bytes:
    return encode_abort(StatusInfo(attrib_id, status))


BINDING_ABORT = h("10 01 00 14 | 00 05 00 01 | 00 02 00 0C | 00 00 00 | 03 | 00 00 00 04")
PEER_ABORT_REPLY = h("10 01 00 08 00 05 00 00")
DISCONNECT_ACK = h("10 01 00 08 00 07 00 00")


def events(channel: SstpServerChannel | SstpClientChannel) -> list[ChannelEvent]:
    out: list[ChannelEvent] = []
    while (event := channel.next_event()) is not None:
        out.append(event)
    return out


Channel = SstpServerChannel | SstpClientChannel


def pump(a: Channel, b: Channel, now: float) -> None:
    """Move bytes both ways until both are quiet."""
    for _ in range(20):
        ab = a.data_to_send()
        ba = b.data_to_send()
        if not ab and not ba:
            return
        if ab:
            b.receive_data(ab, now)
        if ba:
            a.receive_data(ba, now)
    raise AssertionError("channels never went quiet")


def make_pair(
    *,
    offered: int = 0x03,
    client_hashes: dict[HashProtocol, bytes] | None = None,
    cfg: ChannelSettings | None = None,
) -> tuple[SstpServerChannel, SstpClientChannel]:
    server = SstpServerChannel(
        cert_hashes=HASHES, offered_hashes=offered, random_bytes=fixed_random, settings=cfg
    )
    client = SstpClientChannel(cert_hashes=client_hashes or HASHES, settings=cfg)
    server.start(0.0)
    client.start(0.0)
    return server, client


def connect(
    *, offered: int = 0x03, client_hashes: dict[HashProtocol, bytes] | None = None, open_ip: bool = True
) -> tuple[SstpServerChannel, SstpClientChannel]:
    server, client = make_pair(offered=offered, client_hashes=client_hashes)
    pump(server, client, 0.0)
    server.set_hlak(HLAK, 1.0)
    client.send_call_connected(HLAK, 1.0)
    pump(server, client, 1.0)
    events(server)
    events(client)
    for side in (server, client):
        side.ipv4_open = open_ip
        side.ipv6_open = open_ip
    return server, client


# ---------------------------------------------------------------------------------------------
# Establishment


@pytest.mark.parametrize(
    ("offered", "client_hashes", "expected"),
    [
        (0x03, HASHES, HashProtocol.SHA256),
        (0x02, HASHES, HashProtocol.SHA256),
        (0x01, HASHES, HashProtocol.SHA1),
        (0x03, {HashProtocol.SHA1: CERT1}, HashProtocol.SHA1),
    ],
)
def test_full_establishment(
    offered: int, client_hashes: dict[HashProtocol, bytes], expected: HashProtocol
) -> None:
    server, client = make_pair(offered=offered, client_hashes=client_hashes)
    assert server.state is ChannelState.SERVER_CONNECT_REQUEST_PENDING
    request = client.data_to_send()
    assert request == encode_connect_request()
    assert client.state is ChannelState.CLIENT_CONNECT_REQUEST_SENT
    server.receive_data(request, 0.5)
    ack = server.data_to_send()
    assert ack == encode_connect_ack(offered, NONCE)
    assert server.state is ChannelState.SERVER_CALL_CONNECTED_PENDING
    assert events(server) == [ConnectRequestAccepted(offered)]
    client.receive_data(ack, 0.6)
    assert events(client) == [ConnectAckReceived(expected, NONCE)]
    assert client.state is ChannelState.CLIENT_CONNECT_ACK_RECEIVED

    server.set_hlak(HLAK, 2.0)
    assert client.send_call_connected(HLAK, 2.0)
    connected = client.data_to_send()
    assert connected == build_call_connected(expected, NONCE, HASHES[expected], HLAK)
    assert client.state is ChannelState.CLIENT_CALL_CONNECTED
    assert events(client) == [CallConnected(expected)]
    server.receive_data(connected, 2.1)
    assert server.state is ChannelState.SERVER_CALL_CONNECTED
    assert events(server) == [CallConnected(expected)]
    assert server.data_to_send() == b""
    # Negotiation timers are off; hello runs from the last packet.
    assert server.get_timer() == pytest.approx(62.1)
    assert client.get_timer() == pytest.approx(62.0)


def test_deferred_call_connected_is_verified_when_hlak_arrives() -> None:
    server, client = make_pair()
    pump(server, client, 0.0)
    client.send_call_connected(HLAK, 1.0)
    pump(server, client, 1.0)
    assert server.state is ChannelState.SERVER_CALL_CONNECTED_PENDING
    assert [e for e in events(server) if isinstance(e, CallConnected)] == []
    # The client is connected already and may probe; we answer while holding its message.
    server.receive_data(encode_echo_request(), 1.5)
    assert server.data_to_send() == encode_echo_response()
    server.set_hlak(HLAK, 2.0)
    assert server.state is ChannelState.SERVER_CALL_CONNECTED
    assert events(server) == [CallConnected(HashProtocol.SHA256)]


def test_deferred_call_connected_with_wrong_hlak_aborts() -> None:
    server, client = make_pair()
    pump(server, client, 0.0)
    client.send_call_connected(HLAK, 1.0)
    pump(server, client, 1.0)
    events(server)
    server.set_hlak(bytes(32), 2.0)
    assert server.data_to_send() == BINDING_ABORT
    refused, event = events(server)
    assert refused == BindingRefused(BindingFailure.COMPOUND_MAC_MISMATCH, event.cause)
    assert isinstance(event, ChannelAborted)
    assert "compound MAC mismatch" in event.cause


def test_zero_hlak_binding_for_pap() -> None:
    server, client = make_pair()
    pump(server, client, 0.0)
    server.set_hlak(bytes(32), 1.0)
    client.send_call_connected(b"", 1.0)  # no keys: padded to 32 zero bytes
    pump(server, client, 1.0)
    assert server.state is ChannelState.SERVER_CALL_CONNECTED


def binding_case(
    mutate: Callable[[bytearray], None], *, offered: int = 0x03
) -> tuple[bytes, list[ChannelEvent]]:
    server, client = make_pair(offered=offered)
    pump(server, client, 0.0)
    server.set_hlak(HLAK, 1.0)
    events(server)
    packet = bytearray(build_call_connected(HashProtocol.SHA256, NONCE, CERT256, HLAK))
    mutate(packet)
    server.receive_data(bytes(packet), 1.0)
    assert server.state is ChannelState.CALL_ABORT_PENDING
    refused, *rest = events(server)
    # The failed check is reported as such, before the abort it causes.
    assert isinstance(refused, BindingRefused) and isinstance(rest[0], ChannelAborted)
    assert refused.cause == rest[0].cause
    return server.data_to_send(), rest


def test_wrong_nonce_aborts() -> None:
    def wrong_nonce(p: bytearray) -> None:
        p[20] ^= 1

    sent, evs = binding_case(wrong_nonce)
    assert sent == BINDING_ABORT
    assert isinstance(evs[0], ChannelAborted)
    assert "wrong nonce" in evs[0].cause
    assert evs[0].attrib_id == AttributeId.CRYPTO_BINDING
    assert evs[0].status == Status.VALUE_NOT_SUPPORTED


def test_cert_hash_mismatch_aborts_and_suggests_proxy() -> None:
    def other_cert(p: bytearray) -> None:
        p[50] ^= 1

    sent, evs = binding_case(other_cert)
    assert sent == BINDING_ABORT
    assert isinstance(evs[0], ChannelAborted)
    assert evs[0].cause.startswith("crypto binding failed: certificate hash mismatch")
    assert "TLS-inspecting proxy" in evs[0].cause


def test_tampered_mac_aborts() -> None:
    def flip_mac(p: bytearray) -> None:
        p[100] ^= 0x55

    sent, evs = binding_case(flip_mac)
    assert sent == BINDING_ABORT
    assert isinstance(evs[0], ChannelAborted)
    assert "compound MAC mismatch" in evs[0].cause


def test_hash_not_offered_aborts() -> None:
    sent, evs = binding_case(lambda p: None, offered=0x01)
    assert sent == BINDING_ABORT
    assert isinstance(evs[0], ChannelAborted)
    assert "hash protocol not offered" in evs[0].cause


def test_malformed_call_connected_aborts_with_attribute_not_supported() -> None:
    server, client = make_pair()
    pump(server, client, 0.0)
    events(server)
    short_attr = encode_attribute(AttributeId.CRYPTO_BINDING, bytes(50))
    short = encode_control(MessageType.CALL_CONNECTED, [short_attr])
    server.receive_data(short, 1.0)
    assert server.data_to_send() == h("10 01 00 14 | 00 05 00 01 | 00 02 00 0C | 00 00 00 | 02 | 00 00 00 09")


def test_server_nak_then_retry_limit() -> None:
    server = SstpServerChannel(cert_hashes=HASHES, random_bytes=fixed_random)
    server.start(0.0)
    bad = encode_connect_request(protocol_id=2)
    nak = h("10 01 00 16 | 00 03 00 01 | 00 02 00 0E | 00 00 00 | 01 | 00 00 00 04 | 00 02")
    for attempt in range(3):
        server.receive_data(bad, float(attempt))
        assert server.data_to_send() == nak
        assert server.state is ChannelState.SERVER_CONNECT_REQUEST_PENDING
        rejected = StatusInfo(1, Status.VALUE_NOT_SUPPORTED, b"\x00\x02")
        assert events(server) == [ConnectRequestRejected((rejected,))]
    server.receive_data(bad, 3.0)
    assert server.data_to_send() == h("10 01 00 14 | 00 05 00 01 | 00 02 00 0C | 00 00 00 | 02 | 00 00 00 06")
    assert server.state is ChannelState.CALL_ABORT_PENDING
    (event,) = events(server)
    assert isinstance(event, ChannelAborted)
    assert event.status == Status.RETRY_COUNT_EXCEEDED


def test_server_accepts_request_after_nak() -> None:
    server = SstpServerChannel(cert_hashes=HASHES, random_bytes=fixed_random)
    server.start(0.0)
    server.receive_data(encode_control(MessageType.CALL_CONNECT_REQUEST, []), 0.0)
    nak = decode_control(server.data_to_send())
    assert nak.message_type is MessageType.CALL_CONNECT_NAK
    server.receive_data(encode_connect_request(), 1.0)
    assert server.data_to_send() == encode_connect_ack(3, NONCE)


def test_client_resends_on_nak_then_aborts() -> None:
    client = SstpClientChannel(cert_hashes=HASHES)
    client.start(0.0)
    client.data_to_send()
    nak = encode_connect_nak([StatusInfo(1, Status.VALUE_NOT_SUPPORTED, b"\x00\x01")])
    for attempt in range(1, 4):
        client.receive_data(nak, float(attempt))
        assert client.data_to_send() == encode_connect_request()
        assert client.get_timer() == pytest.approx(attempt + 60.0)
        (event,) = events(client)
        assert isinstance(event, ConnectNakReceived)
        assert event.attempt == attempt
    client.receive_data(nak, 4.0)
    assert client.data_to_send() == abort_bytes(AttributeId.STATUS_INFO, Status.RETRY_COUNT_EXCEEDED)
    assert client.state is ChannelState.CALL_ABORT_PENDING


def test_client_aborts_when_no_usable_hash() -> None:
    client = SstpClientChannel(cert_hashes={HashProtocol.SHA1: CERT1})
    client.start(0.0)
    client.receive_data(encode_connect_ack(0x02, NONCE), 0.0)
    client.data_to_send()
    assert client.state is ChannelState.CALL_ABORT_PENDING
    (event,) = events(client)
    assert isinstance(event, ChannelAborted)
    assert event.attrib_id == AttributeId.CRYPTO_BINDING_REQ


# ---------------------------------------------------------------------------------------------
# Timers


def test_server_negotiation_timeout_waiting_for_request() -> None:
    server = SstpServerChannel(cert_hashes=HASHES)
    server.start(10.0)
    assert server.get_timer() == 70.0
    server.handle_timer(69.9)
    assert server.data_to_send() == b""
    server.handle_timer(70.0)
    assert server.data_to_send() == h("10 01 00 14 | 00 05 00 01 | 00 02 00 0C | 00 00 00 | 02 | 00 00 00 08")
    (event,) = events(server)
    assert isinstance(event, ChannelAborted)
    assert "negotiation timeout" in event.cause
    assert server.get_timer() == 73.0
    server.handle_timer(73.0)
    assert server.closed
    (closed,) = events(server)
    assert isinstance(closed, ChannelClosed)
    assert server.get_timer() is None


def test_server_negotiation_timeout_waiting_for_call_connected() -> None:
    server, client = make_pair()
    pump(server, client, 5.0)
    assert server.get_timer() == 65.0  # re-armed at the Connect Request
    server.handle_timer(65.0)
    assert server.state is ChannelState.CALL_ABORT_PENDING
    assert server.data_to_send() == abort_bytes(AttributeId.STATUS_INFO, Status.NEGOTIATION_TIMEOUT)


def test_client_negotiation_timeouts() -> None:
    client = SstpClientChannel(cert_hashes=HASHES)
    client.start(0.0)
    client.data_to_send()
    client.handle_timer(60.0)
    assert client.data_to_send() == abort_bytes(AttributeId.STATUS_INFO, Status.NEGOTIATION_TIMEOUT)
    # And after the Ack, waiting for PPP authentication.
    server, client = make_pair()
    pump(server, client, 2.0)
    assert client.get_timer() == 62.0
    client.handle_timer(62.0)
    assert client.state is ChannelState.CALL_ABORT_PENDING
    evs = events(client)
    assert isinstance(evs[-1], ChannelAborted)
    assert "PPP authentication" in evs[-1].cause


def test_hello_echo_keeps_link_alive() -> None:
    server, client = connect()
    assert server.get_timer() == pytest.approx(61.0)
    server.handle_timer(61.0)
    assert server.data_to_send() == encode_echo_request()
    client.receive_data(encode_echo_request(), 61.0)
    response = client.data_to_send()
    assert response == encode_echo_response()
    server.receive_data(response, 61.5)
    assert server.get_timer() == pytest.approx(121.5)
    server.handle_timer(121.5)
    assert not server.closed
    assert server.data_to_send() == encode_echo_request()


def test_hello_restarted_by_data_packets() -> None:
    server, client = connect()
    client.send_ip_packets([b"\x45" + bytes(19)])
    server.receive_data(client.data_to_send(), 50.0)
    assert server.get_timer() == pytest.approx(110.0)


def test_dead_peer_closes_without_abort() -> None:
    server, _client = connect()
    server.handle_timer(61.0)
    assert server.data_to_send() == encode_echo_request()
    server.handle_timer(120.9)
    assert not server.closed
    server.handle_timer(121.0)
    assert server.closed
    assert server.data_to_send() == b""
    (event,) = events(server)
    assert isinstance(event, ChannelClosed)
    assert "dead peer" in event.reason


def test_settings_change_intervals() -> None:
    cfg = ChannelSettings(negotiation_timeout=5, hello_interval=7, abort_t1=2)
    server = SstpServerChannel(cert_hashes=HASHES, settings=cfg)
    server.start(0.0)
    assert server.get_timer() == 5
    server.handle_timer(5)
    assert server.get_timer() == 7  # abort T1 = 2 s


# ---------------------------------------------------------------------------------------------
# Data path


def test_ip_both_ways_fast_path() -> None:
    server, client = connect()
    v4 = [bytes([0x45]) + bytes(range(i, i + 40)) for i in range(3)]
    v6 = [bytes([0x60]) + bytes(59)]
    assert client.send_ip_packets(v4) == 3
    assert client.send_ip_packets([memoryview(p) for p in v6], ipv6=True) == 1
    wire = client.data_to_send()
    assert wire[:8] == h("10 00 00 31 FF 03 00 21")
    assert len(wire) == 3 * (41 + 8) + 60 + 8
    server.receive_data(wire, 2.0)
    got = server.take_ip_packets()
    assert [bytes(p) for p in got] == [*v4, *v6]
    assert all(isinstance(p, memoryview) for p in got)
    assert server.rx_packets == 4
    assert server.rx_bytes == 3 * 41 + 60
    assert client.tx_packets == 4
    assert client.tx_bytes == 3 * 41 + 60
    assert server.take_ppp_control_frames() == []
    # And back.
    assert server.send_ip_packets([b"\x45" + bytes(99)]) == 1
    client.receive_data(server.data_to_send(), 3.0)
    assert [bytes(p) for p in client.take_ip_packets()] == [b"\x45" + bytes(99)]


def test_packets_split_across_calls_byte_by_byte() -> None:
    server, client = connect()
    packets = [bytes([0x45, n]) * 30 for n in range(5)]
    client.send_ip_packets(packets)
    client.send_ppp_frame(h("FF 03 80 21 01 07 00 04"))
    wire = client.data_to_send()
    received: list[bytes] = []
    for i in range(len(wire)):
        server.receive_data(wire[i : i + 1], 2.0)
        assert server.buffered_bytes <= 4095
        received += [bytes(p) for p in server.take_ip_packets()]
    assert received == packets
    assert server.take_ppp_control_frames() == [h("FF 03 80 21 01 07 00 04")]
    assert server.buffered_bytes == 0


def test_ip_frames_without_address_control_and_with_short_protocol() -> None:
    server, _client = connect()
    payload = b"\x45" + bytes(23)
    plain = h("10 00 00 1E 00 21") + payload  # no FF 03
    short = h("10 00 00 1D 21") + payload  # 1-byte protocol (PFC)
    ipv6_short = h("10 00 00 1F FF 03 57") + payload
    server.receive_data(plain + short + ipv6_short, 2.0)
    assert [bytes(p) for p in server.take_ip_packets()] == [payload] * 3


def test_data_before_binding_dropped() -> None:
    server, client = make_pair()
    pump(server, client, 0.0)
    server.ipv4_open = True
    server.receive_data(h("10 00 00 0C FF 03 00 21 45 00 00 00"), 1.0)
    assert server.take_ip_packets() == []
    assert server.dropped_rx_gated == 1
    # Control frames pass in Call_Connected_Pending.
    server.receive_data(h("10 00 00 0C FF 03 C0 21 01 01 00 04"), 1.0)
    assert server.take_ppp_control_frames() == [h("FF 03 C0 21 01 01 00 04")]
    # Non-IP data protocols are data frames: not before Call Connected.
    server.receive_data(h("10 00 00 0A FF 03 00 FD 00 00"), 1.0)
    assert server.take_ppp_control_frames() == []
    assert server.dropped_rx_gated == 2
    # Sending data is refused too.
    server.ipv4_open = True
    assert server.send_ip_packets([b"\x45" + bytes(19)]) == 0
    assert not server.send_ppp_frame(h("FF 03 00 21 45 00"))
    assert server.send_ppp_frame(h("FF 03 C0 21 01 01 00 04"))
    assert server.data_to_send() == h("10 00 00 0C FF 03 C0 21 01 01 00 04")


def test_control_frames_before_ack_dropped() -> None:
    server = SstpServerChannel(cert_hashes=HASHES)
    server.start(0.0)
    server.receive_data(h("10 00 00 0C FF 03 C0 21 01 01 00 04"), 0.0)
    assert server.take_ppp_control_frames() == []
    assert not server.send_ppp_frame(h("FF 03 C0 21 01 01 00 04"))
    client = SstpClientChannel(cert_hashes=HASHES)
    client.start(0.0)
    client.receive_data(h("10 00 00 0C FF 03 C0 21 01 01 00 04"), 0.0)
    assert client.take_ppp_control_frames() == []
    assert client.dropped_rx_gated == 1


def test_ncp_gating_flags() -> None:
    server, client = connect(open_ip=False)
    assert client.send_ip_packets([b"\x45" + bytes(19)]) == 0
    assert client.dropped_tx_gated == 1
    server.receive_data(h("10 00 00 0C FF 03 00 21 45 00 00 00"), 2.0)
    assert server.take_ip_packets() == []
    server.ipv4_open = True
    v4 = h("10 00 00 0C FF 03 00 21 45 00 00 00")
    v6 = h("10 00 00 0C FF 03 00 57 60 00 00 00")
    server.receive_data(v4 + v6, 2.0)
    assert [bytes(p) for p in server.take_ip_packets()] == [h("45 00 00 00")]
    assert server.dropped_rx_gated == 2
    # Non-IP data in Call_Connected goes to PPP (to be Protocol-Rejected).
    server.receive_data(h("10 00 00 0A FF 03 00 FD 00 00"), 2.0)
    assert server.take_ppp_control_frames() == [h("FF 03 00 FD 00 00")]


def test_oversize_dropped_and_max_size_sent() -> None:
    server, client = connect()
    biggest = b"\x45" + bytes(4086)
    assert client.send_ip_packets([biggest, biggest + b"\x00", b""]) == 1
    assert client.dropped_tx_oversize == 2
    wire = client.data_to_send()
    assert len(wire) == 4095
    assert wire[:4] == h("10 00 0F FF")
    assert not client.send_ppp_frame(b"\xff\x03\x00\x21" + bytes(4088))
    assert client.dropped_tx_oversize == 3
    server.receive_data(wire, 2.0)
    assert [bytes(p) for p in server.take_ip_packets()] == [biggest]


def test_malformed_data_packets_counted() -> None:
    server, _client = connect()
    server.receive_data(h("10 00 00 04") + h("10 00 00 06 FF 03") + h("10 00 00 05 00"), 2.0)
    assert server.dropped_rx_malformed == 3
    assert not server.closed


# ---------------------------------------------------------------------------------------------
# Teardown


def test_local_disconnect_round_trip() -> None:
    server, client = connect()
    assert client.disconnect(5.0)
    assert client.state is ChannelState.CALL_DISCONNECT_ACK_PENDING
    disconnect = client.data_to_send()
    assert disconnect == encode_disconnect()
    assert events(client) == [ChannelDisconnected(by_peer=False)]
    server.receive_data(disconnect, 5.1)
    assert server.data_to_send() == DISCONNECT_ACK
    assert server.state is ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING
    assert events(server) == [ChannelDisconnected(by_peer=True)]
    client.receive_data(DISCONNECT_ACK, 5.2)
    assert client.closed
    assert events(client) == [ChannelClosed("call disconnected")]
    server.handle_timer(6.1)
    assert server.closed
    assert events(server) == [ChannelClosed("call disconnected")]
    assert not client.disconnect(7.0)


def test_disconnect_t1_expiry() -> None:
    server, _client = connect()
    server.disconnect(10.0)
    assert server.get_timer() == 15.0
    server.handle_timer(15.0)
    assert server.closed


def test_local_abort_round_trip() -> None:
    server, client = connect()
    assert server.abort(Status.UNACCEPTED_FRAME_RECEIVED, 5.0)
    abort = server.data_to_send()
    assert abort == abort_bytes(AttributeId.STATUS_INFO, Status.UNACCEPTED_FRAME_RECEIVED)
    client.receive_data(abort, 5.1)
    assert client.data_to_send() == PEER_ABORT_REPLY
    assert client.state is ChannelState.CALL_ABORT_TIMEOUT_PENDING
    (event,) = events(client)
    assert isinstance(event, ChannelAborted)
    assert event.by_peer
    assert event.status == Status.UNACCEPTED_FRAME_RECEIVED
    server.receive_data(PEER_ABORT_REPLY, 5.2)
    assert server.state is ChannelState.CALL_ABORT_TIMEOUT_PENDING
    assert server.get_timer() == pytest.approx(6.2)  # T1 stopped, T2 started
    server.handle_timer(6.2)
    client.handle_timer(6.1)
    assert server.closed
    assert client.closed


def drive_server(state: ChannelState) -> tuple[SstpServerChannel, float]:
    server = SstpServerChannel(cert_hashes=HASHES, random_bytes=fixed_random)
    if state is ChannelState.SERVER_CALL_DISCONNECTED:
        return server, 0.0
    server.start(0.0)
    if state is not ChannelState.SERVER_CONNECT_REQUEST_PENDING:
        server.receive_data(encode_connect_request(), 0.0)
    if state in (ChannelState.SERVER_CALL_CONNECTED, *TEARDOWN):
        server.set_hlak(HLAK, 0.5)
        server.receive_data(build_call_connected(HashProtocol.SHA256, NONCE, CERT256, HLAK), 0.5)
    _enter_teardown(server, state)
    server.data_to_send()
    events(server)
    assert server.state is state
    return server, 1.0


def drive_client(state: ChannelState) -> tuple[SstpClientChannel, float]:
    client = SstpClientChannel(cert_hashes=HASHES)
    if state is ChannelState.CLIENT_CALL_DISCONNECTED:
        return client, 0.0
    client.start(0.0)
    if state is not ChannelState.CLIENT_CONNECT_REQUEST_SENT:
        client.receive_data(encode_connect_ack(3, NONCE), 0.0)
    if state in (ChannelState.CLIENT_CALL_CONNECTED, *TEARDOWN):
        client.send_call_connected(HLAK, 0.5)
    _enter_teardown(client, state)
    client.data_to_send()
    events(client)
    assert client.state is state
    return client, 1.0


TEARDOWN = (
    ChannelState.CALL_ABORT_PENDING,
    ChannelState.CALL_ABORT_TIMEOUT_PENDING,
    ChannelState.CALL_DISCONNECT_ACK_PENDING,
    ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING,
)


def _enter_teardown(channel: SstpServerChannel | SstpClientChannel, state: ChannelState) -> None:
    if state is ChannelState.CALL_ABORT_PENDING:
        channel.abort(Status.UNACCEPTED_FRAME_RECEIVED, 0.8)
    elif state is ChannelState.CALL_ABORT_TIMEOUT_PENDING:
        channel.receive_data(encode_abort(), 0.8)
    elif state is ChannelState.CALL_DISCONNECT_ACK_PENDING:
        channel.disconnect(0.8)
    elif state is ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING:
        channel.receive_data(encode_disconnect(), 0.8)


SERVER_STATES = [
    ChannelState.SERVER_CONNECT_REQUEST_PENDING,
    ChannelState.SERVER_CALL_CONNECTED_PENDING,
    ChannelState.SERVER_CALL_CONNECTED,
    *TEARDOWN,
]
CLIENT_STATES = [
    ChannelState.CLIENT_CALL_DISCONNECTED,
    ChannelState.CLIENT_CONNECT_REQUEST_SENT,
    ChannelState.CLIENT_CONNECT_ACK_RECEIVED,
    ChannelState.CLIENT_CALL_CONNECTED,
    *TEARDOWN,
]
ALL_CASES = [("server", s) for s in SERVER_STATES] + [("client", s) for s in CLIENT_STATES]


def drive(role: str, state: ChannelState) -> tuple[SstpServerChannel | SstpClientChannel, float]:
    return drive_server(state) if role == "server" else drive_client(state)


@pytest.mark.parametrize(("role", "state"), ALL_CASES, ids=[f"{r}-{s.value}" for r, s in ALL_CASES])
def test_peer_abort_in_every_state(role: str, state: ChannelState) -> None:
    channel, now = drive(role, state)
    channel.receive_data(abort_bytes(AttributeId.STATUS_INFO, Status.INVALID_FRAME_RECEIVED), now)
    sent = channel.data_to_send()
    evs = events(channel)
    if state is ChannelState.CALL_ABORT_PENDING:
        assert sent == b""
        assert channel.state is ChannelState.CALL_ABORT_TIMEOUT_PENDING
        assert channel.get_timer() == now + 1.0
    elif state in (ChannelState.CALL_ABORT_TIMEOUT_PENDING, ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING):
        assert sent == b""
        assert evs == []
        assert channel.state is state
    else:
        assert sent == PEER_ABORT_REPLY
        assert channel.state is ChannelState.CALL_ABORT_TIMEOUT_PENDING
        assert evs == [
            ChannelAborted(
                Status.INVALID_FRAME_RECEIVED,
                "the peer aborted the call (INVALID_FRAME_RECEIVED, attribute 0x02)",
                by_peer=True,
                attrib_id=AttributeId.STATUS_INFO,
            )
        ]
        assert channel.get_timer() == now + 1.0
    timer = channel.get_timer()
    assert timer is not None
    channel.handle_timer(timer)
    assert channel.closed
    assert isinstance(events(channel)[-1], ChannelClosed)


@pytest.mark.parametrize(("role", "state"), ALL_CASES, ids=[f"{r}-{s.value}" for r, s in ALL_CASES])
def test_peer_disconnect_in_every_state(role: str, state: ChannelState) -> None:
    channel, now = drive(role, state)
    channel.receive_data(encode_disconnect(), now)
    sent = channel.data_to_send()
    evs = events(channel)
    if state is ChannelState.CALL_DISCONNECT_ACK_PENDING:
        assert sent == DISCONNECT_ACK
        assert channel.state is ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING
        assert evs == []
    elif state in (
        ChannelState.CALL_ABORT_PENDING,
        ChannelState.CALL_ABORT_TIMEOUT_PENDING,
        ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING,
    ):
        # MS-SSTP §3.2.4.2: acknowledged in any state, but nothing else changes.
        assert sent == DISCONNECT_ACK
        assert channel.state is state
        assert evs == []
    else:
        assert sent == DISCONNECT_ACK
        assert channel.state is ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING
        assert evs == [ChannelDisconnected(by_peer=True)]
        assert channel.get_timer() == now + 1.0


@pytest.mark.parametrize(("role", "state"), ALL_CASES, ids=[f"{r}-{s.value}" for r, s in ALL_CASES])
def test_unsolicited_disconnect_ack_in_every_state(role: str, state: ChannelState) -> None:
    channel, now = drive(role, state)
    channel.receive_data(encode_disconnect_ack(), now)
    sent = channel.data_to_send()
    if state is ChannelState.CALL_DISCONNECT_ACK_PENDING:
        assert channel.closed
    elif state in TEARDOWN:
        assert sent == b""
        assert channel.state is state
    else:
        assert sent == abort_bytes(AttributeId.STATUS_INFO, Status.UNACCEPTED_FRAME_RECEIVED)
        assert channel.state is ChannelState.CALL_ABORT_PENDING


WRONG_MESSAGES = {
    "connect request": encode_connect_request(),
    "ack": encode_connect_ack(3, NONCE),
    "nak": encode_connect_nak([StatusInfo(1, 4)]),
    "call connected": encode_call_connected(HashProtocol.SHA256, NONCE, CERT256, bytes(32)),
    "echo request": encode_echo_request(),
    "echo response": encode_echo_response(),
    "unknown type": h("10 01 00 08 00 2A 00 00"),
}


def valid_in(role: str, name: str, state: ChannelState) -> bool:
    if name in ("echo request", "echo response"):
        return state in (ChannelState.SERVER_CALL_CONNECTED, ChannelState.CLIENT_CALL_CONNECTED)
    if role == "server":
        return (name, state) in (
            ("connect request", ChannelState.SERVER_CONNECT_REQUEST_PENDING),
            ("call connected", ChannelState.SERVER_CALL_CONNECTED_PENDING),
        )
    return name in ("ack", "nak") and state is ChannelState.CLIENT_CONNECT_REQUEST_SENT


@pytest.mark.parametrize("name", list(WRONG_MESSAGES))
@pytest.mark.parametrize(("role", "state"), ALL_CASES, ids=[f"{r}-{s.value}" for r, s in ALL_CASES])
def test_per_state_table(role: str, state: ChannelState, name: str) -> None:
    channel, now = drive(role, state)
    channel.receive_data(WRONG_MESSAGES[name], now)
    sent = channel.data_to_send()
    if state in TEARDOWN:
        assert sent == b""
        assert channel.state is state
    elif valid_in(role, name, state):
        expected_reply = {
            "connect request": encode_connect_ack(3, NONCE),
            "call connected": b"",  # held until PPP authentication hands over the HLAK
            "echo request": encode_echo_response(),
            "echo response": b"",
            "ack": b"",
            "nak": encode_connect_request(),
        }[name]
        assert sent == expected_reply
    else:
        status = Status.INVALID_FRAME_RECEIVED if name == "unknown type" else Status.UNACCEPTED_FRAME_RECEIVED
        assert sent == abort_bytes(AttributeId.STATUS_INFO, status)
        assert channel.state is ChannelState.CALL_ABORT_PENDING
        assert channel.get_timer() == now + 3.0


@pytest.mark.parametrize(
    "stream",
    [h("11 01 00 08 00 08 00 00"), h("10 01 00 02"), h("20"), h("10 00 00 0C FF 03 00 21 45 00 00 00 00")],
    ids=["version", "short length", "version partial", "garbage after packet"],
)
def test_framing_failure_closes_without_sending(stream: bytes) -> None:
    server, _client = connect()
    server.receive_data(stream, 2.0)
    assert server.closed
    assert server.data_to_send() == b""
    evs = events(server)
    assert isinstance(evs[-1], ChannelClosed)
    assert "framing failure" in evs[-1].reason
    server.receive_data(encode_echo_request(), 3.0)
    assert server.data_to_send() == b""
    assert server.get_timer() is None


def test_framing_failure_in_straddled_header() -> None:
    server, _client = connect()
    server.receive_data(h("10 00"), 2.0)
    server.receive_data(h("00 01"), 2.0)  # length 1 < 4
    assert server.closed


# ---------------------------------------------------------------------------------------------
# Robustness


def overwrite_byte(args: tuple[bytes, int, int]) -> bytes:
    """A valid packet with one byte replaced (or one byte appended when the offset is past the end)."""
    packet, offset, value = args
    offset %= len(packet) + 1
    return packet[:offset] + bytes([value]) + packet[offset + 1 :]


VALID_STREAM_PARTS = [*WRONG_MESSAGES.values(), encode_abort(), encode_disconnect(), encode_disconnect_ack()]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    role_state=st.sampled_from(ALL_CASES),
    parts=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from(VALID_STREAM_PARTS),
            st.tuples(st.sampled_from(VALID_STREAM_PARTS), st.integers(0, 200), st.integers(0, 255)).map(
                overwrite_byte
            ),
            st.integers(0, 4091).map(lambda n: bytes([0x10, 0x00, (n + 4) >> 8, (n + 4) & 0xFF]) + bytes(n)),
        ),
        max_size=8,
    ),
    chunk=st.integers(1, 97),
)
def test_random_streams_never_raise(
    role_state: tuple[str, ChannelState], parts: list[bytes], chunk: int
) -> None:
    channel, now = drive(*role_state)
    stream = b"".join(parts)
    for i in range(0, len(stream), chunk):
        channel.receive_data(stream[i : i + chunk], now)
        assert channel.buffered_bytes < 4095
        now += 0.5
        timer = channel.get_timer()
        if timer is not None and timer <= now:
            channel.handle_timer(now)
    channel.take_ip_packets()
    channel.take_ppp_control_frames()
    for packet in decode_stream(channel.data_to_send()):
        assert len(packet) <= 4095
    while (event := channel.next_event()) is not None:
        assert isinstance(event, (ChannelAborted, ChannelClosed, ChannelDisconnected, CallConnected,
                                  ConnectAckReceived, ConnectNakReceived, ConnectRequestAccepted,
                                  ConnectRequestRejected))
    channel.handle_timer(now + 1000)
    channel.handle_timer(now + 2000)


def decode_stream(data: bytes) -> list[bytes]:
    packets = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 2 : pos + 4], "big") & 0x0FFF
        assert data[pos] == 0x10
        assert length >= 4
        packets.append(data[pos : pos + length])
        pos += length
    assert pos == len(data)
    return packets
