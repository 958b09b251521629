"""Joining TCP segments for the kernel (vpnd.net.offload): checksums, coalesce, and split, its inverse.

Segments are built with tests.support.packets, whose checksum is the plain word-by-word RFC 1071
loop: the reference every fast path here is held against. The kernel's side of the contract is
in test_tun.py (root): these tests pin down the bytes.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.packets import (
    TCP_ACK,
    TCP_CWR,
    TCP_ECE,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    TCP_URG,
    icmp_echo,
    reference_checksum,
    tcp_segment,
)
from vpnd.net import offload
from vpnd.net.offload import (
    NO_OFFLOAD,
    VNET_GSO_ECN,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HEADER,
    OffloadError,
    Packet,
    checksum_place,
    coalesce,
    complete_checksums,
    split,
)
from vpnd.proto.checksum import internet_checksum as checksum
from vpnd.proto.checksum import ones_sum


@pytest.fixture(autouse=True, params=["numpy", "one by one"])
def batch_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: with coalesce scanning even the smallest batch for runs and
    complete_checksums summing even one checksum with numpy, and with both going packet by
    packet; both ways must give the same bytes."""
    numpy_always = request.param == "numpy"
    monkeypatch.setattr(offload, "RUN_MINIMUM", 1 if numpy_always else 10**9)
    monkeypatch.setattr(offload, "CHECKSUM_BATCH_MINIMUM", 1 if numpy_always else 10**9)
    return str(request.param)


A4, B4 = IPv4Address("198.18.0.2"), IPv4Address("198.18.0.1")
A6, B6 = IPv6Address("2001:db8::2"), IPv6Address("2001:db8::1")
TIMESTAMPS = bytes([1, 1, 8, 10]) + struct.pack("!II", 123456, 654321)


def flow(count: int, size: int = 1000, *, ipv6: bool = False, seq: int = 1000, ident: int = 7,
         last: int | None = None, **fields: Any) -> list[bytes]:
    """``count`` back-to-back segments of one flow, ``size`` payload bytes each (``last`` for the last)."""
    src, dst = (A6, B6) if ipv6 else (A4, B4)
    segments = []
    for index in range(count):
        length = last if last is not None and index == count - 1 else size
        payload = bytes((seq + index * 7 + n) & 0xFF for n in range(length))
        segments.append(tcp_segment(src, dst, 40000, 5201, seq, payload, ident=ident + index, **fields))
        seq += length
    return segments


def transport_offset(packet: bytes) -> int:
    return 20 if packet[0] >> 4 == 4 else 40


def transport_checksum_ok(packet: bytes, protocol: int = 6) -> bool:
    """The reference check the kernel makes of a packet's TCP (or UDP) checksum, pseudo-header
    included."""
    start = transport_offset(packet)
    length = len(packet) - start
    if start == 20:
        pseudo = packet[12:20] + struct.pack("!BBH", 0, protocol, length)
    else:
        pseudo = packet[8:40] + struct.pack("!IxxxB", length, protocol)
    return reference_checksum(pseudo + packet[start:]) == 0


def unpack_write(buffers: list[Packet]) -> tuple[tuple[int, ...], bytes]:
    return VNET_HEADER.unpack(bytes(buffers[0])), b"".join(bytes(buffer) for buffer in buffers[1:])


def segments_of(writes: list[list[Packet]]) -> list[list[bytes]]:
    """What each write carries, cut back into segments: one list per write."""
    out = []
    for buffers in writes:
        (flags, gso_type, _, gso_size, _, _), packet = unpack_write(buffers)
        assert flags == 0  # complete checksums: the kernel checks them
        if gso_type:
            out.append([bytes(s) for s in split(packet, gso_type, gso_size, transport_offset(packet))])
        else:
            assert bytes(buffers[0]) == NO_OFFLOAD and len(buffers) == 2
            out.append([packet])
    return out


def joined_counts(packets: list[bytes]) -> list[int]:
    return [len(group) for group in segments_of(coalesce(packets))]


# ---- checksums ---------------------------------------------------------------------------------


@given(st.binary(max_size=3000), st.integers(0, 0xFFFF))
def test_ones_sum_and_checksum_agree_with_the_reference(data: bytes, start: int) -> None:
    start_word = struct.pack("!H", start)
    assert checksum(data, start) == reference_checksum(start_word + data)
    if data.strip(b"\x00") or start:
        assert ones_sum(data, start) == 0xFFFF - reference_checksum(start_word + data)


