"""The empty-cheap FIFO the protocol layers queue their events and held packets in."""

from __future__ import annotations

import sys
from collections import deque

import pytest

from vpnd.proto.fifo import Fifo


def test_first_in_first_out() -> None:
    queue: Fifo[int] = Fifo()
    assert not queue and len(queue) == 0
    for item in (1, 2, 3):
        queue.append(item)
    assert list(queue) == [1, 2, 3] and len(queue) == 3
    assert [queue.popleft(), queue.popleft()] == [1, 2]
    queue.clear()
    assert not queue
    with pytest.raises(IndexError):
        queue.popleft()


def test_a_bounded_queue_drops_the_oldest_like_a_bounded_deque() -> None:
    ours: Fifo[int] = Fifo(maxlen=3)
    theirs: deque[int] = deque(maxlen=3)
    for item in range(7):
        ours.append(item)
        theirs.append(item)
        assert list(ours) == list(theirs)


def test_an_empty_queue_is_much_smaller_than_an_empty_deque() -> None:
    queue: Fifo[int] = Fifo()
    size = sys.getsizeof(queue) + sys.getsizeof(queue._items)
    assert size * 4 < sys.getsizeof(deque())
