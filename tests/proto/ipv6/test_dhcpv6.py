"""DHCPv6 prefix delegation: the codec's layout and strictness, the server's answers to crafted
messages (RFC 8415 §16, §18.3), and whole conversations between our client and our server —
four-message and rapid-commit exchanges, renew, release, rebind to a new server, no prefix, and
expiry on both sides — with the retransmission timing of §15."""

from __future__ import annotations

import struct
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Network
from itertools import pairwise

import pytest

from tests.support.ipv6_link import (
    CLIENT_DUID,
    CLIENT_LINK_LOCAL,
    DELEGATED_PREFIX,
    DNS,
    SERVER_DUID,
    SERVER_ID,
    SERVER_LINK_LOCAL,
    Ipv6Link,
    make_link,
)
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ipv6.dhcpv6 import (
    HARDWARE_TYPE_EUI64,
    OPTION_DNS_SERVERS,
    IaAddress,
    IaNa,
    IaPd,
    IaPrefix,
    Message,
    MessageType,
    Status,
    StatusCode,
    build_dhcpv6_packet,
    decode_message,
    duid_ll,
    encode_message,
)
from vpnd.proto.ipv6.dhcpv6_client import (
    REN_MAX_RT,
    REN_TIMEOUT,
    REQ_MAX_RC,
    PdState,
    PrefixDelegated,
    PrefixLost,
    PrefixUnavailable,
)
from vpnd.proto.ipv6.dhcpv6_server import Dhcpv6Server, Dhcpv6ServerConfig, PrefixBound, PrefixUnbound
from vpnd.proto.ipv6.nd import DnsServers
from vpnd.proto.ipv6.packets import (
    ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
    LinkPacket,
    build_udp,
    classify,
    parse_ipv6,
    parse_udp,
)

OTHER_DUID = duid_ll(HARDWARE_TYPE_EUI64, bytes.fromhex("00000000000000ee"))


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


def dhcp_of(packet: bytes) -> Message:
    return decode_message(parse_udp(parse_ipv6(packet)).payload)


def dhcp_messages(link: Ipv6Link, direction: str) -> list[Message]:
    kinds = (LinkPacket.DHCPV6_TO_SERVER, LinkPacket.DHCPV6_TO_CLIENT)
    return [dhcp_of(packet) for packet in link.sent(direction) if classify(packet) in kinds]


def conversation(link: Ipv6Link) -> list[str]:
    kinds = (LinkPacket.DHCPV6_TO_SERVER, LinkPacket.DHCPV6_TO_CLIENT)
    return [dhcp_of(packet).type.name for _, _, packet in link.wire if classify(packet) in kinds]


def dhcp_events(link: Ipv6Link) -> list[object]:
    return [event for event in link.client_events
            if isinstance(event, PrefixDelegated | PrefixLost | PrefixUnavailable)
            or (isinstance(event, DnsServers) and event.source == "dhcpv6")]


# ---- codec ------------------------------------------------------------------------------------


def test_solicit_exact_bytes() -> None:
    message = Message(MessageType.SOLICIT, 0x123456, client_id=CLIENT_DUID, ia_pd=(IaPd(1),),
                      requested_options=(OPTION_DNS_SERVERS,), elapsed_time=0, rapid_commit=True)
    assert encode_message(message) == h(
        "01 123456"
        "| 0001 000c 0003 001b 021a2bfffe3c4d5e"  # Client Identifier: DUID-LL, hardware type 27 (EUI-64)
        "| 0019 000c 00000001 00000000 00000000"  # IA_PD: IAID 1, T1 0, T2 0
        "| 0006 0002 0017"  # ORO: DNS servers
        "| 0008 0002 0000"  # Elapsed Time 0
        "| 000e 0000")  # Rapid Commit
    assert decode_message(encode_message(message)) == message


