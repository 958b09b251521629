"""MPPE (RFC 3078/3079): vectors, the per-packet transform, CCP negotiation and sessions end to end.

Key schedules are recomputed here from the RFC formulas with hashlib; the wire checks read the
SSTP data packets recorded by the in-memory wire.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.wire import (
    SERVER_CERT_HASHES,
    Wire,
    make_wire,
    ppp_protocol,
    seeded_random,
    sstp_data_frames,
)
from vpnd.proto.crypto.mppe import initial_session_key, mschapv2_mppe_keys
from vpnd.proto.crypto.mschap import nt_password_hash
from vpnd.proto.crypto.rc4 import rc4
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.auth.types import AuthMethod, AuthSucceeded, MppeKeys
from vpnd.proto.ppp.ccp import Ccp, reject_every_option
from vpnd.proto.ppp.frames import Option, decode_control, decode_options, encode_options
from vpnd.proto.ppp.fsm import State
from vpnd.proto.ppp.mppe import (
    BIT_40,
    BIT_56,
    BIT_128,
    BIT_MPPC,
    BIT_STATELESS,
    MAX_PLAIN_PAYLOAD,
    OPT_MPPE,
    MppeDecryptor,
    MppeEncryptor,
    MppeNegotiation,
    MppePolicy,
    MppeSettings,
    mppe_option,
)
from vpnd.proto.session import (
    ClientSession,
    Ipv4Up,
    Notice,
    ServerSession,
    SessionClosed,
    SessionEvent,
)

h = bytes.fromhex

# RFC 2759 §9.2 inputs, RFC 3079 §3.5 outputs.
NT_RESPONSE = h("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
SERVER_SEND_START = h("8B7CDC149B993A1BA118CB153F56DCCB")
CLIENT_SEND_START = h("D5F0E9521E3EA9589645E86051C82226")
SESSION_KEY_128 = h("405CB2247A7956E6E211007AE27B22D4")
SESSION_KEY_56 = h("D15C00C49FA62E3E")
SESSION_KEY_40 = h("D1269EC49FA62E3E")
TEST_MESSAGE_CIPHERTEXT_128 = h("81848317DF68846272FB5ABE")

PAD1 = bytes(40)
PAD2 = b"\xf2" * 40
SALT = {40: b"\xd1\x26\x9e", 56: b"\xd1", 128: b""}
SIZE = {40: 8, 56: 8, 128: 16}
PROTO_IPV4 = 0x0021
PROTO_IPV6 = 0x0057
PROTO_MPPE = 0x00FD


# ---- RFC 3079 §3.5 ---------------------------------------------------------------------------------


def test_rfc3079_sample_keys_and_test_message() -> None:
    keys = mschapv2_mppe_keys(nt_password_hash("clientPass"), NT_RESPONSE, is_server=True)
    assert keys == MppeKeys(send_key=SERVER_SEND_START, recv_key=CLIENT_SEND_START)
    assert initial_session_key(keys.send_key, 128) == SESSION_KEY_128
    assert rc4(SESSION_KEY_128, b"test message") == TEST_MESSAGE_CIPHERTEXT_128
    assert initial_session_key(keys.send_key[:8], 56) == SESSION_KEY_56
    assert initial_session_key(keys.send_key[:8], 40) == SESSION_KEY_40


def reference_rekey(start: bytes, session: bytes, bits: int) -> bytes:
    """RFC 3078 §7.3 key change, written out from the RFC for comparison."""
    size = SIZE[bits]
    interim = hashlib.sha1(start[:size] + PAD1 + session[:size] + PAD2).digest()[:size]
    new = rc4(interim, interim)
    return SALT[bits] + new[len(SALT[bits]) :]


@pytest.mark.parametrize("bits", [40, 56, 128])
def test_first_packets_use_a_fresh_key_each(bits: int) -> None:
    start = SERVER_SEND_START
    key = {128: SESSION_KEY_128, 56: SESSION_KEY_56, 40: SESSION_KEY_40}[bits]
    encryptor = MppeEncryptor(start, bits)
    for count in range(3):
        key = reference_rekey(start, key, bits)  # stateless: re-key before every packet, the first too
        payload = b"test message %d" % count
        info = encryptor.encrypt(PROTO_IPV4, payload)
        assert info[:2] == struct.pack("!H", 0x8000 | 0x1000 | count)  # A flushed, D encrypted
        assert info[2:] == rc4(key, b"\x00\x21" + payload)


# ---- the transform ---------------------------------------------------------------------------------


def pair(bits: int = 128) -> tuple[MppeEncryptor, MppeDecryptor]:
    return MppeEncryptor(CLIENT_SEND_START, bits), MppeDecryptor(CLIENT_SEND_START, bits)


@pytest.mark.parametrize("bits", [40, 56, 128])
def test_round_trip_across_the_coherency_count_wrap(bits: int) -> None:
    encryptor, decryptor = pair(bits)
    for n in range(4100):
        info = encryptor.encrypt(PROTO_IPV6 if n % 2 else PROTO_IPV4, n.to_bytes(4, "big"))
        assert decryptor.decrypt(info) == (PROTO_IPV6 if n % 2 else PROTO_IPV4, n.to_bytes(4, "big"))
    assert encryptor.coherency_count == decryptor.coherency_count == (4100 - 1) % 4096


def test_lost_packets_are_skipped_by_re_keying_forward() -> None:
    encryptor, decryptor = pair()
    frames = [encryptor.encrypt(PROTO_IPV4, bytes([n]) * 20) for n in range(10)]
    assert decryptor.decrypt(frames[0])[1] == bytes(20)
    assert decryptor.decrypt(frames[7])[1] == bytes([7]) * 20
    assert decryptor.decrypt(frames[9])[1] == bytes([9]) * 20


@pytest.mark.parametrize("which", [3, 5], ids=["late", "repeated"])
def test_late_or_repeated_packets_are_refused(which: int) -> None:
    encryptor, decryptor = pair()
    frames = [encryptor.encrypt(PROTO_IPV4, b"x" * 30) for _ in range(7)]
    decryptor.decrypt(frames[5])
    with pytest.raises(ProtocolError):
        decryptor.decrypt(frames[which])
    assert decryptor.decrypt(frames[6])[1] == b"x" * 30


def test_a_one_byte_inner_protocol_field_is_accepted() -> None:
    decryptor = MppeDecryptor(CLIENT_SEND_START, 128)
    key = reference_rekey(CLIENT_SEND_START, initial_session_key(CLIENT_SEND_START, 128), 128)
    info = b"\x90\x00" + rc4(key, b"\x21" + b"IPv4 packet")
    assert decryptor.decrypt(info) == (PROTO_IPV4, b"IPv4 packet")


@pytest.mark.parametrize(
    ("header", "problem"),
    [(0x8000, "not encrypted"), (0x1000, "not flushed"), (0xB000, "compressed")],
)
def test_frames_with_wrong_flags_are_refused_without_moving_the_key(header: int, problem: str) -> None:
    encryptor, decryptor = pair()
    good = encryptor.encrypt(PROTO_IPV4, b"payload")
    bad = struct.pack("!H", header) + good[2:]
    with pytest.raises(ProtocolError):
        decryptor.decrypt(bad)
    assert decryptor.decrypt(good) == (PROTO_IPV4, b"payload")


def test_a_frame_under_the_wrong_key_is_refused_and_does_not_move_the_key() -> None:
    encryptor, decryptor = pair()
    stranger = MppeEncryptor(SERVER_SEND_START, 128)
    refused = 0
    for _ in range(20):
        try:
            decryptor.decrypt(stranger.encrypt(PROTO_IPV4, b"\x45" + bytes(40)))
        except ProtocolError:
            refused += 1
    assert refused >= 15  # a wrong key yields an IP protocol number only by chance (~1 in 32768)
    first = encryptor.encrypt(PROTO_IPV4, b"genuine")
    assert decryptor.decrypt(first) == (PROTO_IPV4, b"genuine")


def test_payload_size_limit() -> None:
    encryptor = MppeEncryptor(CLIENT_SEND_START, 128)
    assert len(encryptor.encrypt(PROTO_IPV4, bytes(MAX_PLAIN_PAYLOAD))) == 4087
    with pytest.raises(ValueError):
        encryptor.encrypt(PROTO_IPV4, bytes(MAX_PLAIN_PAYLOAD + 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_frames_raise_only_protocol_error(data: bytes) -> None:
    encryptor, decryptor = pair()
    try:
        protocol, _ = decryptor.decrypt(data)
    except ProtocolError:
        pass
    else:
        # MPPE has no integrity check: garbage that happens to decrypt to an IP protocol number
        # is a frame like any other and moves the count on (TLS is what keeps it off the wire).
        assert protocol in (PROTO_IPV4, PROTO_IPV6)
        return
    # Refused garbage leaves the key alone: the genuine stream is still readable.
    frames = [encryptor.encrypt(PROTO_IPV4, b"after garbage") for _ in range(3)]
    results = []
    for frame in frames:
        with contextlib.suppress(ProtocolError):
            results.append(decryptor.decrypt(frame))
    assert (PROTO_IPV4, b"after garbage") in results


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=60), st.data())
def test_truncated_and_mutated_frames_raise_only_protocol_error(cut: int, data: st.DataObject) -> None:
    encryptor, decryptor = pair()
    frame = bytearray(encryptor.encrypt(PROTO_IPV4, bytes(range(40))))
    frame = frame[: min(cut, len(frame))]
    if frame:
        index = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
        frame[index] ^= data.draw(st.integers(min_value=0, max_value=255))
    try:
        protocol, payload = decryptor.decrypt(bytes(frame))
    except ProtocolError:
        return
    assert protocol in (PROTO_IPV4, PROTO_IPV6)
    assert payload and len(payload) in (len(frame) - 3, len(frame) - 4)  # 1- or 2-byte inner protocol


# ---- CCP negotiation, unit level -------------------------------------------------------------------


def ccp_with(policy: MppePolicy, lengths: frozenset[int] = frozenset({40, 56, 128})) -> Ccp:
    ccp = Ccp(reject_every_option, mppe=MppeNegotiation(MppeSettings(policy, lengths)))
    ccp.open(0.0)
    ccp.up(0.0)
    return ccp


def configure_request(identifier: int, options: list[Option]) -> bytes:
    body = encode_options(options)
    return struct.pack("!BBH", 1, identifier, 4 + len(body)) + body


def answers(ccp: Ccp) -> list[tuple[int, list[Option]]]:
    out = []
    for packet in ccp.packets_to_send():
        control = decode_control(packet)
        out.append((control.code, decode_options(control.data) if control.code <= 4 else []))
    return out


def test_our_request_lists_every_allowed_strength_and_stateless() -> None:
    ccp = ccp_with(MppePolicy.PREFER, frozenset({40, 128}))
    assert answers(ccp) == [(1, [mppe_option(BIT_STATELESS | BIT_128 | BIT_40)])]


@pytest.mark.parametrize(
    ("peer_bits", "allowed", "expected"),
    [
        (BIT_STATELESS | BIT_128 | BIT_56 | BIT_40, {40, 56, 128}, (3, BIT_STATELESS | BIT_128)),
        (BIT_STATELESS | BIT_128 | BIT_56 | BIT_40, {56}, (3, BIT_STATELESS | BIT_56)),
        (BIT_STATELESS | BIT_128, {40, 56, 128}, (2, BIT_STATELESS | BIT_128)),
        (BIT_128, {40, 56, 128}, (3, BIT_STATELESS | BIT_128)),  # stateful asked: Nak to stateless
        (BIT_STATELESS | BIT_128 | BIT_MPPC, {128}, (3, BIT_STATELESS | BIT_128)),  # no compression
        (BIT_STATELESS | BIT_40, {128}, (3, BIT_STATELESS | BIT_128)),
    ],
)
def test_peer_request_is_acked_or_naked_to_one_strength(
    peer_bits: int, allowed: set[int], expected: tuple[int, int]
) -> None:
    ccp = ccp_with(MppePolicy.REQUIRE, frozenset(allowed))
    ccp.packets_to_send()
    ccp.receive(configure_request(9, [mppe_option(peer_bits)]), 0.0)
    code, options = answers(ccp)[0]
    assert code == expected[0]
    assert options == [mppe_option(expected[1])]


def test_a_peer_request_without_mppe_is_prompted_and_other_options_are_rejected() -> None:
    ccp = ccp_with(MppePolicy.PREFER)
    ccp.packets_to_send()
    deflate = Option(26, b"\x78\x00")
    ccp.receive(configure_request(3, [deflate]), 0.0)
    assert answers(ccp) == [(4, [deflate])]
    ccp.receive(configure_request(4, []), 0.0)
    assert answers(ccp) == [(3, [mppe_option(BIT_STATELESS | BIT_128)])]


def test_require_closes_ccp_when_the_peer_rejects_mppe() -> None:
    ccp = ccp_with(MppePolicy.REQUIRE)
    request = ccp.packets_to_send()[0]
    reject = bytes([4]) + request[1:]
    ccp.receive(reject, 0.0)
    assert ccp.mppe is not None and ccp.mppe.failure == "MPPE required: peer rejected MPPE"
    assert ccp.state is State.CLOSING


def test_prefer_stops_asking_when_the_peer_rejects_mppe() -> None:
    ccp = ccp_with(MppePolicy.PREFER)
    request = ccp.packets_to_send()[0]
    ccp.receive(bytes([4]) + request[1:], 0.0)
    assert answers(ccp) == [(1, [])]
    ccp.receive(configure_request(5, [mppe_option(BIT_STATELESS | BIT_128)]), 0.0)
    assert answers(ccp) == [(4, [mppe_option(BIT_STATELESS | BIT_128)])]  # symmetric: none either way


@pytest.mark.parametrize(
    ("nak_bits", "outcome"),
    [(BIT_STATELESS | BIT_56, BIT_STATELESS | BIT_56), (BIT_56, None), (BIT_STATELESS | BIT_40, None)],
)
def test_nak_from_the_peer_is_taken_only_when_stateless_at_an_allowed_strength(
    nak_bits: int, outcome: int | None
) -> None:
    ccp = ccp_with(MppePolicy.PREFER, frozenset({56, 128}))
    request = ccp.packets_to_send()[0]
    nak = mppe_option(nak_bits).encode()
    ccp.receive(struct.pack("!BBH", 3, request[1], 4 + len(nak)) + nak, 0.0)
    expected = [mppe_option(outcome)] if outcome is not None else []
    assert answers(ccp) == [(1, expected)]


def test_two_negotiators_agree_on_the_strongest_common_strength() -> None:
    a = ccp_with(MppePolicy.PREFER, frozenset({40, 56}))
    b = ccp_with(MppePolicy.REQUIRE, frozenset({40, 56, 128}))
    for _ in range(10):
        for sender, receiver in ((a, b), (b, a)):
            for packet in sender.packets_to_send():
                receiver.receive(packet, 0.0)
    assert a.is_opened and b.is_opened
    for ccp in (a, b):
        assert ccp.mppe is not None
        assert ccp.mppe.send_bits == ccp.mppe.recv_bits == BIT_STATELESS | BIT_56


def test_option_18_bytes_match_rfc3078() -> None:
    # type 18, length 6, supported bits: H in the first octet, strengths in the last.
    assert mppe_option(BIT_STATELESS | BIT_128).encode() == h("1206 01000040")
    assert mppe_option(BIT_STATELESS | BIT_56 | BIT_40).encode() == h("1206 010000a0")
    assert mppe_option(BIT_STATELESS).type == OPT_MPPE


# ---- sessions end to end ---------------------------------------------------------------------------


def mppe_wire(
    server: MppePolicy,
    client: MppePolicy,
    *,
    method: AuthMethod = AuthMethod.MSCHAP_V2,
    server_lengths: frozenset[int] = frozenset({40, 56, 128}),
    client_lengths: frozenset[int] = frozenset({40, 56, 128}),
    client_ccp: bool = False,
    ipv6: bool = True,
    override: MppeSettings | None = None,
) -> Wire:
    """Like make_wire, with MPPE settings on both sides; ``client_ccp`` runs CCP without MPPE."""
    base = make_wire(method, ipv6=ipv6, start=False)
    random_bytes = seeded_random(11)
    server_settings = replace(base.server.settings, mppe=MppeSettings(server, server_lengths))
    client_link = base.client.settings.link
    if client_ccp:
        client_link = replace(client_link, ccp_policy=reject_every_option)
    client_settings = replace(
        base.client.settings, link=client_link, mppe=MppeSettings(client, client_lengths)
    )
    wire = Wire(
        ServerSession(server_settings, 0.0, now_wallclock=1_763_700_000.0, random_bytes=random_bytes),
        ClientSession(client_settings, random_bytes=random_bytes),
        {"alice": "s3cret"},
        mppe_override=override,
    )
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    return wire


def ipv4_packet(seq: int, size: int = 60) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, seq, 0, 64, 17, 0, bytes(4), bytes(4))
    return header + bytes((seq + i) & 0xFF for i in range(size - len(header)))


def ipv6_packet(seq: int, size: int = 80) -> bytes:
    return struct.pack("!IHBB", 0x60000000 | seq, size - 40, 59, 64) + bytes(32) + bytes([seq]) * (size - 40)


def carry(wire: Wire, sender: ServerSession | ClientSession, packets: list[bytes], ipv6: bool = False
          ) -> list[bytes]:
    receiver = wire.client if sender is wire.server else wire.server
    accepted = sender.send_ip_packets(packets, ipv6=ipv6)
    wire.pump()
    delivered = [bytes(p) for p in receiver.take_ip_packets()]
    assert accepted == len(delivered) or accepted == 0
    return delivered if accepted else []


def closed_reasons(events: list[SessionEvent]) -> list[str]:
    return [e.reason for e in events if isinstance(e, SessionClosed)]


def notices(events: list[SessionEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, Notice)]


def ip_flows(wire: Wire) -> bool:
    v4 = [ipv4_packet(n) for n in range(1, 6)]
    return carry(wire, wire.client, v4) == v4 and carry(wire, wire.server, v4) == v4


def test_required_mppe_carries_ipv4_and_ipv6_both_ways_as_00fd_frames() -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.REQUIRE)
    assert wire.server_saw(Ipv4Up) and wire.client_saw(Ipv4Up)
    assert wire.server.link.mppe is not None and wire.client.link.mppe is not None
    mark = len(wire.segments)
    up = [ipv4_packet(n, 40 + n * 37) for n in range(1, 40)]
    down = [ipv4_packet(n + 100, 1400) for n in range(25)]
    assert carry(wire, wire.client, up) == up
    assert carry(wire, wire.server, down) == down
    v6 = [ipv6_packet(n) for n in range(8)]
    assert carry(wire, wire.client, v6, ipv6=True) == v6
    assert carry(wire, wire.server, v6, ipv6=True) == v6
    for from_client, sent in ((True, up + v6), (False, down + v6)):
        frames = sstp_data_frames(wire, from_client=from_client, since=mark)
        assert len(frames) == len(sent)
        assert {ppp_protocol(f) for f in frames} == {PROTO_MPPE}
        for frame, packet in zip(frames, sent, strict=True):
            assert len(frame) == 4 + 2 + 2 + len(packet)  # FF 03 00FD, MPPE header, inner protocol
            assert packet[20:] not in frame  # the payload does not travel in the clear
    # Not a single plain IP frame in the whole conversation, either direction.
    for from_client in (True, False):
        protocols = {ppp_protocol(f) for f in sstp_data_frames(wire, from_client=from_client)}
        assert PROTO_IPV4 not in protocols and PROTO_IPV6 not in protocols
    assert wire.server.rx_packets == len(up) + len(v6) and wire.server.tx_packets == len(down) + len(v6)
    assert wire.client.rx_bytes == sum(map(len, down + v6))


def test_mppe_frames_count_up_from_zero_with_a_fresh_key_each() -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.REQUIRE, ipv6=False)
    mark = len(wire.segments)
    packets = [ipv4_packet(n) for n in range(3)]
    assert carry(wire, wire.client, packets) == packets
    frames = sstp_data_frames(wire, from_client=True, since=mark)
    assert [struct.unpack_from("!H", f, 4)[0] for f in frames] == [0x9000, 0x9001, 0x9002]
    # The client's send key is the server's receive key; decrypt with the RFC schedule.
    client_ok = next(e for e in wire.client_events if isinstance(e, AuthSucceeded))
    assert client_ok.keys is not None
    start = client_ok.keys.send_key
    key = initial_session_key(start, 128)
    for frame, packet in zip(frames, packets, strict=True):
        key = reference_rekey(start, key, 128)
        assert rc4(key, frame[6:]) == b"\x00\x21" + packet


def test_plain_ip_from_the_peer_is_dropped_while_mppe_is_on() -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.REQUIRE, ipv6=False)
    channel = wire.client.channel
    assert channel is not None
    assert channel.send_ppp_frame(b"\xff\x03\x00\x21" + ipv4_packet(1))
    wire.pump()
    assert wire.server.take_ip_packets() == []
    packets = [ipv4_packet(2)]
    assert carry(wire, wire.client, packets) == packets


def test_a_damaged_00fd_frame_is_dropped_and_traffic_carries_on() -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.REQUIRE, ipv6=False)

    def clear_encrypted_flag(data: bytes) -> bytes:
        wire.tamper_to_server = None
        index = data.index(b"\xff\x03\x00\xfd") + 4
        return data[:index] + bytes([data[index] & ~0x10 & 0xFF]) + data[index + 1 :]

    wire.tamper_to_server = clear_encrypted_flag
    assert wire.client.send_ip_packets([ipv4_packet(1)]) == 1
    wire.pump()
    assert wire.server.take_ip_packets() == []
    assert wire.server.mppe_dropped_rx == 1
    packets = [ipv4_packet(2), ipv4_packet(3)]
    assert carry(wire, wire.client, packets) == packets
    assert not wire.server.closed


def test_largest_encrypted_packet_and_one_byte_more() -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.REQUIRE, ipv6=False)
    biggest = ipv4_packet(1, MAX_PLAIN_PAYLOAD)
    assert carry(wire, wire.client, [biggest]) == [biggest]
    assert wire.server.send_ip_packets([ipv4_packet(2, MAX_PLAIN_PAYLOAD + 1)]) == 0
    assert wire.server.mppe_dropped_tx == 1


@pytest.mark.parametrize("method", [AuthMethod.MSCHAP_V1, AuthMethod.MSCHAP_V2], ids=lambda m: m.value)
@pytest.mark.parametrize(("server_lengths", "client_lengths", "bits"), [
    ({40, 56, 128}, {40, 56, 128}, 128),
    ({40, 56, 128}, {40, 56}, 56),
    ({40}, {40, 128}, 40),
])
def test_strength_is_the_strongest_both_allow(
    method: AuthMethod, server_lengths: set[int], client_lengths: set[int], bits: int
) -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.PREFER, method=method, ipv6=False,
                     server_lengths=frozenset(server_lengths), client_lengths=frozenset(client_lengths))
    for session in (wire.server, wire.client):
        cipher = session.link.mppe
        assert cipher is not None
        assert cipher.encryptor.key_bits == cipher.decryptor.key_bits == bits
    assert ip_flows(wire)


def test_no_common_strength_under_require_ends_the_session() -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.PREFER, server_lengths=frozenset({128}),
                     client_lengths=frozenset({40}), ipv6=False)
    wire.advance(5)
    closed = closed_reasons(wire.server_events)
    assert closed and "MPPE" in closed[0]
    assert not wire.server_saw(Ipv4Up)


# server policy × what the client does: "mppe" (encrypted), "plain" (IP in the clear), "closed".
MATRIX = [
    (MppePolicy.DENY, MppePolicy.DENY, False, "plain"),
    (MppePolicy.DENY, MppePolicy.PREFER, False, "plain"),
    (MppePolicy.DENY, MppePolicy.REQUIRE, False, "closed"),
    (MppePolicy.PREFER, MppePolicy.DENY, False, "plain"),  # client Protocol-Rejects CCP
    (MppePolicy.PREFER, MppePolicy.DENY, True, "plain"),  # client runs CCP, rejects option 18
    (MppePolicy.PREFER, MppePolicy.PREFER, False, "mppe"),
    (MppePolicy.PREFER, MppePolicy.REQUIRE, False, "mppe"),
    (MppePolicy.REQUIRE, MppePolicy.DENY, False, "closed"),
    (MppePolicy.REQUIRE, MppePolicy.DENY, True, "closed"),
    (MppePolicy.REQUIRE, MppePolicy.PREFER, False, "mppe"),
    (MppePolicy.REQUIRE, MppePolicy.REQUIRE, False, "mppe"),
]


@pytest.mark.parametrize(("server", "client", "client_ccp", "outcome"), MATRIX,
                         ids=[f"{s.value}-{c.value}{'-ccp' if ccp else ''}" for s, c, ccp, _ in MATRIX])
def test_policy_matrix(server: MppePolicy, client: MppePolicy, client_ccp: bool, outcome: str) -> None:
    wire = mppe_wire(server, client, client_ccp=client_ccp, ipv6=False)
    wire.advance(10)
    if outcome == "closed":
        assert wire.server.closed and wire.client.closed
        reasons = closed_reasons(wire.server_events) + closed_reasons(wire.client_events)
        assert any("MPPE" in reason for reason in reasons)
        assert not wire.server_saw(Ipv4Up) and not wire.client_saw(Ipv4Up)
        return
    assert not wire.server.closed and not wire.client.closed
    assert wire.server_saw(Ipv4Up) and wire.client_saw(Ipv4Up)
    mark = len(wire.segments)
    assert ip_flows(wire)
    protocols = {ppp_protocol(f) for side in (True, False)
                 for f in sstp_data_frames(wire, from_client=side, since=mark)}
    expected = PROTO_MPPE if outcome == "mppe" else PROTO_IPV4
    assert protocols == {expected}
    assert (wire.server.link.mppe is not None) is (outcome == "mppe")


@pytest.mark.parametrize("method", [AuthMethod.PAP, AuthMethod.CHAP_MD5], ids=lambda m: m.value)
def test_require_without_keys_ends_the_link(method: AuthMethod) -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.PREFER, method=method, ipv6=False)
    wire.advance(10)
    closed = closed_reasons(wire.server_events)
    assert closed and "yields no MPPE keys" in closed[0]
    assert wire.client.closed and not wire.client_saw(Ipv4Up)


@pytest.mark.parametrize("method", [AuthMethod.PAP, AuthMethod.CHAP_MD5], ids=lambda m: m.value)
def test_prefer_without_keys_goes_in_the_clear(method: AuthMethod) -> None:
    wire = mppe_wire(MppePolicy.PREFER, MppePolicy.PREFER, method=method, ipv6=False)
    assert any("no MPPE keys" in text for text in notices(wire.server_events))
    assert ip_flows(wire)
    assert wire.server.link.mppe is None


def test_no_ip_before_mppe_settles() -> None:
    base = make_wire(AuthMethod.MSCHAP_V2, ipv6=False, start=False)
    server_settings = replace(base.server.settings, mppe=MppeSettings(MppePolicy.REQUIRE))
    server = ServerSession(server_settings, 0.0, now_wallclock=1_763_700_000.0, random_bytes=seeded_random(3))
    client_settings = replace(base.client.settings, mppe=MppeSettings(MppePolicy.REQUIRE))
    client = ClientSession(client_settings, random_bytes=seeded_random(4))
    wire = Wire(server, client, {"alice": "s3cret"})

    def drop_ccp(data: bytes) -> bytes:
        """Hold back every CCP frame from the client: IPCP opens, MPPE cannot."""
        if data[:1] != b"\x10":
            return data  # the HTTP request
        out = b""
        while data:
            length = struct.unpack_from("!H", data, 2)[0] & 0x0FFF
            packet, data = data[:length], data[length:]
            if not (packet[1] == 0 and packet[4:8] == b"\xff\x03\x80\xfd"):
                out += packet
        return out

    wire.tamper_to_server = drop_ccp
    client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    assert server.link.ipcp is not None and server.link.ipcp.is_opened
    assert server.link.mppe is None
    assert not wire.server_saw(Ipv4Up)
    assert server.send_ip_packets([ipv4_packet(1)]) == 0
    assert server.channel is not None and not server.channel.ipv4_open  # no plain IP either


def test_lcp_renegotiation_shuts_ip_then_mppe_restarts_with_new_keys() -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.REQUIRE, ipv6=False)
    assert ip_flows(wire)
    old_cipher = wire.server.link.mppe
    conf_req = next(f for f in sstp_data_frames(wire, from_client=True)
                    if ppp_protocol(f) == 0xC021 and f[4] == 1)
    wire.server.receive_data(struct.pack("!BBH", 0x10, 0, 4 + len(conf_req)) + conf_req, wire.now)
    assert wire.server.link.mppe is None
    assert wire.server.send_ip_packets([ipv4_packet(1)]) == 0
    wire.pump()
    assert any("MPPE off" in text for text in notices(wire.server_events))
    assert wire.server.link.mppe is not None and wire.server.link.mppe is not old_cipher
    assert len([e for e in wire.server_events if isinstance(e, AuthSucceeded)]) == 2
    mark = len(wire.segments)
    assert ip_flows(wire)
    frames = sstp_data_frames(wire, from_client=False, since=mark)
    assert struct.unpack_from("!H", frames[0], 4)[0] == 0x9000  # counts start again at 0
    assert not wire.server.closed and not wire.client.closed


# ---- a per-session policy from the authentication backend (RADIUS MS-MPPE-Encryption-*) ----------


def test_a_session_policy_can_require_mppe_where_the_service_denies_it() -> None:
    wire = mppe_wire(MppePolicy.DENY, MppePolicy.PREFER,
                     override=MppeSettings(MppePolicy.REQUIRE, frozenset({128})))
    assert wire.server_saw(Ipv4Up)
    cipher = wire.server.link.mppe
    assert cipher is not None and cipher.encryptor.key_bits == cipher.decryptor.key_bits == 128
    mark = len(wire.segments)
    up = [ipv4_packet(n) for n in range(1, 6)]
    assert carry(wire, wire.client, up) == up
    assert {ppp_protocol(f) for f in sstp_data_frames(wire, from_client=True, since=mark)} == {PROTO_MPPE}


def test_a_session_policy_can_drop_mppe_where_the_service_requires_it() -> None:
    wire = mppe_wire(MppePolicy.REQUIRE, MppePolicy.DENY, override=MppeSettings(MppePolicy.DENY))
    assert wire.server_saw(Ipv4Up) and wire.server.link.mppe is None
    mark = len(wire.segments)
    up = [ipv4_packet(n) for n in range(1, 6)]
    assert carry(wire, wire.client, up) == up
    assert {ppp_protocol(f) for f in sstp_data_frames(wire, from_client=True, since=mark)} == {PROTO_IPV4}


def test_a_session_policy_requiring_mppe_refuses_a_client_without_it() -> None:
    wire = mppe_wire(MppePolicy.PREFER, MppePolicy.DENY, override=MppeSettings(MppePolicy.REQUIRE))
    assert not wire.server_saw(Ipv4Up) and not ip_flows(wire)
    assert any("MPPE required" in reason for reason in closed_reasons(wire.server_events))
