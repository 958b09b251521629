"""TUN devices: one per session, raw IP packets (no packet-info header), non-blocking.

The fast path reads in batches into one preallocated buffer and hands out memoryview slices of
it, so reading does not create a bytes object per packet. The same `TunDevice` also runs over one
end of a SOCK_SEQPACKET socket pair (`open_memory_tun`), which keeps packet boundaries the way a
TUN fd does: tests that cannot be root get a real fd for the event loop with the same interface.

With `offload` (the default) the TUN carries a virtio-net header before each packet
(IFF_VNET_HDR), and the kernel's TCP and the session trade super-packets of up to 64 KiB: one
read, one write and one pass through the kernel's stack where it took dozens (vpnd.net.offload).
- Writes: consecutive TCP segments of a flow from the peer are joined into one GSO packet.
- Reads: the kernel is offered checksum offload and TSO (TUNSETOFFLOAD), so its TCP hands over
  super-packets with checksums left to us; they are cut into checksummed segments here, and a
  single packet whose checksum is left to us (NEEDS_CSUM) gets it completed. Peers only ever see
  MTU-sized packets with complete checksums.
"""

from __future__ import annotations

import errno
import fcntl
import io
import logging
import os
import socket
import struct
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from vpnd.net.offload import (
    IPV6_HEADER_LENGTH,
    MAX_IP_TOTAL,
    NO_OFFLOAD,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_NONE,
    VNET_GSO_TCPV4,
    VNET_HEADER,
    VNET_HEADER_LENGTH,
    OffloadError,
    Packet,
    checksum_place,
    coalesce,
    complete_checksums,
    split,
)

log = logging.getLogger("vpnd.net")

# linux/if_tun.h and linux/sockios.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
SIOCSIFMTU = 0x8922
SIOCSIFTXQLEN = 0x8943
IFNAMSIZ = 16
_IFREQ_SIZE = 40  # struct ifreq on every Linux ABI we run on

TUN_CLONE_DEVICE = "/dev/net/tun"

# Packets the kernel may queue for us to read (the TUN's txqueuelen; the kernel's default is 500).
# What the kernel routes into the TUN while the loop is busy elsewhere or descheduled waits here,
# and when it is full the kernel drops (tx_dropped): on a LAN without GRO every 1,500-byte packet
# is one entry, and a burst of the sender's segments (released by a batch of ACKs) overflowed 500
# entries, each drop a retransmit for the peer's TCP. 2,000 entries hold about 23 ms at 1 Gbit/s;
# bounded, like the TLS side's send queue (runtime.tls_stream.HIGH_WATER).
TUN_QUEUE_LENGTH = 2000

# A write that fails with these loses that packet and nothing else: the queue is full (EAGAIN,
# ENOBUFS), the kernel rejected the packet's contents (EINVAL: not IPv4/IPv6), or the interface is
# down (EIO). A peer's bad packet or a burst must not stop the session, so they are counted.
_DROPPED_WRITE_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.EINVAL, errno.EIO})


def _ifreq(name: str, payload: bytes) -> bytes:
    encoded = name.encode("ascii")
    if not encoded or len(encoded) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} must be 1 to {IFNAMSIZ - 1} ASCII characters")
    return struct.pack(f"{IFNAMSIZ}s", encoded) + payload.ljust(_IFREQ_SIZE - IFNAMSIZ, b"\0")


def set_mtu(name: str, mtu: int) -> None:
    """Set an interface's MTU with the classic ioctl (no netlink needed for this one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        fcntl.ioctl(control.fileno(), SIOCSIFMTU, _ifreq(name, struct.pack("i", mtu)))


def set_queue_length(name: str, packets: int) -> None:
    """Set an interface's txqueuelen: for a TUN, how many packets wait for our reads."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        fcntl.ioctl(control.fileno(), SIOCSIFTXQLEN, _ifreq(name, struct.pack("i", packets)))


