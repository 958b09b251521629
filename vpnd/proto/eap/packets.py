"""EAP packet codec (RFC 3748 §4, §5).

``Code(1) Identifier(1) Length(2) [Type(1) Type-Data]``. Request and Response carry a Type;
Success and Failure are exactly four bytes. Octets past ``Length`` are link padding and are
ignored (§4); a ``Length`` beyond the received bytes, or below the minimum for the code, is
refused with a ProtocolError so a state machine can drop the packet silently.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from vpnd.proto.errors import ProtocolError

__all__ = [
    "HEADER_LEN",
    "MAX_PACKET",
    "EapCode",
    "EapPacket",
    "EapType",
    "decode_eap",
    "decode_nak",
    "encode_nak",
]

HEADER_LEN = 4
# Largest EAP packet we build or accept over SSTP: the PPP information field is at most 4087.
MAX_PACKET = 4087


class EapCode(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


class EapType(enum.IntEnum):
    """Method types that vpnd knows by name (IANA EAP registry)."""

    IDENTITY = 1
    NOTIFICATION = 2
    NAK = 3
    MD5_CHALLENGE = 4
    TLS = 13
    PEAP = 25
    MSCHAP_V2 = 26
    EXPANDED = 254


# What logs and `show sessions` call a method.
METHOD_NAMES: dict[int, str] = {
    EapType.MD5_CHALLENGE: "md5",
    EapType.TLS: "tls",
    EapType.PEAP: "peap",
    EapType.MSCHAP_V2: "mschap-v2",
}


def method_name(eap_type: int) -> str:
    return METHOD_NAMES.get(eap_type, f"type-{eap_type}")


@dataclass(frozen=True, slots=True)
class EapPacket:
    code: EapCode
    identifier: int
    type: int | None = None  # Request/Response only
    data: bytes = b""  # Type-Data

    def encode(self) -> bytes:
        if self.code in (EapCode.SUCCESS, EapCode.FAILURE):
            if self.type is not None or self.data:
                raise ValueError("EAP Success/Failure carry no Type or data")
            return struct.pack("!BBH", self.code, self.identifier & 0xFF, HEADER_LEN)
        if self.type is None or not 1 <= self.type <= 255:
            raise ValueError("EAP Request/Response need a Type of 1..255")
        length = HEADER_LEN + 1 + len(self.data)
        if length > MAX_PACKET:
            raise ValueError(f"EAP packet of {length} bytes exceeds {MAX_PACKET}")
        return struct.pack("!BBHB", self.code, self.identifier & 0xFF, length, self.type) + self.data


def decode_eap(packet: bytes | bytearray | memoryview) -> EapPacket:
    """One EAP packet; ProtocolError for an unknown code or a length that does not fit."""
    raw = bytes(packet)
    if len(raw) < HEADER_LEN:
        raise ProtocolError(f"EAP packet of {len(raw)} bytes is shorter than its header")
    code_value, identifier, length = struct.unpack_from("!BBH", raw)
    try:
        code = EapCode(code_value)
    except ValueError:
        raise ProtocolError(f"EAP code {code_value} is unknown") from None
    if length > len(raw):
        raise ProtocolError(f"EAP Length {length} exceeds the {len(raw)} bytes received")
    if code in (EapCode.SUCCESS, EapCode.FAILURE):
        if length != HEADER_LEN:
            raise ProtocolError(f"EAP {code.name.title()} with Length {length}, not 4")
        return EapPacket(code, identifier)
    if length < HEADER_LEN + 1:
        raise ProtocolError(f"EAP {code.name.title()} with Length {length} has no Type")
    return EapPacket(code, identifier, raw[HEADER_LEN], raw[HEADER_LEN + 1 : length])


def decode_nak(data: bytes) -> tuple[int, ...]:
    """Desired types of a legacy Nak (RFC 3748 §5.3.1); 0 alone means "no alternative"."""
    return tuple(t for t in data if t != 0)


def encode_nak(desired: tuple[int, ...]) -> bytes:
    return bytes(desired) if desired else b"\x00"
