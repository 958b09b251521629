"""Property tests: every decoder either decodes or raises ProtocolError, whatever the bytes; the four
link-service objects never raise on hostile packets and keep working afterwards; encoding then
decoding a DHCPv6 message gives it back."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.ipv6_link import (
    CLIENT_DUID,
    CLIENT_LINK_LOCAL,
    DELEGATED_PREFIX,
    SERVER_DUID,
    SERVER_LINK_LOCAL,
    make_link,
)
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ipv6.dhcpv6 import (
    OPTION_CLIENTID,
    OPTION_DNS_SERVERS,
    OPTION_ELAPSED_TIME,
    OPTION_IA_NA,
    OPTION_IA_PD,
    OPTION_IAADDR,
    OPTION_IAPREFIX,
    OPTION_ORO,
    OPTION_PREFERENCE,
    OPTION_RAPID_COMMIT,
    OPTION_SERVERID,
    OPTION_STATUS_CODE,
    IaPd,
    IaPrefix,
    Message,
    MessageType,
    Status,
    StatusCode,
    build_dhcpv6_packet,
    decode_message,
    encode_message,
    parse_dhcpv6_packet,
)
from vpnd.proto.ipv6.dhcpv6_client import Dhcpv6PdClient, PdState
from vpnd.proto.ipv6.nd import decode_router_advertisement, parse_nd_options
from vpnd.proto.ipv6.packets import (
    ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
    ALL_ROUTERS,
    LinkPacket,
    build_icmpv6,
    build_ipv6,
    build_udp,
    classify,
    parse_icmpv6,
    parse_ipv6,
    parse_udp,
    upper_layer_checksum,
)

OTHER_DUID = b"\x00\x03\x00\x1b" + bytes(7) + b"\xee"
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OBJECT_FUZZ = settings(max_examples=80, deadline=None, database=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decodes_or_protocol_error(decode: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


# ---- raw bytes into every decoder -------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200))
def test_ipv6_icmpv6_udp_decoders(data: bytes) -> None:
    decodes_or_protocol_error(parse_ipv6, data)
    decodes_or_protocol_error(lambda d: parse_icmpv6(parse_ipv6(d)), data)
    decodes_or_protocol_error(lambda d: parse_udp(parse_ipv6(d)), data)
    classify(data)  # never raises, not even ProtocolError


@FUZZ
@given(st.binary(max_size=200))
def test_nd_decoders(data: bytes) -> None:
    decodes_or_protocol_error(parse_nd_options, data)
    decodes_or_protocol_error(decode_router_advertisement, data)


@FUZZ
@given(st.binary(max_size=300))
def test_dhcpv6_decoder(data: bytes) -> None:
    decodes_or_protocol_error(decode_message, data)
    decodes_or_protocol_error(decode_message, b"\x01\x00\x00\x01" + data)  # past the header
    decodes_or_protocol_error(lambda d: parse_dhcpv6_packet(d, 547), data)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


OPTION_CODES = st.sampled_from([OPTION_CLIENTID, OPTION_SERVERID, OPTION_IA_NA, OPTION_IAADDR, OPTION_ORO,
                                OPTION_PREFERENCE, OPTION_ELAPSED_TIME, OPTION_STATUS_CODE,
                                OPTION_RAPID_COMMIT, OPTION_DNS_SERVERS, OPTION_IA_PD, OPTION_IAPREFIX,
                                39, 82])


@st.composite
def option_trees(draw: st.DrawFn, depth: int = 0) -> bytes:
    """Options with plausible codes whose values are raw bytes or, for IAs, more options."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        code = draw(OPTION_CODES)
        if code in (OPTION_IA_NA, OPTION_IA_PD, OPTION_IAPREFIX, OPTION_IAADDR) and depth < 2:
            fixed = draw(st.binary(min_size=0, max_size=30))
            value = fixed + draw(option_trees(depth + 1))
        else:
            value = draw(st.binary(max_size=40))
        if draw(st.booleans()):
            out += _option(code, value)
        else:  # a lying length
            out += struct.pack("!HH", code, draw(st.integers(0, 0xFFFF))) + value
    return out


@FUZZ
@given(st.integers(0, 15), st.binary(min_size=3, max_size=3), option_trees())
def test_dhcpv6_decoder_on_structured_input(message_type: int, transaction_id: bytes, options: bytes) -> None:
    decodes_or_protocol_error(decode_message, bytes([message_type]) + transaction_id + options)


# ---- encode/decode round trip -----------------------------------------------------------------

