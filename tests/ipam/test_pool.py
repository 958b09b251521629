import time
import tracemalloc
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vpnd.ipam import (
    AddressUnavailable,
    Ipam,
    Lease,
    OwnerHasLeaseError,
    PoolExhausted,
    PoolSpec,
    PoolUsage,
    UnknownPoolError,
)

A = IPv4Address
N = IPv4Network


def small_ipam() -> Ipam:
    return Ipam(
        [
            PoolSpec("main", [N("10.0.0.0/29")], next_pool="spill"),
            PoolSpec("spill", [(A("10.9.0.10"), A("10.9.0.11"))]),
        ],
        default_pool="main",
        reserved={A("10.0.0.1")},
    )


def test_lowest_first_without_releases_skips_network_and_reserved() -> None:
    ipam = small_ipam()
    got = [ipam.allocate(f"s{i}").address for i in range(5)]
    # 10.0.0.0 is the network, 10.0.0.1 reserved, 10.0.0.7 broadcast.
    assert got == [A(f"10.0.0.{n}") for n in (2, 3, 4, 5, 6)]
    assert ipam.usage()["main"] == PoolUsage(total=5, used=5, free=0)


def test_exhaustion_moves_to_next_pool_then_raises() -> None:
    ipam = small_ipam()
    for i in range(5):
        assert ipam.allocate(f"s{i}").pool == "main"
    spilled = [ipam.allocate("s5"), ipam.allocate("s6")]
    assert [(lease.address, lease.pool) for lease in spilled] == [
        (A("10.9.0.10"), "spill"),
        (A("10.9.0.11"), "spill"),
    ]
    with pytest.raises(PoolExhausted, match="'main' -> 'spill'"):
        ipam.allocate("s7")
    assert ipam.lease_of("s7") is None


def test_pool_chain_cycle_is_tried_once_per_pool() -> None:
    ipam = Ipam(
        [PoolSpec("a", [N("10.1.0.0/32")], next_pool="b"), PoolSpec("b", [N("10.2.0.0/32")], next_pool="a")],
        default_pool="a",
    )
    assert ipam.allocate("x").address == A("10.1.0.0")
    assert ipam.allocate("y").address == A("10.2.0.0")
    with pytest.raises(PoolExhausted):
        ipam.allocate("z")
    # Starting from the second pool walks the cycle the other way round.
    with pytest.raises(PoolExhausted, match="'b' -> 'a'"):
        ipam.allocate("z", pool="b")


def test_slash31_and_slash32_give_every_address() -> None:
    ipam = Ipam([PoolSpec("p", [N("10.3.0.0/31"), N("10.4.0.9/32")])], default_pool="p")
    assert sorted(ipam.allocate(o).address for o in "abc") == [A("10.3.0.0"), A("10.3.0.1"), A("10.4.0.9")]


def test_released_address_is_not_reused_immediately() -> None:
    ipam = Ipam([PoolSpec("p", [N("10.0.0.0/28")])], default_pool="p")
    first = ipam.allocate("a")
    ipam.allocate("b")
    ipam.release(first)
    following = [ipam.allocate(f"n{i}").address for i in range(13)]  # 14 usable, one held by b
    assert first.address not in following[:-1]
    # It comes back only once the rest of the pool has been used (round robin, wrapping).
    assert following[-1] == first.address


def test_static_inside_pool_is_taken_from_that_pool() -> None:
    ipam = small_ipam()
    lease = ipam.allocate("s", static=A("10.0.0.4"), pool="spill")
    assert lease == Lease(A("10.0.0.4"), "main", "s")
    assert ipam.usage()["main"].used == 1
    # The dynamic allocator steps over it.
    assert [ipam.allocate(f"d{i}").address for i in range(4)] == [A(f"10.0.0.{n}") for n in (2, 3, 5, 6)]


def test_static_outside_every_pool_is_tracked_with_no_pool() -> None:
    ipam = small_ipam()
    lease = ipam.allocate("radius-user", static=A("192.0.2.77"))
    assert lease.pool is None
    assert ipam.owner_of(A("192.0.2.77")) == "radius-user"
    with pytest.raises(AddressUnavailable, match="already in use by radius-user"):
        ipam.allocate("other", static=A("192.0.2.77"))
    assert sum(u.used for u in ipam.usage().values()) == 0


