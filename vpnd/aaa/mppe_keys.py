"""MPPE keys as RADIUS carries them (RFC 2548 sections 2.4.1-2.4.3).

MS-MPPE-Send-Key / MS-MPPE-Recv-Key (2.4.2, 2.4.3): a 2-byte Salt (high bit set, unique within
the packet), then the encrypted String. The plaintext String is Key-Length (1 byte), the Key and
zero padding up to a multiple of 16 bytes. With S the shared secret, R the Request Authenticator
of the Access-Request and A the Salt:

    b(1) = MD5(S + R + A)       c(1) = p(1) xor b(1)
    b(i) = MD5(S + c(i-1))      c(i) = p(i) xor b(i)

MS-CHAP-MPPE-Keys (2.4.1, sent for MS-CHAPv1): 8 bytes LM key and 16 bytes NT key (the hash of
the NT password hash), padded to 32 bytes and hidden like User-Password (RFC 2865 section 5.2):
the same chain without a salt.

"Send" and "Recv" are named from the NAS's side: MS-MPPE-Send-Key is what the NAS (the PPP
server) sends with, so it maps directly to the server view of ``MppeKeys``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from vpnd.proto.ppp.auth.types import MppeKeys

BLOCK = 16
SALT_LENGTH = 2
MAX_KEY_LENGTH = 255 - 1  # the Key-Length byte holds it; RADIUS limits the whole value anyway
MSCHAP_MPPE_KEYS_LENGTH = 32  # LM key (8) + NT key (16) + padding (8)


class MppeKeyError(ValueError):
    """An encrypted key attribute that cannot be decrypted into a key."""


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))


def md5_chain(data: bytes, secret: bytes, first_vector: bytes, *, encrypt: bool) -> bytes:
    """The RFC 2865 section 5.2 / RFC 2548 cipher: block i is XORed with MD5(secret + vector), the
    vector being ``first_vector`` for the first block and the previous ciphertext block after it.
    ``data`` is a multiple of 16 bytes."""
    out = bytearray()
    vector = first_vector
    for start in range(0, len(data), BLOCK):
        block = data[start : start + BLOCK]
        mixed = _xor(block, hashlib.md5(secret + vector).digest())
        out += mixed
        vector = mixed if encrypt else block  # the chain always continues with the ciphertext
    return bytes(out)


def encrypt_mppe_key(
    key: bytes,
    secret: bytes,
    request_authenticator: bytes,
    salt: bytes | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Attribute value (Salt + String) of MS-MPPE-Send-Key / MS-MPPE-Recv-Key for ``key``."""
    if len(request_authenticator) != BLOCK:
        raise ValueError("the Request Authenticator is 16 bytes")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError("key too long")
    if salt is None:
        salt = random_bytes(SALT_LENGTH)
    if len(salt) != SALT_LENGTH:
        raise ValueError("the salt is 2 bytes")
    salt = bytes([salt[0] | 0x80]) + salt[1:]  # RFC 2548: the high bit of the salt is always set
    plain = bytes([len(key)]) + key
    plain += bytes(-len(plain) % BLOCK)
    return salt + md5_chain(plain, secret, request_authenticator + salt, encrypt=True)


def decrypt_mppe_key(value: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    """The key inside an MS-MPPE-Send-Key / MS-MPPE-Recv-Key value; MppeKeyError if malformed."""
    if len(request_authenticator) != BLOCK:
        raise MppeKeyError("the Request Authenticator is 16 bytes")
    if len(value) < SALT_LENGTH + BLOCK or (len(value) - SALT_LENGTH) % BLOCK:
        raise MppeKeyError(f"encrypted key of {len(value)} bytes: expected 2 + a multiple of 16")
    salt, encrypted = value[:SALT_LENGTH], value[SALT_LENGTH:]
    if not salt[0] & 0x80:
        raise MppeKeyError("salt without its high bit")
    plain = md5_chain(encrypted, secret, request_authenticator + salt, encrypt=False)
    key_length = plain[0]
    if key_length == 0 or 1 + key_length > len(plain):
        raise MppeKeyError(f"key length {key_length} does not fit the {len(plain) - 1} decrypted bytes")
    # A wrong secret turns the padding into noise: treat non-zero padding as a decryption failure.
    if any(plain[1 + key_length :]):
        raise MppeKeyError("non-zero padding (wrong shared secret?)")
    return plain[1 : 1 + key_length]


def server_mppe_keys(
    send_key_value: bytes, recv_key_value: bytes, secret: bytes, request_authenticator: bytes
) -> MppeKeys:
    """Server-view MPPE keys from the MS-MPPE-Send-Key and MS-MPPE-Recv-Key of an Access-Accept."""
    return MppeKeys(
        send_key=decrypt_mppe_key(send_key_value, secret, request_authenticator),
        recv_key=decrypt_mppe_key(recv_key_value, secret, request_authenticator),
    )


def encrypt_mschap_mppe_keys(
    lm_key: bytes, nt_key: bytes, secret: bytes, request_authenticator: bytes
) -> bytes:
    """MS-CHAP-MPPE-Keys value (RFC 2548 section 2.4.1) for an 8-byte LM key and a 16-byte NT key."""
    if len(lm_key) != 8 or len(nt_key) != 16:
        raise ValueError("MS-CHAP-MPPE-Keys holds an 8-byte LM key and a 16-byte NT key")
    if len(request_authenticator) != BLOCK:
        raise ValueError("the Request Authenticator is 16 bytes")
    plain = lm_key + nt_key + bytes(MSCHAP_MPPE_KEYS_LENGTH - 24)
    return md5_chain(plain, secret, request_authenticator, encrypt=True)


def decrypt_mschap_mppe_keys(
    value: bytes, secret: bytes, request_authenticator: bytes
) -> tuple[bytes, bytes]:
    """(LM key, NT key) from an MS-CHAP-MPPE-Keys value; MppeKeyError if malformed."""
    if len(request_authenticator) != BLOCK:
        raise MppeKeyError("the Request Authenticator is 16 bytes")
    if len(value) != MSCHAP_MPPE_KEYS_LENGTH:
        raise MppeKeyError(f"MS-CHAP-MPPE-Keys of {len(value)} bytes: expected 32")
    plain = md5_chain(value, secret, request_authenticator, encrypt=False)
    return plain[:8], plain[8:24]


def mschapv1_keys_from_nt_key(nt_key: bytes, challenge8: bytes) -> MppeKeys:
    """RFC 3079 section 2.4 128-bit start key of MS-CHAPv1 from the NT key (the NT hash hash).

    MS-CHAPv1 uses one key in both directions.
    """
    if len(nt_key) != 16 or len(challenge8) != 8:
        raise ValueError("the NT key is 16 bytes and the MS-CHAPv1 challenge 8 bytes")
    start_key = hashlib.sha1(nt_key + nt_key + challenge8).digest()[:16]
    return MppeKeys(send_key=start_key, recv_key=start_key)

