"""Minimal IPv6 (RFC 8200), ICMPv6 (RFC 4443) and UDP codecs for the link services.

Only what a point-to-point PPP link needs: a fixed 40-byte header with ICMPv6 or UDP right
behind it (no extension headers), the upper-layer checksum over the pseudo-header (RFC 8200
§8.1), and `classify`, the cheap test that tells the runtime which packets from the link belong
to Neighbor Discovery or DHCPv6 rather than to the kernel.

Decoders raise `ProtocolError` for anything truncated, inconsistent or failing its checksum; no
other exception escapes them on any input.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv6Address

from vpnd.proto.checksum import internet_checksum
from vpnd.proto.errors import ProtocolError

Bytes = bytes | bytearray | memoryview

HEADER_LEN = 40
NEXT_HEADER_UDP = 17
NEXT_HEADER_ICMPV6 = 58
ND_HOP_LIMIT = 255  # RFC 4861: every ND message is sent with, and must arrive with, hop limit 255

ICMPV6_ROUTER_SOLICITATION = 133
ICMPV6_ROUTER_ADVERTISEMENT = 134
ICMPV6_NEIGHBOR_SOLICITATION = 135
ICMPV6_NEIGHBOR_ADVERTISEMENT = 136

DHCPV6_CLIENT_PORT = 546
DHCPV6_SERVER_PORT = 547

UNSPECIFIED = IPv6Address("::")
ALL_NODES = IPv6Address("ff02::1")
ALL_ROUTERS = IPv6Address("ff02::2")
ALL_DHCP_RELAY_AGENTS_AND_SERVERS = IPv6Address("ff02::1:2")

_HEADER = struct.Struct("!IHBB16s16s")
_UDP_HEADER = struct.Struct("!HHHH")
_ICMP_HEADER = struct.Struct("!BBH")


def random_fraction(random_bytes: Callable[[int], bytes] = os.urandom) -> float:
    """A number in [0, 1) from the caller's random source (timers jitter with it)."""
    return int.from_bytes(bytes(random_bytes(4))[:4].ljust(4, b"\0"), "big") / 2**32


def next_timeout(previous: float, maximum: float, random_bytes: Callable[[int], bytes]) -> float:
    """Exponential back-off of RFC 8415 §15, also used for router solicitations (RFC 7559):
    RT = 2·RTprev + RAND·RTprev, or MRT + RAND·MRT once past MRT (0: no maximum), RAND ±0.1."""
    timeout = previous * (2 + _rand(random_bytes))
    if maximum and timeout > maximum:
        timeout = maximum * (1 + _rand(random_bytes))
    return timeout


def first_timeout(initial: float, random_bytes: Callable[[int], bytes], *, positive: bool = False) -> float:
    """IRT + RAND·IRT; ``positive`` keeps RAND above 0 (a first Solicit, RFC 8415 §18.2.1)."""
    rand = 0.1 * (1 - random_fraction(random_bytes)) if positive else _rand(random_bytes)
    return initial * (1 + rand)


def _rand(random_bytes: Callable[[int], bytes]) -> float:
    return random_fraction(random_bytes) * 0.2 - 0.1


# ---- checksum ---------------------------------------------------------------------------------


def _pseudo_header(source: IPv6Address, destination: IPv6Address, next_header: int, length: int) -> bytes:
    return source.packed + destination.packed + struct.pack("!IxxxB", length, next_header)


def upper_layer_checksum(source: IPv6Address, destination: IPv6Address, next_header: int,
                         payload: Bytes) -> int:
    """Checksum of an ICMPv6 message or UDP datagram with its checksum field zero (RFC 8200 §8.1)."""
    return internet_checksum(_pseudo_header(source, destination, next_header, len(payload)) + bytes(payload))


# ---- IPv6 header ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ipv6Packet:
    source: IPv6Address
    destination: IPv6Address
    next_header: int
    hop_limit: int
    payload: bytes


def build_ipv6(source: IPv6Address, destination: IPv6Address, next_header: int, payload: Bytes, *,
               hop_limit: int) -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError("payload too long for an IPv6 packet without a jumbo option")
    header = _HEADER.pack(6 << 28, len(payload), next_header, hop_limit, source.packed, destination.packed)
    return header + bytes(payload)


def parse_ipv6(packet: Bytes) -> Ipv6Packet:
    """Header and payload; bytes beyond the Payload Length (link padding) are ignored."""
    if len(packet) < HEADER_LEN:
        raise ProtocolError(f"IPv6 packet of {len(packet)} bytes is shorter than its header")
    version_class_flow, payload_length, next_header, hop_limit, source, destination = _HEADER.unpack_from(
        packet)
    if version_class_flow >> 28 != 6:
        raise ProtocolError(f"IP version {version_class_flow >> 28}, expected 6")
    if HEADER_LEN + payload_length > len(packet):
        raise ProtocolError(f"IPv6 payload length {payload_length} exceeds the {len(packet) - HEADER_LEN}"
                            " bytes present")
    payload = bytes(packet[HEADER_LEN:HEADER_LEN + payload_length])
    return Ipv6Packet(IPv6Address(source), IPv6Address(destination), next_header, hop_limit, payload)


# ---- ICMPv6 -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Icmpv6Message:
    type: int
    code: int
    body: bytes  # everything after the 4-byte type/code/checksum header


