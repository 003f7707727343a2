"""Per-pool address counts, exact for any pool size, and the avoidBuggyIPs arithmetic.

Why a module: MetalLB reports pool capacity as a 64-bit integer and gives up on anything of
/62 or more (it reports MaxInt64), so a /64 pool has no meaningful "free" figure. Python ints
have no such limit; every count here is exact.

avoidBuggyIPs: some consumer routers' anti-smurf filters drop traffic to IPv4 addresses
ending in .0 or .255 (they look like network or broadcast addresses of a /24). A pool with
avoidBuggyIPs never hands those out, so they are not part of its total either. They are
counted arithmetically (how many integers in [first, last] are congruent to 0 or 255 modulo
256), never by enumerating the range. IPv6 is unaffected.

Counting rule: an address shared by several services counts once as in use.
``total == in_use + free`` holds for the pool and for each family.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

FAMILIES = (4, 6)

# An IPv4 address is "buggy" when its last octet is 0 or 255 (x.y.z.0 / x.y.z.255).
_OCTET = 256
_BUGGY_LAST_OCTETS = (0, 255)


def is_buggy_ipv4(value: int) -> bool:
    """True when the IPv4 address `value` (as an int) ends in .0 or .255."""
    return value & 0xFF in _BUGGY_LAST_OCTETS


def _count_congruent(first: int, last: int, residue: int) -> int:
    """How many integers x with first <= x <= last have x % 256 == residue."""
    return (last - residue) // _OCTET - (first - 1 - residue) // _OCTET


def count_buggy_ipv4(first: int, last: int) -> int:
    """How many addresses in the inclusive IPv4 range [first, last] end in .0 or .255."""
    return sum(_count_congruent(first, last, r) for r in _BUGGY_LAST_OCTETS)


def allocatable_count(intervals: Iterable[tuple[int, int]], *, version: int, avoid_buggy_ips: bool) -> int:
    """How many addresses of the disjoint `intervals` a pool may hand out."""
    total = 0
    for first, last in intervals:
        total += last - first + 1
        if avoid_buggy_ips and version == 4:
            total -= count_buggy_ipv4(first, last)
    return total


@dataclass(frozen=True)
class FamilyStats:
    """Counts for one IP family of one pool."""

    total: int = 0
    in_use: int = 0

    @property
    def free(self) -> int:
        return self.total - self.in_use


@dataclass(frozen=True)
class PoolStats:
    """Counts for one pool: totals over both families, and each family on its own."""

    pool: str
    by_family: Mapping[int, FamilyStats] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.family(f).total for f in FAMILIES)

    @property
    def in_use(self) -> int:
        return sum(self.family(f).in_use for f in FAMILIES)

    @property
    def free(self) -> int:
        return self.total - self.in_use

    def family(self, version: int) -> FamilyStats:
        """The counts of family 4 or 6 (zeros when the pool has no range of that family)."""
        return self.by_family.get(version, FamilyStats())

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly form; ints stay ints (JSON numbers have no size limit)."""
        out: dict[str, object] = {"pool": self.pool, "total": self.total, "in_use": self.in_use, "free": self.free}
        for f in FAMILIES:
            fam = self.family(f)
            out[f"ipv{f}"] = {"total": fam.total, "in_use": fam.in_use, "free": fam.free}
        return out
