"""Raw pool and advertisement resources -> one checked, frozen `Config`, in one pure call.

`build_config` never raises on bad input. Every problem becomes a `Problem` naming kind,
resource, field and value; the resource it concerns is left out and everything else
survives, so one typo in one pool never takes the other pools down.

Rules (each has a table-driven test in tests/unit/test_config.py):

- Every address entry must parse (IP, CIDR, or FIRST-LAST of one family, FIRST <= LAST); a
  CIDR with host bits set means its network, as in MetalLB (172.20.0.100/24 = 172.20.0.0/24).
- A pool needs at least one address, and its own entries must not overlap.
- An AddressPool with protocol bgp is refused (raylb speaks layer 2 only); bgpAdvertisements
  on a layer2 AddressPool are reported and ignored.
- A selector with an unknown operator, or values that do not fit its operator, makes its
  resource unusable; it is never dropped silently (that would widen what it selects).
- Pool names are one namespace across AddressPool and IPAddressPool. Names that collide and
  ranges that overlap across pools are settled first come, first served: pools are ranked by
  creationTimestamp (oldest first; pools without one after all that have one), then kind
  (IPAddressPool before AddressPool), namespace and name. The higher-ranked pool is kept and
  the other refused, so a newly created pool can never take addresses from a pool in use.
- A layer2 AddressPool is announced from every node, as the legacy kind implied.
- An L2Advertisement naming a pool that does not exist is reported; it still announces the
  pools it names that do exist. One naming a pool that exists but was refused is not
  reported again (the pool carries its own problem).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import NamedTuple

from raylb import selectors
from raylb.errors import Problem
from raylb.models.meta import LabelSelector as WireSelector
from raylb.models.pools import BGP, AddressPool, IPAddressPool, L2Advertisement
from raylb.pools import AddressRange, Pool, ServiceAllocation, parse_address_entry

_KIND_RANK = {"IPAddressPool": 0, "AddressPool": 1}
_WHY_FIRST = " (older creationTimestamp; then IPAddressPool before AddressPool; then namespace, name)"
_NO_TIME = datetime.max  # sorts pools without a creationTimestamp after every real one

CoreSelectors = tuple[selectors.LabelSelector, ...]


class _Entry(NamedTuple):
    """One parsed entry of spec.addresses, remembering where it was written."""

    index: int
    text: str
    range: AddressRange


@dataclass(frozen=True)
class Advertisement:
    """A checked layer-2 advertisement: which pools are announced, from where."""

    name: str
    pools: frozenset[str]  # the existing, accepted pools it announces
    node_selectors: CoreSelectors = ()  # any one must match; empty: all nodes
    interfaces: tuple[str, ...] = ()  # empty: all interfaces
    kind: str = "L2Advertisement"  # or "AddressPool" for a legacy pool's implied advertisement

    def selects_node(self, labels: Mapping[str, str]) -> bool:
        return not self.node_selectors or any(s.matches(labels) for s in self.node_selectors)


@dataclass(frozen=True)
class Config:
    """Everything the allocator and speakers need from the pool resources, checked."""

    pools: Mapping[str, Pool]  # name -> pool, sorted by name; read-only
    advertisements: tuple[Advertisement, ...] = ()
    problems: tuple[Problem, ...] = ()

    def problems_of(self, kind: str, name: str) -> tuple[Problem, ...]:
        """The problems of one resource, for its status condition and events."""
        return tuple(p for p in self.problems if p.kind == kind and p.name == name)


def convert_selector(
    selector: WireSelector, *, kind: str, name: str, field: str
) -> tuple[selectors.LabelSelector | None, list[Problem]]:
    """metav1.LabelSelector -> raylb.selectors.LabelSelector, or None and the problems."""
    problems: list[Problem] = []
    requirements = []
    for i, expr in enumerate(selector.match_expressions):
        where = f"{field}.matchExpressions[{i}]"
        if expr.operator not in selectors.OPERATORS:
            message = f"unknown operator; use one of {', '.join(selectors.OPERATORS)}"
            problems.append(Problem(kind, name, f"{where}.operator", expr.operator, message))
            continue
        if (why := selectors.label_key_problem(expr.key)) is not None:
            problems.append(Problem(kind, name, f"{where}.key", expr.key, why))
            continue
        needs_values = expr.operator in ("In", "NotIn")
        if needs_values != bool(expr.values):
            message = "In and NotIn need values" if needs_values else "Exists and DoesNotExist take no values"
            problems.append(Problem(kind, name, f"{where}.values", ",".join(expr.values), message))
            continue
        bad = [(v, why) for v in expr.values if (why := selectors.label_value_problem(v)) is not None]
        if bad:
            problems.extend(Problem(kind, name, f"{where}.values", v, why) for v, why in bad)
            continue
        requirements.append(selectors.Requirement(expr.key, expr.operator, frozenset(expr.values)))
    for key, value in selector.match_labels.items():
        if (why := selectors.label_key_problem(key)) is not None:
            problems.append(Problem(kind, name, f"{field}.matchLabels", key, why))
        elif (why := selectors.label_value_problem(value)) is not None:
            problems.append(Problem(kind, name, f"{field}.matchLabels.{key}", value, why))
    if problems:
        return None, problems
    labels = tuple(sorted(selector.match_labels.items()))
    return selectors.LabelSelector(match_labels=labels, requirements=tuple(requirements)), []


def _selectors(
    items: Sequence[WireSelector], *, kind: str, name: str, field: str
) -> tuple[CoreSelectors, list[Problem]]:
    out: list[selectors.LabelSelector] = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        converted, found = convert_selector(item, kind=kind, name=name, field=f"{field}[{i}]")
        problems.extend(found)
        if converted is not None:
            out.append(converted)
    return tuple(out), problems


def _parse_entries(kind: str, name: str, addresses: Sequence[str]) -> tuple[list[_Entry], list[Problem]]:
    """The pool's entries if all parse and none overlap another; every problem otherwise."""
    if not addresses:
        return [], [Problem(kind, name, "spec.addresses", "[]", "a pool needs at least one address, CIDR or range")]
    entries: list[_Entry] = []
    problems: list[Problem] = []
    for i, text in enumerate(addresses):
        try:
            entries.append(_Entry(i, text, parse_address_entry(text)))
        except ValueError as exc:
            problems.append(Problem(kind, name, f"spec.addresses[{i}]", text, str(exc)))
    if problems:
        return [], problems
    ordered = sorted(entries, key=lambda e: (*_range_key(e.range), e.index))
    reach = ordered[0]  # of the entries seen so far in this family, the one ending last
    for entry in ordered[1:]:
        if entry.range.version == reach.range.version and reach.range.overlaps(entry.range):
            first, second = sorted([reach, entry], key=lambda e: e.index)
            message = f"overlaps spec.addresses[{first.index}]={first.text!r} of the same pool; list each address once"
            problems.append(Problem(kind, name, f"spec.addresses[{second.index}]", second.text, message))
        if entry.range.version != reach.range.version or int(entry.range.last) > int(reach.range.last):
            reach = entry
    return ([] if problems else entries), problems


