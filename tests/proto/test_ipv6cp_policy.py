"""IPV6CP interface identifier policies: ipv6-interface-id, ipv6-peer-interface-id (random,
calling-sid, ipv4-addr, fixed), ipv6-accept-peer-interface-id and a RADIUS Framed-Interface-Id,
each against a Windows-like peer that follows our Nak, one that insists on its own identifier
and one that drops the option."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest

from tests.proto.test_ppp_link import (
    DNS,
    GATEWAY,
    PASSWORD,
    PEER,
    Wire,
    client_link,
    control_frames,
    events,
    of_type,
    open_windows_lcp,
    pap_request,
    server_link,
)
from vpnd.proto.ppp.auth.types import AuthMethod, AuthRequested
from vpnd.proto.ppp.auth.verify import decide_with_password
from vpnd.proto.ppp.frames import (
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REQUEST,
    PROTO_IPV6CP,
    ControlPacket,
    Option,
    decode_control,
    decode_options,
    encode_frame,
    encode_options,
)
from vpnd.proto.ppp.fsm import State
from vpnd.proto.ppp.ipcp import Ipv4Settings
from vpnd.proto.ppp.ipv6cp import (
    INSIST_AFTER_NAKS,
    Ipv6cp,
    PeerIdSource,
    PeerIdWish,
    PeerInterfaceIdPolicy,
    format_interface_id,
    interface_id_from_calling_sid,
    interface_id_from_ipv4,
    parse_interface_id,
)
from vpnd.proto.ppp.link import Ipv6Opened, PppLink

WINDOWS_ID = bytes.fromhex("5c1d3a7e90b2f468")  # what a Windows client asks for (random, non-zero)
CALLING_SID = "198.51.100.7"
FIXED = bytes.fromhex("0000000000000002")


# --- the identifiers themselves --------------------------------------------------------------------


def test_calling_sid_identifier_is_stable_local_and_follows_the_documented_rule() -> None:
    derived = interface_id_from_calling_sid(CALLING_SID)
    assert derived == interface_id_from_calling_sid(CALLING_SID)
    expected = bytearray(hashlib.sha256(CALLING_SID.encode()).digest()[:8])
    expected[0] &= 0xFD
    assert derived == bytes(expected)
    assert derived[0] & 0x02 == 0 and derived != bytes(8)
    others = {interface_id_from_calling_sid(f"198.51.100.{n}") for n in range(256)}
    assert len(others) == 256 and all(value[0] & 0x02 == 0 for value in others)


def test_ipv4_identifier_is_zero_zero_a_b_c_d() -> None:
    assert interface_id_from_ipv4(PEER) == bytes.fromhex("000000000a080017")
    assert format_interface_id(interface_id_from_ipv4(PEER)) == "0:0:a08:17"
    with pytest.raises(ValueError):
        interface_id_from_ipv4(IPv4Address(0))


def test_config_values_parse() -> None:
    assert parse_interface_id("0:0:0:2") == FIXED
    assert parse_interface_id("211:22FF:fe33:4455") == bytes.fromhex("021122fffe334455")
    assert format_interface_id(bytes.fromhex("021122fffe334455")) == "211:22ff:fe33:4455"
    for bad in ("0:0:0:0", "1:2:3", "1:2:3:4:5", "12345:0:0:1", "g:0:0:1", ""):
        with pytest.raises(ValueError):
            parse_interface_id(bad)
    assert PeerInterfaceIdPolicy.parse("calling-sid") == PeerInterfaceIdPolicy(PeerIdSource.CALLING_SID)
    assert PeerInterfaceIdPolicy.parse("ipv4-addr").source is PeerIdSource.IPV4_ADDR
    assert PeerInterfaceIdPolicy.parse("random").source is PeerIdSource.RANDOM
    assert PeerInterfaceIdPolicy.parse("0:0:0:2") == PeerInterfaceIdPolicy(PeerIdSource.FIXED, FIXED)
    with pytest.raises(ValueError):
        PeerInterfaceIdPolicy(PeerIdSource.FIXED)
    with pytest.raises(ValueError):
        PeerInterfaceIdPolicy(PeerIdSource.RANDOM, FIXED)


# --- a Windows-like peer ------------------------------------------------------------------------


@dataclass
class ScriptedPeer:
    """The client's IPV6CP: asks for `interface_id`, acks our request, and on a Nak either takes
    the suggestion (as RFC 5072 says and Windows does), insists on its own, or drops the option."""

    interface_id: bytes
    on_nak: str = "follows"
    include: bool = True
    identifier: int = 1
    naks: int = 0

    def request(self) -> bytes:
        options = encode_options([Option(1, self.interface_id)]) if self.include else b""
        return encode_frame(PROTO_IPV6CP, ControlPacket(CONFIGURE_REQUEST, self.identifier, options).encode())

    def answer(self, packet: ControlPacket) -> bytes | None:
        if packet.code == CONFIGURE_REQUEST:
            ack = ControlPacket(CONFIGURE_ACK, packet.identifier, packet.data)
            return encode_frame(PROTO_IPV6CP, ack.encode())
        if packet.code != CONFIGURE_NAK:
            return None
        self.naks += 1
        [suggestion] = decode_options(packet.data)
        if self.on_nak == "follows":
            self.interface_id = suggestion.value
        elif self.on_nak == "drops":
            self.include = False
        self.identifier += 1
        return self.request()


def windows_ipv6_server(ipv4: bool = True, **settings: object) -> PppLink:
    """A server link with IPv6 on, walked through Windows' LCP and PAP up to the network phase."""
    link = server_link((AuthMethod.PAP,), ipv4=Ipv4Settings(GATEWAY, PEER, dns=DNS) if ipv4 else None,
                       ipv4_enabled=ipv4, ipv6_enabled=True, **settings)
    open_windows_lcp(link)
    link.receive_frame(pap_request(7), 0.6)
    [requested] = [e for e in events(link) if isinstance(e, AuthRequested)]
    assert isinstance(requested, AuthRequested)
    # Our frames (PAP Ack, IPCP and IPV6CP requests) stay queued for `negotiate`.
    link.decide(decide_with_password(requested.request, PASSWORD), 0.7)
    return link


