"""PAP (RFC 1334 §2) in both roles.

Packets: ``code(1) identifier(1) length(2) data``. Authenticate-Request data is
``PeerIDLen PeerID PasswdLen Password``; Ack/Nak data is ``MsgLen Message``.
"""

from __future__ import annotations

import enum

from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthEvent,
    AuthFailed,
    AuthMethod,
    AuthRequested,
    AuthSucceeded,
    PapRequest,
)
from vpnd.proto.ppp.frames import ControlPacket, decode_control

PAP_PROTOCOL = 0xC023

AUTHENTICATE_REQUEST = 1
AUTHENTICATE_ACK = 2
AUTHENTICATE_NAK = 3

RESTART_INTERVAL = 3.0
MAX_TRANSMISSIONS = 10
# How long the authenticator waits for the peer's first Authenticate-Request.
REQUEST_WAIT_TIMEOUT = 60.0


def decode_authenticate_request(data: bytes) -> tuple[bytes, bytes]:
    """Peer-ID and password of an Authenticate-Request body."""
    if not data:
        raise ProtocolError("Authenticate-Request without Peer-ID length")
    peer_id_end = 1 + data[0]
    if len(data) < peer_id_end + 1:
        raise ProtocolError("Authenticate-Request Peer-ID overruns the packet")
    password_end = peer_id_end + 1 + data[peer_id_end]
    if len(data) < password_end:
        raise ProtocolError("Authenticate-Request password overruns the packet")
    return data[1:peer_id_end], data[peer_id_end + 1 : password_end]


def encode_authenticate_request(peer_id: bytes, password: bytes) -> bytes:
    if len(peer_id) > 255 or len(password) > 255:
        raise ValueError("PAP Peer-ID and password are limited to 255 bytes")
    return bytes([len(peer_id)]) + peer_id + bytes([len(password)]) + password


def decode_message(data: bytes) -> str:
    """Message of an Ack/Nak; a missing or overlong Msg-Length is tolerated (some peers omit it)."""
    if not data:
        return ""
    return data[1 : 1 + data[0]].decode("utf-8", errors="replace")


def encode_message(message: str) -> bytes:
    raw = message.encode("utf-8")[:255]
    return bytes([len(raw)]) + raw


class _ServerState(enum.Enum):
    WAITING = "waiting"
    DECIDING = "deciding"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PapServer:
    """PAP authenticator: waits for the peer's request and asks the verifier once."""

    method = AuthMethod.PAP

    def __init__(self, *, request_timeout: float = REQUEST_WAIT_TIMEOUT) -> None:
        self._request_timeout = request_timeout
        self._state = _ServerState.WAITING
        self._outgoing: list[bytes] = []
        self._events: Fifo[AuthEvent] = Fifo()
        self._deadline: float | None = None
        self._request: PapRequest | None = None
        self._identifier = 0
        self._reply: tuple[int, bytes] | None = None  # code and body of the final Ack/Nak

    @property
    def protocol(self) -> int:
        return PAP_PROTOCOL

    def start(self, now: float) -> None:
        if self._state is _ServerState.WAITING and self._request is None:
            self._deadline = now + self._request_timeout

    def receive(self, packet: bytes, now: float) -> None:
        try:
            decoded = decode_control(packet)
            if decoded.code != AUTHENTICATE_REQUEST:
                return  # Ack/Nak are for the peer role; silently discarded here
            peer_id, password = decode_authenticate_request(decoded.data)
        except ProtocolError:
            return
        request = PapRequest(username=peer_id.decode("utf-8", errors="replace"), password=password)
        if self._state is _ServerState.WAITING:
            self._state = _ServerState.DECIDING
            self._request = request
            self._identifier = decoded.identifier
            self._deadline = None
            self._events.append(AuthRequested(request))
        elif self._state is _ServerState.DECIDING:
            # A retransmission: answer its identifier when the decision comes, do not ask again.
            if request == self._request:
                self._identifier = decoded.identifier
        elif self._reply is not None:
            # Our Ack/Nak got lost: the peer retries with a new identifier; repeat the verdict.
            code, body = self._reply
            self._outgoing.append(ControlPacket(code, decoded.identifier, body).encode())

    def decide(self, decision: AuthDecision, now: float) -> None:
        if self._state is not _ServerState.DECIDING or self._request is None:
            return
        username = self._request.username
        if decision.accepted:
            self._state = _ServerState.SUCCEEDED
            self._reply = (AUTHENTICATE_ACK, encode_message(decision.message))
            self._events.append(
                AuthSucceeded(
                    method=self.method,
                    username=username,
                    keys=decision.keys,
                    message=decision.message,
                    attributes=dict(decision.attributes),
                )
            )
        else:
            self._state = _ServerState.FAILED
            self._reply = (AUTHENTICATE_NAK, encode_message(decision.message))
            reason = decision.cause or decision.message or "rejected by the verifier"
            self._events.append(AuthFailed(method=self.method, username=username, reason=reason))
        code, body = self._reply
        self._outgoing.append(ControlPacket(code, self._identifier, body).encode())

    def packets_to_send(self) -> list[bytes]:
        packets, self._outgoing = self._outgoing, []
        return packets

    def next_event(self) -> AuthEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        if self._state is _ServerState.WAITING:
            self._state = _ServerState.FAILED
            self._events.append(
                AuthFailed(method=self.method, username="", reason="no Authenticate-Request from the peer")
            )


