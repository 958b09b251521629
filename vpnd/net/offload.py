"""Joining TCP segments for a TUN with a virtio-net header: pure packet logic, no I/O.

A TUN opened with IFF_VNET_HDR puts a virtio-net header in front of every packet. With it the
kernel takes one TCP "super-packet" of up to 64 KiB built from many segments of one flow (GSO):
one write and one trip through the network stack then carry what took dozens.

- ``coalesce`` joins consecutive segments of a TCP flow from the peer into super-packets, under
  the rules of the kernel's own GRO, so that the receiving stack sees the same byte stream;
- ``split`` is its inverse (and the kernel's software GSO): it cuts a super-packet into segments
  with their own headers and checksums, byte for byte the ones that were joined.

The other direction, TSO (the kernel handing us super-packets to cut), is not used: every
segment then needs its TCP checksum computed here, over its payload, which in Python costs more
than the reads and kernel work it saves.

Checksums are 16-bit ones'-complement sums (RFC 1071). Since 2**16 ≡ 1 (mod 0xFFFF), the sum of a
buffer's 16-bit words is congruent to the buffer read as one integer, so one C-level conversion
and a few folds replace a loop over words.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from vpnd.proto.checksum import internet_checksum, word_sum

Packet = bytes | bytearray | memoryview

# struct virtio_net_hdr (linux/virtio_net.h), in the host's byte order as a TUN uses it.
VNET_HEADER = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HEADER_LENGTH = VNET_HEADER.size
VNET_GSO_NONE = 0
VNET_GSO_TCPV4 = 1
VNET_GSO_TCPV6 = 4
VNET_GSO_ECN = 0x80
NO_OFFLOAD = bytes(VNET_HEADER_LENGTH)  # the header of a plain packet: no GSO, checksum complete

MAX_IP_TOTAL = 0xFFFF  # IPv4 total length / IPv6 payload length field
TCP = 6
IPV6_HEADER_LENGTH = 40

_FIN, _PSH, _ACK, _CWR = 0x01, 0x08, 0x10, 0x80
_IP_TCP_MINIMUM = {4: 40, 6: 60}  # IP + TCP header bytes without options
_NOT_TCP = frozenset({17, 58})  # IPv6 next headers that are surely not TCP: UDP, ICMPv6
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
# The IPv4 fields that change from one segment of a flow to the next (or tell a fragment):
# total length, identification, flags + fragment offset; then the TCP sequence number.
_IPV4_VARYING = struct.Struct("!2xHHH16xI")
_IPV6_VARYING = struct.Struct("!4xH38xI")  # payload length; TCP sequence number


class OffloadError(ValueError):
    """A super-packet that does not match its virtio-net header."""


def _fold(value: int) -> int:
    """Reduce a non-zero sum of 16-bit words to 16 bits with end-around carry (1..0xFFFF)."""
    return value % 0xFFFF or 0xFFFF


def _address_sum(packet: Packet, version: int) -> int:
    """The pseudo-header's addresses, as an unreduced word sum."""
    return int.from_bytes(packet[12:20] if version == 4 else packet[8:40], "big")


# ---- the kernel's super-packets → MTU-sized segments ----------------------------------------------


