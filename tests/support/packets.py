"""Small, valid IP packets for carrying through tunnels in tests."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = 1, 2, 4, 8, 16, 32, 64, 128


def reference_sum(data: bytes) -> int:
    """The ones' complement sum the slow, obvious way (RFC 1071 §4.1): 16-bit words, end-around carry."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for index in range(0, len(data), 2):
        total += data[index] << 8 | data[index + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def reference_checksum(data: bytes) -> int:
    """The Internet checksum the slow, obvious way: the complement of ``reference_sum``."""
    return ~reference_sum(data) & 0xFFFF


def icmp_echo(src: IPv4Address, dst: IPv4Address, ident: int, seq: int, payload: bytes,
              reply: bool = False) -> bytes:
    """An IPv4 ICMP Echo Request (or Reply) with correct checksums."""
    icmp = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", reference_checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq & 0xFFFF, 0, 64, 1, 0,
                         src.packed, dst.packed)
    header = header[:10] + struct.pack("!H", reference_checksum(header)) + header[12:]
    return header + icmp


def tcp_segment(src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, sport: int, dport: int,
                seq: int, payload: bytes, *, ack: int = 1, flags: int = TCP_ACK, window: int = 502,
                options: bytes = b"", urgent: int = 0, ident: int = 0, tos: int = 0, ttl: int = 64,
                dont_fragment: bool = True, fragment: int = 0, flow_label: int = 0,
                tcp_checksum: int | None = None) -> bytes:
    """An IPv4 or IPv6 TCP segment with correct checksums (unless ``tcp_checksum`` is given).

    ``fragment`` is the IPv4 flags + fragment offset field without DF (e.g. 0x2000 for MF)."""
    assert len(options) % 4 == 0
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, (5 + len(options) // 4) << 4,
                      flags, window, 0, urgent) + options
    length = len(tcp) + len(payload)
    if isinstance(src, IPv4Address):
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, length)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", length, 6)
    value = reference_checksum(pseudo + tcp + payload) if tcp_checksum is None else tcp_checksum
    tcp = tcp[:16] + struct.pack("!H", value) + tcp[18:]
    if isinstance(src, IPv6Address):
        first = (6 << 28) | (tos << 20) | flow_label
        return struct.pack("!IHBB", first, length, 6, ttl) + src.packed + dst.packed + tcp + payload
    frag = (0x4000 if dont_fragment else 0) | fragment
    header = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + length, ident & 0xFFFF, frag, ttl, 6, 0,
                         src.packed, dst.packed)
    header = header[:10] + struct.pack("!H", reference_checksum(header)) + header[12:]
    return header + tcp + payload
