"""IPv6/ICMPv6/UDP codecs: checksums against an independent word-by-word sum, strict parsing, and
the classifier that decides which link packets the runtime hands over."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.packets import reference_sum
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ipv6.packets import (
    ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
    ALL_NODES,
    ALL_ROUTERS,
    NEXT_HEADER_ICMPV6,
    NEXT_HEADER_UDP,
    LinkPacket,
    build_icmpv6,
    build_ipv6,
    build_udp,
    classify,
    internet_checksum,
    parse_icmpv6,
    parse_ipv6,
    parse_udp,
    upper_layer_checksum,
)

LINK_LOCAL = IPv6Address("fe80::1")
PEER = IPv6Address("fe80::21a:2bff:fe3c:4d5e")
GLOBAL = IPv6Address("2001:db8::7")


def reference_pseudo_header(source: IPv6Address, destination: IPv6Address, length: int,
                            next_header: int) -> bytes:
    # RFC 8200 §8.1 figure: source, destination, 32-bit upper-layer length, 3 zero bytes, next header.
    return source.packed + destination.packed + length.to_bytes(4, "big") + b"\0\0\0" + bytes([next_header])


def test_rfc1071_numeric_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert reference_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


@given(st.binary(max_size=3000))
def test_checksum_matches_the_word_by_word_sum(data: bytes) -> None:
    assert internet_checksum(data) == ~reference_sum(data) & 0xFFFF


@pytest.mark.parametrize("data", [b"", bytes(40), b"\xff" * 40, b"\xff\xff\x00\x00", b"\x00\x01", b"\x80"])
def test_checksum_edge_cases(data: bytes) -> None:
    assert internet_checksum(data) == ~reference_sum(data) & 0xFFFF


@given(st.binary(max_size=1500), st.integers(0, 255), st.integers(0, 255))
def test_icmpv6_checksum_is_over_the_pseudo_header(body: bytes, icmp_type: int, code: int) -> None:
    packet = build_icmpv6(LINK_LOCAL, ALL_NODES, icmp_type, code, body)
    message = packet[40:]
    pseudo = reference_pseudo_header(LINK_LOCAL, ALL_NODES, len(message), 58)
    assert reference_sum(pseudo + message) == 0xFFFF  # a correct checksum makes the whole sum all ones
    zeroed = message[:2] + b"\0\0" + message[4:]
    assert int.from_bytes(message[2:4], "big") == ~reference_sum(pseudo + zeroed) & 0xFFFF
    parsed = parse_icmpv6(parse_ipv6(packet))
    assert (parsed.type, parsed.code, parsed.body) == (icmp_type, code, body)


@given(st.binary(max_size=1500), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_udp_round_trip_and_checksum(payload: bytes, source_port: int, destination_port: int) -> None:
    packet = build_udp(PEER, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, source_port, destination_port, payload,
                       hop_limit=1)
    datagram = packet[40:]
    pseudo = reference_pseudo_header(PEER, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, len(datagram), 17)
    assert reference_sum(pseudo + datagram) == 0xFFFF
    parsed = parse_udp(parse_ipv6(packet))
    assert (parsed.source_port, parsed.destination_port, parsed.payload) == (source_port, destination_port,
                                                                             payload)


def test_a_computed_zero_udp_checksum_is_sent_as_all_ones() -> None:
    # Choose the last two payload bytes so that the sum is all ones: the checksum computes to 0.
    head = b"\x12\x34\x56"
    datagram = struct.pack("!HHHH", 546, 547, 8 + len(head) + 3, 0) + head + b"\0\0\0"
    pseudo = reference_pseudo_header(PEER, LINK_LOCAL, len(datagram), 17)
    filler = ~reference_sum(pseudo + datagram) & 0xFFFF
    payload = head + b"\0" + filler.to_bytes(2, "big")
    packet = build_udp(PEER, LINK_LOCAL, 546, 547, payload, hop_limit=64)
    assert packet[46:48] == b"\xff\xff"
    assert parse_udp(parse_ipv6(packet)).payload == payload


def test_header_fields_and_padding() -> None:
    packet = build_ipv6(LINK_LOCAL, GLOBAL, 59, b"abc", hop_limit=17)
    assert packet[0] >> 4 == 6 and packet[4:6] == b"\x00\x03" and packet[6] == 59 and packet[7] == 17
    parsed = parse_ipv6(packet + b"\0" * 5)  # link padding after the payload is not payload
    assert (parsed.source, parsed.destination, parsed.next_header, parsed.hop_limit, parsed.payload) == (
        LINK_LOCAL, GLOBAL, 59, 17, b"abc")


def _icmp(body: bytes = b"\0" * 4) -> bytes:
    return build_icmpv6(PEER, ALL_ROUTERS, 133, 0, body)


@pytest.mark.parametrize(("packet", "message"), [
    (b"", "shorter than its header"),
    (_icmp()[:39], "shorter than its header"),
    (bytes([0x45]) + _icmp()[1:], "IP version 4"),
    (_icmp()[:4] + b"\x00\x40" + _icmp()[6:], "exceeds"),  # payload length lies: 64 > 8
    (_icmp()[:-1], "exceeds"),  # truncated by one byte
])
def test_ipv6_parse_rejects(packet: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_ipv6(packet)


def test_icmpv6_parse_rejects_bad_checksum_short_message_and_other_protocols() -> None:
    packet = bytearray(_icmp())
    packet[-1] ^= 1
    with pytest.raises(ProtocolError, match="checksum"):
        parse_icmpv6(parse_ipv6(bytes(packet)))
    with pytest.raises(ProtocolError, match="shorter"):
        short = build_ipv6(PEER, ALL_ROUTERS, NEXT_HEADER_ICMPV6, b"\x85\0\0", hop_limit=255)
        parse_icmpv6(parse_ipv6(short))
    with pytest.raises(ProtocolError, match="not ICMPv6"):
        parse_icmpv6(parse_ipv6(build_udp(PEER, LINK_LOCAL, 1, 2, b"", hop_limit=1)))


def test_udp_parse_rejects_lies_zero_checksum_and_corruption() -> None:
    good = build_udp(PEER, LINK_LOCAL, 546, 547, b"hello", hop_limit=1)
    lying_length = good[:44] + (100).to_bytes(2, "big") + good[46:]
    zero_checksum = good[:46] + b"\0\0" + good[48:]
    corrupted = good[:-1] + bytes([good[-1] ^ 0x40])
    short = build_ipv6(PEER, LINK_LOCAL, NEXT_HEADER_UDP, b"\0" * 7, hop_limit=1)
    for packet, message in ((lying_length, "length"), (zero_checksum, "without a checksum"),
                            (corrupted, "checksum"), (short, "shorter")):
        with pytest.raises(ProtocolError, match=message):
            parse_udp(parse_ipv6(packet))


def test_upper_layer_checksum_of_a_valid_message_is_zero() -> None:
    packet = _icmp(b"\0\0\0\0\x01\x01abcdef")
    assert upper_layer_checksum(PEER, ALL_ROUTERS, NEXT_HEADER_ICMPV6, packet[40:]) == 0


# ---- classify --------------------------------------------------------------------------------


def _with_destination(packet: bytes, destination: IPv6Address) -> bytes:
    return packet[:24] + destination.packed + packet[40:]


@pytest.mark.parametrize(("packet", "kind"), [
    (build_icmpv6(PEER, ALL_ROUTERS, 133, 0, bytes(4)), LinkPacket.ROUTER_SOLICITATION),
    (build_icmpv6(LINK_LOCAL, ALL_NODES, 134, 0, bytes(12)), LinkPacket.ROUTER_ADVERTISEMENT),
    (build_icmpv6(LINK_LOCAL, PEER, 134, 0, bytes(12)), LinkPacket.ROUTER_ADVERTISEMENT),
    (build_icmpv6(PEER, IPv6Address("ff02::1:ff00:1"), 135, 0, bytes(20)), LinkPacket.NEIGHBOR_SOLICITATION),
    (build_udp(PEER, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, 546, 547, b"x", hop_limit=1),
     LinkPacket.DHCPV6_TO_SERVER),
    (build_udp(LINK_LOCAL, PEER, 547, 546, b"x", hop_limit=64), LinkPacket.DHCPV6_TO_CLIENT),
    # Not for the link services: global or site-scoped destinations, other ICMPv6 and UDP, TCP.
    (build_icmpv6(PEER, GLOBAL, 133, 0, bytes(4)), LinkPacket.OTHER),
    (build_udp(PEER, IPv6Address("ff05::1:3"), 546, 547, b"x", hop_limit=1), LinkPacket.OTHER),
    (build_icmpv6(PEER, LINK_LOCAL, 128, 0, bytes(4)), LinkPacket.OTHER),
    (build_icmpv6(PEER, ALL_NODES, 136, 0, bytes(20)), LinkPacket.OTHER),
    (build_udp(PEER, LINK_LOCAL, 546, 53, b"x", hop_limit=1), LinkPacket.OTHER),
    (build_ipv6(PEER, LINK_LOCAL, 6, bytes(20), hop_limit=64), LinkPacket.OTHER),
    # An extension header in front (hop-by-hop, as MLD uses): not ND or DHCPv6 as we speak them.
    (build_ipv6(PEER, IPv6Address("ff02::16"), 0, bytes([58, 0]) + bytes(6) + bytes([143]) + bytes(7),
                hop_limit=1), LinkPacket.OTHER),
    (b"\x45" + bytes(60), LinkPacket.OTHER),
    (build_icmpv6(PEER, ALL_ROUTERS, 133, 0, bytes(4))[:43], LinkPacket.OTHER),
])
def test_classify(packet: bytes, kind: LinkPacket) -> None:
    assert classify(packet) is kind
    assert classify(memoryview(packet)) is kind


def test_classify_looks_at_link_scope_only() -> None:
    rs = build_icmpv6(PEER, ALL_ROUTERS, 133, 0, bytes(4))
    assert classify(_with_destination(rs, IPv6Address("fe80::99"))) is LinkPacket.ROUTER_SOLICITATION
    assert classify(_with_destination(rs, IPv6Address("ff01::2"))) is LinkPacket.OTHER  # interface-local
    assert classify(_with_destination(rs, IPv6Address("fec0::2"))) is LinkPacket.OTHER  # site-local