class TunDevice:
    """A non-blocking packet fd: read_batch/write_packets move whole IP packets.

    With ``vnet_header`` every packet on the fd carries a virtio-net header (IFF_VNET_HDR), which
    lets writes join TCP segments into GSO super-packets (``join_segments``)."""

    def __init__(
        self, fd: int, name: str, mtu: int, *, vnet_header: bool = False, segment_offload: bool = False
    ) -> None:
        self._fd = fd
        # FileIO.readinto returns None on EAGAIN instead of raising: cheaper once per batch.
        self._reader = io.FileIO(fd, "rb", closefd=False)
        self.name = name
        self.mtu = mtu
        self.vnet_header = vnet_header
        self.join_segments = vnet_header  # off for good if the kernel refuses a super-packet
        # The kernel hands over TCP super-packets and leaves checksums to us (TUNSETOFFLOAD);
        # off for good if one of them cannot be cut.
        self.segment_offload = segment_offload
        self.write_drops = 0
        self.read_drops = 0
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    @property
    def max_read(self) -> int:
        """The most bytes one read can return: a packet of MTU size (a super-packet with TSO), and
        its virtio-net header."""
        if self.segment_offload:
            return IPV6_HEADER_LENGTH + MAX_IP_TOTAL + VNET_HEADER_LENGTH
        return self.mtu + VNET_HEADER_LENGTH if self.vnet_header else self.mtu

    def read_batch(self, max_packets: int, buffer: bytearray) -> list[memoryview]:
        """Read packets until none is waiting or `max_packets` were read.

        Packets are stored one after another in `buffer` and returned as slices of it, valid
        until the next call with the same buffer. Reading stops early when the space left could
        not hold a full-MTU packet (`max_read`), so a packet is never truncated; the buffer must
        hold at least one.
        """
        largest = self.max_read
        if len(buffer) < largest:
            raise ValueError(f"read buffer of {len(buffer)} bytes is smaller than one packet ({largest})")
        view = memoryview(buffer)
        packets: list[memoryview] = []
        offset = 0
        end = len(buffer)
        readinto = self._reader.readinto
        # A header of zeros (no GSO, checksum complete) is by far the most common: the packet
        # follows it as it is. Without offloads offered the kernel sends nothing else.
        skip = VNET_HEADER_LENGTH if self.vnet_header else 0
        unfinished: list[tuple[memoryview, int, int]] = []  # checksums left to us, done at the end
        while len(packets) < max_packets and end - offset >= largest:
            count = readinto(view[offset:])
            if not count:  # None: nothing waiting (EAGAIN); 0: the other side went away
                break
            if skip and (view[offset] | view[offset + 1]):  # flags or gso_type
                packets += self._offloaded(view[offset:offset + count], unfinished)
            else:
                packets.append(view[offset + skip : offset + count])
            offset += count
        if unfinished:
            complete_checksums(unfinished)
        return packets

    def _offloaded(
        self, frame: memoryview, unfinished: list[tuple[memoryview, int, int]]
    ) -> list[memoryview]:
        """The packets a read with checksum or segmentation work left to us stands for; a
        checksum to complete is added to ``unfinished``."""
        flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HEADER.unpack_from(frame)
        packet = frame[VNET_HEADER_LENGTH:]
        try:
            if gso_type != VNET_GSO_NONE:
                return split(packet, gso_type, gso_size, csum_start)
            if flags & VNET_F_NEEDS_CSUM:
                unfinished.append((packet, csum_start, checksum_place(packet, csum_start, csum_offset)))
            return [packet]
        except OffloadError as error:
            # Not what the kernel's TCP sends: lose this packet (TCP sends it again) and let the
            # kernel do the work from now on.
            self.read_drops += 1
            if self.segment_offload:
                log.warning("%s: cannot take an offloaded packet from the kernel (%s); turning "
                            "offloads off", self.name, error)
                self._stop_segment_offload()
            return []

    def _stop_segment_offload(self) -> None:
        try:
            fcntl.ioctl(self._fd, TUNSETOFFLOAD, 0)
        except OSError as error:
            # Reads must stay big enough for super-packets while the kernel may still send them.
            log.warning("%s: cannot turn offloads off: %s", self.name, error.strerror or error)
            return
        self.segment_offload = False

    def write_packets(self, packets: Sequence[Packet]) -> int:
        """Write each packet; return how many were accepted. Refused packets are dropped and
        counted in `write_drops` (full queue, invalid packet, interface down). With
        `join_segments`, TCP segments that may be joined go to the kernel as one super-packet."""
        if self.join_segments:
            return self._write_joined(packets)
        header = NO_OFFLOAD if self.vnet_header else b""
        written = 0
        fd = self._fd
        write = os.write
        for packet in packets:
            try:
                write(fd, header + packet if header else packet)
            except OSError as error:
                if error.errno not in _DROPPED_WRITE_ERRNOS:
                    raise
                self.write_drops += 1
            else:
                written += 1
        return written

    def _write_joined(self, packets: Sequence[Packet]) -> int:
        written = 0
        fd = self._fd
        write = os.write
        writev = os.writev
        for buffers in coalesce(packets):
            # [header, packet], or [header, headers, payload, payload, ...] for joined segments
            segments = len(buffers) - 2 or 1
            try:
                if segments == 1:  # copying one packet behind its header is cheaper than writev
                    write(fd, NO_OFFLOAD + buffers[1])
                else:
                    writev(fd, buffers)
            except OSError as error:
                if error.errno not in _DROPPED_WRITE_ERRNOS:
                    raise
                if segments > 1 and error.errno == errno.EINVAL:
                    written += self._refuse_joining(buffers)
                    continue
                self.write_drops += segments
            else:
                written += segments
        return written

    def _refuse_joining(self, buffers: list[Packet]) -> int:
        """The kernel refused a super-packet: cut it back into the segments it was made of (byte
        for byte) and write those, and every later segment, one at a time."""
        self.join_segments = False
        log.warning("%s: the kernel refuses joined TCP segments (GSO); writing them one by one", self.name)
        _, gso_type, _, gso_size, _, _ = VNET_HEADER.unpack(buffers[0])
        transport = 20 if gso_type == VNET_GSO_TCPV4 else IPV6_HEADER_LENGTH
        return self.write_packets(split(b"".join(buffers[1:]), gso_type, gso_size, transport))

    def close(self) -> None:
        """Close the fd; a non-persistent TUN interface disappears with it."""
        if not self.closed:
            self.closed = True
            self._reader.close()
            os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def open_tun(name: str, *, mtu: int, offload: bool = True) -> TunDevice:
    """Create a TUN interface (IFF_TUN | IFF_NO_PI) and return its non-blocking fd.

    `name` may be a kernel pattern such as "sstp%d"; the returned device carries the real name.
    The interface is not persistent: it goes away when the fd is closed (or the process exits).
    Needs CAP_NET_ADMIN. The interface is left down and without addresses (see KernelNet).
    With `offload`, the TUN gets a virtio-net header so that writes can join TCP segments (see
    TunDevice); a kernel that refuses the header gets the plain TUN instead.
    """
    if offload:
        try:
            return _open_tun(name, mtu, vnet_header=True)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
    return _open_tun(name, mtu, vnet_header=False)