def split(packet: Packet, gso_type: int, gso_size: int, csum_start: int) -> list[bytes]:
    """Cut a TCP super-packet into segments of ``gso_size`` payload bytes (the last may be less).

    Each segment gets the super-packet's headers with its own sequence number, IPv4 total
    length, identification (+1 per segment) and header checksum, IPv6 payload length, and a
    complete TCP checksum. As in the kernel's GSO, CWR stays on the first segment only, FIN and
    PSH on the last only. ``csum_start`` is where TCP begins; IPv6 extension headers are not
    supported (``coalesce`` never joins packets that have them)."""
    version = packet[0] >> 4
    kind = gso_type & ~VNET_GSO_ECN
    if version == 4 and kind == VNET_GSO_TCPV4:
        transport = (packet[0] & 0x0F) * 4
        ok = packet[9] == TCP
    elif version == 6 and kind == VNET_GSO_TCPV6:
        transport = IPV6_HEADER_LENGTH
        ok = packet[6] == TCP
    else:
        raise OffloadError(f"GSO type {gso_type} on an IPv{version} packet")
    if not ok or csum_start != transport or len(packet) < transport + 20:
        raise OffloadError("GSO packet is not TCP right after the IP header")
    header_length = transport + (packet[transport + 12] >> 4) * 4
    payload = memoryview(packet)[header_length:]
    if gso_size <= 0 or header_length > len(packet):
        raise OffloadError(f"GSO size {gso_size}, header {header_length} of {len(packet)} bytes")
    header = bytearray(packet[:header_length])
    flags = header[transport + 13]
    first_seq = _U32.unpack_from(header, transport + 4)[0]
    thl = header_length - transport
    # Word sums of what is the same in every segment: the TCP header without sequence number,
    # flags and checksum, plus the pseudo-header without its length.
    header[transport + 4 : transport + 8] = bytes(4)
    header[transport + 13] = 0
    header[transport + 16 : transport + 18] = bytes(2)
    tcp_base = int.from_bytes(header[transport:], "big") + _address_sum(header, version) + TCP
    if version == 4:
        header[10:12] = bytes(2)
        first_id = _U16.unpack_from(header, 4)[0]
        header[2:6] = bytes(4)
        ip_base = int.from_bytes(header[:transport], "big")
    segments: list[bytes] = []
    total = len(payload)
    last_offset = total - 1 - (total - 1) % gso_size if total else 0
    for index, offset in enumerate(range(0, max(total, 1), gso_size)):
        chunk = payload[offset : offset + gso_size]
        segment_flags = flags
        if index:
            segment_flags &= ~_CWR
        if offset != last_offset:
            segment_flags &= ~(_FIN | _PSH)
        seq = (first_seq + offset) & 0xFFFFFFFF
        tcp_length = thl + len(chunk)
        if version == 4:
            ident = (first_id + index) & 0xFFFF
            struct.pack_into("!HH", header, 2, transport + tcp_length, ident)
            _U16.pack_into(header, 10, 0xFFFF - _fold(ip_base + transport + tcp_length + ident))
        else:
            _U16.pack_into(header, 4, tcp_length)
        tcp_sum = _fold(word_sum(chunk) + tcp_base + seq + segment_flags + tcp_length)
        _U32.pack_into(header, transport + 4, seq)
        header[transport + 13] = segment_flags
        _U16.pack_into(header, transport + 16, 0xFFFF - tcp_sum)
        segments.append(bytes(header) + chunk)
    return segments


# ---- segments from the peer → super-packets for the kernel -----------------------------------------


def _invariant_mask(version: int, header_length: int) -> int:
    """Bits of the IP + TCP headers that must be equal in every segment of one super-packet:
    all but the IPv4 total length, identification and header checksum (IPv6 payload length),
    the sequence number, PSH (allowed on the last segment) and the TCP checksum."""
    mask = bytearray(b"\xff" * header_length)
    transport = 20 if version == 4 else IPV6_HEADER_LENGTH
    varying = [(2, 6), (10, 12)] if version == 4 else [(4, 6)]
    varying += [(transport + 4, transport + 8), (transport + 16, transport + 18)]
    for start, end in varying:
        mask[start:end] = bytes(end - start)
    mask[transport + 13] &= ~_PSH & 0xFF
    return int.from_bytes(mask, "big")


_MASKS = {
    (version, transport + thl): _invariant_mask(version, transport + thl)
    for version, transport in ((4, 20), (6, IPV6_HEADER_LENGTH))
    for thl in range(20, 61, 4)
}


