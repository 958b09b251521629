"""The PPP link in both roles: phases, gating, Windows' exchanges, teardown, random input."""

from __future__ import annotations

import itertools
import struct
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from vpnd.proto.ppp.auth.factory import make_client_auth, make_server_auth
from vpnd.proto.ppp.auth.types import AuthMethod, AuthRequested, AuthSucceeded
from vpnd.proto.ppp.auth.verify import decide_with_password
from vpnd.proto.ppp.ccp import reject_every_option
from vpnd.proto.ppp.frames import (
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    CONFIGURE_REQUEST,
    ECHO_REQUEST,
    PROTO_CCP,
    PROTO_CHAP,
    PROTO_IPCP,
    PROTO_IPV6CP,
    PROTO_LCP,
    PROTO_PAP,
    PROTOCOL_REJECT,
    TERMINATE_ACK,
    TERMINATE_REQUEST,
    ControlPacket,
    decode_control,
    decode_frame,
    encode_frame,
)
from vpnd.proto.ppp.fsm import State
from vpnd.proto.ppp.ipcp import Ipv4Settings
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import (
    Ipv4AddressNeeded,
    Ipv4Closed,
    Ipv4Opened,
    Ipv6Opened,
    LinkDown,
    LinkEstablished,
    LinkEvent,
    LinkSettings,
    LinkTerminated,
    PeerMessageReceived,
    Phase,
    PppLink,
)

GATEWAY = IPv4Address("10.8.0.1")
PEER = IPv4Address("10.8.0.23")
DNS = (IPv4Address("192.0.2.53"),)
PASSWORD = "correct horse"


def counter_random(start: int):  # type: ignore[no-untyped-def]
    counter = itertools.count(start)

    def random_bytes(n: int) -> bytes:
        return b"".join(struct.pack("!I", next(counter)) for _ in range((n + 3) // 4))[:n]

    return random_bytes


def events(link: PppLink) -> list[LinkEvent]:
    out = []
    while (event := link.next_event()) is not None:
        out.append(event)
    return out


def control_frames(link: PppLink) -> list[tuple[int, ControlPacket]]:
    out = []
    for frame in link.frames_to_send():
        assert frame[:2] == b"\xff\x03"
        protocol, info = decode_frame(frame)
        out.append((protocol, decode_control(info)))
    return out


def server_link(methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAP_V2,), **kwargs: object) -> PppLink:
    settings = LinkSettings(lcp=LcpSettings(auth_methods=methods, echo_interval=0), **kwargs)  # type: ignore[arg-type]
    return PppLink("server", settings, lambda m: make_server_auth(m, random_bytes=counter_random(50)),
                   random_bytes=counter_random(0xA1B2C3D4))


def client_link(methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAP_V2,), password: str = PASSWORD,
                **kwargs: object) -> PppLink:
    settings = LinkSettings(lcp=LcpSettings(auth_methods=methods, echo_interval=0), **kwargs)  # type: ignore[arg-type]
    return PppLink(
        "client",
        settings,
        lambda m: make_client_auth(m, username="alice", password=password, random_bytes=counter_random(90)),
        random_bytes=counter_random(0x5000),
    )


class Wire:
    """Two links back to back; the runtime part (verifier, IPAM) is played here."""

    def __init__(self, server: PppLink, client: PppLink) -> None:
        self.server, self.client = server, client
        self.server_events: list[LinkEvent] = []
        self.client_events: list[LinkEvent] = []
        self.now = 0.0

    def run(self, rounds: int = 60) -> None:
        for _ in range(rounds):
            moved = False
            for source, sink in ((self.server, self.client), (self.client, self.server)):
                for frame in source.frames_to_send():
                    sink.receive_frame(frame, self.now)
                    moved = True
            for event in events(self.server):
                moved = True
                self.server_events.append(event)
                if isinstance(event, AuthRequested):
                    self.server.decide(decide_with_password(event.request, PASSWORD), self.now)
                elif isinstance(event, Ipv4AddressNeeded):
                    self.server.assign_ipv4(Ipv4Settings(GATEWAY, PEER, dns=DNS), self.now)
            self.client_events.extend(events(self.client))
            if not moved:
                return


def of_type(items: list[LinkEvent], kind: type) -> list[LinkEvent]:
    return [item for item in items if isinstance(item, kind)]


