"""MS-SSTP packet codec: header, control messages, attributes (MS-SSTP §2.2).

Encoders build the exact bytes of the spec layouts; ``decode_control`` turns one whole control
packet into a ``ControlMessage`` and raises only ``ProtocolError``. No packet produced here is
longer than 4095 bytes, the largest length the 12-bit field can carry.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from vpnd.proto.errors import ProtocolError

SSTP_VERSION = 0x10
HEADER_LENGTH = 4
MAX_PACKET_LENGTH = 4095
MAX_PAYLOAD_LENGTH = MAX_PACKET_LENGTH - HEADER_LENGTH  # 4091: one whole PPP frame
LENGTH_MASK = 0x0FFF  # the 4 high bits of every length field are reserved (R) and ignored
CONTROL_BIT = 0x01
ENCAPSULATED_PROTOCOL_PPP = 0x0001
NONCE_LENGTH = 32
MAX_STATUS_VALUE_LENGTH = 64  # AttribValue of a Status Info carries at most the first 64 bytes

CALL_CONNECTED_LENGTH = 112
CRYPTO_BINDING_ATTRIBUTE_LENGTH = 104
CRYPTO_BINDING_REQUEST_ATTRIBUTE_LENGTH = 40
# Offsets inside the 112-byte Call Connected packet.
CALL_CONNECTED_HASH_PROTOCOL_OFFSET = 15
CALL_CONNECTED_NONCE_OFFSET = 16
CALL_CONNECTED_CERT_HASH_OFFSET = 48
CALL_CONNECTED_MAC_OFFSET = 80
HASH_FIELD_LENGTH = 32  # cert hash and compound MAC fields, zero-padded for SHA1


class MessageType(enum.IntEnum):
    CALL_CONNECT_REQUEST = 0x0001
    CALL_CONNECT_ACK = 0x0002
    CALL_CONNECT_NAK = 0x0003
    CALL_CONNECTED = 0x0004
    CALL_ABORT = 0x0005
    CALL_DISCONNECT = 0x0006
    CALL_DISCONNECT_ACK = 0x0007
    ECHO_REQUEST = 0x0008
    ECHO_RESPONSE = 0x0009


class AttributeId(enum.IntEnum):
    NO_ERROR = 0x00  # only used as the AttribID inside a Status Info
    ENCAPSULATED_PROTOCOL_ID = 0x01
    STATUS_INFO = 0x02
    CRYPTO_BINDING = 0x03
    CRYPTO_BINDING_REQ = 0x04


class Status(enum.IntEnum):
    NO_ERROR = 0x00000000
    DUPLICATE_ATTRIBUTE = 0x00000001
    UNRECOGNIZED_ATTRIBUTE = 0x00000002
    INVALID_ATTRIB_VALUE_LENGTH = 0x00000003
    VALUE_NOT_SUPPORTED = 0x00000004
    UNACCEPTED_FRAME_RECEIVED = 0x00000005
    RETRY_COUNT_EXCEEDED = 0x00000006
    INVALID_FRAME_RECEIVED = 0x00000007
    NEGOTIATION_TIMEOUT = 0x00000008
    ATTRIB_NOT_SUPPORTED_IN_MSG = 0x00000009
    REQUIRED_ATTRIBUTE_MISSING = 0x0000000A
    STATUS_INFO_NOT_SUPPORTED_IN_MSG = 0x0000000B


class HashProtocol(enum.IntEnum):
    """Certificate hash / HMAC algorithm of the crypto binding (also the bit in the ACK bitmask)."""

    SHA1 = 0x01
    SHA256 = 0x02

    @property
    def digest_size(self) -> int:
        return 20 if self is HashProtocol.SHA1 else 32


@dataclass(frozen=True, slots=True)
class Attribute:
    attribute_id: int  # an AttributeId value, or whatever unknown number the peer sent
    value: bytes


@dataclass(frozen=True, slots=True)
class ControlMessage:
    message_type: int  # a MessageType value, or an unknown number the peer sent
    attributes: list[Attribute]


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """Value of a Status Info attribute: which attribute had which problem."""

    attrib_id: int
    status: int
    value: bytes = b""


# ---------------------------------------------------------------------------------------------
# Encoders


def encode_header(total_length: int, *, control: bool) -> bytes:
    if not HEADER_LENGTH <= total_length <= MAX_PACKET_LENGTH:
        raise ValueError(f"SSTP packet length {total_length} outside 4..4095")
    return struct.pack("!BBH", SSTP_VERSION, CONTROL_BIT if control else 0, total_length)


def encode_data_header(length: int) -> bytes:
    """Header of a data packet carrying a PPP frame of ``length`` bytes (the payload length)."""
    if not 0 <= length <= MAX_PAYLOAD_LENGTH:
        raise ValueError(f"PPP frame of {length} bytes does not fit an SSTP data packet")
    return struct.pack("!BBH", SSTP_VERSION, 0, length + HEADER_LENGTH)


def encode_attribute(attribute_id: int, value: bytes) -> bytes:
    return struct.pack("!BBH", 0, attribute_id, len(value) + 4) + value


def encode_status_info(info: StatusInfo) -> bytes:
    value = bytes(info.value[:MAX_STATUS_VALUE_LENGTH])
    body = b"\x00\x00\x00" + struct.pack("!BI", info.attrib_id, info.status) + value
    return encode_attribute(AttributeId.STATUS_INFO, body)


def encode_control(message_type: int, encoded_attributes: Sequence[bytes]) -> bytes:
    body = struct.pack("!HH", message_type, len(encoded_attributes)) + b"".join(encoded_attributes)
    return encode_header(len(body) + HEADER_LENGTH, control=True) + body


def encode_connect_request(protocol_id: int = ENCAPSULATED_PROTOCOL_PPP) -> bytes:
    attr = encode_attribute(AttributeId.ENCAPSULATED_PROTOCOL_ID, struct.pack("!H", protocol_id))
    return encode_control(MessageType.CALL_CONNECT_REQUEST, [attr])


def encode_connect_ack(hash_bitmask: int, nonce: bytes) -> bytes:
    if len(nonce) != NONCE_LENGTH:
        raise ValueError("the Connect Ack nonce is 32 bytes")
    if not 0 < hash_bitmask <= 0xFF:
        raise ValueError("the hash protocol bitmask needs at least one bit")
    value = b"\x00\x00\x00" + bytes([hash_bitmask]) + nonce
    attr = encode_attribute(AttributeId.CRYPTO_BINDING_REQ, value)
    return encode_control(MessageType.CALL_CONNECT_ACK, [attr])


def encode_connect_nak(status_infos: Sequence[StatusInfo]) -> bytes:
    """NAK with one Status Info per refused attribute; those that would overflow 4095 bytes are left out."""
    if not status_infos:
        raise ValueError("a Connect NAK carries at least one Status Info")
    room = MAX_PACKET_LENGTH - HEADER_LENGTH - 4
    encoded: list[bytes] = []
    for info in status_infos:
        attr = encode_status_info(info)
        if len(attr) > room:
            break
        room -= len(attr)
        encoded.append(attr)
    return encode_control(MessageType.CALL_CONNECT_NAK, encoded)


def encode_call_connected(
    hash_protocol: HashProtocol, nonce: bytes, cert_hash: bytes, compound_mac: bytes
) -> bytes:
    """The 112-byte Call Connected; cert hash and MAC are zero-padded to 32 bytes."""
    if len(nonce) != NONCE_LENGTH:
        raise ValueError("the Call Connected nonce is 32 bytes")
    if len(cert_hash) > HASH_FIELD_LENGTH or len(compound_mac) > HASH_FIELD_LENGTH:
        raise ValueError("cert hash and compound MAC are at most 32 bytes")
    value = (
        b"\x00\x00\x00"
        + bytes([int(hash_protocol)])
        + nonce
        + cert_hash.ljust(HASH_FIELD_LENGTH, b"\x00")
        + compound_mac.ljust(HASH_FIELD_LENGTH, b"\x00")
    )
    return encode_control(MessageType.CALL_CONNECTED, [encode_attribute(AttributeId.CRYPTO_BINDING, value)])


def encode_abort(status_info: StatusInfo | None = None) -> bytes:
    attrs = [] if status_info is None else [encode_status_info(status_info)]
    return encode_control(MessageType.CALL_ABORT, attrs)


_ZERO_STATUS = StatusInfo(AttributeId.NO_ERROR, Status.NO_ERROR)


def encode_disconnect(status_info: StatusInfo | None = _ZERO_STATUS) -> bytes:
    """Call Disconnect; like Windows, with one all-zero Status Info unless told otherwise."""
    attrs = [] if status_info is None else [encode_status_info(status_info)]
    return encode_control(MessageType.CALL_DISCONNECT, attrs)


def encode_disconnect_ack() -> bytes:
    return encode_control(MessageType.CALL_DISCONNECT_ACK, [])


def encode_echo_request() -> bytes:
    return encode_control(MessageType.ECHO_REQUEST, [])


def encode_echo_response() -> bytes:
    return encode_control(MessageType.ECHO_RESPONSE, [])


# ---------------------------------------------------------------------------------------------
# Decoders


@dataclass(frozen=True, slots=True)
class PacketHeader:
    is_control: bool
    length: int  # R bits masked off


def decode_header(data: bytes | memoryview) -> PacketHeader:
    if len(data) < HEADER_LENGTH:
        raise ProtocolError("SSTP header needs 4 bytes")
    if data[0] != SSTP_VERSION:
        raise ProtocolError(f"SSTP version 0x{data[0]:02x} is not 0x10")
    length = ((data[2] << 8) | data[3]) & LENGTH_MASK
    if length < HEADER_LENGTH:
        raise ProtocolError(f"SSTP packet length {length} is shorter than its header")
    return PacketHeader(is_control=bool(data[1] & CONTROL_BIT), length=length)


def decode_control(packet: bytes | memoryview) -> ControlMessage:
    """Decode one whole control packet (header included).

    Attribute bytes past the declared attributes are tolerated (accel-ppp's NAK has two of
    them); an attribute that runs past the end, or fewer attributes than announced, is an error.
    """
    data = bytes(packet)
    header = decode_header(data)
    if not header.is_control:
        raise ProtocolError("not a control packet (C bit clear)")
    if header.length != len(data):
        raise ProtocolError(f"control packet length field {header.length} but {len(data)} bytes given")
    if len(data) < 8:
        raise ProtocolError("control packet shorter than its message header")
    message_type, count = struct.unpack_from("!HH", data, 4)
    attributes: list[Attribute] = []
    offset = 8
    for _ in range(count):
        if len(data) - offset < 4:
            raise ProtocolError(f"attribute {len(attributes) + 1} of {count} is missing")
        attr_id = data[offset + 1]
        attr_len = ((data[offset + 2] << 8) | data[offset + 3]) & LENGTH_MASK
        if attr_len < 4:
            raise ProtocolError(f"attribute 0x{attr_id:02x} length {attr_len} is shorter than its header")
        if offset + attr_len > len(data):
            raise ProtocolError(f"attribute 0x{attr_id:02x} runs past the end of the packet")
        attributes.append(Attribute(attr_id, data[offset + 4 : offset + attr_len]))
        offset += attr_len
    try:
        known_type: int = MessageType(message_type)
    except ValueError:
        known_type = message_type
    return ControlMessage(known_type, attributes)


def decode_status_info(value: bytes) -> StatusInfo:
    """Decode a Status Info attribute value (Reserved1(3) AttribID(1) Status(4) AttribValue)."""
    if len(value) < 8:
        raise ProtocolError(f"Status Info value of {len(value)} bytes is shorter than 8")
    attrib_id = value[3]
    (status,) = struct.unpack_from("!I", value, 4)
    return StatusInfo(attrib_id, status, bytes(value[8:]))


def status_of(message: ControlMessage) -> StatusInfo | None:
    """The Status Info of an Abort/Disconnect, if any can be read.

    Tolerates sorz's 8-byte variant (status without Reserved1/AttribID) by reading a bare u32.
    """
    for attr in message.attributes:
        if attr.attribute_id == AttributeId.STATUS_INFO and len(attr.value) >= 8:
            return decode_status_info(attr.value)
        if len(attr.value) == 4:
            return StatusInfo(AttributeId.NO_ERROR, struct.unpack("!I", attr.value)[0])
    return None


@dataclass(frozen=True, slots=True)
class CryptoBindingRequest:
    hash_bitmask: int
    nonce: bytes


def decode_connect_ack(message: ControlMessage) -> CryptoBindingRequest:
    if message.message_type != MessageType.CALL_CONNECT_ACK:
        raise ProtocolError("not a Connect Ack")
    if len(message.attributes) != 1:
        raise ProtocolError(f"Connect Ack has {len(message.attributes)} attributes instead of 1")
    attr = message.attributes[0]
    if attr.attribute_id != AttributeId.CRYPTO_BINDING_REQ:
        raise ProtocolError(f"Connect Ack carries attribute 0x{attr.attribute_id:02x}, not a binding request")
    if len(attr.value) != CRYPTO_BINDING_REQUEST_ATTRIBUTE_LENGTH - 4:
        raise ProtocolError(f"Crypto Binding Request attribute is {len(attr.value) + 4} bytes, not 40")
    return CryptoBindingRequest(hash_bitmask=attr.value[3], nonce=bytes(attr.value[4:36]))


# ---------------------------------------------------------------------------------------------
# Attribute validation (answers in Status Infos, as the NAK or Abort will carry them)


def validate_connect_request(message: ControlMessage) -> list[StatusInfo]:
    """Status Infos for every unacceptable attribute of a Call Connect Request (empty = acceptable).

    Per MS-SSTP §3.3.5.2.2: a non-zero Status Info, a protocol other than PPP, bad lengths,
    duplicates, attributes unknown or not allowed in this message, or a missing protocol.
    AttribValue carries the first 64 bytes of the offending attribute's value.
    """
    problems: list[StatusInfo] = []
    seen_protocol = False
    for attr in message.attributes:
        attr_id = attr.attribute_id
        value = attr.value[:MAX_STATUS_VALUE_LENGTH]
        if attr_id == AttributeId.ENCAPSULATED_PROTOCOL_ID:
            if seen_protocol:
                problems.append(StatusInfo(attr_id, Status.DUPLICATE_ATTRIBUTE, value))
                continue
            seen_protocol = True
            if len(attr.value) != 2:
                problems.append(StatusInfo(attr_id, Status.INVALID_ATTRIB_VALUE_LENGTH, value))
            elif struct.unpack("!H", attr.value)[0] != ENCAPSULATED_PROTOCOL_PPP:
                problems.append(StatusInfo(attr_id, Status.VALUE_NOT_SUPPORTED, value))
        elif attr_id == AttributeId.STATUS_INFO:
            if len(attr.value) < 8:
                problems.append(StatusInfo(attr_id, Status.INVALID_ATTRIB_VALUE_LENGTH, value))
            elif decode_status_info(attr.value).status != Status.NO_ERROR:
                problems.append(StatusInfo(attr_id, Status.STATUS_INFO_NOT_SUPPORTED_IN_MSG, value))
        elif attr_id in (AttributeId.CRYPTO_BINDING, AttributeId.CRYPTO_BINDING_REQ):
            problems.append(StatusInfo(attr_id, Status.ATTRIB_NOT_SUPPORTED_IN_MSG, value))
        else:
            problems.append(StatusInfo(attr_id, Status.UNRECOGNIZED_ATTRIBUTE, value))
    if not seen_protocol:
        problems.append(StatusInfo(AttributeId.STATUS_INFO, Status.REQUIRED_ATTRIBUTE_MISSING))
    return problems


def validate_call_connected(message: ControlMessage) -> StatusInfo | None:
    """Abort Status Info for a structurally unusable Call Connected, None when the shape is right.

    MS-SSTP §3.3.5.2.3: a missing or wrongly sized Crypto Binding attribute, or any other
    attribute, is answered with AttribID Status Info + ATTRIB_NOT_SUPPORTED_IN_MSG.
    """
    bad = StatusInfo(AttributeId.STATUS_INFO, Status.ATTRIB_NOT_SUPPORTED_IN_MSG)
    if len(message.attributes) != 1:
        return bad
    attr = message.attributes[0]
    if attr.attribute_id != AttributeId.CRYPTO_BINDING:
        return bad
    if len(attr.value) != CRYPTO_BINDING_ATTRIBUTE_LENGTH - 4:
        return bad
    return None
