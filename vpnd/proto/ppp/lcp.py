"""LCP (RFC 1661, RFC 1570) with the option policy used over SSTP.

Our policy, matching what Windows and other SSTP stacks do:
* MRU: we ask for ``mru``; a peer MRU above ``max_peer_mru`` (Windows asks 4091) is Nak'd down
  to it, as accel-ppp does (``<mru 4091>`` → ``ConfNak <mru 1452>``). We never send more than
  4087 bytes of PPP information, whatever the peer allows.
* Magic-Number with loop detection; a zero or equal magic is Nak'd with a fresh random one.
* Authentication-Protocol walks an allowed list in both roles (see ``apply_nak``/``judge``).
* ACCM is acknowledged: SSTP has no HDLC, so the map is meaningless and acking it saves pppd
  a round trip. PFC, ACFC, Callback and everything unknown are rejected.
* Echo-Request answered with our magic, truncated to the peer's MRU; Echo-Requests sent every
  ``echo_interval`` seconds (0 = off) and the link declared dead after ``echo_failure``
  unanswered ones, or — when ``echo_timeout`` > 0 (accel's adaptive lcp-echo-timeout) — after
  that many seconds without any frame from the peer.
* Discard-Request, Identification (12) and Time-Remaining (13) never fail the link.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from vpnd.proto.fifo import Fifo
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.frames import (
    CONTROL_HEADER_LEN,
    DISCARD_REQUEST,
    ECHO_REPLY,
    ECHO_REQUEST,
    IDENTIFICATION,
    MAX_INFORMATION,
    PROTO_LCP,
    PROTOCOL_REJECT,
    TIME_REMAINING,
    ControlPacket,
    Option,
)
from vpnd.proto.ppp.fsm import FsmTimers, NegotiationFailedError, OptionFsm, RequestJudgement, State

OPT_MRU = 1
OPT_ACCM = 2
OPT_AUTH = 3
OPT_QUALITY = 4
OPT_MAGIC = 5
OPT_PFC = 7
OPT_ACFC = 8
OPT_CALLBACK = 13

DEFAULT_MRU = 1500  # RFC 1661 when MRU is not negotiated
MIN_MRU = 64


@dataclass(frozen=True, slots=True)
class LcpSettings:
    """LCP knobs (VyOS names in comments)."""

    mru: int = 1452  # ppp-options mru: what we ask the peer to send us at most
    max_peer_mru: int = 1452  # Nak a larger peer MRU down to this
    min_peer_mru: int = 128  # Nak a smaller peer MRU up to max_peer_mru
    # Authenticator: methods we may require, most preferred first. Peer: methods we accept.
    auth_methods: tuple[AuthMethod, ...] = ()
    echo_interval: float = 30.0  # lcp-echo-interval, 0 = off
    echo_failure: int = 3  # lcp-echo-failure
    echo_timeout: float = 0.0  # lcp-echo-timeout (adaptive), 0 = off
    timers: FsmTimers = field(default_factory=FsmTimers)

    def __post_init__(self) -> None:
        for name in ("mru", "max_peer_mru", "min_peer_mru"):
            value = getattr(self, name)
            if not MIN_MRU <= value <= MAX_INFORMATION:
                raise ValueError(f"{name} must be within {MIN_MRU}..{MAX_INFORMATION}, not {value}")
        if self.min_peer_mru > self.max_peer_mru:
            raise ValueError("min_peer_mru must not exceed max_peer_mru")
        if self.echo_interval < 0 or self.echo_timeout < 0 or self.echo_failure < 1:
            raise ValueError("echo settings must be non-negative (echo_failure at least 1)")
        if len(set(self.auth_methods)) != len(self.auth_methods):
            raise ValueError("auth_methods lists a method twice")


@dataclass(frozen=True, slots=True)
class PeerMessage:
    """An Identification (code 12) or Time-Remaining (code 13) packet from the peer."""

    code: int
    text: str
    seconds_remaining: int | None = None


def _random_magic(random_bytes: Callable[[int], bytes], avoid: set[int]) -> int:
    for _ in range(64):
        value = int.from_bytes(random_bytes(4), "big")
        if value != 0 and value not in avoid:
            return value
    # A broken random source must not hang us; any non-zero value outside `avoid` will do.
    value = 1
    while value in avoid:
        value += 1
    return value


class Lcp(OptionFsm):
    name = "LCP"

    def __init__(
        self,
        authenticator: bool,
        settings: LcpSettings | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.settings = settings or LcpSettings()
        super().__init__(self.settings.timers)
        self.authenticator = authenticator
        self._random_bytes = random_bytes
        # What we ask for.
        self._want_mru: int | None = self.settings.mru
        self._want_magic = True
        self.magic = _random_magic(random_bytes, set())
        self._auth_tried: list[AuthMethod] = []
        self._want_auth: AuthMethod | None = None
        if authenticator and self.settings.auth_methods:
            self._want_auth = self.settings.auth_methods[0]
            self._auth_tried.append(self._want_auth)
        # What is in force (updated on Ack).
        self.peer_mru = DEFAULT_MRU
        self.peer_magic = 0
        self.our_mru = DEFAULT_MRU
        self.our_magic_in_force = 0
        self.auth_method: AuthMethod | None = None
        self._peer_auth: AuthMethod | None = None
        self._loop_count = 0
        self._last_magic_nak: int | None = None
        # Echo bookkeeping.
        self._echo_deadline: float | None = None
        self._echo_outstanding = 0
        self._last_activity = 0.0
        self.echo_failure_reason = ""
        self._protocol_rejects: Fifo[tuple[int, bytes]] = Fifo()
        self._peer_messages: Fifo[PeerMessage] = Fifo()

    # ---- option policy -------------------------------------------------------------------

    def build_request(self) -> list[Option]:
        options: list[Option] = []
        if self._want_auth is not None:
            options.append(Option(OPT_AUTH, self._want_auth.lcp_option_value))
        if self._want_mru is not None:
            options.append(Option(OPT_MRU, struct.pack("!H", self._want_mru)))
        if self._want_magic:
            options.append(Option(OPT_MAGIC, struct.pack("!I", self.magic)))
        return options

    def judge_request(self, options: list[Option]) -> RequestJudgement:
        judgement = RequestJudgement()
        for option in options:
            kind = option.type
            if kind == OPT_MRU and len(option.value) == 2:
                mru = int.from_bytes(option.value, "big")
                if mru > self.settings.max_peer_mru or mru < self.settings.min_peer_mru:
                    suggestion = Option(OPT_MRU, struct.pack("!H", self.settings.max_peer_mru))
                    judgement.naked.append((option, suggestion))
            elif kind == OPT_ACCM and len(option.value) == 4:
                pass  # meaningless without HDLC; acknowledged (see module docstring)
            elif kind == OPT_AUTH and not self.authenticator:
                self._judge_auth(option, judgement)
            elif kind == OPT_MAGIC and len(option.value) == 4:
                self._judge_magic(option, judgement)
            else:
                judgement.rejected.append(option)
        return judgement

    def _judge_auth(self, option: Option, judgement: RequestJudgement) -> None:
        allowed = self.settings.auth_methods
        if not allowed:
            judgement.rejected.append(option)
            return
        method = AuthMethod.from_lcp_option_value(option.value)
        if method is None or method not in allowed:
            judgement.naked.append((option, Option(OPT_AUTH, allowed[0].lcp_option_value)))

    def _judge_magic(self, option: Option, judgement: RequestJudgement) -> None:
        peer_magic = int.from_bytes(option.value, "big")
        looped = self._want_magic and peer_magic == self.magic
        if looped:
            self._loop_count += 1
            if self._loop_count >= self.timers.max_failure:
                raise NegotiationFailedError("looped-back link (peer keeps sending our Magic-Number)")
        if peer_magic == 0 or looped:
            suggestion = _random_magic(self._random_bytes, {self.magic, peer_magic})
            self._last_magic_nak = suggestion
            judgement.naked.append((option, Option(OPT_MAGIC, struct.pack("!I", suggestion))))

    def peer_request_acked(self, options: list[Option]) -> None:
        self.peer_mru = DEFAULT_MRU
        self.peer_magic = 0
        self._peer_auth = None
        for option in options:
            if option.type == OPT_MRU:
                self.peer_mru = int.from_bytes(option.value, "big")
            elif option.type == OPT_MAGIC:
                self.peer_magic = int.from_bytes(option.value, "big")
            elif option.type == OPT_AUTH:
                self._peer_auth = AuthMethod.from_lcp_option_value(option.value)
        self._loop_count = 0
        self.max_send_size = min(self.peer_mru, MAX_INFORMATION)

    def request_acked(self, options: list[Option]) -> None:
        self.our_mru = DEFAULT_MRU
        self.our_magic_in_force = 0
        for option in options:
            if option.type == OPT_MRU:
                self.our_mru = int.from_bytes(option.value, "big")
            elif option.type == OPT_MAGIC:
                self.our_magic_in_force = int.from_bytes(option.value, "big")

    def apply_nak(self, options: list[Option]) -> None:
        for option in options:
            if option.type == OPT_MRU and self._want_mru is not None and len(option.value) == 2:
                suggested = int.from_bytes(option.value, "big")
                if MIN_MRU <= suggested <= MAX_INFORMATION:
                    self._want_mru = suggested
            elif option.type == OPT_MAGIC and self._want_magic:
                # RFC 1661 §6.4: a Nak'd Magic-Number means choosing a new one.
                suggested = option.u32() or 0
                self.magic = _random_magic(self._random_bytes, {self.magic, suggested})
            elif option.type == OPT_AUTH and self._want_auth is not None:
                self._walk_auth(AuthMethod.from_lcp_option_value(option.value))

    def _walk_auth(self, suggested: AuthMethod | None) -> None:
        allowed = self.settings.auth_methods
        if suggested is not None and suggested in allowed and suggested not in self._auth_tried:
            choice: AuthMethod | None = suggested
        else:
            choice = next((m for m in allowed if m not in self._auth_tried), None)
        if choice is None:
            names = ", ".join(m.value for m in allowed)
            raise NegotiationFailedError(f"peer refused every allowed authentication method ({names})")
        self._auth_tried.append(choice)
        self._want_auth = choice

    def apply_reject(self, options: list[Option]) -> None:
        for option in options:
            if option.type == OPT_MRU:
                self._want_mru = None
            elif option.type == OPT_MAGIC:
                self._want_magic = False
            elif option.type == OPT_AUTH and self._want_auth is not None:
                raise NegotiationFailedError("peer rejected our Authentication-Protocol option")

    def this_layer_up(self, now: float) -> None:
        self.auth_method = self._want_auth if self.authenticator else self._peer_auth
        self._echo_outstanding = 0
        self._last_activity = now
        interval = self.settings.echo_interval
        self._echo_deadline = now + interval if interval > 0 else None
        super().this_layer_up(now)

    def this_layer_down(self, now: float, reason: str) -> None:
        self._echo_deadline = None
        super().this_layer_down(now, reason)

    # ---- codes 8..13 ---------------------------------------------------------------------

    def handle_other_code(self, packet: ControlPacket, now: float) -> bool:
        code = packet.code
        if code not in (PROTOCOL_REJECT, ECHO_REQUEST, ECHO_REPLY, DISCARD_REQUEST):
            if code in (IDENTIFICATION, TIME_REMAINING):
                self._peer_message(packet)
                return True
            return False
        if self.state is not State.OPENED:
            return True  # RFC 1661 §5.7-5.8: only meaningful in Opened, silently discarded
        data = packet.data
        if code == PROTOCOL_REJECT:
            if len(data) >= 2:
                protocol = int.from_bytes(data[:2], "big")
                if protocol == PROTO_LCP:
                    self._rxj_minus(now, "peer Protocol-Rejected LCP")
                else:
                    self._protocol_rejects.append((protocol, data[2:]))
        elif code == ECHO_REQUEST:
            room = max(self.max_send_size - CONTROL_HEADER_LEN - 4, 0)
            reply = struct.pack("!I", self.our_magic_in_force) + data[4:][:room]
            self.send_packet(ECHO_REPLY, packet.identifier, reply)
        elif code == ECHO_REPLY:
            magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else 0
            if not (magic != 0 and magic == self.our_magic_in_force):  # our own reply: looped
                self._echo_outstanding = 0
        return True

    def _peer_message(self, packet: ControlPacket) -> None:
        data = packet.data
        if packet.code == IDENTIFICATION:
            if len(data) >= 4:
                self._peer_messages.append(PeerMessage(IDENTIFICATION, _text(data[4:])))
        elif len(data) >= 8:
            seconds = int.from_bytes(data[4:8], "big")
            self._peer_messages.append(PeerMessage(TIME_REMAINING, _text(data[8:]), seconds))

    # ---- link services ---------------------------------------------------------------------

    def send_protocol_reject(self, protocol: int, information: bytes | memoryview) -> None:
        """Protocol-Reject an unsupported protocol, truncated to the peer's MRU (§5.7)."""
        if self.state is not State.OPENED:
            return
        room = max(self.max_send_size - CONTROL_HEADER_LEN - 2, 0)
        data = struct.pack("!H", protocol) + bytes(information[:room])
        self.send_packet(PROTOCOL_REJECT, self.new_identifier(), data)

    def next_protocol_reject(self) -> tuple[int, bytes] | None:
        """A (protocol, rejected information) pair the peer refused, for the link."""
        return self._protocol_rejects.popleft() if self._protocol_rejects else None

    def next_peer_message(self) -> PeerMessage | None:
        return self._peer_messages.popleft() if self._peer_messages else None

    def note_activity(self, now: float) -> None:
        """Any frame from the peer arrived (feeds the adaptive echo timeout)."""
        self._last_activity = now

    # ---- timers -------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        deadlines = [d for d in (super().get_timer(), self._echo_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)
        if self._echo_deadline is not None and now >= self._echo_deadline and self.is_opened:
            self._echo_tick(now)

    def _echo_tick(self, now: float) -> None:
        settings = self.settings
        self._echo_deadline = now + settings.echo_interval
        if settings.echo_timeout > 0:
            idle = now - self._last_activity
            if idle >= settings.echo_timeout:
                self._echo_failed(now, f"LCP echo timeout (no frame from the peer for {idle:g} s)")
            elif idle >= settings.echo_interval:
                self._send_echo()
            return
        if self._echo_outstanding >= settings.echo_failure:
            self._echo_failed(now, f"LCP echo timeout ({self._echo_outstanding} unanswered)")
            return
        self._send_echo()
        self._echo_outstanding += 1

    def _send_echo(self) -> None:
        self.send_packet(ECHO_REQUEST, self.new_identifier(), struct.pack("!I", self.our_magic_in_force))

    def _echo_failed(self, now: float, reason: str) -> None:
        self.echo_failure_reason = reason
        self._echo_deadline = None
        self.close(now, reason)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
