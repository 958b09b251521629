"""`vpnd client`: dial, keep the session up, reconnect after a loss, leave in order on SIGTERM.

Reconnects wait 1 s, then twice as long after each failure up to 60 s; a session that lasted more
than 60 s resets the wait. ``once`` stops after the first attempt instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from vpnd.client.connection import ClientConnection, ClientNet, ClientOptions, Outcome
from vpnd.client.tls import ClientTlsOptions
from vpnd.config.definitions import SstpcInterface
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.session import DEFAULT_AUTH_ORDER, ClientSessionSettings

log = logging.getLogger("vpnd.client")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STABLE_SESSION = 60.0  # a session that lasted longer resets the back-off
STOP_GRACE = 5.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait before the next attempt, as a pure function of the last wait and what happened."""

    first: float = BACKOFF_FIRST
    maximum: float = BACKOFF_MAX
    stable: float = STABLE_SESSION

    def next_delay(self, previous: float | None, session_lasted: float | None) -> float:
        if previous is None or (session_lasted is not None and session_lasted > self.stable):
            return self.first
        return min(previous * 2, self.maximum)


def lcp_settings(mtu: int, methods: tuple[AuthMethod, ...], keepalive: float) -> LcpSettings:
    """Keepalive: LCP echoes every keepalive/3 s, the link is declared dead after 3 unanswered."""
    interval = keepalive / 3 if keepalive > 0 else 0.0
    return LcpSettings(mru=mtu, max_peer_mru=mtu, auth_methods=methods,
                       echo_interval=interval, echo_failure=3)


def build_options(
    *,
    server: str,
    port: int,
    username: str,
    password: str,
    ca_data: str | None,
    verify_certificate: bool,
    verify_name: bool,
    sni: str | None,
    add_sni: bool = True,
    ifname: str = "sstpc0",
    mtu: int = 1452,
    default_route: bool = True,
    default_route_distance: int = 210,
    routes: tuple[ipaddress.IPv4Network, ...] = (),
    peer_dns: bool = True,
    resolv_conf: Path | None = None,
    methods: tuple[AuthMethod, ...] = DEFAULT_AUTH_ORDER,
    http_proxy: tuple[str, int] | None = None,
    keepalive: float = 60.0,
    tls_version: str = "any",
    ipv4: bool = True,
    ipv6: bool = True,
    prefix_delegation: bool = True,
    delegated_prefix_interface: str | None = None,
    eap_ca: bytes | None = None,
    eap_certificate: bytes | None = None,
    eap_key: bytes | None = None,
) -> ClientOptions:
    """The certificate is checked against ``sni`` when given, else against ``server``."""
    name = sni or server
    sni_sent = name if add_sni else None
    tls = ClientTlsOptions(server_name=name, sni=sni_sent, verify_certificate=verify_certificate,
                           verify_name=verify_name, ca_data=ca_data, tls_version=tls_version)
    session = ClientSessionSettings(
        host=name, username=username, password=password,
        link=LinkSettings(lcp=lcp_settings(mtu, methods, keepalive), client_request_dns=peer_dns,
                          ipv4_enabled=ipv4, ipv6_enabled=ipv6),
        eap_ca=eap_ca, eap_certificate=eap_certificate, eap_key=eap_key,
    )
    return ClientOptions(
        server=server, port=port, username=username, password=password, tls=tls, session=session,
        ifname=ifname, mtu=mtu, default_route=default_route, default_route_distance=default_route_distance,
        routes=routes, peer_dns=peer_dns, resolv_conf=resolv_conf, http_proxy=http_proxy,
        prefix_delegation=ipv6 and prefix_delegation, delegated_prefix_interface=delegated_prefix_interface,
    )


def options_from_interface(ifname: str, interface: SstpcInterface, *, ca_data: str | None,
                           resolv_conf: Path | None = None) -> ClientOptions:
    """Options for an `interfaces sstpc <ifname>` node; ``ca_data``: PEM of `ssl ca-certificate`."""
    auth = interface.authentication
    if interface.server is None or auth.username is None or auth.password is None:
        raise ValueError(f"interfaces sstpc {ifname}: server, username and password are required")
    proxy = interface.http_proxy
    return build_options(
        server=str(interface.server), port=int(interface.port), username=auth.username,
        password=auth.password.get_secret_value(), ca_data=ca_data,
        verify_certificate=interface.verify_server_certificate,
        verify_name=interface.verify_server_address_from_certificate, sni=None,
        add_sni=interface.add_sni, ifname=ifname, mtu=interface.mtu,
        default_route=not interface.no_default_route,
        default_route_distance=interface.default_route_distance, peer_dns=not interface.no_peer_dns,
        resolv_conf=resolv_conf,
        http_proxy=(str(proxy.address), int(proxy.port)) if proxy is not None and proxy.address else None,
        keepalive=float(interface.keepalive_timeout), tls_version=interface.tls_version,
    )