class _ClientState(enum.Enum):
    INITIAL = "initial"
    REQUESTING = "requesting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PapClient:
    """PAP peer: sends Authenticate-Request until Ack/Nak or the retry budget is spent."""

    method = AuthMethod.PAP

    def __init__(
        self,
        *,
        username: str,
        password: str,
        first_identifier: int = 0,
        restart_interval: float = RESTART_INTERVAL,
        max_transmissions: int = MAX_TRANSMISSIONS,
    ) -> None:
        self._username = username
        self._request_body = encode_authenticate_request(username.encode("utf-8"), password.encode("utf-8"))
        self._identifier = first_identifier & 0xFF
        self._restart_interval = restart_interval
        self._max_transmissions = max_transmissions
        self._state = _ClientState.INITIAL
        self._transmissions = 0
        self._sent_identifiers: set[int] = set()
        self._outgoing: list[bytes] = []
        self._events: Fifo[AuthSucceeded | AuthFailed] = Fifo()
        self._deadline: float | None = None

    @property
    def protocol(self) -> int:
        return PAP_PROTOCOL

    def start(self, now: float) -> None:
        if self._state is _ClientState.INITIAL:
            self._state = _ClientState.REQUESTING
            self._send_request(now)

    def _send_request(self, now: float) -> None:
        if self._transmissions:
            # RFC 1334 §2.2.1: the Identifier changes with every Authenticate-Request.
            self._identifier = (self._identifier + 1) & 0xFF
        self._transmissions += 1
        self._sent_identifiers.add(self._identifier)
        request = ControlPacket(AUTHENTICATE_REQUEST, self._identifier, self._request_body)
        self._outgoing.append(request.encode())
        self._deadline = now + self._restart_interval

    def receive(self, packet: bytes, now: float) -> None:
        if self._state is not _ClientState.REQUESTING:
            return
        try:
            decoded = decode_control(packet)
        except ProtocolError:
            return
        # A late answer to an earlier (retransmitted) request is as good as one to the last.
        if decoded.identifier not in self._sent_identifiers:
            return
        message = decode_message(decoded.data)
        if decoded.code == AUTHENTICATE_ACK:
            self._state = _ClientState.SUCCEEDED
            self._deadline = None
            self._events.append(
                AuthSucceeded(method=self.method, username=self._username, keys=None, message=message)
            )
        elif decoded.code == AUTHENTICATE_NAK:
            self._state = _ClientState.FAILED
            self._deadline = None
            reason = message or "authenticator sent Authenticate-Nak"
            self._events.append(AuthFailed(method=self.method, username=self._username, reason=reason))

    def packets_to_send(self) -> list[bytes]:
        packets, self._outgoing = self._outgoing, []
        return packets

    def next_event(self) -> AuthSucceeded | AuthFailed | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline or self._state is not _ClientState.REQUESTING:
            return
        if self._transmissions >= self._max_transmissions:
            self._state = _ClientState.FAILED
            self._deadline = None
            self._events.append(AuthFailed(method=self.method, username=self._username, reason="no answer"))
            return
        self._send_request(now)
