"""Published test vectors: RFC 1320 (MD4), RFC 2433 (MS-CHAPv1), RFC 2759 §9 (MS-CHAPv2),
RFC 3079 (MPPE keys), and RFC 1994's CHAP-MD5 formula recomputed with hashlib."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher
from hypothesis import given
from hypothesis import strategies as st

from vpnd.proto import crypto
from vpnd.proto.crypto import mppe, mschap


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def rc4(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(ARC4(key), mode=None).encryptor()
    return encryptor.update(data) + encryptor.finalize()


# --- RFC 1320 §A.5 test suite ---------------------------------------------------------------

MD4_SUITE = [
    (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
    (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
    (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
    (b"message digest", "d9130a8164549fe818874806e1c7014b"),
    (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
    (
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "043f8582f241db351ce627e153e7f0e4",
    ),
    (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
]


@pytest.mark.parametrize(("message", "digest"), MD4_SUITE)
def test_md4_rfc1320_suite(message: bytes, digest: str) -> None:
    assert mschap.md4(message) == h(digest)


# --- RFC 2759 §9.2 (MS-CHAPv2 worked example) -----------------------------------------------

USER = "User"
PASSWORD = "clientPass"
AUTH_CHALLENGE = h("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = h("21402324255E262A28295F2B3A337C7E")
CHALLENGE_HASH = h("D02E4386BCE91226")
NT_HASH = h("44EBBA8D5312B8D611474411F56989AE")
NT_HASH_HASH = h("41C00C584BD2D91C4017A2A12FA59F3F")
NT_RESPONSE = h("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
AUTHENTICATOR_RESPONSE = "S=407A5589115FD0D6209F510FE9C04566932CDA56"


def test_rfc2759_password_encoding() -> None:
    assert PASSWORD.encode("utf-16-le") == h("63006C00690065006E0074005000610073007300")
    assert USER.encode() == h("55736572")


def test_rfc2759_challenge_hash() -> None:
    assert mschap.mschapv2_challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER) == CHALLENGE_HASH


def test_rfc2759_challenge_hash_ignores_domain_prefix() -> None:
    assert mschap.mschapv2_challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, "CORP\\User") == CHALLENGE_HASH
    assert mschap.mschapv2_challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, "A\\B\\User") == CHALLENGE_HASH
    assert mschap.mschapv2_challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, "user") != CHALLENGE_HASH


def test_rfc2759_password_hashes() -> None:
    assert mschap.nt_password_hash(PASSWORD) == NT_HASH
    assert mschap.hash_nt_password_hash(NT_HASH) == NT_HASH_HASH


def test_rfc2759_nt_response() -> None:
    assert mschap.challenge_response(CHALLENGE_HASH, NT_HASH) == NT_RESPONSE
    assert mschap.mschapv2_nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, NT_HASH) == NT_RESPONSE


def test_rfc2759_authenticator_response() -> None:
    got = mschap.mschapv2_authenticator_response(NT_HASH, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER)
    assert got == AUTHENTICATOR_RESPONSE


def test_rfc2759_des_key_expansion_example() -> None:
    # RFC 2759 §9.3: "MyPw" hash split in 7-byte keys, expanded with odd parity.
    password_hash = mschap.nt_password_hash("MyPw")
    assert password_hash == h("FC156AF7EDCD6C0EDDE3337D427F4EAC")
    assert mschap._expand_des_key(password_hash[:7]) == h("FD0B5B5E7F6E34D9")
    assert mschap._expand_des_key(password_hash[7:14]) == h("0E6E796737EA08FE")


def test_single_des_known_answer() -> None:
    # FIPS 81 / NBS example: key 0123456789ABCDEF (parity already set), "Now is t".
    key56 = int("0123456789ABCDEF", 16)
    key7 = 0
    for index in range(8):
        key7 = (key7 << 7) | ((key56 >> (8 * (7 - index) + 1)) & 0x7F)
    assert mschap.des_encrypt_block(key7.to_bytes(7, "big"), b"Now is t") == h("3FA40E8A984D4815")


def test_des_rejects_wrong_sizes() -> None:
    with pytest.raises(ValueError, match="7-byte key"):
        mschap.des_encrypt_block(b"123456", b"12345678")
    with pytest.raises(ValueError, match="8 bytes"):
        mschap.challenge_response(b"1234567", NT_HASH)


# --- RFC 2433 Appendix B (MS-CHAPv1, password "MyPw") ----------------------------------------

V1_CHALLENGE = h("102DB5DF085D3041")


def test_rfc2433_nt_response() -> None:
    password_hash = mschap.nt_password_hash("MyPw")
    assert "MyPw".encode("utf-16-le") == h("4D00790050007700")
    assert password_hash == h("FC156AF7EDCD6C0EDDE3337D427F4EAC")
    expected = h("4E9D3C8F9CFD385D5BF4D3246791956CA4C351AB409A3D61")
    assert mschap.mschapv1_nt_response(V1_CHALLENGE, password_hash) == expected


def test_rfc2433_lm_hash_and_response() -> None:
    lm_hash = mschap.lm_password_hash("MyPw")
    assert lm_hash == h("75BA30198E6D1975AAD3B435B51404EE")
    expected = h("91881D0152AB0C33C524135EC24A95EE64E23CDC2D33347D")
    assert mschap.challenge_response(V1_CHALLENGE, lm_hash) == expected


# --- RFC 3079 §2.5 (MS-CHAPv1 keys, password "clientPass") -----------------------------------


def test_rfc3079_lm_hash() -> None:
    assert mschap.lm_password_hash("clientPass") == h("76A152936096D7830E2390227404AFD2")


def test_rfc3079_mschapv1_128_bit_start_and_session_key() -> None:
    keys = mppe.mschapv1_mppe_keys(mschap.nt_password_hash("clientPass"), V1_CHALLENGE)
    # RFC 3079 §2.5.3 step 4 (its step 3 has a typo in one byte: ...AC CA D1...).
    assert keys.send_key == h("A8947850CFC0ACC1D1789FB62DDCDDB0")
    assert keys.recv_key == keys.send_key
    assert mppe.initial_session_key(keys.send_key, 128) == h("59D159BC09F76F1DA2A86A28FFEC0B1E")


def test_mschapv1_start_key_formula() -> None:
    # The formula of sstp-protocol.md §5.3, recomputed with hashlib.
    expected = hashlib.sha1(NT_HASH_HASH + NT_HASH_HASH + V1_CHALLENGE).digest()[:16]
    assert mppe.mschapv1_mppe_keys(NT_HASH, V1_CHALLENGE).send_key == expected


# --- RFC 3079 §3.5 (MS-CHAPv2 keys, same inputs as RFC 2759 §9.2) ----------------------------

MASTER_KEY = h("FDECE3717A8C838CB388E527AE3CDD31")
SERVER_SEND_START = h("8B7CDC149B993A1BA118CB153F56DCCB")
CLIENT_SEND_START = h("D5F0E9521E3EA9589645E86051C82226")


def test_rfc3079_master_key() -> None:
    assert mppe.mppe_master_key(NT_HASH_HASH, NT_RESPONSE) == MASTER_KEY


def test_rfc3079_start_keys_both_directions() -> None:
    start = mppe.mppe_asymmetric_start_key
    assert start(MASTER_KEY, 16, is_send=True, is_server=True) == SERVER_SEND_START
    assert start(MASTER_KEY, 16, is_send=False, is_server=False) == SERVER_SEND_START
    assert start(MASTER_KEY, 16, is_send=True, is_server=False) == CLIENT_SEND_START
    assert start(MASTER_KEY, 16, is_send=False, is_server=True) == CLIENT_SEND_START
    assert start(MASTER_KEY, 8, is_send=True, is_server=True) == SERVER_SEND_START[:8]


def test_mschapv2_mppe_keys_views_mirror() -> None:
    server = mppe.mschapv2_mppe_keys(NT_HASH, NT_RESPONSE, is_server=True)
    client = mppe.mschapv2_mppe_keys(NT_HASH, NT_RESPONSE, is_server=False)
    assert server.send_key == SERVER_SEND_START
    assert server.recv_key == CLIENT_SEND_START
    assert client.send_key == server.recv_key
    assert client.recv_key == server.send_key
    # sstp-protocol.md §5.2: the SSTP HLAK is MasterReceiveKey ‖ MasterSendKey of the server.
    assert server.recv_key + server.send_key == h(
        "D5F0E9521E3EA9589645E86051C82226 8B7CDC149B993A1BA118CB153F56DCCB"
    )


def test_rfc3079_session_key_128() -> None:
    session = mppe.initial_session_key(SERVER_SEND_START, 128)
    assert session == h("405CB2247A7956E6E211007AE27B22D4")
    assert mppe.mppe_new_key_from_sha(SERVER_SEND_START, SERVER_SEND_START, 16) == session
    assert rc4(session, b"test message") == h("81848317DF68846272FB5ABE")


def test_rfc3079_session_keys_56_and_40() -> None:
    start8 = SERVER_SEND_START[:8]
    assert mppe.initial_session_key(start8, 56) == h("D15C00C49FA62E3E")
    assert mppe.initial_session_key(start8, 40) == h("D1269EC49FA62E3E")
    # Only the first 8 bytes of a longer start key are used for 8-byte keys.
    assert mppe.initial_session_key(SERVER_SEND_START, 40) == h("D1269EC49FA62E3E")


def test_session_key_strength_validated() -> None:
    with pytest.raises(ValueError, match="40, 56 or 128"):
        mppe.initial_session_key(SERVER_SEND_START, 16)
    with pytest.raises(ValueError, match="40, 56 or 128"):
        mppe.salt_session_key(SERVER_SEND_START, 64)


def test_rekey_is_rc4_of_the_sha_interim_key() -> None:
    session = mppe.initial_session_key(SERVER_SEND_START, 128)
    interim = mppe.mppe_new_key_from_sha(SERVER_SEND_START, session, 16)
    assert mppe.rekey_session_key(SERVER_SEND_START, session, 128) == rc4(interim, interim)
    rekeyed40 = mppe.rekey_session_key(SERVER_SEND_START, session, 40)
    assert rekeyed40[:3] == h("D1269E")
    assert len(rekeyed40) == 8


# --- RFC 1994 CHAP-MD5 -----------------------------------------------------------------------


@given(identifier=st.integers(0, 255), secret=st.binary(max_size=64), challenge=st.binary(max_size=64))
def test_chap_md5_matches_rfc1994_formula(identifier: int, secret: bytes, challenge: bytes) -> None:
    expected = hashlib.md5(bytes([identifier]) + secret + challenge).digest()
    assert mschap.chap_md5_response(identifier, secret, challenge) == expected


def test_chap_md5_fixed_value() -> None:
    got = mschap.chap_md5_response(1, b"secret", bytes(range(16)))
    assert got == hashlib.md5(b"\x01secret" + bytes(range(16))).digest()
    assert len(got) == 16


def test_package_reexports() -> None:
    for name in crypto.__all__:
        assert callable(getattr(crypto, name))
    assert crypto.nt_password_hash is mschap.nt_password_hash
    assert crypto.mschapv2_mppe_keys is mppe.mschapv2_mppe_keys