def test_static_refusals_say_why() -> None:
    ipam = small_ipam()
    ipam.allocate("a", static=A("10.0.0.3"))
    with pytest.raises(AddressUnavailable, match="already in use by a"):
        ipam.allocate("b", static=A("10.0.0.3"))
    with pytest.raises(AddressUnavailable, match="reserved"):
        ipam.allocate("b", static=A("10.0.0.1"))
    with pytest.raises(AddressUnavailable, match="network or broadcast"):
        ipam.allocate("b", static=A("10.0.0.7"))
    with pytest.raises(AddressUnavailable, match="cannot be the address"):
        ipam.allocate("b", static=A("224.0.0.5"))
    assert ipam.lease_of("b") is None


def test_owner_holds_one_lease_and_unknown_pool() -> None:
    ipam = small_ipam()
    ipam.allocate("a")
    with pytest.raises(OwnerHasLeaseError):
        ipam.allocate("a")
    with pytest.raises(UnknownPoolError, match="'nope'"):
        ipam.allocate("b", pool="nope")
    with pytest.raises(UnknownPoolError, match="no default pool"):
        Ipam([PoolSpec("p", [N("10.0.0.0/30")])]).allocate("b")


def test_double_release_and_stale_release_are_harmless() -> None:
    ipam = small_ipam()
    lease = ipam.allocate("a")
    ipam.release(lease)
    ipam.release(lease)
    assert ipam.usage()["main"].used == 0
    assert ipam.lease_of("a") is None
    newer = ipam.allocate("a")
    ipam.release(lease)  # the old lease of the same owner must not free the new address
    assert ipam.lease_of("a") == newer
    assert ipam.usage()["main"].used == 1


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Ipam([PoolSpec("a", [N("10.0.0.0/24")]), PoolSpec("b", [(A("10.0.0.200"), A("10.0.1.5"))])])
    with pytest.raises(ValueError, match="next pool 'x'"):
        Ipam([PoolSpec("a", [N("10.0.0.0/24")], next_pool="x")])
    with pytest.raises(ValueError, match="ends before it starts"):
        Ipam([PoolSpec("a", [(A("10.0.0.9"), A("10.0.0.1"))])])
    with pytest.raises(ValueError, match="defined twice"):
        Ipam([PoolSpec("a", [N("10.0.0.0/24")]), PoolSpec("a", [N("10.1.0.0/24")])])


def test_large_pool_is_cheap_in_memory_and_time() -> None:
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        ipam = Ipam([PoolSpec("big", [N("10.0.0.0/12")])], default_pool="big", reserved={A("10.0.0.1")})
        built, _ = tracemalloc.get_traced_memory()
        started = time.perf_counter()
        leases = [ipam.allocate(f"s{i}") for i in range(10_000)]
        elapsed = time.perf_counter() - started
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 2^20 addresses: one bit each is 128 KiB.
    assert built - before < 256 * 1024
    # The leases themselves are the only per-address cost: well under 1 KiB each.
    assert after - built < 10_000 * 1024
    assert elapsed < 2.0  # ~50 ms in practice; generous for slow CI machines
    assert leases[0].address == A("10.0.0.2")
    assert leases[-1].address == A(int(A("10.0.0.2")) + 9_999)
    assert ipam.usage()["big"] == PoolUsage(total=2**20 - 3, used=10_000, free=2**20 - 3 - 10_000)


def test_nearly_full_large_pool_finds_the_last_hole_fast() -> None:
    ipam = Ipam([PoolSpec("p", [N("10.0.0.0/16")])], default_pool="p")
    leases = [ipam.allocate(f"s{i}") for i in range(65_534)]
    hole = leases[40_000]
    ipam.release(hole)
    started = time.perf_counter()
    assert ipam.allocate("late").address == hole.address
    assert time.perf_counter() - started < 0.1


