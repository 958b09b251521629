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
from ipaddress import IPv4Address
from typing import Protocol

from vpnd.ipam.pool import Ipam, IpamError, Lease
from vpnd.net.link import IfnameAllocator, NetBackend, NetError
from vpnd.net.tun import TunDevice, open_tun
from vpnd.proto.ppp.auth.types import AuthDecision, AuthRequest
from vpnd.proto.ppp.ipcp import Ipv4Settings
from vpnd.proto.session import (
    AuthFailed,
    AuthRequested,
    AuthSucceeded,
    BindingVerified,
    HttpRefused,
    Ipv4AddressNeeded,
    Ipv4Up,
    LinkEstablished,
    Notice,
    PeerMessageReceived,
    ServerSession,
    ServerSessionSettings,
    SessionClosed,
)
from vpnd.runtime.tls_stream import PLAINTEXT_BUFFER, TlsStream
from vpnd.server.settings import ServiceSettings

log = logging.getLogger("vpnd.session")

TUN_BATCH = 256


class Counters(Protocol):
    def count(self, name: str, amount: int = 1) -> None: ...


class SessionHost(Protocol):
    """What a connection needs from the daemon that owns it (the daemon is one)."""

    service: ServiceSettings
    ipam: Ipam
    ifnames: IfnameAllocator
    net: NetBackend

    @property
    def stats(self) -> Counters: ...

    def authenticate(self, connection: ServerConnection, request: AuthRequest) -> None: ...
    def session_up(self, connection: ServerConnection) -> None: ...


@dataclass(slots=True)
class SessionInfo:
    """What op-mode shows about a session."""

    session_id: str
    peer: str
    started: float = field(default_factory=time.time)
    username: str | None = None
    ifname: str | None = None
    address: IPv4Address | None = None
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