def test_server_and_client_back_to_back_reach_ipv4_and_ipv6() -> None:
    wire = Wire(server_link(ipv6_enabled=True), client_link(ipv6_enabled=True))
    wire.server.open(0.0)
    wire.client.open(0.0)
    wire.run()
    assert wire.server.phase is Phase.NETWORK and wire.client.phase is Phase.NETWORK
    [established] = of_type(wire.server_events, LinkEstablished)
    assert established == LinkEstablished(AuthMethod.MSCHAP_V2, 1452, 1452)
    [succeeded] = of_type(wire.server_events, AuthSucceeded)
    assert succeeded.username == "alice" and succeeded.keys is not None
    [client_success] = of_type(wire.client_events, AuthSucceeded)
    assert client_success.keys is not None
    assert client_success.keys.send_key == succeeded.keys.recv_key
    assert of_type(wire.server_events, Ipv4Opened) == [Ipv4Opened(GATEWAY, PEER, DNS)]
    assert of_type(wire.client_events, Ipv4Opened) == [Ipv4Opened(PEER, GATEWAY, DNS)]
    [server_v6] = of_type(wire.server_events, Ipv6Opened)
    [client_v6] = of_type(wire.client_events, Ipv6Opened)
    assert isinstance(server_v6, Ipv6Opened) and isinstance(client_v6, Ipv6Opened)
    assert server_v6.peer_interface_id == client_v6.local_interface_id
    assert client_v6.peer_interface_id == server_v6.local_interface_id
    # Order on the server: established → auth → address → IPCP up.
    kinds = [type(e).__name__ for e in wire.server_events]
    assert kinds.index("LinkEstablished") < kinds.index("AuthRequested") < kinds.index("AuthSucceeded")
    assert kinds.index("AuthSucceeded") < kinds.index("Ipv4AddressNeeded") < kinds.index("Ipv4Opened")

    # Orderly teardown from the client.
    wire.client.close(wire.now, "user hang-up")
    wire.run()
    assert of_type(wire.client_events, LinkDown) == [LinkDown("user hang-up")]
    assert of_type(wire.client_events, LinkTerminated) == [LinkTerminated("user hang-up")]
    assert of_type(wire.server_events, LinkDown) == [LinkDown("peer sent Terminate-Request")]
    assert wire.client.terminated and wire.client.get_timer() is None
    # The server waits one restart interval in Stopping, then finishes.
    deadline = wire.server.get_timer()
    assert deadline == 3.0
    wire.server.handle_timer(deadline)
    assert of_type(events(wire.server), LinkTerminated)
    assert wire.server.phase is Phase.DEAD


def test_back_to_back_with_pap_chap_walk() -> None:
    wire = Wire(
        server_link((AuthMethod.PAP, AuthMethod.CHAP_MD5)),
        client_link((AuthMethod.CHAP_MD5,)),
    )
    wire.server.open(0.0)
    wire.client.open(0.0)
    wire.run()
    assert wire.server.auth_method is AuthMethod.CHAP_MD5
    assert of_type(wire.client_events, Ipv4Opened) == [Ipv4Opened(PEER, GATEWAY, DNS)]


def test_wrong_password_fails_and_terminates() -> None:
    wire = Wire(server_link(), client_link(password="wrong"))
    wire.server.open(0.0)
    wire.client.open(0.0)
    wire.run()
    [down] = of_type(wire.server_events, LinkDown)
    assert isinstance(down, LinkDown) and down.reason.startswith("authentication failed")
    assert of_type(wire.server_events, Ipv4Opened) == []
    assert wire.server.terminated or wire.server.lcp.state is State.CLOSING


def windows_pap_server() -> PppLink:
    return server_link((AuthMethod.PAP,), ipv4=Ipv4Settings(GATEWAY, PEER, dns=DNS))


def lcp_frame(hex_packet: str) -> bytes:
    return bytes.fromhex("ff03c021" + hex_packet)


def pap_request(identifier: int) -> bytes:
    """A PAP Authenticate-Request for alice / PASSWORD, as Windows sends it."""
    body = bytes([5]) + b"alice" + bytes([len(PASSWORD)]) + PASSWORD.encode()
    return encode_frame(PROTO_PAP, bytes([1, identifier, 0, 4 + len(body)]) + body)


