"""What the runtime takes from a validated `vpn sstp` config, in the shapes its parts want."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address

from vpnd.config.definitions import Limits, SstpServer
from vpnd.ipam.pool import PoolRange, PoolSpec
from vpnd.proto.http import HttpPolicy
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.fsm import FsmTimers
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.ppp.mppe import MppePolicy, MppeSettings
from vpnd.proto.session import ServerSessionSettings
from vpnd.proto.sstp.channel import ChannelSettings
from vpnd.proto.sstp.packets import HashProtocol

# The server proposes the strongest allowed method first; the client's Nak walks down the list.
METHOD_PREFERENCE = (AuthMethod.MSCHAP_V2, AuthMethod.MSCHAP_V1, AuthMethod.CHAP_MD5, AuthMethod.PAP)
MAX_SSTP_MTU = 4087  # PPP information field that fits a 4095-byte SSTP packet


class SettingsError(Exception):
    """The config cannot run (verify should have said so); the message names what is missing."""


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    port: int
    gateway: IPv4Address
    dns: tuple[IPv4Address, ...]
    wins: tuple[IPv4Address, ...]
    mtu: int
    auth_methods: tuple[AuthMethod, ...]
    ipv6: bool
    pools: tuple[PoolSpec, ...]
    default_pool: str | None
    host_name: str | None
    http_error: str  # allow, deny or a redirect URL
    max_sessions: int | None  # sessions starting at once (None: no limit)
    mppe: MppeSettings
    negotiation_timeout: float  # seconds per negotiation phase
    connection_limit: tuple[str, int | None, int | None] | None  # (N/sec|N/min, burst, timeout)
    auth_delay_cap: float  # longest authentication throttle (0: off)
    single_session: str | None  # deny, replace or None

    def session_settings(self, cert_hashes: dict[HashProtocol, bytes],
                         lcp_echo: tuple[float, int, float]) -> ServerSessionSettings:
        interval, failure, timeout = lcp_echo
        lcp = LcpSettings(mru=self.mtu, max_peer_mru=self.mtu, auth_methods=self.auth_methods,
                          echo_interval=interval, echo_failure=failure, echo_timeout=timeout,
                          timers=FsmTimers())
        deadline = self.negotiation_timeout
        return ServerSessionSettings(
            cert_hashes=cert_hashes,
            link=LinkSettings(lcp=lcp, ipv6_enabled=self.ipv6),
            http=HttpPolicy(http_error=self.http_error, host_name=self.host_name),
            channel=ChannelSettings(negotiation_timeout=deadline),
            http_timeout=deadline,
            ncp_timeout=deadline,
            mppe=self.mppe,
        )


def _pool_range(text: str) -> PoolRange:
    if "-" in text:
        first, last = text.split("-", 1)
        return (IPv4Address(first.strip()), IPv4Address(last.strip()))
    return IPv4Network(text, strict=False)


def service_settings(sstp: SstpServer) -> ServiceSettings:
    if sstp.gateway_address is None:
        raise SettingsError("vpn sstp gateway-address is required to run: it is the server's address on "
                            "every client link")
    allowed = {AuthMethod(p) for p in sstp.authentication.protocols}
    methods = tuple(m for m in METHOD_PREFERENCE if m in allowed)
    if not methods:
        raise SettingsError("vpn sstp authentication protocols: no method allowed")
    dns = tuple(a for a in (ip_address(str(s)) for s in sstp.name_server) if isinstance(a, IPv4Address))
    pools = tuple(PoolSpec(name, [_pool_range(r) for r in pool.range], pool.next_pool)
                  for name, pool in sstp.client_ip_pool.items())
    default_pool = sstp.default_pool or (next(iter(sstp.client_ip_pool)) if len(sstp.client_ip_pool) == 1
                                         else None)
    mtu = min(sstp.mtu, sstp.ppp_options.mru or sstp.mtu, MAX_SSTP_MTU)
    limits = sstp.limits or Limits()
    return ServiceSettings(
        port=sstp.port,
        gateway=IPv4Address(sstp.gateway_address),
        dns=dns[:2],
        wins=tuple(IPv4Address(w) for w in sstp.wins_server[:2]),
        mtu=mtu,
        auth_methods=methods,
        ipv6=sstp.ppp_options.ipv6 != "deny",
        pools=pools,
        default_pool=default_pool,
        host_name=sstp.host_name,
        http_error=sstp.http_error,
        # 0 is "no limit", as accel-ppp's max-starting that this node sets in VyOS.
        max_sessions=sstp.max_concurrent_sessions or None,
        # Windows SSTP clients do not negotiate CCP: under "prefer" they get IP in the clear at
        # once (their Protocol-Reject of CCP ends the attempt); disable-ccp means deny.
        mppe=MppeSettings(MppePolicy.DENY if sstp.ppp_options.disable_ccp
                          else MppePolicy(sstp.ppp_options.mppe)),
        negotiation_timeout=float(limits.negotiation_timeout),
        connection_limit=(None if limits.connection_limit is None
                          else (limits.connection_limit, limits.burst, limits.timeout)),
        auth_delay_cap=float(limits.authentication_failure_delay),
        single_session=limits.single_session,
    )


def lcp_echo(sstp: SstpServer) -> tuple[float, int, float]:
    options = sstp.ppp_options
    return float(options.lcp_echo_interval), options.lcp_echo_failure, float(options.lcp_echo_timeout)
