"""One client connection: TCP (maybe through an HTTP proxy) ⇄ TLS (MemoryBIO) ⇄ ClientSession ⇄ TUN.

The dial (TCP connect, proxy CONNECT, TLS handshake) is a plain coroutine. Once TLS is up the data
path works like the server's (vpnd.server.connection): readiness callbacks, one ``recv`` of up to
256 KiB, all decrypted records handed to the session in one call, received IP packets written to
the TUN in one batch; up to 256 TUN packets become one ``send_ip_packets``, one TLS write and one
``send``. While more than ``HIGH_WATER`` bytes of ciphertext wait for the socket the TUN is not
read, so the kernel drops at the TUN queue instead of our memory growing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Interface, IPv6Network, ip_address
from pathlib import Path
from typing import Any, TypeVar

from vpnd.client.tls import (
    ClientTlsError,
    ClientTlsOptions,
    cert_hashes,
    check_after_handshake,
    describe_tls_failure,
    make_client_context,
)
from vpnd.net.link import KernelNet, NetError
from vpnd.net.tun import TunDevice, open_tun
from vpnd.proto.http import HttpProxyConnectResponse, http_proxy_connect_request
from vpnd.proto.ipv6.dhcpv6_client import PrefixDelegated, PrefixLost, PrefixUnavailable
from vpnd.proto.ipv6.nd import AddressAssigned, AddressRemoved, DefaultRouter, DnsServers
from vpnd.proto.ppp.ipv6cp import link_local_address
from vpnd.proto.session import (
    AuthFailed,
    AuthSucceeded,
    BindingVerified,
    ClientSession,
    ClientSessionSettings,
    HttpRefused,
    Ipv4Up,
    Ipv6Up,
    LinkEstablished,
    Notice,
    PeerMessageReceived,
    SessionClosed,
)
from vpnd.proto.sstp.packets import HashProtocol
from vpnd.runtime.deadline import DeadlineTimer
from vpnd.runtime.ipv6_link import Ipv6LinkDriver, Ipv6LinkServices
from vpnd.runtime.session_pump import TUN_BATCH, SessionPump
from vpnd.runtime.tls_stream import PLAINTEXT_BUFFER, RECV_SIZE, TlsStream

log = logging.getLogger("vpnd.client")

CONNECT_TIMEOUT = 15.0
CLOSE_GRACE = 3.0  # how long an orderly disconnect may take before the socket is just closed

T = TypeVar("T")


class DialError(Exception):
    """The server could not be reached or trusted; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Everything one dial needs (built from the command line or an `interfaces sstpc` node)."""

    server: str
    port: int
    username: str
    password: str
    tls: ClientTlsOptions
    session: ClientSessionSettings
    ifname: str = "sstpc0"
    mtu: int = 1452
    default_route: bool = True
    default_route_distance: int = 210
    routes: tuple[IPv4Network, ...] = ()
    peer_dns: bool = True
    resolv_conf: Path | None = None
    http_proxy: tuple[str, int] | None = None
    http_proxy_credentials: tuple[str, str] | None = None
    prefix_delegation: bool = True  # ask for a delegated prefix (DHCPv6-PD) when IPv6 comes up
    delegated_prefix_interface: str | None = None  # put <first /64 of it>::1/64 on this interface


@dataclass(slots=True)
class Outcome:
    """How one connection ended."""

    reason: str
    established: bool = False
    auth_failed: bool = False
    by_peer: bool = False
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def duration(self) -> float:
        return (self.ended or time.monotonic()) - self.started


# ---- kernel side ----------------------------------------------------------------------------------


class ClientNet:
    """Addresses and routes for the client's TUN, on a netlink thread of its own.

    pyroute2's synchronous IPRoute cannot run on the event loop thread (it drives a private loop),
    so every call is made on one worker thread and awaited there, in order.
    """

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                               thread_name_prefix="vpnd-client-net")
        self._kernel: KernelNet = self._executor.submit(KernelNet).result()

    def _call(self, function: Callable[..., T], *args: object) -> T:
        return self._executor.submit(function, *args).result()

    @property
    def _ipr(self) -> Any:
        return self._kernel._ipr

    def configure_p2p(self, ifname: str, local: IPv4Address, peer: IPv4Address, mtu: int) -> None:
        self._call(self._kernel.configure_p2p, ifname, local, peer, mtu)

    def add_route(self, ifname: str, prefix: IPv4Network, metric: int | None = None) -> None:
        """``ip route add PREFIX dev IFNAME [metric M]``; an existing identical route is an error."""
        def add() -> None:
            index = self._ipr.link_lookup(ifname=ifname)
            if not index:
                raise NetError(f"interface {ifname} does not exist")
            extra = {"priority": metric} if metric is not None else {}
            try:
                self._ipr.route("add", dst=str(prefix), oif=index[0], **extra)
            except Exception as error:
                raise NetError(f"adding route {prefix} via {ifname} failed: {error}") from error
        self._call(add)

    def configure_ipv6(self, ifname: str, link_local: IPv6Address, mtu: int) -> None:
        self._call(self._kernel.configure_ipv6, ifname, link_local, mtu)

    def add_address(self, ifname: str, address: IPv6Interface) -> None:
        self._call(self._kernel.add_address, ifname, address)

    def remove_address(self, ifname: str, address: IPv6Interface) -> None:
        def remove() -> None:
            index = self._ipr.link_lookup(ifname=ifname)
            if index:
                with contextlib.suppress(Exception):  # already gone with its interface
                    self._ipr.addr("del", index=index[0], address=str(address.ip),
                                   prefixlen=address.network.prefixlen)
        self._call(remove)

    def replace_default_ipv6_route(self, ifname: str, router: IPv6Address | None, metric: int) -> None:
        """``::/0 via ROUTER dev IFNAME metric M``, or no such route when ``router`` is None."""
        def replace() -> None:
            index = self._ipr.link_lookup(ifname=ifname)
            if not index:
                return
            with contextlib.suppress(Exception):
                self._ipr.route("del", dst="::/0", oif=index[0], priority=metric)
            if router is not None:
                try:
                    self._ipr.route("add", dst="::/0", gateway=str(router), oif=index[0], priority=metric)
                except Exception as error:
                    raise NetError(f"adding the IPv6 default route via {ifname} failed: {error}") from error
        self._call(replace)

    def pin_host_route(self, server: IPv4Address) -> IPv4Network | None:
        """Keep the server reachable outside the tunnel: ``SERVER/32 via GATEWAY`` when the route
        to it goes through a gateway. Returns the route added (to remove later) or None."""
        def pin() -> IPv4Network | None:
            answers = self._ipr.route("get", dst=str(server))
            if not answers:
                return None
            gateway = answers[0].get_attr("RTA_GATEWAY")
            oif = answers[0].get_attr("RTA_OIF")
            if gateway is None or oif is None:
                return None  # directly connected: a default route cannot take it away
            host = IPv4Network(f"{server}/32")
            try:
                self._ipr.route("add", dst=str(host), gateway=gateway, oif=oif)
            except Exception as error:
                if getattr(error, "code", None) == errno.EEXIST:
                    return None  # someone else's: not ours to remove
                raise NetError(f"adding host route to {server} failed: {error}") from error
            return host
        return self._call(pin)

    def remove_host_route(self, host: IPv4Network) -> None:
        def remove() -> None:
            with contextlib.suppress(Exception):
                self._ipr.route("del", dst=str(host))
        self._call(remove)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._kernel.close)
        self._executor.shutdown(wait=True)


def _write_resolv_conf(path: Path, servers: tuple[IPv4Address | IPv6Address, ...]) -> bytes | None:
    """Write the peer's DNS servers; returns the previous content (None: there was no file)."""
    try:
        previous: bytes | None = path.read_bytes()
    except FileNotFoundError:
        previous = None
    text = "# written by vpnd client\n" + "".join(f"nameserver {server}\n" for server in servers)
    temporary = path.with_name(f".{path.name}.vpnd")
    try:
        temporary.write_text(text)
        temporary.replace(path)
    except OSError:
        temporary.unlink(missing_ok=True)
        path.write_text(text)  # a bind-mounted file (containers) cannot be replaced, only rewritten
    return previous


