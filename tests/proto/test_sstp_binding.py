"""SSTP crypto binding: MS-SSTP §4.7 vectors, HLAK ordering, and every way a binding can fail."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.auth.types import MppeKeys
from vpnd.proto.sstp.binding import (
    BindingFailure,
    build_call_connected,
    cert_hash,
    compound_mac,
    compound_mac_key,
    hlak_from_keys,
    verify_call_connected,
)
from vpnd.proto.sstp.packets import HashProtocol, encode_call_connected

# MS-SSTP §4.7, SHA256 case.
NONCE_256 = bytes.fromhex("412B489AEBD7ECC7D08966F26BE7CD72B231A0E9210D7C91B308862B0344C435")
HLAK_256 = bytes.fromhex("2A1BB40D55AB0F5EF32F06F2B3CC73C48FD3FAC41D7A1315A19228D9024CA164")
CERT_256 = bytes.fromhex("7993EF314C493DACE9F02D60E7E61C84B6690AAFE9D7AEEA92CBBE8AD599422D")
CMAC_256 = bytes.fromhex("52A68EFD8CFFBF52770B8F0FE8EC73716583AF6D611EB6D179B3B20840985449")
# MS-SSTP §4.7, SHA1 case.
NONCE_1 = bytes.fromhex("0F1A2D58D4A3E3000FAD3CE4906E07B707AA9E441CCEAC5CBD7B2CC1C9D86CDF")
HLAK_1 = bytes.fromhex("4B3128F43925D9006EEFB1C4E86515A1D88E56BAB3CA2BDF0373B7F5A8A13B19")
CERT_1 = bytes.fromhex("5826B629BDA59B8E6FD8DCD2622FD34C534805A5")
CMAC_1 = bytes.fromhex("69915DD583D8062FEF16F61DB2F03290EC27CB6C")

VECTORS = [
    (HashProtocol.SHA256, NONCE_256, HLAK_256, CERT_256, CMAC_256),
    (HashProtocol.SHA1, NONCE_1, HLAK_1, CERT_1, CMAC_1),
]


@pytest.mark.parametrize(("proto", "nonce", "hlak", "cert", "cmac"), VECTORS, ids=["sha256", "sha1"])
def test_spec_vector_compound_mac(
    proto: HashProtocol, nonce: bytes, hlak: bytes, cert: bytes, cmac: bytes
) -> None:
    packet = build_call_connected(proto, nonce, cert, hlak)
    assert len(packet) == 112
    assert packet[:16] == bytes.fromhex("100100700004000100030068000000") + bytes([proto])
    assert packet[80 : 80 + len(cmac)] == cmac
    assert packet[80 + len(cmac) :] == bytes(32 - len(cmac))
    cmk = compound_mac_key(hlak, proto)
    assert len(cmk) == proto.digest_size
    assert compound_mac(cmk, packet, proto) == cmac


@pytest.mark.parametrize(("proto", "nonce", "hlak", "cert", "cmac"), VECTORS, ids=["sha256", "sha1"])
def test_spec_vector_verifies(
    proto: HashProtocol, nonce: bytes, hlak: bytes, cert: bytes, cmac: bytes
) -> None:
    packet = encode_call_connected(proto, nonce, cert, cmac)
    result = verify_call_connected(packet, nonce=nonce, cert_hashes={proto: cert}, offered=0x03, hlak=hlak)
    assert result.ok
    assert result.hash_protocol is proto
    assert result.cause == "crypto binding verified"


def test_cmk_uses_little_endian_length() -> None:
    hlak = bytes(range(32))
    expected = hmac.new(hlak, b"SSTP inner method derived CMK" + b"\x20\x00\x01", hashlib.sha256).digest()
    assert compound_mac_key(hlak, HashProtocol.SHA256) == expected
    expected1 = hmac.new(hlak, b"SSTP inner method derived CMK" + b"\x14\x00\x01", hashlib.sha1).digest()
    assert compound_mac_key(hlak, HashProtocol.SHA1) == expected1


def test_compound_mac_ignores_mac_field_and_needs_112_bytes() -> None:
    cmk = compound_mac_key(HLAK_256, HashProtocol.SHA256)
    a = encode_call_connected(HashProtocol.SHA256, NONCE_256, CERT_256, b"\x11" * 32)
    b = encode_call_connected(HashProtocol.SHA256, NONCE_256, CERT_256, b"\x22" * 32)
    assert compound_mac(cmk, a, HashProtocol.SHA256) == compound_mac(cmk, b, HashProtocol.SHA256)
    with pytest.raises(ProtocolError):
        compound_mac(cmk, a[:111], HashProtocol.SHA256)


def test_cert_hash() -> None:
    der = b"0\x82\x01\x0a fake certificate bytes"
    assert cert_hash(der, HashProtocol.SHA1) == hashlib.sha1(der).digest()
    assert cert_hash(der, HashProtocol.SHA256) == hashlib.sha256(der).digest()


def test_hlak_ordering_matches_on_both_ends() -> None:
    client_send = bytes.fromhex("D5F0E9521E3EA9589645E86051C82226")
    client_recv = bytes.fromhex("8B7CDC149B993A1BA118CB153F56DCCB")
    client = hlak_from_keys(MppeKeys(send_key=client_send, recv_key=client_recv), is_server=False)
    server = hlak_from_keys(MppeKeys(send_key=client_recv, recv_key=client_send), is_server=True)
    # RFC 3079 example inputs: the doc's HLAK for these MS-CHAPv2 keys.
    assert client == server == client_send + client_recv


def test_hlak_truncates_pads_and_zero_without_keys() -> None:
    keys = MppeKeys(send_key=b"\x01" * 20, recv_key=b"\x02" * 8)
    assert hlak_from_keys(keys, is_server=False) == b"\x01" * 16 + b"\x02" * 8 + bytes(8)
    assert hlak_from_keys(keys, is_server=True) == b"\x02" * 8 + bytes(8) + b"\x01" * 16
    assert hlak_from_keys(None, is_server=True) == bytes(32)
    assert hlak_from_keys(None, is_server=False) == bytes(32)


def expected_failure(offset: int, proto: HashProtocol) -> set[BindingFailure]:
    """Which cause(s) a change of the byte at ``offset`` may produce."""
    if offset in (0, 2, 3, 4, 5, 6, 7, 9, 10, 11):
        return {BindingFailure.MALFORMED}
    if offset == 15:
        return {BindingFailure.HASH_PROTOCOL_NOT_OFFERED, BindingFailure.CERT_HASH_MISMATCH}
    if 16 <= offset < 48:
        return {BindingFailure.WRONG_NONCE}
    if 48 <= offset < 48 + proto.digest_size:
        return {BindingFailure.CERT_HASH_MISMATCH}
    # Reserved bytes, the SHA1 cert pad and the MAC field itself are all covered by the MAC.
    return {BindingFailure.COMPOUND_MAC_MISMATCH}


@pytest.mark.parametrize(("proto", "nonce", "hlak", "cert", "cmac"), VECTORS, ids=["sha256", "sha1"])
def test_tampering_any_byte_fails_with_the_right_cause(
    proto: HashProtocol, nonce: bytes, hlak: bytes, cert: bytes, cmac: bytes
) -> None:
    good = build_call_connected(proto, nonce, cert, hlak)
    for offset in range(112):
        for flip in (0x01, 0x80):
            tampered = bytearray(good)
            tampered[offset] ^= flip
            result = verify_call_connected(
                bytes(tampered), nonce=nonce, cert_hashes={proto: cert}, offered=0x03, hlak=hlak
            )
            assert not result.ok, (offset, flip)
            if offset in (2, 10) and flip == 0x80:
                # R bits of the packet / attribute length: ignored by the parser, caught by the MAC.
                assert result.failure is BindingFailure.COMPOUND_MAC_MISMATCH
            elif offset in (1, 8, 12, 13, 14):
                # Reserved bits: parse fine, the MAC covers them (bit 0 of byte 1 is C).
                allowed = {BindingFailure.COMPOUND_MAC_MISMATCH, BindingFailure.MALFORMED}
                assert result.failure in allowed, (offset, flip, result)
            else:
                assert result.failure in expected_failure(offset, proto), (offset, flip, result)


def test_failure_causes() -> None:
    good = encode_call_connected(HashProtocol.SHA256, NONCE_256, CERT_256, CMAC_256)
    hashes = {HashProtocol.SHA256: CERT_256}

    def check(**overrides: object) -> BindingFailure | None:
        args: dict[str, object] = {
            "nonce": NONCE_256, "cert_hashes": hashes, "offered": 0x03, "hlak": HLAK_256
        }
        args.update(overrides)
        packet = args.pop("packet", good)
        return verify_call_connected(packet, **args).failure  # type: ignore[arg-type]

    assert check() is None
    assert check(nonce=bytes(32)) is BindingFailure.WRONG_NONCE
    assert check(cert_hashes={HashProtocol.SHA256: bytes(32)}) is BindingFailure.CERT_HASH_MISMATCH
    assert check(cert_hashes={HashProtocol.SHA1: CERT_1}) is BindingFailure.CERT_HASH_MISMATCH
    assert check(offered=0x01) is BindingFailure.HASH_PROTOCOL_NOT_OFFERED
    assert check(hlak=bytes(32)) is BindingFailure.COMPOUND_MAC_MISMATCH
    assert check(packet=good[:111]) is BindingFailure.MALFORMED
    assert check(packet=good + b"\x00") is BindingFailure.MALFORMED
    assert check(packet=b"") is BindingFailure.MALFORMED
    three = bytearray(good)
    three[15] = 3
    assert check(packet=bytes(three)) is BindingFailure.HASH_PROTOCOL_NOT_OFFERED


def test_cert_hash_failure_cause_mentions_proxy() -> None:
    packet = build_call_connected(HashProtocol.SHA256, NONCE_256, bytes(32), HLAK_256)
    result = verify_call_connected(
        packet, nonce=NONCE_256, cert_hashes={HashProtocol.SHA256: CERT_256}, offered=3, hlak=HLAK_256
    )
    assert result.failure is BindingFailure.CERT_HASH_MISMATCH
    assert result.cause.startswith("crypto binding failed: certificate hash mismatch")
    assert "TLS-inspecting proxy" in result.cause


def test_sha1_mac_pad_must_be_zero() -> None:
    packet = bytearray(build_call_connected(HashProtocol.SHA1, NONCE_1, CERT_1, HLAK_1))
    packet[111] = 1
    result = verify_call_connected(
        bytes(packet), nonce=NONCE_1, cert_hashes={HashProtocol.SHA1: CERT_1}, offered=1, hlak=HLAK_1
    )
    assert result.failure is BindingFailure.COMPOUND_MAC_MISMATCH
