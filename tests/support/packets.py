"""Small, valid IP packets for carrying through tunnels in tests."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo(src: IPv4Address, dst: IPv4Address, ident: int, seq: int, payload: bytes,
              reply: bool = False) -> bytes:
    """An IPv4 ICMP Echo Request (or Reply) with correct checksums."""
    icmp = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq & 0xFFFF, 0, 64, 1, 0,
                         src.packed, dst.packed)
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + icmp
