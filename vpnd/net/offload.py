"""TCP segmentation offload for a TUN with a virtio-net header: pure packet logic, no I/O.

A TUN opened with IFF_VNET_HDR puts a virtio-net header in front of every packet. With it the
kernel and the session trade TCP "super-packets" of up to 64 KiB built from many segments of one
flow: one read or write and one trip through the network stack carry what took dozens.

- ``coalesce`` joins consecutive segments of a TCP flow from the peer into super-packets for the
  kernel (GSO writes), under the rules of the kernel's own GRO, so that the receiving stack sees
  the same byte stream;
- ``split`` cuts the kernel's super-packets (TSO reads) into segments for the peer, with their
  own headers and complete checksums, as the kernel's software GSO would; it is also the exact
  inverse of ``coalesce``;
- ``complete_checksums`` finishes the checksums the kernel left to us in single packets.

Checksums are 16-bit ones'-complement sums (RFC 1071). Since 2**16 ≡ 1 (mod 0xFFFF), the sum of a
buffer's 16-bit words is congruent to the buffer read as one integer, so one C-level conversion
and a few folds replace a loop over words; ``split`` sums all its segments' payloads in one numpy
pass instead.
"""
from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vpnd.proto.checksum import internet_checksum, ones_sum

Packet = bytes | bytearray | memoryview

# struct virtio_net_hdr (linux/virtio_net.h), in the host's byte order as a TUN uses it.
VNET_HEADER = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HEADER_LENGTH = VNET_HEADER.size
VNET_F_NEEDS_CSUM = 1  # flags: the checksum at csum_start + csum_offset is only the pseudo-header's
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


