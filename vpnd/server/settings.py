"""What the runtime takes from a validated `vpn sstp` config, in the shapes its parts want."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from vpnd.config.definitions import DEFAULT_GATEWAY, Allowance, Limits, SstpServer, range_network
from vpnd.config.verify import MAX_DNS_V6
from vpnd.ipam.pool import PoolRange, PoolSpec
from vpnd.ipam.prefix_pool import PrefixPoolSpec, PrefixRange
from vpnd.proto.eap.tls_server import EapTlsServerSettings
from vpnd.proto.http import HttpPolicy
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.fsm import FsmTimers
from vpnd.proto.ppp.ipv6cp import PeerInterfaceIdPolicy, parse_interface_id
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.ppp.mppe import MppePolicy, MppeSettings
from vpnd.proto.session import ServerSessionSettings
from vpnd.proto.sstp.channel import ChannelSettings
from vpnd.proto.sstp.packets import HashProtocol
from vpnd.server.limits import ThrottleSettings

# The server proposes the strongest allowed method first; the client's Nak walks down the list.
# EAP leads when allowed: Windows profiles made in Settings and Always On VPN ask for it, and a
# client without EAP (sstpc with pppd, RouterOS) Naks it and gets the next one.
METHOD_PREFERENCE = (AuthMethod.EAP, AuthMethod.MSCHAP_V2, AuthMethod.MSCHAP_V1, AuthMethod.CHAP_MD5,
                     AuthMethod.PAP)
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
    pools: tuple[PoolSpec, ...]
    default_pool: str | None
    host_name: str | None
    http_error: str  # allow, deny or a redirect URL
    max_sessions: int | None  # sessions starting at once (None: no limit)
    mppe: MppeSettings
    negotiation_timeout: float  # seconds per negotiation phase
    connection_limit: tuple[str, int | None, int | None] | None  # (N/sec|N/min, burst, timeout)
    auth_throttle: ThrottleSettings | None  # None: limits authentication-failure-delay 0
    single_session: str | None  # deny, replace or None
    eap_relay: bool = False  # RADIUS mode: EAP passes through to the RADIUS server (RFC 3579)
    # IPv6
    ipv6_policy: Allowance = "deny"  # ppp-options ipv6
    ipv6_pools: tuple[PrefixPoolSpec, ...] = ()
    default_ipv6_pool: str | None = None
    dns_ipv6: tuple[IPv6Address, ...] = ()
    ipv6_interface_id: bytes | None = None  # ppp-options ipv6-interface-id; None: random
    ipv6_peer_interface_id: PeerInterfaceIdPolicy | None = None
    ipv6_accept_peer_interface_id: bool = False
    # Local users' static-ip: set aside, so that no pool leases them to someone else.
    static_addresses: tuple[IPv4Address, ...] = ()

    @property
    def ipv6(self) -> bool:
        """IPV6CP runs at all (allow, prefer, require)."""
        return self.ipv6_policy != "deny"

    def session_settings(self, cert_hashes: dict[HashProtocol, bytes],
                         lcp_echo: tuple[float, int, float],
                         eap_tls: EapTlsServerSettings | None = None) -> ServerSessionSettings:
        interval, failure, timeout = lcp_echo
        lcp = LcpSettings(mru=self.mtu, max_peer_mru=self.mtu, auth_methods=self.auth_methods,
                          echo_interval=interval, echo_failure=failure, echo_timeout=timeout,
                          timers=FsmTimers())
        deadline = self.negotiation_timeout
        return ServerSessionSettings(
            cert_hashes=cert_hashes,
            link=LinkSettings(lcp=lcp, ipv6_enabled=self.ipv6, ipv6_passive=self.ipv6_policy == "allow",
                              ipv6_required=self.ipv6_policy == "require",
                              ipv6_interface_id=self.ipv6_interface_id,
                              ipv6_peer_interface_id=self.ipv6_peer_interface_id,
                              ipv6_accept_peer_interface_id=self.ipv6_accept_peer_interface_id),
            http=HttpPolicy(http_error=self.http_error, host_name=self.host_name),
            channel=ChannelSettings(negotiation_timeout=deadline),
            http_timeout=deadline,
            ncp_timeout=deadline,
            mppe=self.mppe,
            eap_relay=self.eap_relay,
            eap_tls=eap_tls,
        )


def _pool_range(text: str) -> PoolRange:
    if "-" in text:
        first, last = text.split("-", 1)
        return (IPv4Address(first.strip()), IPv4Address(last.strip()))
    return range_network(text)


def _ipv6_pools(sstp: SstpServer) -> tuple[PrefixPoolSpec, ...]:
    pools = []
    for name, pool in sstp.client_ipv6_pool.items():
        delegates = []
        for network, delegate in pool.delegate.items():
            if delegate.delegation_prefix is None:
                raise SettingsError(f"vpn sstp client-ipv6-pool {name} delegate {network}: "
                                    "delegation-prefix is required")
            delegates.append(PrefixRange(network, delegate.delegation_prefix))
        prefixes = [PrefixRange(network, options.mask) for network, options in pool.prefix.items()]
        pools.append(PrefixPoolSpec(name, tuple(prefixes), tuple(delegates)))
    return tuple(pools)


def service_settings(sstp: SstpServer) -> ServiceSettings:
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
    options = sstp.ppp_options
    dns_ipv6 = tuple(a for a in (ip_address(str(s)) for s in sstp.name_server) if isinstance(a, IPv6Address))
    default_ipv6_pool = sstp.default_ipv6_pool or (next(iter(sstp.client_ipv6_pool))
                                                   if len(sstp.client_ipv6_pool) == 1 else None)
    try:
        local_id = options.ipv6_interface_id
        ipv6_interface_id = parse_interface_id(local_id) if local_id not in (None, "random") else None
        peer_id = options.ipv6_peer_interface_id
        ipv6_peer_interface_id = PeerInterfaceIdPolicy.parse(peer_id) if peer_id is not None else None
    except ValueError as error:
        raise SettingsError(f"vpn sstp ppp-options: {error}") from None
    limits = sstp.limits or Limits()
    return ServiceSettings(
        port=sstp.port,
        gateway=IPv4Address(sstp.gateway_address) if sstp.gateway_address is not None else DEFAULT_GATEWAY,
        dns=dns[:2],
        wins=tuple(IPv4Address(w) for w in sstp.wins_server[:2]),
        mtu=mtu,
        auth_methods=methods,
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
        ipv6_policy=options.ipv6,
        ipv6_pools=_ipv6_pools(sstp),
        default_ipv6_pool=default_ipv6_pool,
        dns_ipv6=dns_ipv6[:MAX_DNS_V6],
        ipv6_interface_id=ipv6_interface_id,
        ipv6_peer_interface_id=ipv6_peer_interface_id,
        ipv6_accept_peer_interface_id=options.ipv6_accept_peer_interface_id,
        negotiation_timeout=float(limits.negotiation_timeout),
        connection_limit=(None if limits.connection_limit is None
                          else (limits.connection_limit, limits.burst, limits.timeout)),
        auth_throttle=_auth_throttle(limits),
        single_session=limits.single_session,
        static_addresses=tuple(user.static_ip for user in sstp.authentication.local_users.username.values()
                               if user.static_ip is not None),
        eap_relay=sstp.authentication.mode == "radius",
    )


def _auth_throttle(limits: Limits) -> ThrottleSettings | None:
    if limits.authentication_failure_delay <= 0:
        return None
    return ThrottleSettings(cap=float(limits.authentication_failure_delay),
                            window=float(limits.authentication_failure_window),
                            spraying_threshold=limits.authentication_spraying_threshold,
                            trust_time=float(limits.authentication_trusted_time))


# MS-MPPE-Encryption-Types bits (RFC 2548 §2.4.5; 0x08 is Microsoft's 56-bit).
_MPPE_TYPE_BITS = {0x02: 40, 0x08: 56, 0x04: 128}
_MPPE_POLICIES = {0: MppePolicy.DENY, 1: MppePolicy.PREFER, 2: MppePolicy.REQUIRE}


def session_mppe(attributes: dict[str, object], service: MppeSettings) -> MppeSettings | None:
    """The MPPE settings a RADIUS Access-Accept asks for this session, or None to keep the
    service's. MS-MPPE-Encryption-Policy 0 (forbidden) means deny, 1 (allowed) prefer and 2
    (required) require; MS-MPPE-Encryption-Types narrows the key lengths. Values with no known
    meaning are ignored rather than turned into something the operator did not ask for."""
    policy = attributes.get("mppe_policy")
    types = attributes.get("mppe_types")
    chosen = _MPPE_POLICIES.get(policy) if isinstance(policy, int) else None
    lengths = frozenset(length for bit, length in _MPPE_TYPE_BITS.items()
                        if isinstance(types, int) and types & bit)
    if chosen is None and not lengths:
        return None
    return MppeSettings(chosen or service.policy, lengths or service.key_lengths)


def lcp_echo(sstp: SstpServer) -> tuple[float, int, float]:
    options = sstp.ppp_options
    return float(options.lcp_echo_interval), options.lcp_echo_failure, float(options.lcp_echo_timeout)
