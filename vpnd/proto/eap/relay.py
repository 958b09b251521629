"""EAP authenticator in pass-through mode (RFC 3748 §2.3, RFC 3579 §2): the backend runs the method.

We send Request/Identity ourselves; from the Identity Response on, each Response of the peer
goes to the backend as an ``EapRelayRequest`` and the backend's EAP packet comes back in an
``AuthDecision``: a Request to forward (``eap_continue``), or the final Success/Failure with
the verdict. The method (PEAP, EAP-TLS, EAP-MSCHAPv2, ...) is opaque here; only its type is
noted, for logs.

Bounds, so a hostile peer or backend cannot keep a session in authentication: every Request is
retransmitted a limited number of times, the whole exchange has a deadline, the number of
round trips is capped (``max_round_trips``: fragments that never end), and only a Response
with the Identifier of the outstanding Request is relayed (floods are dropped unparsed beyond
the header).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable

from vpnd.proto.eap.packets import EapCode, EapPacket, EapType, decode_eap, method_name
from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthEvent,
    AuthFailed,
    AuthMethod,
    AuthRequested,
    AuthSucceeded,
    EapRelayRequest,
)
from vpnd.proto.ppp.frames import PROTO_EAP

__all__ = ["EapRelayServer"]

RESTART_INTERVAL = 3.0
MAX_TRANSMISSIONS = 10
EXCHANGE_TIMEOUT = 60.0
# A PEAP or EAP-TLS login with a long chain takes some 10-20 round trips at ~1 KiB a fragment.
MAX_ROUND_TRIPS = 64
MAX_IDENTITY = 253


class _State(enum.Enum):
    INITIAL = "initial"
    WAITING_PEER = "waiting-peer"  # a Request is outstanding
    WAITING_BACKEND = "waiting-backend"
    DONE = "done"


class EapRelayServer:
    """Authenticator role for PPP protocol 0xC227 with the EAP method run by the backend."""

    method = AuthMethod.EAP

    def __init__(
        self,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        restart_interval: float = RESTART_INTERVAL,
        max_transmissions: int = MAX_TRANSMISSIONS,
        exchange_timeout: float = EXCHANGE_TIMEOUT,
        max_round_trips: int = MAX_ROUND_TRIPS,
    ) -> None:
        self._restart_interval = restart_interval
        self._max_transmissions = max_transmissions
        self._exchange_timeout = exchange_timeout
        self._max_round_trips = max_round_trips
        self._state = _State.INITIAL
        self._identifier = random_bytes(1)[0]
        self._request = b""
        self._transmissions = 0
        self._round_trips = 0
        self._retransmit_at: float | None = None
        self._give_up_at: float | None = None
        self._relay_state: bytes | None = None
        self.identity = ""
        self.inner_type: int | None = None  # the method the backend chose, once it sent a Request
        self._outgoing: list[bytes] = []
        self._events: Fifo[AuthEvent] = Fifo()

    @property
    def protocol(self) -> int:
        return PROTO_EAP

    @property
    def _inner_name(self) -> str | None:
        return method_name(self.inner_type) if self.inner_type is not None else None

    def start(self, now: float) -> None:
        if self._state is not _State.INITIAL:
            return
        self._give_up_at = now + self._exchange_timeout
        self._send(EapPacket(EapCode.REQUEST, self._identifier, EapType.IDENTITY).encode(), now)

    def receive(self, packet: bytes, now: float) -> None:
        if self._state is not _State.WAITING_PEER:
            return
        try:
            eap = decode_eap(packet)
        except ProtocolError:
            return
        if eap.code is not EapCode.RESPONSE or eap.identifier != self._identifier:
            return  # RFC 3748 §4.1: not an answer to the outstanding Request
        if self._round_trips == 0:
            if eap.type != EapType.IDENTITY:
                return
            if len(eap.data) > MAX_IDENTITY:
                self._fail(f"EAP Identity of {len(eap.data)} bytes is longer than {MAX_IDENTITY}")
                return
            self.identity = eap.data.decode("utf-8", errors="replace")
        self._round_trips += 1
        if self._round_trips > self._max_round_trips:
            self._fail(f"EAP did not finish in {self._max_round_trips} round trips")
            return
        self._state = _State.WAITING_BACKEND
        self._retransmit_at = None
        # Only the packet itself: link padding after Length is not the peer's message.
        self._events.append(AuthRequested(EapRelayRequest(
            self.identity, eap.encode(), self._relay_state)))

    def decide(self, decision: AuthDecision, now: float) -> None:
        if self._state is not _State.WAITING_BACKEND:
            return
        eap: EapPacket | None = None
        if decision.eap_message is not None:
            try:
                eap = decode_eap(decision.eap_message)
            except ProtocolError:
                eap = None
        if decision.eap_continue:
            if eap is None or eap.code is not EapCode.REQUEST or eap.type is None:
                self._fail("the authentication server's challenge carries no EAP Request")
                return
            if eap.type not in (EapType.IDENTITY, EapType.NOTIFICATION):
                self.inner_type = eap.type
            self._relay_state = decision.relay_state
            self._identifier = eap.identifier
            self._send(eap.encode(), now)
            return
        if decision.accepted:
            self._state = _State.DONE
            self._outgoing.append(EapPacket(EapCode.SUCCESS, self._final_identifier(eap)).encode())
            self._events.append(AuthSucceeded(
                method=self.method, username=self.identity, keys=decision.keys, message=decision.message,
                attributes=dict(decision.attributes), eap_method=self._inner_name))
            return
        self._fail(decision.message or "rejected by the authentication server", eap)

    def _final_identifier(self, eap: EapPacket | None) -> int:
        """The backend's Success/Failure names the Identifier; without one, the last Request's
        (RFC 3748 §4.2)."""
        if eap is not None and eap.code in (EapCode.SUCCESS, EapCode.FAILURE):
            return eap.identifier
        return self._identifier

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
            self._fail(f"EAP exchange did not finish within {self._exchange_timeout:g} s")
            return
        if self._state is not _State.WAITING_PEER or self._retransmit_at is None or now < self._retransmit_at:
            return
        if self._transmissions >= self._max_transmissions:
            what = "Identity" if self._round_trips == 0 else f"{self._inner_name or 'EAP'} Request"
            self._fail(f"no Response from the peer to the EAP {what}")
            return
        self._transmit(now)

    def _send(self, request: bytes, now: float) -> None:
        self._state = _State.WAITING_PEER
        self._request = request
        self._transmissions = 0
        self._transmit(now)

    def _transmit(self, now: float) -> None:
        self._transmissions += 1
        self._outgoing.append(self._request)
        self._retransmit_at = now + self._restart_interval

    def _fail(self, reason: str, eap: EapPacket | None = None) -> None:
        self._state = _State.DONE
        self._outgoing.append(EapPacket(EapCode.FAILURE, self._final_identifier(eap)).encode())
        self._events.append(AuthFailed(method=self.method, username=self.identity, reason=reason,
                                       eap_method=self._inner_name))