def test_reply_round_trip_keeps_every_field() -> None:
    message = Message(
        MessageType.REPLY, 0xABCDEF, CLIENT_DUID, SERVER_DUID,
        ia_na=(IaNa(7, 10, 20, (IaAddress(IPv6Address("2001:db8::9"), 30, 40, Status(0, "ok")),),
                    Status(StatusCode.NO_ADDRS_AVAIL, "none")),),
        ia_pd=(IaPd(1, 1800, 2880, (IaPrefix(DELEGATED_PREFIX, 3600, 7200, Status(0, "")),)),
               IaPd(2, status=Status(StatusCode.NO_PREFIX_AVAIL, "gone"))),
        status=Status(StatusCode.SUCCESS, "fine ✓"), dns_servers=DNS, preference=255, rapid_commit=True,
        other=((39, b"\x01host"), (82, b"\x00\x00\x0e\x10")))
    assert decode_message(encode_message(message)) == message


def test_iaprefix_layout() -> None:
    ia_pd = IaPd(1, 5, 8, (IaPrefix(DELEGATED_PREFIX, 3600, 7200),))
    encoded = encode_message(Message(MessageType.REPLY, 1, ia_pd=(ia_pd,)))
    assert encoded[4:] == h("0019 0029 00000001 00000005 00000008"
                            "| 001a 0019 00000e10 00001c20 38 20010db8010000000000000000000000")


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x01\x00\x00", "shorter than 4"),
    (h("0c 000000"), "type 12"),  # Relay-forward: not served on the link
    (h("0a 000000"), "type 10"),  # Reconfigure
    (h("01 000001 0001 0010 0003001b"), "runs past"),
    (h("01 000001 00"), "truncated"),
    (h("01 000001 0001 0004 00030001 0001 0004 00030001"), "appears twice"),
    (h("01 000001 0001 0002 0003"), "DUID of 2 bytes"),
    (h("01 000001 0002 0083") + bytes(131), "DUID of 131 bytes"),
    (h("01 000001 0017 000f") + bytes(15), "multiple of 16"),
    (h("01 000001 0017 0011") + bytes(17), "multiple of 16"),
    (h("01 000001 0006 0003 001700"), "odd length"),
    (h("01 000001 0007 0002 ffff"), "preference"),
    (h("01 000001 0008 0001 00"), "elapsed time"),
    (h("01 000001 000e 0001 00"), "rapid commit"),
    (h("01 000001 0019 000b") + bytes(11), "IA_PD shorter"),
    (h("01 000001 0003 000b") + bytes(11), "IA_NA shorter"),
    (h("01 000001 0019 0029 00000001 00000000 00000000 001a 0019 00000000 00000000 81") + bytes(16),
     "prefix length 129"),
    (h("01 000001 0019 0015 00000001 00000000 00000000 001a 0005 0000000000"), "IAPREFIX shorter"),
    (h("01 000001 0003 0014 00000001 00000000 00000000 0005 0004 00000000"), "IAADDR shorter"),
    (h("01 000001 0019 0018 00000001 00000000 00000000 000d 0002 0000 000d 0002 0000"), "two status"),
    (h("01 000001 000d 0001 00"), "status code option shorter"),
    (h("01 000001 0019 0010 00000001 00000000 00000000 001a 0010"), "runs past"),
])
def test_decode_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_message(data)


# ---- server answers to crafted messages --------------------------------------------------------


def server(prefix: IPv6Network | None = DELEGATED_PREFIX,
           config: Dhcpv6ServerConfig | None = None) -> Dhcpv6Server:
    return Dhcpv6Server(SERVER_DUID, SERVER_ID, prefix, DNS, config)


def ask(srv: Dhcpv6Server, message: Message, now: float = 1.0, source: IPv6Address = CLIENT_LINK_LOCAL,
        destination: IPv6Address = ALL_DHCP_RELAY_AGENTS_AND_SERVERS) -> Message | None:
    srv.receive_packet(build_dhcpv6_packet(source, destination, 546, 547, message), now)
    out = srv.packets_to_send()
    assert len(out) <= 1
    if not out:
        return None
    parsed = parse_ipv6(out[0])
    assert (parsed.source, parsed.destination) == (SERVER_LINK_LOCAL, source)
    udp = parse_udp(parsed)
    assert (udp.source_port, udp.destination_port) == (547, 546)
    return decode_message(udp.payload)


def solicit(client_id: bytes = CLIENT_DUID, **fields: object) -> Message:
    base = Message(MessageType.SOLICIT, 0x010203, client_id, ia_pd=(IaPd(1),), elapsed_time=0)
    return replace(base, **fields)