def open_windows_lcp(link: PppLink) -> None:
    """The Windows 10 LCP exchange of the fact sheet, §6.2, through the whole link."""
    link.open(0.0)
    [ours] = link.frames_to_send()
    assert ours == bytes.fromhex("ff03c021" "01010012" "0304c023" "010405ac" "0506a1b2c3d4")
    link.receive_frame(lcp_frame("01000015" "01040ffb" "0506345f64ca" "0702" "0802" "0d0306"), 0.1)
    assert link.frames_to_send() == [lcp_frame("0400000b" "0702" "0802" "0d0306")]
    link.receive_frame(lcp_frame("0101000e" "01040ffb" "0506345f64ca"), 0.2)
    assert link.frames_to_send() == [lcp_frame("03010008" "010405ac")]
    link.receive_frame(lcp_frame("0102000e" "010405ac" "0506345f64ca"), 0.3)
    assert link.frames_to_send() == [lcp_frame("0202000e" "010405ac" "0506345f64ca")]
    # Nothing but LCP has been sent so far; Windows acks our request.
    link.receive_frame(ours[:4] + b"\x02" + ours[5:], 0.4)
    assert link.phase is Phase.AUTHENTICATE


def test_windows_pap_session_byte_exact() -> None:
    link = windows_pap_server()
    open_windows_lcp(link)
    assert events(link) == [LinkEstablished(AuthMethod.PAP, 1452, 1452)]
    link.receive_frame(lcp_frame("0c030012345f64ca") + b"MSRASV5.20", 0.5)
    assert events(link) == [PeerMessageReceived(12, "MSRASV5.20")]
    assert link.frames_to_send() == []
    # PAP Authenticate-Request "alice" / PASSWORD.
    link.receive_frame(pap_request(7), 0.6)
    [requested] = events(link)
    assert isinstance(requested, AuthRequested)
    link.decide(decide_with_password(requested.request, PASSWORD), 0.7)
    # PAP Ack, then at once our IPCP Configure-Request (the address is known up front).
    ack, ipcp_request = link.frames_to_send()
    assert ack[:4] == bytes.fromhex("ff03c023") and ack[4] == 2 and ack[5] == 7
    assert ipcp_request[:4] == bytes.fromhex("ff038021")
    server_request = decode_control(ipcp_request[4:])
    assert (server_request.code, server_request.data) == (CONFIGURE_REQUEST, bytes.fromhex("03060a080001"))
    # Windows: IPV6CP (IPv6 disabled here) and IPCP with five options.
    ipv6cp = bytes.fromhex("0101000e010a1122334455667788")
    link.receive_frame(encode_frame(PROTO_IPV6CP, ipv6cp), 0.8)
    [(protocol, reject)] = control_frames(link)
    assert protocol == PROTO_LCP and reject.code == PROTOCOL_REJECT
    assert reject.data == b"\x80\x57" + ipv6cp
    five = "030600000000" "810600000000" "820600000000" "830600000000" "840600000000"
    link.receive_frame(encode_frame(PROTO_IPCP, bytes.fromhex("0101" "0022" + five)), 0.9)
    [(protocol, reject)] = control_frames(link)
    assert (protocol, reject.code) == (PROTO_IPCP, CONFIGURE_REJECT)
    assert reject.data == bytes.fromhex("820600000000" "830600000000" "840600000000")
    # One DNS server configured: secondary DNS and both WINS were rejected; Windows drops them.
    retry = bytes.fromhex("0102" "0010" "030600000000" "810600000000")
    link.receive_frame(encode_frame(PROTO_IPCP, retry), 1.0)
    [(_, nak)] = control_frames(link)
    assert nak.code == CONFIGURE_NAK and nak.data == bytes.fromhex("03060a080017" "8106c0000235")
    # Windows re-asks with the Nak'd values and acks our request.
    final = bytes.fromhex("03060a080017" "8106c0000235")
    link.receive_frame(encode_frame(PROTO_IPCP, ControlPacket(CONFIGURE_REQUEST, 3, final).encode()), 1.1)
    ack_ours = ControlPacket(CONFIGURE_ACK, server_request.identifier, server_request.data).encode()
    link.receive_frame(encode_frame(PROTO_IPCP, ack_ours), 1.2)
    [(_, ack)] = control_frames(link)
    assert ack.code == CONFIGURE_ACK
    assert events(link)[-1] == Ipv4Opened(GATEWAY, PEER, DNS)


def test_chap_challenge_waits_for_lcp_opened_in_both_directions() -> None:
    link = server_link((AuthMethod.MSCHAP_V2,))
    link.open(0.0)
    [ours] = link.frames_to_send()
    # The peer's request is acked, ours is not yet: no Challenge may leave.
    link.receive_frame(lcp_frame("0100000e" "010405ac" "0506345f64ca"), 0.1)
    assert [p for p, _ in control_frames(link)] == [PROTO_LCP]
    link.receive_frame(ours[:4] + b"\x02" + ours[5:], 0.2)
    frames = control_frames(link)
    assert [p for p, _ in frames] == [PROTO_CHAP]
    assert frames[0][1].code == 1  # Challenge


