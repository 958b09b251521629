"""A first-in, first-out queue that costs almost nothing while it is empty.

Every session holds about ten small queues (events of each layer, FSM signals, held packets)
that are empty nearly all the time. ``collections.deque`` allocates a 64-slot block as soon as
it is made, about 0.7 KiB each; this keeps a plain list instead (56 bytes empty), whose
``pop(0)`` is as cheap as ``popleft`` at the lengths these queues reach. With ``maxlen`` the
oldest item makes room for a new one, as a bounded deque does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Fifo(Generic[T]):
    __slots__ = ("_items", "maxlen")

    def __init__(self, maxlen: int | None = None) -> None:
        self._items: list[T] = []
        self.maxlen = maxlen

    def append(self, item: T) -> None:
        items = self._items
        if self.maxlen is not None and len(items) >= self.maxlen:
            del items[0]
        items.append(item)

    def popleft(self) -> T:
        """The oldest item; IndexError when empty, as deque does."""
        return self._items.pop(0)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)