def request(client_id: bytes = CLIENT_DUID, server_id: bytes = SERVER_DUID, iaid: int = 1) -> Message:
    return Message(MessageType.REQUEST, 0x040506, client_id, server_id, ia_pd=(IaPd(iaid),))


def test_advertise_offers_the_prefix_without_binding_it() -> None:
    srv = server()
    answer = ask(srv, solicit(ia_na=(IaNa(9),)))
    assert answer is not None
    assert (answer.type, answer.transaction_id, answer.client_id, answer.server_id) == (
        MessageType.ADVERTISE, 0x010203, CLIENT_DUID, SERVER_DUID)
    assert answer.ia_pd == (IaPd(1, 1800, 2880, (IaPrefix(DELEGATED_PREFIX, 3600, 7200),)),)
    # Addresses come from SLAAC: the IA_NA carries NoAddrsAvail (RFC 7550 §4.1 placement).
    [ia_na] = answer.ia_na
    assert ia_na.iaid == 9 and ia_na.addresses == () and ia_na.status is not None
    assert ia_na.status.code == StatusCode.NO_ADDRS_AVAIL
    assert answer.preference == 255 and answer.dns_servers == DNS and not answer.rapid_commit
    assert srv.binding is None and srv.next_event() is None


def test_rapid_commit_solicit_is_answered_with_a_committed_reply() -> None:
    srv = server()
    answer = ask(srv, solicit(rapid_commit=True))
    assert answer is not None and answer.type is MessageType.REPLY and answer.rapid_commit
    assert srv.next_event() == PrefixBound(DELEGATED_PREFIX, CLIENT_LINK_LOCAL, CLIENT_DUID, 1, 7200)
    assert srv.get_timer() == 1.0 + 7200


def test_rapid_commit_refused_by_configuration_gets_an_advertise() -> None:
    srv = server(config=Dhcpv6ServerConfig(rapid_commit=False))
    answer = ask(srv, solicit(rapid_commit=True))
    assert answer is not None and answer.type is MessageType.ADVERTISE and srv.binding is None


def test_no_prefix_means_no_prefix_avail_inside_the_ia_pd() -> None:
    srv = server(prefix=None)
    for message in (solicit(), solicit(rapid_commit=True), request()):
        answer = ask(srv, message)
        assert answer is not None
        [ia_pd] = answer.ia_pd
        assert ia_pd.prefixes == () and ia_pd.status is not None
        assert ia_pd.status.code == StatusCode.NO_PREFIX_AVAIL
        assert answer.dns_servers == DNS
    assert srv.next_event() is None


def test_a_second_client_gets_no_prefix_while_the_first_holds_it() -> None:
    srv = server()
    assert ask(srv, request()) is not None
    for message in (solicit(OTHER_DUID), request(OTHER_DUID), request(iaid=2)):
        answer = ask(srv, message)
        assert answer is not None and answer.ia_pd[0].status is not None
        assert answer.ia_pd[0].status.code == StatusCode.NO_PREFIX_AVAIL
    assert srv.binding is not None and srv.binding.client_id == CLIENT_DUID


def test_request_returns_foreign_hints_with_zero_lifetimes() -> None:
    srv = server()
    stale = IPv6Network("2001:db8:999::/56")
    answer = ask(srv, Message(MessageType.REQUEST, 5, CLIENT_DUID, SERVER_DUID,
                              ia_pd=(IaPd(1, prefixes=(IaPrefix(stale, 0, 0),)),)))
    assert answer is not None
    assert answer.ia_pd[0].prefixes == (IaPrefix(DELEGATED_PREFIX, 3600, 7200), IaPrefix(stale, 0, 0))


