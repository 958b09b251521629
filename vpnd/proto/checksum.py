"""The Internet checksum (RFC 1071), fast in CPython: one place for every packet the project
builds or checks (IPv6 link services, TCP offload).

2**16 ≡ 1 (mod 0xFFFF), so a buffer read as one big integer has the same residue as the sum of
its 16-bit words: C-level integer arithmetic instead of a Python loop over words.
"""

from __future__ import annotations

import functools

Packet = bytes | bytearray | memoryview


def ones_sum(data: Packet, start: int = 0) -> int:
    """The 16-bit ones'-complement sum of ``data`` (big-endian words, an odd last byte padded with
    zero) plus ``start``: 1..0xFFFF, or 0 only when everything summed is zero."""
    value = word_sum(data)
    total = value + start
    folded = total % 0xFFFF
    return folded if folded or not (total or int.from_bytes(data, "little")) else 0xFFFF


def word_sum(data: Packet) -> int:
    """The sum of ``data``'s big-endian 16-bit words, reduced mod 0xFFFF but not normalised.

    Reading the bytes little-endian is faster in CPython and gives the byte-swapped sum, which is
    the big-endian one times 256 (mod 0xFFFF); an odd last byte then lands where padding wants it.
    Halving folds reduce a long integer faster than one ``%`` does."""
    value = int.from_bytes(data, "little")
    for shift, mask in _fold_steps(len(data)):
        value = (value >> shift) + (value & mask)
    return value % 0xFFFF * 256


@functools.lru_cache(maxsize=64)
def _fold_steps(length: int) -> tuple[tuple[int, int], ...]:
    """(shift, mask) pairs that fold a ``length``-byte integer to about 1000 bits, each shift a
    multiple of 16 bits so that 2**shift ≡ 1 (mod 0xFFFF)."""
    steps = []
    bits = length * 8
    while bits > 1024:
        shift = (bits + 31) // 32 * 16
        steps.append((shift, (1 << shift) - 1))
        bits = shift + 1
    return tuple(steps)


def internet_checksum(data: Packet, start: int = 0) -> int:
    """The Internet checksum of ``data`` (with a partial sum ``start``, e.g. a pseudo-header's)."""
    return 0xFFFF - ones_sum(data, start)