@dataclass(slots=True, eq=False)
class _Train:
    """Segments of one flow being joined; becomes one write."""

    slot: int  # index of its write in the output list
    version: int
    first: Packet  # the first segment, written as it came if nothing joins it
    header_length: int
    header_int: int  # the first segment's IP + TCP headers as one integer
    mask: int  # the header bits every segment must share (_invariant_mask)
    segment: int  # payload bytes of every segment but the last (gso_size)
    pseudo: int  # addresses + protocol: the pseudo-header without its length
    offset: int  # see _covered_offset
    next_seq: int = 0
    next_id: int = 0
    length: int = 0  # IPv4 total length or IPv6 payload length so far
    covered: int = 0  # see _covered_offset
    odd: bool = False  # the payload joined so far has an odd length
    closed: bool = False  # a short segment or PSH ended it
    psh: bool = False
    payloads: list[Packet] = field(default_factory=list)

    def takes(self, header_length: int, header_int: int, seq: int, ident: int, payload: int) -> bool:
        """Whether a whole segment with these headers continues this train."""
        return (
            not self.closed
            and self.header_length == header_length
            and seq == self.next_seq
            and ident == self.next_id
            and 0 < payload <= self.segment
            and self.length + payload <= MAX_IP_TOTAL
            and (header_int ^ self.header_int) & self.mask == 0
        )


def coalesce(packets: Sequence[Packet]) -> list[list[Packet]]:
    """Group IP packets from the peer into writes for a TUN with a virtio-net header.

    Returns one buffer list per write (for ``writev``): a header and a packet as it came, or a
    header, new IP + TCP headers and the payloads of several segments of one TCP flow that
    follow each other in sequence. Segments are joined only when the kernel's GRO would have
    joined them: IPv4 without options or fragmentation, identification +1 per segment, IPv6
    without extension headers; the same addresses, ports, TOS/traffic class (ECN bits included),
    TTL, DF, ACK number, window and TCP options; ACK alone or with PSH (PSH ends the train, as does
    a segment shorter than the first); contiguous sequence numbers; at most 64 KiB. Segments of
    different flows may pass each other; within a flow the order is kept.

    The joined packet's TCP checksum is derived from the segments' own checksums, not recomputed
    from the payload: it is correct exactly when each segment's IP and TCP checksums were (up to
    errors that cancel out), and as NEEDS_CSUM is not set the kernel checks it like any other.
    """
    writes: list[list[Packet]] = []
    trains: dict[bytes, _Train] = {}  # the open train of each flow
    joined: list[_Train] = []  # every train that more than one segment joined
    train: _Train | None = None  # the train the previous packet went to: most packets follow it
    for packet in packets:
        size = len(packet)
        first = packet[0] if size else 0
        if first == 0x45 and size >= 40 and packet[9] == TCP:
            length, ident, fragment, seq = _IPV4_VARYING.unpack_from(packet)
            version = 4
            header_length = 20 + (packet[32] >> 4) * 4
            whole = length == size and not fragment & 0x3FFF
        elif first >> 4 == 6 and size >= 60 and packet[6] == TCP:
            length, seq = _IPV6_VARYING.unpack_from(packet)
            ident = fragment = 0
            version = 6
            header_length = IPV6_HEADER_LENGTH + (packet[52] >> 4) * 4
            whole = length + IPV6_HEADER_LENGTH == size
        else:
            # TCP we cannot read (IPv4 options, IPv6 extension headers) may belong to any flow:
            # no segment may pass it.
            if size > 9 and (packet[9] == TCP if first >> 4 == 4 else packet[6] not in _NOT_TCP):
                trains.clear()
            writes.append([NO_OFFLOAD, packet])
            train = None
            continue
        payload = size - header_length
        header_int = int.from_bytes(packet[:header_length], "big")
        if not (whole and train is not None and train.takes(header_length, header_int, seq, ident, payload)):
            # Not the previous packet's train: find this flow's, or start one.
            if fragment & 0x3FFF:  # later fragments have no ports to tell their flow: end every train
                trains.clear()
                writes.append([NO_OFFLOAD, packet])
                train = None
                continue
            key = bytes(packet[12:24] if version == 4 else packet[8:44])
            flags = packet[33 if version == 4 else 53]
            if not whole or payload <= 0 or header_length < _IP_TCP_MINIMUM[version] or flags & ~_PSH != _ACK:
                trains.pop(key, None)  # later segments of this flow must not pass this one
                writes.append([NO_OFFLOAD, packet])
                train = None
                continue
            train = trains.get(key)
            if not (train is not None and train.takes(header_length, header_int, seq, ident, payload)):
                pseudo = _address_sum(packet, version) + TCP
                train = trains[key] = _Train(
                    slot=len(writes), version=version, first=packet, header_length=header_length,
                    header_int=header_int, mask=_MASKS[version, header_length], segment=payload,
                    pseudo=pseudo, offset=_covered_offset(packet, version, header_length, pseudo),
                    length=length - payload,
                )
                writes.append([NO_OFFLOAD, packet])
        # The segment joins ``train``.
        payloads = train.payloads
        payloads.append(packet[header_length:])
        if len(payloads) == 2:
            joined.append(train)
        covered = header_int + train.offset + (payload if version == 4 else 0)
        train.covered += covered << 8 if train.odd else covered
        if payload & 1:
            train.odd = not train.odd
        train.next_seq = (seq + payload) & 0xFFFFFFFF
        train.next_id = (ident + 1) & 0xFFFF if version == 4 else 0
        train.length += payload
        if payload < train.segment:
            train.closed = True
        if packet[33 if version == 4 else 53] & _PSH:
            train.closed = train.psh = True
    for train in joined:
        writes[train.slot] = _joined(train)
    return writes


