"""The allocator: which Service holds which external IPs. Pure state, no I/O.

The allocator actor owns one `Allocator`; Kubernetes stays the source of truth, so after a
restart the actor rebuilds it with `restore()` from the IPs written in Service status.

Rules (MetalLB-compatible; where MetalLB leaves something to chance, raylb is deterministic):

Requested IPs (`spec.loadBalancerIP` / the loadBalancerIPs annotation, `req.requested_ips`)
    All must lie in one pool (in the pool named by the address-pool annotation when that is
    set), at most one per family, matching the family policy; each must be free or shareable.
    The pool's autoAssign does not matter, but its serviceAllocation must admit the service
    (as in MetalLB). With avoidBuggyIPs, `.0`/`.255` are not in the pool.
address-pool annotation (`req.pool`)
    Allocate from that pool only, even when its autoAssign is false (reserved pools such as
    doc-example-reserved), but only when its serviceAllocation (if any) admits the service.
    An unknown name is refused ("unknown-pool").
Automatic assignment
    Only autoAssign pools, in the order of `raylb.ipam.poolstate` (matching serviceAllocation by
    priority, then the rest by name); the lowest free address of the first pool that fits.
Sharing (`req.sharing_key`, rules in `raylb.ipam.sharing`)
    A service with a key first looks, in pool order, among addresses already held under its key
    for one it may join; only when none fits does it take a fresh address. So sharing packs.
Dual stack (rules in `raylb.ipam.families`)
    SingleStack: one address of the primary family. RequireDualStack: one of each family from
    the same pool, or nothing. PreferDualStack: both from the first pool that has both; else one
    of the primary family, else one of the other.
Idempotence
    Allocating again with the same request returns the same assignment. A changed request keeps
    the current addresses when they still satisfy it (pool, requested IPs, family policy,
    serviceAllocation, sharing); a PreferDualStack service holding one family gains the other
    when its pool has one free. Otherwise the old addresses are released and allocation starts
    over (and may fail, leaving the service without addresses, as in MetalLB).
Pools change (`set_pools`) and restarts (`restore`)
    Both rebuild the state from assignments: every service whose addresses still satisfy its
    request is kept exactly (its pool name follows the addresses if a pool was renamed, unless
    the service is pinned by address-pool); the others are released and returned, sorted, as
    "needs reallocation". Services are processed by key, so a conflict (two services claiming
    one address they may not share) always goes to the smaller key.

Refusals raise `AllocationError(service, reason, message)`; reasons: unknown-pool,
ip-not-in-pool, ip-in-use, sharing-incompatible, family-mismatch (requested IPs do not fit the
family policy), pool-not-allowed (serviceAllocation excludes the service), no-pool (no autoAssign
pool may serve it), family-unavailable (no candidate pool has the family), pool-exhausted.

Costs: no pool is ever scanned. The lowest free address comes from the pool family's
`IntervalSet` (O(log k), k = fragments of the free set); the first pool without
serviceAllocation that has room comes from sorted "open" lists kept per family (exhausted pools
cost nothing); pools with serviceAllocation are checked one by one (few), with the match result
cached per (namespace, labels) until the next `set_pools`. A sharing service also looks at the
addresses held under its own key in its candidate pools. `restore` of n assignments is
O(n log n): it re-holds each address in a dict and builds each free set in one pass.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from raylb.errors import AllocationError
from raylb.ipam.families import Tier, family_problem, primary_family, show, tiers_for
from raylb.ipam.poolstate import (
    FamilyState,
    PoolState,
    allocation_matches,
    describe_allocation,
    split_auto_pools,
)
from raylb.ipam.request import PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, SINGLE_STACK, PortSpec, ServiceRequest
from raylb.ipam.sharing import Holders, SharingProfile, conflict, profile_of
from raylb.ipam.stats import PoolStats, is_buggy_ipv4
from raylb.pools import IPAddress, Pool

_ADDRESS = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}
_BOTH = "both"  # key of the open list of pools with room in both families
_MATCH_CACHE_LIMIT = 4096  # distinct (namespace, labels) combinations remembered between config changes

Pick = list[tuple[FamilyState, int]]


@dataclass(frozen=True, slots=True)
class Assignment:
    """The addresses one service holds, and the pool they come from.

    `request` is what the addresses were allocated for; `restore` checks validity (pinned pool,
    requested IPs, sharing) against it. Equality ignores it.
    """

    service: str
    ips: tuple[IPAddress, ...]
    pool: str
    request: ServiceRequest | None = field(default=None, compare=False, repr=False)


def _refuse(req: ServiceRequest, reason: str, message: str) -> AllocationError:
    return AllocationError(req.key, reason, message)


def _implied_request(assignment: Assignment) -> ServiceRequest:
    """What a bare assignment (no request recorded) stands for: its own families, no sharing."""
    families = tuple(ip.version for ip in assignment.ips) or (4,)
    return ServiceRequest(
        key=assignment.service,
        namespace=assignment.service.partition("/")[0],
        ip_families=families,
        ip_family_policy=REQUIRE_DUAL_STACK if len(families) == 2 else SINGLE_STACK,
    )


class Allocator:
    """Pool state and service assignments; see the module docstring for the rules."""

    def __init__(self, pools: Mapping[str, Pool] | None = None) -> None:
        self._pools: dict[str, PoolState] = {}
        self._assigned: dict[str, Assignment] = {}
        self._selective: tuple[str, ...] = ()
        self._general: tuple[str, ...] = ()
        self._by_rank: list[PoolState] = []  # the general pools' states, in order
        self._open: dict[object, list[int]] = {4: [], 6: [], _BOTH: []}
        self._index: dict[int, tuple[list[int], list[int], list[str]]] = {}
        self._sharing_pools: dict[str, dict[str, int]] = {}  # sharing key -> pool -> addresses
        self._match_cache: dict[tuple[object, ...], tuple[str, ...]] = {}
        if pools:
            self.set_pools(pools)

    # -- queries ---------------------------------------------------------------------------

    @property
    def pools(self) -> Mapping[str, Pool]:
        return {name: state.pool for name, state in self._pools.items()}

    def assignment(self, service: str) -> Assignment | None:
        return self._assigned.get(service)

    def snapshot(self) -> tuple[Assignment, ...]:
        """Every assignment, sorted by service key; `restore(snapshot())` reproduces the state."""
        return tuple(self._assigned[key] for key in sorted(self._assigned))

    assignments = snapshot

    def __len__(self) -> int:
        return len(self._assigned)

    def __contains__(self, service: object) -> bool:
        return service in self._assigned

    def stats(self) -> dict[str, PoolStats]:
        """Per pool (by name): total, in use and free addresses, per family, exact."""
        return {name: self._pools[name].stats() for name in sorted(self._pools)}

    def pool_of(self, ip: IPAddress) -> str | None:
        """The pool that may hand out `ip`, or None (outside every pool, or excluded as buggy)."""
        found = self._lookup(ip)
        return found[0].name if found and found[2] else None

    # -- configuration and restarts ----------------------------------------------------------

    def set_pools(self, pools: Mapping[str, Pool]) -> tuple[str, ...]:
        """Install a new pool configuration; returns (sorted) the services that lost their IPs.

        Raises ValueError for a configuration the config layer should have refused: a key that
        differs from the pool's name, or two pools sharing an address.
        """
        for name, pool in pools.items():
            if name != pool.name:
                raise ValueError(f"pool mapping key {name!r} differs from the pool's name {pool.name!r}")
        return self._reset(pools, list(self._assigned.values()))

    def restore(self, assignments: Iterable[Assignment]) -> tuple[str, ...]:
        """Replace all state with `assignments`, keeping every one that is still valid.

        Returns (sorted) the services whose addresses are no longer valid and need a new
        allocation. An assignment without a `request` is checked for pool membership and
        uniqueness only (no sharing, no pinned pool, no serviceAllocation).
        """
        return self._reset(self.pools, assignments)

    # -- allocation --------------------------------------------------------------------------

    def allocate(self, req: ServiceRequest) -> Assignment:
        """Give `req` its addresses (or keep the ones it has); raise AllocationError if none fit."""
        current = self._assigned.get(req.key)
        if current is not None:
            if current.request == req and (len(current.ips) == 2 or req.ip_family_policy != PREFER_DUAL_STACK):
                return current
            kept = self._keep(current, req)
            if kept is not None:
                return kept
            self.release(req.key)
        if req.pool is not None and req.pool not in self._pools:
            raise _refuse(req, "unknown-pool", f"address pool {req.pool!r} (address-pool annotation) does not exist")
        profile = profile_of(req) if req.sharing_key else None
        if req.requested_ips:
            state, pick = self._check_ips(req, req.requested_ips, profile)
        else:
            state, pick = self._choose(req, profile)
        return self._commit(req, state, pick, profile)

    def release(self, service: str) -> Assignment | None:
        """Free the service's addresses (delete, or no longer a LoadBalancer); idempotent."""
        assignment = self._assigned.pop(service, None)
        if assignment is None:
            return None
        state = self._pools[assignment.pool]
        for ip in assignment.ips:
            self._unhold(state, state.families[ip.version], int(ip), service)
        self._refresh_open(state)
        return assignment

    # -- internals: checking given addresses ------------------------------------------------

    def _lookup(self, ip: IPAddress) -> tuple[PoolState, FamilyState, bool] | None:
        """(pool, family, allowed) for the pool whose range holds `ip`; allowed is False for buggy."""
        index = self._index.get(ip.version)
        if index is None:
            return None
        firsts, lasts, names = index
        value = int(ip)
        i = bisect_right(firsts, value) - 1
        if i < 0 or value > lasts[i]:
            return None
        state = self._pools[names[i]]
        family = state.families[ip.version]
        return state, family, not (family.avoid_buggy and is_buggy_ipv4(value))

    def _check_ips(
        self,
        req: ServiceRequest,
        ips: tuple[IPAddress, ...],
        profile: SharingProfile | None,
        *,
        check_allowed: bool = True,
    ) -> tuple[PoolState, Pick]:
        """Check that `req` may hold exactly `ips`; return where they live, or raise."""
        problem = family_problem(req, ips)
        if problem is not None:
            raise _refuse(req, "family-mismatch", problem)
        if req.requested_ips and ips is not req.requested_ips and set(ips) != set(req.requested_ips):
            # only reachable when re-checking held addresses (keep, restore): never surfaces
            raise _refuse(req, "ip-not-requested", f"{show(ips)} are not the requested {show(req.requested_ips)}")
        state: PoolState | None = None
        pick: Pick = []
        for ip in ips:
            found = self._lookup(ip)
            if found is None or not found[2]:
                why = f" (pool {found[0].name!r} avoids .0/.255 addresses, avoidBuggyIPs)" if found else ""
                raise _refuse(req, "ip-not-in-pool", f"{ip} is not in any address pool{why}")
            if state is not None and found[0] is not state:
                raise _refuse(req, "ip-not-in-pool", f"{show(ips)} lie in different pools; all of a service's addresses come from one pool")
            state = found[0]
            pick.append((found[1], int(ip)))
        assert state is not None
        if req.pool is not None and req.pool != state.name:
            raise _refuse(req, "ip-not-in-pool", f"{show(ips)} is not in pool {req.pool!r} named by the address-pool annotation (it is in {state.name!r})")
        if check_allowed and state.pool.allocation is not None:
            self._check_allowed(req, state)
        for family, value in pick:
            entry = family.users.get(value)
            if entry is not None:
                found_conflict = conflict(entry, req.key, profile, req.ports)
                if found_conflict is not None:
                    raise _refuse(req, found_conflict[0], f"{_ADDRESS[family.version](value)}: {found_conflict[1]}")
        return state, pick

    def _check_allowed(self, req: ServiceRequest, state: PoolState) -> None:
        allocation = state.pool.allocation
        if allocation is not None and not allocation_matches(allocation, req):
            raise _refuse(
                req,
                "pool-not-allowed",
                f"pool {state.name!r} serves only {describe_allocation(allocation)} (serviceAllocation), which this service does not match",
            )

    def _keep(self, current: Assignment, req: ServiceRequest) -> Assignment | None:
        """The current assignment updated for a changed request, or None if it no longer fits."""
        profile = profile_of(req)
        try:
            state, pick = self._check_ips(req, current.ips, profile)
        except AllocationError:
            return None
        if req.ip_family_policy == PREFER_DUAL_STACK and len(pick) == 1 and not req.requested_ips:
            other = state.families.get(10 - pick[0][0].version)
            if other is not None:
                value = self._offer(other, req.key, profile, req.ports)[0]
                if value is not None:
                    pick.append((other, value))
        return self._commit(req, state, pick, profile)

    # -- internals: choosing fresh addresses -------------------------------------------------

    def _choose(self, req: ServiceRequest, profile: SharingProfile | None) -> tuple[PoolState, Pick]:
        tiers = tiers_for(req)
        ports = req.ports
        if req.pool is not None:
            state = self._pools[req.pool]
            self._check_allowed(req, state)
            for tier in tiers:
                pick = self._offer_pool(state, tier, req.key, profile, ports, shared_only=False)
                if pick is not None:
                    return state, pick
            raise self._why_not(req, [state], tiers)
        selective = self._matching_selective(req) if self._selective else ()
        if not selective and not self._general:
            raise _refuse(req, "no-pool", "no address pool with autoAssign may serve this service (check autoAssign and serviceAllocation)")
        if profile is None and not selective:
            # The common case: the first general pool with room, straight from the open lists.
            for tier in tiers:
                open_ranks = self._open[tier[0] if len(tier) == 1 else _BOTH]
                if open_ranks:
                    state = self._by_rank[open_ranks[0]]
                    pick: Pick = []
                    for version in tier:
                        family = state.families[version]
                        pick.append((family, family.lowest_free()))  # type: ignore[arg-type]  # has room
                    return state, pick
            raise self._why_not(req, list(self._by_rank), tiers)
        shared = self._shared_candidates(profile, selective) if profile is not None else []
        for tier in tiers:
            for state in shared:
                pick = self._offer_pool(state, tier, req.key, profile, ports, shared_only=True)
                if pick is not None:
                    return state, pick
            for name in selective:
                state = self._pools[name]
                pick = self._offer_pool(state, tier, req.key, profile, ports, shared_only=False)
                if pick is not None:
                    return state, pick
            open_ranks = self._open[tier[0] if len(tier) == 1 else _BOTH]
            if open_ranks:
                state = self._by_rank[open_ranks[0]]
                pick = self._offer_pool(state, tier, req.key, profile, ports, shared_only=False)
                assert pick is not None, f"pool {state.name} is listed as open but offered nothing"
                return state, pick
        candidates = [self._pools[n] for n in selective] + self._by_rank
        raise self._why_not(req, candidates, tiers)

    def _offer(
        self, family: FamilyState, service: str, profile: SharingProfile | None, ports: tuple[PortSpec, ...]
    ) -> tuple[int | None, bool]:
        """(address, shared?) the service could take in this family: a shareable one, else the lowest free."""
        if profile is not None:
            held = family.by_key.get(profile.key)
            if held:
                for value in sorted(held):
                    if conflict(family.users[value], service, profile, ports) is None:
                        return value, True
        if family.has_room():
            return family.lowest_free(), False
        return None, False

    def _offer_pool(
        self,
        state: PoolState,
        tier: Tier,
        service: str,
        profile: SharingProfile | None,
        ports: tuple[PortSpec, ...],
        *,
        shared_only: bool,
    ) -> Pick | None:
        """One address per family of `tier` from this pool, or None; with shared_only, one must be shared."""
        pick: Pick = []
        any_shared = False
        for version in tier:
            family = state.families.get(version)
            if family is None:
                return None
            value, shared = self._offer(family, service, profile, ports)
            if value is None:
                return None
            any_shared = any_shared or shared
            pick.append((family, value))
        return pick if any_shared or not shared_only else None

    def _matching_selective(self, req: ServiceRequest) -> tuple[str, ...]:
        """The autoAssign pools with serviceAllocation that admit `req`, in preference order."""
        if not self._selective:
            return ()
        key = (req.namespace, frozenset(req.labels.items()), frozenset(req.namespace_labels.items()))
        found = self._match_cache.get(key)
        if found is None:
            found = tuple(
                name for name in self._selective if allocation_matches(self._pools[name].pool.allocation, req)  # type: ignore[arg-type]
            )
            if len(self._match_cache) >= _MATCH_CACHE_LIMIT:
                self._match_cache.clear()
            self._match_cache[key] = found
        return found

    def _shared_candidates(self, profile: SharingProfile, selective: tuple[str, ...]) -> list[PoolState]:
        """Pools holding addresses under this sharing key that the service may use, in pool order."""
        holding = self._sharing_pools.get(profile.key)
        if not holding:
            return []
        ranked = []
        for name in holding:
            if name in selective:
                ranked.append((selective.index(name), name))
            else:
                rank = self._pools[name].general_rank
                if rank is not None:
                    ranked.append((len(selective) + rank, name))
        return [self._pools[name] for _, name in sorted(ranked)]

    def _why_not(self, req: ServiceRequest, candidates: list[PoolState], tiers: tuple[Tier, ...]) -> AllocationError:
        names = ", ".join(repr(s.name) for s in candidates[:5]) + (", ..." if len(candidates) > 5 else "")
        if not any(all(v in s.families for v in tier) for s in candidates for tier in tiers):
            wanted = " or ".join("+".join(f"IPv{v}" for v in tier) for tier in tiers)
            return _refuse(req, "family-unavailable", f"no candidate pool ({names}) has {wanted} addresses ({req.ip_family_policy})")
        return _refuse(req, "pool-exhausted", f"no free or shareable address left in pool(s) {names}")

    # -- internals: bookkeeping --------------------------------------------------------------

    def _commit(self, req: ServiceRequest, state: PoolState, pick: Pick, profile: SharingProfile | None) -> Assignment:
        old = self._assigned.pop(req.key, None)
        if old is not None:  # a kept assignment being updated: let go, then hold again below
            old_state = self._pools[old.pool]
            for ip in old.ips:
                self._unhold(old_state, old_state.families[ip.version], int(ip), req.key)
            if old_state is not state:
                self._refresh_open(old_state)
        for family, value in pick:
            if profile is None and value not in family.users:  # fast path of _hold: a fresh, unshared address
                family.free.take(value)
                family.users[value] = req.key
            else:
                self._hold(state, family, value, req.key, profile, req.ports, take=True)
        self._refresh_open(state)
        if len(pick) == 1:
            family, value = pick[0]
            ips: tuple[IPAddress, ...] = (_ADDRESS[family.version](value),)
        else:
            primary = primary_family(req)
            ips = tuple(sorted((_ADDRESS[f.version](v) for f, v in pick), key=lambda ip: ip.version != primary))
        assignment = Assignment(req.key, ips, state.name, req)
        self._assigned[req.key] = assignment
        return assignment

    def _hold(
        self,
        state: PoolState,
        family: FamilyState,
        value: int,
        service: str,
        profile: SharingProfile | None,
        ports: tuple[PortSpec, ...],
        *,
        take: bool,
    ) -> None:
        """Record `service` on `value` (checked beforehand); `take` removes it from the free set."""
        users = family.users
        entry = users.get(value)
        if entry is None and take:
            family.free.take(value)
        if type(entry) is not Holders:  # new, or held by this same service alone without sharing
            if profile is None:
                users[value] = service
                return
            entry = users[value] = Holders()
            before = None
        else:
            before = entry.profile
        entry.add(service, profile, ports)
        if entry.profile != before:
            self._reindex(state, family, value, before, entry.profile)

    def _unhold(self, state: PoolState, family: FamilyState, value: int, service: str) -> None:
        entry = family.users[value]
        if type(entry) is Holders:
            before = entry.profile
            entry.remove(service)
            if entry:
                return
            if before is not None:
                self._reindex(state, family, value, before, None)
        del family.users[value]
        family.free.add(value)

    def _reindex(
        self, state: PoolState, family: FamilyState, value: int, before: SharingProfile | None, after: SharingProfile | None
    ) -> None:
        """Keep by_key and the sharing-key -> pools index in step with an address's profile."""
        if before is not None:
            held = family.by_key[before.key]
            held.discard(value)
            if not held:
                del family.by_key[before.key]
            counts = self._sharing_pools[before.key]
            counts[state.name] -= 1
            if not counts[state.name]:
                del counts[state.name]
                if not counts:
                    del self._sharing_pools[before.key]
        if after is not None:
            family.by_key.setdefault(after.key, set()).add(value)
            counts = self._sharing_pools.setdefault(after.key, {})
            counts[state.name] = counts.get(state.name, 0) + 1

    def _refresh_open(self, state: PoolState) -> None:
        """Keep the sorted lists of general pools with room in step with this pool."""
        rank = state.general_rank
        if rank is None:
            return
        v4 = state.families.get(4)
        v6 = state.families.get(6)
        now = (v4 is not None and v4.total > len(v4.users), v6 is not None and v6.total > len(v6.users))
        before = state.open_state
        if now == before:
            return
        state.open_state = now
        for key, was, is_open in (
            (4, before[0], now[0]),
            (6, before[1], now[1]),
            (_BOTH, before[0] and before[1], now[0] and now[1]),
        ):
            if was == is_open:
                continue
            ranks = self._open[key]
            if is_open:
                insort(ranks, rank)
            else:
                del ranks[bisect_left(ranks, rank)]

    def _reset(self, pools: Mapping[str, Pool], assignments: Iterable[Assignment]) -> tuple[str, ...]:
        """Install `pools` and re-hold every valid assignment; return the others' keys, sorted.

        Everything that can be refused (ValueError) is checked before any state changes.
        """
        ordered = sorted(assignments, key=lambda a: a.service)
        for first, second in zip(ordered, ordered[1:]):
            if first.service == second.service:
                raise ValueError(f"service {first.service!r} appears twice in the assignments to restore")
        self._install(pools)
        dropped: list[str] = []
        for given in ordered:
            req = given.request if given.request is not None else _implied_request(given)
            profile = profile_of(req)
            try:
                state, pick = self._check_ips(req, given.ips, profile, check_allowed=given.request is not None)
            except AllocationError:
                dropped.append(given.service)
                continue
            for family, value in pick:
                self._hold(state, family, value, req.key, profile, req.ports, take=False)
            ips = given.ips
            if len(ips) == 2 and ips[0].version != primary_family(req):
                ips = (ips[1], ips[0])  # primary family first
            if given.pool == state.name and given.request is req and ips == given.ips:
                self._assigned[given.service] = given
            else:
                self._assigned[given.service] = Assignment(given.service, ips, state.name, req)
        for state in self._pools.values():
            for family in state.families.values():
                family.rebuild_free()  # one pass per family instead of one split per address
            self._refresh_open(state)
        return tuple(dropped)

    def _install(self, pools: Mapping[str, Pool]) -> None:
        """Fresh, empty state for `pools`: orders, address index, open lists (ValueError on overlap)."""
        states = {name: PoolState.build(pool) for name, pool in sorted(pools.items())}
        spans: dict[int, list[tuple[int, int, str]]] = {}
        for state in states.values():
            for version, family in state.families.items():
                spans.setdefault(version, []).extend((first, last, state.name) for first, last in family.ranges)
        index = {}
        for version, entries in spans.items():
            entries.sort()
            for (_, last_a, pool_a), (first_b, _, pool_b) in zip(entries, entries[1:]):
                if first_b <= last_a:
                    shown = _ADDRESS[version](first_b)
                    raise ValueError(f"pools {pool_a!r} and {pool_b!r} overlap (both hold {shown})")
            index[version] = ([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries])
        self._pools = states
        self._index = index
        self._assigned = {}
        self._sharing_pools = {}
        self._match_cache = {}
        self._selective, self._general = split_auto_pools(pools)
        self._by_rank = [states[name] for name in self._general]
        for rank, state in enumerate(self._by_rank):
            state.general_rank = rank
        self._open = {4: [], 6: [], _BOTH: []}