@pytest.mark.parametrize(("message", "reason"), [
    (request(server_id=OTHER_DUID), "another server"),
    (Message(MessageType.REQUEST, 1, CLIENT_DUID, ia_pd=(IaPd(1),)), "another server"),  # no server id
    (Message(MessageType.RENEW, 1, CLIENT_DUID, OTHER_DUID, ia_pd=(IaPd(1),)), "another server"),
    (Message(MessageType.RELEASE, 1, CLIENT_DUID, OTHER_DUID, ia_pd=(IaPd(1),)), "another server"),
    (Message(MessageType.DECLINE, 1, CLIENT_DUID, OTHER_DUID), "another server"),
    (Message(MessageType.SOLICIT, 1, ia_pd=(IaPd(1),)), "without a client identifier"),
    (Message(MessageType.REQUEST, 1, server_id=SERVER_DUID, ia_pd=(IaPd(1),)), "without a client identifier"),
    (Message(MessageType.SOLICIT, 1, CLIENT_DUID, SERVER_DUID), "with a server identifier"),
    (Message(MessageType.REBIND, 1, CLIENT_DUID, SERVER_DUID), "with a server identifier"),
    (Message(MessageType.CONFIRM, 1, CLIENT_DUID, SERVER_DUID), "with a server identifier"),
    (Message(MessageType.INFORMATION_REQUEST, 1, server_id=OTHER_DUID), "another server"),
    (Message(MessageType.INFORMATION_REQUEST, 1, ia_pd=(IaPd(1),)), "with an IA"),
    (Message(MessageType.ADVERTISE, 1, CLIENT_DUID, SERVER_DUID), "not sent by clients"),
    (Message(MessageType.REPLY, 1, CLIENT_DUID, SERVER_DUID), "not sent by clients"),
])
def test_messages_the_rfc_says_to_discard_get_no_answer(message: Message, reason: str) -> None:
    srv = server()
    assert ask(srv, message) is None
    assert sum(srv.dropped.values()) == 1 and any(reason in key for key in srv.dropped)
    assert srv.binding is None and srv.next_event() is None


def test_release_for_another_server_leaves_the_binding() -> None:
    srv = server()
    ask(srv, request())
    assert ask(srv, Message(MessageType.RELEASE, 9, CLIENT_DUID, OTHER_DUID, ia_pd=(IaPd(1),))) is None
    assert srv.binding is not None


def test_packet_level_checks() -> None:
    srv = server()
    message = encode_message(solicit())
    group = ALL_DHCP_RELAY_AGENTS_AND_SERVERS
    bad = [
        build_udp(IPv6Address("2001:db8::5"), group, 546, 547, message, hop_limit=1),
        build_udp(CLIENT_LINK_LOCAL, IPv6Address("ff02::1"), 546, 547, message, hop_limit=1),
        build_udp(CLIENT_LINK_LOCAL, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, 546, 548, message, hop_limit=1),
        build_udp(CLIENT_LINK_LOCAL, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, 546, 547, message[:5], hop_limit=1),
    ]
    for packet in bad:
        srv.receive_packet(packet, 1.0)
    assert srv.packets_to_send() == [] and sum(srv.dropped.values()) == len(bad)
    # Unicast to our link-local is served as well as the multicast group.
    assert ask(srv, solicit(), destination=SERVER_LINK_LOCAL) is not None


def test_confirm_is_not_answered_decline_and_information_request_are() -> None:
    srv = server()
    confirm = Message(MessageType.CONFIRM, 1, CLIENT_DUID,
                      ia_na=(IaNa(1, addresses=(IaAddress(IPv6Address("2001:db8::1"), 0, 0),)),))
    assert ask(srv, confirm) is None
    decline = ask(srv, Message(MessageType.DECLINE, 2, CLIENT_DUID, SERVER_DUID, ia_na=(IaNa(4),)))
    assert decline is not None and decline.status == Status(StatusCode.SUCCESS)
    assert decline.ia_na[0].status is not None and decline.ia_na[0].status.code == StatusCode.NO_BINDING
    info = ask(srv, Message(MessageType.INFORMATION_REQUEST, 3, requested_options=(OPTION_DNS_SERVERS,)))
    assert info is not None and info.type is MessageType.REPLY and info.dns_servers == DNS
    assert info.server_id == SERVER_DUID and info.client_id is None and info.ia_pd == ()