def test_non_lcp_before_lcp_opened_is_discarded() -> None:
    link = server_link()
    link.open(0.0)
    link.frames_to_send()
    for protocol in (PROTO_IPCP, PROTO_CHAP, 0x1234, PROTO_CCP):
        link.receive_frame(encode_frame(protocol, bytes.fromhex("01010004")), 0.1)
    assert link.frames_to_send() == []
    assert events(link) == []


def test_ncp_during_authentication_is_discarded_and_unknown_protocols_rejected() -> None:
    link = windows_pap_server()
    open_windows_lcp(link)
    events(link)
    link.receive_frame(encode_frame(PROTO_IPCP, bytes.fromhex("01010004")), 0.5)
    assert link.frames_to_send() == []
    link.receive_frame(encode_frame(0x4021, b"\x01\x02"), 0.5)  # like pppd: discarded until Network
    assert link.frames_to_send() == []
    link.receive_frame(encode_frame(PROTO_CHAP, b"\x01\x02\x00\x04"), 0.5)  # not negotiated
    [(protocol, reject)] = control_frames(link)
    assert (protocol, reject.code, reject.data) == (PROTO_LCP, PROTOCOL_REJECT, b"\xc2\x23\x01\x02\x00\x04")


def enter_network_without_address() -> PppLink:
    link = server_link((AuthMethod.PAP,))
    open_windows_lcp(link)
    link.receive_frame(pap_request(1), 0.6)
    [requested] = events(link)[-1:]
    assert isinstance(requested, AuthRequested)
    link.decide(decide_with_password(requested.request, PASSWORD), 0.7)
    link.frames_to_send()
    return link


def test_ipcp_held_until_address_is_assigned() -> None:
    link = enter_network_without_address()
    assert Ipv4AddressNeeded() in events(link)
    link.receive_frame(encode_frame(PROTO_IPCP, bytes.fromhex("0105000a030600000000")), 0.8)
    assert link.frames_to_send() == []  # no Nak with a made-up address
    link.assign_ipv4(Ipv4Settings(GATEWAY, PEER), 0.9)
    frames = control_frames(link)
    assert [(p, c.code) for p, c in frames] == [(PROTO_IPCP, CONFIGURE_REQUEST), (PROTO_IPCP, CONFIGURE_NAK)]
    assert frames[1][1].identifier == 5
    assert frames[1][1].data == bytes.fromhex("03060a080017")


def test_ccp_and_unknown_protocols_rejected_in_network_phase() -> None:
    link = enter_network_without_address()
    link.receive_frame(encode_frame(PROTO_CCP, bytes.fromhex("01010008" "12060100")), 0.8)
    [(_, reject)] = control_frames(link)
    assert reject.code == PROTOCOL_REJECT and reject.data[:2] == b"\x80\xfd"
    link.receive_frame(encode_frame(0x4021, b"\x01\x02"), 0.9)  # unknown protocol in Network
    [(_, reject)] = control_frames(link)
    assert reject.code == PROTOCOL_REJECT and reject.data == b"\x40\x21\x01\x02"


def test_ccp_enabled_opens_empty_and_peer_rejections_stop_single_ncps() -> None:
    both = Wire(
        server_link(ccp_policy=reject_every_option, ipv6_enabled=True),
        client_link(ccp_policy=reject_every_option),
    )
    both.server.open(0.0)
    both.client.open(0.0)
    both.run()
    assert both.server.ccp is not None and both.server.ccp.state is State.OPENED
    assert both.client.ccp is not None and both.client.ccp.state is State.OPENED
    # The client has IPv6 disabled: it Protocol-Rejected IPV6CP; IPv4 still runs.
    assert both.server.ipv6cp is not None and both.server.ipv6cp.state is State.STOPPED
    assert of_type(both.server_events, Ipv4Opened)
    assert both.server.phase is Phase.NETWORK

    only_server = Wire(server_link(ccp_policy=reject_every_option), client_link())
    only_server.server.open(0.0)
    only_server.client.open(0.0)
    only_server.run()
    assert only_server.server.ccp is not None and only_server.server.ccp.state is State.STOPPED
    assert only_server.server.phase is Phase.NETWORK


def test_no_network_protocol_left_closes_the_link() -> None:
    wire = Wire(server_link(), client_link(ipv4_enabled=False))
    wire.server.open(0.0)
    wire.client.open(0.0)
    wire.run()
    [down] = of_type(wire.server_events, LinkDown)
    assert isinstance(down, LinkDown) and down.reason.startswith("no network protocols running")