class ServerConnection:
    def __init__(
        self,
        daemon: SessionHost,
        sock: socket.socket,
        *,
        peer: tuple[str, int],
        tls_context: ssl.SSLContext,
        settings: ServerSessionSettings,
        session_id: str,
    ) -> None:
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
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._auth_attributes: dict[str, object] = {}
        self.closed = False
        self.on_closed: Callable[[ServerConnection], None] | None = None
        self.stream.start()
        self._schedule_timer()

    # ---- log -------------------------------------------------------------------------------

    def _label(self) -> str:
        return f"{self.info.ifname or '-'} {self.info.username or '-'} {self.info.peer}"

    def _log(self, level: int, message: str) -> None:
        log.log(level, "%s: %s", self._label(), message)

    # ---- TLS stream side ------------------------------------------------------------------

    def _on_handshake_failed(self, reason: str) -> None:
        self.daemon.stats.count("tls_handshake_failed")
        self._terminate(f"TLS handshake failed: {reason}", log_level=logging.INFO)

    def _on_tls_established(self) -> None:
        tls = self.stream.tls
        self._log(logging.DEBUG, f"TLS {tls.version()} {tls.cipher()}")

    def _feed(self, data: memoryview) -> None:
        session = self.session
        session.receive_data(data, self.loop.time())
        packets = session.take_ip_packets()
        if packets and self.tun is not None:
            self.tun.write_packets(packets)  # before the buffer under these views is reused
        self.info.last_activity = self.loop.time()

    def _on_backpressure(self, paused: bool) -> None:
        if self.tun is None:
            return
        if paused:
            self.loop.remove_reader(self.tun.fileno())
        else:
            self.loop.add_reader(self.tun.fileno(), self._on_tun_readable)

    # ---- TUN side --------------------------------------------------------------------------

    def _on_tun_readable(self) -> None:
        tun = self.tun
        if tun is None:
            return
        packets = tun.read_batch(TUN_BATCH, _TUN_BUFFER)
        if not packets:
            return
        v4 = [p for p in packets if p[0] >> 4 == 4]
        if v4:
            self.session.send_ip_packets(v4)
        if len(v4) != len(packets):
            self.session.send_ip_packets([p for p in packets if p[0] >> 4 == 6], ipv6=True)
        self._flush_session()

    # ---- session plumbing ------------------------------------------------------------------

    def _flush_session(self) -> None:
        self.stream.write(self.session.data_to_send())

    def _after_session(self) -> None:
        while (event := self.session.next_event()) is not None:
            self._on_event(event)
            if self.closed:
                return
        self._flush_session()
        self._schedule_timer()

    def _schedule_timer(self) -> None:
        deadline = self.session.get_timer()
        if deadline == self._timer_deadline or self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        if self.closed:
            return
        self.session.handle_timer(self.loop.time())
        self._after_session()

    def _on_event(self, event: object) -> None:
        now = self.loop.time()
        match event:
            case AuthRequested(request=request):
                self.info.username = request.username
                self.daemon.authenticate(self, request)
            case AuthSucceeded(username=username, method=method):
                self.info.username = username
                self.info.auth_method = method.value
                self._log(logging.INFO, f"authenticated with {method.value}")
            case AuthFailed(username=username, reason=reason):
                self.info.username = username or self.info.username
                self.daemon.stats.count("auth_failed")
                self._log(logging.WARNING, f"authentication failed: {reason}")
            case LinkEstablished(peer_mru=peer_mru):
                self.info.mtu = min(peer_mru, self.daemon.service.mtu)
            case BindingVerified(hash_protocol=hash_protocol):
                self._log(logging.DEBUG, f"crypto binding verified ({hash_protocol.name})")
            case Ipv4AddressNeeded():
                self._assign_address(now)
            case Ipv4Up(local=local, peer=peer):
                self._bring_up(local, peer)
            case HttpRefused(status=status, error=error):
                self.daemon.stats.count("http_refused")
                self._log(logging.INFO, f"HTTP request refused ({status}): {error}")
            case Notice(text=text):
                self._log(logging.DEBUG, text)
            case PeerMessageReceived(text=text):
                self._log(logging.DEBUG, f"peer says: {text}")
            case SessionClosed(reason=reason, by_peer=by_peer):
                self._flush_session()
                self._terminate(reason, by_peer=by_peer)

    def decide(self, decision: AuthDecision) -> None:
        """The authentication backend's answer (may come later, from RADIUS)."""
        if self.closed:
            return
        self._auth_attributes = dict(decision.attributes)
        self.session.decide(decision, self.loop.time())
        self._after_session()

    def _assign_address(self, now: float) -> None:
        static = self._auth_attributes.get("static_ip")
        try:
            self.lease = self.daemon.ipam.allocate(
                self.info.session_id, static=static if isinstance(static, IPv4Address) else None
            )
        except IpamError as error:
            self.daemon.stats.count("no_address")
            self.session.close(now, f"no address for the client: {error}")
            return
        service = self.daemon.service
        self.info.address = self.lease.address
        addresses = Ipv4Settings(service.gateway, self.lease.address, service.dns, service.wins)
        self.session.assign_ipv4(addresses, now)

    def _bring_up(self, local: IPv4Address, peer: IPv4Address | None) -> None:
        if peer is None or self.tun is not None:
            return
        ifname = self.daemon.ifnames.allocate()
        mtu = self.info.mtu or self.daemon.service.mtu
        try:
            self.tun = open_tun(ifname, mtu=mtu)
            self.info.ifname = ifname
            self.daemon.net.configure_p2p(ifname, local, peer, mtu)
        except (OSError, NetError) as error:
            self.daemon.ifnames.release(ifname)
            self.info.ifname = None
            if self.tun is not None:
                self.tun.close()
                self.tun = None
            self.daemon.stats.count("interface_failed")
            self.session.close(self.loop.time(), f"cannot create interface {ifname}: {error}")
            self._after_session()
            return
        self.loop.add_reader(self.tun.fileno(), self._on_tun_readable)
        self.stream.enable_backpressure()
        self.info.state = "active"
        self.daemon.session_up(self)
        self._log(logging.INFO, f"session up: {peer} via {ifname} mtu {mtu}")

    # ---- ending ----------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Orderly end from our side (admin reset, deleted user, shutdown): PPP, then SSTP."""
        if self.closed:
            return
        if self.stream.handshaking:
            self._terminate(reason)
            return
        self.session.close(self.loop.time(), reason)
        self._after_session()

    def _lost(self, reason: str) -> None:
        # A peer that sent Call Disconnect and then closed TCP ended the session by the first.
        self._terminate(self.session.end_reason or reason, by_peer=True)

    def _terminate(self, reason: str, *, by_peer: bool = False, log_level: int = logging.INFO) -> None:
        """Release everything this connection holds, on every path, exactly once."""
        if self.closed:
            return
        self.closed = True
        self.info.state = "closed"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.stream.close()
        if self.tun is not None:
            if not self.stream.paused:
                self.loop.remove_reader(self.tun.fileno())
            self.tun.close()  # a non-persistent TUN disappears with its last fd
            self.tun = None
        if self.info.ifname is not None:
            self.daemon.ifnames.release(self.info.ifname)
        if self.lease is not None:
            self.daemon.ipam.release(self.lease)
            self.lease = None
        session = self.session
        who = "peer" if by_peer else "server"
        self._log(log_level, f"session closed by {who}: {reason} "
                             f"(rx {session.rx_bytes} B/{session.rx_packets} pkts, "
                             f"tx {session.tx_bytes} B/{session.tx_packets} pkts)")
        if self.on_closed is not None:
            self.on_closed(self)
