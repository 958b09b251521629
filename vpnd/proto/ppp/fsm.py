"""The RFC 1661 option negotiation automaton (§4), shared by LCP and every NCP.

One class runs the state table; a subclass supplies the option policy through a few hooks:
what we ask for (`build_request`), how we judge the peer's request (`judge_request`), what a
received Ack/Nak/Reject does to our wishes, and the this-layer-up/down/started/finished actions.
The machine is sans-I/O: feed it packets and the time, take packets, signals and a deadline.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ppp.frames import (
    CODE_REJECT,
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    CONFIGURE_REQUEST,
    CONTROL_HEADER_LEN,
    TERMINATE_ACK,
    TERMINATE_REQUEST,
    ControlPacket,
    Option,
    decode_control,
    decode_options,
    encode_options,
)


class State(enum.IntEnum):
    INITIAL = 0
    STARTING = 1
    CLOSED = 2
    STOPPED = 3
    CLOSING = 4
    STOPPING = 5
    REQ_SENT = 6
    ACK_RCVD = 7
    ACK_SENT = 8
    OPENED = 9


_NEGOTIATING = (State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT)
_TIMER_STATES = (State.CLOSING, State.STOPPING, *_NEGOTIATING)


class Signal(enum.Enum):
    UP = "this-layer-up"
    DOWN = "this-layer-down"
    STARTED = "this-layer-started"
    FINISHED = "this-layer-finished"


@dataclass(frozen=True, slots=True)
class LayerSignal:
    """A this-layer action for the owner (the PPP link), with a reason in words."""

    kind: Signal
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FsmTimers:
    """RFC 1661 §4.6 counters and the restart timer."""

    restart_interval: float = 3.0
    max_configure: int = 10
    max_failure: int = 5
    max_terminate: int = 2

    def __post_init__(self) -> None:
        if self.restart_interval <= 0:
            raise ValueError("restart_interval must be positive")
        if self.max_configure < 1 or self.max_terminate < 1 or self.max_failure < 1:
            raise ValueError("max-configure, max-terminate and max-failure must be at least 1")


@dataclass(slots=True)
class RequestJudgement:
    """Our answer to a peer's Configure-Request.

    ``rejected`` holds peer options verbatim. ``naked`` pairs the peer's option (None when we
    ask for an option the peer left out) with the value we suggest. Empty both → Ack.
    """

    rejected: list[Option] = field(default_factory=list)
    naked: list[tuple[Option | None, Option]] = field(default_factory=list)


class NegotiationFailedError(Exception):
    """Raised by a policy hook when negotiation cannot succeed; the automaton then closes."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OptionFsm:
    """RFC 1661 automaton. Subclasses override the policy hooks below."""

    name = "PPP control protocol"
    # Codes 1..7 are understood by every control protocol; others go to handle_other_code.
    essential_codes = frozenset(range(1, 8))

    def __init__(self, timers: FsmTimers | None = None) -> None:
        self.timers = timers or FsmTimers()
        self.state = State.INITIAL
        # Largest packet we may send to the peer (its MRU, capped to what SSTP can carry).
        self.max_send_size = 1500
        self._restart_count = 0
        self._deadline: float | None = None
        self._naks_sent = 0
        self._naks_received = 0
        self._next_id = 0
        self._request_id = 0
        self._request_options: list[Option] = []
        self._request_packet = b""
        self._terminate_id = 0
        self._terminate_packet = b""
        self._out: list[bytes] = []
        self._signals: Fifo[LayerSignal] = Fifo()
        self.close_reason = ""

    # ---- policy hooks -------------------------------------------------------------------

    def build_request(self) -> list[Option]:
        """Options for our next Configure-Request."""
        return []

    def judge_request(self, options: list[Option]) -> RequestJudgement:
        """Decide on the peer's Configure-Request; default: reject every option."""
        return RequestJudgement(rejected=list(options))

    def peer_request_acked(self, options: list[Option]) -> None:
        """We are sending a Configure-Ack for these peer options: they are now in force."""

    def request_acked(self, options: list[Option]) -> None:
        """The peer acknowledged our last Configure-Request."""

    def apply_nak(self, options: list[Option]) -> None:
        """The peer suggested other values; adjust what we ask for. May raise NegotiationFailedError."""

    def apply_reject(self, options: list[Option]) -> None:
        """The peer refused these options; stop asking for them. May raise NegotiationFailedError."""

    def handle_other_code(self, packet: ControlPacket, now: float) -> bool:
        """Codes beyond 1..7; return False to Code-Reject."""
        return False

    def code_rejected(self, code: int) -> bool:
        """The peer Code-Rejected ``code``: True when that is fatal (RXJ-)."""
        return code in self.essential_codes

    def this_layer_up(self, now: float) -> None:
        self._signals.append(LayerSignal(Signal.UP))

    def this_layer_down(self, now: float, reason: str) -> None:
        self._signals.append(LayerSignal(Signal.DOWN, reason))

    def this_layer_started(self, now: float) -> None:
        self._signals.append(LayerSignal(Signal.STARTED))

    def this_layer_finished(self, now: float, reason: str) -> None:
        self._signals.append(LayerSignal(Signal.FINISHED, reason))

    # ---- outputs --------------------------------------------------------------------------

    def packets_to_send(self) -> list[bytes]:
        """Control packets (code, id, length, data) without the PPP header; drained."""
        out, self._out = self._out, []
        return out

    def next_signal(self) -> LayerSignal | None:
        return self._signals.popleft() if self._signals else None

    def get_timer(self) -> float | None:
        return self._deadline

    @property
    def is_opened(self) -> bool:
        return self.state is State.OPENED

    def send_packet(self, code: int, identifier: int, data: bytes = b"") -> None:
        self._out.append(ControlPacket(code, identifier, data).encode())

    def new_identifier(self) -> int:
        self._next_id = (self._next_id + 1) & 0xFF
        return self._next_id

    # ---- administrative and lower-layer events --------------------------------------------

    def up(self, now: float) -> None:
        if self.state is State.INITIAL:
            self.state = State.CLOSED
        elif self.state is State.STARTING:
            self._irc_configure()
            self._scr(now)
            self.state = State.REQ_SENT

    def down(self, now: float) -> None:
        state = self.state
        self._deadline = None
        if state in (State.CLOSED, State.CLOSING):
            self.state = State.INITIAL
        elif state is State.STOPPED:
            self.state = State.STARTING
            self.this_layer_started(now)
        elif state in (State.STOPPING, *_NEGOTIATING):
            self.state = State.STARTING
        elif state is State.OPENED:
            self.state = State.STARTING
            self.this_layer_down(now, "lower layer down")

    def open(self, now: float) -> None:
        state = self.state
        if state is State.INITIAL:
            self.state = State.STARTING
            self.this_layer_started(now)
        elif state is State.CLOSED:
            self._irc_configure()
            self._scr(now)
            self.state = State.REQ_SENT
        elif state is State.CLOSING:
            self.state = State.STOPPING

    def open_passive(self, now: float) -> None:
        """Lower layer up, then wait in Stopped for the peer's Configure-Request without sending
        one of ours (the Passive option of RFC 1661 §4.6): the peer's request opens it."""
        self.up(now)
        if self.state is State.CLOSED:
            self.state = State.STOPPED

    def close(self, now: float, reason: str = "administrative close") -> None:
        state = self.state
        if not self.close_reason:
            self.close_reason = reason
        if state is State.STARTING:
            self.state = State.INITIAL
            self.this_layer_finished(now, reason)
        elif state is State.STOPPED:
            self.state = State.CLOSED
        elif state is State.STOPPING:
            self.state = State.CLOSING
        elif state in _NEGOTIATING:
            self._irc_terminate()
            self._str(now)
            self.state = State.CLOSING
        elif state is State.OPENED:
            self.this_layer_down(now, reason)
            self._irc_terminate()
            self._str(now)
            self.state = State.CLOSING

    def protocol_rejected(self, now: float) -> None:
        """The peer Protocol-Rejected this protocol: RXJ- (RFC 1661 §5.7)."""
        self._rxj_minus(now, f"peer rejected the {self.name} protocol")

    # ---- timer ------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        state = self.state
        if state not in _TIMER_STATES:
            return
        if self._restart_count > 0:  # TO+
            if state is State.CLOSING or state is State.STOPPING:
                self._str(now, retransmit=True)
            else:
                self._scr(now, retransmit=True)
                if state is State.ACK_RCVD:
                    self.state = State.REQ_SENT
            return
        # TO-
        if state is State.CLOSING:
            self.state = State.CLOSED
            self.this_layer_finished(now, self.close_reason or "closed")
        elif state is State.STOPPING:
            self.state = State.STOPPED
            self.this_layer_finished(now, self.close_reason or "stopped")
        else:
            self.state = State.STOPPED
            reason = f"{self.name}: no answer to {self.timers.max_configure} Configure-Requests"
            self.close_reason = self.close_reason or reason
            self.this_layer_finished(now, reason)

    # ---- receive ----------------------------------------------------------------------------

    def receive(self, packet: bytes | bytearray | memoryview, now: float) -> None:
        """Process one control packet (without PPP header). Never raises on bad input."""
        try:
            decoded = decode_control(packet)
        except ProtocolError:
            return  # RFC 1661: malformed packets are silently discarded
        if self.state in (State.INITIAL, State.STARTING):
            return  # no lower layer yet: nothing to answer with
        code = decoded.code
        try:
            if code == CONFIGURE_REQUEST:
                self._receive_configure_request(decoded, now)
            elif code == CONFIGURE_ACK:
                self._receive_configure_ack(decoded, now)
            elif code in (CONFIGURE_NAK, CONFIGURE_REJECT):
                self._receive_nak_or_reject(decoded, now)
            elif code == TERMINATE_REQUEST:
                self._rtr(decoded, now)
            elif code == TERMINATE_ACK:
                self._rta(now)
            elif code == CODE_REJECT:
                self._receive_code_reject(decoded, now)
            elif not self.handle_other_code(decoded, now):
                self._ruc(packet, now)
        except NegotiationFailedError as failure:
            self.close(now, failure.reason)

    def _receive_configure_request(self, packet: ControlPacket, now: float) -> None:
        try:
            options = decode_options(packet.data)
        except ProtocolError:
            return
        state = self.state
        if state in (State.CLOSING, State.STOPPING):
            return
        if state is State.CLOSED:
            self.send_packet(TERMINATE_ACK, packet.identifier)
            return
        judgement = self.judge_request(options)
        rejected = list(judgement.rejected)
        naks: list[Option] = []
        if not rejected and judgement.naked:
            if self._naks_sent >= self.timers.max_failure:
                # Not converging: refuse what the peer asked for instead of suggesting again.
                rejected = [peer for peer, _ in judgement.naked if peer is not None]
            else:
                naks = [suggestion for _, suggestion in judgement.naked]
        good = not rejected and not naks
        if state is State.OPENED:
            self.this_layer_down(now, f"{self.name}: peer renegotiates")
            self._scr(now)
        elif state is State.STOPPED:
            self._irc_configure()
            self._scr(now)
        if good:
            self.peer_request_acked(options)
            self._naks_sent = 0
            self.send_packet(CONFIGURE_ACK, packet.identifier, packet.data)
        elif rejected:
            self._naks_sent += 1
            self.send_packet(CONFIGURE_REJECT, packet.identifier, encode_options(rejected))
        else:
            self._naks_sent += 1
            self.send_packet(CONFIGURE_NAK, packet.identifier, encode_options(naks))
        if good:
            if state is State.ACK_RCVD:
                self.state = State.OPENED
                self._deadline = None
                self.this_layer_up(now)
            else:
                self.state = State.ACK_SENT
        elif state in (State.OPENED, State.STOPPED, State.ACK_SENT):
            self.state = State.REQ_SENT
        # Req-Sent and Ack-Rcvd stay where they are on RCR-.

    def _matches_request(self, packet: ControlPacket) -> bool:
        return self._request_packet != b"" and packet.identifier == self._request_id

    def _receive_configure_ack(self, packet: ControlPacket, now: float) -> None:
        if not self._matches_request(packet):
            return
        if packet.data != encode_options(self._request_options):
            return  # an Ack must echo our request exactly
        state = self.state
        if state in (State.CLOSED, State.STOPPED):
            self.send_packet(TERMINATE_ACK, packet.identifier)
        elif state is State.REQ_SENT:
            self._consume_request_id()
            self.request_acked(self._request_options)
            self._irc_configure()
            self.state = State.ACK_RCVD
        elif state is State.ACK_RCVD:
            self._scr(now)  # crossed connection
            self.state = State.REQ_SENT
        elif state is State.ACK_SENT:
            self._consume_request_id()
            self.request_acked(self._request_options)
            self._irc_configure()
            self.state = State.OPENED
            self._deadline = None
            self.this_layer_up(now)
        elif state is State.OPENED:
            self.this_layer_down(now, f"{self.name}: unexpected Configure-Ack")
            self._scr(now)
            self.state = State.REQ_SENT

    def _receive_nak_or_reject(self, packet: ControlPacket, now: float) -> None:
        if not self._matches_request(packet):
            return
        try:
            options = decode_options(packet.data)
        except ProtocolError:
            return
        state = self.state
        if state in (State.CLOSED, State.STOPPED):
            self.send_packet(TERMINATE_ACK, packet.identifier)
            return
        if state in (State.CLOSING, State.STOPPING):
            return
        if packet.code == CONFIGURE_REJECT:
            sent = {option.encode() for option in self._request_options}
            if any(option.encode() not in sent for option in options):
                return  # a Reject must only hold our options, unmodified
        self._consume_request_id()
        if state is State.OPENED:
            self.this_layer_down(now, f"{self.name}: peer renegotiates")
        if packet.code == CONFIGURE_REJECT:
            self.apply_reject(options)
        else:
            self._naks_received += 1
            if self._naks_received > self.timers.max_failure:
                # The peer keeps suggesting: give up on the options it dislikes.
                ours = {option.type: option for option in self._request_options}
                self.apply_reject([ours[o.type] for o in options if o.type in ours])
            else:
                self.apply_nak(options)
        if state in (State.REQ_SENT, State.ACK_SENT):
            self._irc_configure()
        self._scr(now)
        self.state = State.ACK_SENT if state is State.ACK_SENT else State.REQ_SENT

    def _consume_request_id(self) -> None:
        # A second answer to the same request is stale.
        self._request_packet = b""

    def _rtr(self, packet: ControlPacket, now: float) -> None:
        state = self.state
        self.send_packet(TERMINATE_ACK, packet.identifier)
        if state in (State.ACK_RCVD, State.ACK_SENT):
            self.state = State.REQ_SENT
        elif state is State.OPENED:
            self.close_reason = self.close_reason or "peer sent Terminate-Request"
            self.this_layer_down(now, "peer sent Terminate-Request")
            self._restart_count = 0
            self._deadline = now + self.timers.restart_interval
            self.state = State.STOPPING

    def _rta(self, now: float) -> None:
        state = self.state
        if state is State.CLOSING:
            self.state = State.CLOSED
            self._deadline = None
            self.this_layer_finished(now, self.close_reason or "closed")
        elif state is State.STOPPING:
            self.state = State.STOPPED
            self._deadline = None
            self.this_layer_finished(now, self.close_reason or "stopped")
        elif state is State.ACK_RCVD:
            self.state = State.REQ_SENT
        elif state is State.OPENED:
            self.this_layer_down(now, f"{self.name}: unexpected Terminate-Ack")
            self._scr(now)
            self.state = State.REQ_SENT

    def _receive_code_reject(self, packet: ControlPacket, now: float) -> None:
        if not packet.data:
            return
        rejected_code = packet.data[0]
        if self.code_rejected(rejected_code):
            self._rxj_minus(now, f"peer Code-Rejected code {rejected_code} of {self.name}")
        elif self.state is State.ACK_RCVD:  # RXJ+
            self.state = State.REQ_SENT

    def _rxj_minus(self, now: float, reason: str) -> None:
        state = self.state
        self.close_reason = self.close_reason or reason
        if state in (State.CLOSED, State.CLOSING):
            self.state = State.CLOSED
            self._deadline = None
            self.this_layer_finished(now, reason)
        elif state in (State.STOPPED, State.STOPPING, *_NEGOTIATING):
            self.state = State.STOPPED
            self._deadline = None
            self.this_layer_finished(now, reason)
        elif state is State.OPENED:
            self.this_layer_down(now, reason)
            self._irc_terminate()
            self._str(now)
            self.state = State.STOPPING

    def _ruc(self, packet: bytes | bytearray | memoryview, now: float) -> None:
        """Unknown code: Code-Reject it, truncated to the peer's MRU (scj)."""
        room = max(self.max_send_size - CONTROL_HEADER_LEN, 0)
        self.send_packet(CODE_REJECT, self.new_identifier(), bytes(packet)[:room])

    # ---- actions ----------------------------------------------------------------------------

    def _irc_configure(self) -> None:
        self._restart_count = self.timers.max_configure

    def _irc_terminate(self) -> None:
        self._restart_count = self.timers.max_terminate

    def _scr(self, now: float, retransmit: bool = False) -> None:
        if not retransmit or not self._request_packet:
            if self.state not in _NEGOTIATING:
                # A fresh negotiation (as pppd does): full retry budget, no earlier Nak counts.
                self._irc_configure()
                self._naks_sent = 0
                self._naks_received = 0
            self._request_options = self.build_request()
            self._request_id = self.new_identifier()
            self._request_packet = ControlPacket(
                CONFIGURE_REQUEST, self._request_id, encode_options(self._request_options)
            ).encode()
        self._out.append(self._request_packet)
        self._restart_count -= 1
        self._deadline = now + self.timers.restart_interval

    def _str(self, now: float, retransmit: bool = False) -> None:
        if not retransmit or not self._terminate_packet:
            self._terminate_id = self.new_identifier()
            self._terminate_packet = ControlPacket(TERMINATE_REQUEST, self._terminate_id).encode()
        self._out.append(self._terminate_packet)
        self._restart_count -= 1
        self._deadline = now + self.timers.restart_interval
