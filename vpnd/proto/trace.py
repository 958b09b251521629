"""One-line descriptions of SSTP packets and the PPP frames inside them, for debug logs.

Used by ``vpnd demo`` and by debug logging; never on the data path.
"""

from __future__ import annotations

from vpnd.proto.eap.packets import EapType, decode_eap, method_name
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.frames import decode_control as decode_ppp_control
from vpnd.proto.ppp.frames import decode_frame, is_control_protocol, protocol_name
from vpnd.proto.sstp.packets import MessageType, decode_control, decode_header, status_of

_PPP_CODES = {
    1: "Configure-Request", 2: "Configure-Ack", 3: "Configure-Nak", 4: "Configure-Reject",
    5: "Terminate-Request", 6: "Terminate-Ack", 7: "Code-Reject", 8: "Protocol-Reject",
    9: "Echo-Request", 10: "Echo-Reply", 11: "Discard-Request", 12: "Identification",
    13: "Time-Remaining",
}
_AUTH_CODES = {
    0xC023: {1: "Authenticate-Request", 2: "Authenticate-Ack", 3: "Authenticate-Nak"},
    0xC223: {1: "Challenge", 2: "Response", 3: "Success", 4: "Failure"},
    0xC227: {1: "Request", 2: "Response", 3: "Success", 4: "Failure"},
}
_EAP_TYPES: dict[int, str] = {
    EapType.IDENTITY: "Identity", EapType.NOTIFICATION: "Notification", EapType.NAK: "Nak",
}


def describe_packets(data: bytes) -> list[str]:
    """Describe every complete SSTP packet in ``data`` (a trailing partial packet is noted)."""
    lines: list[str] = []
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        try:
            header = decode_header(view[pos:])
        except ProtocolError as error:
            lines.append(f"undecodable SSTP bytes: {error}")
            break
        if header.length > len(view) - pos:
            lines.append(f"partial SSTP packet ({len(view) - pos} of {header.length} bytes)")
            break
        packet = view[pos:pos + header.length]
        lines.append(_describe_control(packet) if header.is_control else _describe_data(packet[4:]))
        pos += header.length
    return lines


def _describe_control(packet: memoryview) -> str:
    try:
        message = decode_control(packet)
    except ProtocolError as error:
        return f"SSTP control (malformed: {error})"
    try:
        name = MessageType(message.message_type).name
    except ValueError:
        name = f"message type 0x{message.message_type:04x}"
    text = f"SSTP {name}"
    status = status_of(message)
    if status is not None and status.status:
        text += f" (attribute {status.attrib_id}, status {status.status})"
    if message.message_type == MessageType.CALL_CONNECT_ACK and message.attributes:
        text += f" hash-bitmask=0x{message.attributes[0].value[3]:02x}"
    if message.message_type == MessageType.CALL_CONNECTED and message.attributes:
        value = message.attributes[0].value
        text += f" hash={'SHA256' if value[3] == 2 else 'SHA1'}"
    return text


def _describe_data(frame: memoryview) -> str:
    try:
        protocol, info = decode_frame(frame)
    except ProtocolError as error:
        return f"PPP (malformed: {error})"
    name = protocol_name(protocol)
    if not is_control_protocol(protocol):
        return f"PPP {name} {len(info)} bytes"
    try:
        control = decode_ppp_control(info)
    except ProtocolError as error:
        return f"PPP {name} (malformed: {error})"
    codes = _AUTH_CODES.get(protocol, _PPP_CODES)
    text = f"PPP {name} {codes.get(control.code, f'code {control.code}')} id={control.identifier}"
    if protocol == 0xC227:
        try:
            eap_type = decode_eap(info).type
        except ProtocolError:
            return text
        if eap_type is not None:
            text += f" {_EAP_TYPES.get(eap_type) or method_name(eap_type)}"
    return text
