"""SSTP channel state machines (MS-SSTP §3), server and client, sans-I/O.

A channel starts once the HTTP handshake is done. The runtime feeds it the decrypted TLS byte
stream (``receive_data``), sends what ``data_to_send`` returns, reads events, hands PPP control
frames to the PPP link and IP packets to the TUN device, and drives ``get_timer`` /
``handle_timer``. State names are those of MS-SSTP.

The data path is the hot path: ``receive_data`` slices IPv4/IPv6 payloads out of the received
buffer as memoryviews (no object per packet besides the slice), and ``send_ip_packets`` joins
cached 8-byte SSTP+PPP headers and payloads with a single ``bytes.join``.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.sstp.binding import (
    BindingFailure,
    build_call_connected,
    normalize_hlak,
    verify_call_connected,
)
from vpnd.proto.sstp.packets import (
    HEADER_LENGTH,
    LENGTH_MASK,
    MAX_PAYLOAD_LENGTH,
    NONCE_LENGTH,
    SSTP_VERSION,
    AttributeId,
    ControlMessage,
    HashProtocol,
    MessageType,
    Status,
    StatusInfo,
    decode_connect_ack,
    decode_control,
    decode_status_info,
    encode_abort,
    encode_connect_ack,
    encode_connect_nak,
    encode_connect_request,
    encode_data_header,
    encode_disconnect,
    encode_disconnect_ack,
    encode_echo_request,
    encode_echo_response,
    status_of,
    validate_call_connected,
    validate_connect_request,
)

PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPP_CONTROL_MIN = 0x8000  # protocols with the high bit set are network/link control protocols
MAX_IP_PACKET = MAX_PAYLOAD_LENGTH - 4  # 4087: room left after FF 03 + 2-byte protocol


class ChannelState(enum.Enum):
    SERVER_CALL_DISCONNECTED = "Server_Call_Disconnected"
    SERVER_CONNECT_REQUEST_PENDING = "Server_Connect_Request_Pending"
    SERVER_CALL_CONNECTED_PENDING = "Server_Call_Connected_Pending"
    SERVER_CALL_CONNECTED = "Server_Call_Connected"
    CLIENT_CALL_DISCONNECTED = "Client_Call_Disconnected"
    CLIENT_CONNECT_REQUEST_SENT = "Client_Connect_Request_Sent"
    CLIENT_CONNECT_ACK_RECEIVED = "Client_Connect_Ack_Received"
    CLIENT_CALL_CONNECTED = "Client_Call_Connected"
    CALL_ABORT_IN_PROGRESS_1 = "Call_Abort_In_Progress_1"
    CALL_ABORT_IN_PROGRESS_2 = "Call_Abort_In_Progress_2"
    CALL_ABORT_PENDING = "Call_Abort_Pending"
    CALL_ABORT_TIMEOUT_PENDING = "Call_Abort_Timeout_Pending"
    CALL_DISCONNECT_IN_PROGRESS_1 = "Call_Disconnect_In_Progress_1"
    CALL_DISCONNECT_IN_PROGRESS_2 = "Call_Disconnect_In_Progress_2"
    CALL_DISCONNECT_ACK_PENDING = "Call_Disconnect_Ack_Pending"
    CALL_DISCONNECT_TIMEOUT_PENDING = "Call_Disconnect_Timeout_Pending"


# Teardown states in which establishment and echo messages are ignored (MS-SSTP §3.x.5).
T4_STATES = frozenset(
    {
        ChannelState.CALL_ABORT_TIMEOUT_PENDING,
        ChannelState.CALL_ABORT_PENDING,
        ChannelState.CALL_DISCONNECT_ACK_PENDING,
        ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING,
    }
)


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Timer values in seconds (MS-SSTP §3.1.2 defaults) and the Connect Request retry limit."""

    negotiation_timeout: float = 60.0
    hello_interval: float = 60.0
    abort_t1: float = 3.0
    abort_t2: float = 1.0
    disconnect_t1: float = 5.0
    disconnect_t2: float = 1.0
    max_connect_retries: int = 3


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class ConnectRequestAccepted:
    """Server: a valid Connect Request was acknowledged; PPP may start."""

    offered_hashes: int


@dataclass(frozen=True, slots=True)
class ConnectRequestRejected:
    """Server: a Connect Request was refused with a NAK (client may retry)."""

    problems: tuple[StatusInfo, ...]


