"""TUN devices: one per session, raw IP packets (no packet-info header), non-blocking.

The fast path reads in batches into one preallocated buffer and hands out memoryview slices of
it, so reading does not create a bytes object per packet. The same `TunDevice` also runs over one
end of a SOCK_SEQPACKET socket pair (`open_memory_tun`), which keeps packet boundaries the way a
TUN fd does: tests that cannot be root get a real fd for the event loop with the same interface.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import socket
import struct
from collections.abc import Iterable
from types import TracebackType
from typing import Self

# linux/if_tun.h and linux/sockios.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
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
    """A non-blocking packet fd: read_batch/write_packets move whole IP packets."""

    def __init__(self, fd: int, name: str, mtu: int) -> None:
        self._fd = fd
        # FileIO.readinto returns None on EAGAIN instead of raising: cheaper once per batch.
        self._reader = io.FileIO(fd, "rb", closefd=False)
        self.name = name
        self.mtu = mtu
        self.write_drops = 0
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    def read_batch(self, max_packets: int, buffer: bytearray) -> list[memoryview]:
        """Read packets until none is waiting or `max_packets` were read.

        Packets are stored one after another in `buffer` and returned as slices of it, valid
        until the next call with the same buffer. Reading stops early when the space left could
        not hold a full-MTU packet, so a packet is never truncated; the buffer must hold at least
        one MTU.
        """
        if len(buffer) < self.mtu:
            raise ValueError(f"read buffer of {len(buffer)} bytes is smaller than the MTU {self.mtu}")
        view = memoryview(buffer)
        packets: list[memoryview] = []
        offset = 0
        end = len(buffer)
        readinto = self._reader.readinto
        while len(packets) < max_packets and end - offset >= self.mtu:
            count = readinto(view[offset:])
            if not count:  # None: nothing waiting (EAGAIN); 0: the other side went away
                break
            packets.append(view[offset : offset + count])
            offset += count
        return packets

    def write_packets(self, packets: Iterable[bytes | bytearray | memoryview]) -> int:
        """Write each packet; return how many were accepted. Refused packets are dropped and
        counted in `write_drops` (full queue, invalid packet, interface down)."""
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


def open_tun(name: str, *, mtu: int) -> TunDevice:
    """Create a TUN interface (IFF_TUN | IFF_NO_PI) and return its non-blocking fd.

    `name` may be a kernel pattern such as "sstp%d"; the returned device carries the real name.
    The interface is not persistent: it goes away when the fd is closed (or the process exits).
    Needs CAP_NET_ADMIN. The interface is left down and without addresses (see KernelNet).
    """
    fd = os.open(TUN_CLONE_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        answer = fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, struct.pack("H", IFF_TUN | IFF_NO_PI)))
        real_name = answer[:IFNAMSIZ].rstrip(b"\0").decode("ascii")
        set_mtu(real_name, mtu)
    except BaseException:
        os.close(fd)
        raise
    return TunDevice(fd, real_name, mtu)


def open_memory_tun(name: str, *, mtu: int) -> tuple[TunDevice, socket.socket]:
    """A stand-in TUN for tests without root: no kernel interface, a SOCK_SEQPACKET pair instead.

    Returns the device (what the session code uses) and the other end (what the test uses as
    "the kernel": send() on it is a packet the device reads, recv() gets what the device wrote).
    """
    device_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    device_end.setblocking(False)
    return TunDevice(device_end.detach(), name, mtu), kernel_end
