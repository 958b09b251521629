"""One SSTP connection, both roles: HTTP handshake → SSTP channel → PPP link, wired together.

The runtime owns the TLS socket and the TUN device; a session object owns everything between
them. It is fed the decrypted byte stream and the time, and hands back bytes to send, events,
IP packets and the next timer deadline:

    session.receive_data(data, now)            # bytes from the TLS stream
    out = session.data_to_send()               # bytes for the TLS stream
    for packet in session.take_ip_packets():   # IP packets for the TUN (views, batch)
    session.send_ip_packets(batch)             # IP packets read from the TUN
    while (event := session.next_event()) is not None: ...
    deadline = session.get_timer(); session.handle_timer(now)

What ties the layers together lives here and nowhere else: PPP starts when the SSTP call is
accepted, the PPP authentication result becomes the crypto-binding key (HLAK), IP gates open
only when both the binding is verified and the NCP is opened, and a PPP termination turns into
an SSTP Call Disconnect.

MPPE (``mppe`` in the settings, default deny): when negotiated, IP packets travel as encrypted
PPP 00FD frames. Those are not IP, so the channel hands them over with the control frames; the
session decrypts them here (slow path) and returns the packets with the channel's batch from
``take_ip_packets``; ``send_ip_packets`` encrypts. Plain IP from the peer is then refused, and
until MPPE has settled (opened, or declined under ``prefer``) no IP flows at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from vpnd.proto.eap.tls_server import EapTlsServerSettings
from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.http import HandshakeState, HttpClientHandshake, HttpPolicy, HttpServerHandshake
from vpnd.proto.ppp.auth.factory import make_client_auth, make_server_auth
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthFailed,
    AuthMethod,
    AuthRequested,
    AuthSucceeded,
    ClientAuth,
    ServerAuth,
)
from vpnd.proto.ppp.frames import PROTO_COMPRESSED, PROTO_IPV4, PROTO_IPV6, decode_frame, encode_frame
from vpnd.proto.ppp.ipcp import Ipv4Settings
from vpnd.proto.ppp.link import (
    Ipv4AddressNeeded,
    Ipv4Closed,
    Ipv4Opened,
    Ipv6Closed,
    Ipv6Opened,
    LinkDown,
    LinkEstablished,
    LinkSettings,
    LinkTerminated,
    MppeClosed,
    MppeDeclined,
    MppeOpened,
    PeerMessageReceived,
    Phase,
    PppLink,
)
from vpnd.proto.ppp.mppe import MAX_PLAIN_PAYLOAD, MppePolicy, MppeSettings
from vpnd.proto.sstp.binding import BindingFailure, hlak_from_keys
from vpnd.proto.sstp.channel import (
    BindingRefused,
    CallConnected,
    ChannelAborted,
    ChannelClosed,
    ChannelDisconnected,
    ChannelSettings,
    ConnectAckReceived,
    ConnectNakReceived,
    ConnectRequestAccepted,
    ConnectRequestRejected,
    SstpClientChannel,
    SstpServerChannel,
)
from vpnd.proto.sstp.packets import HashProtocol, Status

__all__ = [
    "AuthFailed",
    "AuthRequested",
    "AuthSucceeded",
    "BindingFailed",
    "BindingVerified",
    "ClientSession",
    "ClientSessionSettings",
    "HttpAccepted",
    "HttpRefused",
    "Ipv4AddressNeeded",
    "Ipv4Up",
    "Ipv6Up",
    "LinkEstablished",
    "MppePolicy",
    "MppeSettings",
    "NegotiationTimedOut",
    "Notice",
    "PeerMessageReceived",
    "ServerSession",
    "ServerSessionSettings",
    "SessionClosed",
    "SessionEvent",
]

# The client takes EAP (EAP-MSCHAPv2) when a server proposes it; a Nak suggests MS-CHAPv2 first.
DEFAULT_AUTH_ORDER = (AuthMethod.MSCHAP_V2, AuthMethod.MSCHAP_V1, AuthMethod.CHAP_MD5, AuthMethod.PAP,
                      AuthMethod.EAP)


# ---- events the runtime sees (PPP auth events and a few link events pass through as they are) --


@dataclass(frozen=True, slots=True)
class HttpAccepted:
    """The SSTP_DUPLEX_POST was answered with 200 (server) or accepted (client)."""

    host: str | None
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class HttpRefused:
    """The HTTP step failed; ``status`` is what we answered (server) or got (client), if any;
    ``wrong_host``: the server refused a Host that is not its host name."""

    status: int | None
    error: str
    wrong_host: bool = False


@dataclass(frozen=True, slots=True)
class NegotiationTimedOut:
    """A negotiation phase ran past its deadline (``limit`` seconds); the session is ending.

    ``phase``: "http" (TLS and the HTTP request: the deadline runs from the session's start),
    "sstp-connect" (Call Connect Request), "lcp", "authentication" (including the wait for the
    backend's answer), "call-connected" (authenticated, no Call Connected) or "ncp" (Call
    Connected, but no IP negotiated)."""

    phase: str
    limit: float


@dataclass(frozen=True, slots=True)
class BindingVerified:
    """Server: the crypto binding checked out. Client: Call Connected was sent."""

    hash_protocol: HashProtocol


@dataclass(frozen=True, slots=True)
class BindingFailed:
    """Server: the client's Call Connected failed the crypto binding check (the call is aborted);
    ``failure`` says which check, ``cause`` explains it for people."""

    failure: BindingFailure
    cause: str


@dataclass(frozen=True, slots=True)
class Ipv4Up:
    """IPv4 may flow: IPCP is opened and the call is connected."""

    local: IPv4Address
    peer: IPv4Address | None
    dns: tuple[IPv4Address, ...]


@dataclass(frozen=True, slots=True)
class Ipv6Up:
    """IPv6 may flow: IPV6CP is opened and the call is connected."""

    local_interface_id: bytes
    peer_interface_id: bytes | None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth one log line that changes nothing (a NAK, an NCP closing, ...)."""

    text: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The transport must be closed now (after flushing ``data_to_send``). Emitted once.

    ``reason`` is the first cause, in words; ``by_peer`` tells whether the peer ended it.
    """

    reason: str
    by_peer: bool


SessionEvent = (
    HttpAccepted
    | HttpRefused
    | LinkEstablished
    | AuthRequested
    | AuthSucceeded
    | AuthFailed
    | BindingVerified
    | BindingFailed
    | Ipv4AddressNeeded
    | Ipv4Up
    | Ipv6Up
    | PeerMessageReceived
    | Notice
    | NegotiationTimedOut
    | SessionClosed
)


# ---- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerSessionSettings:
    """``cert_hashes``: hashes of the certificate the client sees (ours, or the TLS offloader's)."""

    cert_hashes: Mapping[HashProtocol, bytes]
    link: LinkSettings = field(default_factory=LinkSettings)
    http: HttpPolicy = field(default_factory=HttpPolicy)
    channel: ChannelSettings = field(default_factory=ChannelSettings)
    offered_hashes: int = HashProtocol.SHA1 | HashProtocol.SHA256
    auth_name: str = "vpnd"  # CHAP Name in Challenges
    http_timeout: float = 60.0  # the client has this long to send its SSTP_DUPLEX_POST
    ncp_timeout: float = 60.0  # and this long from Call Connected until IP is negotiated
    mppe: MppeSettings = field(default_factory=MppeSettings)  # replaces link.mppe unless deny
    eap_relay: bool = False  # EAP methods run by the backend (RADIUS pass-through)
    eap_tls: EapTlsServerSettings | None = None  # local EAP-TLS (client certificates)


@dataclass(frozen=True, slots=True)
class ClientSessionSettings:
    host: str  # Host header (the name dialled)
    username: str
    password: str
    link: LinkSettings = field(default_factory=LinkSettings)
    channel: ChannelSettings = field(default_factory=ChannelSettings)
    http_timeout: float = 60.0  # MS-SSTP §4.1: wait this long for the HTTP answer
    mppe: MppeSettings = field(default_factory=MppeSettings)  # replaces link.mppe unless deny
    eap_ca: bytes | None = None  # PEM the EAP server's certificate must chain to; None: no PEAP/TLS
    eap_certificate: bytes | None = None  # PEM certificate (chain) and key for EAP-TLS
    eap_key: bytes | None = None


def _link_settings(link: LinkSettings, mppe: MppeSettings) -> LinkSettings:
    return link if mppe.policy is MppePolicy.DENY else replace(link, mppe=mppe)


# ---- the shared middle --------------------------------------------------------------------------


class _Session:
    """What both roles share once HTTP is done: channel ⇄ link plumbing and IP gating."""

    def __init__(self, link: PppLink) -> None:
        self.link = link
        self.channel: SstpServerChannel | SstpClientChannel | None = None
        self.closed = False
        self.close_reason: str | None = None
        self.username: str | None = None
        self._events: Fifo[SessionEvent] = Fifo()
        self._out: list[bytes] = []
        self._call_connected = False
        self._ipv4: Ipv4Opened | None = None
        self._ipv6: Ipv6Opened | None = None
        self._ipv4_announced = False
        self._ipv6_announced = False
        self._reason: str | None = None
        self._by_peer = False
        self._http_deadline: float | None = None
        self._ncp_timeout: float | None = None  # set by a role that bounds the IP negotiation
        self._ncp_deadline: float | None = None
        # How IP travels: "plain" (channel fast path), "mppe" (00FD frames), "pending" (not yet).
        self._mppe_wanted = link.settings.mppe.policy is not MppePolicy.DENY
        self._ip_mode = "pending" if self._mppe_wanted else "plain"
        self._ipv4_open = False
        self._ipv6_open = False
        self._mppe_in: list[memoryview] = []
        self.mppe_rx_packets = 0
        self.mppe_rx_bytes = 0
        self.mppe_tx_packets = 0
        self.mppe_tx_bytes = 0
        self.mppe_dropped_rx = 0  # 00FD frames that did not decrypt to IP, or arrived while IP was shut
        self.mppe_dropped_tx = 0  # packets refused while MPPE is pending or too big to encrypt

    # -- runtime API -------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        if self.channel is not None:
            data = self.channel.data_to_send()
            if data:
                self._out.append(data)
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def take_ip_packets(self) -> list[memoryview]:
        """IP packets received (IPv4 and IPv6); views valid until the next ``receive_data``."""
        packets = self.channel.take_ip_packets() if self.channel is not None else []
        if self._mppe_in:
            packets.extend(self._mppe_in)
            self._mppe_in = []
        return packets

    def send_ip_packets(self, packets: Sequence[bytes | memoryview], ipv6: bool = False) -> int:
        """Queue IP packets for the peer; returns how many were accepted (the rest are counted)."""
        if self.channel is None:
            return 0
        if self._ip_mode == "plain":
            return self.channel.send_ip_packets(packets, ipv6)
        cipher = self.link.mppe
        gate_open = self._ipv6_open if ipv6 else self._ipv4_open
        if self._ip_mode != "mppe" or cipher is None or not gate_open or not self._call_connected:
            self.mppe_dropped_tx += len(packets)
            return 0
        protocol = PROTO_IPV6 if ipv6 else PROTO_IPV4
        sent = 0
        for packet in packets:
            if not 0 < len(packet) <= MAX_PLAIN_PAYLOAD:
                self.mppe_dropped_tx += 1
                continue
            frame = encode_frame(PROTO_COMPRESSED, cipher.encryptor.encrypt(protocol, packet))
            if not self.channel.send_ppp_frame(frame):
                self.mppe_dropped_tx += 1
                continue
            sent += 1
            self.mppe_tx_bytes += len(packet)
        self.mppe_tx_packets += sent
        return sent

    def get_timer(self) -> float | None:
        deadlines = [self._http_deadline, self._ncp_deadline, self.link.get_timer()]
        if self.channel is not None:
            deadlines.append(self.channel.get_timer())
        present = [d for d in deadlines if d is not None]
        return min(present) if present and not self.closed else None

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        if self._http_deadline is not None and now >= self._http_deadline:
            self._http_deadline = None
            self._http_timed_out(now)
            return
        if self._ncp_deadline is not None and now >= self._ncp_deadline:
            self._ncp_deadline = None
            limit = self._ncp_timeout or 0.0
            self._events.append(NegotiationTimedOut("ncp", limit))
            self.close(now, f"negotiation timeout: no IP negotiated within {limit:g} s of Call Connected")
            return
        if self.channel is not None:
            deadline = self.channel.get_timer()
            if deadline is not None and deadline <= now:
                self.channel.handle_timer(now)
        deadline = self.link.get_timer()
        if deadline is not None and deadline <= now:
            self.link.handle_timer(now)
        self._pump(now)

    def close(self, now: float, reason: str) -> None:
        """End the session from our side: PPP Terminate, then SSTP Call Disconnect."""
        if self.closed:
            return
        self._note_reason(reason, by_peer=False)
        if self.channel is None:
            self._finish()
            return
        if self.link.terminated or not self._link_started():
            self.channel.disconnect(now)
        else:
            self.link.close(now, reason)
        self._pump(now)

    @property
    def end_reason(self) -> str | None:
        """Why the session is ending, once a first cause is known (before SessionClosed)."""
        return self._reason

    @property
    def rx_bytes(self) -> int:
        return (self.channel.rx_bytes if self.channel is not None else 0) + self.mppe_rx_bytes

    @property
    def tx_bytes(self) -> int:
        return (self.channel.tx_bytes if self.channel is not None else 0) + self.mppe_tx_bytes

    @property
    def rx_packets(self) -> int:
        return (self.channel.rx_packets if self.channel is not None else 0) + self.mppe_rx_packets

    @property
    def tx_packets(self) -> int:
        return (self.channel.tx_packets if self.channel is not None else 0) + self.mppe_tx_packets

    # -- plumbing ----------------------------------------------------------------------------------

    def _start_channel(self, channel: SstpServerChannel | SstpClientChannel, remainder: bytes,
                       now: float) -> None:
        """HTTP is done: SSTP takes over, with any bytes that came pipelined behind the head."""
        self.channel = channel
        channel.start(now)
        if remainder:
            channel.receive_data(remainder, now)
        self._pump(now)

    def _link_started(self) -> bool:
        return self.link.phase.value != "dead"

    def _http_timed_out(self, now: float) -> None:
        raise NotImplementedError  # each role says what waiting for HTTP means

    def _note_reason(self, reason: str, *, by_peer: bool) -> None:
        if self._reason is None:
            self._reason = reason
            self._by_peer = by_peer

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = self._reason or "closed"
        self._events.append(SessionClosed(self.close_reason, self._by_peer))

    def _pump(self, now: float) -> None:
        """Move frames and events between channel and link until nothing moves."""
        channel = self.channel
        if channel is None:
            return
        moved = True
        while moved and not self.closed:
            moved = False
            # Events first: a Connect Ack and the peer's first LCP frame can arrive in one read,
            # and the link must be open before that frame reaches it.
            while (channel_event := channel.next_event()) is not None:
                moved = True
                self._on_channel_event(channel_event, now)
            for frame in channel.take_ppp_control_frames():
                moved = True
                if not self._receive_mppe_frame(frame):
                    self.link.receive_frame(frame, now)
                    # A CCP Ack and the first 00FD frame can share a read: let MPPE open in between.
                    while (link_event := self.link.next_event()) is not None:
                        self._on_link_event(link_event, now)
            while (link_event := self.link.next_event()) is not None:
                moved = True
                self._on_link_event(link_event, now)
            for frame in self.link.frames_to_send():
                moved = True
                channel.send_ppp_frame(frame)
        self._announce_ip()

    def _receive_mppe_frame(self, frame: bytes) -> bool:
        """Decrypt a 00FD frame into ``_mppe_in``; False when the frame is not 00FD (for the link)."""
        try:
            protocol, info = decode_frame(frame)
        except ProtocolError:
            return False
        if protocol != PROTO_COMPRESSED:
            return False
        cipher = self.link.mppe
        if cipher is None or self._ip_mode != "mppe":
            self.mppe_dropped_rx += 1
            return True
        try:
            inner, payload = cipher.decryptor.decrypt(info)
        except ProtocolError:
            self.mppe_dropped_rx += 1  # RFC 3078: undecryptable packets are discarded
            return True
        if not payload or not (self._ipv4_open if inner == PROTO_IPV4 else self._ipv6_open):
            self.mppe_dropped_rx += 1
            return True
        self._mppe_in.append(memoryview(payload))
        self.mppe_rx_packets += 1
        self.mppe_rx_bytes += len(payload)
        return True

    def _update_ip_gates(self) -> None:
        """The channel's fast path carries plain IP only while IP goes in the clear."""
        if self.channel is None:
            return
        plain = self._ip_mode == "plain"
        self.channel.ipv4_open = plain and self._ipv4_open
        self.channel.ipv6_open = plain and self._ipv6_open

    def _on_channel_event(self, event: object, now: float) -> None:
        match event:
            case ConnectRequestAccepted() | ConnectAckReceived():
                self.link.open(now)
            case ConnectRequestRejected(problems=problems):
                self._events.append(Notice(f"SSTP Connect Request refused with a NAK ({len(problems)} "
                                           "problem(s)); the client may retry"))
            case ConnectNakReceived(attempt=attempt):
                self._events.append(Notice(f"server refused the SSTP Connect Request (attempt {attempt})"))
            case CallConnected(hash_protocol=hash_protocol):
                self._call_connected = True
                self._events.append(BindingVerified(hash_protocol))
                if self._ncp_timeout is not None:
                    self._ncp_deadline = now + self._ncp_timeout
            case BindingRefused(failure=failure, cause=cause):
                self._events.append(BindingFailed(failure, cause))
            case ChannelAborted(status=status, cause=cause, by_peer=by_peer):
                if status == Status.NEGOTIATION_TIMEOUT and not by_peer:
                    self._events.append(NegotiationTimedOut(self._negotiation_phase(),
                                                            self.channel_negotiation_timeout))
                self._note_reason(cause, by_peer=by_peer)
                self.link.lower_layer_down(now, cause)
            case ChannelDisconnected(by_peer=by_peer):
                self._note_reason("peer sent SSTP Call Disconnect" if by_peer else "call disconnected",
                                  by_peer=by_peer)
                self.link.lower_layer_down(now, "SSTP call disconnected")
            case ChannelClosed(reason=reason):
                self._note_reason(reason, by_peer=False)
                self.link.lower_layer_down(now, reason)
                self._finish()

    def _on_link_event(self, event: object, now: float) -> None:
        channel = self.channel
        assert channel is not None
        match event:
            case AuthSucceeded(username=username, keys=keys):
                self.username = username
                self._events.append(event)
                self._auth_succeeded(hlak_from_keys(keys, is_server=self.link.role == "server"), now)
            case AuthRequested(request=request):
                self.username = request.username
                self._events.append(event)
            case AuthFailed(username=username, reason=reason):
                self.username = username or self.username
                self._note_reason(f"authentication failed: {reason}", by_peer=False)
                self._events.append(event)
            case Ipv4Opened():
                self._ipv4 = event
                self._ipv4_open = True
                self._update_ip_gates()
            case Ipv6Opened():
                self._ipv6 = event
                self._ipv6_open = True
                self._update_ip_gates()
            case Ipv4Closed(reason=reason) | Ipv6Closed(reason=reason):
                if isinstance(event, Ipv4Closed):
                    self._ipv4_open = False
                else:
                    self._ipv6_open = False
                self._update_ip_gates()
                self._events.append(Notice(f"{'IPCP' if isinstance(event, Ipv4Closed) else 'IPV6CP'} "
                                           f"closed: {reason}"))
            case LinkDown(reason=reason):
                self._note_reason(reason, by_peer="peer" in reason)
                if self.link.lcp.echo_failure_reason:
                    # The peer stopped answering LCP echoes: waiting for a Terminate-Ack and a
                    # Disconnect Ack would only run into timeouts. Send the Terminate-Request as
                    # a courtesy and drop, as SSTP does on hello failure.
                    for frame in self.link.frames_to_send():
                        channel.send_ppp_frame(frame)
                    self.link.lower_layer_down(now, reason)
                    channel.drop(reason)
            case LinkTerminated(reason=reason):
                self._note_reason(reason, by_peer=False)
                # The link's last frames (a Terminate-Ack for the peer's Terminate-Request) must
                # leave before Call Disconnect: afterwards the channel refuses PPP frames.
                for frame in self.link.frames_to_send():
                    channel.send_ppp_frame(frame)
                channel.disconnect(now)
            case MppeOpened(send_key_bits=send_bits, recv_key_bits=recv_bits):
                self._ip_mode = "mppe"
                self._update_ip_gates()
                self._events.append(Notice(f"MPPE on (stateless): {send_bits}-bit keys to the peer, "
                                           f"{recv_bits}-bit from it"))
            case MppeClosed(reason=reason):
                self._ip_mode = "pending"
                self._update_ip_gates()
                self._events.append(Notice(f"MPPE off, IP held until it is renegotiated: {reason}"))
            case MppeDeclined(reason=reason):
                self._ip_mode = "plain"
                self._update_ip_gates()
                self._events.append(Notice(f"MPPE not used, IP goes in the clear: {reason}"))
            case LinkEstablished():
                if self._mppe_wanted:
                    self._ip_mode = "pending"  # (re)authentication: MPPE is negotiated afresh
                    self._update_ip_gates()
                self._events.append(event)
            case Ipv4AddressNeeded() | PeerMessageReceived():
                self._events.append(event)

    def _auth_succeeded(self, hlak: bytes, now: float) -> None:
        raise NotImplementedError

    @property
    def channel_negotiation_timeout(self) -> float:
        return self.channel.settings.negotiation_timeout if self.channel is not None else 0.0

    def _negotiation_phase(self) -> str:
        """Where a channel negotiation timeout struck, in NegotiationTimedOut's words."""
        if not self._link_started():
            return "sstp-connect"
        return {Phase.ESTABLISH: "lcp", Phase.AUTHENTICATE: "authentication"}.get(self.link.phase,
                                                                                   "call-connected")

    def _announce_ip(self) -> None:
        if not self._call_connected or self.closed or self._ip_mode == "pending":
            return
        if self._ipv4 is not None or self._ipv6 is not None:
            self._ncp_deadline = None
        if self._ipv4 is not None and not self._ipv4_announced:
            self._ipv4_announced = True
            self._events.append(Ipv4Up(self._ipv4.local, self._ipv4.peer, self._ipv4.dns))
        if self._ipv6 is not None and not self._ipv6_announced:
            self._ipv6_announced = True
            self._events.append(Ipv6Up(self._ipv6.local_interface_id, self._ipv6.peer_interface_id))


# ---- server role --------------------------------------------------------------------------------


class ServerSession(_Session):
    """The concentrator's side of one connection, from the first HTTP byte to the last."""

    def __init__(
        self,
        settings: ServerSessionSettings,
        now: float,
        *,
        now_wallclock: float | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.settings = settings
        self._random_bytes = random_bytes
        lcp = settings.link.lcp
        if not lcp.auth_methods:
            raise ValueError("the server needs at least one authentication method")
        # Checked here, not when the channel is built after HTTP: bad settings must not surface as
        # an exception out of receive_data (peer input).
        if not any(settings.offered_hashes & proto for proto in settings.cert_hashes):
            raise ValueError("no certificate hash for any offered hash protocol")

        def server_auth(method: AuthMethod) -> ServerAuth:
            return make_server_auth(method, name=settings.auth_name, random_bytes=random_bytes,
                                    eap_relay=settings.eap_relay, eap_tls=settings.eap_tls)

        link = _link_settings(settings.link, settings.mppe)
        super().__init__(PppLink("server", link, server_auth, random_bytes))
        self.http = HttpServerHandshake(settings.http, now_wallclock)
        self._now_wallclock = now_wallclock
        self._http_deadline = now + settings.http_timeout
        self._ncp_timeout = settings.ncp_timeout

    def receive_data(self, data: bytes | memoryview, now: float) -> None:
        if self.closed:
            return
        if self.channel is None:
            self._receive_http(bytes(data), now)
            return
        self.channel.receive_data(data, now)
        self._pump(now)

    def decide(self, decision: AuthDecision, now: float, mppe: MppeSettings | None = None) -> None:
        """Answer an ``AuthRequested`` event (from a local table, RADIUS, ...); ``mppe``, when
        given, is this session's MPPE policy instead of the service's (RADIUS can say so)."""
        if self.closed:
            return
        if mppe is not None and decision.accepted:
            self._mppe_wanted = mppe.policy is not MppePolicy.DENY
            self._ip_mode = "pending" if self._mppe_wanted else "plain"
            self._update_ip_gates()
        self.link.decide(decision, now, mppe)
        self._pump(now)

    def assign_ipv4(self, settings: Ipv4Settings, now: float) -> None:
        """Answer ``Ipv4AddressNeeded``: the addresses IPAM chose for this session."""
        if not self.closed:
            self.link.assign_ipv4(settings, now)
            self._pump(now)

    def _receive_http(self, data: bytes, now: float) -> None:
        http = self.http
        http.receive_data(data, self._now_wallclock)
        answer = http.data_to_send()
        if answer:
            self._out.append(answer)
        if http.state is HandshakeState.REJECTED:
            self._http_deadline = None
            self._events.append(HttpRefused(http.status_code, http.error or "HTTP request refused",
                                            wrong_host=http.wrong_host))
            self._note_reason(f"HTTP: {http.error or 'request refused'}", by_peer=False)
            self._finish()
        elif http.state is HandshakeState.ACCEPTED:
            self._http_deadline = None
            request = http.request
            self._events.append(HttpAccepted(request.host if request else None,
                                             request.correlation_id if request else None))
            self._start_channel(SstpServerChannel(
                cert_hashes=dict(self.settings.cert_hashes),
                offered_hashes=self.settings.offered_hashes,
                random_bytes=self._random_bytes,
                settings=self.settings.channel,
            ), http.remainder, now)

    def _http_timed_out(self, now: float) -> None:
        self._events.append(NegotiationTimedOut("http", self.settings.http_timeout))
        self._note_reason(f"no SSTP_DUPLEX_POST within {self.settings.http_timeout:g} s", by_peer=False)
        self._finish()

    def _auth_succeeded(self, hlak: bytes, now: float) -> None:
        assert isinstance(self.channel, SstpServerChannel)
        self.channel.set_hlak(hlak, now)


# ---- client role --------------------------------------------------------------------------------


class ClientSession(_Session):
    """Our SSTP client's side: dials, authenticates, binds and carries IP."""

    def __init__(
        self,
        settings: ClientSessionSettings,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.settings = settings
        self._random_bytes = random_bytes

        def client_auth(method: AuthMethod) -> ClientAuth:
            return make_client_auth(method, username=settings.username, password=settings.password,
                                    random_bytes=random_bytes, eap_ca=settings.eap_ca,
                                    eap_certificate=settings.eap_certificate, eap_key=settings.eap_key)

        link = _link_settings(settings.link, settings.mppe)
        super().__init__(PppLink("client", link, client_auth, random_bytes))
        self.http = HttpClientHandshake(settings.host, random_bytes=random_bytes)
        self.server_cert_hashes: dict[HashProtocol, bytes] = {}

    def start(self, cert_hashes: Mapping[HashProtocol, bytes], now: float) -> None:
        """TLS is up: ``cert_hashes`` of the certificate the server presented. Sends the request."""
        self.server_cert_hashes = dict(cert_hashes)
        self._out.append(self.http.request_bytes())
        self._http_deadline = now + self.settings.http_timeout

    def receive_data(self, data: bytes | memoryview, now: float) -> None:
        if self.closed:
            return
        if self.channel is None:
            self._receive_http(bytes(data), now)
            return
        self.channel.receive_data(data, now)
        self._pump(now)

    def _receive_http(self, data: bytes, now: float) -> None:
        http = self.http
        http.receive_data(data)
        if http.state is HandshakeState.REJECTED:
            self._http_deadline = None
            self._events.append(HttpRefused(http.status_code, http.error or "HTTP answer refused"))
            self._note_reason(f"HTTP: {http.error or 'answer refused'}", by_peer=True)
            self._finish()
        elif http.state is HandshakeState.ACCEPTED:
            self._http_deadline = None
            self._events.append(HttpAccepted(self.settings.host, None))
            self._start_channel(SstpClientChannel(cert_hashes=self.server_cert_hashes,
                                                  settings=self.settings.channel), http.remainder, now)

    def _http_timed_out(self, now: float) -> None:
        self._note_reason(f"no HTTP answer within {self.settings.http_timeout:g} s", by_peer=False)
        self._finish()

    def _auth_succeeded(self, hlak: bytes, now: float) -> None:
        assert isinstance(self.channel, SstpClientChannel)
        # Windows sends Call Connected right after authentication, before IPCP.
        self.channel.send_call_connected(hlak, now)
