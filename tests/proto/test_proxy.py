"""PROXY protocol v1/v2 headers: exact byte vectors written from the specification, every refusal,
split feeds, and random or mangled input (only ProtocolError may escape)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpnd.proto.errors import ProtocolError
from vpnd.proto.proxy import (
    MAX_V2_LENGTH,
    V1_MAX_LENGTH,
    Endpoint,
    ProxyCommand,
    ProxyFamily,
    ProxyHeaderReader,
    encode_v1,
    encode_v2,
    parse_proxy_header,
)

SIGNATURE = bytes.fromhex("0D0A0D0A000D0A515549540A")
TLS_START = bytes.fromhex("160301")  # what follows the header: the client's TLS record

# v2, PROXY, TCP over IPv4, 12 address bytes: 192.0.2.10:51234 -> 198.51.100.1:443.
V2_TCP4 = (SIGNATURE + bytes([0x21, 0x11, 0x00, 0x0C])
           + bytes([192, 0, 2, 10]) + bytes([198, 51, 100, 1])
           + bytes.fromhex("C822") + bytes.fromhex("01BB"))
# v2, PROXY, TCP over IPv6, 36 address bytes: [2001:db8::7]:40000 -> [2001:db8::1]:443.
V2_TCP6 = (SIGNATURE + bytes([0x21, 0x21, 0x00, 0x24])
           + bytes.fromhex("20010db8000000000000000000000007")
           + bytes.fromhex("20010db8000000000000000000000001")
           + bytes.fromhex("9C40") + bytes.fromhex("01BB"))
# v2, LOCAL (a health check): family byte and addresses are ignored.
V2_LOCAL = SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])


def test_spec_signature() -> None:
    assert SIGNATURE == b"\r\n\r\n\x00\r\nQUIT\n"


def test_v1_tcp4_exact_line_and_remainder() -> None:
    line = b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n"
    result = parse_proxy_header(line + TLS_START)
    assert result is not None
    header = result.header
    assert (header.version, header.command, header.family) == (1, ProxyCommand.PROXY, ProxyFamily.TCP4)
    assert header.source == Endpoint("192.0.2.10", 51234)
    assert header.destination == Endpoint("198.51.100.1", 443)
    assert header.length == len(line)
    assert result.remainder == TLS_START


def test_v1_tcp6_canonical_address() -> None:
    result = parse_proxy_header(b"PROXY TCP6 2001:DB8:0::7 2001:db8::1 40000 443\r\n")
    assert result is not None
    assert result.header.family is ProxyFamily.TCP6
    assert result.header.source == Endpoint("2001:db8::7", 40000)


def test_v1_unknown_ignores_the_rest() -> None:
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n"):
        result = parse_proxy_header(line + b"x")
        assert result is not None
        assert result.header.family is ProxyFamily.UNSPEC
        assert result.header.source is None and result.header.destination is None
        assert result.remainder == b"x"


def test_v1_longest_line_is_107_bytes() -> None:
    # The spec's worst case: UNKNOWN followed by full-length IPv6 addresses.
    address = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY UNKNOWN {address} {address} 65535 65535\r\n".encode()
    assert len(line) == V1_MAX_LENGTH
    result = parse_proxy_header(line)
    assert result is not None and result.header.length == V1_MAX_LENGTH
    tcp6 = parse_proxy_header(line.replace(b"UNKNOWN", b"TCP6"))
    assert tcp6 is not None and tcp6.header.source == Endpoint(address, 65535)
    with pytest.raises(ProtocolError, match="longer than 107"):
        parse_proxy_header(b"PROXY UNKNOWN " + b"a" * 100)


@pytest.mark.parametrize(("line", "words"), [
    (b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\n", "CRLF"),
    (b"PROXY TCP4  192.0.2.10 198.51.100.1 51234 443\r\n", "single-spaced"),
    (b"PROXY TCP4 192.0.2.10 198.51.100.1 51234\r\n", "two ports"),
    (b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 443\r\n", "not a port"),
    (b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 443\r\n", "not a port"),
    (b"PROXY TCP4 192.0.2.10 198.51.100.1 +5 443\r\n", "not a port"),
    (b"PROXY TCP4 2001:db8::7 198.51.100.1 1 443\r\n", "not an TCP4 address"),
    (b"PROXY TCP6 192.0.2.10 2001:db8::1 1 443\r\n", "not an TCP6 address"),
    (b"PROXY TCP6 fe80::1%eth0 2001:db8::1 1 443\r\n", "not an TCP6 address"),
    (b"PROXY TCP4 192.0.2.010 198.51.100.1 1 443\r\n", "not an TCP4 address"),
    (b"PROXY UDP4 192.0.2.10 198.51.100.1 1 443\r\n", "unknown protocol"),
    (b"PROXY TCP4 192.0.2.\xff 198.51.100.1 1 443\r\n", "not ASCII"),
    (b"proxy TCP4 192.0.2.10 198.51.100.1 1 443\r\n", "not a PROXY"),
    (b"GET / HTTP/1.1\r\n", "not a PROXY"),
    (b"\x16\x03\x01\x02\x00", "not a PROXY"),
])
def test_v1_refusals_say_why(line: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        parse_proxy_header(line)


def test_v2_tcp4_exact_bytes() -> None:
    result = parse_proxy_header(V2_TCP4 + TLS_START)
    assert result is not None
    header = result.header
    assert (header.version, header.command, header.family) == (2, ProxyCommand.PROXY, ProxyFamily.TCP4)
    assert header.source == Endpoint("192.0.2.10", 51234)
    assert header.destination == Endpoint("198.51.100.1", 443)
    assert header.length == 28
    assert result.remainder == TLS_START


def test_v2_tcp6_exact_bytes() -> None:
    result = parse_proxy_header(V2_TCP6)
    assert result is not None
    assert result.header.family is ProxyFamily.TCP6
    assert result.header.source == Endpoint("2001:db8::7", 40000)
    assert result.header.destination == Endpoint("2001:db8::1", 443)
    assert result.header.length == 52 and result.remainder == b""


def test_v2_local_has_no_endpoints() -> None:
    result = parse_proxy_header(V2_LOCAL + TLS_START)
    assert result is not None
    assert result.header.command is ProxyCommand.LOCAL
    assert result.header.source is None and result.remainder == TLS_START
    # LOCAL with an address block (family set): the block is skipped, not read.
    local_with_block = SIGNATURE + bytes([0x20, 0x11, 0x00, 0x0C]) + bytes(12)
    result = parse_proxy_header(local_with_block + b"z")
    assert result is not None and result.header.source is None and result.remainder == b"z"


def test_v2_unspec_family() -> None:
    result = parse_proxy_header(SIGNATURE + bytes([0x21, 0x00, 0x00, 0x03]) + b"abc" + b"rest")
    assert result is not None
    assert result.header.family is ProxyFamily.UNSPEC and result.header.source is None
    assert result.remainder == b"rest"


def test_v2_tlvs_are_skipped() -> None:
    # PP2_TYPE_ALPN (0x01) "h2" and PP2_TYPE_AUTHORITY (0x02) "vpn.example" after the addresses.
    tlvs = bytes([0x01, 0x00, 0x02]) + b"h2" + bytes([0x02, 0x00, 0x0B]) + b"vpn.example"
    block = V2_TCP4[16:] + tlvs
    data = SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block
    result = parse_proxy_header(data + TLS_START)
    assert result is not None
    assert result.header.source == Endpoint("192.0.2.10", 51234)
    assert result.header.length == len(data)
    assert result.remainder == TLS_START


@pytest.mark.parametrize(("data", "words"), [
    (SIGNATURE + bytes([0x11, 0x11, 0x00, 0x0C]) + bytes(12), "version 1 is not 2"),
    (SIGNATURE + bytes([0x22, 0x11, 0x00, 0x0C]) + bytes(12), "unknown command 2"),
    (SIGNATURE + bytes([0x21, 0x12, 0x00, 0x0C]) + bytes(12), "0x12 is not TCP"),  # UDP over IPv4
    (SIGNATURE + bytes([0x21, 0x31, 0x00, 0xD8]) + bytes(216), "0x31 is not TCP"),  # UNIX stream
    (SIGNATURE + bytes([0x21, 0x11, 0x00, 0x08]) + bytes(8), "cannot hold the addresses"),
    (SIGNATURE + bytes([0x21, 0x21, 0x00, 0x0C]) + bytes(12), "cannot hold the addresses"),
    (SIGNATURE + bytes([0x21, 0x11, 0xFF, 0xFF]), "exceeds"),
    (SIGNATURE[:5] + b"X", "not a PROXY"),
])
def test_v2_refusals_say_why(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        parse_proxy_header(data)


def test_v2_limit_is_refused_before_the_block_arrives() -> None:
    reader = ProxyHeaderReader(max_v2_length=64)
    assert reader.feed(SIGNATURE + bytes([0x21, 0x11, 0x00, 64])) is None
    with pytest.raises(ProtocolError, match="exceeds 64"):
        ProxyHeaderReader(max_v2_length=64).feed(SIGNATURE + bytes([0x21, 0x11, 0x00, 65]))


@pytest.mark.parametrize("data", [V2_TCP4, V2_TCP6, V2_LOCAL,
                                  b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n"])
def test_byte_by_byte_feed_needs_exactly_the_header(data: bytes) -> None:
    reader = ProxyHeaderReader()
    for index in range(len(data) - 1):
        assert reader.feed(data[index:index + 1]) is None
    result = reader.feed(data[-1:] + TLS_START)
    assert result is not None
    assert result.header.length == len(data)
    assert result.remainder == TLS_START
    with pytest.raises(RuntimeError):
        reader.feed(b"more")


def test_encoders_round_trip() -> None:
    pairs = [(Endpoint("192.0.2.10", 51234), Endpoint("198.51.100.1", 443)),
             (Endpoint("2001:db8::7", 40000), Endpoint("2001:db8::1", 443))]
    for source, destination in pairs:
        for encoded in (encode_v1(source, destination), encode_v2(source, destination)):
            result = parse_proxy_header(encoded)
            assert result is not None
            assert (result.header.source, result.header.destination) == (source, destination)
    assert encode_v2(*pairs[0]) == V2_TCP4
    assert encode_v2(*pairs[1]) == V2_TCP6
    assert encode_v2(None, None, local=True) == V2_LOCAL
    assert encode_v1(None, None) == b"PROXY UNKNOWN\r\n"


endpoints_v4 = st.builds(lambda a, p: Endpoint(str(IPv4Address(a)), p),
                         st.integers(0, 2**32 - 1), st.integers(0, 65535))
endpoints_v6 = st.builds(lambda a, p: Endpoint(str(IPv6Address(a)), p),
                         st.integers(0, 2**128 - 1), st.integers(0, 65535))


@given(st.one_of(st.tuples(endpoints_v4, endpoints_v4), st.tuples(endpoints_v6, endpoints_v6)),
       st.booleans(), st.binary(max_size=40), st.lists(st.integers(1, 60), max_size=8))
@settings(max_examples=300)
def test_any_endpoints_any_split(pair: tuple[Endpoint, Endpoint], version_two: bool, tail: bytes,
                                 cuts: list[int]) -> None:
    source, destination = pair
    header = encode_v2(source, destination) if version_two else encode_v1(source, destination)
    data = header + tail
    reader = ProxyHeaderReader()
    result = None
    position = 0
    for cut in [*cuts, len(data)]:
        chunk = data[position:position + cut]
        position += len(chunk)
        result = reader.feed(chunk)
        if result is not None:
            break
    assert result is not None
    assert result.header.source == source and result.header.destination == destination
    assert result.header.length == len(header)
    assert header + result.remainder == data[:position]


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_random_bytes_only_protocol_error(data: bytes) -> None:
    try:
        result = parse_proxy_header(data)
    except ProtocolError:
        return
    if result is not None:
        assert result.header.length + len(result.remainder) == len(data)


@given(st.sampled_from([V2_TCP4, V2_TCP6, V2_LOCAL, b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n",
                        b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n"]),
       st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, 60))
@settings(max_examples=500)
def test_mutated_and_truncated_only_protocol_error(valid: bytes, flips: list[tuple[int, int]],
                                                   cut: int) -> None:
    data = bytearray(valid)
    for index, value in flips:
        if index < len(data):
            data[index] = value
    data = data[:max(0, len(data) - cut)] if cut % 3 == 0 else data
    try:
        result = parse_proxy_header(bytes(data), max_v2_length=MAX_V2_LENGTH)
    except ProtocolError:
        return
    if result is not None:
        assert result.header.length <= len(data)
        if result.header.source is not None:
            assert 0 <= result.header.source.port <= 65535