class ClientRunner:
    """Connect, and keep reconnecting until stopped (or after the first attempt with ``once``)."""

    def __init__(self, options: ClientOptions, *, once: bool = False, kernel: bool = True,
                 backoff: Backoff | None = None) -> None:
        self.options = options
        self.once = once
        self.kernel = kernel
        self.backoff = backoff or Backoff()
        self.connection: ClientConnection | None = None
        self.outcomes: list[Outcome] = []
        self._stop_reason: str | None = None
        self._wake: asyncio.Event | None = None

    def stop(self, reason: str = "stopped") -> None:
        """Disconnect in order (PPP Terminate, SSTP Call Disconnect) and end ``run``."""
        if self._stop_reason is not None:
            return
        self._stop_reason = reason
        if self._wake is not None:
            self._wake.set()
        if self.connection is not None:
            self.connection.close(reason)

    async def run(self) -> int:
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        net = await loop.run_in_executor(None, ClientNet) if self.kernel else None
        delay: float | None = None
        try:
            while self._stop_reason is None:
                options = self.options
                log.info("connecting to %s:%d%s as %s", options.server, options.port,
                         f" via proxy {options.http_proxy[0]}:{options.http_proxy[1]}"
                         if options.http_proxy else "", options.username)
                connection = ClientConnection(options, net)
                self.connection = connection
                outcome = await connection.run()
                self.connection = None
                self.outcomes.append(outcome)
                if outcome.established:
                    log.info("disconnected after %.0f s: %s (%s)", outcome.duration, outcome.reason,
                             connection.traffic)
                else:
                    log.error("connection failed: %s", outcome.reason)
                if self._stop_reason is not None:
                    return EXIT_OK
                if self.once:
                    return EXIT_OK if outcome.established else EXIT_FAILED
                delay = self.backoff.next_delay(delay, outcome.duration if outcome.established else None)
                log.info("reconnecting in %g s", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            return EXIT_OK
        finally:
            if net is not None:
                await loop.run_in_executor(None, net.close)


# ---- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="SSTP server host name or address")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--user", required=True, help="PPP user name")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password", help="PPP password")
    secret.add_argument("--password-file", type=Path, help="file whose first line is the password")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--ca", type=Path, help="CA certificate(s) (PEM) the server's chain must end in")
    trust.add_argument("--no-verify", action="store_true", help="do not check the server certificate")
    parser.add_argument("--no-verify-name", action="store_true",
                        help="do not check the server name/address against its certificate")
    parser.add_argument("--sni",
                        help="name sent as TLS SNI and checked in the certificate (default: --server)")
    parser.add_argument("--no-sni", action="store_true", help="send no SNI")
    parser.add_argument("--ifname", default="sstpc0", help="TUN interface name (default sstpc0)")
    parser.add_argument("--mtu", type=int, default=1452)
    parser.add_argument("--no-default-route", action="store_true",
                        help="do not route 0.0.0.0/0 into the tunnel")
    parser.add_argument("--default-route-distance", type=int, default=210, help="metric of the default route")
    parser.add_argument("--route", action="append", default=[], metavar="CIDR",
                        help="route this prefix into the tunnel (repeatable)")
    parser.add_argument("--no-peer-dns", action="store_true", help="ignore DNS servers the server offers")
    parser.add_argument("--resolv-conf", type=Path,
                        help="write the server's DNS servers to this file (restored on disconnect)")
    parser.add_argument("--auth", default=",".join(m.value for m in DEFAULT_AUTH_ORDER),
                        help="allowed methods, comma separated: mschap-v2,mschap,chap,pap,eap")
    parser.add_argument("--eap-ca", type=Path, metavar="FILE",
                        help="CA certificate(s) (PEM) of the RADIUS server's certificate: enables PEAP")
    parser.add_argument("--eap-cert", type=Path, metavar="FILE",
                        help="client certificate (PEM, chain allowed) for EAP-TLS; needs --eap-key, --eap-ca")
    parser.add_argument("--eap-key", type=Path, metavar="FILE", help="private key (PEM) of --eap-cert")
    parser.add_argument("--http-proxy", metavar="HOST:PORT", help="connect through an HTTP CONNECT proxy")
    parser.add_argument("--keepalive", type=float, default=60.0,
                        help="seconds without answer before the link is declared dead (0 = off)")
    parser.add_argument("--no-ipv4", action="store_true", help="do not negotiate IPv4 (IPCP): IPv6 only")
    parser.add_argument("--no-ipv6", action="store_true", help="do not negotiate IPv6 (IPV6CP)")
    parser.add_argument("--no-prefix-delegation", action="store_true",
                        help="do not ask for a delegated IPv6 prefix (DHCPv6-PD)")
    parser.add_argument("--delegated-prefix-interface", metavar="IFNAME",
                        help="put the first /64 of the delegated prefix (address ::1) on this interface")
    parser.add_argument("--once", action="store_true", help="do not reconnect; exit when the session ends")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


class UsageError(Exception):
    pass


def _host_port(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--http-proxy {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _read_optional(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None


def options_from_args(args: argparse.Namespace) -> ClientOptions:
    if args.password_file is not None:
        try:
            lines = args.password_file.read_text().splitlines()
        except OSError as error:
            raise UsageError(f"cannot read {args.password_file}: {error.strerror or error}") from None
        password = lines[0] if lines else ""
    else:
        password = args.password
    ca_data = None
    if args.ca is not None:
        try:
            ca_data = args.ca.read_text()
        except OSError as error:
            raise UsageError(f"cannot read {args.ca}: {error.strerror or error}") from None
    eap_ca, eap_certificate, eap_key = (_read_optional(path) for path in (args.eap_ca, args.eap_cert,
                                                                          args.eap_key))
    if (eap_certificate is None) != (eap_key is None):
        raise UsageError("--eap-cert and --eap-key go together")
    if eap_certificate is not None and eap_ca is None:
        raise UsageError("--eap-cert needs --eap-ca: the server's certificate must be checked")
    try:
        methods = tuple(AuthMethod(name.strip()) for name in args.auth.split(",") if name.strip())
    except ValueError as error:
        raise UsageError(f"--auth: {error}; known: {', '.join(m.value for m in AuthMethod)}") from None
    if not methods:
        raise UsageError("--auth: at least one method is needed")
    try:
        routes = tuple(ipaddress.IPv4Network(r, strict=False) for r in args.route)
    except ValueError as error:
        raise UsageError(f"--route: {error}") from None
    if not 68 <= args.mtu <= 4087:
        raise UsageError("--mtu must be within 68..4087")
    if args.no_ipv4 and args.no_ipv6:
        raise UsageError("--no-ipv4 and --no-ipv6 leave nothing to carry")
    return build_options(
        server=args.server, port=args.port, username=args.user, password=password, ca_data=ca_data,
        verify_certificate=not args.no_verify, verify_name=not args.no_verify_name, sni=args.sni,
        add_sni=not args.no_sni, ifname=args.ifname, mtu=args.mtu, default_route=not args.no_default_route,
        default_route_distance=args.default_route_distance, routes=routes, peer_dns=not args.no_peer_dns,
        resolv_conf=args.resolv_conf, methods=methods,
        http_proxy=_host_port(args.http_proxy) if args.http_proxy else None, keepalive=args.keepalive,
        ipv4=not args.no_ipv4, ipv6=not args.no_ipv6, prefix_delegation=not args.no_prefix_delegation,
        eap_ca=eap_ca, eap_certificate=eap_certificate, eap_key=eap_key,
        delegated_prefix_interface=args.delegated_prefix_interface,
    )


def run_client(args: argparse.Namespace) -> int:
    """The `vpnd client` verb."""
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pyroute2").setLevel(logging.WARNING)  # its debug output is per netlink message
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    try:
        options = options_from_args(args)
    except UsageError as error:
        log.error("%s", error)
        return EXIT_USAGE
    runner = ClientRunner(options, once=args.once)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            name = signal.Signals(number).name
            loop.add_signal_handler(number, runner.stop, f"{name} received")
        return await runner.run()

    return asyncio.run(main())


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("client", help="connect to an SSTP server and carry IP over a TUN interface")
    add_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, paths: object) -> int:
    return run_client(args)