def build_icmpv6(source: IPv6Address, destination: IPv6Address, icmp_type: int, code: int, body: Bytes, *,
                 hop_limit: int = ND_HOP_LIMIT) -> bytes:
    """A whole IPv6 packet carrying one ICMPv6 message with its checksum filled in."""
    message = _ICMP_HEADER.pack(icmp_type, code, 0) + bytes(body)
    checksum = upper_layer_checksum(source, destination, NEXT_HEADER_ICMPV6, message)
    message = message[:2] + checksum.to_bytes(2, "big") + message[4:]
    return build_ipv6(source, destination, NEXT_HEADER_ICMPV6, message, hop_limit=hop_limit)


def parse_icmpv6(packet: Ipv6Packet) -> Icmpv6Message:
    if packet.next_header != NEXT_HEADER_ICMPV6:
        raise ProtocolError(f"next header {packet.next_header} is not ICMPv6")
    payload = packet.payload
    if len(payload) < _ICMP_HEADER.size:
        raise ProtocolError("ICMPv6 message shorter than its header")
    if upper_layer_checksum(packet.source, packet.destination, NEXT_HEADER_ICMPV6, payload) != 0:
        raise ProtocolError("bad ICMPv6 checksum")
    icmp_type, code, _ = _ICMP_HEADER.unpack_from(payload)
    return Icmpv6Message(icmp_type, code, payload[_ICMP_HEADER.size:])


# ---- UDP --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    source_port: int
    destination_port: int
    payload: bytes


def build_udp(source: IPv6Address, destination: IPv6Address, source_port: int, destination_port: int,
              payload: Bytes, *, hop_limit: int) -> bytes:
    """A whole IPv6 packet carrying one UDP datagram with its (mandatory) checksum."""
    length = _UDP_HEADER.size + len(payload)
    datagram = _UDP_HEADER.pack(source_port, destination_port, length, 0) + bytes(payload)
    # A computed zero is sent as all ones: zero means "no checksum", which IPv6 forbids (RFC 8200 §8.1).
    checksum = upper_layer_checksum(source, destination, NEXT_HEADER_UDP, datagram) or 0xFFFF
    datagram = datagram[:6] + checksum.to_bytes(2, "big") + datagram[8:]
    return build_ipv6(source, destination, NEXT_HEADER_UDP, datagram, hop_limit=hop_limit)


def parse_udp(packet: Ipv6Packet) -> UdpDatagram:
    if packet.next_header != NEXT_HEADER_UDP:
        raise ProtocolError(f"next header {packet.next_header} is not UDP")
    payload = packet.payload
    if len(payload) < _UDP_HEADER.size:
        raise ProtocolError("UDP datagram shorter than its header")
    source_port, destination_port, length, checksum = _UDP_HEADER.unpack_from(payload)
    if length != len(payload):
        raise ProtocolError(f"UDP length {length} does not match the IPv6 payload length {len(payload)}")
    if checksum == 0:
        raise ProtocolError("UDP over IPv6 without a checksum")
    if upper_layer_checksum(packet.source, packet.destination, NEXT_HEADER_UDP, payload) != 0:
        raise ProtocolError("bad UDP checksum")
    return UdpDatagram(source_port, destination_port, payload[_UDP_HEADER.size:])


# ---- what the runtime hands over --------------------------------------------------------------


class LinkPacket(Enum):
    """What `classify` found; everything but OTHER goes to this package instead of the kernel."""

    OTHER = "other"
    ROUTER_SOLICITATION = "router solicitation"
    ROUTER_ADVERTISEMENT = "router advertisement"
    NEIGHBOR_SOLICITATION = "neighbor solicitation"
    DHCPV6_TO_SERVER = "dhcpv6 to server"
    DHCPV6_TO_CLIENT = "dhcpv6 to client"


_ICMP_KINDS = {
    ICMPV6_ROUTER_SOLICITATION: LinkPacket.ROUTER_SOLICITATION,
    ICMPV6_ROUTER_ADVERTISEMENT: LinkPacket.ROUTER_ADVERTISEMENT,
    ICMPV6_NEIGHBOR_SOLICITATION: LinkPacket.NEIGHBOR_SOLICITATION,
}
_DHCP_PORTS = {
    DHCPV6_SERVER_PORT: LinkPacket.DHCPV6_TO_SERVER,
    DHCPV6_CLIENT_PORT: LinkPacket.DHCPV6_TO_CLIENT,
}


def classify(packet: Bytes) -> LinkPacket:
    """Which link service a packet from the PPP link is for, by a few byte tests (fast path).

    Only link-scoped destinations (ff02::/16 multicast or fe80::/10) qualify: ND and DHCPv6
    between the two ends of the link never use anything else. ICMPv6 and UDP must follow the
    fixed header directly; a packet with extension headers is OTHER. Nothing is validated here:
    the receiving object checks everything and counts what it drops.
    """
    if len(packet) < HEADER_LEN + 4:
        return LinkPacket.OTHER
    scope = packet[24]
    if scope == 0xFF:  # most traffic is global unicast and leaves at the first test
        if packet[25] & 0x0F != 0x02:
            return LinkPacket.OTHER
    elif scope != 0xFE or packet[25] & 0xC0 != 0x80:
        return LinkPacket.OTHER
    if packet[0] >> 4 != 6:
        return LinkPacket.OTHER
    next_header = packet[6]
    if next_header == NEXT_HEADER_ICMPV6:
        return _ICMP_KINDS.get(packet[HEADER_LEN], LinkPacket.OTHER)
    if next_header == NEXT_HEADER_UDP:
        return _DHCP_PORTS.get(packet[HEADER_LEN + 2] << 8 | packet[HEADER_LEN + 3], LinkPacket.OTHER)
    return LinkPacket.OTHER
