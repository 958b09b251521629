"""CHAP family in both roles: CHAP-MD5 (RFC 1994), MS-CHAPv1 (RFC 2433), MS-CHAPv2 (RFC 2759).

All three share the packet format ``code(1) identifier(1) length(2) data``; Challenge and Response
data is ``Value-Size(1) Value Name``; Success and Failure data is a text message.
"""

from __future__ import annotations

import enum
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from vpnd.proto.crypto.mppe import mschapv1_mppe_keys, mschapv2_mppe_keys
from vpnd.proto.crypto.mschap import (
    chap_md5_response,
    mschapv1_nt_response,
    mschapv2_authenticator_response,
    mschapv2_nt_response,
    nt_password_hash,
)
from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthEvent,
    AuthFailed,
    AuthMethod,
    AuthRequest,
    AuthRequested,
    AuthSucceeded,
    ChapMd5Request,
    MppeKeys,
    MsChapV1Request,
    MsChapV2Request,
)
from vpnd.proto.ppp.frames import ControlPacket, decode_control

CHAP_PROTOCOL = 0xC223

CHALLENGE = 1
RESPONSE = 2
SUCCESS = 3
FAILURE = 4

RESTART_INTERVAL = 3.0
MAX_TRANSMISSIONS = 10
# How long the peer waits, from start, for the whole exchange to end in Success or Failure.
CLIENT_TIMEOUT = 60.0

MD5_RESPONSE_SIZE = 16
MSCHAP_RESPONSE_SIZE = 49
CHAP_METHODS = (AuthMethod.CHAP_MD5, AuthMethod.MSCHAP_V1, AuthMethod.MSCHAP_V2)
# Challenge length the authenticator sends (RFC 2433 fixes 8, RFC 2759 fixes 16).
CHALLENGE_SIZES = {AuthMethod.CHAP_MD5: 16, AuthMethod.MSCHAP_V1: 8, AuthMethod.MSCHAP_V2: 16}
# MS-CHAP password-change protocol version announced in Failure (RFC 2433 §6, RFC 2759 §6).
_CHANGE_PASSWORD_VERSION = {AuthMethod.MSCHAP_V1: 2, AuthMethod.MSCHAP_V2: 3}
_AUTHENTICATOR_RESPONSE = re.compile(r"S=[0-9A-Fa-f]{40}")

RandomBytes = Callable[[int], bytes]


def decode_value_and_name(data: bytes) -> tuple[bytes, bytes]:
    """Value and Name of a Challenge or Response body."""
    if not data:
        raise ProtocolError("CHAP Challenge/Response without Value-Size")
    value_end = 1 + data[0]
    if data[0] == 0 or len(data) < value_end:
        raise ProtocolError("CHAP Value is empty or overruns the packet")
    return data[1:value_end], data[value_end:]


def encode_value_and_name(value: bytes, name: bytes) -> bytes:
    if not 1 <= len(value) <= 255:
        raise ValueError("CHAP Value must be 1 to 255 bytes")
    return bytes([len(value)]) + value + name


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class MsChapFailure:
    """Fields of an MS-CHAP Failure message ``E=eee R=r C=ccc V=vvv M=text`` (all optional)."""

    error_code: int | None
    retry: bool
    challenge: bytes | None
    version: int | None
    message: str


def parse_mschap_failure(text: str) -> MsChapFailure:
    """Lenient parse: unknown or malformed fields are skipped; ``M=`` takes the rest of the text."""
    head, separator, message = text.partition("M=")
    if separator and head and not head.endswith(" "):
        head, message = text, ""  # an "M=" inside another field, not the message field
    fields: dict[str, str] = {}
    for token in head.split():
        key, equals, value = token.partition("=")
        if equals:
            fields[key.upper()] = value
    error_code = int(fields["E"]) if fields.get("E", "").isdigit() else None
    version = int(fields["V"]) if fields.get("V", "").isdigit() else None
    try:
        challenge = bytes.fromhex(fields["C"]) if "C" in fields else None
    except ValueError:
        challenge = None
    return MsChapFailure(error_code, fields.get("R") == "1", challenge, version, message)


