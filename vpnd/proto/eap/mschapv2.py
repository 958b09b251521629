"""EAP-MSCHAPv2 messages (EAP Type 26, draft-kamath-pppext-eap-mschapv2-02 §2).

Type-Data is ``OpCode(1) MS-CHAPv2-ID(1) MS-Length(2) ...`` with MS-Length = EAP Length - 5;
the peer's Success-Response and Failure-Response are the OpCode alone. The MS-CHAPv2 values
inside are those of RFC 2759, so the PPP MS-CHAPv2 crypto and verifiers serve unchanged.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from vpnd.proto.errors import ProtocolError

__all__ = [
    "MsChapV2Message",
    "OpCode",
    "decode_mschapv2",
    "encode_mschapv2",
]

_HEADER = 4  # OpCode, MS-CHAPv2-ID, MS-Length


class OpCode(enum.IntEnum):
    CHALLENGE = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


@dataclass(frozen=True, slots=True)
class MsChapV2Message:
    """``value`` and ``name`` for Challenge/Response; ``message`` for Success/Failure requests.
    A message with ``short`` set is a peer's one-byte Success- or Failure-Response."""

    opcode: OpCode
    mschap_id: int = 0
    value: bytes = b""
    name: bytes = b""
    message: bytes = b""
    short: bool = False


def encode_mschapv2(message: MsChapV2Message) -> bytes:
    if message.short:
        return bytes([message.opcode])
    if message.opcode in (OpCode.CHALLENGE, OpCode.RESPONSE):
        if not 1 <= len(message.value) <= 255:
            raise ValueError("MS-CHAPv2 Value must be 1 to 255 bytes")
        body = bytes([len(message.value)]) + message.value + message.name
    else:
        body = message.message
    # MS-Length counts from the OpCode on, which is EAP Length - 5.
    return struct.pack("!BBH", message.opcode, message.mschap_id & 0xFF, _HEADER + len(body)) + body


def decode_mschapv2(data: bytes) -> MsChapV2Message:
    """Type-Data of an EAP-MSCHAPv2 Request or Response; ProtocolError when it does not fit.

    MS-Length is not trusted: peers disagree about it, and the EAP Length already bounds the data.
    """
    if not data:
        raise ProtocolError("EAP-MSCHAPv2 packet without OpCode")
    try:
        opcode = OpCode(data[0])
    except ValueError:
        raise ProtocolError(f"EAP-MSCHAPv2 OpCode {data[0]} is unknown") from None
    if len(data) == 1:
        if opcode not in (OpCode.SUCCESS, OpCode.FAILURE):
            raise ProtocolError(f"EAP-MSCHAPv2 {opcode.name.title()} without its fields")
        return MsChapV2Message(opcode, short=True)
    if len(data) < _HEADER:
        raise ProtocolError("EAP-MSCHAPv2 header is truncated")
    mschap_id = data[1]
    body = data[_HEADER:]
    if opcode in (OpCode.SUCCESS, OpCode.FAILURE):
        return MsChapV2Message(opcode, mschap_id, message=body)
    if not body or body[0] == 0 or len(body) < 1 + body[0]:
        raise ProtocolError("EAP-MSCHAPv2 Value is empty or overruns the packet")
    value_end = 1 + body[0]
    return MsChapV2Message(opcode, mschap_id, value=body[1:value_end], name=body[value_end:])