def test_renew_without_binding_gets_no_binding_and_rebind_takes_a_free_prefix() -> None:
    srv = server()
    renew = ask(srv, Message(MessageType.RENEW, 1, CLIENT_DUID, SERVER_DUID,
                             ia_pd=(IaPd(1, prefixes=(IaPrefix(DELEGATED_PREFIX, 0, 0),)),)))
    assert renew is not None and renew.ia_pd == (IaPd(1, status=Status(StatusCode.NO_BINDING,
                                                                       "no binding for this IA")),)
    rebind = ask(srv, Message(MessageType.REBIND, 2, CLIENT_DUID,
                              ia_pd=(IaPd(1, prefixes=(IaPrefix(DELEGATED_PREFIX, 0, 0),)),)))
    assert rebind is not None and rebind.ia_pd[0].prefixes == (IaPrefix(DELEGATED_PREFIX, 3600, 7200),)
    assert srv.binding is not None


def test_rebind_of_a_prefix_that_is_not_free_gets_zero_lifetimes() -> None:
    srv = server()
    ask(srv, request(OTHER_DUID))
    held = IPv6Network("2001:db8:7::/56")
    rebind = ask(srv, Message(MessageType.REBIND, 2, CLIENT_DUID,
                              ia_pd=(IaPd(1, prefixes=(IaPrefix(held, 9, 9),)),)))
    assert rebind is not None and rebind.ia_pd == (IaPd(1, prefixes=(IaPrefix(held, 0, 0),)),)


def test_set_prefix_withdraws_the_binding_and_close_ends_it() -> None:
    srv = server()
    ask(srv, request())
    srv.next_event()
    srv.set_prefix(IPv6Network("2001:db8:200::/56"))
    assert srv.next_event() == PrefixUnbound(DELEGATED_PREFIX, CLIENT_LINK_LOCAL, "withdrawn")
    ask(srv, request())
    bound = srv.next_event()
    assert isinstance(bound, PrefixBound) and bound.prefix == IPv6Network("2001:db8:200::/56")
    srv.close()
    assert srv.next_event() == PrefixUnbound(IPv6Network("2001:db8:200::/56"), CLIENT_LINK_LOCAL, "closed")
    assert ask(srv, request()) is None and srv.get_timer() is None


def test_server_config_defaults_and_limits() -> None:
    assert Dhcpv6ServerConfig().timers == (1800, 2880)
    assert Dhcpv6ServerConfig(preferred_lifetime=0xFFFFFFFF, valid_lifetime=0xFFFFFFFF).timers == (
        0xFFFFFFFF, 0xFFFFFFFF)
    with pytest.raises(ValueError, match="preferred"):
        Dhcpv6ServerConfig(preferred_lifetime=100, valid_lifetime=50)
    with pytest.raises(ValueError, match="T1"):
        Dhcpv6ServerConfig(t1=3000, t2=2000)


# ---- conversations ---------------------------------------------------------------------------


def test_solicit_advertise_request_reply() -> None:
    link = make_link(rapid_commit=False)
    link.run_until(5.0)
    assert conversation(link) == ["SOLICIT", "ADVERTISE", "REQUEST", "REPLY"]
    solicit_message, request_message = dhcp_messages(link, "c2s")
    assert solicit_message.client_id == CLIENT_DUID and solicit_message.server_id is None
    assert solicit_message.ia_pd == (IaPd(1),) and OPTION_DNS_SERVERS in solicit_message.requested_options
    assert solicit_message.elapsed_time == 0 and not solicit_message.rapid_commit
    assert request_message.server_id == SERVER_DUID
    # The offered prefix goes back as a hint.
    assert request_message.ia_pd == (IaPd(1, prefixes=(IaPrefix(DELEGATED_PREFIX, 0, 0),)),)
    reply = dhcp_messages(link, "s2c")[1]
    assert reply.ia_pd == (IaPd(1, 1800, 2880, (IaPrefix(DELEGATED_PREFIX, 3600, 7200),)),)
    assert link.server_events == [PrefixBound(DELEGATED_PREFIX, CLIENT_LINK_LOCAL, CLIENT_DUID, 1, 7200)]
    assert dhcp_events(link) == [PrefixDelegated(DELEGATED_PREFIX, 3600, 7200), DnsServers(DNS, "dhcpv6")]
    assert link.client.state is PdState.BOUND and link.client.server_id == SERVER_DUID
    assert not link.server.dropped and not link.client.dropped