def _range_key(r: AddressRange) -> tuple[int, int, int]:
    # AddressRange's own ordering cannot compare IPv4 with IPv6 addresses.
    return (r.version, int(r.first), int(r.last))


def _rank_time(created: datetime | None) -> datetime:
    if created is None:
        return _NO_TIME
    if not created.tzinfo:
        return created
    try:
        return created.astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:  # year 1 or 9999 with an offset: the API server writes UTC, so only a hand-made object
        return created.replace(tzinfo=None)


@dataclass(frozen=True)
class _Candidate:
    """A pool that passed its own checks, waiting for the cross-pool checks."""

    rank: tuple[datetime, int, str, str]  # lower ranks first: see _WHY_FIRST
    pool: Pool
    entries: tuple[_Entry, ...]
    labels: Mapping[str, str]  # metadata.labels, for ipAddressPoolSelectors


def _candidate(obj: AddressPool | IPAddressPool) -> tuple[_Candidate | None, list[Problem]]:
    """The pool if it passes its own checks; its problems either way."""
    kind, name = obj.kind, obj.metadata.name
    fatal: list[Problem] = []
    notes: list[Problem] = []  # reported, but the pool is still usable
    allocation: ServiceAllocation | None = None
    if isinstance(obj, AddressPool):
        if obj.spec.protocol == BGP:
            message = "raylb announces layer2 only; use protocol layer2"
            fatal.append(Problem(kind, name, "spec.protocol", BGP, message))
        if obj.spec.bgp_advertisements:
            count = str(len(obj.spec.bgp_advertisements))
            notes.append(Problem(kind, name, "spec.bgpAdvertisements", count, "raylb does not speak BGP; ignored"))
    elif obj.spec.service_allocation is not None:
        sa, field = obj.spec.service_allocation, "spec.serviceAllocation"
        by_ns, p1 = _selectors(sa.namespace_selectors, kind=kind, name=name, field=f"{field}.namespaceSelectors")
        by_svc, p2 = _selectors(sa.service_selectors, kind=kind, name=name, field=f"{field}.serviceSelectors")
        fatal += p1 + p2
        allocation = ServiceAllocation(
            priority=sa.priority or 0,
            namespaces=frozenset(sa.namespaces),
            namespace_selectors=by_ns,
            service_selectors=by_svc,
        )
    entries, range_problems = _parse_entries(kind, name, obj.spec.addresses)
    fatal += range_problems
    if fatal:
        return None, fatal + notes
    pool = Pool(
        name=name,
        ranges=tuple(sorted((e.range for e in entries), key=_range_key)),
        auto_assign=obj.spec.auto_assign,
        avoid_buggy_ips=obj.spec.avoid_buggy_ips,
        allocation=allocation,
        kind=kind,
    )
    rank = (_rank_time(obj.metadata.creation_timestamp), _KIND_RANK[kind], obj.metadata.namespace or "", name)
    return _Candidate(rank, pool, tuple(entries), MappingProxyType(dict(obj.metadata.labels))), notes