def negotiate(link: PppLink, peer: ScriptedPeer) -> Ipv6Opened:
    pending = [packet for protocol, packet in control_frames(link) if protocol == PROTO_IPV6CP]
    link.receive_frame(peer.request(), 0.8)
    for _ in range(12):
        pending += [packet for protocol, packet in control_frames(link) if protocol == PROTO_IPV6CP]
        if not pending:
            break
        for packet in pending:
            reply = peer.answer(packet)
            if reply is not None:
                link.receive_frame(reply, 0.9)
        pending = []
    assert link.ipv6cp is not None and link.ipv6cp.state is State.OPENED
    [opened] = [e for e in events(link) if isinstance(e, Ipv6Opened)]
    assert isinstance(opened, Ipv6Opened)
    return opened


def first_nak_of(link: PppLink, peer_id: bytes) -> bytes | None:
    """What the server suggests for `peer_id` (None: acked)."""
    control_frames(link)
    link.receive_frame(ScriptedPeer(peer_id).request(), 0.8)
    [answer] = [packet for protocol, packet in control_frames(link) if protocol == PROTO_IPV6CP]
    if answer.code == CONFIGURE_ACK:
        return None
    assert answer.code == CONFIGURE_NAK
    [option] = decode_options(answer.data)
    return option.value


# --- the policies against each kind of peer -----------------------------------------------------