def test_rapid_commit_conversation() -> None:
    link = make_link()
    link.run_until(5.0)
    assert conversation(link) == ["SOLICIT", "REPLY"]
    assert dhcp_messages(link, "c2s")[0].rapid_commit and dhcp_messages(link, "s2c")[0].rapid_commit
    assert link.client.state is PdState.BOUND
    assert link.server_events == [PrefixBound(DELEGATED_PREFIX, CLIENT_LINK_LOCAL, CLIENT_DUID, 1, 7200)]


def test_renew_at_t1_extends_both_sides() -> None:
    link = make_link()
    link.run_until(5.0)
    bound_at = link.now
    link.run_until(1805.0)
    assert conversation(link) == ["SOLICIT", "REPLY", "RENEW", "REPLY"]
    renew = dhcp_messages(link, "c2s")[1]
    assert renew.server_id == SERVER_DUID and renew.elapsed_time == 0
    assert renew.ia_pd == (IaPd(1, prefixes=(IaPrefix(DELEGATED_PREFIX, 0, 0),)),)
    assert link.server.binding is not None and link.server.binding.valid_until is not None
    assert link.server.binding.valid_until > bound_at + 7200
    assert len(link.server_events) == 1  # a renewal is not a new binding
    assert dhcp_events(link)[-1] == PrefixDelegated(DELEGATED_PREFIX, 3600, 7200)
    link.run_until(100_000.0)  # it keeps going
    assert link.client.state is PdState.BOUND and len(link.server_events) == 1
    assert conversation(link).count("RENEW") > 50


def test_release_on_close() -> None:
    link = make_link()
    link.run_until(5.0)
    link.client.close(link.now)
    link.pump()
    assert conversation(link)[-2:] == ["RELEASE", "REPLY"]
    release = dhcp_messages(link, "c2s")[-1]
    assert release.server_id == SERVER_DUID and release.ia_pd[0].prefixes[0].prefix == DELEGATED_PREFIX
    assert dhcp_messages(link, "s2c")[-1].status == Status(StatusCode.SUCCESS)
    assert link.server_events[-1] == PrefixUnbound(DELEGATED_PREFIX, CLIENT_LINK_LOCAL, "released")
    assert dhcp_events(link)[-2:] == [PrefixLost(DELEGATED_PREFIX, "released"), DnsServers((), "dhcpv6")]
    assert link.client.state is PdState.CLOSED and link.client.get_timer() is None
    assert link.server.binding is None and link.server.get_timer() is None


def test_release_unanswered_gives_up_after_rel_max_rc() -> None:
    link = make_link()
    link.run_until(5.0)
    link.server_silent = True
    link.client.close(link.now)
    link.run_until(1000.0)
    assert conversation(link).count("RELEASE") == 4  # REL_MAX_RC
    assert link.client.state is PdState.CLOSED and link.client.get_timer() is None


def test_rebind_moves_the_client_to_a_new_server() -> None:
    link = make_link()
    link.run_until(5.0)
    new_duid = duid_ll(HARDWARE_TYPE_EUI64, bytes.fromhex("00000000000000aa"))
    link.server = Dhcpv6Server(new_duid, SERVER_ID, DELEGATED_PREFIX, DNS)  # same link, new server identity
    link.run_until(3000.0)
    names = conversation(link)
    first_rebind = names.index("REBIND")
    assert names[2:first_rebind] == ["RENEW"] * (first_rebind - 2)  # the new server ignores them all
    assert names[first_rebind + 1] == "REPLY"
    assert link.server.dropped["invalid: RENEW for another server"] == first_rebind - 2
    assert link.client.server_id == new_duid and link.client.state is PdState.BOUND
    bound = PrefixBound(DELEGATED_PREFIX, CLIENT_LINK_LOCAL, CLIENT_DUID, 1, 7200)
    assert link.server_events == [bound, bound]  # one from each server
    assert PrefixLost not in map(type, dhcp_events(link))
    link.run_until(6000.0)  # renewals now go to the new server and are answered
    assert conversation(link)[-2:] == ["RENEW", "REPLY"]
    assert dhcp_messages(link, "c2s")[-1].server_id == new_duid


