"""Next-fit allocation over numbered slots: the free/taken bookkeeping under every pool.

A pool maps its addresses (IPv4) or prefixes (IPv6) to slot numbers 0..size-1; `Slots` says which
are taken and hands out the next free one. A cursor starts at slot 0 and moves past every slot
it hands out, wrapping at the end, so a released slot comes back only after every other free
slot was used once (the previous holder's neighbour, conntrack and route state has time to go).

Two representations, picked by size (`slots_for`):
* up to `BITMAP_MAX_SLOTS` slots, one bit per slot. The next free bit is found by a compiled
  regular expression over the bytes (a C loop), so allocation stays fast even in a nearly full
  pool. 2^24 slots cost 2 MiB.
* above that, the set of taken slot numbers: memory follows the leases, not the pool size (a
  /32 delegating /64s has 2^32 slots). Starting at the cursor, the search steps over taken slots
  one by one; next-fit keeps the slots ahead of the cursor mostly free, and the walk is bounded
  by the number of taken slots.

Reserved slots (never handed out: a network address, the gateway) are taken slots that do not
count as used.
"""

from __future__ import annotations

import re

BITMAP_MAX_SLOTS = 1 << 24

# One byte whose eight slots are all taken is 0xff; anything else has a free bit.
_BYTE_WITH_FREE_BIT = re.compile(rb"[^\xff]")


class Slots:
    """Counts, cursor and next-fit search; subclasses store which slots are taken."""

    __slots__ = ("_cursor", "reserved_count", "size", "used")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("a slot count cannot be negative")
        self.size = size
        self.used = 0
        self.reserved_count = 0
        self._cursor = 0

    # -- storage, per representation -------------------------------------------------------

    def is_taken(self, index: int) -> bool:
        raise NotImplementedError

    def _mark(self, index: int) -> None:
        raise NotImplementedError

    def _unmark(self, index: int) -> None:
        raise NotImplementedError

    def _find_free(self, start: int) -> int | None:
        """The first free slot at or after `start`, without wrapping."""
        raise NotImplementedError

    # -- bookkeeping -------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return self.size - self.reserved_count

    @property
    def free(self) -> int:
        return self.total - self.used

    def reserve(self, index: int) -> bool:
        """Keep a slot from ever being handed out; False when it was taken already."""
        if self.is_taken(index):
            return False
        self._mark(index)
        self.reserved_count += 1
        return True

    def unreserve(self, index: int) -> None:
        self._unmark(index)
        self.reserved_count -= 1

    def take(self, index: int) -> None:
        self._mark(index)
        self.used += 1

    def give_back(self, index: int) -> None:
        self._unmark(index)
        self.used -= 1

    def next_free(self) -> int | None:
        """Take the first free slot at or after the cursor, wrapping once; None when full."""
        if self.free <= 0:
            return None
        index = self._find_free(self._cursor)
        if index is None:
            index = self._find_free(0)
        if index is None:  # counts say a slot is free, so the storage and the counts disagree
            raise AssertionError(f"free count {self.free} but no free slot")
        self.take(index)
        self._cursor = index + 1 if index + 1 < self.size else 0
        return index

    @property
    def cursor(self) -> int:
        return self._cursor

    def place_cursor(self, index: int) -> None:
        if 0 <= index < self.size:
            self._cursor = index


class BitmapSlots(Slots):
    """One bit per slot; a set bit is a taken slot."""

    __slots__ = ("_bitmap",)

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._bitmap = bytearray((size + 7) // 8)
        # Bits past the last slot never exist: mark them taken so the byte scan skips them.
        for index in range(size, len(self._bitmap) * 8):
            self._bitmap[index >> 3] |= 1 << (index & 7)

    def is_taken(self, index: int) -> bool:
        return bool(self._bitmap[index >> 3] & (1 << (index & 7)))

    def _mark(self, index: int) -> None:
        self._bitmap[index >> 3] |= 1 << (index & 7)

    def _unmark(self, index: int) -> None:
        self._bitmap[index >> 3] &= ~(1 << (index & 7)) & 0xFF

    def _find_free(self, start: int) -> int | None:
        byte_index = start >> 3
        # The first byte may have free bits before `start`: look at its bits one by one.
        if start & 7:
            for index in range(start, min((byte_index + 1) * 8, self.size)):
                if not self.is_taken(index):
                    return index
            byte_index += 1
        match = _BYTE_WITH_FREE_BIT.search(self._bitmap, byte_index)
        if match is None:
            return None
        found = match.start()
        value = self._bitmap[found]
        bit = ((~value) & (value + 1)).bit_length() - 1  # lowest zero bit
        return found * 8 + bit


class SparseSlots(Slots):
    """The set of taken slot numbers, for slot counts too large for a bitmap."""

    __slots__ = ("_taken",)

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._taken: set[int] = set()

    def is_taken(self, index: int) -> bool:
        return index in self._taken

    def _mark(self, index: int) -> None:
        self._taken.add(index)

    def _unmark(self, index: int) -> None:
        self._taken.discard(index)

    def _find_free(self, start: int) -> int | None:
        index = start
        while index < self.size and index in self._taken:
            index += 1
        return index if index < self.size else None


def slots_for(size: int) -> Slots:
    """The cheaper representation for `size` slots."""
    return BitmapSlots(size) if size <= BITMAP_MAX_SLOTS else SparseSlots(size)
