"""PAP / CHAP-MD5 / MS-CHAPv1 / MS-CHAPv2: server and client objects wired back to back."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpnd.proto.crypto import mschap
from vpnd.proto.crypto.mppe import mschapv2_mppe_keys
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.auth import chap, pap
from vpnd.proto.ppp.auth.factory import make_client_auth, make_server_auth
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthEvent,
    AuthFailed,
    AuthMethod,
    AuthRequest,
    AuthRequested,
    AuthSucceeded,
    ChapMd5Request,
    ClientAuth,
    MsChapV1Request,
    MsChapV2Request,
    PapRequest,
    ServerAuth,
)
from vpnd.proto.ppp.auth.verify import decide_with_nt_hash, decide_with_password
from vpnd.proto.ppp.frames import ControlPacket, decode_control

ALL_METHODS = list(AuthMethod)
CHAP_METHODS = [AuthMethod.CHAP_MD5, AuthMethod.MSCHAP_V1, AuthMethod.MSCHAP_V2]
USERNAME = "alice"
PASSWORD = "s3cret pässword"

Verifier = Callable[[AuthRequest], AuthDecision]


def seeded_random(seed: int = 1) -> Callable[[int], bytes]:
    generator = random.Random(seed)
    return generator.randbytes


def users(table: dict[str, str]) -> Verifier:
    return lambda request: decide_with_password(request, table.get(request.username))


def make_pair(
    method: AuthMethod, *, password: str = PASSWORD, username: str = USERNAME, name: str = "vpnd"
) -> tuple[ServerAuth, ClientAuth]:
    server = make_server_auth(method, name=name, random_bytes=seeded_random(1))
    client = make_client_auth(method, username=username, password=password, random_bytes=seeded_random(2))
    return server, client


def drain(obj: ServerAuth | ClientAuth) -> list[AuthEvent]:
    events: list[AuthEvent] = []
    while (event := obj.next_event()) is not None:
        events.append(event)
    return events


def pump(
    server: ServerAuth, client: ClientAuth, verifier: Verifier | None, now: float = 0.0
) -> tuple[list[AuthEvent], list[AuthEvent]]:
    """Exchange packets until both sides are quiet; answer AuthRequested with ``verifier``."""
    server_events: list[AuthEvent] = []
    client_events: list[AuthEvent] = []
    for _ in range(50):
        moved = False
        for packet in server.packets_to_send():
            client.receive(packet, now)
            moved = True
        for packet in client.packets_to_send():
            server.receive(packet, now)
            moved = True
        for event in drain(server):
            server_events.append(event)
            if isinstance(event, AuthRequested) and verifier is not None:
                server.decide(verifier(event.request), now)
                moved = True
        client_events.extend(drain(client))
        if not moved:
            break
    return server_events, client_events


def run(
    method: AuthMethod, verifier: Verifier, **pair_args: str
) -> tuple[list[AuthEvent], list[AuthEvent], ServerAuth, ClientAuth]:
    server, client = make_pair(method, **pair_args)
    server.start(0.0)
    client.start(0.0)
    server_events, client_events = pump(server, client, verifier)
    return server_events, client_events, server, client


# --- success and failure end to end ----------------------------------------------------------


@pytest.mark.parametrize("method", ALL_METHODS)
def test_success_both_sides(method: AuthMethod) -> None:
    server_events, client_events, server, client = run(method, users({USERNAME: PASSWORD}))
    assert [type(e) for e in server_events] == [AuthRequested, AuthSucceeded]
    assert [type(e) for e in client_events] == [AuthSucceeded]
    server_done, client_done = server_events[1], client_events[0]
    assert isinstance(server_done, AuthSucceeded) and isinstance(client_done, AuthSucceeded)
    assert server_done.method is method and client_done.method is method
    assert server_done.username == USERNAME and client_done.username == USERNAME
    if method.yields_keys:
        assert server_done.keys is not None and client_done.keys is not None
        assert len(server_done.keys.send_key) == 16
        assert server_done.keys.send_key == client_done.keys.recv_key
        assert server_done.keys.recv_key == client_done.keys.send_key
    else:
        assert server_done.keys is None and client_done.keys is None
    assert server.get_timer() is None and client.get_timer() is None
    assert server.protocol == {AuthMethod.PAP: 0xC023, AuthMethod.EAP: 0xC227}.get(method, 0xC223)
    assert client.protocol == server.protocol


def test_mschapv2_keys_are_asymmetric_and_message_reaches_client() -> None:
    server_events, client_events, _, _ = run(AuthMethod.MSCHAP_V2, users({USERNAME: PASSWORD}))
    server_done, client_done = server_events[-1], client_events[-1]
    assert isinstance(server_done, AuthSucceeded) and isinstance(client_done, AuthSucceeded)
    assert server_done.keys is not None and server_done.keys.send_key != server_done.keys.recv_key
    assert client_done.message == "Access granted"


def test_mschapv2_domain_username() -> None:
    name = "CORP\\alice"
    server_events, client_events, _, _ = run(
        AuthMethod.MSCHAP_V2, users({name: PASSWORD}), username=name
    )
    requested = server_events[0]
    assert isinstance(requested, AuthRequested)
    assert requested.request.username == name
    assert isinstance(client_events[0], AuthSucceeded)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("table", [{USERNAME: "other"}, {}], ids=["wrong-password", "unknown-user"])
def test_rejection_both_sides(method: AuthMethod, table: dict[str, str]) -> None:
    server_events, client_events, server, client = run(method, users(table))
    assert [type(e) for e in server_events] == [AuthRequested, AuthFailed]
    assert [type(e) for e in client_events] == [AuthFailed]
    expected_reason = {
        AuthMethod.PAP: "Authentication failed",
        AuthMethod.CHAP_MD5: "Authentication failed",
        AuthMethod.MSCHAP_V1: "E=691: authentication failed",  # MS-CHAPv1 Failure has no M= text
        AuthMethod.MSCHAP_V2: "E=691: Authentication failed",
        AuthMethod.EAP: "EAP-MSCHAPv2 E=691: Authentication failed",
    }[method]
    inner = "mschap-v2" if method is AuthMethod.EAP else None
    assert client_events == [AuthFailed(method, USERNAME, expected_reason, inner)]
    assert server_events[1] == AuthFailed(method, USERNAME, "Authentication failed", inner)
    assert server.get_timer() is None and client.get_timer() is None


def final_server_packet(method: AuthMethod, verifier: Verifier) -> bytes:
    server, client = make_pair(method)
    server.start(0.0)
    client.start(0.0)
    last = b""
    for _ in range(10):
        for packet in server.packets_to_send():
            last = packet
            client.receive(packet, 0.0)
        for packet in client.packets_to_send():
            server.receive(packet, 0.0)
        for event in drain(server):
            if isinstance(event, AuthRequested):
                server.decide(verifier(event.request), 0.0)
    return last


def test_failure_formats() -> None:
    reject = users({})
    v2 = final_server_packet(AuthMethod.MSCHAP_V2, reject)
    assert v2[0] == chap.FAILURE
    assert re.fullmatch(rb"E=691 R=0 C=[0-9A-F]{32} V=3 M=Authentication failed", v2[4:])
    v1 = final_server_packet(AuthMethod.MSCHAP_V1, reject)
    assert v1[0] == chap.FAILURE
    assert re.fullmatch(rb"E=691 R=0 C=[0-9A-F]{16} V=2", v1[4:])
    md5 = final_server_packet(AuthMethod.CHAP_MD5, reject)
    assert md5[0] == chap.FAILURE and md5[4:] == b"Authentication failed"
    nak = final_server_packet(AuthMethod.PAP, reject)
    assert nak[0] == pap.AUTHENTICATE_NAK and nak[4:] == b"\x15Authentication failed"


def test_success_formats() -> None:
    accept = users({USERNAME: PASSWORD})
    v2 = final_server_packet(AuthMethod.MSCHAP_V2, accept)
    assert v2[0] == chap.SUCCESS
    assert re.fullmatch(rb"S=[0-9A-F]{40} M=Access granted", v2[4:])
    ack = final_server_packet(AuthMethod.PAP, accept)
    assert ack[0] == pap.AUTHENTICATE_ACK and ack[4:] == b"\x0eAccess granted"


def test_error_code_and_message_from_decision() -> None:
    decision = AuthDecision(accepted=False, message="Account disabled", error_code=647)
    packet = final_server_packet(AuthMethod.MSCHAP_V2, lambda _request: decision)
    assert packet[4:].startswith(b"E=647 R=0 C=")
    assert packet[4:].endswith(b" V=3 M=Account disabled")
    _, client_events, _, _ = run(AuthMethod.MSCHAP_V2, lambda _request: decision)
    assert client_events == [AuthFailed(AuthMethod.MSCHAP_V2, USERNAME, "E=647: Account disabled")]


def test_pap_nak_message_reaches_client() -> None:
    decision = AuthDecision(accepted=False, message="Go away")
    _, client_events, _, _ = run(AuthMethod.PAP, lambda _request: decision)
    assert client_events == [AuthFailed(AuthMethod.PAP, USERNAME, "Go away")]


def test_mschapv2_accept_without_authenticator_response_is_a_failure() -> None:
    server_events, client_events, _, _ = run(
        AuthMethod.MSCHAP_V2, lambda _request: AuthDecision(accepted=True, message="ok")
    )
    assert isinstance(server_events[-1], AuthFailed)
    assert "authenticator response" in server_events[-1].reason
    assert isinstance(client_events[-1], AuthFailed)
    assert client_events[-1].reason.startswith("E=691")


def test_mschapv2_client_rejects_forged_authenticator_response() -> None:
    def forged(request: AuthRequest) -> AuthDecision:
        genuine = decide_with_password(request, PASSWORD)
        assert genuine.authenticator_response is not None
        wrong_digit = "0" if genuine.authenticator_response[-1] != "0" else "1"
        return AuthDecision(
            accepted=True, authenticator_response=genuine.authenticator_response[:-1] + wrong_digit
        )

    server_events, client_events, _, _ = run(AuthMethod.MSCHAP_V2, forged)
    assert isinstance(server_events[-1], AuthSucceeded)
    assert client_events == [
        AuthFailed(AuthMethod.MSCHAP_V2, USERNAME, "server authenticator response invalid")
    ]


def test_decision_attributes_and_keys_pass_through() -> None:
    decision = AuthDecision(accepted=True, message="hi", attributes={"address": "10.0.0.2"})
    server_events, _, _, _ = run(AuthMethod.CHAP_MD5, lambda _request: decision)
    done = server_events[-1]
    assert isinstance(done, AuthSucceeded)
    assert done.attributes == {"address": "10.0.0.2"} and done.message == "hi" and done.keys is None


# --- request objects built by the authenticator ----------------------------------------------


@pytest.mark.parametrize(
    ("method", "request_type", "challenge_size"),
    [
        (AuthMethod.PAP, PapRequest, None),
        (AuthMethod.CHAP_MD5, ChapMd5Request, 16),
        (AuthMethod.MSCHAP_V1, MsChapV1Request, 8),
        (AuthMethod.MSCHAP_V2, MsChapV2Request, 16),
    ],
)
def test_request_types_and_challenge_sizes(
    method: AuthMethod, request_type: type, challenge_size: int | None
) -> None:
    server, client = make_pair(method, name="gw1")
    server.start(0.0)
    client.start(0.0)
    if challenge_size is not None:
        (challenge_packet,) = server.packets_to_send()
        assert challenge_packet[0] == chap.CHALLENGE
        assert challenge_packet[4] == challenge_size
        assert challenge_packet[5 + challenge_size :] == b"gw1"
        client.receive(challenge_packet, 0.0)
    for packet in client.packets_to_send():
        server.receive(packet, 0.0)
    (requested,) = drain(server)
    assert isinstance(requested, AuthRequested)
    assert isinstance(requested.request, request_type)
    assert requested.request.username == USERNAME
    if isinstance(requested.request, PapRequest):
        assert requested.request.password == PASSWORD.encode()
    if isinstance(requested.request, MsChapV1Request):
        assert requested.request.use_nt and requested.request.lm_response == bytes(24)


def test_default_authenticator_name() -> None:
    server = make_server_auth(AuthMethod.MSCHAP_V2, random_bytes=seeded_random())
    server.start(0.0)
    (packet,) = server.packets_to_send()
    assert packet.endswith(b"vpnd")


# --- PAP specifics ---------------------------------------------------------------------------


def test_pap_server_does_not_ask_twice_and_answers_latest_identifier() -> None:
    server = make_server_auth(AuthMethod.PAP)
    server.start(0.0)
    body = pap.encode_authenticate_request(b"alice", b"pw")
    server.receive(ControlPacket(pap.AUTHENTICATE_REQUEST, 7, body).encode(), 0.0)
    server.receive(ControlPacket(pap.AUTHENTICATE_REQUEST, 8, body).encode(), 3.0)
    events = drain(server)
    assert events == [AuthRequested(PapRequest("alice", b"pw"))]
    assert server.packets_to_send() == []
    server.decide(AuthDecision(accepted=True, message="welcome"), 4.0)
    assert server.packets_to_send() == [ControlPacket(pap.AUTHENTICATE_ACK, 8, b"\x07welcome").encode()]
    assert isinstance(server.next_event(), AuthSucceeded)
    # Ack lost: the peer retries; it gets the same Ack, and the verifier is not asked again.
    server.receive(ControlPacket(pap.AUTHENTICATE_REQUEST, 9, body).encode(), 5.0)
    assert server.packets_to_send() == [ControlPacket(pap.AUTHENTICATE_ACK, 9, b"\x07welcome").encode()]
    assert server.next_event() is None
    # A second decision is ignored.
    server.decide(AuthDecision(accepted=False), 6.0)
    assert server.packets_to_send() == [] and server.next_event() is None


def test_pap_server_times_out_without_request() -> None:
    server = pap.PapServer(request_timeout=30.0)
    server.start(100.0)
    assert server.get_timer() == 130.0
    server.handle_timer(129.0)
    assert server.next_event() is None
    server.handle_timer(130.0)
    event = server.next_event()
    assert isinstance(event, AuthFailed) and "no Authenticate-Request" in event.reason
    assert server.get_timer() is None


def test_pap_client_retransmits_then_gives_up() -> None:
    client = pap.PapClient(username="bob", password="pw", first_identifier=255)
    client.start(0.0)
    identifiers = []
    now = 0.0
    for _ in range(10):
        (packet,) = client.packets_to_send()
        decoded = decode_control(packet)
        assert decoded.code == pap.AUTHENTICATE_REQUEST
        assert pap.decode_authenticate_request(decoded.data) == (b"bob", b"pw")
        identifiers.append(decoded.identifier)
        assert client.get_timer() == now + 3.0
        client.handle_timer(now + 2.9)  # early: nothing happens
        assert client.packets_to_send() == []
        now += 3.0
        client.handle_timer(now)
    assert identifiers == [255, 0, 1, 2, 3, 4, 5, 6, 7, 8]  # a new Identifier every time
    assert client.packets_to_send() == []
    assert client.next_event() == AuthFailed(AuthMethod.PAP, "bob", "no answer")
    assert client.get_timer() is None


def test_pap_client_accepts_late_ack_for_earlier_identifier() -> None:
    client = pap.PapClient(username="bob", password="pw", first_identifier=10)
    client.start(0.0)
    client.handle_timer(3.0)
    assert len(client.packets_to_send()) == 2
    client.receive(ControlPacket(pap.AUTHENTICATE_ACK, 99, b"").encode(), 3.5)  # never sent: ignored
    assert client.next_event() is None
    client.receive(ControlPacket(pap.AUTHENTICATE_ACK, 10, b"\x02ok").encode(), 4.0)
    assert client.next_event() == AuthSucceeded(AuthMethod.PAP, "bob", None, "ok")
    assert client.get_timer() is None


def test_pap_client_tolerates_ack_without_message_field() -> None:
    client = pap.PapClient(username="bob", password="pw")
    client.start(0.0)
    client.receive(b"\x02\x00\x00\x04", 0.1)
    assert isinstance(client.next_event(), AuthSucceeded)


# --- CHAP family specifics --------------------------------------------------------------------


@pytest.mark.parametrize("method", CHAP_METHODS)
def test_chap_server_retransmits_same_challenge_then_gives_up(method: AuthMethod) -> None:
    server = make_server_auth(method, random_bytes=seeded_random())
    server.start(0.0)
    (first,) = server.packets_to_send()
    now = 0.0
    for _ in range(9):
        now += 3.0
        assert server.get_timer() == now
        server.handle_timer(now - 0.5)
        assert server.packets_to_send() == []
        server.handle_timer(now)
        assert server.packets_to_send() == [first]
    server.handle_timer(now + 3.0)
    assert server.packets_to_send() == []
    event = server.next_event()
    assert isinstance(event, AuthFailed) and "no Response" in event.reason
    assert server.get_timer() is None


@pytest.mark.parametrize("method", CHAP_METHODS)
def test_chap_server_ignores_wrong_identifier_and_bad_sizes(method: AuthMethod) -> None:
    server, client = make_pair(method)
    server.start(0.0)
    client.start(0.0)
    (challenge,) = server.packets_to_send()
    client.receive(challenge, 0.0)
    (response,) = client.packets_to_send()
    wrong_id = bytes([response[0], (response[1] + 1) % 256]) + response[2:]
    server.receive(wrong_id, 0.1)
    value_size = response[4]
    short = response[:4] + bytes([value_size - 1]) + response[5 : 4 + value_size] + response[5 + value_size :]
    short = short[:2] + len(short).to_bytes(2, "big") + short[4:]
    server.receive(short, 0.2)
    assert server.next_event() is None
    assert server.get_timer() == 3.0  # still challenging
    server.receive(response, 0.3)
    server.receive(response, 0.4)  # duplicate while deciding: not asked twice
    assert [type(e) for e in drain(server)] == [AuthRequested]
    assert server.get_timer() is None


@pytest.mark.parametrize("method", CHAP_METHODS)
def test_chap_lost_status_is_repeated(method: AuthMethod) -> None:
    server, client = make_pair(method)
    server.start(0.0)
    client.start(0.0)
    (challenge,) = server.packets_to_send()
    client.receive(challenge, 0.0)
    (response,) = client.packets_to_send()
    server.receive(response, 0.1)
    (requested,) = drain(server)
    assert isinstance(requested, AuthRequested)
    server.decide(decide_with_password(requested.request, PASSWORD), 0.2)
    (status,) = server.packets_to_send()
    assert status[0] == chap.SUCCESS
    # The Success is lost; the client answers the same challenge again with the same Response.
    client.receive(challenge, 3.0)
    assert client.packets_to_send() == [response]
    server.receive(response, 3.0)
    assert server.packets_to_send() == [status]
    assert [type(e) for e in drain(server)] == [AuthSucceeded]
    client.receive(status, 3.1)
    assert [type(e) for e in drain(client)] == [AuthSucceeded]


def test_chap_client_times_out() -> None:
    client = make_client_auth(AuthMethod.MSCHAP_V2, username="u", password="p")
    client.start(10.0)
    deadline = client.get_timer()
    assert deadline == 10.0 + chap.CLIENT_TIMEOUT
    client.handle_timer(deadline - 1)
    assert client.next_event() is None
    client.handle_timer(deadline)
    assert client.next_event() == AuthFailed(AuthMethod.MSCHAP_V2, "u", "no answer from the authenticator")


def test_chap_md5_reauthentication_after_success() -> None:
    server, client = make_pair(AuthMethod.CHAP_MD5)
    server.start(0.0)
    client.start(0.0)
    pump(server, client, users({USERNAME: PASSWORD}))
    # A later Challenge (RFC 1994 periodic re-authentication) is answered without a new event.
    second = make_server_auth(AuthMethod.CHAP_MD5, random_bytes=seeded_random(9))
    second.start(100.0)
    server_events, client_events = pump(second, client, users({USERNAME: PASSWORD}), now=100.0)
    assert [type(e) for e in server_events] == [AuthRequested, AuthSucceeded]
    assert client_events == []


def test_mschapv1_client_ignores_wrong_challenge_size() -> None:
    client = make_client_auth(AuthMethod.MSCHAP_V1, username="u", password="p")
    client.start(0.0)
    client.receive(ControlPacket(chap.CHALLENGE, 1, chap.encode_value_and_name(bytes(16), b"x")).encode(), 0)
    assert client.packets_to_send() == []
    client.receive(ControlPacket(chap.CHALLENGE, 1, chap.encode_value_and_name(bytes(8), b"x")).encode(), 0)
    (response,) = client.packets_to_send()
    assert response[4] == chap.MSCHAP_RESPONSE_SIZE and response[4 + 49] == 1  # Flags: use NT


def test_parse_mschap_failure() -> None:
    parsed = chap.parse_mschap_failure("E=691 R=1 C=00112233445566778899AABBCCDDEEFF V=3 M=Access denied")
    assert parsed.error_code == 691 and parsed.retry and parsed.version == 3
    assert parsed.challenge == bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    assert parsed.message == "Access denied"
    bare = chap.parse_mschap_failure("E=648 R=0 V=0")
    assert bare.error_code == 648 and not bare.retry and bare.challenge is None and bare.message == ""
    junk = chap.parse_mschap_failure("E=x C=zz garbage")
    assert junk.error_code is None and junk.challenge is None


# --- verifiers --------------------------------------------------------------------------------

RFC_AUTH_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
RFC_PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")
RFC_NT_RESPONSE = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
RFC_V2_REQUEST = MsChapV2Request("User", RFC_AUTH_CHALLENGE, RFC_PEER_CHALLENGE, RFC_NT_RESPONSE)


def test_verify_mschapv2_rfc2759_example() -> None:
    for decision in (
        decide_with_password(RFC_V2_REQUEST, "clientPass"),
        decide_with_nt_hash(RFC_V2_REQUEST, mschap.nt_password_hash("clientPass")),
    ):
        assert decision.accepted
        assert decision.authenticator_response == "S=407A5589115FD0D6209F510FE9C04566932CDA56"
        assert decision.keys is not None
        assert decision.keys.send_key == bytes.fromhex("8B7CDC149B993A1BA118CB153F56DCCB")
        assert decision.keys.recv_key == bytes.fromhex("D5F0E9521E3EA9589645E86051C82226")
    rejected = decide_with_password(RFC_V2_REQUEST, "clientpass")
    assert not rejected.accepted and rejected.authenticator_response is None and rejected.keys is None
    assert rejected.error_code == 691


def test_verify_mschapv1_rfc2433_example() -> None:
    request = MsChapV1Request(
        username="u",
        challenge=bytes.fromhex("102DB5DF085D3041"),
        lm_response=bytes(24),
        nt_response=bytes.fromhex("4E9D3C8F9CFD385D5BF4D3246791956CA4C351AB409A3D61"),
        use_nt=True,
    )
    accepted = decide_with_password(request, "MyPw")
    assert accepted.accepted and accepted.keys is not None
    assert accepted.keys.send_key == accepted.keys.recv_key
    assert decide_with_nt_hash(request, mschap.nt_password_hash("MyPw")) == accepted
    assert not decide_with_password(request, "mypw").accepted
    lm_only = MsChapV1Request("u", request.challenge, request.nt_response, bytes(24), use_nt=False)
    assert not decide_with_password(lm_only, "MyPw").accepted


def test_verify_pap_and_chap_md5() -> None:
    assert decide_with_password(PapRequest("u", "pässword".encode()), "pässword").accepted
    assert not decide_with_password(PapRequest("u", b"password"), "pässword").accepted
    challenge = bytes(range(16))
    response = mschap.chap_md5_response(5, b"pw", challenge)
    assert decide_with_password(ChapMd5Request("u", 5, challenge, response), "pw").accepted
    assert not decide_with_password(ChapMd5Request("u", 6, challenge, response), "pw").accepted
    assert not decide_with_password(ChapMd5Request("u", 5, challenge, response), None).accepted


def test_verify_nt_hash_rejects_clear_text_methods_with_a_clear_message() -> None:
    nt_hash = mschap.nt_password_hash("pw")
    pap_decision = decide_with_nt_hash(PapRequest("u", b"pw"), nt_hash)
    assert not pap_decision.accepted and "clear-text password" in pap_decision.message
    md5_decision = decide_with_nt_hash(ChapMd5Request("u", 1, b"c", b"r"), nt_hash)
    assert not md5_decision.accepted and "CHAP-MD5" in md5_decision.message
    assert not decide_with_nt_hash(RFC_V2_REQUEST, None).accepted
    assert not decide_with_nt_hash(RFC_V2_REQUEST, b"short").accepted


def test_verify_rejects_malformed_request_fields() -> None:
    short = MsChapV2Request("User", RFC_AUTH_CHALLENGE[:8], RFC_PEER_CHALLENGE, RFC_NT_RESPONSE)
    assert not decide_with_password(short, "clientPass").accepted


def test_server_keys_match_crypto_module() -> None:
    decision = decide_with_password(RFC_V2_REQUEST, "clientPass")
    expected = mschapv2_mppe_keys(mschap.nt_password_hash("clientPass"), RFC_NT_RESPONSE, is_server=True)
    assert decision.keys == expected


# --- hostile input ----------------------------------------------------------------------------

PHASES = ["fresh", "started", "deciding", "succeeded", "failed"]


def advance(method: AuthMethod, phase: str) -> tuple[ServerAuth, ClientAuth, int]:
    """A server/client pair in ``phase``, and the identifier currently in use."""
    server, client = make_pair(method)
    if phase == "fresh":
        return server, client, 0
    server.start(0.0)
    client.start(0.0)
    packets = server.packets_to_send()
    identifier = packets[0][1] if packets else 0
    for packet in packets:
        client.receive(packet, 0.0)
    for packet in client.packets_to_send():
        identifier = packet[1]
        if phase != "started":
            server.receive(packet, 0.0)
    if phase in ("succeeded", "failed"):
        table = {USERNAME: PASSWORD} if phase == "succeeded" else {}
        pump(server, client, users(table))
    return server, client, identifier


@st.composite
def framed_packets(draw: st.DrawFn, identifier: int) -> bytes:
    """Packets with a plausible header, to reach the body parsers."""
    code = draw(st.integers(0, 6))
    ident = draw(st.sampled_from([identifier, draw(st.integers(0, 255))]))
    body = draw(
        st.one_of(
            st.binary(max_size=80),
            st.builds(lambda size, rest: bytes([size]) + rest, st.integers(0, 255), st.binary(max_size=80)),
            st.builds(lambda text: text.encode(), st.text(max_size=80)),
        )
    )
    length = draw(st.sampled_from([4 + len(body), draw(st.integers(0, 0xFFFF))]))
    return bytes([code, ident]) + length.to_bytes(2, "big") + body


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(ALL_METHODS),
    phase=st.sampled_from(PHASES),
    data=st.data(),
)
def test_hostile_bytes_never_raise(method: AuthMethod, phase: str, data: st.DataObject) -> None:
    server, client, identifier = advance(method, phase)
    inputs = data.draw(
        st.lists(st.one_of(st.binary(max_size=120), framed_packets(identifier)), min_size=1, max_size=8)
    )
    now = 1.0
    for packet in inputs:
        server.receive(packet, now)
        client.receive(packet, now)
        now += 1.0
        server.handle_timer(now)
        client.handle_timer(now)
    for obj in (server, client):
        for packet in obj.packets_to_send():
            assert 4 <= len(packet) == int.from_bytes(packet[2:4], "big")
        drain(obj)


@given(st.binary(max_size=64))
def test_decoders_raise_only_protocol_error(raw: bytes) -> None:
    for decode in (decode_control,):  # the codec PAP and CHAP share with LCP
        try:
            decoded = decode(raw)
        except ProtocolError:
            continue
        assert len(decoded.data) == int.from_bytes(raw[2:4], "big") - 4
    for parse_body in (pap.decode_authenticate_request, chap.decode_value_and_name):
        with contextlib.suppress(ProtocolError):
            parse_body(raw)
    for method in CHAP_METHODS:
        with contextlib.suppress(ProtocolError):
            chap.parse_response(method, bytes(16), 1, raw)
    assert isinstance(pap.decode_message(raw), str)
    assert isinstance(chap.parse_mschap_failure(raw.decode("latin-1")), chap.MsChapFailure)
