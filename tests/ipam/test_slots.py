"""The two slot stores behave the same; the sparse one costs memory per taken slot only."""

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpnd.ipam.slots import BITMAP_MAX_SLOTS, BitmapSlots, Slots, SparseSlots, slots_for


def test_representation_follows_size() -> None:
    assert isinstance(slots_for(BITMAP_MAX_SLOTS), BitmapSlots)
    assert isinstance(slots_for(BITMAP_MAX_SLOTS + 1), SparseSlots)


@pytest.mark.parametrize("kind", [BitmapSlots, SparseSlots])
def test_next_fit_wraps_and_reuses_a_released_slot_last(kind: type[Slots]) -> None:
    slots = kind(5)
    assert slots.reserve(1) and not slots.reserve(1)
    assert [slots.next_free() for _ in range(4)] == [0, 2, 3, 4]
    assert slots.next_free() is None and slots.free == 0 and slots.total == 4
    slots.give_back(2)
    slots.give_back(0)
    assert [slots.next_free(), slots.next_free()] == [0, 2]  # cursor had wrapped to 0
    slots.unreserve(1)
    assert slots.next_free() == 1 and slots.used == 5


# Each step: True = take the next free slot, an integer = give back the n-th held slot.
steps = st.lists(st.one_of(st.just(True), st.integers(0, 40)), max_size=80)


@given(size=st.integers(0, 40), script=steps, reserved=st.sets(st.integers(0, 39), max_size=5))
def test_bitmap_and_sparse_agree(size: int, script: list[bool | int], reserved: set[int]) -> None:
    stores = [BitmapSlots(size), SparseSlots(size)]
    held: list[int] = []
    for store in stores:
        for index in sorted(reserved):
            if index < size:
                store.reserve(index)
    for step in script:
        if step is True:
            got = {store.next_free() for store in stores}
            assert len(got) == 1
            index = got.pop()
            if index is None:
                assert all(store.free == 0 for store in stores)
            else:
                assert index not in held and index not in reserved
                held.append(index)
        elif held:
            index = held.pop(step % len(held))
            for store in stores:
                store.give_back(index)
    for store in stores:
        assert store.used == len(held)
        assert all(store.is_taken(index) for index in held)


def test_sparse_store_of_2_to_the_32_slots_costs_per_lease_only() -> None:
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        slots = slots_for(1 << 32)
        taken = [slots.next_free() for _ in range(1000)]
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert taken == list(range(1000))
    assert after - before < 200 * 1024