POLICIES = {
    "none": ({}, None),
    "fixed": ({"ipv6_peer_interface_id": PeerInterfaceIdPolicy.parse("0:0:0:2")}, FIXED),
    "calling-sid": ({"ipv6_peer_interface_id": PeerInterfaceIdPolicy.parse("calling-sid")},
                    interface_id_from_calling_sid(CALLING_SID)),
    "ipv4-addr": ({"ipv6_peer_interface_id": PeerInterfaceIdPolicy.parse("ipv4-addr")},
                  bytes.fromhex("000000000a080017")),
}


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("on_nak", ["follows", "insists", "drops"])
def test_each_policy_converges_with_each_kind_of_peer(policy: str, on_nak: str) -> None:
    settings, wanted = POLICIES[policy]
    link = windows_ipv6_server(**settings)
    link.set_ipv6_peer_facts(calling_station_id=CALLING_SID)
    peer = ScriptedPeer(WINDOWS_ID, on_nak)
    opened = negotiate(link, peer)
    if wanted is None:  # no policy: the peer's own identifier is taken at once (RFC 5072)
        assert (peer.naks, opened.peer_interface_id) == (0, WINDOWS_ID)
    elif on_nak == "follows":
        assert (peer.naks, opened.peer_interface_id) == (1, wanted)
    elif on_nak == "insists":
        assert (peer.naks, opened.peer_interface_id) == (INSIST_AFTER_NAKS, WINDOWS_ID)
    else:  # the peer leaves the option out: asked once to include it, then acked without
        assert peer.naks == 2 and opened.peer_interface_id is None
    assert opened.local_interface_id not in (bytes(8), opened.peer_interface_id)


def test_random_policy_suggests_one_identifier_per_link() -> None:
    link = windows_ipv6_server(ipv6_peer_interface_id=PeerInterfaceIdPolicy.parse("random"))
    peer = ScriptedPeer(WINDOWS_ID, "insists")
    naks: list[bytes] = []
    control_frames(link)
    for _ in range(INSIST_AFTER_NAKS):
        link.receive_frame(peer.request(), 0.8)
        [nak] = [packet for protocol, packet in control_frames(link) if protocol == PROTO_IPV6CP]
        naks.append(decode_options(nak.data)[0].value)
        peer.identifier += 1
    assert naks[0] == naks[1] and naks[0] not in (WINDOWS_ID, bytes(8), link.ipv6cp.local_interface_id)  # type: ignore[union-attr]


def test_accept_flag_takes_the_peers_own_and_steers_only_zero_or_collisions() -> None:
    settings = {"ipv6_peer_interface_id": PeerInterfaceIdPolicy.parse("0:0:0:2"),
                "ipv6_accept_peer_interface_id": True}
    assert first_nak_of(windows_ipv6_server(**settings), WINDOWS_ID) is None
    assert first_nak_of(windows_ipv6_server(**settings), bytes(8)) == FIXED
    colliding = windows_ipv6_server(**settings, ipv6_interface_id=WINDOWS_ID)
    assert first_nak_of(colliding, WINDOWS_ID) == FIXED


def test_local_identifier_is_ours_and_a_colliding_wish_falls_back_to_random() -> None:
    link = windows_ipv6_server(ipv6_interface_id=FIXED,
                               ipv6_peer_interface_id=PeerInterfaceIdPolicy.parse("0:0:0:2"))
    suggested = first_nak_of(link, bytes(8))
    assert link.ipv6cp is not None and link.ipv6cp.local_interface_id == FIXED
    assert suggested not in (None, FIXED, bytes(8))


def test_radius_framed_interface_id_overrides_policy_and_accept_flag() -> None:
    radius_id = bytes.fromhex("021122fffe334455")
    link = windows_ipv6_server(ipv6_peer_interface_id=PeerInterfaceIdPolicy.parse("calling-sid"),
                               ipv6_accept_peer_interface_id=True)
    link.set_ipv6_peer_facts(calling_station_id=CALLING_SID, framed_interface_id=radius_id)
    opened = negotiate(link, ScriptedPeer(WINDOWS_ID))
    assert opened.peer_interface_id == radius_id
    with pytest.raises(ValueError):
        link.set_ipv6_peer_facts(framed_interface_id=bytes(8))


