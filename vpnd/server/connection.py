"""One client connection: TCP socket ⇄ TLS (MemoryBIO) ⇄ ServerSession ⇄ TUN.

Driven by readiness callbacks on the event loop rather than asyncio streams: one ``recv`` of up
to 256 KiB feeds many TLS records, all decrypted records are handed to the session in one call,
and the IP packets it returns go to the TUN in one batch; the other way, up to 256 packets per
TUN wakeup become one TLS write and one ``send``. Backpressure: while more than
``HIGH_WATER`` bytes of ciphertext wait for the socket, the TUN is not read for this session
(the kernel drops at the TUN queue instead of our memory growing).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Protocol

from vpnd.aaa.accounting import AccountingSession, TerminateCause
from vpnd.aaa.accounting import Counters as UsageCounters
from vpnd.aaa.radius import FramedRoute
from vpnd.aaa.ratelimit import RateLimit
from vpnd.ipam.pool import Ipam, IpamError, Lease
from vpnd.ipam.prefix_pool import PrefixIpam, PrefixKind, PrefixLease
from vpnd.net.link import IfnameAllocator, NetBackend, NetError
from vpnd.net.tun import TunDevice, open_tun
from vpnd.proto.ipv6.dhcpv6_server import PrefixBound, PrefixUnbound
from vpnd.proto.ppp.auth.types import AuthDecision, AuthRequest
from vpnd.proto.ppp.ipcp import Ipv4Settings
from vpnd.proto.ppp.ipv6cp import link_local_address
from vpnd.proto.session import (
    AuthFailed,
    AuthRequested,
    AuthSucceeded,
    BindingFailed,
    BindingVerified,
    HttpRefused,
    Ipv4AddressNeeded,
    Ipv4Up,
    Ipv6Up,
    LinkEstablished,
    NegotiationTimedOut,
    Notice,
    PeerMessageReceived,
    ServerSession,
    ServerSessionSettings,
    SessionClosed,
)
from vpnd.runtime.deadline import DeadlineTimer
from vpnd.runtime.ipv6_link import Ipv6LinkDriver, Ipv6LinkServices
from vpnd.runtime.session_pump import TUN_BATCH, SessionPump
from vpnd.runtime.tls_stream import PLAINTEXT_BUFFER, TlsStream
from vpnd.server.scripts import Hook, ScriptResult, ScriptRunner, SessionCounters, SessionFacts
from vpnd.server.settings import ServiceSettings, session_mppe
from vpnd.server.tls import refused_server_name

log = logging.getLogger("vpnd.session")



class Counters(Protocol):
    def count(self, name: str, amount: int = 1) -> None: ...


class SessionHost(Protocol):
    """What a connection needs from the daemon that owns it (the daemon is one)."""

    service: ServiceSettings
    ipam: Ipam
    ipam6: PrefixIpam
    server_id: bytes  # 8 stable bytes: the server's DHCPv6 DUID
    ifnames: IfnameAllocator
    net: NetBackend
    scripts: ScriptRunner

    @property
    def stats(self) -> Counters: ...

    def authenticate(self, connection: ServerConnection, request: AuthRequest) -> None: ...
    def refuse(self, cause: str, source: str, message: str, *, level: int = logging.INFO) -> None: ...
    def session_up(self, connection: ServerConnection) -> None: ...
    def rate_limit_for(self, attributes: dict[str, object]) -> RateLimit | None: ...
    def shape(self, ifname: str, rate: RateLimit | None, *, change: bool = False) -> None: ...
    def accounting_start(self, session: AccountingSession) -> None: ...
    def accounting_stop(self, session: AccountingSession, cause: TerminateCause) -> None: ...


@dataclass(slots=True)
class SessionInfo:
    """What op-mode shows about a session."""

    session_id: str
    peer: str
    started: float = field(default_factory=time.time)
    username: str | None = None
    ifname: str | None = None
    address: IPv4Address | None = None
    ipv6_prefix: IPv6Network | None = None
    delegated_prefix: IPv6Network | None = None
    state: str = "starting"
    mtu: int | None = None
    auth_method: str | None = None
    rate_limit: str | None = None
    last_activity: float = field(default_factory=time.monotonic)


# One plaintext buffer and one TUN read buffer serve every connection: the event loop runs one
# callback at a time and each batch is consumed (written to the TUN, or copied into TLS records)
# before the callback returns, so idle sessions cost no buffer memory.
_PLAIN = bytearray(PLAINTEXT_BUFFER)
_TUN_BUFFER = bytearray(TUN_BATCH * 2048)


class ServerConnection(SessionPump[ServerSession]):
    def __init__(
        self,
        daemon: SessionHost,
        sock: socket.socket,
        *,
        peer: tuple[str, int],
        tls_context: ssl.SSLContext | None,
        settings: ServerSessionSettings,
        session_id: str,
    ) -> None:
        # ``peer`` is the client: the socket's peer, or the one a PROXY protocol header named.
        # Without ``tls_context`` a balancer in front terminated TLS and the bytes are plain.
        self.daemon = daemon
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.info = SessionInfo(session_id, f"{peer[0]}:{peer[1]}")
        self.peer_ip = peer[0]
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = TlsStream(sock, tls_context, server_side=True, plaintext=_PLAIN, peer="client",
                                on_plaintext=self._feed, on_read_done=self._after_session,
                                on_lost=self._lost, on_backpressure=self._on_backpressure,
                                on_established=self._on_tls_established,
                                on_handshake_failed=self._on_handshake_failed)
        self.session = ServerSession(settings, self.loop.time(), now_wallclock=time.time())
        self.tun: TunDevice | None = None
        self.lease: Lease | None = None
        self._timer = DeadlineTimer(self.loop, self._on_timer)
        self._auth_attributes: dict[str, object] = {}
        self._requested_cause: TerminateCause | None = None  # set by whoever asked for the end
        self._session_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_timeout: int | None = None
        self._accounting: AccountingSession | None = None
        self.rate: RateLimit | None = None
        self._shaped = False
        self._own_source: bytes | None = None  # the client's address, packed: the only source allowed
        self._ipv6: Ipv6LinkDriver | None = None
        self.prefix_leases: list[PrefixLease] = []
        # The IPv6 sources the client may use, as (network >> shift, shift) over 128-bit integers:
        # its link-local address, its prefix and its delegated prefix.
        self._ipv6_sources: list[tuple[int, int]] = []
        self.admitted_user: str | None = None  # the user name an accepted authentication was for
        self.refused = False  # a refusal was counted and logged: the end of it is not logged again
        self.established = False  # a network protocol came up (the set-up succeeded)
        self.setup_failure: str | None = None  # why a session that never came up ended: the first cause
        self.closed = False
        self.quiet = False  # a health check: its end is logged only at debug level, unless it logged in
        self.on_closed: Callable[[ServerConnection], None] | None = None
        self.stream.start()
        self._schedule_timer()

    # ---- log -------------------------------------------------------------------------------

    def _label(self) -> str:
        return f"{self.info.ifname or '-'} {self.info.username or '-'} {self.info.peer}"

    def _log(self, level: int, message: str) -> None:
        log.log(level, "%s: %s", self._label(), message)

    def refuse(self, cause: str, what: str, *, level: int = logging.INFO) -> None:
        """Count and log (rate-limited per source) why this connection is refused; once."""
        self._setup_failed(cause)
        if self.refused:
            self._log(logging.DEBUG, what)
            return
        self.refused = True
        self.daemon.refuse(cause, self.peer_ip, f"{self._label()}: {what}", level=level)

    def _setup_failed(self, cause: str) -> None:
        if not self.established and self.setup_failure is None:
            self.setup_failure = cause

    # ---- TLS stream side ------------------------------------------------------------------

    def _on_handshake_failed(self, reason: str) -> None:
        wrong_name, server_name = refused_server_name(self.stream.tls)
        if wrong_name:
            asked = f"SNI {server_name!r}" if server_name is not None else "no SNI"
            self.refuse("refused_host_name_sni", f"TLS refused: {asked}, not host-name "
                                                 f"{self.daemon.service.host_name}")
        else:
            self.refuse("tls_handshake_failed", f"TLS handshake failed: {reason}")
        self._terminate(f"TLS handshake failed: {reason}")

    def _on_tls_established(self) -> None:
        tls = self.stream.tls
        self._log(logging.DEBUG, f"TLS {tls.version()} {tls.cipher()}")

    def _feed(self, data: memoryview) -> None:
        session = self.session
        session.receive_data(data, self.loop.time())
        if self.tun is None:
            # IPCP may have opened in this very chunk with the client's first packets behind it
            # (a busy server reads both at once): bring the interface up before taking them.
            self._after_session()
            if self.closed:
                return
        packets = session.take_ip_packets()
        if packets:
            # A client may only send from its own addresses (anti-spoofing, as BCP 38 asks of an
            # access concentrator); its IPv6 link traffic (ND, DHCPv6) is answered here.
            own = self._own_source or b"-"  # no IPv4 address: no IPv4 source is the client's
            allowed = [p for p in packets if p[0] >> 4 == 4 and p[12:16] == own]
            dropped = len(packets) - len(allowed)
            if self._ipv6 is not None and dropped:
                offered = [p for p in packets if p[0] >> 4 == 6]
                for_kernel = self._ipv6.receive(offered)
                dropped -= len(offered)
                for packet in for_kernel:
                    if self._ipv6_source_allowed(packet):
                        allowed.append(packet)
                    else:
                        dropped += 1
            if dropped:
                self.daemon.stats.count("dropped_spoofed_source", dropped)
            packets = allowed
        if packets:
            # Idle time counts user traffic only: keepalives (LCP/SSTP echo) must not keep an
            # idle session alive past its Idle-Timeout.
            self.info.last_activity = self.loop.time()
            if self.tun is not None:
                self.tun.write_packets(packets)  # before the buffer under these views is reused

    def _ipv6_source_allowed(self, packet: memoryview) -> bool:
        source = int.from_bytes(packet[8:24], "big")
        return any(source >> shift == network for network, shift in self._ipv6_sources)

    # ---- TUN side --------------------------------------------------------------------------

    def _on_tun_readable(self) -> None:
        if self._read_tun(_TUN_BUFFER):
            self.info.last_activity = self.loop.time()

    # ---- session plumbing ------------------------------------------------------------------

    def _flush_session(self) -> None:
        self.stream.write(self.session.data_to_send())

    def _on_event(self, event: object) -> None:
        now = self.loop.time()
        match event:
            case AuthRequested(request=request):
                self.info.username = request.username
                if self.info.ifname is None:  # named now: NAS-Port-Id in the Access-Request
                    self.info.ifname = self.daemon.ifnames.allocate()
                self.daemon.authenticate(self, request)
            case AuthSucceeded(username=username):
                self.info.username = username
                self.info.auth_method = event.method_name
                self._log(logging.INFO, f"authenticated with {event.method_name}")
            case AuthFailed(username=username, reason=reason):
                self.info.username = username or self.info.username
                self.info.auth_method = event.method_name
                self.refuse("auth_failed", f"authentication failed ({event.method_name}): {reason}",
                            level=logging.WARNING)
            case LinkEstablished(peer_mru=peer_mru):
                self.info.mtu = min(peer_mru, self.daemon.service.mtu)
            case BindingFailed(failure=failure, cause=cause):
                self.daemon.stats.count("binding_failed")
                self._setup_failed("binding_failed")
                self.daemon.stats.count(f"binding_failed_{failure.name.lower()}")
                self._log(logging.WARNING, cause)
            case BindingVerified(hash_protocol=hash_protocol):
                self._log(logging.DEBUG, f"crypto binding verified ({hash_protocol.name})")
            case Ipv4AddressNeeded():
                self._assign_address(now)
            case Ipv4Up(local=local, peer=peer):
                self._bring_up(local, peer)
            case Ipv6Up(local_interface_id=local_id, peer_interface_id=peer_id):
                self._bring_up_ipv6(local_id, peer_id)
            case HttpRefused(status=status, error=error, wrong_host=wrong_host):
                self.refuse("refused_host_name_http" if wrong_host else "http_refused",
                            f"HTTP request refused ({status or 'closed without an answer'}): {error}")
            case NegotiationTimedOut(phase=phase, limit=limit):
                if phase == "http" and self.stream.handshaking:
                    phase = "tls"  # the HTTP deadline runs from the start, through the handshake
                self.refuse(f"negotiation_timeout_{phase.replace('-', '_')}",
                            f"negotiation timeout: {phase} not done within {limit:g} s")
            case Notice(text=text):
                self._log(logging.DEBUG, text)
            case PeerMessageReceived(text=text):
                self._log(logging.DEBUG, f"peer says: {text}")
            case SessionClosed(reason=reason, by_peer=by_peer):
                self._flush_session()
                self._terminate(reason, by_peer=by_peer)

    def _end_cause(self, reason: str, by_peer: bool) -> TerminateCause:
        if self._requested_cause is not None:
            return self._requested_cause
        if "echo" in reason or "dead peer" in reason or "no answer" in reason:
            return TerminateCause.LOST_CARRIER
        return TerminateCause.USER_REQUEST if by_peer else TerminateCause.NAS_ERROR

    def decide(self, decision: AuthDecision) -> None:
        """The authentication backend's answer (may come later, from RADIUS)."""
        if self.closed:
            return
        self._auth_attributes = dict(decision.attributes)
        if decision.accepted:
            self.admitted_user = self.info.username
            try:
                self.rate = self.daemon.rate_limit_for(self._auth_attributes)
            except ValueError as error:
                self._log(logging.WARNING, f"rate limit not applied: {error}")
        mppe = session_mppe(self._auth_attributes, self.daemon.service.mppe) if decision.accepted else None
        if mppe is not None:
            self._log(logging.INFO, f"MPPE from RADIUS: {mppe.policy.value}, "
                                    f"{'/'.join(str(n) for n in sorted(mppe.key_lengths))}-bit")
        self.session.decide(decision, self.loop.time(), mppe)
        if decision.accepted:
            framed_id = self._auth_attributes.get("framed_interface_id")
            self.session.link.set_ipv6_peer_facts(
                calling_station_id=self.peer_ip,
                framed_interface_id=framed_id if isinstance(framed_id, bytes) else None)
        self._after_session()

    def _assign_address(self, now: float) -> None:
        attributes = self._auth_attributes
        static = attributes.get("static_ip") or attributes.get("framed_ip")
        pool = attributes.get("framed_pool")
        try:
            self.lease = self.daemon.ipam.allocate(
                self.info.session_id, static=static if isinstance(static, IPv4Address) else None,
                pool=pool if isinstance(pool, str) else None,
            )
        except IpamError as error:
            self.daemon.stats.count("no_address")
            self._setup_failed("no_address")
            self.session.close(now, f"no address for the client: {error}")
            return
        service = self.daemon.service
        self._own_source = self.lease.address.packed
        radius_dns = attributes.get("dns")
        dns = tuple(radius_dns) if isinstance(radius_dns, list) and radius_dns else service.dns
        addresses = Ipv4Settings(service.gateway, self.lease.address, dns, service.wins)
        self.session.assign_ipv4(addresses, now)

    def _open_interface(self) -> str | None:
        """The session's TUN, made when the first network protocol comes up; None when it
        cannot be made (the session is then closing)."""
        if self.tun is not None:
            return self.info.ifname
        ifname = self.info.ifname or self.daemon.ifnames.allocate()
        try:
            self.tun = open_tun(ifname, mtu=self.info.mtu or self.daemon.service.mtu)
        except OSError as error:
            self._interface_failed(ifname, error)
            return None
        self.info.ifname = ifname
        self.loop.add_reader(self.tun.fileno(), self._on_tun_readable)
        self.stream.enable_backpressure()
        return ifname

    def _interface_failed(self, ifname: str, error: Exception) -> None:
        if self.tun is not None:
            self.loop.remove_reader(self.tun.fileno())
            self.tun.close()
            self.tun = None
        self.daemon.stats.count("interface_failed")
        self._setup_failed("interface_failed")
        self.session.close(self.loop.time(), f"cannot set up interface {ifname}: {error}")
        self._after_session()

    def _bring_up(self, local: IPv4Address, peer: IPv4Address | None) -> None:
        if peer is None or self.lease is None or self.info.address is not None:
            return
        ifname = self._open_interface()
        if ifname is None:
            return
        mtu = self.info.mtu or self.daemon.service.mtu
        try:
            self.daemon.net.configure_p2p(ifname, local, peer, mtu)
        except NetError as error:
            self._interface_failed(ifname, error)
            return
        self.info.address = peer
        if self._accounting is not None:
            self._accounting.framed_ip = peer
        self._add_framed_routes(ifname, "framed_routes")
        self._activate(ifname)
        rate = f", rate {self.rate} kbit/s" if self.rate else ""
        self._log(logging.INFO, f"session up: {peer} via {ifname} mtu {mtu}{rate}")

    def _bring_up_ipv6(self, local_id: bytes, peer_id: bytes | None) -> None:
        if self._ipv6 is not None or peer_id is None:
            return
        ifname = self._open_interface()
        if ifname is None:
            return
        attributes = self._auth_attributes
        prefix = self._lease_prefix(PrefixKind.PREFIX, attributes.get("framed_ipv6_prefix"),
                                    attributes.get("framed_ipv6_pool"))
        delegated = self._lease_prefix(PrefixKind.DELEGATE, attributes.get("delegated_ipv6_prefix"),
                                       attributes.get("delegated_ipv6_prefix_pool")
                                       or attributes.get("framed_ipv6_pool"))
        service = self.daemon.service
        mtu = self.info.mtu or service.mtu
        try:
            self.daemon.net.configure_ipv6(ifname, link_local_address(local_id), mtu)
            if prefix is not None:
                self.daemon.net.add_route(ifname, prefix)
        except NetError as error:
            self._interface_failed(ifname, error)
            return
        radius_dns = attributes.get("dns_ipv6")
        dns = tuple(radius_dns) if isinstance(radius_dns, list) and radius_dns else service.dns_ipv6
        services = Ipv6LinkServices.for_server(interface_id=local_id, now=self.loop.time(), prefix=prefix,
                                               delegated=delegated, mtu=mtu, dns=dns,
                                               server_id=self.daemon.server_id)
        self._ipv6 = Ipv6LinkDriver(self.loop, services, self._send_link_ipv6, self._on_ipv6_event)
        self._ipv6_sources = [(int(link_local_address(peer_id)), 0)]
        for network in (prefix, delegated):
            if network is not None:
                shift = 128 - network.prefixlen
                self._ipv6_sources.append((int(network.network_address) >> shift, shift))
        self._add_framed_routes(ifname, "framed_ipv6_routes")
        self.info.ipv6_prefix = prefix  # the delegated prefix is shown once the client holds it
        if self._accounting is not None:
            self._accounting.framed_ipv6_prefix = prefix
            self._accounting.framed_interface_id = peer_id
        self._activate(ifname)
        self._ipv6.pump()  # the first router advertisement
        offered = f", {delegated} reserved for delegation" if delegated is not None else ""
        self._log(logging.INFO, f"IPv6 up: {prefix or 'link-local only'}{offered} via {ifname}")

    def _add_framed_routes(self, ifname: str, key: str) -> None:
        """RADIUS Framed-Route / Framed-IPv6-Route: networks behind the client, routed into its
        interface (through the given gateway, if any); they go with the interface."""
        routes = self._auth_attributes.get(key)
        for route in routes if isinstance(routes, list) else ():
            if not isinstance(route, FramedRoute):
                continue
            # Into a point-to-point link every route reaches the client; an IPv6 gateway is kept
            # because a delegated network is routed via the client's link-local address.
            via = route.gateway if isinstance(route.gateway, IPv6Address) else None
            try:
                self.daemon.net.add_route(ifname, route.prefix, via)
            except NetError as error:
                self._log(logging.WARNING, f"framed route {route.prefix} not added: {error}")
            else:
                self._log(logging.INFO, f"framed route {route.prefix} via {ifname}")

    def _lease_prefix(self, kind: PrefixKind, static: object, pool: object) -> IPv6Network | None:
        """A prefix of ``kind`` for this session: RADIUS's own, else one from its pool (or the
        default pool) when that pool has prefixes of this kind; None when there is none to give."""
        ipam6 = self.daemon.ipam6
        pool_name = pool if isinstance(pool, str) else None
        if not isinstance(static, IPv6Network) and not ipam6.offers(kind, pool_name):
            return None
        try:
            lease = ipam6.allocate(self.info.session_id, kind, pool=pool_name,
                                   static=static if isinstance(static, IPv6Network) else None)
        except IpamError as error:
            self.daemon.stats.count(f"no_ipv6_{kind.name.lower()}")
            self._log(logging.WARNING, f"no IPv6 {kind.value} for the client: {error}")
            return None
        self.prefix_leases.append(lease)
        return lease.prefix

    def _on_ipv6_event(self, event: object) -> None:
        ifname = self.info.ifname
        if ifname is None or self.closed:
            return
        try:
            match event:
                case PrefixBound(prefix=prefix, via=via):
                    self.daemon.net.add_route(ifname, prefix, via)
                    self._delegation(prefix)
                    self._log(logging.INFO, f"delegated {prefix} via {via}")
                case PrefixUnbound(prefix=prefix, reason=reason):
                    self.daemon.net.remove_route(ifname, prefix)
                    self._delegation(None)
                    self._log(logging.INFO, f"delegation of {prefix} ended: {reason}")
        except NetError as error:
            self._log(logging.WARNING, f"route for the delegated prefix: {error}")

    def _delegation(self, prefix: IPv6Network | None) -> None:
        self.info.delegated_prefix = prefix
        if self._accounting is not None:
            self._accounting.delegated_ipv6_prefix = prefix

    def _activate(self, ifname: str) -> None:
        """The first network protocol is up: the session counts as active from now on, or once
        the on-pre-up script has agreed."""
        if self.info.state != "starting":
            return
        if self.daemon.scripts.configured(Hook.PRE_UP):
            self.info.state = "pre-up"
            self.daemon.scripts.run(Hook.PRE_UP, self.script_facts(), self._pre_up_done)
            return
        self._up(ifname)

    def _pre_up_done(self, result: ScriptResult) -> None:
        if self.closed or self.info.ifname is None:
            return
        if not result.ok:
            # As pppd_compat: a script that failed on its own says no; a crashed one is our error.
            crashed = result.returncode is None or result.returncode < 0 or result.returncode > 127
            self.close(f"refused by {result.describe()}",
                       TerminateCause.NAS_ERROR if crashed else TerminateCause.ADMIN_RESET)
            return
        self._up(self.info.ifname)

    def _up(self, ifname: str) -> None:
        self.info.state = "active"
        self.established = True
        if self.rate is not None:
            self._apply_rate(self.rate, change=False)
        self._start_timers()
        self._start_accounting(ifname)
        self.daemon.session_up(self)
        if self.daemon.scripts.configured(Hook.UP):
            self.daemon.scripts.run(Hook.UP, self.script_facts())

    def script_facts(self, *, ended: bool = False) -> SessionFacts:
        """This session as extended-scripts see it; with ``ended``, its totals too."""
        session, ipv6cp = self.session, self.session.link.ipv6cp
        ipv6_address = None
        prefix, peer_id = self.info.ipv6_prefix, ipv6cp.peer_interface_id if ipv6cp is not None else None
        if prefix is not None and peer_id is not None:
            ipv6_address = (IPv6Address(int(prefix.network_address) | int.from_bytes(peer_id, "big")),
                            prefix.prefixlen)
        counters = SessionCounters(int(time.time() - self.info.started), session.tx_bytes, session.rx_bytes,
                                   session.tx_packets, session.rx_packets) if ended else None
        return SessionFacts(
            ifname=self.info.ifname or "", username=self.info.username or "", session_id=self.info.session_id,
            calling_station_id=self.peer_ip, called_station_id=self.called_station_id,
            local=self.daemon.service.gateway if self.info.address is not None else None,
            remote=self.info.address, ipv6_address=ipv6_address,
            delegated_prefix=self.info.delegated_prefix, counters=counters)

    @property
    def nas_port(self) -> int | None:
        """The interface number (sstp7 → 7): NAS-Port in RADIUS."""
        digits = (self.info.ifname or "").lstrip("abcdefghijklmnopqrstuvwxyz")
        return int(digits) if digits.isdigit() else None

    def _apply_rate(self, rate: RateLimit, *, change: bool) -> None:
        assert self.info.ifname is not None
        try:
            self.daemon.shape(self.info.ifname, rate, change=change and self._shaped)
        except (OSError, NetError) as error:
            self._log(logging.WARNING, f"rate limit {rate} not applied: {error}")
            return
        self._shaped = True
        self.rate = rate
        self.info.rate_limit = str(rate)

    def _start_timers(self) -> None:
        session_timeout = self._auth_attributes.get("session_timeout")
        if isinstance(session_timeout, int) and session_timeout > 0:
            self._set_session_timeout(session_timeout)
        idle_timeout = self._auth_attributes.get("idle_timeout")
        if isinstance(idle_timeout, int) and idle_timeout > 0:
            self._set_idle_timeout(idle_timeout)

    def _set_session_timeout(self, seconds: int) -> None:
        if self._session_timer is not None:
            self._session_timer.cancel()
            self._session_timer = None
        if seconds > 0:
            self._session_timer = self.loop.call_later(
                seconds, self.close, f"session timeout ({seconds} s)", TerminateCause.SESSION_TIMEOUT)

    def _set_idle_timeout(self, seconds: int) -> None:
        self._idle_timeout = seconds if seconds > 0 else None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._idle_timeout is not None:
            self._idle_timer = self.loop.call_later(min(self._idle_timeout, 10), self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.closed or self._idle_timeout is None:
            return
        idle = self.loop.time() - self.info.last_activity
        if idle >= self._idle_timeout:
            self.close(f"idle for {idle:.0f} s (idle timeout {self._idle_timeout} s)",
                       TerminateCause.IDLE_TIMEOUT)
            return
        self._idle_timer = self.loop.call_later(min(self._idle_timeout - idle, 10), self._check_idle)

    def _start_accounting(self, ifname: str) -> None:
        classes = self._auth_attributes.get("class")
        interim = self._auth_attributes.get("acct_interim_interval")
        timeout = self._auth_attributes.get("session_timeout")
        session = self.session
        self._accounting = AccountingSession(
            acct_session_id=self.info.session_id,
            username=self.info.username or "",
            ifname=ifname,
            calling_station_id=self.peer_ip,
            counters=lambda: UsageCounters(session.rx_bytes, session.tx_bytes, session.rx_packets,
                                           session.tx_packets),
            framed_ip=self.info.address,
            framed_ipv6_prefix=self.info.ipv6_prefix,
            framed_interface_id=self.session.link.ipv6cp.peer_interface_id
            if self.session.link.ipv6cp is not None and self.info.ipv6_prefix is not None else None,
            delegated_ipv6_prefix=self.info.delegated_prefix,
            class_values=tuple(c for c in classes if isinstance(c, bytes)) if isinstance(classes, list)
            else (),
            called_station_id=self.called_station_id,
            interim_interval=interim if isinstance(interim, int) else None,
            session_timeout=timeout if isinstance(timeout, int) else None,
        )
        self.daemon.accounting_start(self._accounting)

    @property
    def called_station_id(self) -> str:
        """The address the client dialled (Called-Station-Id)."""
        try:
            return str(self.sock.getsockname()[0]).removeprefix("::ffff:")
        except OSError:
            return ""

    def change(self, rate_attributes: dict[str, object], session_timeout: int | None,
               idle_timeout: int | None, classes: object = None) -> str | None:
        """A RADIUS CoA for this session; returns an error text when it could not be applied."""
        if self.closed or self.info.ifname is None:
            return "session is ending"
        if rate_attributes:
            try:
                rate = self.daemon.rate_limit_for({"rate_limit_attributes": rate_attributes})
            except ValueError as error:
                return f"rate limit not understood: {error}"
            if rate is not None:
                self._apply_rate(rate, change=True)
                if self.rate != rate:
                    return f"rate limit {rate} could not be applied"
        if session_timeout is not None:
            self._set_session_timeout(session_timeout)
        if idle_timeout is not None:
            self._set_idle_timeout(idle_timeout)
        self._log(logging.INFO, "changed by CoA" + (f": rate {self.rate}" if rate_attributes else ""))
        if self.daemon.scripts.configured(Hook.CHANGE):
            self.daemon.scripts.run(Hook.CHANGE, self.script_facts())
        return None

    # ---- ending ----------------------------------------------------------------------------

    def close(self, reason: str, cause: str = TerminateCause.ADMIN_RESET) -> None:
        """Orderly end from our side (admin reset, deleted user, timeouts, shutdown): PPP, then
        SSTP. ``cause`` is the Acct-Terminate-Cause accounting reports."""
        if self.closed:
            return
        self._requested_cause = TerminateCause(cause)
        if self.stream.handshaking:
            self._terminate(reason)
            return
        self.session.close(self.loop.time(), reason)
        self._after_session()

    def end_now(self, reason: str, cause: TerminateCause) -> None:
        """End at once, releasing the address and interface now: the peer is told (LCP
        Terminate-Request) but not waited for."""
        if self.closed:
            return
        if not self.stream.handshaking:
            self.session.close(self.loop.time(), reason)
            self._flush_session()
        self._terminate(reason, cause=cause)

    def _lost(self, reason: str) -> None:
        # A peer that sent Call Disconnect and then closed TCP ended the session by the first.
        ended_by_peer = self.session.end_reason is not None
        self._terminate(self.session.end_reason or reason, by_peer=True,
                        cause=TerminateCause.USER_REQUEST if ended_by_peer else TerminateCause.LOST_CARRIER)

    def _terminate(self, reason: str, *, by_peer: bool = False, log_level: int = logging.INFO,
                   cause: TerminateCause | None = None) -> None:
        """Release everything this connection holds, on every path, exactly once."""
        if self.closed:
            return
        self.closed = True
        # As pppd_compat: on-down only for a session that was up.
        if self.info.state == "active" and self.daemon.scripts.configured(Hook.DOWN):
            self.daemon.scripts.run(Hook.DOWN, self.script_facts(ended=True))
        self.info.state = "closed"
        self._setup_failed("closed_by_peer" if by_peer else "closed_by_server")
        self._timer.cancel()
        for timer in (self._session_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._session_timer = self._idle_timer = None
        self.stream.close()
        if self.tun is not None:
            if not self.stream.paused:
                self.loop.remove_reader(self.tun.fileno())
            self.tun.close()  # a non-persistent TUN disappears with its last fd
            self.tun = None
        if self.info.ifname is not None:
            if self._shaped:
                try:
                    self.daemon.shape(self.info.ifname, None)  # the IFB outlives the TUN otherwise
                except (OSError, NetError) as error:
                    self._log(logging.WARNING, f"rate limit not removed: {error}")
            self.daemon.ifnames.release(self.info.ifname)
        if self._accounting is not None:
            self.daemon.accounting_stop(self._accounting, cause or self._end_cause(reason, by_peer))
            self._accounting = None
        if self.lease is not None:
            self.daemon.ipam.release(self.lease)
            self.lease = None
        if self._ipv6 is not None:
            self._ipv6.close()
        for prefix_lease in self.prefix_leases:
            self.daemon.ipam6.release(prefix_lease)
        self.prefix_leases.clear()
        session = self.session
        if self.quiet and self.info.username is None:
            log_level = logging.DEBUG
        who = "peer" if by_peer else "server"
        self._log(logging.DEBUG if self.refused else log_level,
                  f"session closed by {who}: {reason} (rx {session.rx_bytes} B/{session.rx_packets} pkts, "
                  f"tx {session.tx_bytes} B/{session.tx_packets} pkts)")
        if self.on_closed is not None:
            self.on_closed(self)
