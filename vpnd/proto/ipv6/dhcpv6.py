"""DHCPv6 message codec (RFC 8415 §8, §21) for prefix delegation on a PPP link.

Client/server messages only (no relay or Reconfigure messages: the server sits on the link). The
options we use are decoded into fields of `Message`; any other option is kept as raw bytes in
``other`` so that nothing a peer sends is silently reinterpreted. `decode_message` raises
`ProtocolError` on anything truncated, duplicated where the RFC allows one, or out of range.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv6Address, IPv6Network
from uuid import UUID

from vpnd.proto.errors import ProtocolError
from vpnd.proto.ipv6.packets import Bytes, build_udp, parse_ipv6, parse_udp


class MessageType(IntEnum):
    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    INFORMATION_REQUEST = 11


class StatusCode(IntEnum):
    SUCCESS = 0
    UNSPEC_FAIL = 1
    NO_ADDRS_AVAIL = 2
    NO_BINDING = 3
    NOT_ON_LINK = 4
    USE_MULTICAST = 5
    NO_PREFIX_AVAIL = 6


OPTION_CLIENTID = 1
OPTION_SERVERID = 2
OPTION_IA_NA = 3
OPTION_IAADDR = 5
OPTION_ORO = 6
OPTION_PREFERENCE = 7
OPTION_ELAPSED_TIME = 8
OPTION_STATUS_CODE = 13
OPTION_RAPID_COMMIT = 14
OPTION_DNS_SERVERS = 23
OPTION_IA_PD = 25
OPTION_IAPREFIX = 26

DUID_LLT = 1
DUID_EN = 2
DUID_LL = 3
DUID_UUID = 4
HARDWARE_TYPE_EUI64 = 27  # IANA ARP hardware type for a 64-bit identifier
MAX_DUID_LENGTH = 130  # type plus at most 128 bytes (RFC 8415 §11.1)

INFINITY = 0xFFFFFFFF

_OPTION_HEADER = struct.Struct("!HH")
_IA_HEADER = struct.Struct("!III")
_IAADDR_FIXED = struct.Struct("!16sII")
_IAPREFIX_FIXED = struct.Struct("!IIB16s")


def duid_ll(hardware_type: int, link_layer_address: bytes) -> bytes:
    """DUID-LL (RFC 8415 §11.4); with HARDWARE_TYPE_EUI64 an 8-byte identifier serves as address."""
    if not link_layer_address or len(link_layer_address) > MAX_DUID_LENGTH - 4:
        raise ValueError("link-layer address of 1..126 bytes")
    return struct.pack("!HH", DUID_LL, hardware_type) + link_layer_address


def duid_uuid(uuid: UUID) -> bytes:
    """DUID-UUID (RFC 6355): for hosts with a stable UUID and no hardware address to name."""
    return struct.pack("!H", DUID_UUID) + uuid.bytes


@dataclass(frozen=True, slots=True)
class Status:
    code: int
    message: str = ""

    @property
    def success(self) -> bool:
        return self.code == StatusCode.SUCCESS


@dataclass(frozen=True, slots=True)
class IaAddress:
    address: IPv6Address
    preferred_lifetime: int
    valid_lifetime: int
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class IaPrefix:
    prefix: IPv6Network
    preferred_lifetime: int
    valid_lifetime: int
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class IaNa:
    iaid: int
    t1: int = 0
    t2: int = 0
    addresses: tuple[IaAddress, ...] = ()
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class IaPd:
    iaid: int
    t1: int = 0
    t2: int = 0
    prefixes: tuple[IaPrefix, ...] = ()
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One client/server message; empty tuples and None stand for absent options."""

    type: MessageType
    transaction_id: int
    client_id: bytes | None = None
    server_id: bytes | None = None
    ia_na: tuple[IaNa, ...] = ()
    ia_pd: tuple[IaPd, ...] = ()
    status: Status | None = None
    dns_servers: tuple[IPv6Address, ...] = ()
    requested_options: tuple[int, ...] = ()
    preference: int | None = None
    elapsed_time: int | None = None  # hundredths of a second
    rapid_commit: bool = False
    other: tuple[tuple[int, bytes], ...] = ()

    def find_ia_pd(self, iaid: int) -> IaPd | None:
        return next((ia for ia in self.ia_pd if ia.iaid == iaid), None)


# ---- encoding ---------------------------------------------------------------------------------


def _option(code: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"option {code} longer than 65535 bytes")
    return _OPTION_HEADER.pack(code, len(value)) + value


def _status_option(status: Status | None) -> bytes:
    if status is None:
        return b""
    return _option(OPTION_STATUS_CODE, struct.pack("!H", status.code) + status.message.encode())


def _encode_ia_na(ia: IaNa) -> bytes:
    body = bytearray(_IA_HEADER.pack(ia.iaid, ia.t1, ia.t2))
    for entry in ia.addresses:
        fixed = _IAADDR_FIXED.pack(entry.address.packed, entry.preferred_lifetime, entry.valid_lifetime)
        body += _option(OPTION_IAADDR, fixed + _status_option(entry.status))
    body += _status_option(ia.status)
    return _option(OPTION_IA_NA, bytes(body))


