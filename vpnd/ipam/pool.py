"""IPv4 address management: named pools, pool chains, static addresses, hitless reconfiguration.

Pure bookkeeping: no kernel, no I/O, no clock. One `Ipam` belongs to one event loop; it is not
thread-safe.

Allocation order is next-fit (round-robin): each pool keeps a cursor that starts at its lowest
address and moves past every address it hands out, wrapping to the start when it reaches the end.
A released address is therefore handed out again only after every other free address of the pool
has been used once, which keeps a new session off an address whose ARP/conntrack entries from the
previous holder may still be alive. With no releases the order is simply lowest-first.

Memory: a pool keeps one bit per address up to a /8 (a /12 costs 128 KiB, a /8 2 MiB), and the
set of taken addresses beyond that, plus a small object per lease; nothing per free address.
The search itself is `vpnd.ipam.slots`, shared with the IPv6 prefix pools.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from itertools import pairwise

from vpnd.ipam.slots import slots_for

PoolRange = IPv4Network | tuple[IPv4Address, IPv4Address]


class IpamError(Exception):
    """Base class of address management errors; the message is meant for an operator."""


class AddressUnavailable(IpamError):  # noqa: N818 (name fixed by the session code's contract)
    """A requested (static) address cannot be given out."""


class PoolExhausted(IpamError):  # noqa: N818 (name fixed by the session code's contract)
    """No free address in the pool or in any pool of its chain."""


class UnknownPoolError(IpamError):
    """A pool name that is not configured."""


class OwnerHasLeaseError(IpamError):
    """The owner already holds an address; release it first."""


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """Configuration of one pool.

    A range given as a network gives out its hosts: the network and broadcast addresses are left
    out unless the prefix is /31 or /32. A range given as (first, last) gives out every address
    from first to last inclusive.
    """

    name: str
    ranges: Sequence[PoolRange]
    next_pool: str | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """One address held by one owner (a session id). `pool` is None for a static address that
    lies outside every pool (for example a RADIUS Framed-IP-Address) or that a reconfiguration
    orphaned."""

    address: IPv4Address
    pool: str | None
    owner: str


@dataclass(frozen=True, slots=True)
class PoolUsage:
    total: int
    used: int
    free: int


def _span_of(spec_range: PoolRange, pool_name: str) -> tuple[int, int, list[int]]:
    """(first, last) usable integers of a range, plus the addresses the prefix covers but never
    hands out (network and broadcast)."""
    if isinstance(spec_range, IPv4Network):
        first, last = int(spec_range.network_address), int(spec_range.broadcast_address)
        if spec_range.prefixlen >= 31:
            return first, last, []
        return first + 1, last - 1, [first, last]
    low, high = spec_range
    if not isinstance(low, IPv4Address) or not isinstance(high, IPv4Address):
        raise ValueError(f"pool {pool_name!r}: a range must be an IPv4 network or a pair of IPv4 addresses")
    if int(low) > int(high):
        raise ValueError(f"pool {pool_name!r}: range {low}-{high} ends before it starts")
    return int(low), int(high), []


class _Pool:
    """One pool: its ranges laid end to end as slots 0..size-1."""

    __slots__ = ("_ends", "_offsets", "_starts", "name", "next_pool", "slots")

    def __init__(self, spec: PoolSpec, spans: list[tuple[int, int]]) -> None:
        self.name = spec.name
        self.next_pool = spec.next_pool
        spans = sorted(spans)
        self._starts = [first for first, _ in spans]
        self._ends = [last for _, last in spans]
        self._offsets: list[int] = []
        size = 0
        for first, last in spans:
            self._offsets.append(size)
            size += last - first + 1
        self.slots = slots_for(size)

    def index_of(self, address: int) -> int | None:
        position = bisect.bisect_right(self._starts, address) - 1
        if position < 0 or address > self._ends[position]:
            return None
        return self._offsets[position] + address - self._starts[position]

    def address_at(self, index: int) -> int:
        position = bisect.bisect_right(self._offsets, index) - 1
        return self._starts[position] + index - self._offsets[position]

    @property
    def cursor_address(self) -> int | None:
        return self.address_at(self.slots.cursor) if self.slots.size else None

    def place_cursor_at(self, address: int | None) -> None:
        if address is None:
            return
        index = self.index_of(address)
        if index is not None:
            self.slots.place_cursor(index)


class Ipam:
    """Leases IPv4 addresses to sessions from named pools.

    `reserved` addresses (the concentrator's own gateway address and the like) are never given
    out, from a pool or as a static address. `set_aside` addresses (local users' static-ip) are
    given out only when asked for by address, never from a pool, so that the pool does not lease
    them to someone else while their user is away. A pool's ranges may not overlap each other
    nor the ranges of another pool, so every address belongs to at most one pool.
    """

    def __init__(
        self,
        pools: Sequence[PoolSpec],
        default_pool: str | None = None,
        reserved: Iterable[IPv4Address] = (),
        set_aside: Iterable[IPv4Address] = (),
    ) -> None:
        self._leases: dict[str, Lease] = {}
        self._owner_by_address: dict[int, str] = {}
        self._build(pools, default_pool, reserved, set_aside)

    # -- configuration ---------------------------------------------------------------------------

    def _build(
        self, pools: Sequence[PoolSpec], default_pool: str | None, reserved: Iterable[IPv4Address],
        set_aside: Iterable[IPv4Address] = (),
    ) -> None:
        by_name: dict[str, _Pool] = {}
        all_spans: list[tuple[int, int, str]] = []
        never_given: set[int] = set()
        for spec in pools:
            if spec.name in by_name:
                raise ValueError(f"pool {spec.name!r} is defined twice")
            spans: list[tuple[int, int]] = []
            for spec_range in spec.ranges:
                first, last, excluded = _span_of(spec_range, spec.name)
                never_given.update(excluded)
                if first <= last:
                    spans.append((first, last))
                    all_spans.append((first, last, spec.name))
            by_name[spec.name] = _Pool(spec, spans)
        all_spans.sort()
        for (_, last_a, name_a), (first_b, _, name_b) in pairwise(all_spans):
            if first_b <= last_a:
                where = f"pool {name_a!r}" if name_a == name_b else f"pools {name_a!r} and {name_b!r}"
                raise ValueError(f"{where} overlap at {IPv4Address(first_b)}")
        for spec in pools:
            if spec.next_pool is not None and spec.next_pool not in by_name:
                raise ValueError(f"pool {spec.name!r}: next pool {spec.next_pool!r} is not defined")
        if default_pool is not None and default_pool not in by_name:
            raise ValueError(f"default pool {default_pool!r} is not defined")

        reserved_ints = {int(address) for address in reserved}
        span_starts = [first for first, _, _ in all_spans]
        self._pools = by_name
        self._span_starts = span_starts
        self._spans = all_spans
        self._default_pool = default_pool
        self._reserved = reserved_ints
        self._never_given = never_given
        self._set_aside = {int(address) for address in set_aside} - reserved_ints
        for address in reserved_ints | self._set_aside:
            located = self._locate(address)
            if located is not None:
                located[0].slots.reserve(located[1])

    def _locate(self, address: int) -> tuple[_Pool, int] | None:
        position = bisect.bisect_right(self._span_starts, address) - 1
        if position < 0:
            return None
        _first, last, name = self._spans[position]
        if address > last:
            return None
        pool = self._pools[name]
        index = pool.index_of(address)
        assert index is not None
        return pool, index

    def reconfigure(
        self,
        pools: Sequence[PoolSpec],
        default_pool: str | None = None,
        reserved: Iterable[IPv4Address] = (),
        set_aside: Iterable[IPv4Address] = (),
    ) -> list[Lease]:
        """Swap in a new pool configuration without dropping sessions.

        A lease whose address is inside some new pool (and not reserved) stays and is rebound to
        that pool. The others are returned as orphans: their address is in no pool any more (or is
        now reserved). Orphans stay recorded as leases with pool None, so the address is not given
        to anyone else until the caller ends the session and releases it. On a configuration
        error (ValueError) nothing changes.
        """
        old_cursors = {name: pool.cursor_address for name, pool in self._pools.items()}
        old_state = (self._pools, self._span_starts, self._spans, self._default_pool, self._reserved,
                     self._never_given, self._set_aside)
        try:
            self._build(pools, default_pool, reserved, set_aside)
        except ValueError:
            (self._pools, self._span_starts, self._spans, self._default_pool, self._reserved,
             self._never_given, self._set_aside) = old_state
            raise
        for name, pool in self._pools.items():
            pool.place_cursor_at(old_cursors.get(name))

        orphans: list[Lease] = []
        for owner, lease in list(self._leases.items()):
            address = int(lease.address)
            if address in self._set_aside:
                # Now someone's static address: the holder keeps it until its session ends, and
                # its slot stays set aside afterwards.
                self._leases[owner] = Lease(lease.address, None, owner)
                continue
            located = None if address in self._reserved else self._locate(address)
            if located is not None:
                pool, index = located
                pool.slots.take(index)
                self._leases[owner] = Lease(lease.address, pool.name, owner)
                continue
            rebound = Lease(lease.address, None, owner)
            self._leases[owner] = rebound
            if lease.pool is not None or address in self._reserved:
                orphans.append(rebound)
        return orphans

    # -- leases ----------------------------------------------------------------------------------

    def allocate(self, owner: str, *, pool: str | None = None, static: IPv4Address | None = None) -> Lease:
        """Give `owner` an address.

        With `static`, exactly that address (from whichever pool holds it, or from outside every
        pool); `pool` is then not consulted. Otherwise the first free address of `pool` (or the
        default pool), moving along the pool's next_pool chain when a pool is full.
        """
        if owner in self._leases:
            raise OwnerHasLeaseError(f"{owner} already holds {self._leases[owner].address}; release it first")
        if static is not None:
            return self._allocate_static(owner, static)
        name = pool if pool is not None else self._default_pool
        if name is None:
            raise UnknownPoolError("no pool was named and no default pool is configured")
        if name not in self._pools:
            raise UnknownPoolError(f"pool {name!r} is not configured")
        tried: list[str] = []
        current: str | None = name
        while current is not None and current not in tried:
            tried.append(current)
            candidate = self._pools[current]
            index = candidate.slots.next_free()
            if index is not None:
                address = candidate.address_at(index)
                return self._record(owner, address, candidate.name)
            current = candidate.next_pool
        raise PoolExhausted(f"no free address in pool {' -> '.join(repr(n) for n in tried)}")

    def _allocate_static(self, owner: str, static: IPv4Address) -> Lease:
        address = int(static)
        if address in self._reserved:
            raise AddressUnavailable(f"{static} is reserved and cannot be given to a session")
        holder = self._owner_by_address.get(address)
        if holder is not None:
            raise AddressUnavailable(f"{static} is already in use by {holder}")
        if address in self._never_given and self._locate(address) is None:
            raise AddressUnavailable(f"{static} is the network or broadcast address of a pool prefix")
        if static.is_unspecified or static.is_multicast or static.is_loopback or address == 0xFFFFFFFF:
            raise AddressUnavailable(f"{static} cannot be the address of a session")
        if address in self._set_aside:
            return self._record(owner, address, None)  # its pool slot stays set aside
        located = self._locate(address)
        if located is None:
            return self._record(owner, address, None)
        pool, index = located
        pool.slots.take(index)
        return self._record(owner, address, pool.name)

    def _record(self, owner: str, address: int, pool_name: str | None) -> Lease:
        lease = Lease(IPv4Address(address), pool_name, owner)
        self._leases[owner] = lease
        self._owner_by_address[address] = owner
        return lease

    def release(self, lease: Lease) -> None:
        """Give the address back. Releasing twice, or a lease that was replaced, does nothing."""
        current = self._leases.get(lease.owner)
        if current is None or current.address != lease.address:
            return
        del self._leases[lease.owner]
        address = int(current.address)
        del self._owner_by_address[address]
        if current.pool is not None:
            located = self._locate(address)
            assert located is not None and located[0].name == current.pool
            located[0].slots.give_back(located[1])

    def lease_of(self, owner: str) -> Lease | None:
        return self._leases.get(owner)

    def owner_of(self, address: IPv4Address) -> str | None:
        return self._owner_by_address.get(int(address))

    def leases(self) -> list[Lease]:
        return list(self._leases.values())

    def usage(self) -> dict[str, PoolUsage]:
        return {name: PoolUsage(pool.slots.total, pool.slots.used, pool.slots.free)
                for name, pool in self._pools.items()}

    @property
    def default_pool(self) -> str | None:
        return self._default_pool

    def pool_names(self) -> list[str]:
        return list(self._pools)
