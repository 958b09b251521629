"""What server and client connections share around a sans-I/O session: drain its events,
flush its bytes, keep one loop timer on its next deadline, and move IP packets between the
session and its TUN (pausing the TUN while the TLS side is backed up)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from vpnd.net.tun import TunDevice
from vpnd.runtime.deadline import DeadlineTimer

TUN_BATCH = 256  # packets read from the TUN per wakeup


class _Session(Protocol):
    def next_event(self) -> object | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def send_ip_packets(self, packets: Sequence[bytes | memoryview], ipv6: bool = False) -> int: ...


S = TypeVar("S", bound=_Session)


class SessionPump(Generic[S]):
    """Mixin; the connection sets ``loop``, ``session``, ``closed``, ``tun`` and ``_timer`` and implements
    ``_on_event``, ``_flush_session`` and ``_on_tun_readable`` (which calls ``_read_tun``)."""

    loop: asyncio.AbstractEventLoop
    session: S
    closed: bool
    tun: TunDevice | None
    _timer: DeadlineTimer  # set up by the connection: DeadlineTimer(loop, self._on_timer)

    def _on_event(self, event: object) -> None:
        raise NotImplementedError

    def _flush_session(self) -> None:
        raise NotImplementedError

    def _after_session(self) -> None:
        while (event := self.session.next_event()) is not None:
            self._on_event(event)
            if self.closed:
                return
        self._flush_session()
        self._schedule_timer()

    def _schedule_timer(self) -> None:
        if not self.closed:
            self._timer.follow(self.session.get_timer())

    def _on_timer(self) -> None:
        if self.closed:
            return
        self.session.handle_timer(self.loop.time())
        self._after_session()

    def _on_tun_readable(self) -> None:
        raise NotImplementedError

    def _read_tun(self, buffer: bytearray) -> bool:
        """One batch from the TUN into the session and out to the peer; False when none was read."""
        tun = self.tun
        if tun is None:
            return False
        packets = tun.read_batch(TUN_BATCH, buffer)
        if not packets:
            return False
        ipv4 = [p for p in packets if p[0] >> 4 == 4]
        if ipv4:
            self.session.send_ip_packets(ipv4)
        if len(ipv4) != len(packets):
            self.session.send_ip_packets([p for p in packets if p[0] >> 4 == 6], ipv6=True)
        self._flush_session()
        return True

    def _on_backpressure(self, paused: bool) -> None:
        """The TLS side is backed up (or drained): stop (or resume) reading the TUN."""
        if self.tun is None:
            return
        if paused:
            self.loop.remove_reader(self.tun.fileno())
        else:
            self.loop.add_reader(self.tun.fileno(), self._on_tun_readable)

    def _send_link_ipv6(self, packets: list[bytes]) -> None:
        """IPv6 link services' answers (RA, DHCPv6, NA) go to the peer, never into the TUN."""
        if not self.closed:
            self.session.send_ip_packets(packets, ipv6=True)
            self._flush_session()