DUIDS = st.binary(min_size=3, max_size=130)
LIFETIMES = st.integers(0, 0xFFFFFFFF)
STATUSES = st.none() | st.builds(Status, st.integers(0, 0xFFFF), st.text(max_size=20))
PREFIXES = st.builds(lambda raw, length: IPv6Network((IPv6Address(raw), length), strict=False),
                     st.binary(min_size=16, max_size=16), st.integers(0, 128))
IA_PDS = st.builds(IaPd, st.integers(0, 0xFFFFFFFF), LIFETIMES, LIFETIMES,
                   st.lists(st.builds(IaPrefix, PREFIXES, LIFETIMES, LIFETIMES, STATUSES), max_size=3)
                   .map(tuple), STATUSES)
MESSAGES = st.builds(
    Message, st.sampled_from(list(MessageType)), st.integers(0, 0xFFFFFF), st.none() | DUIDS,
    st.none() | DUIDS, st.just(()), st.lists(IA_PDS, max_size=2).map(tuple), STATUSES,
    st.lists(st.builds(IPv6Address, st.binary(min_size=16, max_size=16)), max_size=3).map(tuple),
    st.lists(st.integers(0, 0xFFFF), max_size=4).map(tuple), st.none() | st.integers(0, 255),
    st.none() | st.integers(0, 0xFFFF), st.booleans())


@FUZZ
@given(MESSAGES)
def test_dhcpv6_round_trip(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


# ---- hostile packets into the objects ---------------------------------------------------------


def _valid_link_packets() -> list[bytes]:
    link = make_link(rapid_commit=False)
    link.run_until(4000.0)
    link.client.close(link.now)
    link.pump()
    return [packet for _, _, packet in link.wire]


VALID = _valid_link_packets()


@st.composite
def hostile_packets(draw: st.DrawFn) -> bytes:
    packet = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.integers(0, 3))
        position = draw(st.integers(0, max(len(packet) - 1, 0)))
        if choice == 0 and packet:
            packet[position] ^= 1 << draw(st.integers(0, 7))
        elif choice == 1:
            del packet[position:]
        elif choice == 2:
            packet[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            packet[position:position + 2] = draw(st.binary(min_size=2, max_size=2))
    if draw(st.booleans()):
        # Fix the checksum up so the corruption reaches the message decoders.
        try:
            parsed = parse_ipv6(bytes(packet))
        except ProtocolError:
            return bytes(packet)
        if parsed.next_header == 58 and len(parsed.payload) >= 4:
            return build_icmpv6(parsed.source, parsed.destination, parsed.payload[0], parsed.payload[1],
                                parsed.payload[4:], hop_limit=parsed.hop_limit)
        if parsed.next_header == 17 and len(parsed.payload) >= 8:
            ports = struct.unpack("!HH", parsed.payload[:4])
            return build_udp(parsed.source, parsed.destination, ports[0], ports[1], parsed.payload[8:],
                             hop_limit=parsed.hop_limit)
    return bytes(packet)


@OBJECT_FUZZ
@given(st.lists(st.tuples(hostile_packets(), st.floats(0, 5000)), max_size=12))
def test_objects_survive_hostile_packets_and_keep_working(inputs: list[tuple[bytes, float]]) -> None:
    link = make_link()
    link.run_until(5.0)
    for packet, delay in inputs:
        link.now += delay
        for obj in (link.advertiser, link.server, link.solicitor, link.client):
            obj.receive_packet(packet, link.now)
            obj.receive_packet(memoryview(packet), link.now)
        link.pump()
        link.run_until(link.now)
    # Still working: the advertiser answers a valid solicitation, the server a valid request.
    link.advertiser.receive_packet(build_icmpv6(CLIENT_LINK_LOCAL, ALL_ROUTERS, 133, 0, bytes(4)), link.now)
    assert link.advertiser.get_timer() is not None
    information = Message(MessageType.INFORMATION_REQUEST, 7)
    link.server.receive_packet(build_dhcpv6_packet(CLIENT_LINK_LOCAL, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, 546,
                                                   547, information), link.now)
    [answer] = link.server.packets_to_send()
    assert parse_ipv6(answer).source == SERVER_LINK_LOCAL
    if link.server.binding is not None:
        assert link.server.binding.prefix == DELEGATED_PREFIX


@OBJECT_FUZZ
@given(st.lists(st.tuples(st.sampled_from([58, 17]), st.binary(max_size=120)), max_size=10))
def test_garbage_behind_a_valid_header_is_dropped_and_counted(payloads: list[tuple[int, bytes]]) -> None:
    link = make_link()
    objects = (link.advertiser, link.server, link.solicitor, link.client)
    for next_header, payload in payloads:
        packet = build_ipv6(CLIENT_LINK_LOCAL, ALL_ROUTERS, next_header, payload, hop_limit=255)
        checksum_ok = len(payload) >= 4 and upper_layer_checksum(
            CLIENT_LINK_LOCAL, ALL_ROUTERS, next_header, payload) == 0
        before = [sum(obj.dropped.values()) for obj in objects]
        for obj in objects:
            obj.receive_packet(packet, 1.0)
        after = [sum(obj.dropped.values()) for obj in objects]
        if not checksum_ok:
            assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1, 1]