@dataclass(frozen=True, slots=True)
class ConnectAckReceived:
    """Client: the server acknowledged; PPP may start. ``hash_protocol`` is our choice."""

    hash_protocol: HashProtocol
    nonce: bytes


@dataclass(frozen=True, slots=True)
class ConnectNakReceived:
    """Client: the server refused the Connect Request; it was sent again."""

    problems: tuple[StatusInfo, ...]
    attempt: int


@dataclass(frozen=True, slots=True)
class CallConnected:
    """Server: crypto binding verified. Client: Call Connected sent. Data may flow now."""

    hash_protocol: HashProtocol


@dataclass(frozen=True, slots=True)
class BindingRefused:
    """Server: the Call Connected did not bind the call to this TLS channel; the abort follows."""

    failure: BindingFailure
    cause: str


@dataclass(frozen=True, slots=True)
class ChannelAborted:
    """The call is being aborted (by us or by the peer); ``cause`` is for people."""

    status: int
    cause: str
    by_peer: bool
    attrib_id: int = AttributeId.NO_ERROR


@dataclass(frozen=True, slots=True)
class ChannelDisconnected:
    """A normal disconnect started (``by_peer``: the peer sent Call Disconnect)."""

    by_peer: bool


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The runtime must close the TLS/TCP connection now."""

    reason: str


ChannelEvent = (
    ConnectRequestAccepted
    | ConnectRequestRejected
    | ConnectAckReceived
    | ConnectNakReceived
    | CallConnected
    | BindingRefused
    | ChannelAborted
    | ChannelDisconnected
    | ChannelClosed
)


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"status 0x{status:08x}"


# Headers for send_ip_packets, shared by all channels: SSTP data header + FF 03 + protocol.
_IP_HEADER_CACHE: dict[int, dict[int, bytes]] = {PPP_IPV4: {}, PPP_IPV6: {}}
# Receive fast path: SSTP header (version, flags, length) + the first 4 PPP bytes in one unpack.
_FAST_HEADER = struct.Struct("!BBHI")
_FAST_HEADER_LENGTH = _FAST_HEADER.size
_PPP_HEAD_IPV4 = 0xFF030000 | PPP_IPV4
_PPP_HEAD_IPV6 = 0xFF030000 | PPP_IPV6


class _SstpChannel:
    """What server and client share: framing, teardown, echo/hello, PPP frame gating, data path."""

    _initial_state: ChannelState
    _connected_state: ChannelState
    _control_states: frozenset[ChannelState]
    _role: str

    def __init__(self, settings: ChannelSettings | None) -> None:
        self.settings = settings or ChannelSettings()
        self.state = self._initial_state
        self.closed = False
        self.ipv4_open = False  # set by the session when IPCP opens
        self.ipv6_open = False  # set by the session when IPV6CP opens
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.rx_packets = 0
        self.tx_packets = 0
        self.dropped_rx_gated = 0  # frames refused by state / NCP gating
        self.dropped_rx_malformed = 0  # data packets too short to carry a PPP protocol
        self.dropped_tx_gated = 0
        self.dropped_tx_oversize = 0
        self._out: list[bytes] = []
        self._events: Fifo[ChannelEvent] = Fifo()
        self._control_frames: list[bytes] = []
        self._ip_packets: list[memoryview] = []
        self._partial = bytearray()
        self._negotiation_deadline: float | None = None
        self._hello_deadline: float | None = None
        self._echo_outstanding = False
        self._teardown_deadline: float | None = None

    # -- output ---------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes to write to the TLS stream, drained."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def next_event(self) -> ChannelEvent | None:
        return self._events.popleft() if self._events else None

    def take_ppp_control_frames(self) -> list[bytes]:
        """PPP frames for the PPP link: control protocols, and data protocols other than IP."""
        frames = self._control_frames
        self._control_frames = []
        return frames

    def take_ip_packets(self) -> list[memoryview]:
        """IPv4/IPv6 payloads received; the views stay valid until the next ``receive_data``."""
        packets = self._ip_packets
        self._ip_packets = []
        return packets

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an incomplete SSTP packet held back for the next ``receive_data``."""
        return len(self._partial)

    # -- receive path ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | memoryview, now: float) -> None:
        if self.closed:
            return
        view = memoryview(data)
        end = len(view)
        pos = 0
        received_any = False
        partial = self._partial
        if partial:
            # Complete the packet that straddled the previous call, then parse in place.
            if len(partial) < HEADER_LENGTH:
                take = min(HEADER_LENGTH - len(partial), end)
                partial += view[:take]
                pos = take
                if len(partial) < HEADER_LENGTH:
                    return
            length = ((partial[2] << 8) | partial[3]) & LENGTH_MASK
            if partial[0] != SSTP_VERSION or length < HEADER_LENGTH:
                self._framing_failure(partial[0], length)
                return
            take = min(length - len(partial), end - pos)
            partial += view[pos : pos + take]
            pos += take
            if len(partial) < length:
                return
            packet = memoryview(bytes(partial))
            self._partial = bytearray()
            self._dispatch(packet, 0, length, now)
            received_any = True
        # Fast path: a data packet carrying FF 03 + IPv4/IPv6 through an open gate is sliced out
        # with one unpack and no call; anything else goes through _dispatch below.
        connected = self.state is self._connected_state
        v4_open = connected and self.ipv4_open
        v6_open = connected and self.ipv6_open
        append = self._ip_packets.append
        unpack = _FAST_HEADER.unpack_from
        fast_packets = 0
        fast_bytes = 0
        while end - pos >= _FAST_HEADER_LENGTH:
            version, flags, length, ppp_head = unpack(view, pos)
            length &= LENGTH_MASK
            if end - pos < length:
                break
            if (
                flags == 0
                and length > _FAST_HEADER_LENGTH
                and version == SSTP_VERSION
                and ((ppp_head == _PPP_HEAD_IPV4 and v4_open) or (ppp_head == _PPP_HEAD_IPV6 and v6_open))
            ):
                append(view[pos + _FAST_HEADER_LENGTH : pos + length])
                fast_packets += 1
                fast_bytes += length - _FAST_HEADER_LENGTH
                pos += length
                continue
            if version != SSTP_VERSION or length < HEADER_LENGTH:
                self._framing_failure(version, length)
                return
            self._dispatch(view, pos, length, now)
            received_any = True
            pos += length
            if self.closed:
                break
            connected = self.state is self._connected_state  # a control packet may change both
            v4_open = connected and self.ipv4_open
            v6_open = connected and self.ipv6_open
        if fast_packets:
            received_any = True
            self.rx_packets += fast_packets
            self.rx_bytes += fast_bytes
        while end - pos >= HEADER_LENGTH and not self.closed:
            length = ((view[pos + 2] << 8) | view[pos + 3]) & LENGTH_MASK
            if view[pos] != SSTP_VERSION or length < HEADER_LENGTH:
                self._framing_failure(view[pos], length)
                return
            if end - pos < length:
                break
            self._dispatch(view, pos, length, now)
            received_any = True
            pos += length
        if self.closed:
            return
        if pos < end:
            if view[pos] != SSTP_VERSION:
                self._framing_failure(view[pos], None)
                return
            # Less than one packet remains, so the buffer never exceeds 4095 bytes.
            self._partial += view[pos:end]
        if received_any and self.state is self._connected_state:
            self._hello_deadline = now + self.settings.hello_interval
            self._echo_outstanding = False

    def _framing_failure(self, version: int, length: int | None) -> None:
        if version != SSTP_VERSION:
            detail = f"version byte 0x{version:02x} instead of 0x10"
        else:
            detail = f"packet length {length} shorter than the 4-byte header"
        # MS-SSTP §3.1.5.1: cannot delineate packets → drop the connection without a message.
        self._close(f"SSTP framing failure ({detail}); the byte stream cannot be trusted")

    def _dispatch(self, view: memoryview, start: int, length: int, now: float) -> None:
        if view[start + 1] & 0x01:
            self._handle_control(bytes(view[start : start + length]), now)
        else:
            self._handle_data(view, start + HEADER_LENGTH, start + length)

    def _handle_data(self, view: memoryview, start: int, end: int) -> None:
        i = start
        if end - i >= 2 and view[i] == 0xFF and view[i + 1] == 0x03:
            i += 2  # address/control present; both forms are accepted
        if i >= end:
            self.dropped_rx_malformed += 1
            return
        first = view[i]
        if first & 0x01:  # compressed 1-byte protocol field
            protocol = first
            i += 1
        elif end - i >= 2:
            protocol = (first << 8) | view[i + 1]
            i += 2
        else:
            self.dropped_rx_malformed += 1
            return
        if protocol in (PPP_IPV4, PPP_IPV6):
            gate_open = self.ipv4_open if protocol == PPP_IPV4 else self.ipv6_open
            if not gate_open or self.state is not self._connected_state:
                self.dropped_rx_gated += 1
            elif i >= end:
                self.dropped_rx_malformed += 1
            else:
                self._ip_packets.append(view[i:end])
                self.rx_packets += 1
                self.rx_bytes += end - i
        elif protocol >= PPP_CONTROL_MIN:
            if self.state in self._control_states:
                self._control_frames.append(bytes(view[start:end]))
            else:
                self.dropped_rx_gated += 1
        elif self.state is self._connected_state:
            self._control_frames.append(bytes(view[start:end]))  # let PPP Protocol-Reject it
        else:
            self.dropped_rx_gated += 1

    def _handle_control(self, packet: bytes, now: float) -> None:
        in_t4 = self.state in T4_STATES
        try:
            message = decode_control(packet)
        except ProtocolError as exc:
            if not in_t4:
                self._abort_invalid(Status.INVALID_FRAME_RECEIVED, f"malformed control packet: {exc}", now)
            return
        kind = message.message_type
        if kind == MessageType.CALL_ABORT:
            self._on_peer_abort(message, now)
        elif kind == MessageType.CALL_DISCONNECT:
            self._on_peer_disconnect(now)
        elif kind == MessageType.CALL_DISCONNECT_ACK:
            self._on_disconnect_ack(now)
        elif in_t4:
            return
        elif kind == MessageType.ECHO_REQUEST:
            if self._echo_allowed():
                self._out.append(encode_echo_response())
            else:
                self._abort_unexpected(message, now)
        elif kind == MessageType.ECHO_RESPONSE:
            if not self._echo_allowed():
                self._abort_unexpected(message, now)
        elif not isinstance(kind, MessageType):
            self._abort_invalid(Status.INVALID_FRAME_RECEIVED, f"unknown SSTP message type 0x{kind:04x}", now)
        elif not self._handle_role_message(message, packet, now):
            self._abort_unexpected(message, now)

    def _echo_allowed(self) -> bool:
        return self.state is self._connected_state

    def _handle_role_message(self, message: ControlMessage, packet: bytes, now: float) -> bool:
        """Handle an establishment message; False when it is not valid in the current state."""
        raise NotImplementedError

    # -- teardown -------------------------------------------------------------------------------

    def _on_peer_abort(self, message: ControlMessage, now: float) -> None:
        state = self.state
        if state is ChannelState.CALL_ABORT_PENDING:
            # Our Abort was answered: wait T2 so the peer surely gets ours, then clean up.
            self.state = ChannelState.CALL_ABORT_TIMEOUT_PENDING
            self._teardown_deadline = now + self.settings.abort_t2
            return
        if state in (ChannelState.CALL_ABORT_TIMEOUT_PENDING, ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING):
            return
        info = status_of(message)
        status = info.status if info is not None else Status.NO_ERROR
        attrib_id = info.attrib_id if info is not None else AttributeId.NO_ERROR
        self.state = ChannelState.CALL_ABORT_IN_PROGRESS_2
        self._stop_call_timers()
        self._out.append(encode_abort())
        self._teardown_deadline = now + self.settings.abort_t2
        self.state = ChannelState.CALL_ABORT_TIMEOUT_PENDING
        self._events.append(
            ChannelAborted(
                status=status,
                cause=f"the peer aborted the call ({_status_name(status)}, attribute 0x{attrib_id:02x})",
                by_peer=True,
                attrib_id=attrib_id,
            )
        )

    def _on_peer_disconnect(self, now: float) -> None:
        state = self.state
        if state is ChannelState.CALL_DISCONNECT_ACK_PENDING:
            # Both ends disconnected at once: acknowledge theirs and wait T2.
            self._out.append(encode_disconnect_ack())
            self._teardown_deadline = now + self.settings.disconnect_t2
            self.state = ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING
            return
        if state in (
            ChannelState.CALL_ABORT_TIMEOUT_PENDING,
            ChannelState.CALL_ABORT_PENDING,
            ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING,
        ):
            # The per-state table ignores it here, but §3.2.4.2 says a Call Disconnect MUST be
            # acknowledged in any state; the Ack changes nothing on our side.
            self._out.append(encode_disconnect_ack())
            return
        self.state = ChannelState.CALL_DISCONNECT_IN_PROGRESS_2
        self._stop_call_timers()
        self._out.append(encode_disconnect_ack())
        self._teardown_deadline = now + self.settings.disconnect_t2
        self.state = ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING
        self._events.append(ChannelDisconnected(by_peer=True))

    def _on_disconnect_ack(self, now: float) -> None:
        state = self.state
        if state is ChannelState.CALL_DISCONNECT_ACK_PENDING:
            self._close("call disconnected")
        elif state not in (
            ChannelState.CALL_ABORT_PENDING,
            ChannelState.CALL_ABORT_TIMEOUT_PENDING,
            ChannelState.CALL_DISCONNECT_TIMEOUT_PENDING,
        ):
            cause = "unexpected Call Disconnect Ack (no disconnect was sent)"
            self._abort_invalid(Status.UNACCEPTED_FRAME_RECEIVED, cause, now)

    def _abort_unexpected(self, message: ControlMessage, now: float) -> None:
        cause = f"unexpected {MessageType(message.message_type).name} in state {self.state.value}"
        self._abort_invalid(Status.UNACCEPTED_FRAME_RECEIVED, cause, now)

    def _abort_invalid(self, status: Status, cause: str, now: float) -> None:
        self._abort(StatusInfo(AttributeId.STATUS_INFO, status), cause, now)

    def _abort(self, info: StatusInfo, cause: str, now: float) -> None:
        self.state = ChannelState.CALL_ABORT_IN_PROGRESS_1
        self._stop_call_timers()
        self._out.append(encode_abort(info))
        self._teardown_deadline = now + self.settings.abort_t1
        self.state = ChannelState.CALL_ABORT_PENDING
        self._events.append(ChannelAborted(info.status, cause, by_peer=False, attrib_id=info.attrib_id))

    def _stop_call_timers(self) -> None:
        self._negotiation_deadline = None
        self._hello_deadline = None
        self._echo_outstanding = False

    def _close(self, reason: str) -> None:
        self.state = self._initial_state
        self.closed = True
        self._stop_call_timers()
        self._teardown_deadline = None
        self._partial = bytearray()
        self._events.append(ChannelClosed(reason))

    def drop(self, reason: str) -> None:
        """Close at once without sending anything: the peer is known to be gone."""
        if not self.closed:
            self._close(reason)

    def _can_start_teardown(self) -> bool:
        return not self.closed and self.state not in T4_STATES

    def abort(self, status: Status, now: float, cause: str = "aborted locally") -> bool:
        """Abort the call (Call Abort, T1); False when already tearing down or closed."""
        if not self._can_start_teardown():
            return False
        self._abort(StatusInfo(AttributeId.STATUS_INFO, status), cause, now)
        return True

    def disconnect(self, now: float) -> bool:
        """Normal teardown (Call Disconnect, T1); False when already tearing down or closed."""
        if not self._can_start_teardown():
            return False
        if self.state is self._initial_state:
            self._close("disconnected before the call was set up")
            return True
        self.state = ChannelState.CALL_DISCONNECT_IN_PROGRESS_1
        self._stop_call_timers()
        self._out.append(encode_disconnect())
        self._teardown_deadline = now + self.settings.disconnect_t1
        self.state = ChannelState.CALL_DISCONNECT_ACK_PENDING
        self._events.append(ChannelDisconnected(by_peer=False))
        return True

    # -- timers ---------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        deadlines = [
            d
            for d in (self._teardown_deadline, self._negotiation_deadline, self._hello_deadline)
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        if self._teardown_deadline is not None and now >= self._teardown_deadline:
            self._teardown_deadline = None
            state = self.state
            settings = self.settings
            if state is ChannelState.CALL_ABORT_PENDING:
                self._close(f"call aborted; no Call Abort answer within {settings.abort_t1:g} s")
            elif state is ChannelState.CALL_DISCONNECT_ACK_PENDING:
                self._close(f"call disconnected; no Disconnect Ack within {settings.disconnect_t1:g} s")
            elif state is ChannelState.CALL_ABORT_TIMEOUT_PENDING:
                self._close("call aborted")
            else:
                self._close("call disconnected")
            return
        if self._negotiation_deadline is not None and now >= self._negotiation_deadline:
            limit = self.settings.negotiation_timeout
            cause = f"negotiation timeout: {self._negotiation_waiting_for()} within {limit:g} s"
            self._abort_invalid(Status.NEGOTIATION_TIMEOUT, cause, now)
            return
        if self._hello_deadline is not None and now >= self._hello_deadline:
            if self._echo_outstanding:
                # MS-SSTP §3.1.2.3: no answer within another interval → drop, no Call Abort.
                silent = 2 * self.settings.hello_interval
                self._close(f"dead peer: nothing received for {silent:g} s, Echo Request unanswered")
                return
            self._out.append(encode_echo_request())
            self._echo_outstanding = True
            self._hello_deadline = now + self.settings.hello_interval

    def _negotiation_waiting_for(self) -> str:
        raise NotImplementedError

    def _enter_call_connected(self, protocol: HashProtocol, now: float) -> None:
        self.state = self._connected_state
        self._negotiation_deadline = None
        self._hello_deadline = now + self.settings.hello_interval
        self._echo_outstanding = False
        self._events.append(CallConnected(protocol))

    # -- send path ------------------------------------------------------------------------------

    def send_ppp_frame(self, frame: bytes) -> bool:
        """Queue one PPP frame (FF 03 + protocol + information); False when dropped."""
        length = len(frame)
        protocol = _ppp_protocol(frame)
        if protocol is None:
            self.dropped_tx_gated += 1
            return False
        if length > MAX_PAYLOAD_LENGTH:
            self.dropped_tx_oversize += 1
            return False
        allowed = self._control_states if protocol >= PPP_CONTROL_MIN else (self._connected_state,)
        if self.closed or self.state not in allowed:
            self.dropped_tx_gated += 1
            return False
        self._out.append(encode_data_header(length) + bytes(frame))
        return True

    def send_ip_packets(self, packets: Sequence[bytes | memoryview], ipv6: bool = False) -> int:
        """Queue IP packets as SSTP data packets; returns how many were queued."""
        gate_open = self.ipv6_open if ipv6 else self.ipv4_open
        if self.closed or self.state is not self._connected_state or not gate_open:
            self.dropped_tx_gated += len(packets)
            return 0
        protocol = PPP_IPV6 if ipv6 else PPP_IPV4
        cache = _IP_HEADER_CACHE[protocol]
        parts: list[bytes | memoryview] = []
        sent = 0
        sent_bytes = 0
        for packet in packets:
            size = len(packet)
            header = cache.get(size)
            if header is None:
                if not 0 < size <= MAX_IP_PACKET:
                    self.dropped_tx_oversize += 1
                    continue
                header = struct.pack("!BBHBBH", SSTP_VERSION, 0, size + 8, 0xFF, 0x03, protocol)
                cache[size] = header
            parts.append(header)
            parts.append(packet)
            sent += 1
            sent_bytes += size
        if sent:
            self._out.append(b"".join(parts))
            self.tx_packets += sent
            self.tx_bytes += sent_bytes
        return sent


