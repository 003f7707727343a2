"""IntervalSet: the free-address structure behind O(log n) allocation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb.ipam.intervals import IntervalSet


def spans(s: IntervalSet) -> list[tuple[int, int]]:
    return list(s.intervals())


@pytest.mark.parametrize(
    ("given_intervals", "expected"),
    [
        ([], []),
        ([(5, 5)], [(5, 5)]),
        ([(1, 3), (4, 6)], [(1, 6)]),  # adjacent intervals merge
        ([(1, 5), (3, 9)], [(1, 9)]),  # overlapping intervals merge
        ([(10, 12), (1, 2)], [(1, 2), (10, 12)]),  # input order does not matter
        ([(1, 9), (2, 3)], [(1, 9)]),  # contained interval vanishes
    ],
)
def test_construction_normalises(given_intervals: list[tuple[int, int]], expected: list[tuple[int, int]]) -> None:
    s = IntervalSet(given_intervals)
    assert spans(s) == expected
    assert s.size == sum(last - first + 1 for first, last in expected)


def test_construction_rejects_reversed_interval() -> None:
    with pytest.raises(ValueError, match="start after its end"):
        IntervalSet([(5, 4)])


@pytest.mark.parametrize(
    ("start", "take", "expected"),
    [
        ([(1, 5)], 1, [(2, 5)]),  # first element
        ([(1, 5)], 5, [(1, 4)]),  # last element
        ([(1, 5)], 3, [(1, 2), (4, 5)]),  # middle: split
        ([(1, 1), (3, 4)], 1, [(3, 4)]),  # whole single-element interval
    ],
)
def test_take(start: list[tuple[int, int]], take: int, expected: list[tuple[int, int]]) -> None:
    s = IntervalSet(start)
    s.take(take)
    assert spans(s) == expected
    assert take not in s


@pytest.mark.parametrize(
    ("start", "add", "expected"),
    [
        ([], 7, [(7, 7)]),
        ([(1, 2), (4, 5)], 3, [(1, 5)]),  # joins both neighbours
        ([(1, 2)], 3, [(1, 3)]),  # joins left
        ([(4, 5)], 3, [(3, 5)]),  # joins right
        ([(1, 1), (9, 9)], 5, [(1, 1), (5, 5), (9, 9)]),  # stands alone
    ],
)
def test_add(start: list[tuple[int, int]], add: int, expected: list[tuple[int, int]]) -> None:
    s = IntervalSet(start)
    s.add(add)
    assert spans(s) == expected


@pytest.mark.parametrize(("start", "value"), [([(1, 5)], 0), ([(1, 5)], 6), ([(1, 2), (4, 5)], 3), ([], 0)])
def test_take_of_a_non_member_raises(start: list[tuple[int, int]], value: int) -> None:
    with pytest.raises(KeyError):
        IntervalSet(start).take(value)


def test_add_of_a_member_raises() -> None:
    with pytest.raises(KeyError):
        IntervalSet([(1, 5)]).add(3)


def test_take_lowest_walks_upwards_and_empties() -> None:
    s = IntervalSet([(10, 11), (20, 20)])
    assert [s.take_lowest() for _ in range(3)] == [10, 11, 20]
    assert not s and s.lowest() is None and s.size == 0
    with pytest.raises(KeyError):
        s.take_lowest()


@pytest.mark.parametrize(
    ("base", "taken", "expected"),
    [
        ([(0, 9)], [], [(0, 9)]),
        ([(0, 9)], [0, 9], [(1, 8)]),
        ([(0, 9)], [3, 4, 7], [(0, 2), (5, 6), (8, 9)]),
        ([(0, 2), (5, 7)], [1, 5, 6, 7, 100], [(0, 0), (2, 2)]),  # outside values are ignored
        ([(0, 3)], [0, 1, 2, 3], []),
    ],
)
def test_complement(base: list[tuple[int, int]], taken: list[int], expected: list[tuple[int, int]]) -> None:
    s = IntervalSet.complement(base, taken)
    assert spans(s) == expected
    assert s.size == sum(last - first + 1 for first, last in expected)


def test_a_slash_64_is_exact_and_cheap() -> None:
    base = 0x2001_0DB8_0018_0000 << 64
    s = IntervalSet([(base, base + 2**64 - 1)])
    assert s.size == 2**64
    taken = [s.take_lowest() for _ in range(1000)]
    assert taken == list(range(base, base + 1000))
    s.take(base + 2**63)
    assert s.size == 2**64 - 1001
    assert s.interval_count == 2
    s.add(base + 2**63)
    assert s.interval_count == 1
    assert s.lowest() == base + 1000


operations = st.lists(
    st.tuples(st.sampled_from(["add", "take", "take_lowest"]), st.integers(min_value=0, max_value=40)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    start=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6)), max_size=6),
    ops=operations,
)
def test_behaves_like_a_set_of_ints(start: list[tuple[int, int]], ops: list[tuple[str, int]]) -> None:
    s = IntervalSet((first, first + length) for first, length in start)
    model = {x for first, length in start for x in range(first, first + length + 1)}
    for op, value in ops:
        if op == "add":
            if value in model:
                with pytest.raises(KeyError):
                    s.add(value)
            else:
                s.add(value)
                model.add(value)
        elif op == "take":
            if value in model:
                s.take(value)
                model.discard(value)
            else:
                with pytest.raises(KeyError):
                    s.take(value)
        elif model:
            lowest = min(model)
            assert s.take_lowest() == lowest
            model.discard(lowest)
        # invariants: same members, exact size, intervals sorted, disjoint and non-adjacent
        assert s.size == len(model)
        assert s.lowest() == (min(model) if model else None)
        members = [x for first, last in s.intervals() for x in range(first, last + 1)]
        assert members == sorted(model)
        bounds = list(s.intervals())
        assert all(prev_last + 1 < first for (_, prev_last), (first, _) in zip(bounds, bounds[1:]))
    assert IntervalSet.complement([(0, 50)], set(range(51)) - model) == s
