"""EAP in the sans-I/O core: the RFC 3748 codec, EAP-MSCHAPv2 in both roles over a PPP link,
LCP's fall-back to the next method when the peer Naks EAP, and hostile input.

Interop note: EAP-MSCHAPv2's message layout (draft-kamath-pppext-eap-mschapv2) and its HLAK
(MasterReceiveKey ‖ MasterSendKey, MS-SSTP §3.2.5.2) follow the specs; no Windows peer could
check them here.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.proto.test_ppp_link import PASSWORD, Wire, client_link, counter_random, of_type, server_link
from vpnd.proto.eap.client import EapClient
from vpnd.proto.eap.mschapv2 import MsChapV2Message, OpCode, decode_mschapv2, encode_mschapv2
from vpnd.proto.eap.packets import EapCode, EapPacket, EapType, decode_eap, decode_nak, encode_nak
from vpnd.proto.eap.relay import EapRelayServer
from vpnd.proto.eap.server import EapServer
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthFailed,
    AuthMethod,
    AuthRequested,
    AuthSucceeded,
    EapRelayRequest,
)
from vpnd.proto.ppp.auth.verify import decide_with_password
from vpnd.proto.ppp.link import Ipv4Opened, LinkDown, LinkEstablished
from vpnd.proto.sstp.binding import hlak_from_keys

# ---- codec ---------------------------------------------------------------------------------------


def test_request_response_success_failure_round_trip() -> None:
    request = EapPacket(EapCode.REQUEST, 7, EapType.IDENTITY, b"")
    assert request.encode() == b"\x01\x07\x00\x05\x01"
    response = EapPacket(EapCode.RESPONSE, 7, EapType.IDENTITY, b"alice")
    assert decode_eap(response.encode()) == response
    assert EapPacket(EapCode.SUCCESS, 9).encode() == b"\x03\x09\x00\x04"
    assert decode_eap(b"\x04\x09\x00\x04") == EapPacket(EapCode.FAILURE, 9)
    # Octets past Length are link padding (RFC 3748 §4).
    assert decode_eap(b"\x02\x07\x00\x06\x01a" + bytes(10)) == EapPacket(EapCode.RESPONSE, 7, 1, b"a")


@pytest.mark.parametrize("raw, why", [
    (b"\x01\x01\x00", "shorter than its header"),
    (b"\x05\x01\x00\x04", "code 5 is unknown"),
    (b"\x02\x01\x00\x40\x01alice", "Length 64 exceeds"),  # a lying length
    (b"\x03\x01\x00\x05\x00", "Length 5, not 4"),
    (b"\x02\x01\x00\x04", "has no Type"),
    (b"\x01\x01\x00\x02", "has no Type"),
])
def test_hostile_packets_are_refused_with_a_reason(raw: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode_eap(raw)


def test_encoder_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        EapPacket(EapCode.SUCCESS, 1, EapType.IDENTITY).encode()
    with pytest.raises(ValueError):
        EapPacket(EapCode.REQUEST, 1, None).encode()
    with pytest.raises(ValueError):
        EapPacket(EapCode.RESPONSE, 1, EapType.IDENTITY, bytes(5000)).encode()


def test_nak_lists_desired_types() -> None:
    assert encode_nak((26, 13)) == b"\x1a\x0d"
    assert encode_nak(()) == b"\x00"
    assert decode_nak(b"\x00") == ()
    assert decode_nak(b"\x19\x0d") == (25, 13)


def test_mschapv2_messages() -> None:
    challenge = MsChapV2Message(OpCode.CHALLENGE, 3, value=bytes(range(16)), name=b"vpnd")
    encoded = encode_mschapv2(challenge)
    # MS-Length counts from the OpCode: EAP Length - 5.
    assert encoded[:4] == b"\x01\x03" + struct.pack("!H", len(encoded))
    assert decode_mschapv2(encoded) == challenge
    assert decode_mschapv2(b"\x03") == MsChapV2Message(OpCode.SUCCESS, short=True)
    assert decode_mschapv2(b"\x04\x05\x00\x08E=691") == MsChapV2Message(OpCode.FAILURE, 5, message=b"E=691")
    for bad in (b"", b"\x09", b"\x01", b"\x02\x01\x00", b"\x02\x01\x00\x40\x31abc", b"\x01\x01\x00\x05\x00"):
        with pytest.raises(ProtocolError):
            decode_mschapv2(bad)


# ---- both roles over a PPP link ----------------------------------------------------------------------


def _run(server_methods: tuple[AuthMethod, ...], client_methods: tuple[AuthMethod, ...],
         password: str = PASSWORD) -> Wire:
    wire = Wire(server_link(server_methods), client_link(client_methods, password=password))
    wire.server.open(0.0)
    wire.client.open(0.0)
    wire.run()
    return wire


def test_eap_mschapv2_logs_in_and_both_ends_derive_the_same_hlak() -> None:
    wire = _run((AuthMethod.EAP, AuthMethod.MSCHAP_V2), (AuthMethod.EAP, AuthMethod.MSCHAP_V2))
    assert of_type(wire.server_events, LinkEstablished)[0] == LinkEstablished(AuthMethod.EAP, 1452, 1452)
    [requested] = of_type(wire.server_events, AuthRequested)
    assert isinstance(requested, AuthRequested) and requested.request.username == "alice"
    [server_ok] = of_type(wire.server_events, AuthSucceeded)
    [client_ok] = of_type(wire.client_events, AuthSucceeded)
    assert isinstance(server_ok, AuthSucceeded) and isinstance(client_ok, AuthSucceeded)
    assert server_ok.method_name == client_ok.method_name == "eap-mschap-v2"
    assert server_ok.keys is not None and client_ok.keys is not None
    assert client_ok.keys.send_key == server_ok.keys.recv_key
    server_hlak = hlak_from_keys(server_ok.keys, is_server=True)
    assert server_hlak == hlak_from_keys(client_ok.keys, is_server=False) != bytes(32)
    assert of_type(wire.client_events, Ipv4Opened)


def test_a_client_without_eap_naks_it_and_gets_the_next_method() -> None:
    wire = _run((AuthMethod.EAP, AuthMethod.PAP), (AuthMethod.PAP,))
    assert wire.server.auth_method is AuthMethod.PAP
    assert of_type(wire.client_events, Ipv4Opened)


def test_wrong_password_is_refused_with_the_cause_on_both_ends() -> None:
    wire = _run((AuthMethod.EAP,), (AuthMethod.EAP,), password="wrong")
    [server_failed] = of_type(wire.server_events, AuthFailed)
    [client_failed] = of_type(wire.client_events, AuthFailed)
    assert isinstance(server_failed, AuthFailed) and isinstance(client_failed, AuthFailed)
    assert server_failed.method_name == "eap-mschap-v2" and server_failed.username == "alice"
    assert client_failed.reason == "EAP-MSCHAPv2 E=691: Authentication failed"
    [down] = of_type(wire.server_events, LinkDown)
    assert isinstance(down, LinkDown) and down.reason.startswith("authentication failed")
    assert not of_type(wire.server_events, Ipv4Opened)


# ---- the authenticator against hostile peers -------------------------------------------------------


def _drain(server: EapServer) -> list[EapPacket]:
    return [decode_eap(p) for p in server.packets_to_send()]


def _events(auth: EapServer | EapClient | EapRelayServer) -> list[object]:
    out: list[object] = []
    while (event := auth.next_event()) is not None:
        out.append(event)
    return out


def _response(identifier: int, eap_type: int, data: bytes) -> bytes:
    return EapPacket(EapCode.RESPONSE, identifier, eap_type, data).encode()


def test_identity_flood_and_stray_responses_cost_nothing() -> None:
    server = EapServer(random_bytes=counter_random(1))
    server.start(0.0)
    [identity_request] = _drain(server)
    server.receive(_response(identity_request.identifier, EapType.IDENTITY, b"alice"), 0.1)
    [challenge] = _drain(server)
    assert challenge.type == EapType.MSCHAP_V2 and challenge.identifier != identity_request.identifier
    for _ in range(10_000):  # the same Identity again and again: no longer the outstanding Request
        server.receive(_response(identity_request.identifier, EapType.IDENTITY, b"alice"), 0.2)
    server.receive(_response(challenge.identifier, EapType.IDENTITY, b"mallory"), 0.2)  # wrong type
    server.receive(b"\x02" + bytes([challenge.identifier]) + b"\xff\xff\x1a", 0.2)  # lying length
    assert _drain(server) == [] and _events(server) == []
    assert server.identity == "alice"


def test_silence_ends_after_bounded_retransmissions() -> None:
    server = EapServer(random_bytes=counter_random(1))
    server.start(0.0)
    sent = len(server.packets_to_send())
    now = 0.0
    while (deadline := server.get_timer()) is not None and now < 100:
        now = deadline
        server.handle_timer(now)
        sent += sum(1 for p in server.packets_to_send() if decode_eap(p).code is EapCode.REQUEST)
    assert sent == 10 and now == pytest.approx(30.0)
    [failed] = _events(server)
    assert isinstance(failed, AuthFailed) and failed.reason == "no Response from the peer to the EAP Identity"


def test_exchange_deadline_ends_a_peer_that_keeps_restarting() -> None:
    server = EapServer(random_bytes=counter_random(1), exchange_timeout=20.0)
    server.start(0.0)
    server.handle_timer(20.0)
    [failed] = _events(server)
    assert isinstance(failed, AuthFailed) and "did not finish within 20 s" in failed.reason
    assert [p.code for p in _drain(server)][-1] is EapCode.FAILURE


def test_nak_of_mschapv2_names_what_the_peer_wanted() -> None:
    server = EapServer(random_bytes=counter_random(1))
    server.start(0.0)
    [request] = _drain(server)
    server.receive(_response(request.identifier, EapType.IDENTITY, b"bob"), 0.0)
    [challenge] = _drain(server)
    server.receive(_response(challenge.identifier, EapType.NAK, b"\x0d\x19"), 0.0)
    [failed] = _events(server)
    assert isinstance(failed, AuthFailed)
    assert failed.reason == "peer refused EAP-MSCHAPv2 (it asked for: tls, peap)"
    assert _drain(server)[-1].code is EapCode.FAILURE


def test_oversized_identity_is_refused() -> None:
    server = EapServer(random_bytes=counter_random(1))
    server.start(0.0)
    [request] = _drain(server)
    server.receive(_response(request.identifier, EapType.IDENTITY, b"a" * 300), 0.0)
    [failed] = _events(server)
    assert isinstance(failed, AuthFailed) and "longer than 253" in failed.reason


def test_an_accept_without_authenticator_response_is_a_failure() -> None:
    client = EapClient(username="alice", password=PASSWORD, random_bytes=counter_random(7))
    server = EapServer(random_bytes=counter_random(1))
    client.start(0.0)
    server.start(0.0)
    decided = False
    for _ in range(10):
        for packet in server.packets_to_send():
            client.receive(packet, 0.0)
        for packet in client.packets_to_send():
            server.receive(packet, 0.0)
        for event in _events(server):
            if isinstance(event, AuthRequested) and not decided:
                decided = True
                accepted = decide_with_password(event.request, PASSWORD)
                server.decide(replace(accepted, authenticator_response=None), 0.0)
            elif isinstance(event, AuthFailed):
                assert event.reason.startswith("verifier accepted but gave no valid")
                return
    pytest.fail("the server did not refuse")


# ---- the peer ----------------------------------------------------------------------------------


def test_client_naks_methods_it_does_not_speak_and_repeats_lost_responses() -> None:
    client = EapClient(username="alice", password=PASSWORD, random_bytes=counter_random(7))
    client.start(0.0)
    tls_start = EapPacket(EapCode.REQUEST, 4, EapType.TLS, b"\x20").encode()
    client.receive(tls_start, 0.0)
    [nak] = [decode_eap(p) for p in client.packets_to_send()]
    assert (nak.code, nak.identifier, nak.type, nak.data) == (EapCode.RESPONSE, 4, EapType.NAK, b"\x1a")
    client.receive(tls_start, 1.0)  # the Nak got lost: the same Response again
    assert [decode_eap(p) for p in client.packets_to_send()] == [nak]


def test_client_refuses_success_before_the_method_proved_the_server() -> None:
    client = EapClient(username="alice", password=PASSWORD)
    client.start(0.0)
    client.receive(EapPacket(EapCode.REQUEST, 1, EapType.IDENTITY).encode(), 0.0)
    client.receive(EapPacket(EapCode.SUCCESS, 1).encode(), 0.0)
    [failed] = _events(client)
    assert isinstance(failed, AuthFailed)
    assert failed.reason == "EAP-Success before the method proved the server"


def test_client_gives_up_when_the_server_goes_quiet() -> None:
    client = EapClient(username="alice", password=PASSWORD, timeout=30.0)
    client.start(0.0)
    assert client.get_timer() == 30.0
    client.handle_timer(30.0)
    [failed] = _events(client)
    assert isinstance(failed, AuthFailed) and "no EAP-Success or EAP-Failure" in failed.reason


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_random_input_never_raises(packets: list[bytes]) -> None:
    server = EapServer(random_bytes=counter_random(1))
    client = EapClient(username="alice", password=PASSWORD, random_bytes=counter_random(2))
    server.start(0.0)
    client.start(0.0)
    first = decode_eap(server.packets_to_send()[0]).identifier
    for index, body in enumerate(packets):
        # Half of them carry the identifier the server waits for, so they reach the method code.
        raw = body[:1] + bytes([first]) + body[2:] if index % 2 and len(body) > 2 else body
        server.receive(raw, float(index))
        client.receive(raw, float(index))
        server.packets_to_send()
        client.packets_to_send()
    _events(server)
    _events(client)


# ---- pass-through: the backend runs the method ----------------------------------------------------


def _relay_identity(relay: EapRelayServer) -> AuthRequested:
    relay.start(0.0)
    [request] = [decode_eap(p) for p in relay.packets_to_send()]
    relay.receive(_response(request.identifier, EapType.IDENTITY, b"alice") + bytes(8), 0.0)  # padded
    [asked] = _events(relay)
    assert isinstance(asked, AuthRequested) and isinstance(asked.request, EapRelayRequest)
    return asked


def _challenge(identifier: int, eap_type: int = EapType.PEAP, data: bytes = b"\x20") -> AuthDecision:
    request = EapPacket(EapCode.REQUEST, identifier, eap_type, data).encode()
    return AuthDecision(False, eap_message=request, eap_continue=True, relay_state=b"state-%d" % identifier)


def test_relay_forwards_the_backends_requests_and_echoes_its_state() -> None:
    relay = EapRelayServer(random_bytes=counter_random(1))
    asked = _relay_identity(relay)
    assert isinstance(asked.request, EapRelayRequest)
    assert asked.request.username == "alice" and asked.request.relay_state is None
    assert asked.request.eap_message == _response(decode_eap(asked.request.eap_message).identifier,
                                                  EapType.IDENTITY, b"alice")  # padding left out
    relay.decide(_challenge(42), 0.0)
    [forwarded] = [decode_eap(p) for p in relay.packets_to_send()]
    assert (forwarded.identifier, forwarded.type) == (42, EapType.PEAP)
    relay.receive(_response(41, EapType.PEAP, b"stale"), 0.0)  # not the outstanding Identifier
    relay.receive(_response(42, EapType.PEAP, b"\x00"), 0.0)
    [again] = _events(relay)
    assert isinstance(again, AuthRequested) and isinstance(again.request, EapRelayRequest)
    assert again.request.relay_state == b"state-42"
    success = EapPacket(EapCode.SUCCESS, 42).encode()
    relay.decide(AuthDecision(True, eap_message=success), 0.0)
    assert relay.packets_to_send() == [success]
    [done] = _events(relay)
    assert isinstance(done, AuthSucceeded) and done.method_name == "eap-peap"


def test_relay_ends_fragments_that_never_end() -> None:
    relay = EapRelayServer(random_bytes=counter_random(1), max_round_trips=5)
    _relay_identity(relay)
    for identifier in range(10, 20):
        relay.decide(_challenge(identifier, EapType.TLS, b"\x40"), 0.0)  # "more fragments" forever
        relay.packets_to_send()
        relay.receive(_response(identifier, EapType.TLS, b"\x00"), 0.0)
        events = _events(relay)
        if any(isinstance(e, AuthFailed) for e in events):
            [failed] = events
            assert isinstance(failed, AuthFailed) and failed.reason == "EAP did not finish in 5 round trips"
            assert decode_eap(relay.packets_to_send()[-1]).code is EapCode.FAILURE
            return
    pytest.fail("the relay kept going")


def test_relay_refuses_a_challenge_without_request_and_a_stalled_peer() -> None:
    relay = EapRelayServer(random_bytes=counter_random(1))
    _relay_identity(relay)
    relay.decide(AuthDecision(False, eap_message=b"\x03\x01\x00\x04", eap_continue=True), 0.0)
    [failed] = _events(relay)
    assert isinstance(failed, AuthFailed) and "carries no EAP Request" in failed.reason

    stalled = EapRelayServer(random_bytes=counter_random(1), exchange_timeout=25.0)
    _relay_identity(stalled)
    stalled.decide(_challenge(7), 0.0)  # e.g. PEAP's TLS start, which the peer never answers
    now = 0.0
    while (deadline := stalled.get_timer()) is not None:
        now = deadline
        stalled.handle_timer(now)
    [gave_up] = _events(stalled)
    assert isinstance(gave_up, AuthFailed) and gave_up.reason == "EAP exchange did not finish within 25 s"
    assert now == 25.0


def test_relay_passes_the_reject_on() -> None:
    relay = EapRelayServer(random_bytes=counter_random(1))
    _relay_identity(relay)
    relay.decide(_challenge(3, EapType.MSCHAP_V2, b"\x01"), 0.0)
    relay.packets_to_send()
    relay.receive(_response(3, EapType.MSCHAP_V2, b"\x02"), 0.0)
    _events(relay)
    relay.decide(AuthDecision(False, message="Access-Reject from the RADIUS server",
                              eap_message=EapPacket(EapCode.FAILURE, 3).encode()), 0.0)
    assert [decode_eap(p) for p in relay.packets_to_send()] == [EapPacket(EapCode.FAILURE, 3)]
    [failed] = _events(relay)
    assert isinstance(failed, AuthFailed) and failed.method_name == "eap-mschap-v2"


def test_relay_drops_a_flood_while_the_backend_decides() -> None:
    relay = EapRelayServer(random_bytes=counter_random(1))
    asked = _relay_identity(relay)
    assert isinstance(asked.request, EapRelayRequest)
    identifier = decode_eap(asked.request.eap_message).identifier
    for _ in range(10_000):  # the same Identity again and again, with the right Identifier
        relay.receive(_response(identifier, EapType.IDENTITY, b"alice"), 0.1)
    assert _events(relay) == [] and relay.packets_to_send() == []