@pytest.mark.parametrize("data", [b"", b"\x00" * 1401, b"\xff" * 1400, b"\xff\xff", b"\x01",
                                  bytes(range(256)) * 256])
def test_checksum_edges(data: bytes) -> None:
    assert checksum(data) == reference_checksum(data)
    # 0 only for nothing but zeros: a sum of non-zero words is 0xFFFF, never 0 (end-around carry)
    assert (ones_sum(data) == 0) == (not any(data))


# ---- joining and cutting back: the round trip --------------------------------------------------


@st.composite
def flows(draw: st.DrawFn) -> list[bytes]:
    ipv6 = draw(st.booleans())
    size = draw(st.integers(1, 1440))
    count = draw(st.integers(1, 70))
    last = draw(st.integers(1, size))
    options = draw(st.sampled_from([b"", TIMESTAMPS]))
    seq = draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 5000, 2**32 - 1)))
    ident = draw(st.one_of(st.integers(0, 0xFFFF), st.integers(0xFFF0, 0xFFFF)))
    psh = draw(st.sampled_from([0, TCP_PSH]))
    packets = flow(count, size, ipv6=ipv6, seq=seq, ident=ident, last=last, options=options)
    if psh:  # a PSH on the last segment, as a sender's last write has
        src, dst = (A6, B6) if ipv6 else (A4, B4)
        head = packets[-1]
        start = transport_offset(head) + 20 + len(options)
        head_seq = struct.unpack_from("!I", head, transport_offset(head) + 4)[0]
        packets[-1] = tcp_segment(src, dst, 40000, 5201, head_seq, head[start:], ident=ident + count - 1,
                                  options=options, flags=TCP_ACK | TCP_PSH)
    return packets


@settings(max_examples=300, deadline=None)
@given(flows())
def test_split_of_coalesce_gives_back_every_segment_byte_for_byte(packets: list[bytes]) -> None:
    writes = coalesce([memoryview(packet) for packet in packets])
    for buffers in writes:
        (_, gso_type, hdr_len, gso_size, _, _), packet = unpack_write(buffers)
        if not gso_type:
            continue
        # What the kernel checks of a super-packet: headers, lengths and a valid checksum.
        start = transport_offset(packet)
        assert gso_type == (VNET_GSO_TCPV4 if start == 20 else VNET_GSO_TCPV6)
        assert hdr_len == start + (packet[start + 12] >> 4) * 4
        assert gso_size == len(buffers[2])  # the first segment's payload
        assert len(packet) - (0 if start == 20 else 40) <= 0xFFFF
        if start == 20:
            assert struct.unpack_from("!H", packet, 2)[0] == len(packet)
            assert reference_checksum(packet[:20]) == 0
        else:
            assert struct.unpack_from("!H", packet, 4)[0] == len(packet) - 40
        assert transport_checksum_ok(packet)
    groups = segments_of(writes)
    assert [segment for group in groups for segment in group] == packets
    # Everything was joined that could be: only the 64 KiB limit starts another write.
    expected: list[int] = []
    length = 0
    for packet in packets:
        payload = len(packet) - transport_offset(packet) - (packet[transport_offset(packet) + 12] >> 4) * 4
        if expected and length + payload <= 0xFFFF:
            expected[-1] += 1
            length += payload
        else:
            expected.append(1)
            length = len(packet) - (40 if packet[0] >> 4 == 6 else 0)  # IPv4 total / IPv6 payload length
    assert [len(group) for group in groups] == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 1200)), min_size=1, max_size=120))
def test_interleaved_flows_are_joined_each_in_its_own_order(sends: list[tuple[int, int]]) -> None:
    """Three flows (two TCP, one UDP-like ICMP stream) mixed in one batch."""
    seqs, idents = [5000, 9000, 0], [1, 500, 0]
    packets: list[bytes] = []
    for which, size in sends:
        if which == 2:
            packets.append(icmp_echo(A4, B4, 1, idents[2], bytes(size % 200)))
            idents[2] += 1
            continue
        payload = bytes([which]) * size
        packets.append(tcp_segment(A4, B4, 40000 + which, 5201, seqs[which], payload, ident=idents[which]))
        seqs[which] += size
        idents[which] += 1
    out = [segment for group in segments_of(coalesce(packets)) for segment in group]
    assert sorted(out) == sorted(packets)
    for port in (40000, 40001):
        def of_flow(items: list[bytes], port: int = port) -> list[bytes]:
            return [p for p in items if p[9] == 6 and struct.unpack_from("!H", p, 20)[0] == port]
        assert of_flow(out) == of_flow(packets)
    icmp = [p for p in packets if p[9] == 1]
    assert [p for p in out if p[9] == 1] == icmp