def _restore_resolv_conf(path: Path, previous: bytes | None) -> None:
    with contextlib.suppress(OSError):
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(previous)


# ---- the connection -------------------------------------------------------------------------------


class ClientConnection(SessionPump[ClientSession]):
    def __init__(self, options: ClientOptions, net: ClientNet | None) -> None:
        self.options = options
        self.net = net
        self.loop = asyncio.get_running_loop()
        self.outcome = Outcome("not connected")
        self.sock: socket.socket | None = None
        self.server_address: str | None = None
        self._proxy_remainder = b""
        self.stream: TlsStream | None = None
        self.session = ClientSession(options.session)
        self._plain = bytearray(PLAINTEXT_BUFFER)
        self._tun_buffer = bytearray(TUN_BATCH * 2048)
        self.tun: TunDevice | None = None
        self.mtu: int | None = None
        self.local: IPv4Address | None = None
        self._timer = DeadlineTimer(self.loop, self._on_timer)
        self._pinned: IPv4Network | None = None
        self._resolv_previous: bytes | None = None
        self._resolv_written = False
        self._done: asyncio.Future[Outcome] = self.loop.create_future()
        self._closing = False
        self._close_reason: str | None = None
        self._hashes: dict[HashProtocol, bytes] = {}
        self._task: asyncio.Task[Any] | None = None
        self._ipv6: Ipv6LinkDriver | None = None
        self._dns4: tuple[IPv4Address, ...] = ()
        self._dns6: tuple[IPv6Address, ...] = ()
        self._delegated: dict[IPv6Network, IPv6Interface] = {}  # delegated prefix -> our LAN address
        self.closed = False
        self.on_up: Callable[[ClientConnection], None] | None = None

    # ---- dialling --------------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Dial, run the session until it ends, release everything; never raises for the network."""
        self._task = asyncio.current_task()
        try:
            await self._dial()
        except DialError as error:
            self._terminate(str(error))
        except asyncio.CancelledError:
            if not self._closing or self._task is None:
                self._terminate("cancelled")
                raise
            self._task.uncancel()  # our own close() interrupted the dial: not the caller's cancel
            self._terminate(self._close_reason or "closed")
        finally:
            self._task = None
        if self.closed:
            return self.outcome
        self._start_session()
        return await asyncio.shield(self._done)

    async def _dial(self) -> None:
        options = self.options
        host, port = options.http_proxy if options.http_proxy is not None else (options.server, options.port)
        try:
            infos = await asyncio.wait_for(
                self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise DialError(f"cannot resolve {host}: {getattr(error, 'strerror', None) or error}") from None
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        what = f"proxy {host}:{port}" if options.http_proxy is not None else f"{host}:{port}"
        try:
            await asyncio.wait_for(self.loop.sock_connect(sock, address), CONNECT_TIMEOUT)
        except TimeoutError:
            raise DialError(f"cannot connect to {what}: no answer within {CONNECT_TIMEOUT:g} s") from None
        except OSError as error:
            raise DialError(f"cannot connect to {what}: {error.strerror or error}") from None
        self.server_address = str(address[0])
        if options.http_proxy is not None:
            await self._proxy_connect()
        await self._tls_handshake()

    async def _recv(self, during: str) -> bytes:
        assert self.sock is not None
        try:
            data = await asyncio.wait_for(self.loop.sock_recv(self.sock, RECV_SIZE), CONNECT_TIMEOUT)
        except TimeoutError:
            raise DialError(f"no answer during {during} within {CONNECT_TIMEOUT:g} s") from None
        except OSError as error:
            raise DialError(f"connection lost during {during}: {error.strerror or error}") from None
        if not data:
            raise DialError(f"the server closed the connection during {during}")
        return data

    async def _send_all(self, data: bytes, during: str) -> None:
        assert self.sock is not None
        try:
            await self.loop.sock_sendall(self.sock, data)
        except OSError as error:
            raise DialError(f"connection lost during {during}: {error.strerror or error}") from None

    async def _proxy_connect(self) -> None:
        options = self.options
        request = http_proxy_connect_request(options.server, options.port,
                                             proxy_credentials=options.http_proxy_credentials)
        await self._send_all(request, "proxy CONNECT")
        response = HttpProxyConnectResponse()
        while not response.ok:
            response.receive_data(await self._recv("proxy CONNECT"))
            if response.failed:
                raise DialError(response.error or "proxy refused CONNECT")
        self.server_address = f"{options.server} via proxy"
        self._proxy_remainder = response.remainder  # the start of the server's TLS answer, if any

    async def _tls_handshake(self) -> None:
        tls_options = self.options.tls
        try:
            context = make_client_context(tls_options)
        except ClientTlsError as error:
            raise DialError(str(error)) from None
        assert self.sock is not None
        self.stream = stream = TlsStream(
            self.sock, context, server_side=False, server_hostname=tls_options.sni,
            plaintext=self._plain, peer="the server", on_plaintext=self._feed,
            on_read_done=self._after_session, on_lost=self._lost, on_backpressure=self._on_backpressure)
        if self._proxy_remainder:
            stream.incoming.write(self._proxy_remainder)
        tls = stream.tls
        # Our own handshake loop rather than stream.handshake(): the dial has timeouts and one-line
        # DialErrors, and the socket is not watched by the stream yet.
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = stream.outgoing.read()
                if pending:
                    await self._send_all(pending, "the TLS handshake")
                stream.incoming.write(await self._recv("the TLS handshake"))
            except (ssl.SSLError, OSError) as error:
                with contextlib.suppress(DialError):
                    await self._send_all(stream.outgoing.read(), "the TLS alert")
                raise DialError(describe_tls_failure(error)) from None
        stream.handshaking = False
        pending = stream.outgoing.read()
        if pending:
            await self._send_all(pending, "the TLS handshake")
        der = tls.getpeercert(binary_form=True)
        try:
            check_after_handshake(tls_options, context, der)
        except ClientTlsError as error:
            raise DialError(str(error)) from None
        assert der is not None
        self._hashes = cert_hashes(der)
        log.debug("TLS %s %s", tls.version(), (tls.cipher() or ("?",))[0])

    def _start_session(self) -> None:
        stream = self.stream
        assert stream is not None
        self.session.start(self._hashes, self.loop.time())
        stream.start()
        if stream.incoming.pending:  # records that came with the end of the handshake
            stream.read_records()
        else:
            self._after_session()

    # ---- TLS stream side ------------------------------------------------------------------

    def _feed(self, data: memoryview) -> None:
        session = self.session
        session.receive_data(data, self.loop.time())
        packets = session.take_ip_packets()
        if packets and self._ipv6 is not None:
            ipv4 = [p for p in packets if p[0] >> 4 == 4]
            if len(ipv4) != len(packets):  # router advertisements and DHCPv6 stay out of the kernel
                packets = ipv4 + self._ipv6.receive([p for p in packets if p[0] >> 4 == 6])
        if packets and self.tun is not None:
            self.tun.write_packets(packets)  # before the buffer under these views is reused

    # ---- TUN side --------------------------------------------------------------------------

    def _on_tun_readable(self) -> None:
        self._read_tun(self._tun_buffer)

    # ---- session plumbing ------------------------------------------------------------------

    def _flush_session(self) -> None:
        data = self.session.data_to_send()
        if self.stream is not None:
            self.stream.write(data)

    def _on_event(self, event: object) -> None:
        match event:
            case AuthSucceeded(method=method):
                log.debug("authenticated with %s", method.value)
            case AuthFailed(reason=reason):
                self.outcome.auth_failed = True
                log.debug("authentication failed: %s", reason)
            case LinkEstablished(peer_mru=peer_mru, auth_method=method):
                self.mtu = min(peer_mru, self.options.mtu)
                log.debug("LCP up, peer MRU %d, authentication %s", peer_mru,
                          method.value if method else "none")
            case BindingVerified(hash_protocol=hash_protocol):
                log.debug("crypto binding sent (%s)", hash_protocol.name)
            case Ipv4Up(local=local, peer=peer, dns=dns):
                self._bring_up(local, peer, dns)
            case Ipv6Up(local_interface_id=local_id, peer_interface_id=peer_id):
                self._bring_up_ipv6(local_id, peer_id)
            case HttpRefused(status=status, error=error):
                log.debug("HTTP answer refused (%s): %s", status, error)
            case Notice(text=text):
                log.debug("%s", text)
            case PeerMessageReceived(text=text):
                log.info("server says: %s", text)
            case SessionClosed(reason=reason, by_peer=by_peer):
                self._flush_session()
                self._terminate(reason, by_peer=by_peer)

    def _open_tun(self) -> TunDevice | None:
        """The session's TUN, made by the first network protocol that comes up."""
        if self.tun is not None:
            return self.tun
        try:
            self.tun = open_tun(self.options.ifname, mtu=self.mtu or self.options.mtu)
        except OSError as error:
            self.close(f"cannot set up interface {self.options.ifname}: {error}")
            return None
        self.loop.add_reader(self.tun.fileno(), self._on_tun_readable)
        if self.stream is not None:
            self.stream.enable_backpressure()
        return self.tun

    def _bring_up(self, local: IPv4Address, peer: IPv4Address | None, dns: tuple[IPv4Address, ...]) -> None:
        if self.local is not None:
            return
        options = self.options
        mtu = self.mtu or options.mtu
        peer_address = peer if peer is not None else local  # no peer given: a /32 to ourselves
        tun = self._open_tun()
        if tun is None:
            return
        try:
            if self.net is not None:
                self.net.configure_p2p(tun.name, local, peer_address, mtu)
                self._add_routes(tun.name)
        except NetError as error:
            self.close(f"cannot set up interface {options.ifname}: {error}")
            return
        self.local = local
        if options.peer_dns:
            self._dns4 = dns
            self._write_dns()
        self._established()
        dns_text = f", dns {' '.join(map(str, dns))}" if dns and options.peer_dns else ""
        log.info("connected: %s peer %s via %s mtu %d%s", local, peer_address, tun.name, mtu, dns_text)
        if self.on_up is not None:
            self.on_up(self)

    def _established(self) -> None:
        if not self.outcome.established:
            self.outcome.established = True
            self.outcome.started = time.monotonic()

    def _write_dns(self) -> None:
        resolv_conf = self.options.resolv_conf
        servers: tuple[IPv4Address | IPv6Address, ...] = (*self._dns4, *self._dns6)
        if resolv_conf is None or not servers:
            return
        try:
            previous = _write_resolv_conf(resolv_conf, servers)
        except OSError as error:
            log.warning("cannot write %s: %s", resolv_conf, error.strerror or error)
            return
        if not self._resolv_written:  # what to restore is what was there before our first write
            self._resolv_previous = previous
            self._resolv_written = True

    def _bring_up_ipv6(self, local_id: bytes, peer_id: bytes | None) -> None:
        if self._ipv6 is not None:
            return
        tun = self._open_tun()
        if tun is None:
            return
        try:
            if self.net is not None:
                self.net.configure_ipv6(tun.name, link_local_address(local_id), self.mtu or self.options.mtu)
        except NetError as error:
            self.close(f"cannot set up IPv6 on {tun.name}: {error}")
            return
        services = Ipv6LinkServices.for_client(interface_id=local_id, now=self.loop.time(),
                                               delegation=self.options.prefix_delegation)
        self._ipv6 = Ipv6LinkDriver(self.loop, services, self._send_link_ipv6, self._on_ipv6_event)
        self._established()
        peer = f" peer {link_local_address(peer_id)}" if peer_id is not None else ""
        log.info("IPv6 link up: %s%s via %s", link_local_address(local_id), peer, tun.name)
        self._ipv6.pump()  # router solicitation, DHCPv6 Solicit

    def _on_ipv6_event(self, event: object) -> None:
        tun, net, options = self.tun, self.net, self.options
        if tun is None or self.closed:
            return
        try:
            match event:
                case AddressAssigned(address=address):
                    if net is not None:
                        net.add_address(tun.name, address)
                    log.info("IPv6 address %s via %s (SLAAC)", address, tun.name)
                case AddressRemoved(address=address, reason=reason):
                    if net is not None:
                        net.remove_address(tun.name, address)
                    log.info("IPv6 address %s removed: %s", address, reason)
                case DefaultRouter(router=router):
                    if net is not None and options.default_route:
                        net.replace_default_ipv6_route(tun.name, router, options.default_route_distance)
                case DnsServers(servers=servers) if options.peer_dns:
                    self._dns6 = tuple(servers)
                    self._write_dns()
                    log.info("IPv6 DNS: %s", " ".join(map(str, servers)) or "none")
                case PrefixDelegated(prefix=prefix) if prefix not in self._delegated:
                    self._delegated[prefix] = self._place_delegated(prefix)
                case PrefixLost(prefix=prefix, reason=reason):
                    placed = self._delegated.pop(prefix, None)
                    if placed is not None and net is not None and options.delegated_prefix_interface:
                        net.remove_address(options.delegated_prefix_interface, placed)
                    log.info("delegated prefix %s lost: %s", prefix, reason)
                case PrefixUnavailable(status=status):
                    log.info("no delegated prefix from the server: %s", status)
        except NetError as error:
            log.warning("IPv6: %s", error)

    def _place_delegated(self, prefix: IPv6Network) -> IPv6Interface:
        """Log the delegated prefix and put <its first /64>::1/64 on the LAN interface if asked."""
        first = next(prefix.subnets(new_prefix=64)) if prefix.prefixlen <= 64 else prefix
        address = IPv6Interface(f"{first.network_address + 1}/{first.prefixlen}")
        target = self.options.delegated_prefix_interface
        if target is not None and self.net is not None:
            self.net.add_address(target, address)
            log.info("delegated prefix %s: %s on %s", prefix, address, target)
        else:
            log.info("delegated prefix %s", prefix)
        return address

    def _add_routes(self, ifname: str) -> None:
        options = self.options
        net = self.net
        assert net is not None
        if options.default_route:
            server = self._server_ipv4()
            if server is not None:
                self._pinned = net.pin_host_route(server)
            try:
                net.add_route(ifname, IPv4Network("0.0.0.0/0"), options.default_route_distance)
            except NetError as error:
                log.warning("no default route through %s: %s", ifname, error)
        for prefix in options.routes:
            try:
                net.add_route(ifname, prefix)
            except NetError as error:
                log.warning("%s", error)

    def _server_ipv4(self) -> IPv4Address | None:
        if self.options.http_proxy is not None or self.server_address is None:
            return None  # what must stay outside the tunnel then is the proxy; it is dialled by name
        try:
            address = ip_address(self.server_address)
        except ValueError:
            return None
        return address if isinstance(address, IPv4Address) else None

    # ---- ending ----------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Orderly end from our side: PPP Terminate, then SSTP Call Disconnect, then TCP close.

        A server that does not finish the exchange within CLOSE_GRACE seconds is not waited for.
        """
        if self.closed or self._closing:
            return
        self._closing = True
        self._close_reason = reason
        if self.stream is None or not self.stream.reading:
            if self._task is not None:
                self._task.cancel()  # still dialling: stop waiting for the network
            else:
                self._terminate(reason)
            return
        if self._ipv6 is not None and self._ipv6.services.pd_client is not None:
            self._ipv6.services.pd_client.close(self.loop.time())  # Release, before the link goes
            self._ipv6.pump()
        self.session.close(self.loop.time(), reason)
        self._after_session()
        if not self.closed:
            self.loop.call_later(CLOSE_GRACE, self._terminate, reason)

    def _lost(self, reason: str) -> None:
        # A server that sent Call Disconnect and then closed TCP ended the session by the first.
        self._terminate(self.session.end_reason or reason, by_peer=True)

    def _terminate(self, reason: str, *, by_peer: bool = False) -> None:
        """Release everything this connection holds, on every path, exactly once."""
        if self.closed:
            return
        self.closed = True
        self._timer.cancel()
        if self.stream is not None:
            self.stream.close()
        elif self.sock is not None:
            self.sock.close()  # the dial failed before TLS began
        if self.tun is not None:
            if self.stream is None or not self.stream.paused:
                self.loop.remove_reader(self.tun.fileno())
            self.tun.close()  # the interface and every route through it go with the fd
            self.tun = None
        if self._ipv6 is not None:
            self._ipv6.close()
        if self.net is not None and self.options.delegated_prefix_interface is not None:
            for placed in self._delegated.values():
                self.net.remove_address(self.options.delegated_prefix_interface, placed)
        self._delegated.clear()
        if self._pinned is not None and self.net is not None:
            self.net.remove_host_route(self._pinned)
            self._pinned = None
        if self._resolv_written and self.options.resolv_conf is not None:
            _restore_resolv_conf(self.options.resolv_conf, self._resolv_previous)
            self._resolv_written = False
        outcome = self.outcome
        outcome.reason = reason
        outcome.by_peer = by_peer
        outcome.ended = time.monotonic()
        if outcome.auth_failed and not reason.startswith("authentication failed"):
            outcome.reason = f"authentication failed: {reason}"
        if not self._done.done():
            self._done.set_result(outcome)

    @property
    def traffic(self) -> str:
        session = self.session
        return (f"rx {session.rx_bytes} B/{session.rx_packets} pkts, "
                f"tx {session.tx_bytes} B/{session.tx_packets} pkts")
