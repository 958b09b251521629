"""RFC 2548 MPPE key attributes: our encryption and decryption, and FreeRADIUS's real keys."""

from __future__ import annotations

import asyncio
import hashlib
import os
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.freeradius import FreeRadius
from tests.support.peers import require_program
from vpnd.aaa.mppe_keys import (
    MppeKeyError,
    decrypt_mppe_key,
    decrypt_mschap_mppe_keys,
    encrypt_mppe_key,
    encrypt_mschap_mppe_keys,
    mschapv1_keys_from_nt_key,
    server_mppe_keys,
)
from vpnd.aaa.radius import ACCESS_ACCEPT, ACCESS_REQUEST, RadiusClient, RadiusServerSpec
from vpnd.proto.crypto.mppe import mschapv1_mppe_keys, mschapv2_mppe_keys
from vpnd.proto.crypto.mschap import (
    hash_nt_password_hash,
    mschapv1_nt_response,
    mschapv2_nt_response,
    nt_password_hash,
)

SECRET = b"testing123"
REQUEST_AUTHENTICATOR = bytes(range(16))


def reference_encrypt(key: bytes, secret: bytes, request_authenticator: bytes, salt: bytes) -> bytes:
    """RFC 2548 section 2.4.2 spelled out block by block, written apart from the module under test."""
    plaintext = bytes([len(key)]) + key
    while len(plaintext) % 16:
        plaintext += b"\x00"
    blocks = [plaintext[i : i + 16] for i in range(0, len(plaintext), 16)]
    ciphertext = b""
    b = hashlib.md5(secret + request_authenticator + salt).digest()
    for p in blocks:
        c = (int.from_bytes(p, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")
        ciphertext += c
        b = hashlib.md5(secret + c).digest()
    return salt + ciphertext


# --- our code against itself and against the spelled-out RFC ----------------------------------


def test_known_vector_matches_the_rfc_construction():
    key = bytes.fromhex("00112233445566778899aabbccddeeff")
    salt = b"\x80\x01"
    value = encrypt_mppe_key(key, SECRET, REQUEST_AUTHENTICATOR, salt=salt)
    assert value == reference_encrypt(key, SECRET, REQUEST_AUTHENTICATOR, salt)
    assert len(value) == 2 + 32  # 1 + 16 bytes of plaintext pad to two blocks
    assert value[:2] == salt
    assert decrypt_mppe_key(value, SECRET, REQUEST_AUTHENTICATOR) == key


def test_salt_high_bit_is_forced():
    value = encrypt_mppe_key(b"k" * 16, SECRET, REQUEST_AUTHENTICATOR, salt=b"\x12\x34")
    assert value[:2] == b"\x92\x34"
    random_value = encrypt_mppe_key(b"k" * 16, SECRET, REQUEST_AUTHENTICATOR, random_bytes=bytes)
    assert random_value[0] & 0x80


@given(
    key=st.binary(min_size=1, max_size=64),
    secret=st.binary(min_size=1, max_size=40),
    authenticator=st.binary(min_size=16, max_size=16),
    salt=st.binary(min_size=2, max_size=2),
)
def test_round_trip_and_reference(key, secret, authenticator, salt):
    value = encrypt_mppe_key(key, secret, authenticator, salt=salt)
    assert decrypt_mppe_key(value, secret, authenticator) == key
    forced_salt = bytes([salt[0] | 0x80, salt[1]])
    assert value == reference_encrypt(key, secret, authenticator, forced_salt)


def test_wrong_secret_or_authenticator_is_detected():
    value = encrypt_mppe_key(os.urandom(16), SECRET, REQUEST_AUTHENTICATOR, salt=b"\x81\x02")
    with pytest.raises(MppeKeyError):
        decrypt_mppe_key(value, b"other-secret", REQUEST_AUTHENTICATOR)
    with pytest.raises(MppeKeyError):
        decrypt_mppe_key(value, SECRET, bytes(16))


@pytest.mark.parametrize("value", [b"", b"\x80", b"\x80\x01" + bytes(15), b"\x80\x01" + bytes(17)])
def test_bad_lengths_are_rejected(value):
    with pytest.raises(MppeKeyError):
        decrypt_mppe_key(value, SECRET, REQUEST_AUTHENTICATOR)


def test_salt_without_high_bit_is_rejected():
    value = encrypt_mppe_key(b"k" * 16, SECRET, REQUEST_AUTHENTICATOR, salt=b"\x80\x01")
    with pytest.raises(MppeKeyError):
        decrypt_mppe_key(b"\x00\x01" + value[2:], SECRET, REQUEST_AUTHENTICATOR)


@given(st.binary(max_size=80))
def test_decrypt_raises_only_mppe_key_error(value):
    try:
        key = decrypt_mppe_key(value, SECRET, REQUEST_AUTHENTICATOR)
    except MppeKeyError:
        return
    assert 1 <= len(key) <= len(value) - 3


def test_server_keys_keep_send_and_recv_apart():
    send, recv = os.urandom(16), os.urandom(16)
    keys = server_mppe_keys(
        encrypt_mppe_key(send, SECRET, REQUEST_AUTHENTICATOR, salt=b"\x80\x01"),
        encrypt_mppe_key(recv, SECRET, REQUEST_AUTHENTICATOR, salt=b"\x80\x02"),
        SECRET, REQUEST_AUTHENTICATOR,
    )
    assert (keys.send_key, keys.recv_key) == (send, recv)


def test_mschap_mppe_keys_round_trip_and_reference():
    lm_key, nt_key = os.urandom(8), os.urandom(16)
    value = encrypt_mschap_mppe_keys(lm_key, nt_key, SECRET, REQUEST_AUTHENTICATOR)
    assert len(value) == 32
    # RFC 2865 section 5.2 hiding (User-Password) of LM key + NT key + 8 zero bytes.
    b1 = hashlib.md5(SECRET + REQUEST_AUTHENTICATOR).digest()
    c1 = bytes(x ^ y for x, y in zip((lm_key + nt_key)[:16], b1, strict=True))
    assert value[:16] == c1
    b2 = hashlib.md5(SECRET + c1).digest()
    assert value[16:] == bytes(x ^ y for x, y in zip(nt_key[8:] + bytes(8), b2, strict=True))
    assert decrypt_mschap_mppe_keys(value, SECRET, REQUEST_AUTHENTICATOR) == (lm_key, nt_key)
    with pytest.raises(MppeKeyError):
        decrypt_mschap_mppe_keys(value[:31], SECRET, REQUEST_AUTHENTICATOR)


def test_mschapv1_keys_from_nt_key_match_our_mschapv1_derivation():
    password_hash = nt_password_hash("secret-pw")
    challenge = os.urandom(8)
    keys = mschapv1_keys_from_nt_key(hash_nt_password_hash(password_hash), challenge)
    assert keys == mschapv1_mppe_keys(password_hash, challenge)


# --- FreeRADIUS's real keys ---------------------------------------------------------------------

USERS = 'keyuser Cleartext-Password := "Key Pass 1"\n'
PASSWORD = "Key Pass 1"


@pytest.fixture(scope="module")
def radius():
    require_program("freeradius")
    server = FreeRadius(USERS)
    server.start()
    yield server
    server.cleanup()


async def _access_request(radius: FreeRadius, attributes):
    client = RadiusClient(
        [RadiusServerSpec(IPv4Address("127.0.0.1"), SECRET, radius.auth_port, radius.acct_port)],
        timeout=2, max_try=2,
    )
    try:
        return await client.request(ACCESS_REQUEST, [("User-Name", "keyuser"), *attributes])
    finally:
        await client.close()


def test_freeradius_mschapv2_keys_equal_our_derivation(radius):
    authenticator_challenge, peer_challenge = os.urandom(16), os.urandom(16)
    password_hash = nt_password_hash(PASSWORD)
    nt_response = mschapv2_nt_response(authenticator_challenge, peer_challenge, "keyuser", password_hash)
    response = b"\x07\x00" + peer_challenge + bytes(8) + nt_response
    reply = asyncio.run(_access_request(radius, [
        ("MS-CHAP-Challenge", authenticator_challenge), ("MS-CHAP2-Response", response),
    ]))
    assert reply.code == ACCESS_ACCEPT
    send_value, recv_value = reply.first("MS-MPPE-Send-Key"), reply.first("MS-MPPE-Recv-Key")
    assert isinstance(send_value, bytes) and isinstance(recv_value, bytes)
    send = decrypt_mppe_key(send_value, SECRET, reply.request_authenticator)
    recv = decrypt_mppe_key(recv_value, SECRET, reply.request_authenticator)
    server_view = mschapv2_mppe_keys(password_hash, nt_response, is_server=True)
    client_view = mschapv2_mppe_keys(password_hash, nt_response, is_server=False)
    assert (send, recv) == (server_view.send_key, server_view.recv_key)
    assert send == client_view.recv_key and recv == client_view.send_key
    assert send != recv


def test_freeradius_mschapv1_keys_equal_our_derivation(radius):
    challenge = os.urandom(8)
    password_hash = nt_password_hash(PASSWORD)
    response = b"\x01\x01" + bytes(24) + mschapv1_nt_response(challenge, password_hash)
    reply = asyncio.run(_access_request(radius, [
        ("MS-CHAP-Challenge", challenge), ("MS-CHAP-Response", response),
    ]))
    assert reply.code == ACCESS_ACCEPT
    legacy = reply.first("MS-CHAP-MPPE-Keys")
    assert isinstance(legacy, bytes)
    _, nt_key = decrypt_mschap_mppe_keys(legacy, SECRET, reply.request_authenticator)
    assert nt_key == hash_nt_password_hash(password_hash)
    assert mschapv1_keys_from_nt_key(nt_key, challenge) == mschapv1_mppe_keys(password_hash, challenge)