def _ppp_protocol(frame: bytes | memoryview) -> int | None:
    """Protocol number of a PPP frame with or without FF 03 and with a 1- or 2-byte field."""
    i = 2 if len(frame) >= 2 and frame[0] == 0xFF and frame[1] == 0x03 else 0
    if i >= len(frame):
        return None
    if frame[i] & 0x01:
        return frame[i]
    if i + 1 >= len(frame):
        return None
    return (frame[i] << 8) | frame[i + 1]


# ---------------------------------------------------------------------------------------------


class SstpServerChannel(_SstpChannel):
    """Server side: Connect Request → Ack (nonce) → verify Call Connected once PPP auth gave the HLAK."""

    _initial_state = ChannelState.SERVER_CALL_DISCONNECTED
    _connected_state = ChannelState.SERVER_CALL_CONNECTED
    _control_states = frozenset(
        {ChannelState.SERVER_CALL_CONNECTED_PENDING, ChannelState.SERVER_CALL_CONNECTED}
    )
    _role = "server"

    def __init__(
        self,
        *,
        cert_hashes: dict[HashProtocol, bytes],
        offered_hashes: int = HashProtocol.SHA1 | HashProtocol.SHA256,
        random_bytes: Callable[[int], bytes] = os.urandom,
        settings: ChannelSettings | None = None,
    ) -> None:
        super().__init__(settings)
        self.cert_hashes = dict(cert_hashes)
        available = 0
        for proto in self.cert_hashes:
            available |= proto
        # Offer only what we can check: a hash protocol needs the certificate's hash.
        self.offered_hashes = offered_hashes & available
        if not self.offered_hashes:
            raise ValueError("no certificate hash for any offered hash protocol")
        self._random_bytes = random_bytes
        self._nonce: bytes | None = None
        self._naks_sent = 0
        self._hlak: bytes | None = None
        self._deferred_call_connected: bytes | None = None

    def start(self, now: float) -> None:
        """The HTTP handshake is done: wait for the Connect Request (negotiation timer)."""
        if self.state is ChannelState.SERVER_CALL_DISCONNECTED and not self.closed:
            self.state = ChannelState.SERVER_CONNECT_REQUEST_PENDING
            self._negotiation_deadline = now + self.settings.negotiation_timeout

    def receive_data(self, data: bytes | memoryview, now: float) -> None:
        if self.state is ChannelState.SERVER_CALL_DISCONNECTED and not self.closed:
            self.start(now)
        super().receive_data(data, now)

    @property
    def nonce(self) -> bytes | None:
        return self._nonce

    def _negotiation_waiting_for(self) -> str:
        if self.state is ChannelState.SERVER_CONNECT_REQUEST_PENDING:
            return "no Call Connect Request"
        if self._deferred_call_connected is not None:
            return "PPP authentication did not finish (Call Connected waiting for the HLAK)"
        return "no Call Connected"

    def _echo_allowed(self) -> bool:
        # The client is already connected while we hold its Call Connected for the HLAK.
        if self.state is ChannelState.SERVER_CALL_CONNECTED:
            return True
        pending = self.state is ChannelState.SERVER_CALL_CONNECTED_PENDING
        return pending and self._deferred_call_connected is not None

    def _handle_role_message(self, message: ControlMessage, packet: bytes, now: float) -> bool:
        kind = message.message_type
        state = self.state
        if kind == MessageType.CALL_CONNECT_REQUEST and state is ChannelState.SERVER_CONNECT_REQUEST_PENDING:
            self._on_connect_request(message, now)
            return True
        if kind == MessageType.CALL_CONNECTED and state is ChannelState.SERVER_CALL_CONNECTED_PENDING:
            if self._deferred_call_connected is not None:
                return False  # a second Call Connected
            problem = validate_call_connected(message)
            if problem is not None:
                self._abort(problem, "malformed Call Connected (no valid Crypto Binding attribute)", now)
            elif self._hlak is None:
                self._deferred_call_connected = packet  # verified when set_hlak arrives
            else:
                self._verify(packet, self._hlak, now)
            return True
        return False

    def _on_connect_request(self, message: ControlMessage, now: float) -> None:
        problems = validate_connect_request(message)
        if problems:
            if self._naks_sent >= self.settings.max_connect_retries:
                self._abort(
                    StatusInfo(AttributeId.STATUS_INFO, Status.RETRY_COUNT_EXCEEDED),
                    f"Connect Request refused {self._naks_sent + 1} times "
                    f"({', '.join(_status_name(p.status) for p in problems)})",
                    now,
                )
                return
            self._naks_sent += 1
            self._out.append(encode_connect_nak(problems))
            self._events.append(ConnectRequestRejected(tuple(problems)))
            return
        nonce = bytes(self._random_bytes(NONCE_LENGTH))
        if len(nonce) != NONCE_LENGTH:
            raise ValueError("random_bytes returned the wrong number of bytes")
        self._nonce = nonce
        self._out.append(encode_connect_ack(self.offered_hashes, nonce))
        self.state = ChannelState.SERVER_CALL_CONNECTED_PENDING
        self._negotiation_deadline = now + self.settings.negotiation_timeout
        self._events.append(ConnectRequestAccepted(self.offered_hashes))

    def set_hlak(self, hlak: bytes, now: float) -> None:
        """PPP authentication finished: the key that Call Connected's compound MAC must match."""
        self._hlak = normalize_hlak(hlak)
        deferred = self._deferred_call_connected
        if deferred is not None and self.state is ChannelState.SERVER_CALL_CONNECTED_PENDING:
            self._deferred_call_connected = None
            self._verify(deferred, self._hlak, now)

    def _verify(self, packet: bytes, hlak: bytes, now: float) -> None:
        nonce = self._nonce or b""
        result = verify_call_connected(
            packet, nonce=nonce, cert_hashes=self.cert_hashes, offered=self.offered_hashes, hlak=hlak
        )
        if result.ok and result.hash_protocol is not None:
            self._enter_call_connected(result.hash_protocol, now)
            return
        if result.failure is BindingFailure.MALFORMED:
            info = StatusInfo(AttributeId.STATUS_INFO, Status.ATTRIB_NOT_SUPPORTED_IN_MSG)
        else:
            info = StatusInfo(AttributeId.CRYPTO_BINDING, Status.VALUE_NOT_SUPPORTED)
        if result.failure is not None:
            self._events.append(BindingRefused(result.failure, result.cause))
        self._abort(info, result.cause, now)


