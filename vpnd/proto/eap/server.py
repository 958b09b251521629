"""EAP authenticator (RFC 3748 §4) with EAP-MSCHAPv2 terminated here.

Identity first, then the EAP-MSCHAPv2 Challenge; the peer's Response becomes the same
``MsChapV2Request`` that PPP MS-CHAPv2 asks its verifier, so local users and RADIUS
(MS-CHAP2-Response) answer it unchanged, and the decision's MPPE keys serve EAP as they serve
MS-CHAPv2: the SSTP HLAK of EAP-MSCHAPv2 is the first 32 bytes of its MSK, MasterReceiveKey ‖
MasterSendKey, which are the bytes PPP MS-CHAPv2 uses (sstp-protocol.md §4.1, §5.2).

Hostile input: a Response that does not answer the outstanding Request (wrong Identifier, wrong
Type, duplicate) is dropped silently (RFC 3748 §4.1), so a flood costs nothing but parsing; each
Request is retransmitted a bounded number of times, and the whole exchange has a deadline.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable

from vpnd.proto.eap.mschapv2 import MsChapV2Message, OpCode, decode_mschapv2, encode_mschapv2
from vpnd.proto.eap.packets import EapCode, EapPacket, EapType, decode_eap, decode_nak, method_name
from vpnd.proto.eap.tls import TlsMethodError
from vpnd.proto.eap.tls_server import EapTlsServerSettings, TlsServer
from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthEvent,
    AuthFailed,
    AuthMethod,
    AuthRequested,
    AuthSucceeded,
    MppeKeys,
    MsChapV2Request,
)
from vpnd.proto.ppp.frames import PROTO_EAP

__all__ = ["EapServer"]

RESTART_INTERVAL = 3.0
MAX_TRANSMISSIONS = 10
# The whole exchange, Identity to Success/Failure; the session's negotiation timeout is shorter
# in practice and ends the connection first.
EXCHANGE_TIMEOUT = 60.0
MSCHAP_RESPONSE_SIZE = 49
MAX_IDENTITY = 253  # what fits a RADIUS User-Name
_AUTHENTICATOR_RESPONSE = re.compile(r"S=[0-9A-Fa-f]{40}")
_INNER = method_name(EapType.MSCHAP_V2)


class _State(enum.Enum):
    INITIAL = "initial"
    IDENTITY = "identity"  # Request/Identity outstanding
    TLS = "tls"  # an EAP-TLS Request outstanding
    CHALLENGE = "challenge"  # EAP-MSCHAPv2 Challenge outstanding
    DECIDING = "deciding"  # the verifier has the Response
    SUCCESS_REQUEST = "success-request"  # waiting for the peer's Success-Response
    FAILURE_REQUEST = "failure-request"  # waiting for the peer's Failure-Response
    DONE = "done"


class EapServer:
    """Authenticator role for PPP protocol 0xC227 (one object per link)."""

    method = AuthMethod.EAP

    def __init__(
        self,
        *,
        name: str = "vpnd",
        random_bytes: Callable[[int], bytes] = os.urandom,
        restart_interval: float = RESTART_INTERVAL,
        max_transmissions: int = MAX_TRANSMISSIONS,
        exchange_timeout: float = EXCHANGE_TIMEOUT,
        tls: EapTlsServerSettings | None = None,
    ) -> None:
        """``tls``: offer EAP-TLS first (client certificates); a peer that Naks it for
        EAP-MSCHAPv2 gets that instead."""
        self._tls_settings = tls
        self._tls: TlsServer | None = None
        self._inner = _INNER
        self._name = name.encode("utf-8")
        self._random_bytes = random_bytes
        self._restart_interval = restart_interval
        self._max_transmissions = max_transmissions
        self._exchange_timeout = exchange_timeout
        self._state = _State.INITIAL
        self._identifier = random_bytes(1)[0]
        self._request = b""  # the outstanding Request, repeated on timeout
        self._transmissions = 0
        self._retransmit_at: float | None = None
        self._give_up_at: float | None = None
        self.identity = ""
        self._challenge = b""
        self._pending: MsChapV2Request | None = None
        self._success: AuthSucceeded | None = None
        self._failure_reason = ""
        self._outgoing: list[bytes] = []
        self._events: Fifo[AuthEvent] = Fifo()

    @property
    def protocol(self) -> int:
        return PROTO_EAP

    # ---- ServerAuth ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self._state is not _State.INITIAL:
            return
        self._give_up_at = now + self._exchange_timeout
        self._state = _State.IDENTITY
        self._send_request(EapType.IDENTITY, b"", now)

    def receive(self, packet: bytes, now: float) -> None:
        try:
            eap = decode_eap(packet)
        except ProtocolError:
            return
        if eap.code is not EapCode.RESPONSE or eap.identifier != self._identifier:
            return  # RFC 3748 §4.1: not an answer to the outstanding Request
        if self._state is _State.IDENTITY and eap.type == EapType.IDENTITY:
            self._on_identity(eap.data, now)
        elif self._state is _State.TLS and eap.type == EapType.NAK:
            if EapType.MSCHAP_V2 in decode_nak(eap.data):
                self._tls = None
                self._challenge_mschapv2(now)
            else:
                wanted = ", ".join(method_name(t) for t in decode_nak(eap.data)) or "none"
                self._fail_now(f"peer refused EAP-TLS (it asked for: {wanted})")
        elif self._state is _State.TLS and eap.type == EapType.TLS and self._tls is not None:
            self._on_tls(self._tls, eap.data, now)
        elif self._state is _State.CHALLENGE and eap.type == EapType.NAK:
            wanted = ", ".join(method_name(t) for t in decode_nak(eap.data)) or "none"
            self._fail_now(f"peer refused EAP-MSCHAPv2 (it asked for: {wanted})")
        elif eap.type == EapType.MSCHAP_V2:
            self._on_mschapv2(eap.data, now)

    def decide(self, decision: AuthDecision, now: float) -> None:
        request = self._pending
        if self._state is not _State.DECIDING or request is None:
            return
        self._pending = None
        response = decision.authenticator_response
        if decision.accepted and response is not None and _AUTHENTICATOR_RESPONSE.fullmatch(response):
            self._success = AuthSucceeded(
                method=self.method,
                username=request.username,
                keys=decision.keys,
                message=decision.message,
                attributes=dict(decision.attributes),
                eap_method=self._inner,
            )
            text = f"{response.upper()} M={decision.message or 'Access granted'}"
            self._state = _State.SUCCESS_REQUEST
            self._send_mschapv2(OpCode.SUCCESS, text.encode("utf-8"), now)
            return
        if decision.accepted:
            self._failure_reason = "verifier accepted but gave no valid MS-CHAPv2 authenticator response"
            decision = AuthDecision(accepted=False, message="Authentication failed")
        else:
            self._failure_reason = decision.message or "rejected by the verifier"
        # RFC 2759 §6 fields, with a fresh challenge although no retry is offered.
        challenge = self._random_bytes(16).hex().upper()
        message = decision.message or "Authentication failed"
        text = f"E={decision.error_code} R=0 C={challenge} V=3 M={message}"
        self._state = _State.FAILURE_REQUEST
        self._send_mschapv2(OpCode.FAILURE, text.encode("utf-8"), now)

    def packets_to_send(self) -> list[bytes]:
        packets, self._outgoing = self._outgoing, []
        return packets

    def next_event(self) -> AuthEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if self._state in (_State.INITIAL, _State.DONE):
            return None
        deadlines = [d for d in (self._retransmit_at, self._give_up_at) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self._state in (_State.INITIAL, _State.DONE):
            return
        if self._give_up_at is not None and now >= self._give_up_at:
            self._fail_now(f"EAP exchange did not finish within {self._exchange_timeout:g} s")
            return
        if self._retransmit_at is None or now < self._retransmit_at:
            return
        if self._transmissions >= self._max_transmissions:
            self._on_silence()
            return
        self._transmit(now)

    # ---- steps ----------------------------------------------------------------------------------

    def _on_identity(self, data: bytes, now: float) -> None:
        if len(data) > MAX_IDENTITY:
            self._fail_now(f"EAP Identity of {len(data)} bytes is longer than {MAX_IDENTITY}")
            return
        self.identity = data.decode("utf-8", errors="replace")
        if self._tls_settings is not None:
            try:
                self._tls = TlsServer(self._tls_settings)
            except (TlsMethodError, ValueError) as error:
                self._fail_now(f"EAP-TLS cannot start: {error}")
                return
            self._inner = method_name(EapType.TLS)
            self._state = _State.TLS
            self._next_identifier()
            self._send_request(EapType.TLS, self._tls.start(), now)
            return
        self._challenge_mschapv2(now)

    def _on_tls(self, tls: TlsServer, data: bytes, now: float) -> None:
        try:
            request = tls.handle(data)
        except TlsMethodError as error:
            self._fail_now(f"EAP-TLS: {error}")
            return
        if request is not None:
            self._next_identifier()
            self._send_request(EapType.TLS, request, now)
            return
        msk = tls.msk or bytes(64)
        # Server view: receive = MSK[0:32] (what a RADIUS server sends as MS-MPPE-Recv-Key).
        keys = MppeKeys(send_key=msk[32:48], recv_key=msk[:16], hlak=msk[:32])
        self._success = AuthSucceeded(method=self.method, username=tls.username or self.identity,
                                      keys=keys, eap_method=self._inner)
        self._finish_success()

    def _challenge_mschapv2(self, now: float) -> None:
        self._inner = _INNER
        self._challenge = self._random_bytes(16)
        self._state = _State.CHALLENGE
        message = MsChapV2Message(OpCode.CHALLENGE, self._next_identifier(), value=self._challenge,
                                  name=self._name)
        self._send_request(EapType.MSCHAP_V2, encode_mschapv2(message), now)

    def _on_mschapv2(self, data: bytes, now: float) -> None:
        try:
            message = decode_mschapv2(data)
        except ProtocolError:
            return
        if self._state is _State.CHALLENGE and message.opcode is OpCode.RESPONSE:
            if len(message.value) != MSCHAP_RESPONSE_SIZE:
                return
            value = message.value
            # Response value: Peer-Challenge(16) Reserved(8) NT-Response(24) Flags(1) (RFC 2759 §4).
            self._pending = MsChapV2Request(
                username=message.name.decode("utf-8", errors="replace"),
                authenticator_challenge=self._challenge,
                peer_challenge=value[:16],
                nt_response=value[24:48],
            )
            self._state = _State.DECIDING
            self._retransmit_at = None
            self._events.append(AuthRequested(self._pending))
        elif self._state is _State.SUCCESS_REQUEST and message.opcode is OpCode.SUCCESS:
            self._finish_success()
        elif self._state is _State.FAILURE_REQUEST and message.opcode is OpCode.FAILURE:
            self._fail_now(self._failure_reason)

    def _on_silence(self) -> None:
        """Retransmissions spent. A peer that got our Success-Request but whose Success-Response
        was lost is not refused for it: MS-CHAPv2 already proved both sides."""
        if self._state is _State.SUCCESS_REQUEST:
            self._finish_success()
        elif self._state is _State.FAILURE_REQUEST:
            self._fail_now(self._failure_reason)
        else:
            what = {_State.IDENTITY: "Identity", _State.TLS: "EAP-TLS Request"}.get(
                self._state, "EAP-MSCHAPv2 Challenge")
            self._fail_now(f"no Response from the peer to the EAP {what}")

    def _finish_success(self) -> None:
        success = self._success
        if success is None:
            return
        self._state = _State.DONE
        self._outgoing.append(EapPacket(EapCode.SUCCESS, self._identifier).encode())
        self._events.append(success)

    def _fail_now(self, reason: str) -> None:
        self._state = _State.DONE
        self._outgoing.append(EapPacket(EapCode.FAILURE, self._identifier).encode())
        username = self._pending.username if self._pending is not None else self.identity
        self._events.append(AuthFailed(method=self.method, username=username, reason=reason,
                                       eap_method=self._inner))

    # ---- sending --------------------------------------------------------------------------------

    def _next_identifier(self) -> int:
        self._identifier = (self._identifier + 1) & 0xFF
        return self._identifier

    def _send_mschapv2(self, opcode: OpCode, text: bytes, now: float) -> None:
        message = MsChapV2Message(opcode, self._next_identifier(), message=text)
        self._send_request(EapType.MSCHAP_V2, encode_mschapv2(message), now)

    def _send_request(self, eap_type: int, data: bytes, now: float) -> None:
        """A new Request with the current Identifier (callers take a new one for each, RFC 3748
        §4.1), sent now and repeated on timeout."""
        self._request = EapPacket(EapCode.REQUEST, self._identifier, eap_type, data).encode()
        self._transmissions = 0
        self._transmit(now)

    def _transmit(self, now: float) -> None:
        self._transmissions += 1
        self._outgoing.append(self._request)
        self._retransmit_at = now + self._restart_interval
