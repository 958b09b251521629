"""PPP frame, control packet and option codecs (RFC 1661 §2, §5, §6) for PPP carried in SSTP.

SSTP carries one PPP frame per data packet without HDLC framing: no flags, escaping or FCS.
We always send the address/control bytes FF 03 and a 2-byte protocol; on receive we accept
frames with or without FF 03 and with a compressed 1-byte protocol.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vpnd.proto.errors import ProtocolError

PROTO_IPV4 = 0x0021
PROTO_IPV6 = 0x0057
PROTO_COMPRESSED = 0x00FD
PROTO_IPCP = 0x8021
PROTO_IPV6CP = 0x8057
PROTO_CCP = 0x80FD
PROTO_LCP = 0xC021
PROTO_PAP = 0xC023
PROTO_CHAP = 0xC223
PROTO_EAP = 0xC227

PROTOCOL_NAMES: dict[int, str] = {
    PROTO_IPV4: "IPv4",
    PROTO_IPV6: "IPv6",
    PROTO_COMPRESSED: "compressed datagram",
    PROTO_IPCP: "IPCP",
    PROTO_IPV6CP: "IPV6CP",
    PROTO_CCP: "CCP",
    PROTO_LCP: "LCP",
    PROTO_PAP: "PAP",
    PROTO_CHAP: "CHAP",
    PROTO_EAP: "EAP",
}

# An SSTP packet is at most 4095 bytes with a 4-byte header; FF 03 and the protocol take 4 more.
MAX_SSTP_PPP_FRAME = 4091
MAX_INFORMATION = 4087

CONTROL_HEADER_LEN = 4

# Control packet codes shared by LCP and the NCPs (RFC 1661 §5).
CONFIGURE_REQUEST = 1
CONFIGURE_ACK = 2
CONFIGURE_NAK = 3
CONFIGURE_REJECT = 4
TERMINATE_REQUEST = 5
TERMINATE_ACK = 6
CODE_REJECT = 7
# LCP only.
PROTOCOL_REJECT = 8
ECHO_REQUEST = 9
ECHO_REPLY = 10
DISCARD_REQUEST = 11
IDENTIFICATION = 12  # RFC 1570
TIME_REMAINING = 13  # RFC 1570

_ADDRESS_CONTROL = b"\xff\x03"


def protocol_name(protocol: int) -> str:
    return PROTOCOL_NAMES.get(protocol, f"0x{protocol:04x}")


def is_control_protocol(protocol: int) -> bool:
    """Protocols 0x8000 and above are network/link control; below are data (RFC 1661 §2)."""
    return protocol >= 0x8000


def encode_frame(protocol: int, payload: bytes | bytearray | memoryview) -> bytes:
    """A full PPP frame as sent inside SSTP: FF 03, 16-bit protocol, information."""
    if not 0 <= protocol <= 0xFFFF:
        raise ProtocolError(f"protocol {protocol!r} out of range")
    return _ADDRESS_CONTROL + protocol.to_bytes(2, "big") + bytes(payload)


def decode_frame(frame: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    """Split a PPP frame into (protocol, information).

    FF 03 is optional (ACFC) and the protocol may be one byte (PFC: odd first byte). A valid
    protocol number has an even high byte and an odd low byte (RFC 1661 §2).
    """
    view = memoryview(frame)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    if len(view) >= 2 and view[0] == 0xFF and view[1] == 0x03:
        view = view[2:]
    if len(view) < 1:
        raise ProtocolError("PPP frame without a protocol field")
    first = view[0]
    if first & 1:
        return first, view[1:]
    if len(view) < 2:
        raise ProtocolError("PPP frame truncated in the protocol field")
    second = view[1]
    if not second & 1:
        raise ProtocolError(f"invalid PPP protocol 0x{first:02x}{second:02x} (low byte even)")
    return (first << 8) | second, view[2:]


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """An LCP-like packet: code, identifier, data (length is derived)."""

    code: int
    identifier: int
    data: bytes = b""

    def encode(self) -> bytes:
        length = CONTROL_HEADER_LEN + len(self.data)
        if length > 0xFFFF:
            raise ProtocolError("control packet too long")
        return struct.pack("!BBH", self.code & 0xFF, self.identifier & 0xFF, length) + self.data


def decode_control(packet: bytes | bytearray | memoryview) -> ControlPacket:
    """Decode a control packet; bytes beyond Length are padding and are ignored (RFC 1661 §5)."""
    raw = bytes(packet)
    if len(raw) < CONTROL_HEADER_LEN:
        raise ProtocolError(f"control packet of {len(raw)} bytes is shorter than its header")
    code, identifier, length = struct.unpack_from("!BBH", raw)
    if length < CONTROL_HEADER_LEN:
        raise ProtocolError(f"control packet length {length} is shorter than its header")
    if length > len(raw):
        raise ProtocolError(f"control packet length {length} exceeds the {len(raw)} bytes received")
    return ControlPacket(code, identifier, raw[CONTROL_HEADER_LEN:length])


@dataclass(frozen=True, slots=True)
class Option:
    """A configuration option (type, value); the length byte is derived."""

    type: int
    value: bytes = b""

    def encode(self) -> bytes:
        if len(self.value) > 253:
            raise ProtocolError(f"option {self.type} value too long")
        return bytes((self.type & 0xFF, len(self.value) + 2)) + self.value

    def u16(self) -> int | None:
        return int.from_bytes(self.value, "big") if len(self.value) == 2 else None

    def u32(self) -> int | None:
        return int.from_bytes(self.value, "big") if len(self.value) == 4 else None


def decode_options(data: bytes | bytearray | memoryview) -> list[Option]:
    """Decode a list of options; a length below 2 or past the end raises ProtocolError."""
    raw = bytes(data)
    options: list[Option] = []
    offset = 0
    while offset < len(raw):
        if offset + 2 > len(raw):
            raise ProtocolError("option header truncated")
        kind, length = raw[offset], raw[offset + 1]
        if length < 2:
            raise ProtocolError(f"option {kind} has length {length} (< 2)")
        if offset + length > len(raw):
            raise ProtocolError(f"option {kind} length {length} runs past the packet end")
        options.append(Option(kind, raw[offset + 2 : offset + length]))
        offset += length
    return options


def encode_options(options: list[Option] | tuple[Option, ...]) -> bytes:
    return b"".join(option.encode() for option in options)
