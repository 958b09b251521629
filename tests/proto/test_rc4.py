"""RC4 against RFC 6229 keystream vectors (keystream = RC4 of zero bytes at the given offsets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpnd.proto.crypto.rc4 import KEY_SIZES, Rc4, rc4

# RFC 6229 §2: (key, {offset: 16 keystream bytes}); a few offsets per key, ends included.
RFC6229 = [
    (
        "0102030405",  # 40-bit
        {
            0: "b2396305f03dc027ccc3524a0a1118a8",
            16: "6982944f18fc82d589c403a47a0d0919",
            240: "28cb1132c96ce286421dcaadb8b69eae",
            1520: "3294f744d8f9790507e70f62e5bbceea",
            4080: "068326a2118416d21f9d04b2cd1ca050",
            4096: "ff25b58995996707e51fbdf08b34d875",
        },
    ),
    (
        "01020304050607",  # 56-bit
        {
            0: "293f02d47f37c9b633f2af5285feb46b",
            256: "d0fdb583073ce85ab83917740ec011d5",
            4096: "e74b0b9731227fd37c0ec08a47ddd8b8",
        },
    ),
    (
        "0102030405060708",  # 64-bit: the size of a 40/56-bit MPPE session key
        {
            0: "97ab8a1bf0afb96132f2f67258da15a8",
            16: "8263efdb45c4a18684ef87e6b19e5b09",
            3072: "bc7683205d4f443dc1f29dda3315c87b",
        },
    ),
    (
        "0102030405060708090a0b0c0d0e0f10",  # 128-bit: the size of a 128-bit MPPE session key
        {
            0: "9ac7cc9a609d1ef7b2932899cde41b97",
            16: "5248c4959014126a6e8a84f11d1a9e1c",
            1008: "e7a72574f8782ae26aabcf9ebcd66065",
            4080: "ff38265c1642c1abe8d3c2fe5e572bf8",
            4096: "a36a4c301ae8ac13610ccbc12256cacc",
        },
    ),
    (
        "0102030405060708090a0b0c0d0e0f101112131415161718",  # 192-bit
        {
            0: "0595e57fe5f0bb3c706edac8a4b2db11",
            240: "b06b9b1e195d13d8f4a7995c4553ac05",
        },
    ),
    (
        "833222772a",  # 40-bit, second key family
        {
            0: "80ad97bdc973df8a2e879e92a497efda",
            2048: "785b60fd7ec4e9fcb6545f350d660fab",
            4096: "bf42c3018c2f7c66bfde524975768115",
        },
    ),
    (
        "1910833222772a",  # 56-bit, second key family
        {
            0: "bc9222dbd3274d8fc66d14ccbda6690b",
            768: "8bdf55cd55061c06dba6be11de4a578a",
            4096: "027881fab4993a1c262024a94fff3f61",
        },
    ),
]

CASES = [(key, offset, stream) for key, offsets in RFC6229 for offset, stream in offsets.items()]


@pytest.mark.parametrize(("key", "offset", "expected"), CASES, ids=[f"{k}@{o}" for k, o, _ in CASES])
def test_rfc6229_keystream(key: str, offset: int, expected: str) -> None:
    keystream = rc4(bytes.fromhex(key), bytes(offset + 16))
    assert keystream[offset:].hex() == expected


@pytest.mark.parametrize(("key", "offset", "expected"), CASES[:6], ids=[f"{k}@{o}" for k, o, _ in CASES[:6]])
def test_streaming_object_continues_the_keystream(key: str, offset: int, expected: str) -> None:
    cipher = Rc4(bytes.fromhex(key))
    skipped = 0
    while skipped < offset:  # uneven chunks: the state must carry over between calls
        step = min(7 + skipped % 61, offset - skipped)
        cipher.process(bytes(step))
        skipped += step
    assert cipher.process(bytes(16)).hex() == expected


def test_plaintext_is_xored_with_the_keystream() -> None:
    key = bytes.fromhex("0102030405")
    plaintext = b"MPPE carries IP over PPP"
    keystream = rc4(key, bytes(len(plaintext)))
    assert rc4(key, plaintext) == bytes(p ^ k for p, k in zip(plaintext, keystream, strict=True))


@given(st.sampled_from(sorted(KEY_SIZES)).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.binary(max_size=600))
def test_decrypting_restores_the_plaintext(key: bytes, data: bytes) -> None:
    ciphertext = rc4(key, data)
    assert len(ciphertext) == len(data)
    assert rc4(key, ciphertext) == data


def test_mppe_key_sizes_are_usable() -> None:
    assert {8, 16} <= KEY_SIZES


@pytest.mark.parametrize("size", [0, 4, 6, 257])
def test_unusable_key_sizes_are_refused(size: int) -> None:
    with pytest.raises(ValueError):
        Rc4(bytes(size))
