"""Both ends of a session's IPv6 link services in memory, wired the way the runtime wires them.

Packets leaving one end are sorted with `classify` at the other, as the runtime will: ND and
DHCPv6 go to the objects, anything else to ``to_kernel``. Time is a float that only moves when
`run_until` moves it, stepping through every deadline on the way; every packet that crossed the
link is kept in ``wire`` (for tshark) with its direction.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address, IPv6Network

from vpnd.proto.ipv6.dhcpv6 import HARDWARE_TYPE_EUI64, duid_ll
from vpnd.proto.ipv6.dhcpv6_client import ClientEvent, Dhcpv6PdClient
from vpnd.proto.ipv6.dhcpv6_server import Dhcpv6Server, Dhcpv6ServerConfig, ServerEvent
from vpnd.proto.ipv6.nd import (
    HostEvent,
    PrefixInformation,
    RouterAdvertiser,
    RouterAdvertiserConfig,
    RouterSolicitor,
)
from vpnd.proto.ipv6.packets import LinkPacket, classify

SERVER_ID = bytes.fromhex("0000000000000001")
CLIENT_ID = bytes.fromhex("021a2bfffe3c4d5e")
SERVER_LINK_LOCAL = IPv6Address("fe80::1")
CLIENT_LINK_LOCAL = IPv6Address("fe80::21a:2bff:fe3c:4d5e")
SESSION_PREFIX = IPv6Network("2001:db8:0:42::/64")
DELEGATED_PREFIX = IPv6Network("2001:db8:100::/56")
DNS = (IPv6Address("2001:db8::53"), IPv6Address("2001:db8::54"))
SERVER_DUID = duid_ll(HARDWARE_TYPE_EUI64, SERVER_ID)
CLIENT_DUID = duid_ll(HARDWARE_TYPE_EUI64, CLIENT_ID)
LINK_MTU = 1400


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def advertiser_config(**overrides: object) -> RouterAdvertiserConfig:
    base = RouterAdvertiserConfig(prefixes=(PrefixInformation(SESSION_PREFIX, 86400, 14400),), mtu=LINK_MTU,
                                  dns_servers=DNS, other_config=True)
    return replace(base, **overrides)


@dataclass
class Ipv6Link:
    advertiser: RouterAdvertiser
    server: Dhcpv6Server
    solicitor: RouterSolicitor
    client: Dhcpv6PdClient
    now: float = 0.0
    wire: list[tuple[float, str, bytes]] = field(default_factory=list)  # (time, "c2s" | "s2c", packet)
    to_kernel: list[bytes] = field(default_factory=list)
    server_events: list[ServerEvent] = field(default_factory=list)
    client_events: list[ClientEvent | HostEvent] = field(default_factory=list)
    server_silent: bool = False  # packets from the server are lost
    client_silent: bool = False  # packets from the client are lost
    lose: Callable[[str, bytes], bool] | None = None  # (direction, packet) → lost on the way

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for source in (self.solicitor, self.client):
                for packet in source.packets_to_send():
                    moved = True
                    if not self.client_silent:
                        self.wire.append((self.now, "c2s", packet))
                        if self.lose is not None and self.lose("c2s", packet):
                            continue
                        self._at_server(packet)
            for source in (self.advertiser, self.server):
                for packet in source.packets_to_send():
                    moved = True
                    if not self.server_silent:
                        self.wire.append((self.now, "s2c", packet))
                        if self.lose is not None and self.lose("s2c", packet):
                            continue
                        self._at_client(packet)
            self._collect()
            if not moved:
                return
        raise AssertionError("the link never went quiet")

    def _at_server(self, packet: bytes) -> None:
        kind = classify(packet)
        if kind in (LinkPacket.ROUTER_SOLICITATION, LinkPacket.NEIGHBOR_SOLICITATION):
            self.advertiser.receive_packet(packet, self.now)
        elif kind is LinkPacket.DHCPV6_TO_SERVER:
            self.server.receive_packet(packet, self.now)
        else:
            self.to_kernel.append(packet)

    def _at_client(self, packet: bytes) -> None:
        kind = classify(packet)
        if kind in (LinkPacket.ROUTER_ADVERTISEMENT, LinkPacket.NEIGHBOR_SOLICITATION):
            self.solicitor.receive_packet(packet, self.now)
        elif kind is LinkPacket.DHCPV6_TO_CLIENT:
            self.client.receive_packet(packet, self.now)
        else:
            self.to_kernel.append(packet)

    def _collect(self) -> None:
        while (server_event := self.server.next_event()) is not None:
            self.server_events.append(server_event)
        for source in (self.solicitor, self.client):
            while (event := source.next_event()) is not None:
                self.client_events.append(event)

    def next_deadline(self) -> float | None:
        deadlines = [o.get_timer() for o in (self.advertiser, self.server, self.solicitor, self.client)]
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def run_until(self, until: float) -> None:
        """Move time to ``until``, firing every timer that falls due on the way."""
        self.pump()
        for _ in range(100_000):
            deadline = self.next_deadline()
            if deadline is None or deadline > until:
                break
            self.now = max(self.now, deadline)
            for obj in (self.advertiser, self.server, self.solicitor, self.client):
                obj.handle_timer(self.now)
            self.pump()
        else:
            raise AssertionError("timers kept firing without time passing")
        self.now = max(self.now, until)

    def sent(self, direction: str) -> list[bytes]:
        return [packet for _, way, packet in self.wire if way == direction]


def make_link(prefix: IPv6Network | None = DELEGATED_PREFIX, *, rapid_commit: bool = True,
              server_config: Dhcpv6ServerConfig | None = None,
              advertiser: RouterAdvertiserConfig | None = None, seed: int = 7) -> Ipv6Link:
    return Ipv6Link(
        RouterAdvertiser(advertiser or advertiser_config(), SERVER_ID, 0.0, seeded(seed)),
        Dhcpv6Server(SERVER_DUID, SERVER_ID, prefix, DNS, server_config),
        RouterSolicitor(CLIENT_ID, 0.0, seeded(seed + 1)),
        Dhcpv6PdClient(CLIENT_DUID, CLIENT_ID, 0.0, rapid_commit=rapid_commit, random_bytes=seeded(seed + 2)),
    )
