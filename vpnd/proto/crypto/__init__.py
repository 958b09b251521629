"""Crypto of PPP authentication: MD4/DES based MS-CHAP responses, CHAP-MD5, MPPE key derivation."""

from vpnd.proto.crypto.mppe import (
    initial_session_key,
    mppe_asymmetric_start_key,
    mppe_master_key,
    mppe_new_key_from_sha,
    mschapv1_mppe_keys,
    mschapv2_mppe_keys,
    rekey_session_key,
    salt_session_key,
)
from vpnd.proto.crypto.mschap import (
    challenge_response,
    chap_md5_response,
    des_encrypt_block,
    hash_nt_password_hash,
    lm_password_hash,
    md4,
    mschapv1_nt_response,
    mschapv2_authenticator_response,
    mschapv2_challenge_hash,
    mschapv2_nt_response,
    nt_password_hash,
)

__all__ = [
    "challenge_response",
    "chap_md5_response",
    "des_encrypt_block",
    "hash_nt_password_hash",
    "initial_session_key",
    "lm_password_hash",
    "md4",
    "mppe_asymmetric_start_key",
    "mppe_master_key",
    "mppe_new_key_from_sha",
    "mschapv1_mppe_keys",
    "mschapv1_nt_response",
    "mschapv2_authenticator_response",
    "mschapv2_challenge_hash",
    "mschapv2_mppe_keys",
    "mschapv2_nt_response",
    "nt_password_hash",
    "rekey_session_key",
    "salt_session_key",
]
