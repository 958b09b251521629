"""RC4 (ARC4) through the ``cryptography`` package, for MPPE (RFC 3078).

RC4 is broken as a general cipher; MPPE is its only user here. ``cryptography`` moved ARC4 to
the "decrepit" package in version 43 and will drop the old location, so both are tried.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
except ImportError:  # cryptography < 43 keeps ARC4 in the primitives package
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[no-redef,unused-ignore]
        ARC4,
    )

__all__ = ["KEY_SIZES", "Rc4", "rc4"]

# The key sizes cryptography's ARC4 accepts, in bytes; MPPE uses 8 and 16.
KEY_SIZES = frozenset(bits // 8 for bits in ARC4.key_sizes)


class Rc4:
    """One RC4 keystream; successive ``process`` calls continue where the last one stopped."""

    __slots__ = ("_context",)

    def __init__(self, key: bytes) -> None:
        if len(key) not in KEY_SIZES:
            raise ValueError(f"RC4 key of {len(key)} bytes; usable sizes: {sorted(KEY_SIZES)}")
        self._context: CipherContext = Cipher(ARC4(bytes(key)), mode=None).encryptor()

    def process(self, data: bytes | bytearray | memoryview) -> bytes:
        """XOR ``data`` with the next ``len(data)`` keystream bytes (encrypts and decrypts)."""
        return self._context.update(bytes(data))


def rc4(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """RC4 of ``data`` under a fresh keystream for ``key``."""
    return Rc4(key).process(data)
