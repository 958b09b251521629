"""TUN devices: one per session, raw IP packets (no packet-info header), non-blocking.

The fast path reads in batches into one preallocated buffer and hands out memoryview slices of
it, so reading does not create a bytes object per packet. The same `TunDevice` also runs over one
end of a SOCK_SEQPACKET socket pair (`open_memory_tun`), which keeps packet boundaries the way a
TUN fd does: tests that cannot be root get a real fd for the event loop with the same interface.

With TCP offloads (`open_tun(..., offload=True)`, the default) the TUN carries a virtio-net header
before each packet: consecutive TCP segments of a flow from the peer are written as one GSO
super-packet, and the kernel may hand us TSO super-packets, which are cut back into MTU-sized
segments before they leave (vpnd.net.offload). Callers still see plain IP packets both ways.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import socket
import struct
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from vpnd.net.offload import (
    VNET_F_NEEDS_CSUM,
    VNET_GSO_NONE,
    VNET_HEADER,
    VNET_HEADER_LENGTH,
    OffloadError,
    Packet,
    coalesce,
    complete_checksum,
    split,
)

# linux/if_tun.h and linux/sockios.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
MAX_SUPER_PACKET = 0xFFFF  # the largest packet a TSO read can return (IPv4 total length)
SIOCSIFMTU = 0x8922
IFNAMSIZ = 16
_IFREQ_SIZE = 40  # struct ifreq on every Linux ABI we run on

TUN_CLONE_DEVICE = "/dev/net/tun"

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


class TunDevice:
    """A non-blocking packet fd: read_batch/write_packets move whole IP packets.

    ``vnet_header``: every packet on the fd carries a virtio-net header (IFF_VNET_HDR), so writes
    may join TCP segments (GSO). ``tso``: the kernel was allowed to hand us unchecksummed packets
    and TCP super-packets (TUNSETOFFLOAD), which reads complete and split."""

    def __init__(self, fd: int, name: str, mtu: int, *, vnet_header: bool = False, tso: bool = False) -> None:
        self._fd = fd
        # FileIO.readinto returns None on EAGAIN instead of raising: cheaper once per batch.
        self._reader = io.FileIO(fd, "rb", closefd=False)
        self.name = name
        self.mtu = mtu
        self.vnet_header = vnet_header
        self.tso = tso
        self.write_drops = 0
        self.read_drops = 0  # packets from the kernel whose offload header made no sense
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    @property
    def max_read(self) -> int:
        """The largest packet one read can return, headers included."""
        if not self.vnet_header:
            return self.mtu
        return VNET_HEADER_LENGTH + (MAX_SUPER_PACKET if self.tso else self.mtu)

    def read_batch(self, max_packets: int, buffer: bytearray) -> list[bytes | memoryview]:
        """Read packets until none is waiting or `max_packets` reads were made.

        Packets are stored one after another in `buffer` and returned as slices of it, valid
        until the next call with the same buffer (segments cut from a TSO super-packet are bytes
        of their own). Reading stops early when the space left could not hold the largest packet
        (`max_read`), so a packet is never truncated; the buffer must hold at least one.
        """
        largest = self.max_read
        if len(buffer) < largest:
            raise ValueError(f"read buffer of {len(buffer)} bytes is smaller than one packet ({largest})")
        view = memoryview(buffer)
        packets: list[bytes | memoryview] = []
        offset = 0
        end = len(buffer)
        readinto = self._reader.readinto
        reads = 0
        vnet = self.vnet_header
        while reads < max_packets and end - offset >= largest:
            count = readinto(view[offset:])
            if not count:  # None: nothing waiting (EAGAIN); 0: the other side went away
                break
            reads += 1
            if not vnet:
                packets.append(view[offset : offset + count])
            elif view[offset] & VNET_F_NEEDS_CSUM or view[offset + 1] != VNET_GSO_NONE:
                self._take_offloaded(view[offset : offset + count], packets)
            else:  # nothing for us to do: only the header to skip
                packets.append(view[offset + VNET_HEADER_LENGTH : offset + count])
            offset += count
        return packets

    def _take_offloaded(self, data: memoryview, packets: list[bytes | memoryview]) -> None:
        flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HEADER.unpack_from(data)
        packet = data[VNET_HEADER_LENGTH:]
        try:
            if gso_type != VNET_GSO_NONE:
                packets.extend(split(packet, gso_type, gso_size, csum_start))
                return
            if flags & VNET_F_NEEDS_CSUM:
                complete_checksum(packet, csum_start, csum_offset)
        except OffloadError:
            self.read_drops += 1
            return
        packets.append(packet)

    def write_packets(self, packets: Sequence[Packet]) -> int:
        """Write each packet; return how many were accepted. Refused packets are dropped and
        counted in `write_drops` (full queue, invalid packet, interface down). With a virtio-net
        header, TCP segments that may be joined go to the kernel as one super-packet."""
        if self.vnet_header:
            return self._write_offloaded(packets)
        written = 0
        fd = self._fd
        write = os.write
        for packet in packets:
            try:
                write(fd, packet)
            except OSError as error:
                if error.errno not in _DROPPED_WRITE_ERRNOS:
                    raise
                self.write_drops += 1
            else:
                written += 1
        return written

    def _write_offloaded(self, packets: Sequence[Packet]) -> int:
        written = 0
        fd = self._fd
        writev = os.writev
        for buffers in coalesce(packets):
            # [header, packet], or [header, headers, payload, payload, ...] for joined segments
            segments = len(buffers) - 2 or 1
            try:
                writev(fd, buffers)
            except OSError as error:
                if error.errno not in _DROPPED_WRITE_ERRNOS:
                    raise
                self.write_drops += segments
            else:
                written += segments
        return written

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
    With `offload`, the TUN gets a virtio-net header and TCP offloads (see TunDevice); a kernel
    that refuses them gets the plain TUN instead.
    """
    if offload:
        try:
            return _open_tun(name, mtu, IFF_VNET_HDR, OFFLOADS)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP):
                raise
    return _open_tun(name, mtu, 0, None)


def _open_tun(name: str, mtu: int, extra_flags: int, offloads: int | None) -> TunDevice:
    fd = os.open(TUN_CLONE_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        answer = fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, struct.pack("H", IFF_TUN | IFF_NO_PI | extra_flags)))
        if offloads is not None:
            fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)
        real_name = answer[:IFNAMSIZ].rstrip(b"\0").decode("ascii")
        set_mtu(real_name, mtu)
    except BaseException:
        os.close(fd)
        raise
    return TunDevice(fd, real_name, mtu, vnet_header=bool(extra_flags), tso=bool(offloads))


def open_memory_tun(name: str, *, mtu: int) -> tuple[TunDevice, socket.socket]:
    """A stand-in TUN for tests without root: no kernel interface, a SOCK_SEQPACKET pair instead.

    Returns the device (what the session code uses) and the other end (what the test uses as
    "the kernel": send() on it is a packet the device reads, recv() gets what the device wrote).
    """
    device_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    device_end.setblocking(False)
    return TunDevice(device_end.detach(), name, mtu), kernel_end
