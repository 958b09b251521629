"""IPv6 prefix management: named pools of per-session prefixes and delegated prefixes.

The IPv6 counterpart of `vpnd.ipam.pool`, with the same guarantees: pure bookkeeping, one owner
per prefix, next-fit allocation, static prefixes inside or outside the pools, hitless
reconfiguration, errors from the same classes.

A pool (`client-ipv6-pool NAME`) has two kinds of ranges:
* `prefix P mask M` (`PrefixKind.PREFIX`): each session gets one /M out of P for its link,
  announced by router advertisements (SLAAC wants M = 64);
* `delegate D delegation-prefix L` (`PrefixKind.DELEGATE`): each session may get one /L out of D
  by DHCPv6 prefix delegation, routed to it.
A session (owner) holds at most one lease of each kind. No range overlaps another, of any pool
or kind, so every prefix belongs to at most one range.

Memory does not grow with the pool: slots are numbered and `vpnd.ipam.slots` keeps a bitmap for
up to 2^24 of them and only the taken ones beyond (a /32 delegating /64s has 2^32 slots).

Leases outside every range (a RADIUS Framed-IPv6-Prefix or Delegated-IPv6-Prefix outside the
pools, or a lease a reconfiguration orphaned) are kept in a sorted list of intervals. An orphan
may still overlap a new range without being one of its slots (the mask changed, say); the
allocator steps over such slots instead of marking them one by one, so a huge orphan costs
nothing, but until the orphan is released those slots still count as free in `usage`.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from itertools import pairwise

from vpnd.ipam.pool import AddressUnavailable, OwnerHasLeaseError, PoolExhausted, PoolUsage, UnknownPoolError
from vpnd.ipam.slots import Slots, slots_for

_ADDRESS_BITS = 128


class PrefixKind(enum.Enum):
    PREFIX = "prefix"  # the session's own prefix, announced by router advertisements
    DELEGATE = "delegate"  # a prefix delegated to the session by DHCPv6-PD


@dataclass(frozen=True, slots=True)
class PrefixRange:
    """`network`, handed out as /`length` prefixes (one per session)."""

    network: IPv6Network
    length: int = 64

    def __post_init__(self) -> None:
        if not self.network.prefixlen <= self.length <= _ADDRESS_BITS:
            raise ValueError(f"{self.network}: per-session length /{self.length} must be between "
                             f"/{self.network.prefixlen} and /128")

    @property
    def count(self) -> int:
        return 1 << (self.length - self.network.prefixlen)


@dataclass(frozen=True, slots=True)
class PrefixPoolSpec:
    """Configuration of one pool: its `prefix ... mask` and `delegate ... delegation-prefix` ranges."""

    name: str
    prefixes: Sequence[PrefixRange] = ()
    delegates: Sequence[PrefixRange] = ()

    def ranges(self, kind: PrefixKind) -> Sequence[PrefixRange]:
        return self.prefixes if kind is PrefixKind.PREFIX else self.delegates


@dataclass(frozen=True, slots=True)
class PrefixLease:
    """One prefix held by one owner (a session id). `pool` is None for a static prefix outside
    every range, or one a reconfiguration orphaned."""

    prefix: IPv6Network
    kind: PrefixKind
    pool: str | None
    owner: str


@dataclass(frozen=True, slots=True)
class PrefixPoolUsage:
    prefix: PoolUsage
    delegate: PoolUsage

    def of(self, kind: PrefixKind) -> PoolUsage:
        return self.prefix if kind is PrefixKind.PREFIX else self.delegate


_LeaseKey = tuple[str, PrefixKind]


def _bounds(prefix: IPv6Network) -> tuple[int, int]:
    return int(prefix.network_address), int(prefix.broadcast_address)


class _Space:
    """The ranges of one kind in one pool, laid end to end as slots 0..size-1."""

    __slots__ = ("_bits", "_ends", "_lengths", "_offsets", "_starts", "kind", "name", "slots")

    def __init__(self, name: str, kind: PrefixKind, ranges: Sequence[PrefixRange]) -> None:
        self.name = name
        self.kind = kind
        ordered = sorted(ranges, key=lambda r: int(r.network.network_address))
        self._starts = [int(r.network.network_address) for r in ordered]
        self._ends = [int(r.network.broadcast_address) for r in ordered]
        self._lengths = [r.length for r in ordered]
        self._bits = [_ADDRESS_BITS - r.length for r in ordered]
        self._offsets: list[int] = []
        size = 0
        for prefix_range in ordered:
            self._offsets.append(size)
            size += prefix_range.count
        self.slots: Slots = slots_for(size)

    def _position(self, address: int) -> int | None:
        position = bisect.bisect_right(self._starts, address) - 1
        if position < 0 or address > self._ends[position]:
            return None
        return position

    def index_of(self, prefix: IPv6Network) -> int | None:
        """The slot that is exactly `prefix`, if any."""
        start, end = _bounds(prefix)
        position = self._position(start)
        if position is None or end > self._ends[position] or prefix.prefixlen != self._lengths[position]:
            return None
        return self._offsets[position] + ((start - self._starts[position]) >> self._bits[position])

    def _slot(self, index: int) -> tuple[int, int]:
        """(range position, first address) of slot `index`."""
        position = bisect.bisect_right(self._offsets, index) - 1
        return position, self._starts[position] + ((index - self._offsets[position]) << self._bits[position])

    def slot_bounds(self, index: int) -> tuple[int, int]:
        """First and last address of slot `index`, as integers (no IPv6Network: allocation is hot)."""
        position, first = self._slot(index)
        return first, first + (1 << self._bits[position]) - 1

    def prefix_at(self, index: int) -> IPv6Network:
        position, first = self._slot(index)
        return IPv6Network((first, self._lengths[position]))

    def index_at_or_after(self, address: int) -> int | None:
        """The first slot that starts at or after `address`; None past the last range."""
        position = self._position(address)
        if position is not None:
            within = address - self._starts[position]
            index, rest = divmod(within, 1 << self._bits[position])
            return self._offsets[position] + index + (1 if rest else 0)
        following = bisect.bisect_right(self._starts, address)
        return self._offsets[following] if following < len(self._starts) else None

    @property
    def cursor_address(self) -> int | None:
        return int(self.prefix_at(self.slots.cursor).network_address) if self.slots.size else None

    def place_cursor_at(self, address: int | None) -> None:
        if address is None:
            return
        index = self.index_at_or_after(address)
        if index is not None:
            self.slots.place_cursor(index)


@dataclass(frozen=True, slots=True)
class _RangeEntry:
    start: int
    end: int
    space: _Space


class PrefixIpam:
    """Leases IPv6 prefixes of both kinds to sessions from named pools."""

    def __init__(self, pools: Sequence[PrefixPoolSpec], default_pool: str | None = None) -> None:
        self._leases: dict[_LeaseKey, PrefixLease] = {}
        self._owner_by_prefix: dict[IPv6Network, str] = {}
        # Leases with pool None, as disjoint (first, last, key) intervals sorted by first.
        self._outside: list[tuple[int, int, _LeaseKey]] = []
        self._outside_starts: list[int] = []
        self._build(pools, default_pool)

    # -- configuration ---------------------------------------------------------------------------

    def _build(self, pools: Sequence[PrefixPoolSpec], default_pool: str | None) -> None:
        spaces: dict[tuple[str, PrefixKind], _Space] = {}
        entries: list[_RangeEntry] = []
        names: list[str] = []
        for spec in pools:
            if spec.name in names:
                raise ValueError(f"IPv6 pool {spec.name!r} is defined twice")
            names.append(spec.name)
            for kind in PrefixKind:
                space = _Space(spec.name, kind, spec.ranges(kind))
                spaces[(spec.name, kind)] = space
                entries += [_RangeEntry(*_bounds(r.network), space) for r in spec.ranges(kind)]
        entries.sort(key=lambda entry: entry.start)
        for first, second in pairwise(entries):
            if second.start <= first.end:
                where = (f"IPv6 pool {first.space.name!r}" if first.space.name == second.space.name
                         else f"IPv6 pools {first.space.name!r} and {second.space.name!r}")
                raise ValueError(f"{where} overlap at {IPv6Address(second.start)}")
        if default_pool is not None and default_pool not in names:
            raise ValueError(f"default IPv6 pool {default_pool!r} is not defined")
        self._names = names
        self._spaces = spaces
        self._entries = entries
        self._entry_starts = [entry.start for entry in entries]
        self._default_pool = default_pool

    def reconfigure(
        self, pools: Sequence[PrefixPoolSpec], default_pool: str | None = None,
    ) -> list[PrefixLease]:
        """Swap in a new pool configuration without dropping sessions.

        A lease that is exactly a slot of a new range of its kind stays and is rebound to that
        pool. The others are returned as orphans: recorded with pool None, so their prefix is not
        given to anyone else until the caller ends the session and releases it. On a
        configuration error (ValueError) nothing changes.
        """
        old_cursors = {key: space.cursor_address for key, space in self._spaces.items()}
        old_state = (self._names, self._spaces, self._entries, self._entry_starts, self._default_pool)
        try:
            self._build(pools, default_pool)
        except ValueError:
            self._names, self._spaces, self._entries, self._entry_starts, self._default_pool = old_state
            raise
        for key, space in self._spaces.items():
            space.place_cursor_at(old_cursors.get(key))

        self._outside, self._outside_starts = [], []
        orphans: list[PrefixLease] = []
        for key, lease in list(self._leases.items()):
            located = self._slot_of(lease.prefix)
            if located is not None and located[0].kind is lease.kind:
                space, index = located
                space.slots.take(index)
                self._leases[key] = PrefixLease(lease.prefix, lease.kind, space.name, lease.owner)
                continue
            rebound = PrefixLease(lease.prefix, lease.kind, None, lease.owner)
            self._leases[key] = rebound
            self._add_outside(key, lease.prefix)
            if lease.pool is not None:
                orphans.append(rebound)
        return orphans

    # -- lookups ---------------------------------------------------------------------------------

    def _range_overlapping(self, first: int, last: int) -> _RangeEntry | None:
        position = bisect.bisect_right(self._entry_starts, last) - 1
        if position >= 0 and self._entries[position].end >= first:
            return self._entries[position]
        return None

    def _slot_of(self, prefix: IPv6Network) -> tuple[_Space, int] | None:
        entry = self._range_overlapping(*_bounds(prefix))
        if entry is None:
            return None
        index = entry.space.index_of(prefix)
        return None if index is None else (entry.space, index)

    def _outside_overlapping(self, first: int, last: int) -> tuple[int, int, _LeaseKey] | None:
        # The intervals are disjoint, so the last one starting at or before `last` is the only
        # one that can reach back to `first`.
        position = bisect.bisect_right(self._outside_starts, last) - 1
        if position >= 0 and self._outside[position][1] >= first:
            return self._outside[position]
        return None

    def _add_outside(self, key: _LeaseKey, prefix: IPv6Network) -> None:
        first, last = _bounds(prefix)
        position = bisect.bisect_right(self._outside_starts, first)
        self._outside.insert(position, (first, last, key))
        self._outside_starts.insert(position, first)

    def _remove_outside(self, prefix: IPv6Network) -> None:
        first, _ = _bounds(prefix)
        position = bisect.bisect_left(self._outside_starts, first)
        del self._outside[position]
        del self._outside_starts[position]

    # -- leases ----------------------------------------------------------------------------------

    def allocate(
        self, owner: str, kind: PrefixKind, *, pool: str | None = None, static: IPv6Network | None = None,
    ) -> PrefixLease:
        """Give `owner` a prefix of `kind`.

        With `static`, exactly that prefix: a slot of a range of the same kind, or a prefix that
        touches no range at all; `pool` is then not consulted. Otherwise the next free slot of
        `pool` (or the default pool).
        """
        key = (owner, kind)
        if key in self._leases:
            raise OwnerHasLeaseError(
                f"{owner} already holds {kind.value} {self._leases[key].prefix}; release it first")
        if static is not None:
            return self._allocate_static(key, static)
        name = pool if pool is not None else self._default_pool
        if name is None:
            raise UnknownPoolError("no IPv6 pool was named and no default IPv6 pool is configured")
        if name not in self._names:
            raise UnknownPoolError(f"IPv6 pool {name!r} is not configured")
        space = self._spaces[(name, kind)]
        index = self._next_free(space)
        if index is None:
            what = "free" if space.slots.size else "configured"
            raise PoolExhausted(f"no {what} {kind.value} prefix in IPv6 pool {name!r}")
        return self._record(key, space.prefix_at(index), name)

    def _next_free(self, space: _Space) -> int | None:
        """The next free slot that no outside lease overlaps. Each retry jumps past one such
        lease, and each is met at most twice (before and after the wrap)."""
        slots = space.slots
        for _ in range(2 * len(self._outside) + 2):
            index = slots.next_free()
            if index is None or not self._outside:
                return index
            holder = self._outside_overlapping(*space.slot_bounds(index))
            if holder is None:
                return index
            slots.give_back(index)
            after = space.index_at_or_after(holder[1] + 1)
            slots.place_cursor(after if after is not None and after < slots.size else 0)
        return None

    def _allocate_static(self, key: _LeaseKey, static: IPv6Network) -> PrefixLease:
        address = static.network_address
        if address.is_unspecified or static.is_multicast or static.is_link_local or static.is_loopback:
            raise AddressUnavailable(f"{static} cannot be the prefix of a session")
        holder = self._owner_by_prefix.get(static)
        if holder is not None:
            raise AddressUnavailable(f"{static} is already in use by {holder}")
        first, last = _bounds(static)
        outside = self._outside_overlapping(first, last)
        if outside is not None:
            other = self._leases[outside[2]]
            raise AddressUnavailable(f"{static} overlaps {other.prefix} held by {other.owner}")
        entry = self._range_overlapping(first, last)
        if entry is None:
            self._add_outside(key, static)
            return self._record(key, static, None)
        space = entry.space
        index = space.index_of(static)
        where = f"IPv6 pool {space.name!r} {space.kind.value} {IPv6Address(entry.start)}"
        if index is None:
            raise AddressUnavailable(f"{static} overlaps {where} without being one of its prefixes")
        if space.kind is not key[1]:
            raise AddressUnavailable(f"{static} is in {where}, not a {key[1].value} range")
        if space.slots.is_taken(index):
            raise AddressUnavailable(f"{static} is already in use")
        space.slots.take(index)
        return self._record(key, static, space.name)

    def _record(self, key: _LeaseKey, prefix: IPv6Network, pool_name: str | None) -> PrefixLease:
        lease = PrefixLease(prefix, key[1], pool_name, key[0])
        self._leases[key] = lease
        self._owner_by_prefix[prefix] = key[0]
        return lease

    def release(self, lease: PrefixLease) -> None:
        """Give the prefix back. Releasing twice, or a lease that was replaced, does nothing."""
        key = (lease.owner, lease.kind)
        current = self._leases.get(key)
        if current is None or current.prefix != lease.prefix:
            return
        del self._leases[key]
        del self._owner_by_prefix[current.prefix]
        if current.pool is None:
            self._remove_outside(current.prefix)
            return
        space = self._spaces[(current.pool, current.kind)]
        index = space.index_of(current.prefix)
        assert index is not None
        space.slots.give_back(index)

    def lease_of(self, owner: str, kind: PrefixKind) -> PrefixLease | None:
        return self._leases.get((owner, kind))

    def owner_of(self, prefix: IPv6Network) -> str | None:
        return self._owner_by_prefix.get(prefix)

    def leases(self) -> list[PrefixLease]:
        return list(self._leases.values())

    def offers(self, kind: PrefixKind, pool: str | None = None) -> bool:
        """Whether `pool` (or the default pool) has any range of `kind` (a session without a
        delegate range simply gets no delegated prefix)."""
        name = pool if pool is not None else self._default_pool
        space = self._spaces.get((name, kind)) if name is not None else None
        return space is not None and space.slots.size > 0

    def usage(self) -> dict[str, PrefixPoolUsage]:
        def of(space: _Space) -> PoolUsage:
            return PoolUsage(space.slots.total, space.slots.used, space.slots.free)

        return {
            name: PrefixPoolUsage(of(self._spaces[(name, PrefixKind.PREFIX)]),
                                  of(self._spaces[(name, PrefixKind.DELEGATE)]))
            for name in self._names
        }

    @property
    def default_pool(self) -> str | None:
        return self._default_pool

    def pool_names(self) -> list[str]:
        return list(self._names)
