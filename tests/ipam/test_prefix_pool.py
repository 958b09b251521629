import tracemalloc
from ipaddress import IPv6Network

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vpnd.ipam import (
    AddressUnavailable,
    OwnerHasLeaseError,
    PoolExhausted,
    PoolUsage,
    PrefixIpam,
    PrefixKind,
    PrefixLease,
    PrefixPoolSpec,
    PrefixRange,
    UnknownPoolError,
)

N = IPv6Network
PREFIX, DELEGATE = PrefixKind.PREFIX, PrefixKind.DELEGATE


def pool(name: str, prefixes: tuple[tuple[str, int], ...] = (),
         delegates: tuple[tuple[str, int], ...] = ()) -> PrefixPoolSpec:
    return PrefixPoolSpec(name, [PrefixRange(N(p), m) for p, m in prefixes],
                          [PrefixRange(N(d), m) for d, m in delegates])


def vyos_like() -> PrefixIpam:
    """client-ipv6-pool V6 prefix 2001:db8:1::/48 mask 64, delegate 2001:db8:100::/40 delegation-prefix 56."""
    return PrefixIpam([pool("V6", (("2001:db8:1::/48", 64),), (("2001:db8:100::/40", 56),))],
                      default_pool="V6")


def test_each_session_gets_the_next_prefix_and_delegation() -> None:
    ipam = vyos_like()
    got = [ipam.allocate(f"s{i}", PREFIX).prefix for i in range(3)]
    assert got == [N("2001:db8:1::/64"), N("2001:db8:1:1::/64"), N("2001:db8:1:2::/64")]
    delegated = [ipam.allocate(f"s{i}", DELEGATE).prefix for i in range(2)]
    assert delegated == [N("2001:db8:100::/56"), N("2001:db8:100:100::/56")]
    usage = ipam.usage()["V6"]
    assert usage.prefix == PoolUsage(total=2**16, used=3, free=2**16 - 3)
    assert usage.of(DELEGATE) == PoolUsage(total=2**16, used=2, free=2**16 - 2)
    assert ipam.lease_of("s1", DELEGATE) == PrefixLease(N("2001:db8:100:100::/56"), DELEGATE, "V6", "s1")
    assert ipam.owner_of(N("2001:db8:1:2::/64")) == "s2"


def test_ranges_of_one_kind_are_used_in_address_order_and_may_differ_in_length() -> None:
    ipam = PrefixIpam([pool("p", (("2001:db8:9::/63", 64), ("2001:db8:2::/64", 80)))], default_pool="p")
    got = [ipam.allocate(f"s{i}", PREFIX).prefix for i in range(3)]
    assert got == [N("2001:db8:2::/80"), N("2001:db8:2:0:1::/80"), N("2001:db8:2:0:2::/80")]
    assert ipam.usage()["p"].prefix.total == 2**16 + 2


def test_exhaustion_and_a_pool_without_that_kind() -> None:
    ipam = PrefixIpam([pool("small", (("2001:db8::/63", 64),))], default_pool="small")
    ipam.allocate("a", PREFIX)
    ipam.allocate("b", PREFIX)
    with pytest.raises(PoolExhausted, match="no free prefix prefix in IPv6 pool 'small'"):
        ipam.allocate("c", PREFIX)
    assert ipam.lease_of("c", PREFIX) is None
    assert not ipam.offers(DELEGATE) and ipam.offers(PREFIX)
    with pytest.raises(PoolExhausted, match="no configured delegate prefix"):
        ipam.allocate("a", DELEGATE)
    assert ipam.usage()["small"].delegate == PoolUsage(0, 0, 0)


def test_released_prefix_is_not_reused_immediately() -> None:
    ipam = PrefixIpam([pool("p", (("2001:db8::/62", 64),))], default_pool="p")
    first = ipam.allocate("a", PREFIX)
    ipam.release(first)
    assert [ipam.allocate(o, PREFIX).prefix for o in ("b", "c", "d", "e")] == [
        N("2001:db8:0:1::/64"), N("2001:db8:0:2::/64"), N("2001:db8:0:3::/64"), first.prefix]


def test_static_prefix_inside_a_pool_takes_that_slot() -> None:
    ipam = vyos_like()
    lease = ipam.allocate("radius", PREFIX, static=N("2001:db8:1:5::/64"))
    assert lease.pool == "V6"
    assert [ipam.allocate(f"s{i}", PREFIX).prefix for i in range(6)][-1] == N("2001:db8:1:6::/64")
    delegated = ipam.allocate("radius", DELEGATE, static=N("2001:db8:100:4200::/56"))
    assert delegated.pool == "V6" and ipam.usage()["V6"].delegate.used == 1