def opened_session(**kwargs: object) -> Wire:
    server = PppLink(
        "server",
        LinkSettings(lcp=LcpSettings(**kwargs), ipv4=Ipv4Settings(GATEWAY, PEER)),  # type: ignore[arg-type]
        random_bytes=counter_random(1),
    )
    client = PppLink("client", LinkSettings(lcp=LcpSettings(echo_interval=0)), random_bytes=counter_random(9))
    wire = Wire(server, client)
    server.open(0.0)
    client.open(0.0)
    wire.run()
    assert of_type(wire.server_events, Ipv4Opened)
    return wire


def test_lcp_echo_failure_takes_the_link_down() -> None:
    wire = opened_session(echo_interval=30, echo_failure=3)
    server = wire.server
    echoes = 0
    terminate_requests = 0
    reasons: list[LinkEvent] = []
    while not server.terminated:
        deadline = server.get_timer()
        assert deadline is not None
        server.handle_timer(deadline)
        for _, packet in control_frames(server):  # the peer is gone: nothing is answered
            echoes += packet.code == ECHO_REQUEST
            terminate_requests += packet.code == TERMINATE_REQUEST
        reasons.extend(events(server))
    assert echoes == 3
    assert terminate_requests == 2
    assert reasons[0] == LinkDown("LCP echo timeout (3 unanswered)")
    assert reasons[-1] == LinkTerminated("LCP echo timeout (3 unanswered)")


def test_answered_echoes_keep_the_link() -> None:
    wire = opened_session(echo_interval=30, echo_failure=2)
    for tick in range(1, 6):
        wire.now = 30.0 * tick
        wire.server.handle_timer(wire.now)
        wire.run()
    assert wire.server.phase is Phase.NETWORK
    assert not of_type(wire.server_events, LinkDown)


def test_peer_terminate_request() -> None:
    wire = opened_session(echo_interval=0)
    server = wire.server
    server.receive_frame(lcp_frame("05630004"), 10.0)
    frames = control_frames(server)
    assert [(p, c.code, c.identifier) for p, c in frames] == [(PROTO_LCP, TERMINATE_ACK, 0x63)]
    got = events(server)
    assert LinkDown("peer sent Terminate-Request") in got
    assert server.phase is Phase.TERMINATE
    server.handle_timer(13.0)
    assert events(server) == [LinkTerminated("peer sent Terminate-Request")]
    server.receive_frame(lcp_frame("01010004"), 14.0)
    assert server.frames_to_send() == []


def test_lower_layer_down_ends_everything() -> None:
    wire = opened_session(echo_interval=0)
    wire.server.lower_layer_down(5.0)
    assert events(wire.server) == [
        LinkDown("lower layer down"),
        Ipv4Closed("lower layer down"),
        LinkTerminated("lower layer down"),
    ]
    assert wire.server.frames_to_send() == []
    assert wire.server.get_timer() is None


def test_close_before_open_terminates_at_once() -> None:
    link = server_link()
    link.close(0.0, "admin")
    assert events(link) == [LinkDown("admin"), LinkTerminated("admin")]


def phase_link(phase: int) -> PppLink:
    if phase == 0:
        link = server_link((AuthMethod.PAP,), ipv6_enabled=True)
        link.open(0.0)
        return link
    if phase == 1:
        link = windows_pap_server()
        open_windows_lcp(link)
        return link
    if phase == 2:
        return enter_network_without_address()
    wire = opened_session(echo_interval=5)
    return wire.client if phase == 3 else wire.server


protocols = st.sampled_from([PROTO_LCP, PROTO_PAP, PROTO_CHAP, PROTO_IPCP, PROTO_IPV6CP, PROTO_CCP, 0x0021,
                             0x0057, 0x4021, 0xC027])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 4),
    st.lists(
        st.one_of(
            st.binary(max_size=30),
            st.tuples(protocols, st.integers(1, 16), st.integers(0, 255), st.binary(max_size=24)).map(
                lambda t: encode_frame(t[0], ControlPacket(t[1], t[2], t[3]).encode())
            ),
        ),
        max_size=25,
    ),
)
def test_links_never_raise_on_random_frames(phase: int, frames: list[bytes]) -> None:
    link = phase_link(phase)
    now = 1.0
    for frame in frames:
        link.receive_frame(frame, now)
        now += 0.9
        deadline = link.get_timer()
        if deadline is not None and deadline <= now:
            link.handle_timer(now)
        for out in link.frames_to_send():
            assert out[:2] == b"\xff\x03"
            assert len(out) <= 4091
        events(link)
