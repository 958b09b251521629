"""What server and client connections share around a sans-I/O session: drain its events,
flush its bytes, and keep one loop timer on its next deadline."""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar


class _Session(Protocol):
    def next_event(self) -> object | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


S = TypeVar("S", bound=_Session)


class SessionPump(Generic[S]):
    """Mixin; the connection sets ``loop``, ``session`` and ``closed`` and implements
    ``_on_event`` and ``_flush_session``."""

    loop: asyncio.AbstractEventLoop
    session: S
    closed: bool
    _timer: asyncio.TimerHandle | None = None
    _timer_deadline: float | None = None

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
        deadline = self.session.get_timer()
        if deadline == self._timer_deadline or self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        if self.closed:
            return
        self.session.handle_timer(self.loop.time())
        self._after_session()