def split(packet: Packet, gso_type: int, gso_size: int, csum_start: int) -> list[memoryview]:
    """Cut a TCP super-packet into segments of ``gso_size`` payload bytes (the last may be less).

    Each segment gets the super-packet's headers with its own sequence number, IPv4 total
    length, identification (+1 per segment) and header checksum, IPv6 payload length, and a
    complete TCP checksum. As in the kernel's GSO, CWR stays on the first segment only, FIN and
    PSH on the last only. ``csum_start`` is where TCP begins; IPv6 extension headers are not
    supported (the kernel's TCP does not send them, ``coalesce`` never joins packets that have
    them).

    The work is done on all segments at once with numpy: every segment is a row of one array,
    and the payload checksums are one row-wise sum over it. Per segment, Python only slices the
    result (summing 1,400 bytes in CPython costs about 3 µs, three times a TUN read)."""
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
    if gso_size <= 0 or header_length > len(packet):
        raise OffloadError(f"GSO size {gso_size}, header {header_length} of {len(packet)} bytes")
    total = len(packet) - header_length
    full, rest = divmod(total, gso_size)
    shape = _segment_shape(full, rest, gso_size, header_length - transport, version)
    count = len(shape.starts)
    # One row per segment, its width a multiple of 4 (rows are read as 32-bit words); padding
    # after a payload is zero, as the checksum wants it.
    rows = np.zeros((count, shape.width), np.uint8)
    source = np.frombuffer(packet, np.uint8)
    rows[:, :header_length] = source[:header_length]
    body = header_length + full * gso_size
    if full:
        rows[:full, header_length : header_length + gso_size] = source[header_length:body].reshape(
            full, gso_size
        )
    if rest:
        rows[full, header_length : header_length + rest] = source[body:]
    # Payload sums over 32-bit little-endian words: twice as few as 16-bit ones, and no byte
    # swapping. Modulo 0xFFFF such a sum is the big-endian 16-bit one divided by 256 (2**16 ≡ 1):
    # times 256 (256 * 256 ≡ 1) gives it back.
    payload_sums = np.add.reduce(rows.view("<u4")[:, header_length // 4 :], axis=1, dtype=np.int64) * 256
    words = rows.view(">u2")

    # What is the same in every segment, summed once: the TCP header without sequence number,
    # flags and checksum, and the pseudo-header without its length. The -1 and 0xFFFE below
    # fold a sum to 1..0xFFFF and complement it in two operations.
    header = bytearray(packet[:header_length])
    flags = header[transport + 13]
    first_seq = _U32.unpack_from(header, transport + 4)[0]
    header[transport + 4 : transport + 8] = bytes(4)
    header[transport + 13] = 0
    header[transport + 16 : transport + 18] = bytes(2)
    tcp_base = int.from_bytes(header[transport:], "big") + _address_sum(header, version) + TCP - 1
    seqs = (shape.offsets + first_seq) & 0xFFFFFFFF
    segment_flags, flags_and_lengths = shape.flags(flags)
    tcp_sums = payload_sums + seqs + flags_and_lengths + tcp_base % 0xFFFF
    tcp = transport // 2
    words[:, tcp + 2] = seqs >> 16
    words[:, tcp + 3] = seqs & 0xFFFF
    words[:, tcp + 6] = segment_flags + (header[transport + 12] << 8)
    words[:, tcp + 8] = 0xFFFE - tcp_sums % 0xFFFF
    if version == 4:
        first_id = _U16.unpack_from(header, 4)[0]
        header[2:6] = bytes(4)
        header[10:12] = bytes(2)
        idents = (shape.index + first_id) & 0xFFFF
        words[:, 1] = shape.ip_lengths
        words[:, 2] = idents
        ip_base = (int.from_bytes(header[:transport], "big") - 1) % 0xFFFF
        words[:, 5] = 0xFFFE - (shape.ip_lengths + idents + ip_base) % 0xFFFF
    else:
        words[:, 2] = shape.ip_lengths
    flat = rows.data.cast("B")
    return [flat[start:stop] for start, stop in zip(shape.starts, shape.stops, strict=True)]


@dataclass(slots=True)
class _SegmentShape:
    """What depends only on a super-packet's sizes, computed once per size (bulk TCP sends
    super-packets of one size): the row layout and per-segment numbers as numpy columns."""

    width: int
    starts: list[int]  # where each segment begins and ends in the flattened rows
    stops: list[int]
    index: np.ndarray  # 0, 1, 2, ...
    offsets: np.ndarray  # each segment's sequence number offset
    tcp_lengths: np.ndarray
    ip_lengths: np.ndarray  # IPv4 total length / IPv6 payload length of each segment
    _flags: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def flags(self, flags: int) -> tuple[np.ndarray, np.ndarray]:
        """Each segment's TCP flags, and those plus its TCP length (what the checksum adds). As
        in the kernel's GSO: CWR on the first segment only, FIN and PSH on the last only."""
        known = self._flags.get(flags)
        if known is None:
            each = np.full(len(self.starts), flags & ~(_FIN | _PSH | _CWR), np.int64)
            each[0] |= flags & _CWR
            each[-1] |= flags & (_FIN | _PSH)
            known = self._flags[flags] = (each, each + self.tcp_lengths)
        return known


@functools.lru_cache(maxsize=256)
def _segment_shape(
    full: int, rest: int, gso_size: int, tcp_header_length: int, version: int
) -> _SegmentShape:
    transport = 20 if version == 4 else IPV6_HEADER_LENGTH
    header_length = transport + tcp_header_length
    count = full + 1 if rest or not full else full
    width = header_length + (gso_size + 3) // 4 * 4
    payloads = [gso_size] * full + ([rest] if count > full else [])
    starts = [i * width for i in range(count)]
    stops = [start + header_length + size for start, size in zip(starts, payloads, strict=True)]
    index = np.arange(count, dtype=np.int64)
    tcp_lengths = np.array(payloads, np.int64) + tcp_header_length
    ip_lengths = tcp_lengths + transport if version == 4 else tcp_lengths
    return _SegmentShape(width, starts, stops, index, index * gso_size, tcp_lengths, ip_lengths)


def checksum_place(packet: Packet, csum_start: int, csum_offset: int) -> int:
    """Where a checksum the kernel left to us (NEEDS_CSUM) goes, checked to lie in the packet."""
    field_at = csum_start + csum_offset
    if csum_start < 20 or field_at + 2 > len(packet):
        raise OffloadError(f"checksum at {csum_start}+{csum_offset} in a {len(packet)}-byte packet")
    return field_at


# Fewer unfinished checksums than this are summed one by one: numpy's fixed cost is a few µs.
CHECKSUM_BATCH_MINIMUM = 8
_PADDING = [b"", b"\0", b"\0\0", b"\0\0\0"]


def complete_checksums(unfinished: Sequence[tuple[memoryview, int, int]]) -> None:
    """Finish checksums the kernel left to us (NEEDS_CSUM: a local socket's TCP or UDP): for each
    (packet, csum_start, field position from ``checksum_place``), the field holds the
    pseudo-header's sum; the Internet checksum of everything from ``csum_start`` on goes there,
    0 sent as 0xFFFF (as the kernel's own fallback does).

    Many at once are summed in one numpy pass over 32-bit little-endian words (see ``split``):
    a 1,300-byte datagram costs about 3 µs in CPython alone."""
    if len(unfinished) < CHECKSUM_BATCH_MINIMUM:
        for packet, start, field_at in unfinished:
            _U16.pack_into(packet, field_at, 0xFFFF - ones_sum(packet[start:]) or 0xFFFF)
        return
    parts: list[Packet] = []
    offsets = []
    words = 0
    for packet, start, _ in unfinished:
        region = packet[start:]
        pad = -len(region) & 3
        parts += (region, _PADDING[pad])
        offsets.append(words)
        words += (len(region) + pad) >> 2
    sums = np.add.reduceat(np.frombuffer(b"".join(parts), "<u4"), offsets, dtype=np.int64)
    for (packet, _, field_at), little in zip(unfinished, sums.tolist(), strict=True):
        # Times 256: the big-endian 16-bit sum (mod 0xFFFF); -1 and 0xFFFE fold and complement.
        _U16.pack_into(packet, field_at, 0xFFFE - (little * 256 - 1) % 0xFFFF or 0xFFFF)


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

    A batch of ``RUN_MINIMUM`` packets or more is first scanned with numpy for runs of segments
    that each continue the one before (``_runs``): the first of a run goes through the rules
    below, the rest join its train in one step (``_join_run``). The writes are the same either
    way; the scan only saves the per-packet Python work of a bulk transfer.
    """
    writes: list[list[Packet]] = []
    trains: dict[bytes, _Train] = {}  # the open train of each flow
    joined: list[_Train] = []  # every train that more than one segment joined
    train: _Train | None = None  # the train the previous packet went to: most packets follow it
    runs = _runs(packets) if len(packets) >= RUN_MINIMUM else None
    count = len(packets)
    index = -1
    while index + 1 < count:
        index += 1
        packet = packets[index]
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
        if runs is not None and runs.following[index] and not train.closed:
            alone = len(payloads) == 1
            index += _join_run(train, packets, index, runs)
            if alone and len(payloads) > 1:
                joined.append(train)
    for train in joined:
        writes[train.slot] = _joined(train)
    return writes


# Batches at least this long are first scanned with numpy for runs of segments that each continue
# the one before (the bulk of a TCP transfer); numpy's fixed cost, about 40 µs, is not worth it
# for fewer.
RUN_MINIMUM = 16
_HEAD = 80  # bytes of each packet the scan reads: IPv4 + TCP up to 60, IPv6 + TCP up to 40


@dataclass(slots=True)
class _Runs:
    """What the scan found, per packet of the batch."""

    following: list[int]  # how many packets right after this one continue it, one by one
    words: np.ndarray  # the first _HEAD bytes of each packet as big-endian 16-bit words


def _runs(packets: Sequence[Packet]) -> _Runs | None:
    """Find runs of packets each of which continues the one before it as ``_Train.takes`` would
    have it: simple TCP (no IP options or extension headers, no fragments, ACK or ACK+PSH, data)
    of one flow with equal invariant header bits, contiguous sequence numbers, IPv4
    identification +1, the same payload length, and no PSH but maybe on the last. None for a
    batch that mixes IPv4 and IPv6 (rare): it is walked packet by packet."""
    count = len(packets)
    head = b"".join([p[:_HEAD] for p in packets])
    if len(head) != count * _HEAD:  # short packets (bare ACKs): pad them
        head = b"".join([bytes(p[:_HEAD]).ljust(_HEAD, b"\0") for p in packets])
    rows = np.frombuffer(head, np.uint8).reshape(count, _HEAD)
    sizes = np.fromiter(map(len, packets), np.int64, count)
    words = rows.view(">u2")
    ip_words = words[:, :4].astype(np.int64)
    if np.logical_and.reduce(rows[:, 0] == 0x45):
        version, transport = 4, 20
        simple = (rows[:, 9] == TCP) & (ip_words[:, 1] == sizes) & (ip_words[:, 3] & 0x3FFF == 0)
    elif np.logical_and.reduce(rows[:, 0] >> 4 == 6):
        version, transport = 6, IPV6_HEADER_LENGTH
        simple = (rows[:, 6] == TCP) & (ip_words[:, 2] + IPV6_HEADER_LENGTH == sizes)
    else:
        return None
    tcp = rows[:, transport : transport + 16]
    header_length = (tcp[:, 12] >> 4).astype(np.int64) * 4 + transport
    flags = tcp[:, 13]
    payload = sizes - header_length
    simple &= (header_length >= transport + 20) & (header_length <= _HEAD) & (payload > 0)
    simple &= flags | _PSH == _ACK | _PSH
    seq = tcp[:, 4:8].view(">u4")[:, 0].astype(np.int64)
    masks = _MASK_ROWS[version][np.minimum(header_length, _HEAD) // 4]
    # Equal invariant bits (masks) also mean equal header lengths: the data offset is one of them.
    continues = (
        simple[1:]
        & simple[:-1]
        & ~np.logical_or.reduce(((rows[1:] ^ rows[:-1]) & masks[1:]).view(np.uint64), axis=1)
        & (payload[1:] == payload[:-1])
        & (flags[:-1] & _PSH == 0)
        & (seq[1:] == (seq[:-1] + payload[:-1]) & 0xFFFFFFFF)
    )
    if version == 4:
        continues &= ip_words[1:, 2] == (ip_words[:-1, 2] + 1) & 0xFFFF
    following: list[int] = []
    start = 0
    for end in [*(np.flatnonzero(~continues) + 1).tolist(), count]:
        following += range(end - start - 1, -1, -1)
        start = end
    return _Runs(following, words)


def _mask_rows() -> dict[int, np.ndarray]:
    """``_invariant_mask`` as byte rows of ``_HEAD`` bytes, per IP version, indexed by header
    length // 4; zeros where no such header exists (the scan never joins those)."""
    table = {version: np.zeros((_HEAD // 4 + 1, _HEAD), np.uint8) for version in (4, 6)}
    for (version, header_length), mask in _MASKS.items():
        if header_length <= _HEAD:
            row = np.frombuffer(mask.to_bytes(header_length, "big"), np.uint8)
            table[version][header_length // 4, :header_length] = row
    return table


_MASK_ROWS = _mask_rows()


def _join_run(train: _Train, packets: Sequence[Packet], index: int, runs: _Runs) -> int:
    """Join the packets after ``index`` that continue it (``runs``) to ``train``, which ``index``
    just joined, as far as the train takes them; return how many joined."""
    payload = train.payloads[-1]
    size = len(payload)
    if size != train.segment:  # a short segment ended the train
        return 0
    header_length = train.header_length
    take = min(runs.following[index], (MAX_IP_TOTAL - train.length) // size)
    if take <= 0:
        return 0
    first, stop = index + 1, index + 1 + take
    train.payloads.extend([p[header_length:] for p in packets[first:stop]])
    # Each segment's covered sum (see _covered_offset), times 256 after an odd joined length.
    each = train.offset + (size if train.version == 4 else 0)
    headers = runs.words[first:stop, : header_length // 2]
    if size & 1:
        same = _word_total(headers[::2]) + each * len(range(first, stop, 2))
        flipped = _word_total(headers[1::2]) + each * len(range(first + 1, stop, 2))
    else:
        same, flipped = _word_total(headers) + each * take, 0
    odd = train.odd
    train.covered += (same << 8) + flipped if odd else same + (flipped << 8)
    train.odd = odd ^ bool(take * size & 1)
    last = packets[stop - 1]
    seq = _U32.unpack_from(last, (20 if train.version == 4 else IPV6_HEADER_LENGTH) + 4)[0]
    train.next_seq = (seq + size) & 0xFFFFFFFF
    if train.version == 4:
        train.next_id = (_U16.unpack_from(last, 4)[0] + 1) & 0xFFFF
    train.length += take * size
    if last[33 if train.version == 4 else 53] & _PSH:
        train.closed = train.psh = True
    return take


def _word_total(words: np.ndarray) -> int:
    return int(np.add.reduce(words, axis=None, dtype=np.int64))


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
