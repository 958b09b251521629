"""Neighbor Discovery on the PPP link: the advertiser's schedule and validation (RFC 4861 §6.1.1,
§6.2), the solicitor's back-off and SLAAC (RFC 4862 §5.5.3), neighbor advertisements, and the
RS → RA → SLAAC conversation between our two ends."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from itertools import pairwise

import pytest

from tests.support.ipv6_link import (
    CLIENT_ID,
    CLIENT_LINK_LOCAL,
    DNS,
    LINK_MTU,
    SERVER_ID,
    SERVER_LINK_LOCAL,
    SESSION_PREFIX,
    Ipv6Link,
    advertiser_config,
    make_link,
    seeded,
)
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ipv6.nd import (
    INFINITE_LIFETIME,
    MAX_INITIAL_RTR_ADVERT_INTERVAL,
    MAX_RA_DELAY_TIME,
    MIN_DELAY_BETWEEN_RAS,
    AddressAssigned,
    AddressRemoved,
    DefaultRouter,
    DnsServers,
    HostEvent,
    LinkMtu,
    PrefixInformation,
    RdnssOption,
    RouterAdvertisement,
    RouterAdvertiser,
    RouterAdvertiserConfig,
    RouterSolicitor,
    build_neighbor_solicitation,
    build_router_solicitation,
    decode_router_advertisement,
    encode_nd_option,
    encode_router_advertisement,
    parse_nd_options,
)
from vpnd.proto.ipv6.packets import (
    ALL_NODES,
    ALL_ROUTERS,
    UNSPECIFIED,
    LinkPacket,
    build_icmpv6,
    classify,
    parse_icmpv6,
    parse_ipv6,
)

SLAAC_ADDRESS = IPv6Interface("2001:db8:0:42:21a:2bff:fe3c:4d5e/64")
HOST_EVENTS = (DefaultRouter, AddressAssigned, AddressRemoved, LinkMtu, DnsServers)


def ra_of(packet: bytes) -> tuple[IPv6Address, IPv6Address, RouterAdvertisement]:
    parsed = parse_ipv6(packet)
    message = parse_icmpv6(parsed)
    assert (message.type, message.code, parsed.hop_limit) == (134, 0, 255)
    return parsed.source, parsed.destination, decode_router_advertisement(message.body)


def rs(source: IPv6Address = CLIENT_LINK_LOCAL, hop_limit: int = 255, code: int = 0,
       options: bytes = b"") -> bytes:
    return build_icmpv6(source, ALL_ROUTERS, 133, code, bytes(4) + options, hop_limit=hop_limit)


def advertiser(now: float = 0.0, seed: int = 1, **overrides: object) -> RouterAdvertiser:
    return RouterAdvertiser(advertiser_config(**overrides), SERVER_ID, now, seeded(seed))


# ---- codec ------------------------------------------------------------------------------------


def test_router_advertisement_layout() -> None:
    ra = RouterAdvertisement(1800, (PrefixInformation(SESSION_PREFIX, 86400, 14400),), 1400,
                             (RdnssOption(1800, DNS),), managed=False, other_config=True, cur_hop_limit=64)
    body = encode_router_advertisement(ra)
    assert body[:12] == bytes([64, 0x40]) + struct.pack("!HII", 1800, 0, 0)
    prefix_option = body[12:44]
    assert prefix_option == (bytes([3, 4, 64, 0xC0]) + struct.pack("!III", 86400, 14400, 0)
                             + SESSION_PREFIX.network_address.packed)
    assert body[44:52] == bytes([5, 1, 0, 0]) + struct.pack("!I", 1400)
    assert body[52:60] == bytes([25, 5, 0, 0]) + struct.pack("!I", 1800)
    assert body[60:] == DNS[0].packed + DNS[1].packed
    assert decode_router_advertisement(body) == ra


def test_options_with_zero_length_or_overrunning_are_invalid() -> None:
    with pytest.raises(ProtocolError, match="length zero"):
        parse_nd_options(bytes([1, 0]) + bytes(6))
    with pytest.raises(ProtocolError, match="past the end"):
        parse_nd_options(bytes([1, 2]) + bytes(6))
    with pytest.raises(ProtocolError, match="truncated"):
        parse_nd_options(bytes([1]))
    options = parse_nd_options(encode_nd_option(99, bytes(6)) + encode_nd_option(5, bytes(6)))
    assert [option.type for option in options] == [99, 5]


def test_malformed_known_options_are_skipped_not_fatal() -> None:
    header = bytes([64, 0]) + struct.pack("!HII", 600, 0, 0)
    short_prefix = encode_nd_option(3, bytes(14))  # Prefix Information must be 4 units
    bad_length = encode_nd_option(3, bytes([129]) + bytes(29))  # prefix length 129
    even_rdnss = encode_nd_option(25, bytes(6 + 8))
    good_mtu = encode_nd_option(5, struct.pack("!HI", 0, 1400))
    ra = decode_router_advertisement(header + short_prefix + bad_length + even_rdnss + good_mtu)
    assert ra.prefixes == () and ra.rdnss == () and ra.mtu == 1400 and ra.router_lifetime == 600


# ---- advertiser ------------------------------------------------------------------------------


def test_first_advertisement_at_once_from_our_link_local_to_all_nodes() -> None:
    adv = advertiser()
    [packet] = adv.packets_to_send()
    source, destination, ra = ra_of(packet)
    assert (source, destination) == (SERVER_LINK_LOCAL, ALL_NODES)
    assert ra.prefixes == (PrefixInformation(SESSION_PREFIX, 86400, 14400, on_link=True, autonomous=True),)
    assert ra.mtu == LINK_MTU and ra.rdnss == (RdnssOption(1800, DNS),)
    assert ra.router_lifetime == 1800 and ra.other_config and not ra.managed


def test_initial_advertisements_are_fast_then_slow() -> None:
    adv = advertiser(seed=3, max_interval=600.0)
    sent = [0.0]
    adv.packets_to_send()
    while len(sent) < 8:
        deadline = adv.get_timer()
        assert deadline is not None
        adv.handle_timer(deadline)
        assert len(adv.packets_to_send()) == 1
        sent.append(deadline)
    gaps = [later - earlier for earlier, later in pairwise(sent)]
    # RFC 4861 §6.2.4: the first MAX_INITIAL_RTR_ADVERTISEMENTS (3) at most 16 s apart, then
    # uniformly in [MinRtrAdvInterval, MaxRtrAdvInterval] = [198, 600].
    assert all(gap <= MAX_INITIAL_RTR_ADVERT_INTERVAL for gap in gaps[:2])
    assert all(198 <= gap <= 600 for gap in gaps[2:])
    assert len({round(gap) for gap in gaps[2:]}) > 1  # jittered, not a fixed period


def test_solicitation_answered_to_the_solicitor_after_a_short_random_delay() -> None:
    adv = advertiser()
    adv.packets_to_send()
    adv.receive_packet(rs(), 10.0)
    deadline = adv.get_timer()
    assert deadline is not None and 10.0 <= deadline <= 10.0 + MAX_RA_DELAY_TIME
    adv.handle_timer(deadline)
    [packet] = adv.packets_to_send()
    assert ra_of(packet)[:2] == (SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL)


def test_solicitation_just_after_the_first_advertisement_is_answered_at_once_by_unicast() -> None:
    # The first advertisement may reach a client whose IPV6CP is not open yet and be lost there:
    # its solicitation must not wait for the all-nodes rate limit.
    adv = advertiser()
    adv.packets_to_send()
    adv.receive_packet(rs(), 0.1)
    deadline = adv.get_timer()
    assert deadline is not None and deadline <= 0.1 + MAX_RA_DELAY_TIME
    adv.handle_timer(deadline)
    [packet] = adv.packets_to_send()
    assert ra_of(packet)[1] == CLIENT_LINK_LOCAL
    adv.receive_packet(rs(), deadline + 0.1)  # unicast answers are still at least 1 s apart
    second = adv.get_timer()
    assert second is not None and second >= deadline + 1.0


def test_solicitations_are_rate_limited_and_coalesced() -> None:
    adv = advertiser()
    adv.packets_to_send()  # the first advertisement, at 0
    for now in (0.1, 0.2, 1.0):
        adv.receive_packet(rs(UNSPECIFIED), now)  # answered to all nodes: the 3 s limit applies
    deadline = adv.get_timer()
    assert deadline is not None and deadline >= MIN_DELAY_BETWEEN_RAS
    adv.handle_timer(deadline - 0.01)
    assert adv.packets_to_send() == []
    adv.handle_timer(deadline)
    assert len(adv.packets_to_send()) == 1  # three solicitations, one answer
    adv.receive_packet(rs(UNSPECIFIED), deadline + 0.5)
    second = adv.get_timer()
    assert second is not None and second >= deadline + MIN_DELAY_BETWEEN_RAS


def test_solicitation_from_unspecified_source_answered_to_all_nodes() -> None:
    adv = advertiser()
    adv.packets_to_send()
    adv.receive_packet(rs(UNSPECIFIED), 20.0)
    deadline = adv.get_timer()
    assert deadline is not None
    adv.handle_timer(deadline)
    [packet] = adv.packets_to_send()
    assert ra_of(packet)[1] == ALL_NODES


SLLAO = encode_nd_option(1, bytes(6))


@pytest.mark.parametrize(("packet", "reason"), [
    (rs(hop_limit=254), "hop limit"),
    (rs(hop_limit=1), "hop limit"),
    (rs(code=1), "code"),
    (build_icmpv6(CLIENT_LINK_LOCAL, ALL_ROUTERS, 133, 0, bytes(3)), "too short"),
    (rs(options=bytes([1, 0]) + bytes(6)), "length zero"),
    (rs(options=bytes([1, 3]) + bytes(6)), "past the end"),
    (rs(UNSPECIFIED, options=SLLAO), "link-layer address"),
    (rs()[:-1] + b"\x01", "checksum"),
    (rs()[:44], "exceeds"),
    (build_icmpv6(CLIENT_LINK_LOCAL, SERVER_LINK_LOCAL, 128, 0, bytes(4)), "not a solicitation"),
])
def test_invalid_solicitations_are_dropped_and_counted(packet: bytes, reason: str) -> None:
    adv = advertiser()
    adv.packets_to_send()
    before = adv.get_timer()
    adv.receive_packet(packet, 10.0)
    assert adv.get_timer() == before  # nothing scheduled
    assert sum(adv.dropped.values()) == 1
    assert any(reason in key for key in adv.dropped)


def test_valid_solicitation_with_options_is_accepted() -> None:
    adv = advertiser()
    adv.packets_to_send()
    adv.receive_packet(rs(options=SLLAO + encode_nd_option(200, bytes(14))), 10.0)
    deadline = adv.get_timer()
    assert not adv.dropped and deadline is not None and deadline <= 10.0 + MAX_RA_DELAY_TIME


def test_stop_sends_the_final_advertisement_and_goes_quiet() -> None:
    adv = advertiser()
    adv.packets_to_send()
    adv.stop(30.0)
    [packet] = adv.packets_to_send()
    source, destination, ra = ra_of(packet)
    assert (source, destination, ra.router_lifetime) == (SERVER_LINK_LOCAL, ALL_NODES, 0)
    assert [(p.prefix, p.valid_lifetime, p.preferred_lifetime) for p in ra.prefixes] == [
        (SESSION_PREFIX, 0, 0)]
    assert ra.rdnss == (RdnssOption(0, DNS),)
    assert adv.get_timer() is None
    adv.receive_packet(rs(), 31.0)
    adv.handle_timer(1000.0)
    assert adv.packets_to_send() == [] and adv.get_timer() is None


def test_config_limits() -> None:
    with pytest.raises(ValueError, match="at most 3"):
        RouterAdvertiserConfig(dns_servers=tuple(IPv6Address(f"2001:db8::{n}") for n in range(1, 5)))
    with pytest.raises(ValueError, match="MaxRtrAdvInterval"):
        RouterAdvertiserConfig(max_interval=3)
    with pytest.raises(ValueError, match="MTU"):
        RouterAdvertiserConfig(mtu=1000)
    with pytest.raises(ValueError, match="preferred lifetime"):
        RouterAdvertiserConfig(prefixes=(PrefixInformation(SESSION_PREFIX, 10, 20),))
    assert RouterAdvertiserConfig(max_interval=100).advertisement().router_lifetime == 300
    assert RouterAdvertiserConfig(router_lifetime=0).advertisement().router_lifetime == 0
    assert RouterAdvertiserConfig(max_interval=600).effective_min_interval == 198
    assert RouterAdvertiserConfig(max_interval=8).effective_min_interval == 8  # below 9 s: Min = Max


# ---- neighbor solicitations -------------------------------------------------------------------


def na_of(packet: bytes) -> tuple[IPv6Address, IPv6Address, int, IPv6Address]:
    parsed = parse_ipv6(packet)
    message = parse_icmpv6(parsed)
    assert (message.type, message.code, parsed.hop_limit, len(message.body)) == (136, 0, 255, 20)
    return parsed.source, parsed.destination, message.body[0], IPv6Address(message.body[4:20])


def test_neighbor_solicitation_for_the_server_is_answered_as_a_router() -> None:
    adv = advertiser()
    adv.packets_to_send()
    solicitation = build_neighbor_solicitation(CLIENT_LINK_LOCAL, SERVER_LINK_LOCAL, SERVER_LINK_LOCAL)
    adv.receive_packet(solicitation, 1.0)
    [packet] = adv.packets_to_send()
    # Router and Solicited set, Override clear: no target link-layer address option on PPP.
    assert na_of(packet) == (SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL, 0xC0, SERVER_LINK_LOCAL)


def test_duplicate_address_detection_of_our_address_is_defended_to_all_nodes() -> None:
    adv = advertiser()
    adv.packets_to_send()
    solicited_node = IPv6Address("ff02::1:ff00:1")
    adv.receive_packet(build_neighbor_solicitation(UNSPECIFIED, solicited_node, SERVER_LINK_LOCAL), 1.0)
    [packet] = adv.packets_to_send()
    assert na_of(packet) == (SERVER_LINK_LOCAL, ALL_NODES, 0x80, SERVER_LINK_LOCAL)


def test_neighbor_solicitations_for_others_or_invalid_get_no_answer() -> None:
    adv = advertiser()
    adv.packets_to_send()
    solicited_node = IPv6Address("ff02::1:ff3c:4d5e")
    other_target = build_neighbor_solicitation(UNSPECIFIED, solicited_node, SLAAC_ADDRESS.ip)
    adv.receive_packet(other_target, 1.0)  # the client's own DAD: not ours to answer
    assert adv.packets_to_send() == [] and not adv.dropped
    dad_to_unicast = build_neighbor_solicitation(UNSPECIFIED, SERVER_LINK_LOCAL, SERVER_LINK_LOCAL)
    multicast_target = build_neighbor_solicitation(CLIENT_LINK_LOCAL, SERVER_LINK_LOCAL, ALL_NODES)
    low_hop = build_icmpv6(CLIENT_LINK_LOCAL, SERVER_LINK_LOCAL, 135, 0, bytes(4) + SERVER_LINK_LOCAL.packed,
                           hop_limit=64)
    for packet in (dad_to_unicast, multicast_target, low_hop):
        adv.receive_packet(packet, 1.0)
    assert adv.packets_to_send() == [] and sum(adv.dropped.values()) == 3


def test_client_answers_for_its_link_local_and_slaac_address() -> None:
    link = make_link()
    link.run_until(10.0)
    assert SLAAC_ADDRESS in link.solicitor.addresses
    for target in (CLIENT_LINK_LOCAL, SLAAC_ADDRESS.ip):
        solicitation = build_neighbor_solicitation(SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL, target)
        link.solicitor.receive_packet(solicitation, link.now)
        [packet] = link.solicitor.packets_to_send()
        assert na_of(packet) == (target, SERVER_LINK_LOCAL, 0x40, target)  # solicited, not a router


# ---- solicitor ------------------------------------------------------------------------------


def test_solicitations_back_off_until_an_advertisement_arrives() -> None:
    solicitor = RouterSolicitor(CLIENT_ID, 0.0, seeded(5))
    times = []
    for _ in range(6):
        deadline = solicitor.get_timer()
        assert deadline is not None
        solicitor.handle_timer(deadline)
        [packet] = solicitor.packets_to_send()
        assert packet == build_router_solicitation(CLIENT_LINK_LOCAL)
        times.append(deadline)
    assert 0 <= times[0] <= 1.0  # MAX_RTR_SOLICITATION_DELAY
    gaps = [b - a for a, b in pairwise(times)]
    assert 3.6 <= gaps[0] <= 4.4  # RTR_SOLICITATION_INTERVAL ± 10 %
    assert all(1.9 * a <= b <= 2.1 * a for a, b in pairwise(gaps))  # RFC 7559 back-off
    assert len({round(gap / 4) for gap in gaps}) == len(gaps)
    parsed = parse_ipv6(packet)
    assert (parsed.source, parsed.destination, parsed.hop_limit) == (CLIENT_LINK_LOCAL, ALL_ROUTERS, 255)


def host_events(link: Ipv6Link) -> list[HostEvent]:
    return [event for event in link.client_events
            if isinstance(event, HOST_EVENTS) and getattr(event, "source", "ra") == "ra"]


def test_router_solicitation_advertisement_slaac_conversation() -> None:
    link = make_link()
    link.server_silent = True  # the advertisement sent when the link came up is lost
    link.pump()
    link.server_silent = False
    link.run_until(10.0)
    solicitations = [p for p in link.sent("c2s") if classify(p) is LinkPacket.ROUTER_SOLICITATION]
    answers = [ra_of(p) for p in link.sent("s2c") if classify(p) is LinkPacket.ROUTER_ADVERTISEMENT]
    assert len(solicitations) == 1 and link.solicitor.solicitations_sent == 1
    # The answer goes to the solicitor, no sooner than MIN_DELAY_BETWEEN_RAS after the lost one.
    assert [(source, destination) for source, destination, _ in answers] == [
        (SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL)]
    assert host_events(link) == [
        DefaultRouter(SERVER_LINK_LOCAL, 1800),
        AddressAssigned(SLAAC_ADDRESS, 14400, 86400),
        LinkMtu(LINK_MTU),
        DnsServers(DNS, "ra"),
    ]
    assert link.solicitor.router == SERVER_LINK_LOCAL
    assert link.solicitor.addresses.keys() == {SLAAC_ADDRESS}
    assert link.solicitor.dns_servers == DNS and link.solicitor.mtu == LINK_MTU
    assert link.to_kernel == [] and not link.advertiser.dropped and not link.solicitor.dropped


def test_periodic_advertisements_refresh_the_address() -> None:
    link = make_link()
    link.run_until(3000.0)
    refreshed = [e for e in host_events(link) if isinstance(e, AddressAssigned)]
    assert len(refreshed) >= 5 and set(refreshed) == {AddressAssigned(SLAAC_ADDRESS, 14400, 86400)}
    assert [type(e) for e in host_events(link)].count(DefaultRouter) == 1  # only changes are events


def test_withdrawal_removes_address_router_and_dns() -> None:
    link = make_link()
    link.run_until(5.0)
    link.client_events.clear()
    link.advertiser.stop(link.now)
    link.pump()
    assert AddressRemoved(SLAAC_ADDRESS, "withdrawn by the router") in link.client_events
    assert DefaultRouter(None, 0) in link.client_events
    assert DnsServers((), "ra") in link.client_events
    assert link.solicitor.addresses == {} and link.solicitor.router is None


def test_lifetimes_run_out_without_advertisements() -> None:
    link = make_link(advertiser=advertiser_config(
        prefixes=(PrefixInformation(SESSION_PREFIX, 900, 300),), dns_lifetime=700, max_interval=200))
    link.run_until(5.0)
    link.server_silent = True
    link.client_events.clear()
    link.run_until(2000.0)
    # Router lifetime 3 × 200 = 600 s, then RDNSS at 700 s, then the address at 900 s.
    assert host_events(link) == [
        DefaultRouter(None, 0),
        DnsServers((), "ra"),
        AddressRemoved(SLAAC_ADDRESS, "valid lifetime expired"),
    ]
    assert link.solicitor.get_timer() is None


def _ra_packet(ra: RouterAdvertisement, source: IPv6Address = SERVER_LINK_LOCAL) -> bytes:
    return build_icmpv6(source, ALL_NODES, 134, 0, encode_router_advertisement(ra))


def test_slaac_rules_of_rfc4862() -> None:
    solicitor = RouterSolicitor(CLIENT_ID, 0.0, seeded(2))
    prefixes = (
        PrefixInformation(IPv6Network("2001:db8:1::/64"), 100, 50, autonomous=False),  # not for SLAAC
        PrefixInformation(IPv6Network("fe80::/64"), 100, 50),  # link-local
        PrefixInformation(IPv6Network("2001:db8:2::/64"), 50, 100),  # preferred > valid
        PrefixInformation(IPv6Network("2001:db8:3::/56"), 100, 50),  # not /64
        PrefixInformation(IPv6Network("2001:db8:4::/64"), INFINITE_LIFETIME, INFINITE_LIFETIME),
    )
    solicitor.receive_packet(_ra_packet(RouterAdvertisement(0, prefixes, mtu=1000)), 1.0)
    assert list(solicitor.addresses) == [IPv6Interface("2001:db8:4::21a:2bff:fe3c:4d5e/64")]
    assert solicitor.addresses[IPv6Interface("2001:db8:4::21a:2bff:fe3c:4d5e/64")] is None  # infinite
    assert solicitor.router is None  # router lifetime 0: not a default router
    assert solicitor.mtu is None  # below the IPv6 minimum: ignored
    assert solicitor.get_timer() is None  # no more solicitations once advertised to


def test_advertisements_that_fail_validation_are_dropped() -> None:
    solicitor = RouterSolicitor(CLIENT_ID, 0.0, seeded(2))
    ra = RouterAdvertisement(600, (PrefixInformation(SESSION_PREFIX, 100, 50),))
    body = encode_router_advertisement(ra)
    bad = [
        _ra_packet(ra, source=IPv6Address("2001:db8::1")),  # not link-local
        build_icmpv6(SERVER_LINK_LOCAL, ALL_NODES, 134, 0, body, hop_limit=64),
        build_icmpv6(SERVER_LINK_LOCAL, ALL_NODES, 134, 1, body),
        build_icmpv6(SERVER_LINK_LOCAL, ALL_NODES, 134, 0, body[:11]),
        build_icmpv6(SERVER_LINK_LOCAL, ALL_NODES, 134, 0, body + bytes([3, 0])),
    ]
    for packet in bad:
        solicitor.receive_packet(packet, 1.0)
    assert sum(solicitor.dropped.values()) == len(bad)
    assert solicitor.addresses == {} and solicitor.router is None and solicitor.next_event() is None