def test_static_prefix_outside_every_pool_is_tracked_with_no_pool() -> None:
    ipam = vyos_like()
    lease = ipam.allocate("a", DELEGATE, static=N("2001:db8:ff00::/48"))
    assert lease == PrefixLease(N("2001:db8:ff00::/48"), DELEGATE, None, "a")
    with pytest.raises(AddressUnavailable, match="overlaps 2001:db8:ff00::/48 held by a"):
        ipam.allocate("b", PREFIX, static=N("2001:db8:ff00:7::/64"))
    ipam.release(lease)
    assert ipam.allocate("b", PREFIX, static=N("2001:db8:ff00:7::/64")).pool is None


def test_static_refusals_say_why() -> None:
    ipam = vyos_like()
    ipam.allocate("a", PREFIX)
    cases = {
        N("2001:db8:1::/64"): "already in use by a",
        N("2001:db8:1::/60"): "overlaps IPv6 pool 'V6' prefix 2001:db8:1:: without being one of its prefixes",
        N("2001:db8::/32"): "without being one of its prefixes",
        N("2001:db8:100::/64"): "without being one of its prefixes",
        N("2001:db8:1:9::/64"): None,
        N("2001:db8:100:900::/56"): "not a prefix range",
        N("ff02::/64"): "cannot be the prefix of a session",
        N("fe80::/64"): "cannot be the prefix of a session",
        N("::/64"): "cannot be the prefix of a session",
    }
    for number, (prefix, reason) in enumerate(cases.items()):
        if reason is None:
            assert ipam.allocate(f"ok{number}", PREFIX, static=prefix).prefix == prefix
            continue
        with pytest.raises(AddressUnavailable, match=reason):
            ipam.allocate(f"x{number}", PREFIX, static=prefix)
    assert ipam.usage()["V6"].prefix.used == 2 and len(ipam.leases()) == 2


def test_one_lease_of_each_kind_per_owner_and_pool_names() -> None:
    ipam = vyos_like()
    ipam.allocate("a", PREFIX)
    ipam.allocate("a", DELEGATE)
    with pytest.raises(OwnerHasLeaseError):
        ipam.allocate("a", PREFIX)
    with pytest.raises(UnknownPoolError, match="'nope' is not configured"):
        ipam.allocate("b", PREFIX, pool="nope")
    with pytest.raises(UnknownPoolError, match="no default"):
        PrefixIpam([pool("p", (("2001:db8::/48", 64),))]).allocate("b", PREFIX)
    assert ipam.pool_names() == ["V6"] and ipam.default_pool == "V6"


def test_double_and_stale_release_are_harmless() -> None:
    ipam = vyos_like()
    lease = ipam.allocate("a", PREFIX)
    ipam.release(lease)
    ipam.release(lease)
    again = ipam.allocate("a", PREFIX)
    ipam.release(lease)  # the old lease of the same owner: not the current one
    assert ipam.lease_of("a", PREFIX) == again
    assert ipam.usage()["V6"].prefix.used == 1


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="overlap at 2001:db8:0:100::"):
        PrefixIpam([pool("a", (("2001:db8::/48", 64),)), pool("b", (), (("2001:db8:0:100::/56", 64),))])
    with pytest.raises(ValueError, match="IPv6 pool 'a' overlap"):
        PrefixIpam([pool("a", (("2001:db8::/48", 64),), (("2001:db8::/40", 56),))])
    with pytest.raises(ValueError, match="defined twice"):
        PrefixIpam([pool("a", (("2001:db8::/48", 64),)), pool("a", (("2001:db9::/48", 64),))])
    with pytest.raises(ValueError, match="default IPv6 pool 'x'"):
        PrefixIpam([pool("a", (("2001:db8::/48", 64),))], default_pool="x")
    with pytest.raises(ValueError, match="between /48 and /128"):
        PrefixRange(N("2001:db8::/48"), 40)


def test_a_slash_32_delegating_slash_64s_costs_memory_per_lease_only() -> None:
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        ipam = PrefixIpam([pool("huge", (("2a00::/16", 64),), (("2001:db8::/32", 64),))], default_pool="huge")
        built, _ = tracemalloc.get_traced_memory()
        leases = [ipam.allocate(f"s{i}", DELEGATE) for i in range(2000)]
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert built - before < 64 * 1024
    assert after - built < 2000 * 2048
    assert leases[-1].prefix == N("2001:db8:0:7cf::/64")
    usage = ipam.usage()["huge"]
    assert usage.delegate == PoolUsage(total=2**32, used=2000, free=2**32 - 2000)
    assert usage.prefix.total == 2**48
    ipam.release(leases[5])
    assert ipam.allocate("late", DELEGATE).prefix == N("2001:db8:0:7d0::/64")