def parse_response(method: AuthMethod, challenge: bytes, identifier: int, data: bytes) -> AuthRequest:
    """Turn a Response body into the verifier's question; ProtocolError when it does not fit."""
    value, name = decode_value_and_name(data)
    username = _text(name)
    if method is AuthMethod.CHAP_MD5:
        if len(value) != MD5_RESPONSE_SIZE:
            raise ProtocolError(f"CHAP-MD5 Response value is {len(value)} bytes, not 16")
        return ChapMd5Request(username=username, identifier=identifier, challenge=challenge, response=value)
    if len(value) != MSCHAP_RESPONSE_SIZE:
        raise ProtocolError(f"MS-CHAP Response value is {len(value)} bytes, not {MSCHAP_RESPONSE_SIZE}")
    if method is AuthMethod.MSCHAP_V1:
        return MsChapV1Request(
            username=username,
            challenge=challenge,
            lm_response=value[:24],
            nt_response=value[24:48],
            use_nt=bool(value[48] & 0x01),
        )
    # MS-CHAPv2: Peer-Challenge(16) Reserved(8) NT-Response(24) Flags(1).
    return MsChapV2Request(
        username=username,
        authenticator_challenge=challenge,
        peer_challenge=value[:16],
        nt_response=value[24:48],
    )


class _ServerState(enum.Enum):
    INITIAL = "initial"
    CHALLENGING = "challenging"
    DECIDING = "deciding"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ChapServer:
    """Authenticator of the CHAP family: Challenge, wait for a Response, ask the verifier, answer."""

    def __init__(
        self,
        method: AuthMethod,
        *,
        name: str = "vpnd",
        random_bytes: RandomBytes = os.urandom,
        restart_interval: float = RESTART_INTERVAL,
        max_transmissions: int = MAX_TRANSMISSIONS,
    ) -> None:
        if method not in CHAP_METHODS:
            raise ValueError(f"{method} is not a CHAP method")
        self.method = method
        self._name = name.encode("utf-8")
        self._random_bytes = random_bytes
        self._restart_interval = restart_interval
        self._max_transmissions = max_transmissions
        self._state = _ServerState.INITIAL
        self._identifier = 0
        self._challenge = b""
        self._challenge_packet = b""
        self._transmissions = 0
        self._deadline: float | None = None
        self._request: AuthRequest | None = None
        self._status_packet: bytes | None = None  # final Success/Failure, repeated on a duplicate
        self._outgoing: list[bytes] = []
        self._events: Fifo[AuthEvent] = Fifo()

    @property
    def protocol(self) -> int:
        return CHAP_PROTOCOL

    def start(self, now: float) -> None:
        if self._state is not _ServerState.INITIAL:
            return
        self._state = _ServerState.CHALLENGING
        self._identifier = self._random_bytes(1)[0]
        self._challenge = self._random_bytes(CHALLENGE_SIZES[self.method])
        body = encode_value_and_name(self._challenge, self._name)
        self._challenge_packet = ControlPacket(CHALLENGE, self._identifier, body).encode()
        self._send_challenge(now)

    def _send_challenge(self, now: float) -> None:
        # Retransmissions repeat the same packet, so a late Response to any copy still matches.
        self._transmissions += 1
        self._outgoing.append(self._challenge_packet)
        self._deadline = now + self._restart_interval

    def receive(self, packet: bytes, now: float) -> None:
        try:
            decoded = decode_control(packet)
        except ProtocolError:
            return
        if decoded.code != RESPONSE or decoded.identifier != self._identifier:
            return
        if self._state is _ServerState.CHALLENGING:
            try:
                request = parse_response(self.method, self._challenge, self._identifier, decoded.data)
            except ProtocolError:
                return
            self._state = _ServerState.DECIDING
            self._request = request
            self._deadline = None
            self._events.append(AuthRequested(request))
        elif self._status_packet is not None:
            # The peer did not get our Success/Failure and answered a retransmitted Challenge.
            self._outgoing.append(self._status_packet)

    def decide(self, decision: AuthDecision, now: float) -> None:
        if self._state is not _ServerState.DECIDING or self._request is None:
            return
        username = self._request.username
        if decision.accepted:
            success_text = self._success_text(decision)
            if success_text is not None:
                self._finish(SUCCESS, success_text)
                self._state = _ServerState.SUCCEEDED
                self._events.append(
                    AuthSucceeded(
                        method=self.method,
                        username=username,
                        keys=decision.keys,
                        message=decision.message,
                        attributes=dict(decision.attributes),
                    )
                )
                return
            reason = "verifier accepted but gave no valid MS-CHAPv2 authenticator response"
            decision = AuthDecision(accepted=False, message="Authentication failed")
        else:
            reason = decision.cause or decision.message or "rejected by the verifier"
        self._finish(FAILURE, self._failure_text(decision))
        self._state = _ServerState.FAILED
        self._events.append(AuthFailed(method=self.method, username=username, reason=reason))

    def _success_text(self, decision: AuthDecision) -> str | None:
        if self.method is not AuthMethod.MSCHAP_V2:
            return decision.message
        response = decision.authenticator_response
        if response is None or not _AUTHENTICATOR_RESPONSE.fullmatch(response):
            return None
        return f"{response.upper()} M={decision.message or 'Access granted'}"

    def _failure_text(self, decision: AuthDecision) -> str:
        if self.method is AuthMethod.CHAP_MD5:
            return decision.message or "Authentication failed"
        # A fresh challenge, as RFC 2433 §6 / RFC 2759 §6 expect even when no retry is offered.
        new_challenge = self._random_bytes(CHALLENGE_SIZES[self.method]).hex().upper()
        version = _CHANGE_PASSWORD_VERSION[self.method]
        text = f"E={decision.error_code} R=0 C={new_challenge} V={version}"
        if self.method is AuthMethod.MSCHAP_V2:
            text += f" M={decision.message or 'Authentication failed'}"
        return text

    def _finish(self, code: int, text: str) -> None:
        self._status_packet = ControlPacket(code, self._identifier, text.encode("utf-8")).encode()
        self._outgoing.append(self._status_packet)

    def packets_to_send(self) -> list[bytes]:
        packets, self._outgoing = self._outgoing, []
        return packets

    def next_event(self) -> AuthEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline or self._state is not _ServerState.CHALLENGING:
            return
        if self._transmissions >= self._max_transmissions:
            self._state = _ServerState.FAILED
            self._deadline = None
            self._events.append(
                AuthFailed(method=self.method, username="", reason="no Response to the Challenge")
            )
            return
        self._send_challenge(now)