def test_rebind_to_a_server_with_another_prefix_swaps_prefixes() -> None:
    link = make_link()
    link.run_until(5.0)
    other = IPv6Network("2001:db8:300::/56")
    link.server = Dhcpv6Server(OTHER_DUID, SERVER_ID, other, DNS)
    link.run_until(3000.0)
    events = dhcp_events(link)
    assert PrefixLost(DELEGATED_PREFIX, "withdrawn by the server") in events
    assert PrefixDelegated(other, 3600, 7200) in events
    assert set(link.client.prefixes) == {other}


def test_no_prefix_reported_once_and_solicitation_backs_off() -> None:
    link = make_link(prefix=None)
    link.run_until(20_000.0)
    assert [type(e) for e in dhcp_events(link)].count(PrefixUnavailable) == 1
    unavailable = next(e for e in dhcp_events(link) if isinstance(e, PrefixUnavailable))
    assert unavailable.status.code == StatusCode.NO_PREFIX_AVAIL
    assert link.server_events == [] and link.client.state is PdState.SOLICITING
    solicit_times = [index for index, name in enumerate(conversation(link)) if name == "SOLICIT"]
    # 1, 2, 4 ... 2048, then SOL_MAX_RT 3600 s: about 16 solicitations in 20000 s, not thousands.
    assert 12 <= len(solicit_times) <= 20


def test_solicit_retransmission_timing() -> None:
    link = make_link()
    link.server_silent = True
    times: list[float] = []
    for _ in range(16):
        deadline = link.client.get_timer()
        assert deadline is not None
        link.client.handle_timer(deadline)
        assert len(link.client.packets_to_send()) == 1
        times.append(deadline)
    assert 0 <= times[0] <= 1.0  # SOL_MAX_DELAY
    gaps = [b - a for a, b in pairwise(times)]
    assert 1.0 < gaps[0] <= 1.1  # first RT strictly above IRT (§18.2.1)
    for previous, gap in pairwise(gaps):
        if gap < 3600 * 0.9:
            assert previous * 1.9 <= gap <= previous * 2.1
        else:
            assert 3600 * 0.9 <= gap <= 3600 * 1.1
    assert gaps[-1] >= 3600 * 0.9  # capped at SOL_MAX_RT


def test_request_gives_up_after_req_max_rc_and_solicits_again() -> None:
    link = make_link(rapid_commit=False)
    link.lose = lambda way, packet: way == "s2c" and classify(packet) is LinkPacket.DHCPV6_TO_CLIENT \
        and dhcp_of(packet).type is MessageType.REPLY
    link.run_until(400.0)
    client_names = [message.type.name for message in dhcp_messages(link, "c2s")]
    # Ten Requests (REQ_MAX_RC) go unanswered, then discovery starts over; and again.
    assert client_names[:13] == ["SOLICIT"] + ["REQUEST"] * REQ_MAX_RC + ["SOLICIT", "REQUEST"]
    assert link.client.state is PdState.REQUESTING and link.client.prefixes == {}
    # The server bound the prefix on the first Request; the repeated Requests do not rebind it.
    assert link.server_events == [PrefixBound(DELEGATED_PREFIX, CLIENT_LINK_LOCAL, CLIENT_DUID, 1, 7200)]


def test_server_expires_a_binding_the_client_stops_renewing() -> None:
    link = make_link()
    link.run_until(5.0)
    link.client_silent = True
    link.run_until(8000.0)
    assert link.server_events[-1] == PrefixUnbound(DELEGATED_PREFIX, CLIENT_LINK_LOCAL, "expired")
    assert link.server.binding is None and link.server.get_timer() is None


