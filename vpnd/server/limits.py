"""Abuse limits as pure bookkeeping: every method takes the time (``now``, seconds) and nothing
here reads a clock, sleeps or touches a socket, so the daemon wires them in and tests drive them
with a fake clock.

* ``ConnectionRateLimit`` — `limits connection-limit N/sec|N/min`, `burst`, `timeout`: a token
  bucket per source; a source that runs dry is blocked for `timeout` seconds.
* ``AuthThrottle`` — authentication failures per source and per user name make the next attempt
  wait: 1 s after the first failure, doubling up to a cap, forgotten after a success or a quiet
  period.
* ``RefusalLog`` — the first refusal of a source for a cause in an interval is logged in full;
  the rest become one summary line when the interval ends.

Memory is bounded whatever the peers do: each table holds at most ``max_entries`` keys, drops
entries that no longer say anything (a full bucket, a forgotten failure, an ended window) and,
when full, forgets its least recently touched key. IPv6 sources are keyed by their /64, the
smallest block a site is usually given, so one attacker cannot mint a fresh key per address.
"""

from __future__ import annotations

import enum
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network, ip_address
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

SWEEP_PER_CALL = 16  # expired entries dropped per call: amortised, never a full scan


def source_key(host: str) -> str:
    """The key a client address is limited under: IPv4 as it is, IPv6 by its /64."""
    try:
        address = ip_address(host)
    except ValueError:
        return host
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(IPv6Network((address, 64), strict=False))
    return str(address)


class _Table(Generic[K, V]):
    """Keys in least-recently-touched order, at most ``max_entries`` of them."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self.entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: K) -> V | None:
        return self.entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Insert or refresh ``key`` as the most recently touched; evicts the oldest when full."""
        if key in self.entries:
            self.entries.move_to_end(key)
        elif len(self.entries) >= self.max_entries:
            self.entries.popitem(last=False)
        self.entries[key] = value

    def pop(self, key: K) -> None:
        self.entries.pop(key, None)

    def oldest(self) -> tuple[K, V] | None:
        return next(iter(self.entries.items()), None)


# ---- connection rate ------------------------------------------------------------------------


class Admission(enum.Enum):
    ADMITTED = "admitted"
    LIMITED = "limited"  # this connection ran the bucket dry: the source is blocked from now on
    BLOCKED = "blocked"  # the source is blocked already


_RATE = re.compile(r"([0-9]+)/(sec|min)")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    blocked_until: float = 0.0


class ConnectionRateLimit:
    """Token bucket per source: ``per_second`` tokens a second, at most ``burst`` stored; a
    connection takes one. Without a token the source is blocked for ``block_seconds``: every
    connection in that time is refused, then the bucket (refilled meanwhile) is used again."""

    def __init__(self, per_second: float, burst: int, block_seconds: float, *,
                 max_entries: int = 16384) -> None:
        if per_second <= 0 or burst < 1 or block_seconds < 0:
            raise ValueError("rate and burst must be positive, block_seconds not negative")
        self.per_second = per_second
        self.burst = burst
        self.block_seconds = block_seconds
        self._table: _Table[str, _Bucket] = _Table(max_entries)

    @classmethod
    def from_config(cls, rate: str, burst: int | None, timeout: int | None, *,
                    max_entries: int = 16384) -> ConnectionRateLimit:
        """`connection-limit` ("10/sec", "30/min"); `burst` defaults to the count of the rate
        (10/min lets ten in at once), `timeout` to 60 s."""
        match = _RATE.fullmatch(rate)
        if match is None:
            raise ValueError(f"rate {rate!r} is not N/sec or N/min")
        count = int(match.group(1))
        if count < 1:
            raise ValueError(f"rate {rate!r} must allow at least one connection")
        per_second = count if match.group(2) == "sec" else count / 60.0
        return cls(per_second, burst if burst is not None else count, 60.0 if timeout is None else timeout,
                   max_entries=max_entries)

    def __len__(self) -> int:
        return len(self._table)

    def admit(self, key: str, now: float) -> Admission:
        self._sweep(now)
        bucket = self._table.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        elif now < bucket.blocked_until:
            return Admission.BLOCKED
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second)
            bucket.updated = now
        self._table.put(key, bucket)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Admission.ADMITTED
        bucket.blocked_until = now + self.block_seconds
        return Admission.LIMITED

    def blocked_until(self, key: str) -> float | None:
        bucket = self._table.get(key)
        return bucket.blocked_until if bucket is not None and bucket.blocked_until > 0 else None

    def _forgettable(self, bucket: _Bucket, now: float) -> bool:
        """Blocked no more and refilled: a fresh bucket would say the same."""
        refilled_at = bucket.updated + (self.burst - bucket.tokens) / self.per_second
        return now >= bucket.blocked_until and now >= refilled_at

    def _sweep(self, now: float) -> None:
        for _ in range(SWEEP_PER_CALL):
            oldest = self._table.oldest()
            if oldest is None or not self._forgettable(oldest[1], now):
                return
            self._table.pop(oldest[0])


