"""SSTP packet codec: exact layouts of MS-SSTP §2.2 and robustness of the decoder."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpnd.proto.errors import ProtocolError
from vpnd.proto.sstp.packets import (
    Attribute,
    AttributeId,
    ControlMessage,
    HashProtocol,
    MessageType,
    Status,
    StatusInfo,
    decode_connect_ack,
    decode_control,
    decode_header,
    encode_abort,
    encode_attribute,
    encode_call_connected,
    encode_connect_ack,
    encode_connect_nak,
    encode_connect_request,
    encode_control,
    encode_data_header,
    encode_disconnect,
    encode_disconnect_ack,
    encode_echo_request,
    encode_echo_response,
    status_of,
    validate_call_connected,
    validate_connect_request,
)

NONCE = bytes(range(32))


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


def test_connect_request_exact_bytes() -> None:
    assert encode_connect_request() == h("10 01 00 0E | 00 01 | 00 01 | 00 01 00 06 | 00 01")


def test_connect_ack_exact_bytes() -> None:
    packet = encode_connect_ack(0x03, NONCE)
    assert len(packet) == 48
    assert packet[:16] == h("10 01 00 30 | 00 02 | 00 01 | 00 04 00 28 | 00 00 00 | 03")
    assert packet[16:] == NONCE


def test_connect_nak_unsupported_protocol_exact_bytes() -> None:
    info = StatusInfo(AttributeId.ENCAPSULATED_PROTOCOL_ID, Status.VALUE_NOT_SUPPORTED, b"\x00\x02")
    packet = encode_connect_nak([info])
    assert packet == h("10 01 00 16 | 00 03 00 01 | 00 02 00 0E | 00 00 00 | 01 | 00 00 00 04 | 00 02")


def test_call_connected_layout_pads_sha1_fields() -> None:
    cert = b"\xaa" * 20
    mac = b"\xbb" * 20
    packet = encode_call_connected(HashProtocol.SHA1, NONCE, cert, mac)
    assert len(packet) == 112
    assert packet[:16] == h("10010070 00040001 00030068 00000001")
    assert packet[16:48] == NONCE
    assert packet[48:80] == cert + bytes(12)
    assert packet[80:112] == mac + bytes(12)


def test_abort_disconnect_echo_exact_bytes() -> None:
    abort = encode_abort(StatusInfo(AttributeId.CRYPTO_BINDING, Status.VALUE_NOT_SUPPORTED))
    assert abort == h("10 01 00 14 | 00 05 00 01 | 00 02 00 0C | 00 00 00 | 03 | 00 00 00 04")
    assert encode_abort() == h("10 01 00 08 00 05 00 00")
    assert encode_disconnect() == h("10 01 00 14 | 00 06 00 01 | 00 02 00 0C | 00 00 00 00 | 00 00 00 00")
    assert encode_disconnect_ack() == h("10 01 00 08 00 07 00 00")
    assert encode_echo_request() == h("10 01 00 08 00 08 00 00")
    assert encode_echo_response() == h("10 01 00 08 00 09 00 00")


def test_data_header() -> None:
    assert encode_data_header(14) == h("10 00 00 12")
    assert encode_data_header(4091) == h("10 00 0F FF")
    with pytest.raises(ValueError):
        encode_data_header(4092)


def test_nak_never_exceeds_4095_bytes() -> None:
    infos = [StatusInfo(0x77, Status.UNRECOGNIZED_ATTRIBUTE, bytes(100))] * 200
    packet = encode_connect_nak(infos)
    assert len(packet) <= 4095
    message = decode_control(packet)
    assert message.message_type == MessageType.CALL_CONNECT_NAK
    assert len(message.attributes) == (4095 - 8) // 76
    # AttribValue is cut to 64 bytes.
    assert all(len(attr.value) == 8 + 64 for attr in message.attributes)


def test_encoder_refuses_oversized_control() -> None:
    with pytest.raises(ValueError):
        encode_control(MessageType.ECHO_REQUEST, [encode_attribute(9, bytes(4092))])


def test_decode_round_trip_and_known_types() -> None:
    message = decode_control(encode_connect_ack(0x02, NONCE))
    assert message.message_type is MessageType.CALL_CONNECT_ACK
    assert message.attributes == [Attribute(AttributeId.CRYPTO_BINDING_REQ, b"\x00\x00\x00\x02" + NONCE)]
    ack = decode_connect_ack(message)
    assert ack.hash_bitmask == 0x02
    assert ack.nonce == NONCE


def test_decode_masks_reserved_length_bits() -> None:
    packet = bytearray(encode_echo_request())
    packet[2] |= 0xF0
    assert decode_header(packet).length == 8
    assert decode_control(packet).message_type is MessageType.ECHO_REQUEST
    attr_packet = bytearray(encode_connect_request())
    attr_packet[10] |= 0xA0  # R bits of the attribute length
    assert decode_control(attr_packet).attributes == [Attribute(1, b"\x00\x01")]


def test_decode_keeps_unknown_message_type_as_number() -> None:
    message = decode_control(h("10 01 00 08 00 42 00 00"))
    assert message.message_type == 0x42
    assert not isinstance(message.message_type, MessageType)


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (h("11 01 00 08 00 08 00 00"), "version"),
        (h("10 00 00 08 00 08 00 00"), "C bit"),
        (h("10 01 00 09 00 08 00 00"), "length field"),
        (h("10 01 00 06 00 08"), "short"),
        (h("10 01 00 08 00 01 00 01"), "missing attribute"),
        (h("10 01 00 0C 00 01 00 01 00 01 00 03"), "attribute shorter than its header"),
        (h("10 01 00 0E 00 01 00 01 00 01 00 08 00 01"), "attribute past end"),
    ],
)
def test_decode_rejects(packet: bytes, why: str) -> None:
    with pytest.raises(ProtocolError):
        decode_control(packet)


def test_decode_tolerates_trailing_bytes_like_accel_nak() -> None:
    # accel-ppp's NAK: the Status Info says 12 bytes, the packet carries 2 more.
    packet = h("10 01 00 16 00 03 00 01 00 02 00 0C 00 00 00 01 00 00 00 04 00 02")
    message = decode_control(packet)
    assert message.attributes[0].attribute_id == AttributeId.STATUS_INFO
    assert status_of(message) == StatusInfo(1, Status.VALUE_NOT_SUPPORTED)


def test_status_of_reads_sorz_short_status() -> None:
    # sorz: Call Abort whose attribute is a bare 4-byte status.
    message = ControlMessage(MessageType.CALL_ABORT, [Attribute(0x02, b"\x00\x00\x00\x07")])
    assert status_of(message) == StatusInfo(0, Status.INVALID_FRAME_RECEIVED)
    assert status_of(ControlMessage(MessageType.CALL_ABORT, [])) is None


def request_with(*attrs: bytes) -> ControlMessage:
    return decode_control(encode_control(MessageType.CALL_CONNECT_REQUEST, list(attrs)))


PPP_ATTR = encode_attribute(1, b"\x00\x01")


def test_validate_connect_request_accepts_ppp() -> None:
    assert validate_connect_request(decode_control(encode_connect_request())) == []
    zero_status = encode_attribute(2, bytes(8))
    assert validate_connect_request(request_with(PPP_ATTR, zero_status)) == []


def test_validate_connect_request_reports_each_bad_attribute() -> None:
    problems = validate_connect_request(
        request_with(
            encode_attribute(1, b"\x00\x02"),
            encode_attribute(1, b"\x00\x01"),
            encode_attribute(2, b"\x00\x00\x00\x01\x00\x00\x00\x04"),
            encode_attribute(0x33, b"x" * 100),
            encode_attribute(3, b"y"),
        )
    )
    assert problems == [
        StatusInfo(1, Status.VALUE_NOT_SUPPORTED, b"\x00\x02"),
        StatusInfo(1, Status.DUPLICATE_ATTRIBUTE, b"\x00\x01"),
        StatusInfo(2, Status.STATUS_INFO_NOT_SUPPORTED_IN_MSG, b"\x00\x00\x00\x01\x00\x00\x00\x04"),
        StatusInfo(0x33, Status.UNRECOGNIZED_ATTRIBUTE, b"x" * 64),
        StatusInfo(3, Status.ATTRIB_NOT_SUPPORTED_IN_MSG, b"y"),
    ]


def test_validate_connect_request_length_and_missing() -> None:
    assert validate_connect_request(request_with(encode_attribute(1, b"\x00\x01\x00"))) == [
        StatusInfo(1, Status.INVALID_ATTRIB_VALUE_LENGTH, b"\x00\x01\x00")
    ]
    assert validate_connect_request(request_with()) == [StatusInfo(2, Status.REQUIRED_ATTRIBUTE_MISSING)]


def test_validate_call_connected() -> None:
    good = decode_control(encode_call_connected(HashProtocol.SHA256, NONCE, bytes(32), bytes(32)))
    assert validate_call_connected(good) is None
    bad = StatusInfo(AttributeId.STATUS_INFO, Status.ATTRIB_NOT_SUPPORTED_IN_MSG)
    assert validate_call_connected(ControlMessage(MessageType.CALL_CONNECTED, [])) == bad
    short = ControlMessage(MessageType.CALL_CONNECTED, [Attribute(3, bytes(99))])
    assert validate_call_connected(short) == bad


VALID_PACKETS = [
    encode_connect_request(),
    encode_connect_ack(3, NONCE),
    encode_connect_nak([StatusInfo(1, 4, b"\x00\x02")]),
    encode_call_connected(HashProtocol.SHA256, NONCE, bytes(32), bytes(32)),
    encode_abort(StatusInfo(2, 7)),
    encode_disconnect(),
    encode_echo_request(),
]


@given(st.binary(max_size=300))
def test_decode_random_bytes_only_protocol_error(data: bytes) -> None:
    try:
        message = decode_control(data)
    except ProtocolError:
        return
    assert isinstance(message, ControlMessage)
    assert len(data) == decode_header(data).length


@given(st.sampled_from(VALID_PACKETS), st.data())
def test_decode_mutated_packets_only_protocol_error(packet: bytes, data: st.DataObject) -> None:
    mutated = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    for candidate in (bytes(mutated), bytes(mutated[:cut])):
        try:
            message = decode_control(candidate)
        except ProtocolError:
            continue
        validate_connect_request(message)
        validate_call_connected(message)
        status_of(message)
        with contextlib.suppress(ProtocolError):
            decode_connect_ack(message)


def test_header_struct_matches_spec() -> None:
    assert struct.unpack("!BBH", encode_echo_request()[:4]) == (0x10, 0x01, 8)