def test_a_steady_flow_becomes_few_writes() -> None:
    packets = flow(130, 1348, options=TIMESTAMPS)
    assert joined_counts(packets) == [48, 48, 34]  # 48 * 1348 + 52 headers fit in 64 KiB, 49 do not
    assert joined_counts(flow(40, 1220, ipv6=True)) == [40]


# ---- what must not be joined -------------------------------------------------------------------


def replace(packets: list[bytes], index: int, **fields: Any) -> list[bytes]:
    """The flow with segment ``index`` rebuilt with other header fields (same payload and seq)."""
    packet = packets[index]
    ipv6 = packet[0] >> 4 == 6
    start = transport_offset(packet)
    seq = struct.unpack_from("!I", packet, start + 4)[0]
    options = packet[start + 20 : start + (packet[start + 12] >> 4) * 4]
    payload = packet[start + (packet[start + 12] >> 4) * 4 :]
    src, dst = (A6, B6) if ipv6 else (A4, B4)
    ident = 0 if ipv6 else struct.unpack_from("!H", packet, 4)[0]
    arguments: dict[str, Any] = {"ident": ident, "options": options, **fields}
    rebuilt = tcp_segment(arguments.pop("src", src), dst, arguments.pop("sport", 40000), 5201,
                          arguments.pop("seq", seq), arguments.pop("payload", payload), **arguments)
    return [*packets[:index], rebuilt, *packets[index + 1 :]]


@pytest.mark.parametrize("change", [
    {"sport": 40001},  # another flow
    {"ident": 99},  # IPv4 identification not +1
    {"ttl": 63},
    {"tos": 0x03},  # ECN: Congestion Experienced on one segment
    {"tos": 0x10},
    {"dont_fragment": False},
    {"ack": 2},
    {"window": 1000},
    {"options": bytes([1, 1, 8, 10]) + struct.pack("!II", 123457, 654321)},  # another timestamp
])
def test_segments_that_differ_are_not_joined(change: dict[str, Any]) -> None:
    base = flow(4, 1000, options=TIMESTAMPS)
    assert joined_counts(base) == [4]
    # The odd one stands alone; the next cannot continue it (nor, after the odd one, the first).
    packets = replace(base, 1, **change)
    assert joined_counts(packets) == [1, 1, 2]
    assert [s for group in segments_of(coalesce(packets)) for s in group] == packets


@pytest.mark.parametrize("seq", [4000, 2500, 1000])  # a gap (1000 bytes lost), overlaps (retransmissions)
def test_segments_out_of_sequence_start_a_new_train(seq: int) -> None:
    packets = [*flow(2, 1000), *flow(3, 1000, seq=seq, ident=9)]
    assert joined_counts(packets) == [2, 3]


def test_a_longer_segment_starts_a_new_train_and_a_shorter_or_psh_one_ends_it() -> None:
    sizes = [1000, 1001, 1001, 600, 1001]
    packets, seq = [], 1000
    for index, size in enumerate(sizes):
        packets += flow(1, size, seq=seq, ident=index)
        seq += size
    assert joined_counts(packets) == [1, 3, 1]
    psh = replace(flow(5, 1000), 1, flags=TCP_ACK | TCP_PSH)
    assert joined_counts(psh) == [2, 3]
    assert [s for group in segments_of(coalesce(psh)) for s in group] == psh


def test_another_flow_in_between_does_not_stop_a_train() -> None:
    ours = flow(4, 1000)
    theirs = [tcp_segment(A4, B4, 40001, 5201, 70000 + n * 500, bytes(500), ident=40 + n) for n in range(2)]
    packets = [ours[0], theirs[0], ours[1], theirs[1], ours[2], ours[3]]
    writes = coalesce(packets)
    assert [len(group) for group in segments_of(writes)] == [4, 2]
    assert segments_of(writes) == [ours, theirs]


