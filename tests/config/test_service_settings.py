"""What the runtime takes from a config: the IPv6 part of ServiceSettings."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from tests.config import examples
from vpnd.config.model import model_from_tree
from vpnd.config.tree import ConfigTree
from vpnd.ipam import PrefixIpam, PrefixKind, PrefixPoolSpec, PrefixRange
from vpnd.proto.ppp.ipv6cp import PeerIdSource, PeerInterfaceIdPolicy
from vpnd.server.settings import ServiceSettings, SettingsError, service_settings

BASE = [
    "set vpn sstp authentication local-users username alice password 'secret'",
    "set vpn sstp client-ip-pool P range '10.0.0.0/25'",
    "set vpn sstp gateway-address '10.0.0.254'",
]


def settings_of(*lines: str, base: list[str] = BASE) -> ServiceSettings:
    tree = ConfigTree.from_commands([*base, *lines])
    sstp = model_from_tree(tree).vpn.sstp
    assert sstp is not None
    return service_settings(sstp)


def test_ipv6_defaults_keep_ipv6_off() -> None:
    service = settings_of()
    assert (service.ipv6, service.ipv6_policy, service.ipv6_pools, service.default_ipv6_pool) == (
        False, "deny", (), None)
    link = service.session_settings({}, (30.0, 3, 0.0)).link
    assert not link.ipv6_enabled and link.ipv6_peer_interface_id is None
    assert link.ipv6_interface_id is None and not link.ipv6_accept_peer_interface_id


def test_smoketest_ipv6_pools_become_prefix_pool_specs_that_ipam_takes() -> None:
    gateway = "set vpn sstp gateway-address '10.0.0.254'"
    service = settings_of(*examples.SMOKETEST_RADIUS.strip().splitlines(), gateway, base=[])
    assert service.ipv6_policy == "require" and service.ipv6
    assert service.ipv6_pools == (PrefixPoolSpec(
        "V6", (PrefixRange(IPv6Network("2001:db8:1::/48"), 64),),
        (PrefixRange(IPv6Network("2001:db8:100::/40"), 56),)),)
    assert service.default_ipv6_pool == "V6"
    ipam = PrefixIpam(service.ipv6_pools, service.default_ipv6_pool)
    assert ipam.allocate("s", PrefixKind.DELEGATE).prefix == IPv6Network("2001:db8:100::/56")


def test_a_single_ipv6_pool_is_the_default_and_dns_is_split_by_family() -> None:
    service = settings_of("set vpn sstp ppp-options ipv6 prefer",
                          "set vpn sstp client-ipv6-pool only prefix 2001:db8:1::/48",
                          *(f"set vpn sstp name-server {a}" for a in
                            ("192.0.2.1", "2001:db8::53", "2001:db8::54", "2001:db8::55", "2001:db8::56")))
    assert service.default_ipv6_pool == "only" and service.ipv6_policy == "prefer"
    assert service.dns_ipv6 == tuple(IPv6Address(f"2001:db8::{n}") for n in (53, 54, 55))
    assert [str(a) for a in service.dns] == ["192.0.2.1"]
    two = settings_of("set vpn sstp client-ipv6-pool a prefix 2001:db8:1::/48",
                      "set vpn sstp client-ipv6-pool b prefix 2001:db8:2::/48")
    assert two.default_ipv6_pool is None


def test_interface_id_options_reach_the_link_settings() -> None:
    service = settings_of("set vpn sstp ppp-options ipv6 allow",
                          "set vpn sstp ppp-options ipv6-interface-id 0:0:0:1",
                          "set vpn sstp ppp-options ipv6-peer-interface-id calling-sid",
                          "set vpn sstp ppp-options ipv6-accept-peer-interface-id")
    link = service.session_settings({}, (30.0, 3, 0.0)).link
    assert link.ipv6_enabled
    assert link.ipv6_interface_id == bytes.fromhex("0000000000000001")
    assert link.ipv6_peer_interface_id == PeerInterfaceIdPolicy(PeerIdSource.CALLING_SID)
    assert link.ipv6_accept_peer_interface_id
    fixed = settings_of("set vpn sstp ppp-options ipv6-interface-id random",
                        "set vpn sstp ppp-options ipv6-peer-interface-id 211:22ff:fe33:4455")
    assert fixed.ipv6_interface_id is None
    assert fixed.ipv6_peer_interface_id == PeerInterfaceIdPolicy(PeerIdSource.FIXED,
                                                                 bytes.fromhex("021122fffe334455"))


def test_unverified_ipv6_mistakes_are_settings_errors() -> None:
    with pytest.raises(SettingsError, match="delegation-prefix is required"):
        settings_of("set vpn sstp client-ipv6-pool a delegate 2001:db8:1::/48")
    with pytest.raises(SettingsError, match="must not be zero"):
        settings_of("set vpn sstp ppp-options ipv6-peer-interface-id 0:0:0:0")


def test_host_form_range_runs_as_its_network_and_static_ips_are_set_aside() -> None:
    service = settings_of("set vpn sstp client-ip-pool H range '198.51.100.1/24'",
                          "set vpn sstp authentication local-users username alice static-ip '10.0.0.9'",
                          "set vpn sstp authentication local-users username bob password 'x'",
                          "set vpn sstp authentication local-users username bob static-ip '192.0.2.9'")
    pools = {spec.name: spec.ranges for spec in service.pools}
    assert pools["H"] == [IPv4Network("198.51.100.0/24")]
    assert service.static_addresses == (IPv4Address("10.0.0.9"), IPv4Address("192.0.2.9"))