class _Claimed:
    """Accepted ranges per family, sorted and disjoint, for O(log n) overlap lookups."""

    def __init__(self) -> None:
        self._firsts: dict[int, list[int]] = {4: [], 6: []}
        self._owners: dict[int, list[tuple[int, str, _Entry]]] = {4: [], 6: []}  # (last, pool, entry)

    def clash(self, r: AddressRange) -> tuple[str, _Entry] | None:
        """(pool, entry) of an accepted range overlapping r, if any."""
        i = bisect.bisect_right(self._firsts[r.version], int(r.last))  # ranges starting <= r.last
        # Accepted ranges are disjoint, so the last of those is the only one that can reach r.
        if i and self._owners[r.version][i - 1][0] >= int(r.first):
            _, pool, entry = self._owners[r.version][i - 1]
            return pool, entry
        return None

    def add(self, pool: str, entry: _Entry) -> None:
        r = entry.range
        i = bisect.bisect_left(self._firsts[r.version], int(r.first))
        self._firsts[r.version].insert(i, int(r.first))
        self._owners[r.version].insert(i, (int(r.last), pool, entry))


def _accept(candidates: list[_Candidate]) -> tuple[dict[str, _Candidate], list[Problem]]:
    """First come, first served on names and addresses."""
    accepted: dict[str, _Candidate] = {}
    claimed = _Claimed()
    problems: list[Problem] = []
    for cand in sorted(candidates, key=lambda c: c.rank):
        kind, name = cand.pool.kind, cand.pool.name
        if name in accepted:
            message = f"{accepted[name].pool.kind} {name!r} has the same name and came first{_WHY_FIRST}; rename this one"
            problems.append(Problem(kind, name, "metadata.name", name, message))
            continue
        clashes = []
        for entry in cand.entries:
            hit = claimed.clash(entry.range)
            if hit is not None:
                owner, theirs = hit
                message = (
                    f"overlaps {accepted[owner].pool.kind} {owner!r} spec.addresses[{theirs.index}]={theirs.text!r}, "
                    f"which came first{_WHY_FIRST} and keeps its addresses; remove the overlap"
                )
                clashes.append(Problem(kind, name, f"spec.addresses[{entry.index}]", entry.text, message))
        if clashes:
            problems += clashes
            continue
        accepted[name] = cand
        for entry in cand.entries:
            claimed.add(name, entry)
    return accepted, problems