def _covered_offset(packet: Packet, version: int, header_length: int, pseudo: int) -> int:
    """What turns a segment's headers (as one integer) into the sum its TCP checksum covered, less
    the payload: ``headers + offset (+ payload length for IPv4)``.

    A valid segment's pseudo-header, TCP header (checksum included) and payload sum to 0 (mod
    0xFFFF), so the payload sums to minus the rest, which the headers tell. A valid IPv4 header
    sums to 0 too, so it can stay in (and spoils the sum when invalid); the pseudo-header adds the
    TCP length, header + payload. The IPv6 header is taken out again: its fixed words, and the
    payload length, which equals the TCP length. Summed over the segments (a payload at an odd
    offset of the joined payload times 256: its bytes change places in the words, 256 * 256 ≡ 1)
    this is ``_Train.covered``."""
    tcp_header = header_length - (20 if version == 4 else IPV6_HEADER_LENGTH)
    if version == 4:
        return pseudo + tcp_header
    fixed = bytearray(packet[:IPV6_HEADER_LENGTH])
    fixed[4:6] = bytes(2)
    return pseudo - int.from_bytes(fixed, "big")


def _joined(train: _Train) -> list[Packet]:
    """The write for a train of two or more segments: virtio-net header, headers, payloads."""
    transport = 20 if train.version == 4 else IPV6_HEADER_LENGTH
    header = bytearray(memoryview(train.first)[: train.header_length])
    if train.version == 4:
        _U16.pack_into(header, 2, train.length)
        header[10:12] = bytes(2)
        _U16.pack_into(header, 10, internet_checksum(header[:transport]))
        gso_type = VNET_GSO_TCPV4
        tcp_length = train.length - transport
    else:
        _U16.pack_into(header, 4, train.length)
        gso_type = VNET_GSO_TCPV6
        tcp_length = train.length
    if train.psh:
        header[transport + 13] |= _PSH
    header[transport + 16 : transport + 18] = bytes(2)
    # What the joined checksum covers: pseudo-header, its TCP header, and the payloads, whose sum
    # is minus the segments' covered sums.
    own = train.pseudo + tcp_length + int.from_bytes(header[transport:], "big")
    total = (own - train.covered) % 0xFFFF
    _U16.pack_into(header, transport + 16, 0xFFFF - (total or 0xFFFF))
    vnet = VNET_HEADER.pack(0, gso_type, train.header_length, train.segment, 0, 0)
    return [vnet, header, *train.payloads]