def _encode_ia_pd(ia: IaPd) -> bytes:
    body = bytearray(_IA_HEADER.pack(ia.iaid, ia.t1, ia.t2))
    for entry in ia.prefixes:
        fixed = _IAPREFIX_FIXED.pack(entry.preferred_lifetime, entry.valid_lifetime, entry.prefix.prefixlen,
                                     entry.prefix.network_address.packed)
        body += _option(OPTION_IAPREFIX, fixed + _status_option(entry.status))
    body += _status_option(ia.status)
    return _option(OPTION_IA_PD, bytes(body))


def encode_message(message: Message) -> bytes:
    if not 0 <= message.transaction_id <= 0xFFFFFF:
        raise ValueError("transaction id is 24 bits")
    out = bytearray(struct.pack("!I", message.type << 24 | message.transaction_id))
    if message.client_id is not None:
        out += _option(OPTION_CLIENTID, message.client_id)
    if message.server_id is not None:
        out += _option(OPTION_SERVERID, message.server_id)
    for ia_na in message.ia_na:
        out += _encode_ia_na(ia_na)
    for ia_pd in message.ia_pd:
        out += _encode_ia_pd(ia_pd)
    out += _status_option(message.status)
    if message.dns_servers:
        out += _option(OPTION_DNS_SERVERS, b"".join(server.packed for server in message.dns_servers))
    if message.requested_options:
        requested = message.requested_options
        out += _option(OPTION_ORO, struct.pack(f"!{len(requested)}H", *requested))
    if message.preference is not None:
        out += _option(OPTION_PREFERENCE, bytes((message.preference,)))
    if message.elapsed_time is not None:
        out += _option(OPTION_ELAPSED_TIME, struct.pack("!H", message.elapsed_time))
    if message.rapid_commit:
        out += _option(OPTION_RAPID_COMMIT, b"")
    for code, value in message.other:
        out += _option(code, value)
    return bytes(out)


# ---- decoding ---------------------------------------------------------------------------------