@pytest.mark.parametrize("flags", [TCP_ACK | TCP_FIN, TCP_ACK | TCP_SYN, TCP_ACK | TCP_RST, TCP_ACK | TCP_URG,
                                   TCP_ACK | TCP_CWR, TCP_ACK | TCP_ECE, TCP_ACK | TCP_ECE | TCP_CWR, 0])
def test_control_flags_stand_alone_and_nothing_passes_them(flags: int) -> None:
    packets = replace(flow(4, 1000), 1, flags=flags, urgent=5 if flags & TCP_URG else 0)
    assert joined_counts(packets) == [1, 1, 2]


def test_packets_without_payload_end_the_train_and_stay_in_place() -> None:
    base = flow(4, 1000)
    ack_only = tcp_segment(A4, B4, 40000, 5201, 3000, b"", ident=9)
    packets = [*base[:2], ack_only, *flow(2, 1000, seq=3000, ident=10)]
    assert joined_counts(packets) == [2, 1, 2]
    assert [s for group in segments_of(coalesce(packets)) for s in group] == packets


def test_fragments_options_and_padding_are_written_as_they_came() -> None:
    fragment = replace(flow(3, 1000), 1, fragment=0x2000, dont_fragment=False)  # MF
    assert joined_counts(fragment) == [1, 1, 1]
    with_ip_options = bytearray(flow(1, 1000)[0])
    with_ip_options[0] = 0x46  # claims a 24-byte header
    padded = flow(3, 1000)
    padded[1] = padded[1] + b"\x00\x00"  # total length says less than the packet holds
    ipv6_extension = bytearray(flow(1, 1000, ipv6=True)[0])
    ipv6_extension[6] = 0  # hop-by-hop options header first
    for packets in (
        [*flow(1, 1000), bytes(with_ip_options), *flow(1, 1000, seq=2000, ident=8)],
        padded,
        [bytes(ipv6_extension)],
        [b"", b"\x45", b"\x60" + bytes(30)],
    ):
        writes = coalesce(packets)
        assert all(bytes(buffers[0]) == NO_OFFLOAD for buffers in writes)
        assert [b"".join(bytes(b) for b in buffers[1:]) for buffers in writes] == packets


DAMAGES = ["first payload", "middle payload end", "tcp checksum"]


@pytest.mark.parametrize(("ipv6", "damage"), [(False, "ip checksum")] + [(v6, d) for v6 in (False, True)
                                                                         for d in DAMAGES])
def test_a_corrupted_segment_makes_the_joined_checksum_wrong(ipv6: bool, damage: str) -> None:
    """The joined checksum is derived from the segments' checksums: one damaged byte in a payload
    or a checksum field (anything else in a header would stop the joining) must leave the joined
    packet failing the kernel's check. Odd payload sizes put every other payload at an odd offset."""
    packets = [bytearray(p) for p in flow(3, 1999, ipv6=ipv6)]
    tcp = 40 if ipv6 else 20
    index, offset = {"first payload": (0, tcp + 25), "middle payload end": (1, tcp + 20 + 1998),
                     "tcp checksum": (2, tcp + 17), "ip checksum": (2, 10)}[damage]
    packets[index][offset] ^= 0x40
    writes = coalesce(packets)
    assert len(writes) == 1
    _, packet = unpack_write(writes[0])
    assert not transport_checksum_ok(packet)
    if not ipv6:
        assert reference_checksum(packet[:20]) == 0  # the new IPv4 header is ours and correct


# ---- cutting the kernel's super-packets --------------------------------------------------------


def super_packet(ipv6: bool, payload: bytes, flags: int, ident: int = 0xFFFE) -> bytes:
    """A TSO packet as the kernel hands it out: one header, lengths for the whole, checksum field
    holding the pseudo-header sum only (NEEDS_CSUM)."""
    src, dst = (A6, B6) if ipv6 else (A4, B4)
    packet = bytearray(tcp_segment(src, dst, 5201, 40000, 2**32 - 100, payload, flags=flags, ident=ident,
                                   options=TIMESTAMPS, tcp_checksum=0))
    start = transport_offset(bytes(packet))
    return bytes(packet)[:start + 16] + b"\x12\x34" + bytes(packet)[start + 18:]  # any value: overwritten