def _answers(mostly_valid: bool) -> st.SearchStrategy[Message]:
    """Server answers; ``mostly_valid`` keeps them close to acceptable so that the client gets
    bound and reaches Renew, Rebind and Request-after-NoBinding, not just Solicit."""
    def pick(good: object, *bad: object) -> st.SearchStrategy[object]:
        return st.sampled_from([good] * 6 + list(bad)) if mostly_valid else st.sampled_from([good, *bad])
    small = st.sampled_from([0, 5, 10, 20, 30, 60, 0xFFFFFFFF]) if mostly_valid else LIFETIMES
    statuses = st.none() if mostly_valid else STATUSES
    prefixes = st.builds(IaPrefix, pick(DELEGATED_PREFIX, IPv6Network("2001:db8:9::/48")), small, small,
                         statuses | st.sampled_from([None, Status(StatusCode.NO_PREFIX_AVAIL)]))
    ia_status = st.sampled_from([None, None, None, Status(StatusCode.NO_BINDING),
                                 Status(StatusCode.NO_PREFIX_AVAIL), Status(StatusCode.SUCCESS)])
    ia_pds = st.builds(IaPd, pick(1, 2), small, small, st.lists(prefixes, max_size=2).map(tuple), ia_status)
    return st.builds(
        Message, st.sampled_from([MessageType.ADVERTISE, MessageType.REPLY]), st.just(0),
        pick(CLIENT_DUID, None, OTHER_DUID), pick(SERVER_DUID, None, OTHER_DUID), st.just(()),
        st.lists(ia_pds, min_size=mostly_valid, max_size=2).map(tuple),
        st.none() | st.sampled_from([Status(StatusCode.UNSPEC_FAIL), Status(StatusCode.NO_ADDRS_AVAIL)]),
        st.just(()), st.just(()), st.none() | st.sampled_from([0, 255]), st.none(), st.booleans())


ANSWERS = _answers(True) | _answers(False)


def client_in(state: PdState) -> tuple[Dhcpv6PdClient, float]:
    """Our client driven by our server into ``state`` (answers lost where the state needs it)."""
    link = make_link(rapid_commit=False)
    if state is PdState.SOLICITING:
        link.server_silent = True
        link.run_until(2.0)
    elif state is PdState.REQUESTING:
        def replies(way: str, packet: bytes) -> bool:
            return classify(packet) is LinkPacket.DHCPV6_TO_CLIENT and decode_message(packet[48:]).type is \
                MessageType.REPLY
        link.lose = replies
        link.run_until(2.0)
    else:
        link.run_until(5.0)
        link.server_silent = True
        link.run_until({PdState.BOUND: 10.0, PdState.RENEWING: 1820.0, PdState.REBINDING: 2900.0}[state])
    assert link.client.state is state
    link.client.packets_to_send()
    return link.client, link.now


@OBJECT_FUZZ
@given(st.sampled_from([PdState.SOLICITING, PdState.REQUESTING, PdState.BOUND, PdState.RENEWING,
                        PdState.REBINDING]),
       st.lists(st.tuples(ANSWERS, st.sampled_from([0.0, 1.0, 6.0, 11.0, 25.0, 100.0, 3000.0])), max_size=12))
def test_client_survives_any_server_answer_in_every_state(start: PdState,
                                                          answers: list[tuple[Message, float]]) -> None:
    client, now = client_in(start)
    for answer, delay in answers:
        message = replace(answer, transaction_id=client.current_transaction_id or 1)
        packet = build_dhcpv6_packet(SERVER_LINK_LOCAL, CLIENT_LINK_LOCAL, 547, 546, message)
        client.receive_packet(packet, now)
        while client.next_event() is not None:
            pass
        timer = client.get_timer()
        assert timer is None or timer >= now
        now += delay
        client.handle_timer(now)
        client.packets_to_send()
    client.close(now)
    assert client.state in (PdState.RELEASING, PdState.CLOSED)