def _options(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset < len(data):
        if len(data) - offset < _OPTION_HEADER.size:
            raise ProtocolError("truncated DHCPv6 option header")
        code, length = _OPTION_HEADER.unpack_from(data, offset)
        offset += _OPTION_HEADER.size
        if offset + length > len(data):
            raise ProtocolError(f"DHCPv6 option {code} of {length} bytes runs past its container")
        yield code, data[offset:offset + length]
        offset += length


def _decode_status(value: bytes) -> Status:
    if len(value) < 2:
        raise ProtocolError("status code option shorter than 2 bytes")
    return Status(int.from_bytes(value[:2], "big"), value[2:].decode("utf-8", errors="replace"))


def _decode_duid(value: bytes, what: str) -> bytes:
    if not 3 <= len(value) <= MAX_DUID_LENGTH:
        raise ProtocolError(f"{what} DUID of {len(value)} bytes")
    return value


def _sub_status(current: Status | None, value: bytes) -> Status:
    if current is not None:
        raise ProtocolError("two status code options in one container")
    return _decode_status(value)


def _decode_ia_na(value: bytes) -> IaNa:
    if len(value) < _IA_HEADER.size:
        raise ProtocolError("IA_NA shorter than 12 bytes")
    iaid, t1, t2 = _IA_HEADER.unpack_from(value)
    addresses: list[IaAddress] = []
    status: Status | None = None
    for code, sub in _options(value[_IA_HEADER.size:]):
        if code == OPTION_IAADDR:
            if len(sub) < _IAADDR_FIXED.size:
                raise ProtocolError("IAADDR shorter than 24 bytes")
            raw, preferred, valid = _IAADDR_FIXED.unpack_from(sub)
            address_status: Status | None = None
            for inner_code, inner in _options(sub[_IAADDR_FIXED.size:]):
                if inner_code == OPTION_STATUS_CODE:
                    address_status = _sub_status(address_status, inner)
            addresses.append(IaAddress(IPv6Address(raw), preferred, valid, address_status))
        elif code == OPTION_STATUS_CODE:
            status = _sub_status(status, sub)
    return IaNa(iaid, t1, t2, tuple(addresses), status)


def _decode_ia_pd(value: bytes) -> IaPd:
    if len(value) < _IA_HEADER.size:
        raise ProtocolError("IA_PD shorter than 12 bytes")
    iaid, t1, t2 = _IA_HEADER.unpack_from(value)
    prefixes: list[IaPrefix] = []
    status: Status | None = None
    for code, sub in _options(value[_IA_HEADER.size:]):
        if code == OPTION_IAPREFIX:
            if len(sub) < _IAPREFIX_FIXED.size:
                raise ProtocolError("IAPREFIX shorter than 25 bytes")
            preferred, valid, length, raw = _IAPREFIX_FIXED.unpack_from(sub)
            if length > 128:
                raise ProtocolError(f"IAPREFIX prefix length {length}")
            prefix_status: Status | None = None
            for inner_code, inner in _options(sub[_IAPREFIX_FIXED.size:]):
                if inner_code == OPTION_STATUS_CODE:
                    prefix_status = _sub_status(prefix_status, inner)
            network = IPv6Network((IPv6Address(raw), length), strict=False)
            prefixes.append(IaPrefix(network, preferred, valid, prefix_status))
        elif code == OPTION_STATUS_CODE:
            status = _sub_status(status, sub)
    return IaPd(iaid, t1, t2, tuple(prefixes), status)


_SINGLE_OPTIONS = frozenset({OPTION_CLIENTID, OPTION_SERVERID, OPTION_STATUS_CODE, OPTION_DNS_SERVERS,
                             OPTION_ORO, OPTION_PREFERENCE, OPTION_ELAPSED_TIME, OPTION_RAPID_COMMIT})


def decode_message(data: Bytes) -> Message:
    data = bytes(data)
    if len(data) < 4:
        raise ProtocolError("DHCPv6 message shorter than 4 bytes")
    try:
        message_type = MessageType(data[0])
    except ValueError:
        raise ProtocolError(f"DHCPv6 message type {data[0]} is not one we handle") from None
    seen: set[int] = set()
    client_id: bytes | None = None
    server_id: bytes | None = None
    ia_na: list[IaNa] = []
    ia_pd: list[IaPd] = []
    status: Status | None = None
    dns_servers: tuple[IPv6Address, ...] = ()
    requested: tuple[int, ...] = ()
    preference: int | None = None
    elapsed: int | None = None
    rapid_commit = False
    other: list[tuple[int, bytes]] = []
    for code, value in _options(data[4:]):
        if code in _SINGLE_OPTIONS:
            if code in seen:
                raise ProtocolError(f"DHCPv6 option {code} appears twice")
            seen.add(code)
        if code == OPTION_CLIENTID:
            client_id = _decode_duid(value, "client")
        elif code == OPTION_SERVERID:
            server_id = _decode_duid(value, "server")
        elif code == OPTION_IA_NA:
            ia_na.append(_decode_ia_na(value))
        elif code == OPTION_IA_PD:
            ia_pd.append(_decode_ia_pd(value))
        elif code == OPTION_STATUS_CODE:
            status = _decode_status(value)
        elif code == OPTION_DNS_SERVERS:
            if len(value) % 16:
                raise ProtocolError("DNS servers option not a multiple of 16 bytes")
            dns_servers = tuple(IPv6Address(value[i:i + 16]) for i in range(0, len(value), 16))
        elif code == OPTION_ORO:
            if len(value) % 2:
                raise ProtocolError("option request option of odd length")
            requested = struct.unpack(f"!{len(value) // 2}H", value)
        elif code == OPTION_PREFERENCE:
            if len(value) != 1:
                raise ProtocolError("preference option not 1 byte")
            preference = value[0]
        elif code == OPTION_ELAPSED_TIME:
            if len(value) != 2:
                raise ProtocolError("elapsed time option not 2 bytes")
            elapsed = int.from_bytes(value, "big")
        elif code == OPTION_RAPID_COMMIT:
            if value:
                raise ProtocolError("rapid commit option with a value")
            rapid_commit = True
        else:
            other.append((code, value))
    return Message(message_type, int.from_bytes(data[1:4], "big"), client_id, server_id, tuple(ia_na),
                   tuple(ia_pd), status, dns_servers, requested, preference, elapsed, rapid_commit,
                   tuple(other))


# ---- on the link ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dhcpv6Datagram:
    """A decoded message with the addresses and port it came from (answers go back there)."""

    source: IPv6Address
    destination: IPv6Address
    source_port: int
    message: Message


def parse_dhcpv6_packet(packet: Bytes, destination_port: int) -> Dhcpv6Datagram:
    """An IPv6/UDP packet to ``destination_port`` from a link-local source, and its message."""
    parsed = parse_ipv6(packet)
    datagram = parse_udp(parsed)
    if datagram.destination_port != destination_port:
        raise ProtocolError(f"UDP port {datagram.destination_port}, not {destination_port}")
    if not parsed.source.is_link_local:
        raise ProtocolError(f"DHCPv6 from {parsed.source}, not a link-local address")
    return Dhcpv6Datagram(parsed.source, parsed.destination, datagram.source_port,
                          decode_message(datagram.payload))


def build_dhcpv6_packet(source: IPv6Address, destination: IPv6Address, source_port: int,
                        destination_port: int, message: Message) -> bytes:
    # Hop limit 1 for the link-scoped multicast to servers, as a host's default; replies to a
    # link-local address never leave the link either way.
    hop_limit = 1 if destination.is_multicast else 64
    return build_udp(source, destination, source_port, destination_port, encode_message(message),
                     hop_limit=hop_limit)
