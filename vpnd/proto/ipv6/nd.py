"""Neighbor Discovery on the PPP link: the server advertises, the client solicits and autoconfigures.

Server (`RouterAdvertiser`, RFC 4861 §6.2): router advertisements from fe80::<server id> to
ff02::1 with the session's prefixes (on-link, autonomous), the link MTU and RDNSS (RFC 8106);
the first MAX_INITIAL_RTR_ADVERTISEMENTS come at most MAX_INITIAL_RTR_ADVERT_INTERVAL apart,
then every MinRtrAdvInterval..MaxRtrAdvInterval. Router solicitations are answered to the
solicitor after the random delay of §6.2.6, never sooner than MIN_DELAY_BETWEEN_RAS after the
previous advertisement. `stop` sends the final advertisement of §6.2.5 (router lifetime 0, prefix
and RDNSS lifetimes 0).

Client (`RouterSolicitor`, RFC 4861 §6.3.7 with the back-off of RFC 7559: IRT 4 s doubling with
±10 % jitter up to 3600 s): solicitations until an advertisement arrives, then SLAAC (RFC 4862
§5.5.3): prefix/64 + our interface identifier. Only the server can send on a point-to-point
link, so lifetimes are taken as advertised: the two-hour rule of RFC 4862 §5.5.3 e), which
guards shared links against forged advertisements, would only keep a withdrawn address alive.

Both answer Neighbor Solicitations for their own addresses (RFC 4861 §7.2.4) without a
link-layer address option, as PPP has none (RFC 5072 §5).
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from typing import Literal

from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ipv6.packets import (
    ALL_NODES,
    ALL_ROUTERS,
    ICMPV6_NEIGHBOR_ADVERTISEMENT,
    ICMPV6_NEIGHBOR_SOLICITATION,
    ICMPV6_ROUTER_ADVERTISEMENT,
    ICMPV6_ROUTER_SOLICITATION,
    ND_HOP_LIMIT,
    UNSPECIFIED,
    Bytes,
    Icmpv6Message,
    Ipv6Packet,
    build_icmpv6,
    first_timeout,
    next_timeout,
    parse_icmpv6,
    parse_ipv6,
    random_fraction,
)
from vpnd.proto.ppp.ipv6cp import link_local_address

INFINITE_LIFETIME = 0xFFFFFFFF

# RFC 4861 §10, router and host constants.
MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS = 3.0
MIN_DELAY_BETWEEN_UNICAST_RAS = 1.0  # not in RFC 4861: our bound on answers to one solicitor
MAX_RA_DELAY_TIME = 0.5
MAX_RTR_SOLICITATION_DELAY = 1.0
RTR_SOLICITATION_INTERVAL = 4.0
MAX_RTR_SOLICITATION_INTERVAL = 3600.0  # RFC 7559 §2

MIN_LINK_MTU = 1280

OPT_SOURCE_LINK_LAYER_ADDRESS = 1
OPT_PREFIX_INFORMATION = 3
OPT_MTU = 5
OPT_RDNSS = 25

_LINK_LOCAL = IPv6Network("fe80::/10")
_SOLICITED_NODE = IPv6Network("ff02::1:ff00:0/104")
_RA_HEADER = struct.Struct("!BBHII")
_PREFIX_INFORMATION = struct.Struct("!BBIII16s")
_FLAG_MANAGED = 0x80
_FLAG_OTHER = 0x40
_FLAG_ON_LINK = 0x80
_FLAG_AUTONOMOUS = 0x40
_NA_ROUTER = 0x80
_NA_SOLICITED = 0x40
MAX_RDNSS_SERVERS = 3


# ---- options and messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NdOption:
    type: int
    value: bytes  # after the type and length bytes, padding included


def parse_nd_options(data: bytes) -> list[NdOption]:
    """Options of an ND message; a zero length or one running past the end makes it invalid."""
    options: list[NdOption] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 2:
            raise ProtocolError("truncated ND option header")
        kind, units = data[offset], data[offset + 1]
        if units == 0:
            raise ProtocolError(f"ND option {kind} with length zero")
        end = offset + units * 8
        if end > len(data):
            raise ProtocolError(f"ND option {kind} runs past the end of the message")
        options.append(NdOption(kind, data[offset + 2:end]))
        offset = end
    return options


def encode_nd_option(kind: int, value: bytes) -> bytes:
    if (2 + len(value)) % 8 or len(value) > 255 * 8 - 2:
        raise ValueError("an ND option is a whole number of 8-byte units")
    return bytes((kind, (2 + len(value)) // 8)) + value


@dataclass(frozen=True, slots=True)
class PrefixInformation:
    prefix: IPv6Network
    valid_lifetime: int
    preferred_lifetime: int
    on_link: bool = True
    autonomous: bool = True


@dataclass(frozen=True, slots=True)
class RdnssOption:
    lifetime: int
    servers: tuple[IPv6Address, ...]


@dataclass(frozen=True, slots=True)
class RouterAdvertisement:
    router_lifetime: int
    prefixes: tuple[PrefixInformation, ...] = ()
    mtu: int | None = None
    rdnss: tuple[RdnssOption, ...] = ()
    managed: bool = False
    other_config: bool = False
    cur_hop_limit: int = 64
    reachable_time: int = 0  # milliseconds, 0 = unspecified
    retrans_timer: int = 0  # milliseconds, 0 = unspecified


def encode_router_advertisement(ra: RouterAdvertisement) -> bytes:
    """The ICMPv6 body of an RA (after type, code and checksum)."""
    flags = (_FLAG_MANAGED if ra.managed else 0) | (_FLAG_OTHER if ra.other_config else 0)
    body = bytearray(_RA_HEADER.pack(ra.cur_hop_limit, flags, ra.router_lifetime, ra.reachable_time,
                                     ra.retrans_timer))
    for info in ra.prefixes:
        prefix_flags = (_FLAG_ON_LINK if info.on_link else 0) | (_FLAG_AUTONOMOUS if info.autonomous else 0)
        body += encode_nd_option(OPT_PREFIX_INFORMATION, _PREFIX_INFORMATION.pack(
            info.prefix.prefixlen, prefix_flags, info.valid_lifetime, info.preferred_lifetime, 0,
            info.prefix.network_address.packed))
    if ra.mtu is not None:
        body += encode_nd_option(OPT_MTU, struct.pack("!HI", 0, ra.mtu))
    for rdnss in ra.rdnss:
        body += encode_nd_option(OPT_RDNSS, struct.pack("!HI", 0, rdnss.lifetime)
                                 + b"".join(server.packed for server in rdnss.servers))
    return bytes(body)


def decode_router_advertisement(body: bytes) -> RouterAdvertisement:
    """An RA body; malformed Prefix Information, MTU or RDNSS options are skipped, unknown ones
    ignored (RFC 4861 §4.2, §6.1.2), an option with length zero makes the whole RA invalid."""
    if len(body) < _RA_HEADER.size:
        raise ProtocolError("router advertisement shorter than 16 bytes")
    hop_limit, flags, router_lifetime, reachable, retrans = _RA_HEADER.unpack_from(body)
    prefixes: list[PrefixInformation] = []
    rdnss: list[RdnssOption] = []
    mtu: int | None = None
    for option in parse_nd_options(body[_RA_HEADER.size:]):
        value = option.value
        if option.type == OPT_PREFIX_INFORMATION and len(value) == _PREFIX_INFORMATION.size:
            length, prefix_flags, valid, preferred, _, raw = _PREFIX_INFORMATION.unpack(value)
            if length <= 128:
                network = IPv6Network((IPv6Address(raw), length), strict=False)
                prefixes.append(PrefixInformation(network, valid, preferred,
                                                  on_link=bool(prefix_flags & _FLAG_ON_LINK),
                                                  autonomous=bool(prefix_flags & _FLAG_AUTONOMOUS)))
        elif option.type == OPT_MTU and len(value) == 6:
            mtu = int.from_bytes(value[2:], "big")
        elif option.type == OPT_RDNSS and len(value) >= 22 and (len(value) - 6) % 16 == 0:
            servers = tuple(IPv6Address(value[offset:offset + 16]) for offset in range(6, len(value), 16))
            rdnss.append(RdnssOption(int.from_bytes(value[2:6], "big"), servers))
    return RouterAdvertisement(router_lifetime, tuple(prefixes), mtu, tuple(rdnss),
                               managed=bool(flags & _FLAG_MANAGED), other_config=bool(flags & _FLAG_OTHER),
                               cur_hop_limit=hop_limit, reachable_time=reachable, retrans_timer=retrans)


def build_router_solicitation(source: IPv6Address) -> bytes:
    """An RS to all routers; no source link-layer address option, PPP has none."""
    return build_icmpv6(source, ALL_ROUTERS, ICMPV6_ROUTER_SOLICITATION, 0, bytes(4))


def build_neighbor_solicitation(source: IPv6Address, destination: IPv6Address, target: IPv6Address) -> bytes:
    return build_icmpv6(source, destination, ICMPV6_NEIGHBOR_SOLICITATION, 0, bytes(4) + target.packed)


def _check_nd(packet: Ipv6Packet, message: Icmpv6Message, minimum_body: int) -> list[NdOption]:
    """The checks every ND message shares (RFC 4861 §6.1, §7.1); returns its options."""
    if packet.hop_limit != ND_HOP_LIMIT:
        raise ProtocolError(f"ND message with hop limit {packet.hop_limit}, not 255")
    if message.code != 0:
        raise ProtocolError(f"ND message with code {message.code}")
    if len(message.body) < minimum_body:
        raise ProtocolError("ND message too short")
    return parse_nd_options(message.body[minimum_body:])


def validate_router_solicitation(packet: Ipv6Packet, message: Icmpv6Message) -> None:
    """RFC 4861 §6.1.1 (the checksum was checked when the message was parsed)."""
    options = _check_nd(packet, message, 4)
    if packet.source == UNSPECIFIED and any(o.type == OPT_SOURCE_LINK_LAYER_ADDRESS for o in options):
        raise ProtocolError("router solicitation from :: with a source link-layer address option")


def validate_router_advertisement(packet: Ipv6Packet, message: Icmpv6Message) -> RouterAdvertisement:
    """RFC 4861 §6.1.2: from a link-local source, hop limit 255, code 0, at least 16 bytes."""
    if packet.source not in _LINK_LOCAL:
        raise ProtocolError(f"router advertisement from non-link-local {packet.source}")
    _check_nd(packet, message, 12)
    return decode_router_advertisement(message.body)


def answer_neighbor_solicitation(packet: Ipv6Packet, message: Icmpv6Message, own: Collection[IPv6Address],
                                 router: bool) -> bytes | None:
    """The Neighbor Advertisement for a valid NS whose target is one of ``own`` (RFC 4861 §7.2.4).

    A solicitation from :: is duplicate address detection by someone wanting our address: the
    answer goes to all nodes, unsolicited. Override is clear since no target link-layer address
    option is included (§7.2.4).
    """
    options = _check_nd(packet, message, 20)
    target = IPv6Address(message.body[4:20])
    if target.is_multicast:
        raise ProtocolError("neighbor solicitation for a multicast target")
    if packet.source == UNSPECIFIED:
        if packet.destination not in _SOLICITED_NODE:
            raise ProtocolError("duplicate address detection not sent to a solicited-node address")
        if any(o.type == OPT_SOURCE_LINK_LAYER_ADDRESS for o in options):
            raise ProtocolError("neighbor solicitation from :: with a source link-layer address option")
    if target not in own:
        return None
    solicited = packet.source != UNSPECIFIED
    flags = (_NA_ROUTER if router else 0) | (_NA_SOLICITED if solicited else 0)
    destination = packet.source if solicited else ALL_NODES
    return build_icmpv6(target, destination, ICMPV6_NEIGHBOR_ADVERTISEMENT, 0,
                        bytes((flags, 0, 0, 0)) + target.packed)


def _parse_icmp(packet: Bytes) -> tuple[Ipv6Packet, Icmpv6Message]:
    parsed = parse_ipv6(packet)
    return parsed, parse_icmpv6(parsed)


def _expiry(now: float, lifetime: int) -> float | None:
    return None if lifetime == INFINITE_LIFETIME else now + lifetime


# ---- server: router advertisements ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterAdvertiserConfig:
    """What a session's router advertisements say.

    ``other_config`` is the O flag: set it when DHCPv6 serves something on the session (DNS or a
    delegated prefix). M stays off: addresses come from SLAAC. ``router_lifetime`` and
    ``dns_lifetime`` default to 3 × MaxRtrAdvInterval (RFC 4861 §6.2.1, RFC 8106 §5.1).
    """

    prefixes: tuple[PrefixInformation, ...] = ()
    mtu: int | None = None
    dns_servers: tuple[IPv6Address, ...] = ()
    dns_lifetime: int | None = None
    router_lifetime: int | None = None
    managed: bool = False
    other_config: bool = False
    max_interval: float = 600.0
    min_interval: float | None = None  # None: 0.33 × max_interval, or max_interval below 9 s (§6.2.1)
    cur_hop_limit: int = 64

    def __post_init__(self) -> None:
        if not 4 <= self.max_interval <= 1800:
            raise ValueError("MaxRtrAdvInterval must be 4..1800 seconds (RFC 4861 §6.2.1)")
        if self.min_interval is not None and not 3 <= self.min_interval <= 0.75 * self.max_interval:
            raise ValueError("MinRtrAdvInterval must be 3 s..0.75 × MaxRtrAdvInterval")
        if self.router_lifetime is not None and not (
                self.router_lifetime == 0 or self.max_interval <= self.router_lifetime <= 9000):
            raise ValueError("router lifetime must be 0 or MaxRtrAdvInterval..9000 seconds")
        if len(self.dns_servers) > MAX_RDNSS_SERVERS:
            raise ValueError(f"at most {MAX_RDNSS_SERVERS} RDNSS servers")
        if self.mtu is not None and not MIN_LINK_MTU <= self.mtu <= 0xFFFFFFFF:
            raise ValueError(f"link MTU must be at least {MIN_LINK_MTU}")
        for info in self.prefixes:
            if info.preferred_lifetime > info.valid_lifetime:
                raise ValueError(f"{info.prefix}: preferred lifetime exceeds valid lifetime")
        if self.dns_lifetime is not None and not 0 <= self.dns_lifetime <= INFINITE_LIFETIME:
            raise ValueError("RDNSS lifetime out of range")

    @property
    def effective_min_interval(self) -> float:
        if self.min_interval is not None:
            return self.min_interval
        return 0.33 * self.max_interval if self.max_interval >= 9 else self.max_interval

    def advertisement(self) -> RouterAdvertisement:
        router_lifetime = self.router_lifetime
        if router_lifetime is None:
            router_lifetime = min(int(3 * self.max_interval), 9000)
        rdnss: tuple[RdnssOption, ...] = ()
        if self.dns_servers:
            lifetime = self.dns_lifetime if self.dns_lifetime is not None else int(3 * self.max_interval)
            rdnss = (RdnssOption(lifetime, self.dns_servers),)
        return RouterAdvertisement(router_lifetime, self.prefixes, self.mtu, rdnss, self.managed,
                                   self.other_config, self.cur_hop_limit)


def final_advertisement(ra: RouterAdvertisement) -> RouterAdvertisement:
    """The same RA with every lifetime zero: we stop routing and the prefixes and DNS go away."""
    prefixes = tuple(replace(info, valid_lifetime=0, preferred_lifetime=0) for info in ra.prefixes)
    rdnss = tuple(replace(option, lifetime=0) for option in ra.rdnss)
    return replace(ra, router_lifetime=0, prefixes=prefixes, rdnss=rdnss)


class RouterAdvertiser:
    """Router advertisements and solicitation answers for one session (server side).

    Feed it the packets `classify` calls ROUTER_SOLICITATION or NEIGHBOR_SOLICITATION. The first
    advertisement is ready in `packets_to_send` right after construction. Bad packets are dropped
    and counted in ``dropped`` by reason; nothing raises.
    """

    def __init__(self, config: RouterAdvertiserConfig, interface_id: bytes, now: float,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.config = config
        self.address = link_local_address(interface_id)
        self._random_bytes = random_bytes
        self._ra_body = encode_router_advertisement(config.advertisement())
        self._out: list[bytes] = []
        self._initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS
        self._next_unsolicited: float | None = now
        self._solicited_at: float | None = None
        self._solicited_to: IPv6Address | None = None
        self._last_sent: float | None = None
        self._last_unicast: float | None = None
        self.stopped = False
        self.advertisements_sent = 0
        self.dropped: Counter[str] = Counter()
        self.handle_timer(now)

    # ---- runtime API ----------------------------------------------------------------------

    def receive_packet(self, packet: Bytes, now: float) -> None:
        if self.stopped:
            return
        try:
            parsed, message = _parse_icmp(packet)
            if message.type == ICMPV6_ROUTER_SOLICITATION:
                validate_router_solicitation(parsed, message)
                self._solicited(parsed.source, now)
            elif message.type == ICMPV6_NEIGHBOR_SOLICITATION:
                answer = answer_neighbor_solicitation(parsed, message, (self.address,), router=True)
                if answer is not None:
                    self._out.append(answer)
            else:
                self.dropped["not a solicitation"] += 1
        except ProtocolError as error:
            self.dropped[f"invalid: {error}"] += 1

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> None:
        """No events: the advertiser only talks on the link."""
        return None

    def get_timer(self) -> float | None:
        deadlines = [t for t in (self._next_unsolicited, self._solicited_at) if t is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self.stopped:
            return
        if self._solicited_at is not None and self._solicited_at <= now:
            self._send(self._solicited_to or ALL_NODES, now)
        if self._next_unsolicited is not None and self._next_unsolicited <= now:
            self._send(ALL_NODES, now)
            interval = self.config.effective_min_interval + random_fraction(self._random_bytes) * (
                self.config.max_interval - self.config.effective_min_interval)
            if self._initial_left > 0:
                self._initial_left -= 1
                if self._initial_left > 0:
                    interval = min(interval, MAX_INITIAL_RTR_ADVERT_INTERVAL)
            self._next_unsolicited = now + interval

    def stop(self, now: float) -> None:
        """Send the final advertisement (router, prefix and RDNSS lifetimes 0) and go quiet."""
        if self.stopped:
            return
        final = final_advertisement(self.config.advertisement())
        self._out.append(build_icmpv6(self.address, ALL_NODES, ICMPV6_ROUTER_ADVERTISEMENT, 0,
                                      encode_router_advertisement(final)))
        self.advertisements_sent += 1
        self.stopped = True
        self._next_unsolicited = self._solicited_at = None

    # ---- internals ------------------------------------------------------------------------

    def _solicited(self, source: IPv6Address, now: float) -> None:
        # One answer however many solicitations arrive before it; to all nodes when two
        # different sources (or ::) are waiting.
        destination = ALL_NODES if source == UNSPECIFIED else source
        if self._solicited_at is not None:
            if destination != self._solicited_to:
                self._solicited_to = ALL_NODES
            return
        at = now + random_fraction(self._random_bytes) * MAX_RA_DELAY_TIME
        # Only advertisements to all nodes are rate-limited (RFC 4861 §6.2.6): a unicast answer
        # need not wait, which matters when the first advertisement reached the client before
        # its IPV6CP was open and was dropped there.
        if self._last_sent is not None and destination == ALL_NODES:
            at = max(at, self._last_sent + MIN_DELAY_BETWEEN_RAS)
        elif self._last_unicast is not None:  # our own bound, so a flood of solicitations stays cheap
            at = max(at, self._last_unicast + MIN_DELAY_BETWEEN_UNICAST_RAS)
        self._solicited_at = at
        self._solicited_to = destination

    def _send(self, destination: IPv6Address, now: float) -> None:
        self._out.append(build_icmpv6(self.address, destination, ICMPV6_ROUTER_ADVERTISEMENT, 0,
                                      self._ra_body))
        self.advertisements_sent += 1
        self._last_sent = now
        if destination != ALL_NODES:
            self._last_unicast = now
        # Any advertisement answers a pending solicitation: on a point-to-point link the
        # solicitor is the only node that hears either one.
        self._solicited_at = self._solicited_to = None
        if self._next_unsolicited is not None:
            self._next_unsolicited = max(self._next_unsolicited, now + MIN_DELAY_BETWEEN_RAS)


# ---- client: solicitation and SLAAC -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DefaultRouter:
    """The default router changed: ``router`` is None when there is none any more."""

    router: IPv6Address | None
    lifetime: int


@dataclass(frozen=True, slots=True)
class AddressAssigned:
    """A SLAAC address is new or its lifetimes were refreshed (seconds, 0xFFFFFFFF = infinite)."""

    address: IPv6Interface
    preferred_lifetime: int
    valid_lifetime: int


@dataclass(frozen=True, slots=True)
class AddressRemoved:
    address: IPv6Interface
    reason: str


@dataclass(frozen=True, slots=True)
class LinkMtu:
    mtu: int


@dataclass(frozen=True, slots=True)
class DnsServers:
    """The set of IPv6 DNS servers learnt from ``source`` changed (empty: none left)."""

    servers: tuple[IPv6Address, ...]
    source: Literal["ra", "dhcpv6"]


HostEvent = DefaultRouter | AddressAssigned | AddressRemoved | LinkMtu | DnsServers


class RouterSolicitor:
    """Router discovery and SLAAC for our client on the PPP link.

    Feed it the packets `classify` calls ROUTER_ADVERTISEMENT or NEIGHBOR_SOLICITATION. The first
    solicitation goes out after a random delay of up to MAX_RTR_SOLICITATION_DELAY, then with
    intervals doubling from RTR_SOLICITATION_INTERVAL up to MAX_RTR_SOLICITATION_INTERVAL until an
    advertisement arrives.
    """

    def __init__(self, interface_id: bytes, now: float,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if len(interface_id) != 8:
            raise ValueError("an interface identifier is 8 bytes")
        self.interface_id = interface_id
        self.address = link_local_address(interface_id)
        self._random_bytes = random_bytes
        self._out: list[bytes] = []
        self._events: Fifo[HostEvent] = Fifo()
        delay = random_fraction(random_bytes) * MAX_RTR_SOLICITATION_DELAY
        self._next_solicitation: float | None = now + delay
        self._solicitation_interval: float | None = None
        self.solicitations_sent = 0
        self.router: IPv6Address | None = None
        self._router_expires: float | None = None
        self.addresses: dict[IPv6Interface, float | None] = {}  # address → end of its valid lifetime
        self.mtu: int | None = None
        self._dns: dict[IPv6Address, float | None] = {}  # server → end of its lifetime
        self.dropped: Counter[str] = Counter()

    @property
    def dns_servers(self) -> tuple[IPv6Address, ...]:
        return tuple(self._dns)

    # ---- runtime API ----------------------------------------------------------------------

    def receive_packet(self, packet: Bytes, now: float) -> None:
        try:
            parsed, message = _parse_icmp(packet)
            if message.type == ICMPV6_ROUTER_ADVERTISEMENT:
                self._advertised(parsed.source, validate_router_advertisement(parsed, message), now)
            elif message.type == ICMPV6_NEIGHBOR_SOLICITATION:
                own = {self.address, *(interface.ip for interface in self.addresses)}
                answer = answer_neighbor_solicitation(parsed, message, own, router=False)
                if answer is not None:
                    self._out.append(answer)
            else:
                self.dropped["not an advertisement or solicitation"] += 1
        except ProtocolError as error:
            self.dropped[f"invalid: {error}"] += 1

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> HostEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [self._next_solicitation, self._router_expires, *self.addresses.values(),
                     *self._dns.values()]
        present = [deadline for deadline in deadlines if deadline is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        if self._next_solicitation is not None and self._next_solicitation <= now:
            self._out.append(build_router_solicitation(self.address))
            self.solicitations_sent += 1
            if self._solicitation_interval is None:
                self._solicitation_interval = first_timeout(RTR_SOLICITATION_INTERVAL, self._random_bytes)
            else:
                self._solicitation_interval = next_timeout(self._solicitation_interval,
                                                           MAX_RTR_SOLICITATION_INTERVAL, self._random_bytes)
            self._next_solicitation = now + self._solicitation_interval
        if self._router_expires is not None and self._router_expires <= now:
            self._set_router(None, 0, now)
        for address, valid_until in list(self.addresses.items()):
            if valid_until is not None and valid_until <= now:
                del self.addresses[address]
                self._events.append(AddressRemoved(address, "valid lifetime expired"))
        expired = [server for server, until in self._dns.items() if until is not None and until <= now]
        if expired:
            for server in expired:
                del self._dns[server]
            self._events.append(DnsServers(self.dns_servers, "ra"))

    # ---- internals ------------------------------------------------------------------------

    def _advertised(self, router: IPv6Address, ra: RouterAdvertisement, now: float) -> None:
        self._next_solicitation = None
        self._set_router(router if ra.router_lifetime else None, ra.router_lifetime, now)
        for info in ra.prefixes:
            self._autoconfigure(info, now)
        if ra.mtu is not None and ra.mtu >= MIN_LINK_MTU and ra.mtu != self.mtu:
            self.mtu = ra.mtu
            self._events.append(LinkMtu(ra.mtu))
        before = self.dns_servers
        for option in ra.rdnss:
            for server in option.servers:
                if option.lifetime == 0:
                    self._dns.pop(server, None)
                elif not server.is_multicast and server != UNSPECIFIED:
                    self._dns[server] = _expiry(now, option.lifetime)
        if self.dns_servers != before:
            self._events.append(DnsServers(self.dns_servers, "ra"))

    def _set_router(self, router: IPv6Address | None, lifetime: int, now: float) -> None:
        changed = router != self.router
        self.router = router
        self._router_expires = None if router is None else now + lifetime
        if changed:
            self._events.append(DefaultRouter(router, lifetime))

    def _autoconfigure(self, info: PrefixInformation, now: float) -> None:
        """RFC 4862 §5.5.3: autonomous, not link-local, preferred ≤ valid, /64 for our 64-bit id."""
        if not info.autonomous or info.prefix.network_address in _LINK_LOCAL:
            return
        if info.preferred_lifetime > info.valid_lifetime:
            self.dropped["prefix with preferred lifetime above valid lifetime"] += 1
            return
        if info.prefix.prefixlen != 64:
            self.dropped["autonomous prefix not /64"] += 1
            return
        address = IPv6Interface((IPv6Address(info.prefix.network_address.packed[:8] + self.interface_id), 64))
        if info.valid_lifetime == 0:
            if address in self.addresses:
                del self.addresses[address]
                self._events.append(AddressRemoved(address, "withdrawn by the router"))
            return
        self.addresses[address] = _expiry(now, info.valid_lifetime)
        self._events.append(AddressAssigned(address, info.preferred_lifetime, info.valid_lifetime))