def test_reconfigure_keeps_rebinds_and_orphans() -> None:
    ipam = Ipam(
        [PoolSpec("old", [N("10.0.0.0/24")]), PoolSpec("gone", [N("10.5.0.0/30")])],
        default_pool="old",
        reserved={A("10.0.0.1")},
    )
    kept = ipam.allocate("kept")  # 10.0.0.2
    moved = ipam.allocate("moved", static=A("10.0.0.200"))
    gone = ipam.allocate("gone", pool="gone")  # 10.5.0.1
    now_reserved = ipam.allocate("reserved-now", static=A("10.0.0.3"))
    outside = ipam.allocate("outside", static=A("192.0.2.1"))

    orphans = ipam.reconfigure(
        [
            PoolSpec("renamed", [N("10.0.0.0/25")]),
            PoolSpec("upper", [(A("10.0.0.128"), A("10.0.0.254"))]),
            PoolSpec("docs", [N("192.0.2.0/24")]),
        ],
        default_pool="renamed",
        reserved={A("10.0.0.1"), A("10.0.0.3")},
    )

    assert sorted(orphans, key=lambda lease: lease.owner) == [
        Lease(gone.address, None, "gone"),
        Lease(now_reserved.address, None, "reserved-now"),
    ]
    assert ipam.lease_of("kept") == Lease(kept.address, "renamed", "kept")
    assert ipam.lease_of("moved") == Lease(moved.address, "upper", "moved")
    assert ipam.lease_of("outside") == Lease(outside.address, "docs", "outside")
    usage = ipam.usage()
    assert usage["renamed"] == PoolUsage(total=124, used=1, free=123)
    assert usage["upper"].used == 1 and usage["docs"].used == 1
    # Orphans still hold their address until the caller releases them.
    with pytest.raises(AddressUnavailable):
        ipam.allocate("x", static=A("10.5.0.1"))
    ipam.release(ipam.lease_of("gone"))  # type: ignore[arg-type]
    assert ipam.allocate("x", static=A("10.5.0.1")).pool is None
    # New dynamic allocations avoid kept leases and reserved addresses.
    assert ipam.allocate("new").address == A("10.0.0.4")


def test_reconfigure_error_leaves_everything_as_it_was() -> None:
    ipam = small_ipam()
    lease = ipam.allocate("a")
    with pytest.raises(ValueError):
        ipam.reconfigure([PoolSpec("p", [N("10.0.0.0/24")], next_pool="missing")], default_pool="p")
    assert ipam.lease_of("a") == lease
    assert ipam.usage()["main"].used == 1
    assert ipam.allocate("b").address == A("10.0.0.3")


def test_reconfigure_keeps_the_round_robin_cursor() -> None:
    spec = [PoolSpec("p", [N("10.0.0.0/28")])]
    ipam = Ipam(spec, default_pool="p")
    first = ipam.allocate("a")
    ipam.release(first)
    assert ipam.reconfigure(spec, default_pool="p") == []
    assert ipam.allocate("b").address != first.address


OWNERS = [f"o{i}" for i in range(12)]
STATIC_CANDIDATES = [
    A("10.0.0.0"), A("10.0.0.1"), A("10.0.0.3"), A("10.0.0.7"), A("10.0.1.1"), A("10.0.1.4"), A("192.0.2.1")
]


