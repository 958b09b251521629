"""An independent dissector (tshark) reads our ND and DHCPv6 packets as well-formed ICMPv6/DHCPv6.

The packets that crossed the in-memory link between our server and client objects are written as
raw IPv6 into a pcap; tshark must find the router solicitation and advertisements (prefix, flags,
lifetimes, MTU, RDNSS), the neighbor advertisement, and each DHCPv6 message with its IA_PD prefix,
lifetimes and DNS servers — with ICMPv6 and UDP checksums verified good and no expert info at
all (no malformed packet, no bad checksum).
"""

from __future__ import annotations

from pathlib import Path

from tests.support.ipv6_link import (
    CLIENT_DUID,
    CLIENT_LINK_LOCAL,
    DELEGATED_PREFIX,
    DNS,
    LINK_MTU,
    SERVER_LINK_LOCAL,
    SESSION_PREFIX,
    Ipv6Link,
    make_link,
)
from tests.support.pcap import tshark_fields, write_ip_packets
from vpnd.proto.ipv6.dhcpv6 import IaNa, IaPd, Message, MessageType, build_dhcpv6_packet
from vpnd.proto.ipv6.nd import build_neighbor_solicitation
from vpnd.proto.ipv6.packets import ALL_DHCP_RELAY_AGENTS_AND_SERVERS

FIELDS = [
    "frame.number", "ipv6.src", "ipv6.dst", "ipv6.hlim", "_ws.malformed", "_ws.expert",
    "icmpv6.type", "icmpv6.code", "icmpv6.checksum.status",
    "icmpv6.nd.ra.router_lifetime", "icmpv6.nd.ra.flag.m", "icmpv6.nd.ra.flag.o",
    "icmpv6.opt.prefix", "icmpv6.opt.prefix.length", "icmpv6.opt.prefix.flag.l", "icmpv6.opt.prefix.flag.a",
    "icmpv6.opt.prefix.valid_lifetime", "icmpv6.opt.prefix.preferred_lifetime", "icmpv6.opt.mtu",
    "icmpv6.opt.rdnss", "icmpv6.opt.rdnss.lifetime",
    "icmpv6.nd.na.target_address", "icmpv6.nd.na.flag.r", "icmpv6.nd.na.flag.s",
    "udp.srcport", "udp.dstport", "udp.checksum.status",
    "dhcpv6.msgtype", "dhcpv6.option.type", "dhcpv6.iaid", "dhcpv6.iaid.t1", "dhcpv6.iaid.t2",
    "dhcpv6.iaprefix.pref_addr", "dhcpv6.iaprefix.pref_len", "dhcpv6.iaprefix.pref_lifetime",
    "dhcpv6.iaprefix.valid_lifetime", "dhcpv6.dns_server", "dhcpv6.status_code",
    "dhcpv6.duidll.link_layer_addr",
]
Row = dict[str, list[str]]
GOOD = "1"  # checksum status "Good"


def dissect(tmp_path: Path, packets: list[bytes]) -> list[Row]:
    pcap = tmp_path / "ipv6-link.pcap"
    write_ip_packets(pcap, packets)
    rows = tshark_fields(pcap, FIELDS, "-o", "udp.check_checksum:TRUE")
    assert len(rows) == len(packets)
    return rows


def one(row: Row, name: str) -> str:
    [value] = row[name]
    return value


def check_well_formed(rows: list[Row]) -> None:
    for row in rows:
        assert row["_ws.malformed"] == [] and row["_ws.expert"] == [], row
        if row["icmpv6.type"]:
            assert one(row, "icmpv6.checksum.status") == GOOD and one(row, "ipv6.hlim") == "255"
        else:
            assert one(row, "udp.checksum.status") == GOOD


def full_conversation() -> Ipv6Link:
    link = make_link(rapid_commit=False)
    link.server_silent = True  # lose the first advertisement, so that the client solicits
    link.pump()
    link.server_silent = False
    link.run_until(2000.0)  # Solicit/Advertise/Request/Reply, RS/RA, periodic RAs, one Renew/Reply
    link.solicitor.packets_to_send()
    solicitation = build_neighbor_solicitation(CLIENT_LINK_LOCAL, SERVER_LINK_LOCAL, SERVER_LINK_LOCAL)
    link.wire.append((link.now, "c2s", solicitation))
    link.advertiser.receive_packet(solicitation, link.now)
    link.client.close(link.now)  # Release/Reply
    link.advertiser.stop(link.now)  # the final advertisement
    link.pump()
    return link