# ---- authentication failures ----------------------------------------------------------------


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class AuthThrottle:
    """How long an authentication attempt waits before it is looked at.

    Each failure of a source or a user name doubles that key's wait (``base`` after the first,
    at most ``cap``); an attempt waits the longer of its source's and its user name's. Both
    keys are forgotten after a success, and a key is forgotten ``forget_after`` seconds after its
    last failure. Waiting before asking the backend (rather than only before answering a failure)
    makes success and failure take the same time, so an attacker learns nothing by giving up
    early, and a flood of guesses does not reach the RADIUS servers."""

    def __init__(self, *, base: float = 1.0, cap: float = 30.0, forget_after: float = 600.0,
                 max_entries: int = 16384) -> None:
        if base <= 0 or cap < base or forget_after <= 0:
            raise ValueError("base must be positive, cap at least base, forget_after positive")
        self.base = base
        self.cap = cap
        self.forget_after = forget_after
        self._sources: _Table[str, _Failures] = _Table(max_entries)
        self._users: _Table[str, _Failures] = _Table(max_entries)

    def __len__(self) -> int:
        return len(self._sources) + len(self._users)

    def delay(self, source: str, user: str, now: float) -> float:
        return max(self._delay_of(self._sources, source, now), self._delay_of(self._users, user, now))

    def failures(self, source: str, user: str, now: float) -> tuple[int, int]:
        """(failures of the source, failures of the user name) still remembered."""
        return self._count_of(self._sources, source, now), self._count_of(self._users, user, now)

    def failed(self, source: str, user: str, now: float) -> None:
        for table, key in ((self._sources, source), (self._users, user)):
            self._sweep(table, now)
            entry = table.get(key)
            count = 1 if entry is None or self._forgotten(entry, now) else entry.count + 1
            table.put(key, _Failures(count, now))

    def succeeded(self, source: str, user: str) -> None:
        self._sources.pop(source)
        self._users.pop(user)

    def _forgotten(self, entry: _Failures, now: float) -> bool:
        return now - entry.last >= self.forget_after

    def _count_of(self, table: _Table[str, _Failures], key: str, now: float) -> int:
        entry = table.get(key)
        return 0 if entry is None or self._forgotten(entry, now) else entry.count

    def _delay_of(self, table: _Table[str, _Failures], key: str, now: float) -> float:
        count = self._count_of(table, key, now)
        if count == 0:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(count - 1, 62))

    def _sweep(self, table: _Table[str, _Failures], now: float) -> None:
        for _ in range(SWEEP_PER_CALL):
            oldest = table.oldest()
            if oldest is None or not self._forgotten(oldest[1], now):
                return
            table.pop(oldest[0])


# ---- refusal log ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefusalSummary:
    """Refusals not logged one by one: ``count`` from ``source`` (None: sources beyond the table)."""

    source: str | None
    count: int
    causes: dict[str, int]
    interval: float

    def text(self) -> str:
        causes = ", ".join(f"{cause} {n}" for cause, n in sorted(self.causes.items()))
        who = f"from {self.source}" if self.source is not None else "from other sources (too many to list)"
        more = "more " if self.source is not None else ""
        return f"{self.count} {more}refused {who} in the last {self.interval:g} s ({causes})"


@dataclass(slots=True)
class _Window:
    started: float
    suppressed: int = 0


class RefusalLog:
    """Decides which refusals are logged: per source and cause, the first of each ``interval`` in
    full, the others summed up in one ``RefusalSummary`` when the interval is over (``due``).
    Per cause as well as per source, so that a flood of one kind does not hide a refusal of
    another kind (a user's second login, say) from the same address."""

    def __init__(self, interval: float = 60.0, *, max_entries: int = 1024) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._windows: _Table[tuple[str, str], _Window] = _Table(max_entries)
        self._ended: list[RefusalSummary] = []
        self._overflow: Counter[str] = Counter()
        self._overflow_since: float | None = None

    def __len__(self) -> int:
        return len(self._windows)

    def note(self, source: str, cause: str, now: float) -> bool:
        """Record a refusal; True when it is to be logged in full."""
        key = (source, cause)
        window = self._windows.get(key)
        if window is not None and now - window.started >= self.interval:
            self._close(key, window)
            window = None
        if window is not None:
            window.suppressed += 1
            return False
        if len(self._windows) >= self._windows.max_entries:
            self._expire(now)
        if len(self._windows) >= self._windows.max_entries:
            # A flood from more sources than we list: count them together, log none one by one.
            if self._overflow_since is None:
                self._overflow_since = now
            self._overflow[cause] += 1
            return False
        self._windows.put(key, _Window(now))
        return True

    def next_due(self) -> float | None:
        """When ``due`` has something to say next (None: nothing pending)."""
        if self._ended:
            return 0.0
        times = []
        oldest = self._windows.oldest()
        if oldest is not None:
            times.append(oldest[1].started + self.interval)
        if self._overflow_since is not None:
            times.append(self._overflow_since + self.interval)
        return min(times) if times else None

    def due(self, now: float) -> list[RefusalSummary]:
        """Summaries of the intervals that are over; their windows are forgotten."""
        self._expire(now)
        if self._overflow_since is not None and now - self._overflow_since >= self.interval:
            self._ended.append(RefusalSummary(None, sum(self._overflow.values()), dict(self._overflow),
                                              self.interval))
            self._overflow.clear()
            self._overflow_since = None
        ended, self._ended = self._ended, []
        return ended

    def _close(self, key: tuple[str, str], window: _Window) -> None:
        self._windows.pop(key)
        if window.suppressed:
            source, cause = key
            self._ended.append(RefusalSummary(source, window.suppressed, {cause: window.suppressed},
                                              self.interval))

    def _expire(self, now: float) -> None:
        # Windows are inserted when they start and never refreshed, so the oldest ends first.
        while (oldest := self._windows.oldest()) is not None and now - oldest[1].started >= self.interval:
            self._close(*oldest)