class _ClientState(enum.Enum):
    INITIAL = "initial"
    WAITING = "waiting"  # for a Challenge
    RESPONDED = "responded"  # waiting for Success/Failure
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class _Answer:
    """Our Response to one Challenge, with what that exchange yields on success."""

    identifier: int
    challenge: bytes
    packet: bytes
    keys: MppeKeys | None
    authenticator_response: str | None  # expected S= value (MS-CHAPv2 only)


class ChapClient:
    """Peer of the CHAP family: answers Challenges; for MS-CHAPv2 checks the server's S= value."""

    def __init__(
        self,
        method: AuthMethod,
        *,
        username: str,
        password: str,
        random_bytes: RandomBytes = os.urandom,
        timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        if method not in CHAP_METHODS:
            raise ValueError(f"{method} is not a CHAP method")
        self.method = method
        self._username = username
        self._name = username.encode("utf-8")
        self._password = password
        self._random_bytes = random_bytes
        self._timeout = timeout
        self._state = _ClientState.INITIAL
        self._answer: _Answer | None = None
        self._reauthenticating = False
        self._deadline: float | None = None
        self._outgoing: list[bytes] = []
        self._events: Fifo[AuthSucceeded | AuthFailed] = Fifo()

    @property
    def protocol(self) -> int:
        return CHAP_PROTOCOL

    def start(self, now: float) -> None:
        if self._state is _ClientState.INITIAL:
            self._state = _ClientState.WAITING
            self._deadline = now + self._timeout

    def receive(self, packet: bytes, now: float) -> None:
        if self._state is _ClientState.FAILED:
            return
        try:
            decoded = decode_control(packet)
        except ProtocolError:
            return
        if decoded.code == CHALLENGE:
            self._on_challenge(decoded)
        elif self._state is _ClientState.RESPONDED and self._answer is not None:
            if decoded.identifier != self._answer.identifier:
                return
            if decoded.code == SUCCESS:
                self._on_success(decoded.data, self._answer)
            elif decoded.code == FAILURE:
                self._on_failure(decoded.data)

    def _on_challenge(self, packet: ControlPacket) -> None:
        try:
            challenge, _authenticator_name = decode_value_and_name(packet.data)
        except ProtocolError:
            return
        expected_size = CHALLENGE_SIZES[self.method]
        if self.method is not AuthMethod.CHAP_MD5 and len(challenge) != expected_size:
            return
        answer = self._answer
        if answer is not None and (answer.identifier, answer.challenge) == (packet.identifier, challenge):
            if self._state is _ClientState.RESPONDED:
                self._outgoing.append(answer.packet)  # our Response was lost: repeat it unchanged
            return
        if self._state is _ClientState.SUCCEEDED:
            self._reauthenticating = True  # RFC 1994 allows a new Challenge at any time
        self._answer = self._make_answer(packet.identifier, challenge)
        self._state = _ClientState.RESPONDED
        self._outgoing.append(self._answer.packet)

    def _make_answer(self, identifier: int, challenge: bytes) -> _Answer:
        keys: MppeKeys | None = None
        expected: str | None = None
        if self.method is AuthMethod.CHAP_MD5:
            value = chap_md5_response(identifier, self._password.encode("utf-8"), challenge)
        elif self.method is AuthMethod.MSCHAP_V1:
            password_hash = nt_password_hash(self._password)
            nt_response = mschapv1_nt_response(challenge, password_hash)
            # LM response left zero and Flags = 1: "use the NT response" (RFC 2433 §4).
            value = bytes(24) + nt_response + b"\x01"
            keys = mschapv1_mppe_keys(password_hash, challenge)
        else:
            password_hash = nt_password_hash(self._password)
            peer_challenge = self._random_bytes(16)
            nt_response = mschapv2_nt_response(challenge, peer_challenge, self._username, password_hash)
            value = peer_challenge + bytes(8) + nt_response + b"\x00"
            keys = mschapv2_mppe_keys(password_hash, nt_response, is_server=False)
            expected = mschapv2_authenticator_response(
                password_hash, nt_response, peer_challenge, challenge, self._username
            )
        packet = ControlPacket(RESPONSE, identifier, encode_value_and_name(value, self._name)).encode()
        return _Answer(identifier, challenge, packet, keys, expected)

    def _on_success(self, data: bytes, answer: _Answer) -> None:
        text = _text(data)
        message = text
        if answer.authenticator_response is not None:
            received = text[:42]
            if not hmac.compare_digest(received.upper().encode(), answer.authenticator_response.encode()):
                self._fail("server authenticator response invalid")
                return
            # RFC 2759 §5: "S=<auth_string> M=<message>"; the message part is optional in practice.
            message = text[42:].removeprefix(" ").removeprefix("M=")
        self._state = _ClientState.SUCCEEDED
        self._deadline = None
        if self._reauthenticating:
            return  # the link already counts as authenticated
        self._events.append(
            AuthSucceeded(method=self.method, username=self._username, keys=answer.keys, message=message)
        )

    def _on_failure(self, data: bytes) -> None:
        text = _text(data)
        if self.method is AuthMethod.CHAP_MD5:
            self._fail(text or "authenticator sent Failure")
            return
        failure = parse_mschap_failure(text)
        if failure.error_code is None:
            self._fail(text or "authenticator sent Failure")
            return
        detail = failure.message or "authentication failed"
        self._fail(f"E={failure.error_code}: {detail}")

    def _fail(self, reason: str) -> None:
        self._state = _ClientState.FAILED
        self._deadline = None
        self._events.append(AuthFailed(method=self.method, username=self._username, reason=reason))

    def packets_to_send(self) -> list[bytes]:
        packets, self._outgoing = self._outgoing, []
        return packets

    def next_event(self) -> AuthSucceeded | AuthFailed | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        if self._state in (_ClientState.WAITING, _ClientState.RESPONDED):
            self._fail("no answer from the authenticator")
        self._deadline = None