def test_router_discovery_and_neighbor_advertisement(tmp_path: Path) -> None:
    rows = dissect(tmp_path, [packet for _, _, packet in full_conversation().wire])
    check_well_formed(rows)
    icmp = [row for row in rows if row["icmpv6.type"]]
    solicitations = [row for row in icmp if one(row, "icmpv6.type") == "133"]
    advertisements = [row for row in icmp if one(row, "icmpv6.type") == "134"]
    [neighbor] = [row for row in icmp if one(row, "icmpv6.type") == "136"]
    assert [(one(r, "ipv6.src"), one(r, "ipv6.dst")) for r in solicitations] == [
        (str(CLIENT_LINK_LOCAL), "ff02::2")]
    assert len(advertisements) >= 5
    *periodic, final = advertisements
    assert one(periodic[0], "ipv6.dst") == str(CLIENT_LINK_LOCAL)  # the answer to the solicitation
    assert {one(r, "ipv6.dst") for r in periodic[1:]} == {"ff02::1"}
    for row in periodic:
        assert one(row, "ipv6.src") == str(SERVER_LINK_LOCAL) and one(row, "icmpv6.code") == "0"
        assert one(row, "icmpv6.nd.ra.router_lifetime") == "1800"
        assert (one(row, "icmpv6.nd.ra.flag.m"), one(row, "icmpv6.nd.ra.flag.o")) == ("0", "1")
        assert one(row, "icmpv6.opt.prefix") == str(SESSION_PREFIX.network_address)
        assert one(row, "icmpv6.opt.prefix.length") == "64"
        assert (one(row, "icmpv6.opt.prefix.flag.l"), one(row, "icmpv6.opt.prefix.flag.a")) == ("1", "1")
        assert (one(row, "icmpv6.opt.prefix.valid_lifetime"),
                one(row, "icmpv6.opt.prefix.preferred_lifetime")) == ("86400", "14400")
        assert one(row, "icmpv6.opt.mtu") == str(LINK_MTU)
        assert row["icmpv6.opt.rdnss"] == [str(server) for server in DNS]
        assert one(row, "icmpv6.opt.rdnss.lifetime") == "1800"
    assert one(final, "icmpv6.nd.ra.router_lifetime") == "0"
    assert one(final, "icmpv6.opt.prefix.valid_lifetime") == "0"
    assert one(final, "icmpv6.opt.prefix.preferred_lifetime") == "0"
    assert one(final, "icmpv6.opt.rdnss.lifetime") == "0"
    assert one(neighbor, "icmpv6.nd.na.target_address") == str(SERVER_LINK_LOCAL)
    assert (one(neighbor, "icmpv6.nd.na.flag.r"), one(neighbor, "icmpv6.nd.na.flag.s")) == ("1", "1")


def test_prefix_delegation_messages(tmp_path: Path) -> None:
    rows = [row for row in dissect(tmp_path, [packet for _, _, packet in full_conversation().wire])
            if row["dhcpv6.msgtype"]]
    check_well_formed(rows)
    # Solicit, Advertise, Request, Reply, Renew, Reply, Release, Reply.
    assert [one(row, "dhcpv6.msgtype") for row in rows] == ["1", "2", "3", "7", "5", "7", "8", "7"]
    client_duid_address = CLIENT_DUID[4:].hex()  # the EUI-64 inside our DUID-LL
    for row in rows:
        assert client_duid_address in row["dhcpv6.duidll.link_layer_addr"]
        to_server = one(row, "dhcpv6.msgtype") in ("1", "3", "5", "8")
        ports = ("546", "547") if to_server else ("547", "546")
        assert (one(row, "udp.srcport"), one(row, "udp.dstport")) == ports
    solicit = rows[0]
    assert {"1", "6", "8", "25"} <= set(solicit["dhcpv6.option.type"])  # Client-ID, ORO, Elapsed, IA_PD
    assert "2" not in solicit["dhcpv6.option.type"] and solicit["dhcpv6.iaprefix.pref_addr"] == []
    for row in (rows[1], rows[3], rows[5]):  # Advertise and the Replies that grant the prefix
        assert one(row, "dhcpv6.iaprefix.pref_addr") == str(DELEGATED_PREFIX.network_address)
        assert one(row, "dhcpv6.iaprefix.pref_len") == "56"
        assert (one(row, "dhcpv6.iaprefix.pref_lifetime"), one(row, "dhcpv6.iaprefix.valid_lifetime")) == (
            "3600", "7200")
        assert (one(row, "dhcpv6.iaid.t1"), one(row, "dhcpv6.iaid.t2")) == ("1800", "2880")
        assert row["dhcpv6.dns_server"] == [str(server) for server in DNS]
    assert "7" in rows[1]["dhcpv6.option.type"]  # Preference in the Advertise
    assert one(rows[7], "dhcpv6.status_code") == "0"  # the Release is answered Success


def test_rapid_commit_and_unavailable_statuses(tmp_path: Path) -> None:
    link = make_link()
    link.run_until(5.0)
    rapid = [packet for _, _, packet in link.wire if packet[6] == 17]  # UDP: the DHCPv6 exchange
    no_prefix = make_link(prefix=None)
    solicit = Message(MessageType.SOLICIT, 0x42, CLIENT_DUID, ia_na=(IaNa(5),), ia_pd=(IaPd(1),),
                      elapsed_time=0)
    group = ALL_DHCP_RELAY_AGENTS_AND_SERVERS
    solicit_packet = build_dhcpv6_packet(CLIENT_LINK_LOCAL, group, 546, 547, solicit)
    no_prefix.server.receive_packet(solicit_packet, 1.0)
    packets = [*rapid, solicit_packet, *no_prefix.server.packets_to_send()]
    rows = dissect(tmp_path, packets)
    check_well_formed(rows)
    assert [one(row, "dhcpv6.msgtype") for row in rows] == ["1", "7", "1", "2"]
    assert "14" in rows[0]["dhcpv6.option.type"] and "14" in rows[1]["dhcpv6.option.type"]  # Rapid Commit
    assert one(rows[1], "dhcpv6.iaprefix.pref_addr") == str(DELEGATED_PREFIX.network_address)
    # No prefix and no addresses: NoAddrsAvail (2) in the IA_NA, NoPrefixAvail (6) in the IA_PD.
    assert rows[3]["dhcpv6.status_code"] == ["2", "6"]
    assert rows[3]["dhcpv6.iaprefix.pref_addr"] == []
    assert rows[3]["dhcpv6.dns_server"] == [str(server) for server in DNS]