def test_reconfigure_keeps_rebinds_and_orphans() -> None:
    ipam = PrefixIpam([pool("old", (("2001:db8:1::/48", 64),), (("2001:db8:100::/40", 56),)),
                       pool("gone", (("2001:db8:2::/48", 64),))], default_pool="old")
    kept = ipam.allocate("kept", PREFIX)
    moved = ipam.allocate("moved", DELEGATE, static=N("2001:db8:1ff:ff00::/56"))
    gone = ipam.allocate("gone", PREFIX, pool="gone")
    outside = ipam.allocate("outside", PREFIX, static=N("2001:db8:ffff:1::/64"))

    orphans = ipam.reconfigure(
        [pool("renamed", (("2001:db8:1::/48", 64),), (("2001:db8:100::/41", 56),)),
         pool("upper", (), (("2001:db8:180::/41", 56),)),
         pool("docs", (("2001:db8:ffff::/48", 64),))],
        default_pool="renamed",
    )

    assert orphans == [PrefixLease(gone.prefix, PREFIX, None, "gone")]
    assert ipam.lease_of("kept", PREFIX) == PrefixLease(kept.prefix, PREFIX, "renamed", "kept")
    assert ipam.lease_of("moved", DELEGATE) == PrefixLease(moved.prefix, DELEGATE, "upper", "moved")
    assert ipam.lease_of("outside", PREFIX) == PrefixLease(outside.prefix, PREFIX, "docs", "outside")
    usage = ipam.usage()
    assert usage["renamed"].prefix.used == 1 and usage["upper"].delegate.used == 1
    assert usage["docs"].prefix.used == 1
    # The orphan holds its prefix until released.
    with pytest.raises(AddressUnavailable, match="in use by gone"):
        ipam.allocate("x", PREFIX, static=N("2001:db8:2::/64"))
    ipam.release(ipam.lease_of("gone", PREFIX))  # type: ignore[arg-type]
    assert ipam.allocate("x", PREFIX, static=N("2001:db8:2::/64")).pool is None
    assert ipam.allocate("new", PREFIX).prefix == N("2001:db8:1:1::/64")


def test_an_orphan_inside_a_new_range_is_stepped_over_until_released() -> None:
    # The mask changes from /64 to /63: the /64 leases are no slots any more, but still in use.
    ipam = PrefixIpam([pool("p", (("2001:db8::/61", 64),))], default_pool="p")
    leases = [ipam.allocate(f"s{i}", PREFIX) for i in range(3)]  # ::/64, 0:1::/64, 0:2::/64
    orphans = ipam.reconfigure([pool("p", (("2001:db8::/61", 63),))], default_pool="p")
    assert {o.owner for o in orphans} == {"s0", "s1", "s2"}
    # /63 slots: 0:0 and 0:2 are covered by orphans, 0:4 and 0:6 are free.
    assert ipam.allocate("a", PREFIX).prefix == N("2001:db8:0:4::/63")
    assert ipam.allocate("b", PREFIX).prefix == N("2001:db8:0:6::/63")
    with pytest.raises(PoolExhausted):
        ipam.allocate("c", PREFIX)
    for lease in leases[:2]:
        ipam.release(ipam.lease_of(lease.owner, PREFIX))  # type: ignore[arg-type]
    assert ipam.allocate("c", PREFIX).prefix == N("2001:db8::/63")
    with pytest.raises(PoolExhausted):
        ipam.allocate("d", PREFIX)  # 0:2::/63 still overlaps s2's orphaned 0:2::/64


def test_reconfigure_error_leaves_everything_as_it_was_and_keeps_the_cursor() -> None:
    spec = [pool("p", (("2001:db8::/60", 64),))]
    ipam = PrefixIpam(spec, default_pool="p")
    first = ipam.allocate("a", PREFIX)
    with pytest.raises(ValueError):
        ipam.reconfigure([pool("p", (("2001:db8::/48", 64),))], default_pool="missing")
    assert ipam.lease_of("a", PREFIX) == first and ipam.usage()["p"].prefix.used == 1
    ipam.release(first)
    assert ipam.reconfigure(spec, default_pool="p") == []
    assert ipam.allocate("b", PREFIX).prefix != first.prefix


# --- random sequences against a model -----------------------------------------------------------

OWNERS = [f"o{i}" for i in range(8)]
CONFIGS = (
    [pool("a", (("2001:db8::/62", 64),), (("2001:db8:100::/54", 56),)),
     pool("b", (("2001:db8:1::/63", 64),))],
    # The /64 prefixes of pool a become /63: leases of the first config overlap the new slots.
    [pool("a", (("2001:db8::/62", 63),), (("2001:db8:100::/55", 56),)),
     pool("c", (("2001:db8:1::/64", 64),))],
    [pool("a", (("2001:db8::/62", 62),), (("2001:db8:100::/54", 55),))],
)
STATIC_CANDIDATES = [N(p) for p in (
    "2001:db8::/64", "2001:db8:0:2::/63", "2001:db8:0:3::/64", "2001:db8::/60", "2001:db8:1::/64",
    "2001:db8:100::/56", "2001:db8:100:300::/56", "2001:db8:100::/48", "2001:db8:ffff::/48", "ff02::/64",
)]


