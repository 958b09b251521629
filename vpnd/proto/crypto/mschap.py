"""Hashes and responses of CHAP-MD5 (RFC 1994), MS-CHAPv1 (RFC 2433) and MS-CHAPv2 (RFC 2759).

Usernames and passwords are ``str``; usernames go into the MS-CHAPv2 challenge hash as UTF-8
(plain ASCII for every name Windows sends in practice), passwords into the NT hash as UTF-16LE.
"""

from __future__ import annotations

import hashlib

from Crypto.Hash import MD4
from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # cryptography < 43 keeps TripleDES in the primitives package
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[no-redef,unused-ignore]
        TripleDES,
    )

__all__ = [
    "challenge_response",
    "chap_md5_response",
    "des_encrypt_block",
    "hash_nt_password_hash",
    "lm_password_hash",
    "md4",
    "mschapv1_nt_response",
    "mschapv2_authenticator_response",
    "mschapv2_challenge_hash",
    "mschapv2_nt_response",
    "nt_password_hash",
]

# RFC 2759 §8.7 GenerateAuthenticatorResponse constants.
_MAGIC_SERVER_SIGNING = b"Magic server to client signing constant"
_MAGIC_PAD = b"Pad to make it do more than one iteration"
# RFC 2433 Appendix A LmEncryptPassword: the fixed plaintext of the LAN Manager hash.
_LM_MAGIC = b"KGS!@#$%"


def md4(data: bytes) -> bytes:
    """MD4 digest (RFC 1320); OpenSSL 3 hides MD4 in its legacy provider, so pycryptodome computes it."""
    return bytes(MD4.new(data).digest())


def nt_password_hash(password: str) -> bytes:
    """RFC 2759 §8.3 NtPasswordHash: MD4 of the UTF-16LE password."""
    return md4(password.encode("utf-16-le", errors="surrogatepass"))


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    """RFC 2759 §8.4 HashNtPasswordHash: MD4 of the NT hash."""
    return md4(password_hash)


def _expand_des_key(key7: bytes) -> bytes:
    """Spread 56 key bits over 8 bytes (7 bits each, high bits first) and set odd parity in bit 0."""
    bits = int.from_bytes(key7, "big")
    out = bytearray()
    for index in range(8):
        seven = (bits >> (49 - 7 * index)) & 0x7F
        byte = seven << 1
        if bin(seven).count("1") % 2 == 0:
            byte |= 1
        out.append(byte)
    return bytes(out)


def des_encrypt_block(key7: bytes, block8: bytes) -> bytes:
    """Single DES (ECB, one block) keyed with a 7-byte key, as RFC 2759 §8.6 DesEncrypt."""
    if len(key7) != 7 or len(block8) != 8:
        raise ValueError("DES needs a 7-byte key and an 8-byte block")
    # With K1 = K2 = K3, TripleDES (EDE) collapses to single DES; cryptography deprecates
    # the 8-byte shorthand, so the key is repeated explicitly.
    encryptor = Cipher(TripleDES(_expand_des_key(key7) * 3), modes.ECB()).encryptor()
    return encryptor.update(block8) + encryptor.finalize()


def challenge_response(challenge8: bytes, password_hash: bytes) -> bytes:
    """RFC 2759 §8.5 ChallengeResponse: three DES encryptions keyed by the zero-padded 21-byte hash."""
    if len(challenge8) != 8 or len(password_hash) != 16:
        raise ValueError("challenge must be 8 bytes and password hash 16 bytes")
    padded = password_hash + bytes(5)
    return b"".join(des_encrypt_block(padded[i : i + 7], challenge8) for i in (0, 7, 14))


def lm_password_hash(password: str) -> bytes:
    """RFC 2433 Appendix A LmPasswordHash: upper-case OEM password, 14 bytes, two DES keys."""
    oem = password.upper().encode("latin-1", errors="replace")[:14].ljust(14, b"\x00")
    return des_encrypt_block(oem[:7], _LM_MAGIC) + des_encrypt_block(oem[7:], _LM_MAGIC)


def _strip_domain(username: str) -> str:
    # RFC 2759 §8.2: only the user part after the last backslash enters the challenge hash.
    return username.rsplit("\\", 1)[-1]


def mschapv2_challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, username: str) -> bytes:
    """RFC 2759 §8.2 ChallengeHash: first 8 bytes of SHA1(peer ‖ authenticator ‖ user name)."""
    if len(peer_challenge) != 16 or len(authenticator_challenge) != 16:
        raise ValueError("MS-CHAPv2 challenges are 16 bytes")
    user = _strip_domain(username).encode("utf-8", errors="replace")
    return hashlib.sha1(peer_challenge + authenticator_challenge + user).digest()[:8]


def mschapv2_nt_response(
    authenticator_challenge: bytes, peer_challenge: bytes, username: str, password_hash: bytes
) -> bytes:
    """RFC 2759 §8.1 GenerateNTResponse, from the NT password hash."""
    challenge = mschapv2_challenge_hash(peer_challenge, authenticator_challenge, username)
    return challenge_response(challenge, password_hash)


def mschapv2_authenticator_response(
    password_hash: bytes,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    username: str,
) -> str:
    """RFC 2759 §8.7 GenerateAuthenticatorResponse: ``"S="`` plus 40 upper-case hex digits."""
    password_hash_hash = hash_nt_password_hash(password_hash)
    digest = hashlib.sha1(password_hash_hash + nt_response + _MAGIC_SERVER_SIGNING).digest()
    challenge = mschapv2_challenge_hash(peer_challenge, authenticator_challenge, username)
    return "S=" + hashlib.sha1(digest + challenge + _MAGIC_PAD).hexdigest().upper()


def mschapv1_nt_response(challenge8: bytes, password_hash: bytes) -> bytes:
    """RFC 2433 Appendix A NtChallengeResponse: the 8-byte challenge encrypted under the NT hash."""
    return challenge_response(challenge8, password_hash)


def chap_md5_response(identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 §4.1: MD5(Identifier ‖ secret ‖ Challenge)."""
    return hashlib.md5(bytes([identifier & 0xFF]) + secret + challenge).digest()