class SstpClientChannel(_SstpChannel):
    """Client side: Connect Request → Ack → (PPP auth) → Call Connected with the crypto binding."""

    _initial_state = ChannelState.CLIENT_CALL_DISCONNECTED
    _connected_state = ChannelState.CLIENT_CALL_CONNECTED
    _control_states = frozenset(
        {ChannelState.CLIENT_CONNECT_ACK_RECEIVED, ChannelState.CLIENT_CALL_CONNECTED}
    )
    _role = "client"

    def __init__(
        self, *, cert_hashes: dict[HashProtocol, bytes], settings: ChannelSettings | None = None
    ) -> None:
        super().__init__(settings)
        self.cert_hashes = dict(cert_hashes)
        self._naks_received = 0
        self.hash_protocol: HashProtocol | None = None
        self.nonce: bytes | None = None

    def start(self, now: float) -> None:
        """The HTTP 200 arrived: send the Connect Request."""
        if self.state is ChannelState.CLIENT_CALL_DISCONNECTED and not self.closed:
            self._out.append(encode_connect_request())
            self.state = ChannelState.CLIENT_CONNECT_REQUEST_SENT
            self._negotiation_deadline = now + self.settings.negotiation_timeout

    def _negotiation_waiting_for(self) -> str:
        if self.state is ChannelState.CLIENT_CONNECT_REQUEST_SENT:
            return "no Call Connect Ack"
        return "PPP authentication did not finish"

    def _handle_role_message(self, message: ControlMessage, packet: bytes, now: float) -> bool:
        if self.state is not ChannelState.CLIENT_CONNECT_REQUEST_SENT:
            return False
        if message.message_type == MessageType.CALL_CONNECT_ACK:
            self._on_connect_ack(message, now)
            return True
        if message.message_type == MessageType.CALL_CONNECT_NAK:
            self._on_connect_nak(message, now)
            return True
        return False

    def _on_connect_ack(self, message: ControlMessage, now: float) -> None:
        try:
            request = decode_connect_ack(message)
        except ProtocolError as exc:
            info = StatusInfo(AttributeId.STATUS_INFO, Status.ATTRIB_NOT_SUPPORTED_IN_MSG)
            self._abort(info, f"malformed Call Connect Ack: {exc}", now)
            return
        bitmask = request.hash_bitmask
        if bitmask & HashProtocol.SHA256 and HashProtocol.SHA256 in self.cert_hashes:
            chosen = HashProtocol.SHA256  # MS-SSTP: SHA256 when both are offered
        elif bitmask & HashProtocol.SHA1 and HashProtocol.SHA1 in self.cert_hashes:
            chosen = HashProtocol.SHA1
        else:
            info = StatusInfo(AttributeId.CRYPTO_BINDING_REQ, Status.VALUE_NOT_SUPPORTED)
            self._abort(info, f"the server offers no usable hash protocol (bitmask 0x{bitmask:02x})", now)
            return
        self.hash_protocol = chosen
        self.nonce = request.nonce
        self.state = ChannelState.CLIENT_CONNECT_ACK_RECEIVED
        self._negotiation_deadline = now + self.settings.negotiation_timeout
        self._events.append(ConnectAckReceived(chosen, request.nonce))

    def _on_connect_nak(self, message: ControlMessage, now: float) -> None:
        problems: list[StatusInfo] = []
        for attr in message.attributes:
            if attr.attribute_id == AttributeId.STATUS_INFO and len(attr.value) >= 8:
                problems.append(decode_status_info(attr.value))
        self._naks_received += 1
        if self._naks_received > self.settings.max_connect_retries:
            info = StatusInfo(AttributeId.STATUS_INFO, Status.RETRY_COUNT_EXCEEDED)
            reasons = ", ".join(_status_name(p.status) for p in problems) or "no reason given"
            cause = f"the server refused the Connect Request {self._naks_received} times ({reasons})"
            self._abort(info, cause, now)
            return
        self._out.append(encode_connect_request())
        self._negotiation_deadline = now + self.settings.negotiation_timeout
        self._events.append(ConnectNakReceived(tuple(problems), self._naks_received))

    def send_call_connected(self, hlak: bytes, now: float) -> bool:
        """PPP authentication succeeded: send Call Connected with the crypto binding."""
        if self.state is not ChannelState.CLIENT_CONNECT_ACK_RECEIVED or self.closed:
            return False
        proto, nonce = self.hash_protocol, self.nonce
        assert proto is not None and nonce is not None  # set together with the Ack state
        self._out.append(build_call_connected(proto, nonce, self.cert_hashes[proto], hlak))
        self._enter_call_connected(proto, now)
        return True