def _advertisement(
    obj: L2Advertisement, *, accepted: Mapping[str, _Candidate], declared: set[str]
) -> tuple[Advertisement | None, list[Problem]]:
    kind, name, spec = obj.kind, obj.metadata.name, obj.spec
    problems: list[Problem] = []
    for i, pool in enumerate(spec.ip_address_pools):
        if pool not in declared:
            message = "no AddressPool or IPAddressPool has this name"
            problems.append(Problem(kind, name, f"spec.ipAddressPools[{i}]", pool, message))
    by_pool, p1 = _selectors(spec.ip_address_pool_selectors, kind=kind, name=name, field="spec.ipAddressPoolSelectors")
    by_node, p2 = _selectors(spec.node_selectors, kind=kind, name=name, field="spec.nodeSelectors")
    if p1 or p2:
        return None, problems + p1 + p2
    if not spec.ip_address_pools and not spec.ip_address_pool_selectors:
        pools = frozenset(accepted)  # neither list nor selectors: every pool
    else:
        named = {p for p in spec.ip_address_pools if p in accepted}
        selected = {p for p, c in accepted.items() if any(s.matches(c.labels) for s in by_pool)}
        pools = frozenset(named | selected)
    interfaces = tuple(spec.interfaces)
    return Advertisement(name=name, pools=pools, node_selectors=by_node, interfaces=interfaces), problems


def build_config(
    *,
    address_pools: Iterable[AddressPool] = (),
    ip_address_pools: Iterable[IPAddressPool] = (),
    l2_advertisements: Iterable[L2Advertisement] = (),
) -> Config:
    """Check the pool and advertisement resources together; report, never raise, on bad input."""
    problems: list[Problem] = []
    candidates: list[_Candidate] = []
    declared: set[str] = set()
    pool_objects: list[AddressPool | IPAddressPool] = [*ip_address_pools, *address_pools]
    # Checked in a fixed order so the result never depends on the order of the input lists.
    pool_objects.sort(key=lambda o: (_KIND_RANK[o.kind], o.metadata.namespace or "", o.metadata.name))
    for obj in pool_objects:
        declared.add(obj.metadata.name)
        cand, found = _candidate(obj)
        problems += found
        if cand is not None:
            candidates.append(cand)
    accepted, found = _accept(candidates)
    problems += found
    advertisements = [
        Advertisement(name=name, pools=frozenset({name}), kind="AddressPool")
        for name in sorted(accepted)
        if accepted[name].pool.kind == "AddressPool"
    ]
    for adv in sorted(l2_advertisements, key=lambda a: (a.metadata.namespace or "", a.metadata.name)):
        checked, found = _advertisement(adv, accepted=accepted, declared=declared)
        problems += found
        if checked is not None:
            advertisements.append(checked)
    pools = MappingProxyType({name: accepted[name].pool for name in sorted(accepted)})
    return Config(pools=pools, advertisements=tuple(advertisements), problems=tuple(problems))
