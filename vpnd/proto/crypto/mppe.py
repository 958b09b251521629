"""MPPE key derivation (RFC 3079) and session keys (RFC 3078 §7).

Start keys are 16 bytes. Session-key helpers take the MPPE strength in bits (40, 56 or 128)
because 40- and 56-bit keys are both 8 bytes long and differ only in their salt.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher

from vpnd.proto.crypto.mschap import hash_nt_password_hash
from vpnd.proto.ppp.auth.types import MppeKeys

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
except ImportError:  # cryptography < 43 keeps ARC4 in the primitives package
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[no-redef,unused-ignore]
        ARC4,
    )

__all__ = [
    "initial_session_key",
    "mppe_asymmetric_start_key",
    "mppe_master_key",
    "mppe_new_key_from_sha",
    "mschapv1_mppe_keys",
    "mschapv2_mppe_keys",
    "rekey_session_key",
    "salt_session_key",
]

# RFC 3079 §3.4 constants.
_MAGIC_MASTER = b"This is the MPPE Master Key"
_MAGIC_CLIENT_SEND = (
    b"On the client side, this is the send key; on the server side, it is the receive key."
)
_MAGIC_SERVER_SEND = (
    b"On the client side, this is the receive key; on the server side, it is the send key."
)
_SHS_PAD1 = bytes(40)
_SHS_PAD2 = b"\xf2" * 40

# Salt over the first bytes of a weakened session key (RFC 3078 §7.1).
_SALTS = {40: b"\xd1\x26\x9e", 56: b"\xd1", 128: b""}
_KEY_BYTES = {40: 8, 56: 8, 128: 16}


def mppe_master_key(password_hash_hash: bytes, nt_response: bytes) -> bytes:
    """RFC 3079 §3.4 GetMasterKey: 16 bytes from the NT hash hash and the MS-CHAPv2 NT-Response."""
    return hashlib.sha1(password_hash_hash + nt_response + _MAGIC_MASTER).digest()[:16]


def mppe_asymmetric_start_key(master_key: bytes, key_length: int, *, is_send: bool, is_server: bool) -> bytes:
    """RFC 3079 §3.4 GetAsymmetricStartKey; ``key_length`` in bytes (8 or 16)."""
    if not 1 <= key_length <= 20:
        raise ValueError("key_length must be between 1 and 20 bytes")
    # The client's send key is the server's receive key and vice versa.
    client_to_server = is_send != is_server
    magic = _MAGIC_CLIENT_SEND if client_to_server else _MAGIC_SERVER_SEND
    return hashlib.sha1(master_key + _SHS_PAD1 + magic + _SHS_PAD2).digest()[:key_length]


def mppe_new_key_from_sha(start_key: bytes, session_key: bytes, key_length: int) -> bytes:
    """RFC 3078 §7.3 GetNewKeyFromSHA; ``key_length`` in bytes."""
    if not 1 <= key_length <= 20:
        raise ValueError("key_length must be between 1 and 20 bytes")
    digest = hashlib.sha1(start_key[:key_length] + _SHS_PAD1 + session_key[:key_length] + _SHS_PAD2)
    return digest.digest()[:key_length]


def mschapv2_mppe_keys(password_hash: bytes, nt_response: bytes, *, is_server: bool) -> MppeKeys:
    """16-byte MPPE start keys of an MS-CHAPv2 run, in the view of the server or the client."""
    master_key = mppe_master_key(hash_nt_password_hash(password_hash), nt_response)
    return MppeKeys(
        send_key=mppe_asymmetric_start_key(master_key, 16, is_send=True, is_server=is_server),
        recv_key=mppe_asymmetric_start_key(master_key, 16, is_send=False, is_server=is_server),
    )


def mschapv1_mppe_keys(password_hash: bytes, challenge8: bytes) -> MppeKeys:
    """RFC 3079 §2.4 128-bit start key of MS-CHAPv1; the same key serves both directions."""
    password_hash_hash = hash_nt_password_hash(password_hash)
    start_key = hashlib.sha1(password_hash_hash + password_hash_hash + challenge8).digest()[:16]
    return MppeKeys(send_key=start_key, recv_key=start_key)


def _key_bytes(key_bits: int) -> int:
    try:
        return _KEY_BYTES[key_bits]
    except KeyError:
        raise ValueError("MPPE key strength must be 40, 56 or 128 bits") from None


def salt_session_key(session_key: bytes, key_length: int) -> bytes:
    """Overwrite the leading bytes of a 40- or 56-bit key with the fixed salt; ``key_length`` in bits."""
    _key_bytes(key_length)
    salt = _SALTS[key_length]
    return salt + session_key[len(salt) :]


def initial_session_key(start_key: bytes, key_length: int) -> bytes:
    """First MPPE session key (no RC4 step); ``key_length`` is the strength in bits: 40, 56 or 128."""
    size = _key_bytes(key_length)
    return salt_session_key(mppe_new_key_from_sha(start_key, start_key, size), key_length)


def rekey_session_key(start_key: bytes, session_key: bytes, key_length: int) -> bytes:
    """RFC 3078 §7.3 key change: RC4-encrypt the SHA-derived interim key with itself, then salt."""
    size = _key_bytes(key_length)
    interim = mppe_new_key_from_sha(start_key, session_key, size)
    encryptor = Cipher(ARC4(interim), mode=None).encryptor()
    return salt_session_key(encryptor.update(interim) + encryptor.finalize(), key_length)
