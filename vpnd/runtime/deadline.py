"""One event-loop timer that follows a sans-I/O object's next deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class DeadlineTimer:
    """``follow(deadline)`` after every call into a sans-I/O object keeps one loop timer on its
    next deadline, moved only when that changed; ``expired`` runs when it is reached."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None

    def follow(self, deadline: float | None) -> None:
        if deadline == self._deadline:
            return
        self.cancel()
        self._deadline = deadline
        if deadline is not None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._deadline = None

    def _fire(self) -> None:
        self._handle = None
        self._deadline = None
        self._expired()