@pytest.mark.parametrize("ipv6", [False, True])
def test_split_cuts_like_the_kernel(ipv6: bool) -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes: 7 full segments of 1388 and one of 524
    flags = TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR
    packet = super_packet(ipv6, payload, flags)
    start = 40 if ipv6 else 20
    gso_type = (VNET_GSO_TCPV6 if ipv6 else VNET_GSO_TCPV4) | VNET_GSO_ECN
    segments = [bytes(s) for s in split(packet, gso_type, 1388, start)]
    assert [len(s) - start - 32 for s in segments] == [1388] * 7 + [524]
    joined = b""
    for index, segment in enumerate(segments):
        assert transport_checksum_ok(segment)
        seq = struct.unpack_from("!I", segment, start + 4)[0]
        assert seq == (2**32 - 100 + index * 1388) & 0xFFFFFFFF  # wraps past 2**32
        expected_flags = TCP_ACK | (TCP_CWR if index == 0 else 0) | (TCP_PSH | TCP_FIN if index == 7 else 0)
        assert segment[start + 13] == expected_flags
        if ipv6:
            assert struct.unpack_from("!H", segment, 4)[0] == len(segment) - 40
        else:
            assert struct.unpack_from("!HH", segment, 2) == (len(segment), (0xFFFE + index) & 0xFFFF)
            assert reference_checksum(segment[:20]) == 0
        same = [(start + 8, start + 13), (start + 14, start + 16), (start + 18, start + 32)]  # ack, window..
        same += [(0, 4), (6, 40)] if ipv6 else [(0, 2), (6, 10), (12, 24)]
        assert all(segment[a:b] == packet[a:b] for a, b in same)
        joined += segment[start + 32 :]
    assert joined == payload


@pytest.mark.parametrize(("packet", "gso_type", "csum_start"), [
    (super_packet(False, bytes(3000), TCP_ACK), VNET_GSO_TCPV6, 20),  # type says IPv6
    (super_packet(True, bytes(3000), TCP_ACK), VNET_GSO_TCPV4, 40),
    (super_packet(False, bytes(3000), TCP_ACK), VNET_GSO_TCPV4, 24),  # TCP is not where it says
    (icmp_echo(A4, B4, 1, 1, bytes(3000)), VNET_GSO_TCPV4, 20),  # not TCP
    (super_packet(False, bytes(3000), TCP_ACK), 3, 20),  # UDP fragmentation offload: not asked for
])
def test_split_refuses_what_does_not_match_its_header(packet: bytes, gso_type: int, csum_start: int) -> None:
    with pytest.raises(OffloadError):
        split(packet, gso_type, 1000, csum_start)


def test_split_refuses_a_zero_segment_size() -> None:
    with pytest.raises(OffloadError):
        split(super_packet(False, bytes(3000), TCP_ACK), VNET_GSO_TCPV4, 0, 20)


# ---- checksums the kernel leaves to us (NEEDS_CSUM) ------------------------------------------------


def udp_datagram(src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, payload: bytes) -> bytes:
    """An IPv4 or IPv6 UDP datagram, its checksum field holding what the kernel leaves there for
    checksum offload: the folded pseudo-header sum, not complemented."""
    length = 8 + len(payload)
    if isinstance(src, IPv4Address):
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, length)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", length, 17)
    udp = struct.pack("!HHHH", 5353, 40001, length, 0xFFFF - reference_checksum(pseudo)) + payload
    if isinstance(src, IPv6Address):
        return struct.pack("!IHBB", 6 << 28, length, 17, 64) + src.packed + dst.packed + udp
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0x4000, 64, 17, 0, src.packed, dst.packed)
    return header[:10] + struct.pack("!H", reference_checksum(header)) + header[12:] + udp


def tcp_left_to_us(payload: bytes, ipv6: bool) -> bytes:
    """A TCP segment as a local socket hands it to a device with checksum offload."""
    src, dst = (A6, B6) if ipv6 else (A4, B4)
    complete = tcp_segment(src, dst, 40000, 5201, 77, payload)
    start = transport_offset(complete)
    length = len(complete) - start
    lengths = struct.pack("!IxxxB", length, 6) if ipv6 else struct.pack("!BBH", 0, 6, length)
    partial = struct.pack("!H", 0xFFFF - reference_checksum(src.packed + dst.packed + lengths))
    return complete[: start + 16] + partial + complete[start + 18 :]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=1500), st.booleans(), st.booleans()), min_size=1, max_size=20))