def _open_tun(name: str, mtu: int, *, vnet_header: bool) -> TunDevice:
    fd = os.open(TUN_CLONE_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_header else 0)
    try:
        answer = fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, struct.pack("H", flags)))
        real_name = answer[:IFNAMSIZ].rstrip(b"\0").decode("ascii")
        set_mtu(real_name, mtu)
        set_queue_length(real_name, TUN_QUEUE_LENGTH)
        segment_offload = vnet_header and _offer_segment_offload(fd)
    except BaseException:
        os.close(fd)
        raise
    return TunDevice(fd, real_name, mtu, vnet_header=vnet_header, segment_offload=segment_offload)


def _offer_segment_offload(fd: int) -> bool:
    """Let the kernel hand over TCP super-packets (IPv4, IPv6) with checksums left to us."""
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        return False
    return True


def open_memory_tun(name: str, *, mtu: int) -> tuple[TunDevice, socket.socket]:
    """A stand-in TUN for tests without root: no kernel interface, a SOCK_SEQPACKET pair instead.

    Returns the device (what the session code uses) and the other end (what the test uses as
    "the kernel": send() on it is a packet the device reads, recv() gets what the device wrote).
    """
    device_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    device_end.setblocking(False)
    return TunDevice(device_end.detach(), name, mtu), kernel_end
