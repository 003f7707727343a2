"""Invariants of the allocator over random sequences of allocate / release / restore / set_pools.

- no address is held by two services that may not share it;
- no address outside its pool (or excluded by avoidBuggyIPs) is ever handed out;
- an assignment always satisfies its request (pinned pool, requested IPs, family policy);
- restore(snapshot) reproduces the same state, on the same or on a fresh allocator;
- statistics add up (total = in_use + free, per family and per pool) and match a brute-force count;
- an automatic allocation from a pinned single-family pool takes the lowest free address.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from raylb.errors import AllocationError
from raylb.ipam.allocator import Allocator, Assignment
from raylb.ipam.request import PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, SINGLE_STACK, PortSpec, ServiceRequest
from raylb.pools import Pool, ServiceAllocation, parse_address_entry
from raylb.selectors import LabelSelector

IP = ipaddress.ip_address

# Disjoint blocks the random configurations are built from (inside the lab's address space);
# some contain .0 or .255 so that avoidBuggyIPs matters.
BLOCKS = ("198.18.0.0/29", "198.18.0.8/30", "198.18.0.252/30", "198.18.0.16", "2001:db8:18::/126", "2001:db8:18::10/127")
POOL_NAMES = ("doc-example", "doc-example-reserved", "doc-example-ipv6", "extra")
CANDIDATE_IPS = tuple(
    IP(a) for a in ("198.18.0.0", "198.18.0.1", "198.18.0.9", "198.18.0.255", "198.18.0.16", "198.18.0.100", "2001:db8:18::1", "2001:db8:18::11", "2001:db8:18::99")
)
SERVICES = ("default/s0", "default/s1", "default/s2", "default/s3", "default/s4", "team/t0", "team/t1")
PORTS = (PortSpec("TCP", 80), PortSpec("TCP", 443), PortSpec("UDP", 53))
WEB = LabelSelector(match_labels=(("app", "web"),))
KNOWN_REASONS = {
    "unknown-pool", "ip-not-in-pool", "ip-in-use", "sharing-incompatible", "family-mismatch",
    "pool-not-allowed", "no-pool", "family-unavailable", "pool-exhausted",
}  # fmt: skip


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Pool]:
    owner = [draw(st.sampled_from((*POOL_NAMES, *POOL_NAMES, None))) for _ in BLOCKS]
    pools = {}
    for name in POOL_NAMES:
        ranges = tuple(parse_address_entry(b) for b, o in zip(BLOCKS, owner) if o == name)
        if not ranges:
            continue
        allocation = draw(
            st.sampled_from([None, None])
            | st.builds(
                ServiceAllocation,
                priority=st.integers(0, 2),
                namespaces=st.sampled_from([frozenset(), frozenset({"default"}), frozenset({"team"})]),
                service_selectors=st.sampled_from([(), (WEB,)]),
            )
        )
        pools[name] = Pool(
            name=name,
            ranges=ranges,
            auto_assign=draw(st.sampled_from([True, True, False])),
            avoid_buggy_ips=draw(st.booleans()),
            allocation=allocation,
        )
    return pools


FAMILY_CHOICES = (
    ((4,), SINGLE_STACK),
    ((6,), SINGLE_STACK),
    ((4, 6), PREFER_DUAL_STACK),
    ((6, 4), PREFER_DUAL_STACK),
    ((4, 6), REQUIRE_DUAL_STACK),
)


@st.composite
def requests(draw: st.DrawFn) -> ServiceRequest:
    key = draw(st.sampled_from(SERVICES))
    families, policy = draw(st.sampled_from(FAMILY_CHOICES))
    requested = draw(st.sampled_from([(), (), ()]) | st.lists(st.sampled_from(CANDIDATE_IPS), min_size=1, max_size=2, unique=True).map(tuple))
    return ServiceRequest(
        key=key,
        namespace=key.split("/")[0],
        labels=draw(st.sampled_from([{}, {"app": "web"}])),
        requested_ips=requested,
        pool=draw(st.sampled_from((None, None, *POOL_NAMES, "nope"))),
        sharing_key=draw(st.sampled_from((None, "k1", "k2"))),
        ports=tuple(draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=2, unique=True))),
        selector=draw(st.sampled_from(((("app", "web"),), (("app", "db"),)))),
        external_traffic_policy=draw(st.sampled_from(("Cluster", "Local"))),
        ip_families=families,
        ip_family_policy=policy,
    )


@st.composite
def sharing_requests(draw: st.DrawFn) -> ServiceRequest:
    """Requests likely to meet on one address: mostly one key, few ports, automatic allocation."""
    key = draw(st.sampled_from(SERVICES))
    families, policy = draw(st.sampled_from((FAMILY_CHOICES[0],) * 4 + FAMILY_CHOICES[1:3]))
    return ServiceRequest(
        key=key,
        namespace=key.split("/")[0],
        requested_ips=draw(st.sampled_from(((),) * 6 + ((CANDIDATE_IPS[1],), (CANDIDATE_IPS[2],)))),
        pool=draw(st.sampled_from((None,) * 6 + POOL_NAMES)),
        sharing_key=draw(st.sampled_from(("k1", "k1", "k1", "k2", None))),
        ports=(draw(st.sampled_from(PORTS)),),
        selector=draw(st.sampled_from(((("app", "web"),), (("app", "web"),), (("app", "db"),)))),
        external_traffic_policy=draw(st.sampled_from(("Cluster", "Cluster", "Local"))),
        ip_families=families,
        ip_family_policy=policy,
    )


def allowed_addresses(pool: Pool, version: int) -> list[int]:
    """Brute force: every address the pool may hand out in this family."""
    out = []
    for r in pool.ranges:
        if r.version != version:
            continue
        for value in range(int(r.first), int(r.last) + 1):
            if pool.avoid_buggy_ips and version == 4 and value % 256 in (0, 255):
                continue
            out.append(value)
    return sorted(set(out))


def may_share(a: ServiceRequest, b: ServiceRequest) -> bool:
    if not a.sharing_key or a.sharing_key != b.sharing_key:
        return False
    if a.external_traffic_policy != b.external_traffic_policy:
        return False
    if a.external_traffic_policy == "Local" and sorted(a.selector) != sorted(b.selector):
        return False
    return not set(a.ports) & set(b.ports)


def state_of(allocator: Allocator) -> tuple[object, ...]:
    return (allocator.snapshot(), tuple(a.request for a in allocator.snapshot()), allocator.stats())


class AllocatorMachine(RuleBasedStateMachine):
    allocator: Allocator

    @initialize(pools=configs())
    def start(self, pools: dict[str, Pool]) -> None:
        self.allocator = Allocator(pools)

    @rule(req=sharing_requests())
    def allocate_shareable(self, req: ServiceRequest) -> None:
        self.allocate(req)

    @rule(req=requests())
    def allocate(self, req: ServiceRequest) -> None:
        previous = self.allocator.assignment(req.key)
        in_use = {(ip.version, int(ip)) for a in self.allocator.snapshot() for ip in a.ips}
        try:
            got = self.allocator.allocate(req)
        except AllocationError as refused:
            event(f"refused: {refused.reason}")
            assert refused.reason in KNOWN_REASONS, refused.reason
            assert refused.service == req.key
            assert self.allocator.assignment(req.key) is None
            return
        assert self.allocator.assignment(req.key) == got
        event("allocated")
        if any(a.service != got.service and set(a.ips) & set(got.ips) for a in self.allocator.snapshot()):
            event("shares an address")
        assert self.allocator.allocate(req) == got  # idempotent
        if req.pool is not None:
            assert got.pool == req.pool
        if req.requested_ips:
            assert set(got.ips) == set(req.requested_ips)
        if previous is None and req.pool and not req.requested_ips and not req.sharing_key and req.ip_family_policy == SINGLE_STACK:
            version = req.ip_families[0]
            free = [v for v in allowed_addresses(self.allocator.pools[req.pool], version) if (version, v) not in in_use]
            assert got.ips == (ipaddress.ip_address(free[0]) if version == 4 else ipaddress.IPv6Address(free[0]),)

    @rule(key=st.sampled_from(SERVICES))
    def release(self, key: str) -> None:
        before = self.allocator.assignment(key)
        assert self.allocator.release(key) == before
        assert self.allocator.assignment(key) is None

    @rule()
    def restore_own_snapshot(self) -> None:
        before = state_of(self.allocator)
        snapshot = self.allocator.snapshot()
        fresh = Allocator(self.allocator.pools)
        assert fresh.restore(snapshot) == ()
        assert state_of(fresh) == before
        assert self.allocator.restore(snapshot) == ()
        assert state_of(self.allocator) == before

    @rule(data=st.data())
    def restore_scrambled(self, data: st.DataObject) -> None:
        """Restore assignments whose addresses were shuffled between services: only valid ones stay."""
        snapshot = list(self.allocator.snapshot())
        if not snapshot:
            return
        ips = [a.ips for a in snapshot]
        order = data.draw(st.permutations(range(len(ips))))
        scrambled = [Assignment(a.service, ips[i], a.pool, a.request) for a, i in zip(snapshot, order)]
        needs = self.allocator.restore(scrambled)
        kept = {a.service for a in self.allocator.snapshot()}
        assert kept | set(needs) == {a.service for a in scrambled}
        assert not kept & set(needs)
        for given in scrambled:
            if given.service in kept:
                assert set(self.allocator.assignment(given.service).ips) == set(given.ips)  # type: ignore[union-attr]

    @rule(pools=configs())
    def set_pools(self, pools: dict[str, Pool]) -> None:
        before = {a.service: a.ips for a in self.allocator.snapshot()}
        dropped = self.allocator.set_pools(pools)
        after = {a.service: a.ips for a in self.allocator.snapshot()}
        assert set(dropped) | set(after) == set(before)
        assert not set(dropped) & set(after)
        assert all(after[k] == before[k] for k in after)  # kept services keep their addresses exactly

    @invariant()
    def addresses_lie_in_their_pool_and_fit_the_request(self) -> None:
        if not hasattr(self, "allocator"):
            return
        pools = self.allocator.pools
        for a in self.allocator.snapshot():
            pool = pools[a.pool]
            versions = [ip.version for ip in a.ips]
            assert len(set(versions)) == len(versions) >= 1
            for ip in a.ips:
                assert int(ip) in set(allowed_addresses(pool, ip.version)), f"{ip} handed out from {pool}"
            req = a.request
            assert req is not None and req.key == a.service
            if req.pool is not None:
                assert a.pool == req.pool
            if req.requested_ips:
                assert set(a.ips) == set(req.requested_ips)
            if req.ip_family_policy == SINGLE_STACK:
                assert versions == [req.ip_families[0]]
            if req.ip_family_policy == REQUIRE_DUAL_STACK:
                assert sorted(versions) == [4, 6]

    @invariant()
    def shared_addresses_are_shared_only_by_compatible_services(self) -> None:
        if not hasattr(self, "allocator"):
            return
        holders: dict[object, list[ServiceRequest]] = defaultdict(list)
        for a in self.allocator.snapshot():
            for ip in a.ips:
                holders[ip].append(a.request)  # type: ignore[arg-type]
        for ip, reqs in holders.items():
            for i, first in enumerate(reqs):
                for second in reqs[i + 1 :]:
                    assert may_share(first, second), f"{ip} held by {first.key} and {second.key}"

    @invariant()
    def stats_add_up(self) -> None:
        if not hasattr(self, "allocator"):
            return
        used: dict[tuple[str, int], set[int]] = defaultdict(set)
        for a in self.allocator.snapshot():
            for ip in a.ips:
                used[(a.pool, ip.version)].add(int(ip))
        stats = self.allocator.stats()
        assert set(stats) == set(self.allocator.pools)
        for name, pool in self.allocator.pools.items():
            s = stats[name]
            for version in (4, 6):
                fam = s.family(version)
                assert fam.total == len(allowed_addresses(pool, version))
                assert fam.in_use == len(used[(name, version)])
                assert fam.total == fam.in_use + fam.free
            assert s.total == s.family(4).total + s.family(6).total
            assert s.total == s.in_use + s.free


AllocatorMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAllocatorProperties = AllocatorMachine.TestCase
