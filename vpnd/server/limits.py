"""Abuse limits as pure bookkeeping: every method takes the time (``now``, seconds) and nothing
here reads a clock, sleeps or touches a socket, so the daemon wires them in and tests drive them
with a fake clock.

* ``ConnectionRateLimit`` — `limits connection-limit N/sec|N/min`, `burst`, `timeout`: a token
  bucket per source; a source that runs dry is blocked for `timeout` seconds.
* ``AuthThrottle`` — failed authentications make the next attempts at the same thing wait: the
  same user name from the same address, the same user name from anywhere, or (password spraying)
  other user names from an address failing for many; 1 s after the first failure, doubling up to
  a cap, forgotten after a success or a quiet period.
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
from dataclasses import dataclass, field
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

    def put(self, key: K, value: V) -> tuple[K, V] | None:
        """Insert or refresh ``key`` as the most recently touched; evicts the oldest when full and
        returns what it evicted."""
        evicted = None
        if key in self.entries:
            self.entries.move_to_end(key)
        elif len(self.entries) >= self.max_entries:
            evicted = self.entries.popitem(last=False)
        self.entries[key] = value
        return evicted

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

# Table bounds, read when a throttle is built (a test may lower them to watch them hold).
MAX_FAILING_PAIRS = 16384  # (address, user name) pairs with remembered failures
MAX_TRUSTED_PAIRS = 65536  # (address, user name) pairs with a recent successful login


class ThrottleReason(enum.Enum):
    """Which key made an attempt wait (the one with the longest wait)."""

    PAIR = "pair"  # this user name's failures from this address
    USER = "user"  # this user name failing from many addresses
    SPRAYING_ADDRESS = "spraying_address"  # this address failing for many user names


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """`limits authentication-failure-*`: the wait after ``n`` failures of a key is
    ``min(cap, base * 2 ** (n - 1))`` seconds, ``base`` being 1 s (or the cap when it is below
    1 s); a failure is remembered until ``window`` seconds pass without another failure of its
    (address, user name) pair; an address counts as spraying past ``spraying_threshold`` distinct
    failing names (0: never); a successful login exempts its pair from the user and spraying
    waits for ``trust_time`` seconds (0: never)."""

    cap: float = 30.0
    window: float = 600.0
    spraying_threshold: int = 20
    trust_time: float = 604800.0

    def __post_init__(self) -> None:
        if self.cap <= 0 or self.window <= 0 or self.spraying_threshold < 0 or self.trust_time < 0:
            raise ValueError("cap and window must be positive, threshold and trust time not negative")

    @property
    def base(self) -> float:
        return min(1.0, self.cap)

    def delay(self, count: int) -> float:
        """The wait ``count`` failures impose (0 for none)."""
        return 0.0 if count <= 0 else min(self.cap, self.base * 2.0 ** min(count - 1, 62))


@dataclass(frozen=True, slots=True)
class ThrottleVerdict:
    """How long an attempt waits before the backend is asked, and why: ``count`` is the figure
    behind the wait (failures of the pair, addresses failing for the user name, or user names
    failing from the address)."""

    wait: float
    reason: ThrottleReason
    count: int

    def explain(self, source: str, user: str) -> str:
        match self.reason:
            case ThrottleReason.PAIR:
                logins = "login" if self.count == 1 else "logins"
                return f"{self.count} recent failed {logins} of {user} from {source}"
            case ThrottleReason.USER:
                return f"logins of {user} failed recently from {self.count} addresses"
            case ThrottleReason.SPRAYING_ADDRESS:
                return (f"{self.count} user names failed recently from {source} (password spraying?) "
                        f"and {user} has not logged in from there recently")


@dataclass(frozen=True, slots=True)
class ThrottleTables:
    """What the throttle remembers, for `show statistics`."""

    failing_pairs: int
    failing_users: int
    failing_addresses: int
    spraying_addresses: int
    trusted_pairs: int


@dataclass(slots=True)
class _PairFailures:
    count: int
    last: float


class AuthThrottle:
    """How long an authentication attempt waits before it is looked at.

    It slows down what is being guessed, not who shares an address: the wait is the longest of
    * the pair's: failures of this user name from this address;
    * the user name's: the number of addresses it failed from (a guess spread over many
      addresses), and
    * the address's: the distinct user names that failed from it beyond ``spraying_threshold``
      (password spraying),
    the last two only for a pair without a recent successful login, so a user who gets in from an
    address is not held there by other people's failures. Everything is counted on remembered
    (address, user name) pairs: a success forgets its pair (its failures were the user's typos), a
    pair is forgotten ``window`` seconds after its last failure.

    The wait depends on the keys alone, never on the password, and comes before the backend is
    asked: success and failure take the same time (giving up early teaches an attacker nothing)
    and a flood of guesses does not reach the RADIUS servers. Both tables are bounded; when full
    they forget their least recently touched pair."""

    def __init__(self, settings: ThrottleSettings, *, max_pairs: int | None = None,
                 max_trusted: int | None = None) -> None:
        self.settings = settings
        self._pairs: _Table[tuple[str, str], _PairFailures] = _Table(
            MAX_FAILING_PAIRS if max_pairs is None else max_pairs)
        self._trusted: _Table[tuple[str, str], float] = _Table(  # pair -> time of its last success
            MAX_TRUSTED_PAIRS if max_trusted is None else max_trusted)
        self._names_of_source: Counter[str] = Counter()  # remembered failing pairs per address
        self._sources_of_user: Counter[str] = Counter()  # remembered failing pairs per user name

    def assess(self, source: str, user: str, now: float) -> ThrottleVerdict | None:
        """The wait for an attempt of ``user`` from ``source`` now (None: it goes straight on)."""
        self._forget(now)
        settings = self.settings
        pair = self._pairs.get((source, user))
        failures = pair.count if pair is not None else 0
        verdicts = [ThrottleVerdict(settings.delay(failures), ThrottleReason.PAIR, failures)]
        if not self.trusted(source, user, now):
            addresses = self._sources_of_user[user]
            verdicts.append(ThrottleVerdict(settings.delay(addresses), ThrottleReason.USER, addresses))
            if settings.spraying_threshold:
                names = self._names_of_source[source]
                verdicts.append(ThrottleVerdict(settings.delay(names - settings.spraying_threshold),
                                                ThrottleReason.SPRAYING_ADDRESS, names))
        longest = max(verdicts, key=lambda verdict: verdict.wait)  # on a tie the first: pair, user
        return longest if longest.wait > 0 else None

    def trusted(self, source: str, user: str, now: float) -> bool:
        """``user`` logged in from ``source`` within the trust time."""
        last = self._trusted.get((source, user))
        return last is not None and now - last < self.settings.trust_time

    def failed(self, source: str, user: str, now: float) -> None:
        self._forget(now)
        key = (source, user)
        entry = self._pairs.get(key)
        if entry is not None:
            entry.count += 1
            entry.last = now
            self._pairs.put(key, entry)  # now the most recent: the table stays in order of last failure
            return
        evicted = self._pairs.put(key, _PairFailures(1, now))
        if evicted is not None:
            self._uncount(evicted[0])
        self._names_of_source[source] += 1
        self._sources_of_user[user] += 1

    def succeeded(self, source: str, user: str, now: float) -> None:
        self._forget(now)
        key = (source, user)
        if self._pairs.get(key) is not None:
            self._pairs.pop(key)
            self._uncount(key)
        if self.settings.trust_time > 0:
            self._trusted.put(key, now)

    def tables(self, now: float) -> ThrottleTables:
        self._forget(now)
        threshold = self.settings.spraying_threshold
        spraying = sum(1 for names in self._names_of_source.values() if names > threshold) if threshold else 0
        return ThrottleTables(len(self._pairs), len(self._sources_of_user), len(self._names_of_source),
                              spraying, len(self._trusted))

    def _uncount(self, key: tuple[str, str]) -> None:
        source, user = key
        for counts, name in ((self._names_of_source, source), (self._sources_of_user, user)):
            counts[name] -= 1
            if counts[name] <= 0:
                del counts[name]

    def _forget(self, now: float) -> None:
        """Drop what has expired. Both tables are in order of last touch, so expired entries sit at
        the front: each is dropped once, amortised O(1) per call, and the counts stay exact."""
        window, trust_time = self.settings.window, self.settings.trust_time
        while (oldest := self._pairs.oldest()) is not None and now - oldest[1].last >= window:
            self._pairs.pop(oldest[0])
            self._uncount(oldest[0])
        while (trusted := self._trusted.oldest()) is not None and now - trusted[1] >= trust_time:
            self._trusted.pop(trusted[0])


# ---- refusal log ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefusalSummary:
    """Events not logged one by one: ``count`` for ``source`` (None: sources beyond the table),
    ``action`` and ``preposition`` saying what they were ("refused from", "held for")."""

    source: str | None
    count: int
    causes: dict[str, int]
    interval: float
    action: str = "refused"
    preposition: str = "from"

    def text(self) -> str:
        causes = ", ".join(f"{cause} {n}" for cause, n in sorted(self.causes.items()))
        who = self.source if self.source is not None else "other sources (too many to list)"
        more = "more " if self.source is not None else ""
        return (f"{self.count} {more}{self.action} {self.preposition} {who} "
                f"in the last {self.interval:g} s ({causes})")


@dataclass(slots=True)
class _Window:
    started: float
    suppressed: Counter[str] = field(default_factory=Counter)


class RefusalLog:
    """Decides which refusals are logged: per source and cause, the first of each ``interval`` in
    full, the others summed up in one ``RefusalSummary`` when the interval is over (``due``).
    Per cause as well as per source, so that a flood of one kind does not hide a refusal of
    another kind (a user's second login, say) from the same address; with ``per_cause=False``
    one line per source and interval whatever the cause (the summary still counts each cause)."""

    def __init__(self, interval: float = 60.0, *, max_entries: int = 1024, per_cause: bool = True,
                 action: str = "refused", preposition: str = "from") -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.per_cause = per_cause
        self.action = action
        self.preposition = preposition
        self._windows: _Table[tuple[str, str], _Window] = _Table(max_entries)
        self._ended: list[RefusalSummary] = []
        self._overflow: Counter[str] = Counter()
        self._overflow_since: float | None = None

    def __len__(self) -> int:
        return len(self._windows)

    def note(self, source: str, cause: str, now: float) -> bool:
        """Record a refusal; True when it is to be logged in full."""
        key = (source, cause if self.per_cause else "")
        window = self._windows.get(key)
        if window is not None and now - window.started >= self.interval:
            self._close(key, window)
            window = None
        if window is not None:
            window.suppressed[cause] += 1
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
                                              self.interval, self.action, self.preposition))
            self._overflow.clear()
            self._overflow_since = None
        ended, self._ended = self._ended, []
        return ended

    def _close(self, key: tuple[str, str], window: _Window) -> None:
        self._windows.pop(key)
        if window.suppressed:
            self._ended.append(RefusalSummary(key[0], sum(window.suppressed.values()),
                                              dict(window.suppressed), self.interval, self.action,
                                              self.preposition))

    def _expire(self, now: float) -> None:
        # Windows are inserted when they start and never refreshed, so the oldest ends first.
        while (oldest := self._windows.oldest()) is not None and now - oldest[1].started >= self.interval:
            self._close(*oldest)