class IpamMachine(RuleBasedStateMachine):
    """Random allocate/release/reconfigure sequences against a model of who holds what."""

    # (pools, reserved, network and broadcast addresses of the prefixes)
    configs = (
        (
            [PoolSpec("a", [N("10.0.0.0/29")], "b"), PoolSpec("b", [(A("10.0.1.1"), A("10.0.1.3"))])],
            {A("10.0.0.1")},
            {A("10.0.0.0"), A("10.0.0.7")},
        ),
        (
            [PoolSpec("a", [N("10.0.0.0/30")], "b"), PoolSpec("b", [N("10.0.1.0/29")], "a")],
            {A("10.0.1.4")},
            {A("10.0.0.0"), A("10.0.0.3"), A("10.0.1.0"), A("10.0.1.7")},
        ),
    )

    @initialize()
    def setup(self) -> None:
        pools, reserved, unusable = self.configs[0]
        self.ipam = Ipam(pools, default_pool="a", reserved=reserved)
        self.reserved = reserved
        self.unusable = unusable
        self.held: dict[str, Lease] = {}

    @rule(owner=st.sampled_from(OWNERS), pool=st.sampled_from(["a", "b"]))
    def allocate(self, owner: str, pool: str) -> None:
        if owner in self.held:
            with pytest.raises(OwnerHasLeaseError):
                self.ipam.allocate(owner, pool=pool)
            return
        try:
            lease = self.ipam.allocate(owner, pool=pool)
        except PoolExhausted:
            assert self.ipam.usage()[pool].free == 0
            return
        assert lease.owner == owner and lease.pool is not None
        self.held[owner] = lease

    @rule(owner=st.sampled_from(OWNERS), address=st.sampled_from(STATIC_CANDIDATES))
    def allocate_static(self, owner: str, address: IPv4Address) -> None:
        if owner in self.held:
            return
        taken = {lease.address for lease in self.held.values()}
        try:
            lease = self.ipam.allocate(owner, static=address)
        except AddressUnavailable:
            assert address in taken or address in self.reserved or address in self.unusable
            return
        assert address not in taken and address not in self.reserved and address not in self.unusable
        self.held[owner] = lease

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.held)))
        lease = self.held.pop(owner)
        self.ipam.release(lease)
        self.ipam.release(lease)

    @rule(which=st.integers(0, 1))
    def reconfigure(self, which: int) -> None:
        pools, reserved, unusable = self.configs[which]
        orphans = self.ipam.reconfigure(pools, default_pool="a", reserved=reserved)
        self.reserved = reserved
        self.unusable = unusable
        for orphan in orphans:
            assert orphan.pool is None
        for owner in list(self.held):
            self.held[owner] = self.ipam.lease_of(owner)  # type: ignore[assignment]

    @invariant()
    def consistent(self) -> None:
        leases = self.ipam.leases()
        assert {lease.owner: lease for lease in leases} == self.held
        addresses = [lease.address for lease in leases]
        assert len(addresses) == len(set(addresses))
        for lease in leases:
            if lease.pool is not None:
                assert lease.address not in self.reserved and lease.address not in self.unusable
        for name, usage in self.ipam.usage().items():
            assert usage.used == sum(1 for lease in leases if lease.pool == name)
            assert usage.free == usage.total - usage.used >= 0


IpamMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestIpamMachine = IpamMachine.TestCase


def test_set_aside_addresses_go_only_to_whoever_asks_for_them() -> None:
    """A local user's static-ip inside a pool is never leased from the pool, also while its user
    is away; asked for by address, it is given out (and back) without touching the pool."""
    ipam = Ipam([PoolSpec("main", [N("10.0.0.0/29")])], default_pool="main",
                set_aside={A("10.0.0.1"), A("192.0.2.9")})
    dynamic = [ipam.allocate(f"s{i}").address for i in range(5)]
    assert A("10.0.0.1") not in dynamic and dynamic == [A(f"10.0.0.{n}") for n in range(2, 7)]
    with pytest.raises(PoolExhausted):
        ipam.allocate("s5")
    static = ipam.allocate("static-user", static=A("10.0.0.1"))
    outside = ipam.allocate("outside-user", static=A("192.0.2.9"))
    assert (static.pool, outside.pool) == (None, None)
    ipam.release(static)
    with pytest.raises(PoolExhausted):  # released, but still set aside
        ipam.allocate("s5")
    assert ipam.allocate("static-user", static=A("10.0.0.1")).address == A("10.0.0.1")


def test_reconfigure_sets_aside_a_new_static_address_without_ending_its_holder() -> None:
    ipam = Ipam([PoolSpec("main", [N("10.0.0.0/29")])], default_pool="main")
    holder = ipam.allocate("holder")  # 10.0.0.1, then made a user's static-ip
    assert ipam.reconfigure([PoolSpec("main", [N("10.0.0.0/29")])], "main", set_aside={holder.address}) == []
    assert ipam.lease_of("holder") == Lease(holder.address, None, "holder")
    ipam.release(ipam.lease_of("holder"))  # type: ignore[arg-type]
    assert A("10.0.0.1") not in [ipam.allocate(f"s{i}").address for i in range(5)]
    # No longer set aside: back in the pool.
    ipam.reconfigure([PoolSpec("main", [N("10.0.0.0/29")])], "main")
    assert ipam.allocate("late").address == A("10.0.0.1")
