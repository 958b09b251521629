"""The IPv6 link services of one session, between its PPP link and its TUN, for either role.

IPv6 packets that arrive from the peer are sorted here: neighbour discovery and DHCPv6 between
the two ends of the link go to the sans-I/O objects of `vpnd.proto.ipv6` (server: router
advertiser and DHCPv6 server; client: router solicitor and prefix-delegation client), the kind
the other role sends is dropped, and everything else is returned for the kernel. What the objects
answer goes back to the peer on the same link, never into the TUN. Their timers are folded into
one deadline for the connection's loop timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from ipaddress import IPv6Address, IPv6Network
from typing import Protocol, TypeVar

from vpnd.proto.ipv6.dhcpv6 import HARDWARE_TYPE_EUI64, duid_ll
from vpnd.proto.ipv6.dhcpv6_client import Dhcpv6PdClient
from vpnd.proto.ipv6.dhcpv6_server import Dhcpv6Server, Dhcpv6ServerConfig
from vpnd.proto.ipv6.nd import PrefixInformation, RouterAdvertiser, RouterAdvertiserConfig, RouterSolicitor
from vpnd.proto.ipv6.packets import LinkPacket, classify
from vpnd.runtime.deadline import DeadlineTimer

Packet = bytes | memoryview
P = TypeVar("P", bytes, memoryview)

# Lifetimes announced for a session's prefix: the session may end at any moment, and a final
# advertisement withdraws it, so these only bound how long a lost session's address lingers.
PREFIX_VALID_LIFETIME = 86400
PREFIX_PREFERRED_LIFETIME = 14400


class LinkService(Protocol):
    def receive_packet(self, packet: Packet, now: float) -> None: ...
    def packets_to_send(self) -> list[bytes]: ...
    def next_event(self) -> object | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


class Ipv6LinkServices:
    """Sorts a session's IPv6 packets and drives the link-service objects that get some."""

    def __init__(self, routes: dict[LinkPacket, LinkService], services: Sequence[LinkService]) -> None:
        self._routes = routes
        self._services = tuple(services)
        self.dropped = 0  # link packets of the kind only the other role sends
        self.advertiser: RouterAdvertiser | None = None
        self.dhcp_server: Dhcpv6Server | None = None
        self.solicitor: RouterSolicitor | None = None
        self.pd_client: Dhcpv6PdClient | None = None

    @classmethod
    def for_server(cls, *, interface_id: bytes, now: float,
                   prefix: IPv6Network | None, delegated: IPv6Network | None, mtu: int,
                   dns: Sequence[IPv6Address], server_id: bytes) -> Ipv6LinkServices:
        """Router advertisements for the session's ``prefix`` (SLAAC), with the link MTU and RDNSS,
        and a DHCPv6 server that delegates ``delegated`` and names ``dns``. ``server_id``: the
        8 bytes of the server's stable DUID."""
        prefixes = ((PrefixInformation(prefix, PREFIX_VALID_LIFETIME, PREFIX_PREFERRED_LIFETIME),)
                    if prefix is not None else ())
        advertiser = RouterAdvertiser(RouterAdvertiserConfig(
            prefixes=prefixes, mtu=mtu, dns_servers=tuple(dns)[:3], other_config=True,
        ), interface_id, now)
        dhcp = Dhcpv6Server(duid_ll(HARDWARE_TYPE_EUI64, server_id), interface_id, delegated,
                            dns_servers=tuple(dns)[:3], config=Dhcpv6ServerConfig())
        routes: dict[LinkPacket, LinkService] = {LinkPacket.ROUTER_SOLICITATION: advertiser,
                                                 LinkPacket.NEIGHBOR_SOLICITATION: advertiser,
                                                 LinkPacket.DHCPV6_TO_SERVER: dhcp}
        services = cls(routes, (advertiser, dhcp))
        services.advertiser, services.dhcp_server = advertiser, dhcp
        return services

    @classmethod
    def for_client(cls, *, interface_id: bytes, now: float, delegation: bool) -> Ipv6LinkServices:
        """Router solicitation and SLAAC, and (``delegation``) a DHCPv6 prefix-delegation client."""
        solicitor = RouterSolicitor(interface_id, now)
        routes: dict[LinkPacket, LinkService] = {LinkPacket.ROUTER_ADVERTISEMENT: solicitor,
                                                 LinkPacket.NEIGHBOR_SOLICITATION: solicitor}
        objects: list[LinkService] = [solicitor]
        client = None
        if delegation:
            client = Dhcpv6PdClient(duid_ll(HARDWARE_TYPE_EUI64, interface_id), interface_id, now)
            routes[LinkPacket.DHCPV6_TO_CLIENT] = client
            objects.append(client)
        services = cls(routes, objects)
        services.solicitor, services.pd_client = solicitor, client
        return services

    def sort(self, packets: Sequence[P], now: float) -> list[P]:
        """IPv6 packets from the peer: the link's own go to their service (or are dropped when
        they are the other role's); the rest come back, for the kernel."""
        kernel: list[P] = []
        for packet in packets:
            kind = classify(packet)
            if kind is LinkPacket.OTHER:
                kernel.append(packet)
                continue
            service = self._routes.get(kind)
            if service is None:
                self.dropped += 1
            else:
                service.receive_packet(packet, now)
        return kernel

    def packets_to_send(self) -> list[bytes]:
        return [packet for service in self._services for packet in service.packets_to_send()]

    def events(self) -> list[object]:
        found: list[object] = []
        for service in self._services:
            while (event := service.next_event()) is not None:
                found.append(event)
        return found

    def get_timer(self) -> float | None:
        deadlines = [d for d in (s.get_timer() for s in self._services) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for service in self._services:
            deadline = service.get_timer()
            if deadline is not None and deadline <= now:
                service.handle_timer(now)


class Ipv6LinkDriver:
    """Runs one session's `Ipv6LinkServices` on the event loop: what they answer goes out through
    ``send`` (to the peer, on the PPP link), their events to ``on_event``, and one loop timer
    follows their earliest deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, services: Ipv6LinkServices,
                 send: Callable[[list[bytes]], None], on_event: Callable[[object], None]) -> None:
        self.loop = loop
        self.services = services
        self._send = send
        self._on_event = on_event
        self._timer = DeadlineTimer(loop, self._fire)
        self.closed = False

    def receive(self, packets: Sequence[P]) -> list[P]:
        """IPv6 packets from the peer; returns those for the kernel."""
        kernel = self.services.sort(packets, self.loop.time())
        if len(kernel) != len(packets):
            self.pump()
        return kernel

    def pump(self) -> None:
        if self.closed:
            return
        outgoing = self.services.packets_to_send()
        if outgoing:
            self._send(outgoing)
        for event in self.services.events():
            self._on_event(event)
        self._timer.follow(self.services.get_timer())

    def _fire(self) -> None:
        if self.closed:
            return
        self.services.handle_timer(self.loop.time())
        self.pump()

    def close(self) -> None:
        self.closed = True
        self._timer.cancel()