def test_missing_facts_leave_no_preference() -> None:
    # calling-sid never given, and an IPv6-only session has no IPv4 address to derive from.
    for settings, ipv4 in (({"ipv6_peer_interface_id": PeerInterfaceIdPolicy.parse("calling-sid")}, True),
                           ({"ipv6_peer_interface_id": PeerInterfaceIdPolicy.parse("ipv4-addr")}, False)):
        link = windows_ipv6_server(ipv4=ipv4, **settings)
        assert first_nak_of(link, WINDOWS_ID) is None


def test_ipv4_addr_holds_the_peers_request_until_ipam_assigns_the_address() -> None:
    link = server_link((AuthMethod.PAP,), ipv6_enabled=True,
                       ipv6_peer_interface_id=PeerInterfaceIdPolicy.parse("ipv4-addr"))
    open_windows_lcp(link)
    link.receive_frame(pap_request(7), 0.6)
    [requested] = [e for e in events(link) if isinstance(e, AuthRequested)]
    assert isinstance(requested, AuthRequested)
    link.decide(decide_with_password(requested.request, PASSWORD), 0.65)
    ours = [packet for protocol, packet in control_frames(link) if protocol == PROTO_IPV6CP]
    assert [packet.code for packet in ours] == [CONFIGURE_REQUEST]
    peer = ScriptedPeer(WINDOWS_ID)
    link.receive_frame(peer.request(), 0.7)
    assert control_frames(link) == []  # held: the identifier depends on the address to come
    link.assign_ipv4(Ipv4Settings(GATEWAY, IPv4Address("10.8.0.99")), 0.75)
    [nak] = [packet for protocol, packet in control_frames(link) if protocol == PROTO_IPV6CP]
    assert nak.code == CONFIGURE_NAK
    assert decode_options(nak.data) == [Option(1, bytes.fromhex("000000000a080063"))]
    for packet in (*ours, nak):
        reply = peer.answer(packet)
        if reply is not None:
            link.receive_frame(reply, 0.8)
    [ack] = [packet for protocol, packet in control_frames(link) if protocol == PROTO_IPV6CP]
    assert ack.code == CONFIGURE_ACK
    opened = [e for e in events(link) if isinstance(e, Ipv6Opened)]
    assert opened == [Ipv6Opened(opened[0].local_interface_id, bytes.fromhex("000000000a080063"))]


def test_our_client_follows_a_server_policy() -> None:
    policy = PeerInterfaceIdPolicy.parse("ipv4-addr")
    wire = Wire(server_link(ipv6_enabled=True, ipv6_peer_interface_id=policy), client_link(ipv6_enabled=True))
    wire.server.open(0.0)
    wire.client.open(0.0)
    wire.run()
    [server_v6] = of_type(wire.server_events, Ipv6Opened)
    [client_v6] = of_type(wire.client_events, Ipv6Opened)
    assert isinstance(server_v6, Ipv6Opened) and isinstance(client_v6, Ipv6Opened)
    assert server_v6.peer_interface_id == client_v6.local_interface_id == interface_id_from_ipv4(PEER)


# --- the automaton alone ------------------------------------------------------------------------


def test_an_insisting_peer_is_nakd_twice_then_acked() -> None:
    fsm = Ipv6cp(FIXED, peer_id=lambda: PeerIdWish(bytes.fromhex("0000000000000003"), accept_own=False))
    fsm.open(0.0)
    fsm.up(0.0)
    fsm.packets_to_send()
    codes = []
    for identifier in range(1, 5):
        request = ControlPacket(CONFIGURE_REQUEST, identifier, encode_options([Option(1, WINDOWS_ID)]))
        fsm.receive(request.encode(), 0.1)
        codes += [decode_control(p).code for p in fsm.packets_to_send()]
    assert codes == [CONFIGURE_NAK] * INSIST_AFTER_NAKS + [CONFIGURE_ACK] * (4 - INSIST_AFTER_NAKS)
    assert fsm.peer_interface_id == WINDOWS_ID
