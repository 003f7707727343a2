"""A set of integers kept as sorted, disjoint intervals: the free addresses of one pool family.

Why: MetalLB finds a free address by walking the pool from its first address and trying each
one, so an allocation costs O(addresses in use) and a /64 is hopeless to scan. Here the free
addresses of a pool are a handful of intervals; the lowest free address is the start of the
first interval, and taking or returning one address touches one or two intervals.

Representation: two parallel Python lists, `firsts` and `lasts`, sorted, with every interval
``[firsts[i], lasts[i]]`` inclusive, non-empty, and separated from the next by at least one
missing integer (adjacent intervals are always merged). Elements are plain Python ints, so a
/64 (2**64 addresses) or a whole /0 is exact.

Costs, with k the number of intervals (the fragmentation, not the pool size):

- ``lowest`` / ``take_lowest``: O(1) unless the first interval empties (then one list delete).
- ``take(x)`` / ``add(x)`` / ``x in s``: a bisect, O(log k), plus at most one list insert or
  delete, which shifts pointers with one memmove (O(k) but about a nanosecond per entry).
- ``size``: O(1), maintained incrementally.

`len()` is deliberately not defined: Python requires it to fit in a machine word and a /64
does not; use `size`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator


class IntervalSet:
    """A mutable set of integers stored as sorted, disjoint, non-adjacent closed intervals."""

    __slots__ = ("_firsts", "_lasts", "_size")

    def __init__(self, intervals: Iterable[tuple[int, int]] = ()) -> None:
        self._firsts: list[int] = []
        self._lasts: list[int] = []
        self._size = 0
        for first, last in sorted(intervals):
            if first > last:
                raise ValueError(f"interval [{first}, {last}] has its start after its end")
            if self._lasts and first <= self._lasts[-1] + 1:
                # overlapping or adjacent: extend the previous interval
                if last > self._lasts[-1]:
                    self._size += last - self._lasts[-1]
                    self._lasts[-1] = last
                continue
            self._firsts.append(first)
            self._lasts.append(last)
            self._size += last - first + 1

    @classmethod
    def complement(cls, intervals: Iterable[tuple[int, int]], taken: Iterable[int]) -> IntervalSet:
        """The integers of `intervals` minus `taken`, built in one pass (O(m log m) for m taken).

        Values of `taken` outside the intervals are ignored. This is how state is rebuilt after
        a restart: one sort instead of one split per restored address.
        """
        base = cls(intervals)
        cuts = sorted(set(taken))
        if not cuts:
            return base
        result = cls()
        firsts, lasts = result._firsts, result._lasts
        j = 0
        for first, last in zip(base._firsts, base._lasts):
            while j < len(cuts) and cuts[j] < first:
                j += 1
            start = first
            while j < len(cuts) and cuts[j] <= last:
                if cuts[j] > start:
                    firsts.append(start)
                    lasts.append(cuts[j] - 1)
                start = cuts[j] + 1
                j += 1
            if start <= last:
                firsts.append(start)
                lasts.append(last)
        result._size = sum(last - first + 1 for first, last in zip(firsts, lasts))
        return result

    # -- queries ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many integers the set holds (exact, may exceed a machine word)."""
        return self._size

    def __bool__(self) -> bool:
        return bool(self._firsts)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._firsts, value) - 1
        return i >= 0 and value <= self._lasts[i]

    def lowest(self) -> int | None:
        """The smallest member, or None when the set is empty."""
        return self._firsts[0] if self._firsts else None

    def intervals(self) -> Iterator[tuple[int, int]]:
        """The intervals in ascending order, as (first, last) inclusive pairs."""
        return zip(list(self._firsts), list(self._lasts))

    @property
    def interval_count(self) -> int:
        """How fragmented the set is (k in the costs above)."""
        return len(self._firsts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntervalSet):
            return NotImplemented
        return self._firsts == other._firsts and self._lasts == other._lasts

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        shown = ", ".join(f"[{f}, {l}]" for f, l in zip(self._firsts[:4], self._lasts[:4]))
        more = ", ..." if len(self._firsts) > 4 else ""
        return f"IntervalSet({shown}{more}; size={self._size})"

    # -- updates ---------------------------------------------------------------------------

    def take_lowest(self) -> int:
        """Remove and return the smallest member; KeyError when the set is empty."""
        if not self._firsts:
            raise KeyError("take_lowest from an empty IntervalSet")
        value = self._firsts[0]
        if value == self._lasts[0]:
            del self._firsts[0]
            del self._lasts[0]
        else:
            self._firsts[0] = value + 1
        self._size -= 1
        return value

    def take(self, value: int) -> None:
        """Remove `value`; KeyError when it is not a member."""
        firsts, lasts = self._firsts, self._lasts
        i = bisect_right(firsts, value) - 1
        if i < 0 or value > lasts[i]:
            raise KeyError(value)
        first, last = firsts[i], lasts[i]
        if first == last:
            del firsts[i]
            del lasts[i]
        elif value == first:
            firsts[i] = value + 1
        elif value == last:
            lasts[i] = value - 1
        else:  # split [first, last] into [first, value-1] and [value+1, last]
            lasts[i] = value - 1
            firsts.insert(i + 1, value + 1)
            lasts.insert(i + 1, last)
        self._size -= 1

    def add(self, value: int) -> None:
        """Insert `value`, merging with its neighbours; KeyError when it is already a member."""
        firsts, lasts = self._firsts, self._lasts
        i = bisect_right(firsts, value)  # intervals[i-1] starts at or before value
        if i > 0 and value <= lasts[i - 1]:
            raise KeyError(value)
        joins_left = i > 0 and lasts[i - 1] == value - 1
        joins_right = i < len(firsts) and firsts[i] == value + 1
        if joins_left and joins_right:
            lasts[i - 1] = lasts[i]
            del firsts[i]
            del lasts[i]
        elif joins_left:
            lasts[i - 1] = value
        elif joins_right:
            firsts[i] = value
        else:
            firsts.insert(i, value)
            lasts.insert(i, value)
        self._size += 1
