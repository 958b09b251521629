"""One PPP link over SSTP, both roles: LCP → authentication → IPCP/IPV6CP/CCP (RFC 1661 §3).

Sans-I/O like the rest of the core: the runtime feeds PPP control frames (and stray non-IP data
frames) with ``receive_frame``, sends what ``frames_to_send`` returns, reads ``next_event`` and
drives ``get_timer``/``handle_timer``. IP data does not pass through here (fast path).

Phases: Dead → Establish (LCP) → Authenticate → Network → Terminate → Dead.
* Non-LCP packets before LCP is Opened are silently discarded (RFC 1661 §3.4), so the CHAP
  Challenge only leaves once LCP is Opened in both directions (pppd drops it otherwise).
* During Authenticate only LCP and the negotiated authentication protocol are processed.
* Unknown protocols, and IPV6CP/CCP/IPv6 when disabled, get an LCP Protocol-Reject (Windows
  carries on after IPV6CP is rejected).
* MPPE (``LinkSettings.mppe``): with ``prefer``/``require`` and MS-CHAP keys, CCP asks for
  option 18; the outcome is one of ``MppeOpened`` (``PppLink.mppe`` then holds the cipher the
  session uses for 00FD frames), ``MppeDeclined`` (prefer: carry on in the clear) or, with
  ``require``, the end of the link. 00FD frames themselves never pass through here.
* IPV6CP identifiers (``LinkSettings.ipv6_*``, ``set_ipv6_peer_facts``): ours is fixed or
  random; the peer's is taken as it asks, or steered toward a fixed, Calling-Station-Id, IPv4 or
  random identifier, or the RADIUS Framed-Interface-Id (see ``vpnd.proto.ppp.ipv6cp``). With
  ``ipv4-addr`` the peer's IPV6CP requests wait, like IPCP, for ``assign_ipv4``.
* Server role: IPCP needs the peer address from IPAM. Either ``LinkSettings.ipv4`` carries it,
  or the link emits ``Ipv4AddressNeeded`` on entering Network and holds IPCP packets until
  ``assign_ipv4`` is called — the peer is never Nak'd with a made-up address.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Literal, cast

from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthFailed,
    AuthMethod,
    AuthRequested,
    AuthSucceeded,
    ClientAuth,
    MppeKeys,
    ServerAuth,
)
from vpnd.proto.ppp.ccp import Ccp, CcpPolicy, reject_every_option
from vpnd.proto.ppp.frames import (
    MAX_INFORMATION,
    PROTO_CCP,
    PROTO_CHAP,
    PROTO_COMPRESSED,
    PROTO_EAP,
    PROTO_IPCP,
    PROTO_IPV4,
    PROTO_IPV6,
    PROTO_IPV6CP,
    PROTO_LCP,
    PROTO_PAP,
    decode_frame,
    encode_frame,
    protocol_name,
)
from vpnd.proto.ppp.fsm import FsmTimers, LayerSignal, OptionFsm, Signal, State
from vpnd.proto.ppp.ipcp import IpcpClient, IpcpServer, Ipv4Settings
from vpnd.proto.ppp.ipv6cp import (
    Ipv6cp,
    PeerIdSource,
    PeerIdWish,
    PeerInterfaceIdPolicy,
    interface_id_from_calling_sid,
    interface_id_from_ipv4,
    random_interface_id,
)
from vpnd.proto.ppp.lcp import Lcp, LcpSettings, PeerMessage
from vpnd.proto.ppp.mppe import MppeCipher, MppeNegotiation, MppePolicy, MppeSettings, strength_of

__all__ = [
    "AuthFailed",
    "AuthRequested",
    "AuthSucceeded",
    "Ipv4AddressNeeded",
    "Ipv4Closed",
    "Ipv4Opened",
    "Ipv6Closed",
    "Ipv6Opened",
    "LinkDown",
    "LinkEstablished",
    "LinkEvent",
    "LinkSettings",
    "LinkTerminated",
    "MppeClosed",
    "MppeDeclined",
    "MppeOpened",
    "PeerMessageReceived",
    "Phase",
    "PppLink",
    "Role",
]

Role = Literal["server", "client"]
ServerAuthFactory = Callable[[AuthMethod], ServerAuth]
ClientAuthFactory = Callable[[AuthMethod], ClientAuth]

_AUTH_PROTOCOLS = (PROTO_PAP, PROTO_CHAP, PROTO_EAP)


class Phase(enum.Enum):
    DEAD = "dead"
    ESTABLISH = "establish"
    AUTHENTICATE = "authenticate"
    NETWORK = "network"
    TERMINATE = "terminate"


@dataclass(frozen=True, slots=True)
class LinkSettings:
    lcp: LcpSettings = field(default_factory=LcpSettings)
    ipv4_enabled: bool = True
    # Server: the session's addresses when known up front; else assign_ipv4() after auth.
    ipv4: Ipv4Settings | None = None
    ipv6_enabled: bool = False
    # ppp-options ipv6 allow: IPV6CP waits for the peer to ask (passive); require: the link ends
    # when IPV6CP does not come up (prefer is enabled, neither of these).
    ipv6_passive: bool = False
    ipv6_required: bool = False
    ipv6_interface_id: bytes | None = None  # ipv6-interface-id x:x:x:x; None: random
    # ipv6-peer-interface-id; None: no preference, the peer's own identifier is taken.
    ipv6_peer_interface_id: PeerInterfaceIdPolicy | None = None
    # ipv6-accept-peer-interface-id: with a peer policy, still take a usable identifier the peer chose.
    ipv6_accept_peer_interface_id: bool = False
    ccp_policy: CcpPolicy | None = None  # None: CCP is Protocol-Rejected (unless MPPE is wanted)
    mppe: MppeSettings = field(default_factory=MppeSettings)
    client_request_dns: bool = True
    client_request_wins: bool = False
    ncp_timers: FsmTimers = field(default_factory=FsmTimers)
    held_ipcp_packets: int = 8  # IPCP packets kept while waiting for IPAM


# ---- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkEstablished:
    """LCP is Opened in both directions."""

    auth_method: AuthMethod | None
    peer_mru: int  # what the peer accepts (we send at most min(peer_mru, 4087))
    mru: int  # what the peer agreed to send us


@dataclass(frozen=True, slots=True)
class Ipv4AddressNeeded:
    """Server role: answer with ``PppLink.assign_ipv4`` (IPCP waits until then)."""


@dataclass(frozen=True, slots=True)
class Ipv4Opened:
    local: IPv4Address
    peer: IPv4Address | None  # client role: None when the server did not name its address
    dns: tuple[IPv4Address, ...]


@dataclass(frozen=True, slots=True)
class Ipv4Closed:
    reason: str


@dataclass(frozen=True, slots=True)
class Ipv6Opened:
    local_interface_id: bytes
    peer_interface_id: bytes | None


@dataclass(frozen=True, slots=True)
class Ipv6Closed:
    reason: str


@dataclass(frozen=True, slots=True)
class MppeOpened:
    """CCP opened with MPPE both ways: IP now travels as encrypted 00FD frames (``PppLink.mppe``)."""

    send_key_bits: int
    recv_key_bits: int


@dataclass(frozen=True, slots=True)
class MppeClosed:
    """MPPE stopped (CCP renegotiates or the network phase ends); IP waits until it reopens."""

    reason: str


@dataclass(frozen=True, slots=True)
class MppeDeclined:
    """Policy ``prefer``: MPPE is not available on this link; IP goes in the clear."""

    reason: str


@dataclass(frozen=True, slots=True)
class PeerMessageReceived:
    """LCP Identification (12) or Time-Remaining (13) from the peer, for the log."""

    code: int
    text: str
    seconds_remaining: int | None = None


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The link stopped carrying traffic; emitted once, with the first reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class LinkTerminated:
    """LCP finished: the link is Dead and the transport can be torn down."""

    reason: str


LinkEvent = (
    LinkEstablished
    | AuthRequested
    | AuthSucceeded
    | AuthFailed
    | Ipv4AddressNeeded
    | Ipv4Opened
    | Ipv4Closed
    | Ipv6Opened
    | Ipv6Closed
    | MppeOpened
    | MppeClosed
    | MppeDeclined
    | PeerMessageReceived
    | LinkDown
    | LinkTerminated
)


class PppLink:
    def __init__(
        self,
        role: Role,
        settings: LinkSettings | None = None,
        auth: ServerAuthFactory | ClientAuthFactory | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        self.role: Role = role
        self.settings = settings or LinkSettings()
        self._auth_factory = auth
        self._random_bytes = random_bytes
        self.lcp = Lcp(role == "server", self.settings.lcp, random_bytes)
        self.phase = Phase.DEAD
        self.auth: ServerAuth | ClientAuth | None = None
        self.auth_method: AuthMethod | None = None
        self.ipcp: IpcpServer | IpcpClient | None = None
        self.ipv6cp: Ipv6cp | None = None
        self.ccp: Ccp | None = None
        self.mppe: MppeCipher | None = None  # set while MPPE runs; the session encrypts with it
        self._mppe_keys: MppeKeys | None = None
        self._ipv4 = self.settings.ipv4
        self._calling_station_id: str | None = None
        self._framed_interface_id: bytes | None = None
        self._random_peer_interface_id: bytes | None = None  # one per link, for policy random
        self._held_ipcp: Fifo[bytes] = Fifo(maxlen=max(self.settings.held_ipcp_packets, 1))
        # IPV6CP packets kept while ipv6-peer-interface-id ipv4-addr waits for the same address.
        self._held_ipv6cp: Fifo[bytes] = Fifo(maxlen=max(self.settings.held_ipcp_packets, 1))
        self._waiting_for_address = False
        self._out: list[bytes] = []
        self._events: Fifo[LinkEvent] = Fifo()
        self._started = False
        self._down_reported = False
        self._terminated = False

    # ---- runtime API ------------------------------------------------------------------------

    @property
    def send_mtu(self) -> int:
        """Largest PPP information field we may send: the peer's MRU, capped for SSTP."""
        return min(self.lcp.peer_mru, MAX_INFORMATION)

    @property
    def terminated(self) -> bool:
        return self._terminated

    def open(self, now: float) -> None:
        """The lower layer (SSTP) is ready for PPP: start LCP."""
        if self._started:
            return
        self._started = True
        self.phase = Phase.ESTABLISH
        self.lcp.open(now)
        self.lcp.up(now)
        self._pump(now)

    def close(self, now: float, reason: str) -> None:
        """Terminate the link (LCP Terminate-Request); LinkTerminated follows."""
        if self._terminated:
            return
        self._report_down(reason)
        if not self._started:
            self._finish(reason)
            return
        self.phase = Phase.TERMINATE
        self._stop_network(now, reason)
        self.lcp.close(now, reason)
        if self.lcp.state in (State.CLOSED, State.STOPPED, State.INITIAL):
            self._finish(reason)
        self._pump(now)

    def lower_layer_down(self, now: float, reason: str = "lower layer down") -> None:
        """The transport is gone: no more frames either way."""
        if self._terminated:
            return
        self._report_down(reason)
        self._stop_network(now, reason)
        self.lcp.down(now)
        self._pump(now)
        self._out.clear()
        self._finish(reason)

    def decide(self, decision: AuthDecision, now: float, mppe: MppeSettings | None = None) -> None:
        """Server role: the verifier's answer to an AuthRequested event. ``mppe`` replaces the MPPE
        settings for this link (a RADIUS MS-MPPE-Encryption-Policy/-Types); CCP has not started
        yet, since it starts only once authentication is through."""
        if self.role != "server" or self.auth is None or self._terminated:
            return
        if mppe is not None and decision.accepted:
            self.settings = replace(self.settings, mppe=mppe)
        cast(ServerAuth, self.auth).decide(decision, now)
        self._pump(now)

    def assign_ipv4(self, settings: Ipv4Settings, now: float) -> None:
        """Server role: the peer's address from IPAM; starts IPCP if it was waiting."""
        self._ipv4 = settings
        if self._waiting_for_address and self.phase is Phase.NETWORK:
            self._waiting_for_address = False
            self.ipcp = IpcpServer(settings, self.settings.ncp_timers)
            self._start_ncp(self.ipcp, now)
            held = list(self._held_ipcp)
            self._held_ipcp.clear()
            for packet in held:
                self.ipcp.receive(packet, now)
            self._release_held_ipv6cp(now)
        self._pump(now)

    def set_ipv6_peer_facts(
        self, *, calling_station_id: str | None = None, framed_interface_id: bytes | None = None,
    ) -> None:
        """What the peer's IPv6 interface identifier is derived from, for this session.

        ``calling_station_id`` feeds the ``calling-sid`` policy. ``framed_interface_id`` (a RADIUS
        Framed-Interface-Id) overrides the policy: the peer is Nak'd toward it even when
        ``ipv6_accept_peer_interface_id`` is set. The IPv4 address for ``ipv4-addr`` comes from
        ``assign_ipv4`` (server) or IPCP (client). IPV6CP reads these when it judges the peer's
        request, so they must be set before the peer's IPV6CP request is fed in (at the latest
        right after ``decide``).
        """
        if calling_station_id is not None:
            self._calling_station_id = calling_station_id
        if framed_interface_id is not None:
            if len(framed_interface_id) != 8 or framed_interface_id == bytes(8):
                raise ValueError("an interface identifier is 8 bytes and not all zero")
            self._framed_interface_id = framed_interface_id

    def receive_frame(self, frame: bytes | bytearray | memoryview, now: float) -> None:
        """One PPP frame from the peer (with or without FF 03). Never raises on bad input."""
        if self._terminated or not self._started:
            return
        try:
            protocol, info = decode_frame(frame)
        except ProtocolError:
            return
        self.lcp.note_activity(now)
        self._dispatch(protocol, info, now)
        self._pump(now)

    def frames_to_send(self) -> list[bytes]:
        """Full PPP frames (FF 03 + protocol + information); drained."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> LinkEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [fsm.get_timer() for fsm in self._fsms()]
        if self.auth is not None:
            deadlines.append(self.auth.get_timer())
        present = [d for d in deadlines if d is not None]
        return min(present) if present and not self._terminated else None

    def handle_timer(self, now: float) -> None:
        if self._terminated:
            return
        for fsm in self._fsms():
            deadline = fsm.get_timer()
            if deadline is not None and deadline <= now:
                fsm.handle_timer(now)
        if self.auth is not None:
            deadline = self.auth.get_timer()
            if deadline is not None and deadline <= now:
                self.auth.handle_timer(now)
        self._pump(now)

    # ---- receive dispatch -------------------------------------------------------------------

    def _dispatch(self, protocol: int, info: memoryview, now: float) -> None:
        if protocol == PROTO_LCP:
            self.lcp.receive(info, now)
            return
        if not self.lcp.is_opened or self.phase in (Phase.ESTABLISH, Phase.TERMINATE):
            return  # RFC 1661 §3.4: non-LCP packets before LCP is Opened are discarded
        if protocol in _AUTH_PROTOCOLS:
            if self.auth is not None and protocol == self.auth.protocol:
                self.auth.receive(bytes(info), now)
            else:
                self.lcp.send_protocol_reject(protocol, info)
            return
        if self.phase is not Phase.NETWORK:
            return  # RFC 1661 §3.5: only LCP and authentication before authentication completes
        if protocol == PROTO_IPCP and self.settings.ipv4_enabled:
            if self.ipcp is not None:
                self.ipcp.receive(info, now)
            elif self._waiting_for_address:
                self._held_ipcp.append(bytes(info))
        elif protocol == PROTO_IPV6CP and self.ipv6cp is not None:
            if self._ipv6cp_waits_for_ipv4():
                self._held_ipv6cp.append(bytes(info))
            else:
                self.ipv6cp.receive(info, now)
        elif protocol == PROTO_CCP and self.ccp is not None:
            self.ccp.receive(info, now)
        elif protocol == PROTO_COMPRESSED and self.ccp is not None:
            pass  # MPPE data is the session's; a stray frame (CCP not open yet) is dropped
        elif protocol == PROTO_IPV4 and self.settings.ipv4_enabled:
            pass  # data belongs to the fast path; a stray frame here is dropped
        elif protocol == PROTO_IPV6 and self.settings.ipv6_enabled:
            pass
        else:
            self.lcp.send_protocol_reject(protocol, info)

    # ---- the pump: move packets out and react to what the layers signalled ----------------------

    def _pump(self, now: float) -> None:
        for _ in range(64):  # bounded: every round consumes queued output/signals
            if not self._pump_once(now):
                return

    def _pump_once(self, now: float) -> bool:
        progressed = False
        progressed |= self._drain(self.lcp, PROTO_LCP)
        while (signal := self.lcp.next_signal()) is not None:
            progressed = True
            self._on_lcp_signal(signal, now)
        while (rejected := self.lcp.next_protocol_reject()) is not None:
            progressed = True
            self._on_protocol_reject(rejected[0], now)
        while (message := self.lcp.next_peer_message()) is not None:
            progressed = True
            self._on_peer_message(message)
        if self.auth is not None:
            auth = self.auth
            for packet in auth.packets_to_send():
                progressed = True
                self._out.append(encode_frame(auth.protocol, packet))
            while (event := auth.next_event()) is not None:
                progressed = True
                self._on_auth_event(event, now)
        for fsm, protocol in self._ncps():
            if fsm is None:
                continue
            progressed |= self._drain(fsm, protocol)
            while (signal := fsm.next_signal()) is not None:
                progressed = True
                self._on_ncp_signal(fsm, signal, now)
        ccp = self.ccp
        if ccp is not None and ccp.mppe is not None and ccp.mppe.failure and self.phase is Phase.NETWORK:
            # require: end the link at once instead of after CCP's own Terminate exchange.
            self.close(now, ccp.mppe.failure)
            progressed = True
        return progressed

    def _drain(self, fsm: OptionFsm, protocol: int) -> bool:
        packets = fsm.packets_to_send()
        if self._terminated:
            return False
        self._out.extend(encode_frame(protocol, packet) for packet in packets)
        return bool(packets)

    def _on_lcp_signal(self, signal: LayerSignal, now: float) -> None:
        if signal.kind is Signal.UP:
            self._on_lcp_up(now)
        elif signal.kind is Signal.DOWN:
            if self.lcp.state in (State.CLOSING, State.STOPPING, State.CLOSED, State.STOPPED):
                self._report_down(signal.reason)
                if not self._terminated:
                    self.phase = Phase.TERMINATE
            elif not self._terminated:
                self.phase = Phase.ESTABLISH  # the peer renegotiates LCP: authenticate again
            self._stop_network(now, signal.reason)
            self.auth = None
        elif signal.kind is Signal.FINISHED:
            reason = self.lcp.close_reason or signal.reason
            self._report_down(reason)
            self._stop_network(now, reason)
            self._finish(reason)

    def _on_lcp_up(self, now: float) -> None:
        for fsm in (self.ipcp, self.ipv6cp, self.ccp):
            if fsm is not None:
                fsm.max_send_size = self.send_mtu
        self.auth_method = self.lcp.auth_method
        self._events.append(LinkEstablished(self.auth_method, self.lcp.peer_mru, self.lcp.our_mru))
        if self.auth_method is None:
            self._enter_network(now)
            return
        if self._auth_factory is None:
            self.close(now, f"no authenticator for {self.auth_method.value}")
            return
        self.phase = Phase.AUTHENTICATE
        self.auth = self._auth_factory(self.auth_method)
        self.auth.start(now)

    def _on_auth_event(self, event: AuthRequested | AuthSucceeded | AuthFailed, now: float) -> None:
        self._events.append(event)
        if isinstance(event, AuthSucceeded):
            self._mppe_keys = event.keys
            if self.phase is Phase.AUTHENTICATE:
                self._enter_network(now)
        elif isinstance(event, AuthFailed):
            self.close(now, f"authentication failed: {event.reason}")

    def _enter_network(self, now: float) -> None:
        mppe_settings = self.settings.mppe
        keys = self._mppe_keys if self.auth_method is not None else None
        if mppe_settings.policy is MppePolicy.REQUIRE and keys is None:
            how = self.auth_method.value if self.auth_method is not None else "no authentication"
            self.close(now, f"MPPE required, but {how} yields no MPPE keys")
            return
        self.phase = Phase.NETWORK
        timers = self.settings.ncp_timers
        if self.settings.ipv4_enabled:
            if self.role == "client":
                self.ipcp = IpcpClient(
                    self.settings.client_request_dns, self.settings.client_request_wins, timers
                )
                self._start_ncp(self.ipcp, now)
            elif self._ipv4 is not None:
                self.ipcp = IpcpServer(self._ipv4, timers)
                self._start_ncp(self.ipcp, now)
            else:
                self._waiting_for_address = True
                self._events.append(Ipv4AddressNeeded())
        if self.settings.ipv6_enabled:
            self.ipv6cp = Ipv6cp(self.settings.ipv6_interface_id, self._random_bytes, timers,
                                 peer_id=self._peer_id_wish)
            if self.settings.ipv6_passive:
                self.ipv6cp.max_send_size = self.send_mtu
                self.ipv6cp.open_passive(now)
            else:
                self._start_ncp(self.ipv6cp, now)
        if mppe_settings.policy is not MppePolicy.DENY and keys is not None:
            policy = self.settings.ccp_policy or reject_every_option
            self.ccp = Ccp(policy, timers, MppeNegotiation(mppe_settings))
            self._start_ncp(self.ccp, now)
            return
        if mppe_settings.policy is MppePolicy.PREFER:
            self._events.append(MppeDeclined("authentication yielded no MPPE keys"))
        if self.settings.ccp_policy is not None:
            self.ccp = Ccp(self.settings.ccp_policy, timers)
            self._start_ncp(self.ccp, now)

    def _ipv6cp_waits_for_ipv4(self) -> bool:
        """Server role, policy ipv4-addr: judge the peer's IPV6CP requests only once IPAM has
        named the IPv4 address the identifier is made of."""
        policy = self.settings.ipv6_peer_interface_id
        return (self._waiting_for_address and self._framed_interface_id is None and policy is not None
                and policy.source is PeerIdSource.IPV4_ADDR)

    def _release_held_ipv6cp(self, now: float) -> None:
        held = list(self._held_ipv6cp)
        self._held_ipv6cp.clear()
        for packet in held:
            if self.ipv6cp is not None:
                self.ipv6cp.receive(packet, now)

    def _peer_id_wish(self) -> PeerIdWish:
        """The peer identifier policy applied to this session's facts. A source whose fact is
        missing (no Calling-Station-Id, no IPv4 address) leaves no preference."""
        if self._framed_interface_id is not None:
            return PeerIdWish(self._framed_interface_id, accept_own=False)
        policy = self.settings.ipv6_peer_interface_id
        if policy is None:
            return PeerIdWish()
        wanted: bytes | None = None
        if policy.source is PeerIdSource.FIXED:
            wanted = policy.fixed
        elif policy.source is PeerIdSource.CALLING_SID and self._calling_station_id:
            wanted = interface_id_from_calling_sid(self._calling_station_id)
        elif policy.source is PeerIdSource.IPV4_ADDR:
            peer_ipv4 = self._ipv4.peer if self._ipv4 is not None else (
                self.ipcp.peer_address if isinstance(self.ipcp, IpcpClient) else None)
            wanted = interface_id_from_ipv4(peer_ipv4) if peer_ipv4 is not None else None
        elif policy.source is PeerIdSource.RANDOM:
            if self._random_peer_interface_id is None:
                local = self.ipv6cp.local_interface_id if self.ipv6cp is not None else bytes(8)
                self._random_peer_interface_id = random_interface_id(self._random_bytes, {local})
            wanted = self._random_peer_interface_id
        return PeerIdWish(wanted, accept_own=self.settings.ipv6_accept_peer_interface_id)

    def _start_ncp(self, fsm: OptionFsm, now: float) -> None:
        fsm.max_send_size = self.send_mtu
        fsm.open(now)
        fsm.up(now)

    def _on_ncp_signal(self, fsm: OptionFsm, signal: LayerSignal, now: float) -> None:
        if isinstance(fsm, Ccp):
            self._on_ccp_signal(fsm, signal, now)
            return
        if signal.kind is Signal.UP:
            if isinstance(fsm, IpcpServer):
                self._events.append(Ipv4Opened(fsm.local_address, fsm.peer_address, fsm.settings.dns))
            elif isinstance(fsm, IpcpClient):
                self._events.append(Ipv4Opened(fsm.local_address, fsm.peer_address, fsm.dns))
            elif isinstance(fsm, Ipv6cp):
                self._events.append(Ipv6Opened(fsm.local_interface_id, fsm.peer_interface_id))
        elif signal.kind is Signal.DOWN:
            if fsm is self.ipcp:
                self._events.append(Ipv4Closed(signal.reason))
            elif fsm is self.ipv6cp:
                self._events.append(Ipv6Closed(signal.reason))
        elif signal.kind is Signal.FINISHED and self.phase is Phase.NETWORK:
            if fsm is self.ipv6cp and self.settings.ipv6_required:
                self.close(now, f"IPv6 required: IPV6CP ended ({signal.reason})")
            elif not self._network_protocols_alive():
                self.close(now, f"no network protocols running ({fsm.name}: {signal.reason})")

    def _on_ccp_signal(self, ccp: Ccp, signal: LayerSignal, now: float) -> None:
        negotiation = ccp.mppe
        if negotiation is None or ccp is not self.ccp:
            return
        required = negotiation.required
        if signal.kind is Signal.UP:
            send_bits, recv_bits = negotiation.send_bits, negotiation.recv_bits
            keys = self._mppe_keys
            if send_bits is not None and recv_bits is not None and keys is not None:
                try:
                    self.mppe = MppeCipher.from_negotiation(keys, send_bits, recv_bits)
                except ValueError:
                    self.mppe = None  # acked bits without a single strength: treated as no MPPE
                else:
                    self._events.append(MppeOpened(strength_of(send_bits) or 0, strength_of(recv_bits) or 0))
                    return
            if send_bits is None and recv_bits is None:
                reason = "the peer does not do MPPE"
            else:
                reason = "MPPE was agreed in one direction only"
            if required:
                self.close(now, f"MPPE required: {reason}")
            else:
                negotiation.asking = False  # decided: FINISHED after this says nothing new
                if send_bits is not None or recv_bits is not None:
                    ccp.close(now, reason)  # a closed CCP means no 00FD frames either way
                self._events.append(MppeDeclined(reason))
        elif signal.kind is Signal.DOWN:
            self._drop_mppe(signal.reason)
        elif signal.kind is Signal.FINISHED and self.phase is Phase.NETWORK:
            reason = negotiation.failure or ccp.close_reason or signal.reason
            if required:
                if not reason.startswith("MPPE"):
                    reason = f"MPPE required: CCP ended ({reason})"
                self.close(now, reason)
            elif negotiation.asking or self.mppe is not None:
                self._drop_mppe(reason)
                self._events.append(MppeDeclined(f"CCP ended: {reason}"))

    def _drop_mppe(self, reason: str) -> None:
        if self.mppe is not None:
            self.mppe = None
            self._events.append(MppeClosed(reason))

    def _network_protocols_alive(self) -> bool:
        if self._waiting_for_address:
            return True
        finished = (State.INITIAL, State.STARTING, State.CLOSED, State.STOPPED)
        return any(fsm is not None and fsm.state not in finished for fsm in (self.ipcp, self.ipv6cp))

    def _on_protocol_reject(self, protocol: int, now: float) -> None:
        for fsm, fsm_protocol in self._ncps():
            if fsm is not None and protocol == fsm_protocol:
                fsm.protocol_rejected(now)
        if protocol == PROTO_IPCP and self._waiting_for_address:
            self._waiting_for_address = False
            self._held_ipcp.clear()
            self._release_held_ipv6cp(now)
        if self.auth is not None and protocol == self.auth.protocol and self.phase is Phase.AUTHENTICATE:
            self.close(now, f"peer rejected the {protocol_name(protocol)} protocol")

    def _on_peer_message(self, message: PeerMessage) -> None:
        self._events.append(PeerMessageReceived(message.code, message.text, message.seconds_remaining))

    def _stop_network(self, now: float, reason: str) -> None:
        """LCP left Opened: every NCP goes down (this-layer-down → Ipv4Closed/Ipv6Closed)."""
        self._waiting_for_address = False
        self._held_ipcp.clear()
        self._held_ipv6cp.clear()
        self._drop_mppe(reason)
        for fsm in (self.ipcp, self.ipv6cp, self.ccp):
            if fsm is None:
                continue
            was_open = fsm.is_opened
            fsm.down(now)
            fsm.packets_to_send()
            while fsm.next_signal() is not None:
                pass
            if was_open:
                if fsm is self.ipcp:
                    self._events.append(Ipv4Closed(reason))
                elif fsm is self.ipv6cp:
                    self._events.append(Ipv6Closed(reason))
        self.ipcp = self.ipv6cp = self.ccp = None

    def _report_down(self, reason: str) -> None:
        if not self._down_reported:
            self._down_reported = True
            self._events.append(LinkDown(reason))

    def _finish(self, reason: str) -> None:
        if self._terminated:
            return
        self._terminated = True
        self.phase = Phase.DEAD
        self.auth = None
        self._events.append(LinkTerminated(reason))

    def _ncps(self) -> list[tuple[OptionFsm | None, int]]:
        return [(self.ipcp, PROTO_IPCP), (self.ipv6cp, PROTO_IPV6CP), (self.ccp, PROTO_CCP)]

    def _fsms(self) -> list[OptionFsm]:
        return [fsm for fsm in (self.lcp, self.ipcp, self.ipv6cp, self.ccp) if fsm is not None]
