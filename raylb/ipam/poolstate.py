"""The mutable state of one pool, and which pools a service may take addresses from.

Why a module: the allocator juggles services; this module holds what it juggles them over.
A pool splits into one `FamilyState` per IP family it has ranges of. Each holds:

- `free`: an `IntervalSet` of addresses nobody holds (O(log k) lowest / take / return);
- `users`: address -> `Entry` (who holds it) for every address in use, shared ones once;
- `by_key`: sharing key -> addresses held under it, so a sharing service finds its partners
  without looking at the rest of the pool;
- `total`: how many addresses the family may hand out, computed once, arithmetically.

avoidBuggyIPs is applied lazily: `.0`/`.255` addresses stay in `free` until they reach the
front, where `lowest_free` drops them for good. Each is dropped at most once, so the cost is
amortised O(1) per allocation, and no range is ever enumerated. Counts stay exact because
`total` already excludes them and they are never in `users`, so free = total - len(users).

Which pools a service may auto-assign from (MetalLB's serviceAllocation rules):

- A pool with serviceAllocation serves only matching services: the namespace must be listed in
  `namespaces` or match one of `namespace_selectors` (when either is given), and the service
  labels must match one of `service_selectors` (when given). A serviceAllocation with neither
  (only a priority) matches every service. MetalLB skips such a pool entirely, which looks
  accidental; raylb treats the empty constraint as "everyone" and documents the difference.
- Matching pools come first, ordered by priority: a lower number first; 0 (or less) means
  "no priority" and sorts after every pool that has one, as in MetalLB. Ties break by name
  (MetalLB's sort leaves them to Go's unstable sort over a map; raylb is deterministic).
- Then pools without serviceAllocation, by name.
- Only autoAssign pools take part. A pool named by the address-pool annotation, or holding a
  requested IP, is used even when autoAssign is false, but its serviceAllocation still has to
  match the service (MetalLB refuses the assignment otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from raylb.ipam.intervals import IntervalSet
from raylb.ipam.request import ServiceRequest
from raylb.ipam.sharing import Entry
from raylb.ipam.stats import FamilyStats, PoolStats, allocatable_count, is_buggy_ipv4
from raylb.pools import Pool, ServiceAllocation


class FamilyState:
    """The addresses of one IP family of one pool, and who holds which."""

    __slots__ = ("version", "avoid_buggy", "ranges", "free", "total", "users", "by_key")

    def __init__(self, *, version: int, ranges: list[tuple[int, int]], avoid_buggy_ips: bool) -> None:
        self.version = version
        self.avoid_buggy = avoid_buggy_ips and version == 4
        merged = IntervalSet(ranges)
        self.ranges: tuple[tuple[int, int], ...] = tuple(merged.intervals())
        self.free = merged
        self.total = allocatable_count(self.ranges, version=version, avoid_buggy_ips=self.avoid_buggy)
        self.users: dict[int, Entry] = {}
        self.by_key: dict[str, set[int]] = {}

    def has_room(self) -> bool:
        return self.total > len(self.users)

    def lowest_free(self) -> int | None:
        """The lowest address nobody holds and the pool may hand out (not taken yet)."""
        free = self.free
        while True:
            value = free.lowest()
            if value is None or not (self.avoid_buggy and is_buggy_ipv4(value)):
                return value
            free.take(value)  # a .0/.255 address at the front: drop it for good

    def rebuild_free(self) -> None:
        """Recompute `free` from the ranges and `users` in one pass (after a bulk restore)."""
        self.free = IntervalSet.complement(self.ranges, self.users)

    def stats(self) -> FamilyStats:
        return FamilyStats(total=self.total, in_use=len(self.users))


@dataclass
class PoolState:
    """One pool: its checked definition, its families, and its place in the general order."""

    pool: Pool
    families: dict[int, FamilyState]
    general_rank: int | None = None  # position among autoAssign pools without serviceAllocation
    open_state: tuple[bool, bool] = (False, False)  # (IPv4 has room, IPv6 has room), as last listed

    @classmethod
    def build(cls, pool: Pool) -> PoolState:
        ranges: dict[int, list[tuple[int, int]]] = {}
        for r in pool.ranges:
            ranges.setdefault(r.version, []).append((int(r.first), int(r.last)))
        families = {
            version: FamilyState(version=version, ranges=spans, avoid_buggy_ips=pool.avoid_buggy_ips)
            for version, spans in sorted(ranges.items())
        }
        return cls(pool=pool, families=families)

    @property
    def name(self) -> str:
        return self.pool.name

    def stats(self) -> PoolStats:
        return PoolStats(pool=self.pool.name, by_family={v: f.stats() for v, f in self.families.items()})


def allocation_matches(allocation: ServiceAllocation, req: ServiceRequest) -> bool:
    """Does a pool's serviceAllocation admit this service?"""
    if allocation.namespaces or allocation.namespace_selectors:
        in_namespace = req.namespace in allocation.namespaces or any(
            selector.matches(req.namespace_labels) for selector in allocation.namespace_selectors
        )
        if not in_namespace:
            return False
    if allocation.service_selectors:
        return any(selector.matches(req.labels) for selector in allocation.service_selectors)
    return True


def describe_allocation(allocation: ServiceAllocation) -> str:
    """A short phrase naming whom a serviceAllocation admits, for refusal messages."""
    parts = []
    if allocation.namespaces:
        parts.append("namespaces " + ", ".join(sorted(allocation.namespaces)))
    if allocation.namespace_selectors:
        parts.append(f"{len(allocation.namespace_selectors)} namespace selector(s)")
    if allocation.service_selectors:
        parts.append(f"{len(allocation.service_selectors)} service selector(s)")
    return "; ".join(parts) or "every service"


def preference_key(pool: Pool) -> tuple[bool, int, str]:
    """Sort key of pools with serviceAllocation: set priorities ascending, then unset, then name."""
    priority = pool.allocation.priority if pool.allocation is not None else 0
    return (priority <= 0, priority, pool.name)


def split_auto_pools(pools: Mapping[str, Pool]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(pools with serviceAllocation in preference order, pools without it by name); autoAssign only."""
    auto = [p for p in pools.values() if p.auto_assign]
    selective = tuple(p.name for p in sorted((p for p in auto if p.allocation is not None), key=preference_key))
    general = tuple(sorted(p.name for p in auto if p.allocation is None))
    return selective, general