def test_checksums_left_to_us_are_completed(datagrams: list[tuple[bytes, bool, bool]]) -> None:
    """UDP and TCP, IPv4 and IPv6, odd and even lengths, several at once."""
    packets, unfinished = [], []
    for payload, ipv6, udp in datagrams:
        src, dst = (A6, B6) if ipv6 else (A4, B4)
        packet = bytearray(udp_datagram(src, dst, payload) if udp else tcp_left_to_us(payload, ipv6))
        start = transport_offset(bytes(packet))
        offset = 6 if udp else 16
        packets.append((packet, 17 if udp else 6, start, offset))
        unfinished.append((memoryview(packet), start, checksum_place(packet, start, offset)))
    complete_checksums(unfinished)
    for packet, protocol, start, offset in packets:
        assert transport_checksum_ok(bytes(packet), protocol)
        if protocol == 17:  # 0 means "no checksum" in UDP: sent as 0xFFFF
            assert packet[start + offset : start + offset + 2] != b"\x00\x00"


@pytest.mark.parametrize(("start", "offset"), [(0, 16), (19, 16), (20, 1500), (1400, 6)])
def test_a_checksum_place_outside_the_packet_is_refused(start: int, offset: int) -> None:
    packet = bytearray(udp_datagram(A4, B4, bytes(100)))
    with pytest.raises(OffloadError):
        checksum_place(packet, start, offset)


@pytest.mark.parametrize("gso_size", [1, 2, 3, 5, 1387, 1389, 1390, 1391])
@pytest.mark.parametrize("ipv6", [False, True])
def test_split_cuts_any_segment_size(gso_size: int, ipv6: bool) -> None:
    """Rows are padded to 32-bit words: sizes that are not a multiple of 4 must sum right too."""
    payload = bytes((n * 31 + 7) & 0xFF for n in range(5000))
    packet = super_packet(ipv6, payload, TCP_ACK | TCP_PSH)
    start = 40 if ipv6 else 20
    gso_type = VNET_GSO_TCPV6 if ipv6 else VNET_GSO_TCPV4
    segments = [bytes(s) for s in split(packet, gso_type, gso_size, start)]
    assert all(transport_checksum_ok(segment) for segment in segments)
    assert b"".join(segment[start + 32 :] for segment in segments) == payload
    assert [len(s) - start - 32 for s in segments[:-1]] == [gso_size] * (len(segments) - 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0, 1, 2, 7, 600, 1000, 1000, 1000, 1348]),
                          st.sampled_from([TCP_ACK, TCP_ACK, TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK | TCP_FIN]),
                          st.integers(0, 20)),
                min_size=1, max_size=150),
       st.sampled_from(["IPv4", "IPv6", "both"]))
def test_scanning_for_runs_gives_the_writes_walking_gives(
    sends: list[tuple[int, int, int, int]], family: str
) -> None:
    """Bulk flows (repeated sizes make runs), PSH, FIN, bare ACKs, the odd skipped identification
    or sequence number, IPv6 only, or beside IPv4: the scan only speeds up what walking decides."""
    seqs, idents = [1000, 2**32 - 5000, 7, 90], [1, 65530, 0, 3]
    packets: list[bytes] = []
    for which, size, flags, glitch in sends:
        ipv6 = family == "IPv6" or (family == "both" and which == 2)
        src, dst = (A6, B6) if ipv6 else (A4, B4)
        payload = bytes((seqs[which] + n) & 0xFF for n in range(size))
        seq = seqs[which] + (1 if glitch == 0 else 0)  # a gap in the sequence
        ident = idents[which] + (5 if glitch == 1 else 0)
        options = TIMESTAMPS if which != 3 else b""
        packets.append(tcp_segment(src, dst, 40000 + which, 5201, seq, payload, flags=flags,
                                   ident=ident, options=options))
        seqs[which] = (seqs[which] + size) & 0xFFFFFFFF
        idents[which] = (idents[which] + 1) & 0xFFFF

    def writes(minimum: int) -> list[bytes]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(offload, "RUN_MINIMUM", minimum)
            return [b"".join(bytes(b) for b in buffers) for buffers in coalesce(packets)]

    assert writes(1) == writes(10**9)
