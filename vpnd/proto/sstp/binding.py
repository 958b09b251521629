"""SSTP crypto binding (MS-SSTP §3.2.5.2, §3.3.5.2.3): cert hash, HLAK, CMK and compound MAC.

The binding ties the PPP authentication (through the HLAK derived from its MPPE keys) to the TLS
session (through the hash of the server certificate the client saw). A TLS-inspecting proxy
shows the client another certificate, so the hashes differ and the server refuses the call.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass

from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.auth.types import MppeKeys
from vpnd.proto.sstp.packets import (
    CALL_CONNECTED_CERT_HASH_OFFSET,
    CALL_CONNECTED_HASH_PROTOCOL_OFFSET,
    CALL_CONNECTED_LENGTH,
    CALL_CONNECTED_MAC_OFFSET,
    CALL_CONNECTED_NONCE_OFFSET,
    HASH_FIELD_LENGTH,
    NONCE_LENGTH,
    HashProtocol,
    MessageType,
    decode_control,
    encode_call_connected,
    validate_call_connected,
)

HLAK_LENGTH = 32
MPPE_KEY_LENGTH = 16
CMK_SEED = b"SSTP inner method derived CMK"


def _hash_name(proto: HashProtocol) -> str:
    return "sha1" if proto is HashProtocol.SHA1 else "sha256"


def cert_hash(cert_der: bytes, proto: HashProtocol) -> bytes:
    """Hash of the DER-encoded server leaf certificate (20 bytes SHA1, 32 bytes SHA256)."""
    return hashlib.new(_hash_name(proto), cert_der).digest()


def _key16(key: bytes) -> bytes:
    return bytes(key[:MPPE_KEY_LENGTH]).ljust(MPPE_KEY_LENGTH, b"\x00")


def hlak_from_keys(keys: MppeKeys | None, *, is_server: bool) -> bytes:
    """32-byte HLAK: client send‖recv, server recv‖send (the same bytes on both ends).

    Each MPPE master key is cut or zero-padded to 16 bytes (pppd may keep 20 or 32 bytes);
    no keys (PAP, CHAP-MD5) gives 32 zero bytes.
    """
    if keys is None:
        return bytes(HLAK_LENGTH)
    if keys.hlak is not None:
        return normalize_hlak(keys.hlak)
    if is_server:
        return _key16(keys.recv_key) + _key16(keys.send_key)
    return _key16(keys.send_key) + _key16(keys.recv_key)


def normalize_hlak(hlak: bytes) -> bytes:
    """Longer than 32 bytes: keep the first 32; shorter: pad with zeros (MS-SSTP §3.2.5.2)."""
    return bytes(hlak[:HLAK_LENGTH]).ljust(HLAK_LENGTH, b"\x00")


def compound_mac_key(hlak: bytes, proto: HashProtocol) -> bytes:
    """CMK = first block of the IKEv2 PRF+ keyed by the HLAK; LEN is little-endian."""
    out_len = proto.digest_size
    seed = CMK_SEED + out_len.to_bytes(2, "little") + b"\x01"
    return hmac.new(normalize_hlak(hlak), seed, _hash_name(proto)).digest()[:out_len]


def compound_mac(cmk: bytes, call_connected_packet: bytes, proto: HashProtocol) -> bytes:
    """HMAC over the 112-byte Call Connected packet with its MAC field (bytes 80..111) zeroed."""
    if len(call_connected_packet) != CALL_CONNECTED_LENGTH:
        raise ProtocolError(f"Call Connected is {len(call_connected_packet)} bytes, not 112")
    zeroed = bytes(call_connected_packet[:CALL_CONNECTED_MAC_OFFSET]) + bytes(HASH_FIELD_LENGTH)
    return hmac.new(cmk, zeroed, _hash_name(proto)).digest()


def build_call_connected(proto: HashProtocol, nonce: bytes, cert_hash: bytes, hlak: bytes) -> bytes:
    """Client side: the complete Call Connected with its compound MAC filled in."""
    unsigned = encode_call_connected(proto, nonce, cert_hash, b"")
    mac = compound_mac(compound_mac_key(hlak, proto), unsigned, proto)
    return encode_call_connected(proto, nonce, cert_hash, mac)


class BindingFailure(enum.Enum):
    MALFORMED = "malformed Call Connected"
    HASH_PROTOCOL_NOT_OFFERED = "hash protocol not offered"
    WRONG_NONCE = "wrong nonce"
    CERT_HASH_MISMATCH = "certificate hash mismatch"
    COMPOUND_MAC_MISMATCH = "compound MAC mismatch"


_EXPLANATIONS: dict[BindingFailure, str] = {
    BindingFailure.MALFORMED: "the Call Connected message is not a 112-byte message with one Crypto Binding",
    BindingFailure.HASH_PROTOCOL_NOT_OFFERED: "the client chose a hash protocol the server did not offer",
    BindingFailure.WRONG_NONCE: "the nonce does not echo the one sent in the Connect Ack",
    BindingFailure.CERT_HASH_MISMATCH: (
        "the client saw another server certificate — is a TLS-inspecting proxy between client and server?"
    ),
    BindingFailure.COMPOUND_MAC_MISMATCH: (
        "the two ends derived different keys from PPP authentication (MPPE keys missing or "
        "different, e.g. a RADIUS server that returns other MS-MPPE keys)"
    ),
}


@dataclass(frozen=True, slots=True)
class BindingResult:
    failure: BindingFailure | None
    hash_protocol: HashProtocol | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def cause(self) -> str:
        """A sentence for logs and operators."""
        if self.failure is None:
            return "crypto binding verified"
        return f"crypto binding failed: {self.failure.value} — {_EXPLANATIONS[self.failure]}"


def verify_call_connected(
    packet: bytes | memoryview,
    *,
    nonce: bytes,
    cert_hashes: dict[HashProtocol, bytes],
    offered: int,
    hlak: bytes,
) -> BindingResult:
    """Server side check of a received Call Connected; all secret comparisons in constant time."""
    data = bytes(packet)
    try:
        message = decode_control(data)
    except ProtocolError:
        return BindingResult(BindingFailure.MALFORMED)
    if (
        message.message_type != MessageType.CALL_CONNECTED
        or validate_call_connected(message) is not None
        or len(data) != CALL_CONNECTED_LENGTH
    ):
        return BindingResult(BindingFailure.MALFORMED)
    proto_value = data[CALL_CONNECTED_HASH_PROTOCOL_OFFSET]
    if proto_value not in (HashProtocol.SHA1, HashProtocol.SHA256) or not offered & proto_value:
        return BindingResult(BindingFailure.HASH_PROTOCOL_NOT_OFFERED)
    proto = HashProtocol(proto_value)
    received_nonce = data[CALL_CONNECTED_NONCE_OFFSET : CALL_CONNECTED_NONCE_OFFSET + NONCE_LENGTH]
    if len(nonce) != NONCE_LENGTH or not hmac.compare_digest(received_nonce, nonce):
        return BindingResult(BindingFailure.WRONG_NONCE, proto)
    size = proto.digest_size
    expected_hash = cert_hashes.get(proto)
    received_hash = data[CALL_CONNECTED_CERT_HASH_OFFSET : CALL_CONNECTED_CERT_HASH_OFFSET + size]
    if expected_hash is None or not hmac.compare_digest(received_hash, expected_hash):
        return BindingResult(BindingFailure.CERT_HASH_MISMATCH, proto)
    expected_mac = compound_mac(compound_mac_key(hlak, proto), data, proto).ljust(HASH_FIELD_LENGTH, b"\x00")
    # The whole 32-byte field is compared, so a non-zero pad after an HMAC-SHA1 also fails.
    received_mac = data[CALL_CONNECTED_MAC_OFFSET : CALL_CONNECTED_MAC_OFFSET + HASH_FIELD_LENGTH]
    if not hmac.compare_digest(received_mac, expected_mac):
        return BindingResult(BindingFailure.COMPOUND_MAC_MISMATCH, proto)
    return BindingResult(None, proto)
