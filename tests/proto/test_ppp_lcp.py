"""LCP option policy, Windows 10's observed exchange, echo, loops and odd codes."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.frames import (
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    CONFIGURE_REQUEST,
    ECHO_REPLY,
    ECHO_REQUEST,
    PROTOCOL_REJECT,
    TERMINATE_REQUEST,
    ControlPacket,
    Option,
    decode_control,
    decode_options,
    encode_options,
)
from vpnd.proto.ppp.fsm import Signal, State
from vpnd.proto.ppp.lcp import Lcp, LcpSettings


def counter_random(start: int = 0x11223344):  # type: ignore[no-untyped-def]
    """Deterministic 'random' bytes: successive 32-bit counters."""
    counter = itertools.count(start)

    def random_bytes(n: int) -> bytes:
        return b"".join(struct.pack("!I", next(counter)) for _ in range((n + 3) // 4))[:n]

    return random_bytes


def sent(lcp: Lcp) -> list[ControlPacket]:
    return [decode_control(p) for p in lcp.packets_to_send()]


def started(lcp: Lcp) -> Lcp:
    lcp.open(0.0)
    lcp.up(0.0)
    return lcp


def signals(lcp: Lcp) -> list[Signal]:
    out = []
    while (s := lcp.next_signal()) is not None:
        out.append(s.kind)
    return out


def test_windows10_exchange_byte_exact() -> None:
    """The accel-ppp capture of a Windows 10 client from the fact sheet, §6.2."""
    server = started(Lcp(True, LcpSettings(auth_methods=(AuthMethod.PAP,)), counter_random(0xA1B2C3D4)))
    [ours] = sent(server)
    # server ConfReq <auth PAP> <mru 1452> <magic>
    assert ours.code == CONFIGURE_REQUEST
    assert ours.data == bytes.fromhex("0304c023" "010405ac" "0506a1b2c3d4")

    # recv ConfReq id=0 <mru 4091> <magic 345f64ca> <pcomp> <accomp> <0d 03 06>
    server.receive(bytes.fromhex("01000015" "01040ffb" "0506345f64ca" "0702" "0802" "0d0306"), 0.1)
    assert server.packets_to_send() == [bytes.fromhex("0400000b" "0702" "0802" "0d0306")]
    # recv ConfReq id=1 <mru 4091> <magic>
    server.receive(bytes.fromhex("0101000e" "01040ffb" "0506345f64ca"), 0.2)
    assert server.packets_to_send() == [bytes.fromhex("03010008" "010405ac")]
    # recv ConfReq id=2 <mru 1452> <magic> → Ack verbatim
    req2 = bytes.fromhex("0102000e" "010405ac" "0506345f64ca")
    server.receive(req2, 0.3)
    assert server.packets_to_send() == [bytes([CONFIGURE_ACK]) + req2[1:]]
    assert server.state is State.ACK_SENT
    # Windows acks our request.
    server.receive(ControlPacket(CONFIGURE_ACK, ours.identifier, ours.data).encode(), 0.4)
    assert server.state is State.OPENED
    assert server.auth_method is AuthMethod.PAP
    assert server.peer_mru == 1452 and server.peer_magic == 0x345F64CA
    assert server.max_send_size == 1452
    # Identification packets after LCP opened: logged, not fatal, not Code-Rejected.
    server.receive(bytes.fromhex("0c030012345f64ca") + b"MSRASV5.20", 0.5)
    server.receive(bytes.fromhex("0c040017345f64ca") + b"MSRAS-0-DESKTOP", 0.5)
    assert server.packets_to_send() == []
    first, second = server.next_peer_message(), server.next_peer_message()
    assert first is not None and first.text == "MSRASV5.20"
    assert second is not None and second.text == "MSRAS-0-DESKTOP"
    assert server.state is State.OPENED


def open_pair(server_settings: LcpSettings, client_settings: LcpSettings) -> tuple[Lcp, Lcp]:
    server = started(Lcp(True, server_settings, counter_random(0x100)))
    client = started(Lcp(False, client_settings, counter_random(0x900)))
    for _ in range(30):
        moved = False
        for a, b in ((server, client), (client, server)):
            for packet in a.packets_to_send():
                b.receive(packet, 0.0)
                moved = True
        if not moved:
            break
    return server, client


def test_auth_walk_follows_peer_suggestion_when_allowed() -> None:
    server, client = open_pair(
        LcpSettings(auth_methods=(AuthMethod.PAP, AuthMethod.CHAP_MD5, AuthMethod.MSCHAP_V2)),
        LcpSettings(auth_methods=(AuthMethod.MSCHAP_V2,)),
    )
    assert server.is_opened and client.is_opened
    assert server.auth_method is AuthMethod.MSCHAP_V2
    assert client.auth_method is AuthMethod.MSCHAP_V2


def test_auth_walk_takes_next_allowed_when_suggestion_not_allowed() -> None:
    server = started(Lcp(True, LcpSettings(auth_methods=(AuthMethod.MSCHAP_V2, AuthMethod.PAP))))
    [ours] = sent(server)
    # Peer proposes EAP (not an option for us): walk to the next allowed method.
    server.receive(ControlPacket(CONFIGURE_NAK, ours.identifier, bytes.fromhex("0304c227")).encode(), 1.0)
    [again] = sent(server)
    assert Option(3, b"\xc0\x23") in decode_options(again.data)
    server.receive(ControlPacket(CONFIGURE_NAK, again.identifier, bytes.fromhex("0304c227")).encode(), 1.0)
    assert server.state is State.CLOSING
    assert "refused every allowed authentication method" in server.close_reason
    assert [p.code for p in sent(server)] == [TERMINATE_REQUEST]


def test_auth_rejected_by_peer_is_fatal_for_authenticator() -> None:
    server = started(Lcp(True, LcpSettings(auth_methods=(AuthMethod.PAP,))))
    [ours] = sent(server)
    server.receive(ControlPacket(CONFIGURE_REJECT, ours.identifier, bytes.fromhex("0304c023")).encode(), 1.0)
    assert server.state is State.CLOSING
    assert "Authentication-Protocol" in server.close_reason


def test_peer_role_auth_judgement() -> None:
    client = started(Lcp(False, LcpSettings(auth_methods=(AuthMethod.MSCHAP_V2, AuthMethod.PAP))))
    sent(client)
    client.receive(ControlPacket(CONFIGURE_REQUEST, 1, bytes.fromhex("0305c22305")).encode(), 0.1)
    [nak] = sent(client)
    assert (nak.code, nak.data) == (CONFIGURE_NAK, bytes.fromhex("0305c22381"))
    client.receive(ControlPacket(CONFIGURE_REQUEST, 2, bytes.fromhex("0304c023")).encode(), 0.1)
    assert sent(client)[0].code == CONFIGURE_ACK

    nothing = started(Lcp(False, LcpSettings()))
    sent(nothing)
    nothing.receive(ControlPacket(CONFIGURE_REQUEST, 1, bytes.fromhex("0304c023")).encode(), 0.1)
    [rej] = sent(nothing)
    assert (rej.code, rej.data) == (CONFIGURE_REJECT, bytes.fromhex("0304c023"))


def test_authenticator_rejects_peer_asking_us_to_authenticate() -> None:
    server = started(Lcp(True, LcpSettings(auth_methods=(AuthMethod.PAP,))))
    sent(server)
    server.receive(ControlPacket(CONFIGURE_REQUEST, 1, bytes.fromhex("0304c023")).encode(), 0.1)
    assert sent(server)[0].code == CONFIGURE_REJECT


def test_accm_acked_and_bad_lengths_rejected() -> None:
    lcp = started(Lcp(False))
    sent(lcp)
    lcp.receive(ControlPacket(CONFIGURE_REQUEST, 1, bytes.fromhex("020600000000")).encode(), 0.1)
    assert sent(lcp)[0].code == CONFIGURE_ACK
    lcp.receive(ControlPacket(CONFIGURE_REQUEST, 2, bytes.fromhex("010305" "0504aabb")).encode(), 0.1)
    [rej] = sent(lcp)
    assert (rej.code, rej.data) == (CONFIGURE_REJECT, bytes.fromhex("010305" "0504aabb"))


def test_small_peer_mru_is_naked_up() -> None:
    lcp = started(Lcp(False, LcpSettings(max_peer_mru=1400)))
    sent(lcp)
    lcp.receive(ControlPacket(CONFIGURE_REQUEST, 1, bytes.fromhex("01040010")).encode(), 0.1)
    [nak] = sent(lcp)
    assert (nak.code, nak.data) == (CONFIGURE_NAK, bytes.fromhex("01040578"))


def test_zero_and_equal_magic_are_naked_and_repeated_equal_magic_means_loop() -> None:
    lcp = started(Lcp(False, LcpSettings(), counter_random(0x55)))
    [ours] = sent(lcp)
    lcp.receive(ControlPacket(CONFIGURE_REQUEST, 1, bytes.fromhex("050600000000")).encode(), 0.1)
    [nak] = sent(lcp)
    assert nak.code == CONFIGURE_NAK
    [suggestion] = decode_options(nak.data)
    assert suggestion.type == 5 and suggestion.u32() not in (0, lcp.magic)
    # Our own request reflected back, again and again: a looped-back link.
    for _ in range(4):
        lcp.receive(ControlPacket(CONFIGURE_REQUEST, ours.identifier, ours.data).encode(), 0.2)
        assert sent(lcp)[0].code == CONFIGURE_NAK
    lcp.receive(ControlPacket(CONFIGURE_REQUEST, ours.identifier, ours.data).encode(), 0.2)
    assert lcp.state is State.CLOSING
    assert "looped-back" in lcp.close_reason


def test_magic_nak_picks_a_new_magic_and_mru_nak_is_followed() -> None:
    lcp = started(Lcp(False, LcpSettings(), counter_random(0x77)))
    [ours] = sent(lcp)
    old_magic = lcp.magic
    nak = encode_options([Option(5, struct.pack("!I", old_magic)), Option(1, b"\x05\x00")])
    lcp.receive(ControlPacket(CONFIGURE_NAK, ours.identifier, nak).encode(), 0.1)
    [again] = sent(lcp)
    options = {o.type: o for o in decode_options(again.data)}
    assert options[5].u32() not in (0, old_magic)
    assert options[1].u16() == 0x500


def opened_lcp(settings: LcpSettings | None = None) -> Lcp:
    server, _client = open_pair(settings or LcpSettings(), LcpSettings())
    assert server.is_opened
    sent(server)
    signals(server)
    return server


def test_echo_request_answered_with_our_magic_and_truncated_to_peer_mru() -> None:
    lcp = opened_lcp(LcpSettings(max_peer_mru=200, min_peer_mru=100))
    # The client asked for MRU 1452 → Nak'd to 200.
    assert lcp.peer_mru == 200
    payload = struct.pack("!I", 0xDEADBEEF) + bytes(range(256)) * 2
    lcp.receive(ControlPacket(ECHO_REQUEST, 77, payload).encode(), 1.0)
    [reply] = sent(lcp)
    assert (reply.code, reply.identifier) == (ECHO_REPLY, 77)
    assert reply.data[:4] == struct.pack("!I", lcp.magic)
    assert len(reply.encode()) == 200
    assert reply.data[4:] == payload[4:200 - 4]


def test_echo_failure_closes_with_reason() -> None:
    lcp = opened_lcp(LcpSettings(echo_interval=30, echo_failure=3))
    requests = 0
    now = 0.0
    while lcp.state is State.OPENED:
        deadline = lcp.get_timer()
        assert deadline is not None
        now = deadline
        lcp.handle_timer(now)
        requests += sum(1 for p in sent(lcp) if p.code == ECHO_REQUEST)
    assert requests == 3
    assert now == 120.0
    assert lcp.close_reason == "LCP echo timeout (3 unanswered)"
    assert lcp.state is State.CLOSING


def test_echo_reply_resets_failure_count() -> None:
    lcp = opened_lcp(LcpSettings(echo_interval=10, echo_failure=2))
    for tick in range(1, 8):
        lcp.handle_timer(10.0 * tick)
        for packet in sent(lcp):
            assert packet.code == ECHO_REQUEST
            reply = ControlPacket(ECHO_REPLY, packet.identifier, b"\x00\x00\x00\x09")
            lcp.receive(reply.encode(), 10.0 * tick)
    assert lcp.state is State.OPENED


def test_adaptive_echo_timeout_counts_any_activity() -> None:
    lcp = opened_lcp(LcpSettings(echo_interval=10, echo_timeout=25))
    lcp.note_activity(5.0)
    lcp.handle_timer(10.0)  # peer active 5 s ago: no echo needed
    assert sent(lcp) == []
    lcp.handle_timer(20.0)  # 15 s idle: probe
    assert [p.code for p in sent(lcp)] == [ECHO_REQUEST]
    lcp.note_activity(21.0)
    lcp.handle_timer(30.0)
    lcp.handle_timer(40.0)
    assert lcp.state is State.OPENED
    lcp.handle_timer(50.0)  # 29 s without a frame
    assert lcp.state is State.CLOSING
    assert "no frame from the peer" in lcp.close_reason


def test_echo_disabled_means_no_timer_once_opened() -> None:
    lcp = opened_lcp(LcpSettings(echo_interval=0))
    assert lcp.get_timer() is None


def test_protocol_reject_building_and_receiving() -> None:
    lcp = opened_lcp()
    lcp.send_protocol_reject(0x8057, b"\x01\x02\x00\x04" + b"z" * 5000)
    [rej] = sent(lcp)
    assert rej.code == PROTOCOL_REJECT
    assert rej.data[:2] == b"\x80\x57"
    assert len(rej.encode()) == lcp.max_send_size
    lcp.receive(ControlPacket(PROTOCOL_REJECT, 3, b"\x80\xfd\x01\x01\x00\x04").encode(), 1.0)
    assert lcp.next_protocol_reject() == (0x80FD, b"\x01\x01\x00\x04")
    assert lcp.state is State.OPENED
    lcp.receive(ControlPacket(PROTOCOL_REJECT, 4, b"\xc0\x21").encode(), 1.0)
    assert lcp.state is State.STOPPING


def test_discard_and_time_remaining_are_quiet() -> None:
    lcp = opened_lcp()
    lcp.receive(ControlPacket(11, 1, b"\x00\x00\x00\x00junk").encode(), 1.0)
    lcp.receive(ControlPacket(13, 2, b"\x00\x00\x00\x00\x00\x00\x0e\x10bye").encode(), 1.0)
    assert sent(lcp) == []
    message = lcp.next_peer_message()
    assert message is not None and message.seconds_remaining == 3600 and message.text == "bye"


def test_echo_before_opened_is_discarded() -> None:
    lcp = started(Lcp(False))
    sent(lcp)
    lcp.receive(ControlPacket(ECHO_REQUEST, 1, b"\x00\x00\x00\x00").encode(), 0.1)
    assert sent(lcp) == []


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        LcpSettings(mru=4091)
    with pytest.raises(ValueError):
        LcpSettings(auth_methods=(AuthMethod.PAP, AuthMethod.PAP))


@given(st.lists(st.binary(max_size=60), max_size=25), st.booleans())
def test_lcp_never_raises_and_never_sends_oversized(packets: list[bytes], authenticator: bool) -> None:
    lcp = started(Lcp(authenticator, LcpSettings(auth_methods=(AuthMethod.MSCHAP_V2, AuthMethod.PAP))))
    now = 0.0
    for packet in packets:
        lcp.receive(packet, now)
        now += 1.3
        lcp.handle_timer(now)
        for raw in lcp.packets_to_send():
            assert len(raw) <= 4087
            decode_control(raw)