def slots_of(config: list[PrefixPoolSpec], name: str, kind: PrefixKind) -> list[IPv6Network]:
    found: list[IPv6Network] = []
    for spec in config:
        if spec.name == name:
            for prefix_range in spec.ranges(kind):
                found += prefix_range.network.subnets(new_prefix=prefix_range.length)
    return found


def static_allowed(config: list[PrefixPoolSpec], kind: PrefixKind, prefix: IPv6Network,
                   held: list[IPv6Network]) -> bool:
    if prefix.is_multicast or any(prefix.overlaps(other) for other in held):
        return False
    for spec in config:
        for range_kind in PrefixKind:
            for prefix_range in spec.ranges(range_kind):
                if prefix.overlaps(prefix_range.network):
                    return (range_kind is kind and prefix.prefixlen == prefix_range.length
                            and prefix.subnet_of(prefix_range.network))
    return True


class PrefixIpamMachine(RuleBasedStateMachine):
    """allocate/release/reconfigure in any order: no prefix is ever held twice, counts add up."""

    @initialize()
    def setup(self) -> None:
        self.config = CONFIGS[0]
        self.ipam = PrefixIpam(self.config, default_pool="a")
        self.held: dict[tuple[str, PrefixKind], PrefixLease] = {}

    @rule(owner=st.sampled_from(OWNERS), kind=st.sampled_from(PrefixKind), name=st.sampled_from("abc"))
    def allocate(self, owner: str, kind: PrefixKind, name: str) -> None:
        if (owner, kind) in self.held:
            with pytest.raises(OwnerHasLeaseError):
                self.ipam.allocate(owner, kind, pool=name)
            return
        if name not in self.ipam.pool_names():
            with pytest.raises(UnknownPoolError):
                self.ipam.allocate(owner, kind, pool=name)
            return
        held = [lease.prefix for lease in self.held.values()]
        usable = [slot for slot in slots_of(self.config, name, kind)
                  if not any(slot.overlaps(other) for other in held)]
        try:
            lease = self.ipam.allocate(owner, kind, pool=name)
        except PoolExhausted:
            assert usable == []
            return
        assert lease.prefix in usable and lease.pool == name and lease.kind is kind
        self.held[(owner, kind)] = lease

    @rule(owner=st.sampled_from(OWNERS), kind=st.sampled_from(PrefixKind),
          prefix=st.sampled_from(STATIC_CANDIDATES))
    def allocate_static(self, owner: str, kind: PrefixKind, prefix: IPv6Network) -> None:
        if (owner, kind) in self.held:
            return
        allowed = static_allowed(self.config, kind, prefix, [lease.prefix for lease in self.held.values()])
        try:
            lease = self.ipam.allocate(owner, kind, static=prefix)
        except AddressUnavailable:
            assert not allowed
            return
        assert allowed and lease.prefix == prefix
        self.held[(owner, kind)] = lease

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.held, key=lambda k: (k[0], k[1].value))))
        lease = self.held.pop(key)
        self.ipam.release(lease)
        self.ipam.release(lease)

    @rule(which=st.integers(0, len(CONFIGS) - 1))
    def reconfigure(self, which: int) -> None:
        self.config = CONFIGS[which]
        orphans = self.ipam.reconfigure(self.config, default_pool="a")
        assert all(orphan.pool is None for orphan in orphans)
        for key in list(self.held):
            current = self.ipam.lease_of(*key)
            assert current is not None and current.prefix == self.held[key].prefix
            self.held[key] = current

    @invariant()
    def consistent(self) -> None:
        leases = self.ipam.leases()
        assert {(lease.owner, lease.kind): lease for lease in leases} == self.held
        prefixes = [lease.prefix for lease in leases]
        for index, prefix in enumerate(prefixes):
            assert not any(prefix.overlaps(other) for other in prefixes[index + 1:])
        for name, usage in self.ipam.usage().items():
            for kind in PrefixKind:
                counted = usage.of(kind)
                assert counted.used == sum(1 for lease in leases if lease.pool == name and lease.kind is kind)
                assert counted.total == len(slots_of(self.config, name, kind))
                assert counted.free == counted.total - counted.used >= 0


PrefixIpamMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestPrefixIpamMachine = PrefixIpamMachine.TestCase
