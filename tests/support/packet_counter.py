"""Count the IP packets that cross a namespace's interfaces, by interface name, as the kernel sees
them: one AF_PACKET socket taps every interface of the namespace (including TUN devices created
after it was opened), in both directions. Tests use it to prove that no packet crossed a tunnel
interface, which is stronger than trusting the daemon's own counters.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

ETH_P_ALL = 0x0003


class PacketCounter:
    """Counts packets per interface whose name starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        self.prefixes = prefixes
        self.counts: Counter[str] = Counter()
        self._sock: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._drain)

    def _drain(self) -> None:
        assert self._sock is not None
        while True:
            try:
                _, address = self._sock.recvfrom(65536)
            except BlockingIOError:
                return
            ifname = address[0]
            if ifname.startswith(self.prefixes):
                self.counts[ifname] += 1

    def stop(self) -> dict[str, int]:
        if self._sock is not None:
            self._drain()
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        return dict(self.counts)