def test_client_renews_then_rebinds_then_loses_the_prefix_when_the_server_is_gone() -> None:
    link = make_link()
    link.run_until(5.0)
    bound_at = max(at for at, _, packet in link.wire if classify(packet) is LinkPacket.DHCPV6_TO_CLIENT)
    link.server_silent = True
    link.run_until(8000.0)
    sends = [(at, dhcp_of(packet).type.name) for at, way, packet in link.wire
             if way == "c2s" and at > bound_at and classify(packet) is LinkPacket.DHCPV6_TO_SERVER]
    renews = [at for at, name in sends if name == "RENEW"]
    rebinds = [at for at, name in sends if name == "REBIND"]
    assert renews[0] == bound_at + 1800  # T1
    gaps = [b - a for a, b in pairwise(renews)]
    assert REN_TIMEOUT * 0.9 <= gaps[0] <= REN_TIMEOUT * 1.1 and max(gaps) <= REN_MAX_RT * 1.1
    assert max(renews) < bound_at + 2880 == min(rebinds)  # Renew until T2, Rebind from T2 on
    assert max(rebinds) < bound_at + 7200  # until the valid lifetime ends
    lost = [e for e in dhcp_events(link) if isinstance(e, PrefixLost)]
    assert lost == [PrefixLost(DELEGATED_PREFIX, "valid lifetime expired")]
    assert link.client.state is PdState.SOLICITING and link.client.prefixes == {}
    assert sends[-1][1] == "SOLICIT" and sends[-1][0] >= bound_at + 7200


def test_a_reply_for_another_client_or_transaction_is_ignored() -> None:
    link = make_link(rapid_commit=False)
    link.pump()
    link.server_silent = True
    link.run_until(2.0)
    solicit_message = dhcp_messages(link, "c2s")[0]
    advertise = Message(MessageType.ADVERTISE, solicit_message.transaction_id, CLIENT_DUID, SERVER_DUID,
                        ia_pd=(IaPd(1, 10, 20, (IaPrefix(DELEGATED_PREFIX, 30, 60),)),), preference=255)
    foreign = [
        Message(MessageType.ADVERTISE, solicit_message.transaction_id ^ 1, CLIENT_DUID, SERVER_DUID,
                ia_pd=advertise.ia_pd, preference=255),
        Message(MessageType.ADVERTISE, solicit_message.transaction_id, OTHER_DUID, SERVER_DUID,
                ia_pd=advertise.ia_pd, preference=255),
        Message(MessageType.ADVERTISE, solicit_message.transaction_id, CLIENT_DUID, None,
                ia_pd=advertise.ia_pd, preference=255),
        Message(MessageType.REPLY, solicit_message.transaction_id, CLIENT_DUID, SERVER_DUID,
                ia_pd=advertise.ia_pd),  # a Reply to a Solicit needs Rapid Commit
        Message(MessageType.ADVERTISE, solicit_message.transaction_id, CLIENT_DUID, SERVER_DUID,
                ia_pd=(IaPd(1, 30, 20, advertise.ia_pd[0].prefixes),), preference=255),  # T1 > T2
    ]
    for message in foreign:
        packet = build_dhcpv6_packet(SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL, 547, 546, message)
        link.client.receive_packet(packet, link.now)
    assert link.client.state is PdState.SOLICITING and link.client.packets_to_send() == []
    assert sum(link.client.dropped.values()) == 4  # the T1 > T2 advertise is ignored, not malformed
    packet = build_dhcpv6_packet(SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL, 547, 546, advertise)
    link.client.receive_packet(packet, link.now)
    assert link.client.state is PdState.REQUESTING


def test_server_chosen_zero_timers_default_to_half_and_four_fifths() -> None:
    link = make_link(server_config=Dhcpv6ServerConfig(t1=0, t2=0))
    link.run_until(5.0)
    assert dhcp_messages(link, "s2c")[0].ia_pd[0].t1 == 0
    link.run_until(1790.0)
    assert "RENEW" not in conversation(link)
    link.run_until(1810.0)
    assert conversation(link)[-2:] == ["RENEW", "REPLY"]


def test_elapsed_time_counts_hundredths_since_the_first_transmission() -> None:
    link = make_link()
    link.server_silent = True
    link.run_until(8.0)
    messages = dhcp_messages(link, "c2s")
    assert messages[0].elapsed_time == 0
    assert [m.transaction_id for m in messages] == [messages[0].transaction_id] * len(messages)
    elapsed = [m.elapsed_time for m in messages]
    assert elapsed == sorted(elapsed) and elapsed[-1] is not None and 300 <= elapsed[-1] <= 800


def test_struct_sanity_of_build_dhcpv6_packet() -> None:
    packet = build_dhcpv6_packet(CLIENT_LINK_LOCAL, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, 546, 547, solicit())
    assert packet[7] == 1  # hop limit 1 to the link-scoped group
    assert struct.unpack("!HH", packet[40:44]) == (546, 547)
