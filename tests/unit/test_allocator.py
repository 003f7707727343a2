"""The allocator's rules, one table row per rule (see raylb/ipam/allocator.py for the rules)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

import pytest

from raylb.errors import AllocationError
from raylb.ipam.allocator import Allocator, Assignment
from raylb.ipam.request import PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, PortSpec, ServiceRequest
from raylb.ipam.stats import count_buggy_ipv4
from raylb.pools import Pool, ServiceAllocation, parse_address_entry
from raylb.selectors import LabelSelector

IP = ipaddress.ip_address


def pool(name: str, *entries: str, **options: object) -> Pool:
    return Pool(name=name, ranges=tuple(parse_address_entry(e) for e in entries), **options)  # type: ignore[arg-type]


def svc(name: str, namespace: str = "default", **fields: object) -> ServiceRequest:
    if "requested_ips" in fields:
        fields["requested_ips"] = tuple(IP(a) for a in fields["requested_ips"])  # type: ignore[union-attr]
    return ServiceRequest(key=f"{namespace}/{name}", namespace=namespace, **fields)  # type: ignore[arg-type]


def ports(*specs: str) -> tuple[PortSpec, ...]:
    return tuple(PortSpec(s.split("/")[0], int(s.split("/")[1])) for s in specs)


# The seed's pool names, with small ranges inside the lab's address space.
DOC = pool("doc-example", "198.18.0.10-198.18.0.13")
RESERVED = pool("doc-example-reserved", "198.18.0.100/30", auto_assign=False)
DOC6 = pool("doc-example-ipv6", "2001:db8:18::10-2001:db8:18::13")
DUAL = pool("doc-example-dual", "198.18.0.32/30", "2001:db8:18::20/126")
SEED = (DOC, RESERVED, DOC6)


def by_name(*pools: Pool) -> dict[str, Pool]:
    return {p.name: p for p in pools}


def sharing(name: str, key: str = "k", *specs: str, **fields: object) -> ServiceRequest:
    return svc(name, sharing_key=key, ports=ports(*(specs or ("TCP/80",))), **fields)  # type: ignore[arg-type]


def fill(pool_name: str, count: int) -> tuple[ServiceRequest, ...]:
    return tuple(svc(f"filler-{pool_name}-{i}", pool=pool_name) for i in range(count))


def selective(name: str, entry: str, *, priority: int = 0, **allocation: object) -> Pool:
    return pool(name, entry, allocation=ServiceAllocation(priority=priority, **allocation))  # type: ignore[arg-type]


WEB = LabelSelector(match_labels=(("app", "web"),))
PROD = LabelSelector(match_labels=(("env", "prod"),))


@dataclass(frozen=True)
class Case:
    name: str
    request: ServiceRequest
    ips: tuple[str, ...] = ()  # expected addresses, in order; empty when a refusal is expected
    pool: str | None = None  # expected pool
    reason: str | None = None  # expected AllocationError.reason
    before: tuple[ServiceRequest, ...] = ()  # allocated first, in order
    pools: tuple[Pool, ...] = SEED


CASES = [
    # --- requested IPs ---------------------------------------------------------------------
    Case("requested IP in an auto pool", svc("a", requested_ips=["198.18.0.12"]), ("198.18.0.12",), "doc-example"),
    Case("requested IP in a reserved pool needs no annotation", svc("a", requested_ips=["198.18.0.101"]), ("198.18.0.101",), "doc-example-reserved"),
    Case("requested IP outside every pool", svc("a", requested_ips=["198.18.0.50"]), reason="ip-not-in-pool"),
    Case("requested IP outside the named pool", svc("a", requested_ips=["198.18.0.12"], pool="doc-example-reserved"), reason="ip-not-in-pool"),
    Case("requested IP inside the named pool", svc("a", requested_ips=["198.18.0.102"], pool="doc-example-reserved"), ("198.18.0.102",), "doc-example-reserved"),
    Case("requested IP with an unknown pool", svc("a", requested_ips=["198.18.0.12"], pool="nope"), reason="unknown-pool"),
    Case("requested IP held by another service", svc("b", requested_ips=["198.18.0.10"]), reason="ip-in-use", before=(svc("a"),)),
    Case("requested IP held by a sharing service, requester has no key", svc("b", requested_ips=["198.18.0.10"]), reason="ip-in-use", before=(sharing("a"),)),
    Case("requested IP held without a key, requester has one", sharing("b", requested_ips=["198.18.0.10"]), reason="ip-in-use", before=(svc("a"),)),
    Case(
        "requested .0 in an avoidBuggyIPs pool",
        svc("a", requested_ips=["198.18.0.0"]),
        reason="ip-not-in-pool",
        pools=(pool("doc-example", "198.18.0.0/24", avoid_buggy_ips=True),),
    ),
    Case(
        "requested .0 in a pool without avoidBuggyIPs",
        svc("a", requested_ips=["198.18.0.0"]),
        ("198.18.0.0",),
        "doc-example",
        pools=(pool("doc-example", "198.18.0.0/24"),),
    ),
    Case("two requested IPs of one family", svc("a", requested_ips=["198.18.0.10", "198.18.0.11"], ip_family_policy=PREFER_DUAL_STACK), reason="family-mismatch"),
    Case("requested IPv6 for a SingleStack IPv4 service", svc("a", requested_ips=["2001:db8:18::10"]), reason="family-mismatch"),
    Case("requested IPv6 for a SingleStack IPv6 service", svc("a", requested_ips=["2001:db8:18::11"], ip_families=(6,)), ("2001:db8:18::11",), "doc-example-ipv6"),
    Case("RequireDualStack with one requested IP", svc("a", requested_ips=["198.18.0.10"], ip_family_policy=REQUIRE_DUAL_STACK), reason="family-mismatch"),
    Case(
        "requested dual-stack pair across two pools",
        svc("a", requested_ips=["198.18.0.10", "2001:db8:18::10"], ip_family_policy=REQUIRE_DUAL_STACK, ip_families=(4, 6)),
        reason="ip-not-in-pool",
    ),
    Case(
        "requested dual-stack pair in one pool, listed IPv6 first",
        svc("a", requested_ips=["2001:db8:18::21", "198.18.0.33"], ip_family_policy=REQUIRE_DUAL_STACK, ip_families=(4, 6)),
        ("198.18.0.33", "2001:db8:18::21"),
        "doc-example-dual",
        pools=(DUAL,),
    ),
    Case(
        "requested IP in a pool whose serviceAllocation excludes the service",
        svc("a", requested_ips=["198.18.0.40"]),
        reason="pool-not-allowed",
        pools=(selective("team", "198.18.0.40/30", namespaces=frozenset({"team"})),),
    ),
    # --- address-pool annotation -----------------------------------------------------------
    Case("annotation picks a reserved pool", svc("a", pool="doc-example-reserved"), ("198.18.0.100",), "doc-example-reserved"),
    Case("annotation with an unknown pool", svc("a", pool="nope"), reason="unknown-pool"),
    Case("annotated pool exhausted", svc("a", pool="doc-example-reserved"), reason="pool-exhausted", before=fill("doc-example-reserved", 4)),
    Case("annotated pool lacks the family", svc("a", pool="doc-example-ipv6"), reason="family-unavailable"),
    Case(
        "annotated pool whose serviceAllocation excludes the service",
        svc("a", pool="team"),
        reason="pool-not-allowed",
        pools=(selective("team", "198.18.0.40/30", namespaces=frozenset({"team"})),),
    ),
    # --- automatic assignment --------------------------------------------------------------
    Case("lowest free address of the first auto pool", svc("a"), ("198.18.0.10",), "doc-example"),
    Case("next free address", svc("c"), ("198.18.0.12",), "doc-example", before=(svc("a"), svc("b"))),
    Case("reserved pools are never auto-assigned", svc("a"), reason="pool-exhausted", before=fill("doc-example", 4)),
    Case("IPv6 service goes to the IPv6 pool", svc("a", ip_families=(6,)), ("2001:db8:18::10",), "doc-example-ipv6"),
    Case("only reserved pools", svc("a"), reason="no-pool", pools=(RESERVED,)),
    Case("no pool has the family", svc("a", ip_families=(6,)), reason="family-unavailable", pools=(DOC, RESERVED)),
    Case("pools without serviceAllocation go by name", svc("a"), ("198.18.0.40",), "a-pool", pools=(pool("b-pool", "198.18.0.8/30"), pool("a-pool", "198.18.0.40/30"))),
    Case("the first pool full, the next by name", svc("a"), ("198.18.0.40",), "b-pool", pools=(pool("a-pool", "198.18.0.10/32"), pool("b-pool", "198.18.0.40/30")), before=(svc("x"),)),
    Case(
        "matching serviceAllocation comes before pools without one",
        svc("a"),
        ("198.18.0.60",),
        "z-team",
        pools=(pool("a-pool", "198.18.0.8/30"), selective("z-team", "198.18.0.60/30", namespaces=frozenset({"default"}))),
    ),
    Case(
        "lower priority number first",
        svc("a"),
        ("198.18.0.64",),
        "second",
        pools=(
            selective("first", "198.18.0.60/30", priority=2, namespaces=frozenset({"default"})),
            selective("second", "198.18.0.64/30", priority=1, namespaces=frozenset({"default"})),
        ),
    ),
    Case(
        "priority 0 means unset and sorts after set priorities",
        svc("a"),
        ("198.18.0.64",),
        "b-set",
        pools=(
            selective("a-unset", "198.18.0.60/30", priority=0, namespaces=frozenset({"default"})),
            selective("b-set", "198.18.0.64/30", priority=5, namespaces=frozenset({"default"})),
        ),
    ),
    Case(
        "equal priorities break by name",
        svc("a"),
        ("198.18.0.64",),
        "a-team",
        pools=(
            selective("b-team", "198.18.0.60/30", priority=3, namespaces=frozenset({"default"})),
            selective("a-team", "198.18.0.64/30", priority=3, namespaces=frozenset({"default"})),
        ),
    ),
    Case(
        "a serviceAllocation for another namespace is not used",
        svc("a"),
        reason="no-pool",
        pools=(selective("team", "198.18.0.60/30", namespaces=frozenset({"team"})),),
    ),
    Case(
        "namespace selector matches namespace labels",
        svc("a", namespace_labels={"env": "prod"}),
        ("198.18.0.60",),
        "prod",
        pools=(pool("a-pool", "198.18.0.8/30"), selective("prod", "198.18.0.60/30", namespace_selectors=(PROD,))),
    ),
    Case(
        "namespace selector does not match",
        svc("a", namespace_labels={"env": "dev"}),
        ("198.18.0.8",),
        "a-pool",
        pools=(pool("a-pool", "198.18.0.8/30"), selective("prod", "198.18.0.60/30", namespace_selectors=(PROD,))),
    ),
    Case(
        "service selector matches service labels",
        svc("a", labels={"app": "web"}),
        ("198.18.0.60",),
        "web",
        pools=(pool("a-pool", "198.18.0.8/30"), selective("web", "198.18.0.60/30", service_selectors=(WEB,))),
    ),
    Case(
        "namespace matches but service selector does not",
        svc("a", labels={"app": "db"}),
        ("198.18.0.8",),
        "a-pool",
        pools=(pool("a-pool", "198.18.0.8/30"), selective("web", "198.18.0.60/30", namespaces=frozenset({"default"}), service_selectors=(WEB,))),
    ),
    Case(
        "serviceAllocation with only a priority admits everyone",
        svc("a"),
        ("198.18.0.60",),
        "prio",
        pools=(pool("a-pool", "198.18.0.8/30"), selective("prio", "198.18.0.60/30", priority=1)),
    ),
    Case(
        "a matching pool that is full falls through to the general pools",
        svc("a"),
        ("198.18.0.8",),
        "a-pool",
        pools=(pool("a-pool", "198.18.0.8/30"), selective("team", "198.18.0.60/32", namespaces=frozenset({"default"}))),
        before=(svc("x"),),
    ),
    Case(
        "avoidBuggyIPs skips .255 and .0",
        svc("c"),
        ("198.18.1.1",),
        "doc-example",
        pools=(pool("doc-example", "198.18.0.254-198.18.1.2", avoid_buggy_ips=True),),
        before=(svc("a"),),
    ),
    Case(
        "avoidBuggyIPs pool with only .255/.0 left is exhausted",
        svc("c"),
        reason="pool-exhausted",
        pools=(pool("doc-example", "198.18.0.254-198.18.1.1", avoid_buggy_ips=True),),
        before=(svc("a"), svc("b")),
    ),
    Case("avoidBuggyIPs does not touch IPv6", svc("a", ip_families=(6,)), ("2001:db8:18::",), "v6", pools=(pool("v6", "2001:db8:18::/64", avoid_buggy_ips=True),)),
    # --- sharing ---------------------------------------------------------------------------
    Case("same key, different ports: shared", sharing("b", "k", "TCP/443"), ("198.18.0.10",), "doc-example", before=(sharing("a", "k", "TCP/80"),)),
    Case("same port, different protocol: shared", sharing("b", "k", "UDP/80"), ("198.18.0.10",), "doc-example", before=(sharing("a", "k", "TCP/80"),)),
    Case("same key, port clash: fresh address", sharing("b", "k", "TCP/80"), ("198.18.0.11",), "doc-example", before=(sharing("a", "k", "TCP/80"),)),
    Case(
        "same key, port clash on a requested IP",
        sharing("b", "k", "TCP/80", requested_ips=["198.18.0.10"]),
        reason="sharing-incompatible",
        before=(sharing("a", "k", "TCP/80"),),
    ),
    Case("different keys: fresh address", sharing("b", "other", "TCP/443"), ("198.18.0.11",), "doc-example", before=(sharing("a", "k", "TCP/80"),)),
    Case(
        "different keys on a requested IP",
        sharing("b", "other", "TCP/443", requested_ips=["198.18.0.10"]),
        reason="sharing-incompatible",
        before=(sharing("a", "k", "TCP/80"),),
    ),
    Case(
        "Local policy, same selector: shared",
        sharing("b", "k", "TCP/443", external_traffic_policy="Local", selector=(("app", "web"),)),
        ("198.18.0.10",),
        "doc-example",
        before=(sharing("a", "k", "TCP/80", external_traffic_policy="Local", selector=(("app", "web"),)),),
    ),
    Case(
        "Local policy, different selectors: refused on a requested IP",
        sharing("b", "k", "TCP/443", external_traffic_policy="Local", selector=(("app", "db"),), requested_ips=["198.18.0.10"]),
        reason="sharing-incompatible",
        before=(sharing("a", "k", "TCP/80", external_traffic_policy="Local", selector=(("app", "web"),)),),
    ),
    Case(
        "Local policy, different selectors: fresh address",
        sharing("b", "k", "TCP/443", external_traffic_policy="Local", selector=(("app", "db"),)),
        ("198.18.0.11",),
        "doc-example",
        before=(sharing("a", "k", "TCP/80", external_traffic_policy="Local", selector=(("app", "web"),)),),
    ),
    Case(
        "Local and Cluster never share",
        sharing("b", "k", "TCP/443", external_traffic_policy="Local", requested_ips=["198.18.0.10"]),
        reason="sharing-incompatible",
        before=(sharing("a", "k", "TCP/80"),),
    ),
    Case(
        "Cluster policy ignores selectors",
        sharing("b", "k", "TCP/443", selector=(("app", "db"),)),
        ("198.18.0.10",),
        "doc-example",
        before=(sharing("a", "k", "TCP/80", selector=(("app", "web"),)),),
    ),
    Case(
        "sharing packs onto the held address although a lower one is free",
        sharing("c", "k", "TCP/443"),
        ("198.18.0.11",),
        "doc-example",
        before=(svc("low", requested_ips=["198.18.0.12"]), sharing("a", "k", "TCP/80", requested_ips=["198.18.0.11"])),
    ),
    Case(
        "sharing packs across pools, ahead of name order",
        sharing("b", "k", "TCP/443"),
        ("198.18.0.41",),
        "b-pool",
        pools=(pool("a-pool", "198.18.0.8/30"), pool("b-pool", "198.18.0.40/30")),
        before=(sharing("a", "k", "TCP/80", requested_ips=["198.18.0.41"]),),
    ),
    Case(
        "sharing into a full pool",
        sharing("b", "k", "TCP/443", pool="doc-example-reserved"),
        ("198.18.0.102",),
        "doc-example-reserved",
        before=(*fill("doc-example-reserved", 2), sharing("a", "k", "TCP/80", pool="doc-example-reserved"), svc("last", pool="doc-example-reserved")),
    ),
    # --- dual stack ------------------------------------------------------------------------
    Case("RequireDualStack from one pool", svc("a", ip_family_policy=REQUIRE_DUAL_STACK, ip_families=(4, 6)), ("198.18.0.32", "2001:db8:18::20"), "doc-example-dual", pools=(*SEED, DUAL)),
    Case("RequireDualStack with single-family pools only", svc("a", ip_family_policy=REQUIRE_DUAL_STACK, ip_families=(4, 6)), reason="family-unavailable"),
    Case(
        "RequireDualStack, one family of the only dual pool is full",
        svc("a", ip_family_policy=REQUIRE_DUAL_STACK, ip_families=(4, 6)),
        reason="pool-exhausted",
        pools=(pool("doc-example-dual", "198.18.0.32/32", "2001:db8:18::20/126"),),
        before=(svc("x"),),
    ),
    Case("PreferDualStack prefers a pool with both families", svc("a", ip_family_policy=PREFER_DUAL_STACK, ip_families=(4, 6)), ("198.18.0.32", "2001:db8:18::20"), "doc-example-dual", pools=(*SEED, DUAL)),
    Case("PreferDualStack settles for the primary family", svc("a", ip_family_policy=PREFER_DUAL_STACK, ip_families=(4, 6)), ("198.18.0.10",), "doc-example"),
    Case("PreferDualStack with IPv6 primary", svc("a", ip_family_policy=PREFER_DUAL_STACK, ip_families=(6, 4)), ("2001:db8:18::20", "198.18.0.32"), "doc-example-dual", pools=(DUAL,)),
    Case("PreferDualStack with IPv6 primary and single-family pools", svc("a", ip_family_policy=PREFER_DUAL_STACK, ip_families=(6, 4)), ("2001:db8:18::10",), "doc-example-ipv6"),
    Case("PreferDualStack falls back to the other family", svc("a", ip_family_policy=PREFER_DUAL_STACK, ip_families=(4, 6)), ("2001:db8:18::10",), "doc-example-ipv6", before=fill("doc-example", 4)),
    Case("PreferDualStack in an annotated single-family pool", svc("a", ip_family_policy=PREFER_DUAL_STACK, ip_families=(4, 6), pool="doc-example-ipv6"), ("2001:db8:18::10",), "doc-example-ipv6"),
    # the API server lists one family for PreferDualStack on a single-stack cluster: no IPv6 that kube-proxy would not forward
    Case("PreferDualStack on a single-stack cluster takes one address", svc("a", ip_family_policy=PREFER_DUAL_STACK, ip_families=(4,)), ("198.18.0.32",), "doc-example-dual", pools=(DUAL,)),
    Case("RequireDualStack in an annotated single-family pool", svc("a", ip_family_policy=REQUIRE_DUAL_STACK, pool="doc-example-ipv6"), reason="family-unavailable"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule(case: Case) -> None:
    allocator = Allocator(by_name(*case.pools))
    for req in case.before:
        allocator.allocate(req)
    if case.reason is not None:
        with pytest.raises(AllocationError) as refused:
            allocator.allocate(case.request)
        assert refused.value.reason == case.reason, refused.value.message
        assert refused.value.service == case.request.key
        assert allocator.assignment(case.request.key) is None
        return
    got = allocator.allocate(case.request)
    assert got.ips == tuple(IP(a) for a in case.ips)
    assert got.pool == case.pool
    assert got.service == case.request.key
    assert allocator.assignment(case.request.key) == got


# --- idempotence and changed requests --------------------------------------------------------


def test_allocating_again_returns_the_same_assignment() -> None:
    allocator = Allocator(by_name(*SEED))
    first = allocator.allocate(svc("a"))
    allocator.allocate(svc("b"))
    assert allocator.allocate(svc("a")) == first
    assert allocator.stats()["doc-example"].in_use == 2


ORIGINAL = svc("a", pool="doc-example", ports=ports("TCP/80"))


@pytest.mark.parametrize(
    ("changed", "stays"),
    [
        (replace(ORIGINAL, ports=ports("TCP/8080")), True),
        (replace(ORIGINAL, labels={"app": "web"}), True),
        (replace(ORIGINAL, pool=None), True),  # dropping the annotation keeps the address
        (replace(ORIGINAL, sharing_key="k"), True),  # a sole holder may start sharing
        (replace(ORIGINAL, requested_ips=(IP("198.18.0.10"),)), True),  # asks for what it has
        (replace(ORIGINAL, requested_ips=(IP("198.18.0.13"),)), False),
        (replace(ORIGINAL, pool="doc-example-reserved"), False),
        (replace(ORIGINAL, ip_families=(6,), pool=None), False),
    ],
    ids=["ports", "labels", "annotation removed", "sharing key added", "same requested IP", "other requested IP", "other pool", "other family"],
)
def test_a_changed_request_keeps_the_address_while_it_still_fits(changed: ServiceRequest, stays: bool) -> None:
    allocator = Allocator(by_name(*SEED))
    before = allocator.allocate(ORIGINAL)
    after = allocator.allocate(changed)
    assert (after.ips == before.ips) is stays
    assert after.request == changed
    assert sum(s.in_use for s in allocator.stats().values()) == 1  # the old address was let go


def test_a_service_leaving_its_serviceallocation_moves() -> None:
    team = selective("web", "198.18.0.60/30", service_selectors=(WEB,))
    allocator = Allocator(by_name(DOC, team))
    assert allocator.allocate(svc("a", labels={"app": "web"})).pool == "web"
    moved = allocator.allocate(svc("a", labels={"app": "db"}))
    assert (moved.pool, moved.ips) == ("doc-example", (IP("198.18.0.10"),))
    assert allocator.stats()["web"].in_use == 0


def test_a_changed_request_that_cannot_be_served_leaves_the_service_without_an_address() -> None:
    allocator = Allocator(by_name(*SEED))
    allocator.allocate(svc("a"))
    with pytest.raises(AllocationError) as refused:
        allocator.allocate(svc("a", requested_ips=["198.18.0.50"]))
    assert refused.value.reason == "ip-not-in-pool"
    assert allocator.assignment("default/a") is None
    assert allocator.stats()["doc-example"].in_use == 0


def test_a_port_change_that_clashes_with_a_sharing_partner_moves_the_service() -> None:
    allocator = Allocator(by_name(*SEED))
    allocator.allocate(sharing("a", "k", "TCP/80"))
    assert allocator.allocate(sharing("b", "k", "TCP/443")).ips == (IP("198.18.0.10"),)
    moved = allocator.allocate(sharing("b", "k", "TCP/80"))
    assert moved.ips == (IP("198.18.0.11"),)


def test_preferdualstack_gains_the_second_family_when_its_pool_gets_one() -> None:
    allocator = Allocator(by_name(pool("doc-example-dual", "198.18.0.32/30")))
    req = svc("a", ip_family_policy=PREFER_DUAL_STACK, ip_families=(4, 6))
    assert allocator.allocate(req).ips == (IP("198.18.0.32"),)
    assert allocator.set_pools(by_name(DUAL)) == ()
    assert allocator.allocate(req).ips == (IP("198.18.0.32"), IP("2001:db8:18::20"))


# --- release ---------------------------------------------------------------------------------


def test_release_frees_the_address_and_is_idempotent() -> None:
    allocator = Allocator(by_name(*SEED))
    first = allocator.allocate(svc("a"))
    allocator.allocate(svc("b"))
    assert allocator.release("default/a") == first
    assert allocator.release("default/a") is None
    assert allocator.release("default/never") is None
    assert allocator.allocate(svc("c")).ips == first.ips  # lowest free again
    assert "default/a" not in allocator


def test_a_shared_address_stays_in_use_until_its_last_holder_goes() -> None:
    allocator = Allocator(by_name(*SEED))
    allocator.allocate(sharing("a", "k", "TCP/80"))
    allocator.allocate(sharing("b", "k", "TCP/443"))
    assert allocator.stats()["doc-example"].in_use == 1  # shared counts once
    allocator.release("default/a")
    assert allocator.stats()["doc-example"].in_use == 1
    assert allocator.allocate(svc("c")).ips == (IP("198.18.0.11"),)
    allocator.release("default/b")
    assert allocator.allocate(svc("d")).ips == (IP("198.18.0.10"),)


# --- set_pools -------------------------------------------------------------------------------


def test_set_pools_returns_services_whose_addresses_fell_out() -> None:
    allocator = Allocator(by_name(pool("doc-example", "198.18.0.10-198.18.0.19"), RESERVED))
    for name in "abcd":
        allocator.allocate(svc(name))
    kept = {a.service: a.ips for a in allocator.snapshot() if a.service in ("default/a", "default/b")}
    dropped = allocator.set_pools(by_name(pool("doc-example", "198.18.0.10-198.18.0.11"), RESERVED))
    assert dropped == ("default/c", "default/d")
    assert {a.service: a.ips for a in allocator.snapshot()} == kept
    assert allocator.stats()["doc-example"].in_use == 2


def test_set_pools_rehomes_addresses_of_a_renamed_pool_unless_pinned() -> None:
    allocator = Allocator(by_name(DOC))
    allocator.allocate(svc("auto"))
    allocator.allocate(svc("pinned", pool="doc-example"))
    renamed = pool("doc-example-2", "198.18.0.10-198.18.0.13")
    assert allocator.set_pools(by_name(renamed)) == ("default/pinned",)
    assert allocator.assignment("default/auto") == Assignment("default/auto", (IP("198.18.0.10"),), "doc-example-2")


@pytest.mark.parametrize(
    ("new_pool", "dropped"),
    [
        (pool("doc-example", "198.18.0.0/24"), ()),
        (pool("doc-example", "198.18.0.0/24", avoid_buggy_ips=True), ("default/zero",)),
        (pool("doc-example", "198.18.0.0/24", auto_assign=False), ()),  # held addresses stay
        (selective("doc-example", "198.18.0.0/24", namespaces=frozenset({"other"})), ("default/zero",)),
    ],
    ids=["unchanged", "avoidBuggyIPs turned on", "autoAssign turned off", "serviceAllocation excludes it"],
)
def test_set_pools_rechecks_every_rule(new_pool: Pool, dropped: tuple[str, ...]) -> None:
    allocator = Allocator(by_name(pool("doc-example", "198.18.0.0/24")))
    allocator.allocate(svc("zero"))
    assert allocator.set_pools(by_name(new_pool)) == dropped


def test_set_pools_drops_services_of_a_removed_pool() -> None:
    allocator = Allocator(by_name(*SEED))
    allocator.allocate(svc("a", pool="doc-example-reserved"))
    allocator.allocate(svc("b"))
    assert allocator.set_pools(by_name(DOC)) == ("default/a",)
    assert set(allocator.stats()) == {"doc-example"}


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        ((pool("a", "198.18.0.0/24"), pool("b", "198.18.0.128/25")), "overlap"),
        ((pool("a", "2001:db8:18::/64"), pool("b", "2001:db8:18::5")), "overlap"),
    ],
)
def test_set_pools_refuses_overlapping_pools(pools: tuple[Pool, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Allocator(by_name(*pools))


def test_a_refused_configuration_or_restore_leaves_the_state_alone() -> None:
    allocator = populated()
    before = (allocator.snapshot(), allocator.stats())
    with pytest.raises(ValueError, match="overlap"):
        allocator.set_pools(by_name(DOC, pool("clash", "198.18.0.13-198.18.0.20")))
    with pytest.raises(ValueError, match="twice"):
        allocator.restore([*allocator.snapshot(), allocator.snapshot()[0]])
    assert (allocator.snapshot(), allocator.stats()) == before


def test_set_pools_refuses_a_key_that_is_not_the_pool_name() -> None:
    with pytest.raises(ValueError, match="differs"):
        Allocator({"x": DOC})


# --- restore ---------------------------------------------------------------------------------


def populated() -> Allocator:
    allocator = Allocator(by_name(*SEED, DUAL))
    allocator.allocate(svc("a"))
    allocator.allocate(sharing("b", "k", "TCP/80"))
    allocator.allocate(sharing("c", "k", "TCP/443"))
    allocator.allocate(svc("d", pool="doc-example-reserved"))
    allocator.allocate(svc("e", ip_family_policy=REQUIRE_DUAL_STACK, ip_families=(6, 4)))
    allocator.allocate(svc("f", requested_ips=["2001:db8:18::12"], ip_families=(6,)))
    allocator.release("default/a")
    return allocator


def test_restore_of_a_snapshot_reproduces_the_state() -> None:
    original = populated()
    snapshot = original.snapshot()
    restored = Allocator(original.pools)
    assert restored.restore(snapshot) == ()
    assert restored.snapshot() == snapshot
    assert [a.request for a in restored.snapshot()] == [a.request for a in snapshot]
    assert restored.stats() == original.stats()
    for allocator in (original, restored):  # and both continue the same way
        allocator.allocate(svc("g"))
        allocator.allocate(sharing("h", "k", "UDP/53"))
    assert restored.snapshot() == original.snapshot()


def test_restore_replaces_the_current_state() -> None:
    allocator = populated()
    assert allocator.restore([]) == ()
    assert len(allocator) == 0
    assert all(s.in_use == 0 for s in allocator.stats().values())


def test_restore_keeps_valid_addresses_and_returns_the_rest() -> None:
    allocator = Allocator(by_name(*SEED))
    given = [
        Assignment("default/kept", (IP("198.18.0.13"),), "doc-example", svc("kept")),
        Assignment("default/outside", (IP("198.18.0.50"),), "doc-example", svc("outside")),
        Assignment("default/moved-pin", (IP("198.18.0.11"),), "doc-example", svc("moved-pin", pool="doc-example-reserved")),
        Assignment("default/wrong-family", (IP("198.18.0.12"),), "doc-example", svc("wrong-family", ip_families=(6,))),
        Assignment("default/bare", (IP("198.18.0.101"),), "whatever"),  # no request recorded
    ]
    assert allocator.restore(given) == ("default/moved-pin", "default/outside", "default/wrong-family")
    assert allocator.assignment("default/kept").ips == (IP("198.18.0.13"),)  # type: ignore[union-attr]
    assert allocator.assignment("default/bare") == Assignment("default/bare", (IP("198.18.0.101"),), "doc-example-reserved")
    assert allocator.allocate(svc("new")).ips == (IP("198.18.0.10"),)


def test_restore_settles_conflicts_by_service_key() -> None:
    allocator = Allocator(by_name(*SEED))
    ip = (IP("198.18.0.10"),)
    given = [
        Assignment("default/zz", ip, "doc-example", svc("zz")),
        Assignment("default/aa", ip, "doc-example", svc("aa")),
        Assignment("default/s1", (IP("198.18.0.11"),), "doc-example", sharing("s1", "k", "TCP/80")),
        Assignment("default/s2", (IP("198.18.0.11"),), "doc-example", sharing("s2", "k", "TCP/443")),
        Assignment("default/s3", (IP("198.18.0.11"),), "doc-example", sharing("s3", "k", "TCP/443")),
    ]
    assert allocator.restore(given) == ("default/s3", "default/zz")
    assert allocator.assignment("default/aa").ips == ip  # type: ignore[union-attr]
    assert allocator.stats()["doc-example"].in_use == 2


def test_restore_refuses_a_service_listed_twice() -> None:
    allocator = Allocator(by_name(*SEED))
    twice = [Assignment("default/a", (IP("198.18.0.10"),), "doc-example")] * 2
    with pytest.raises(ValueError, match="twice"):
        allocator.restore(twice)


# --- statistics ------------------------------------------------------------------------------


def test_stats_of_a_slash_64_are_exact() -> None:
    allocator = Allocator(by_name(pool("doc-example-ipv6", "2001:db8:18::/64")))
    for i in range(3):
        allocator.allocate(svc(f"s{i}", ip_families=(6,)))
    stats = allocator.stats()["doc-example-ipv6"]
    assert (stats.total, stats.in_use, stats.free) == (2**64, 3, 2**64 - 3)
    assert stats.family(6).free == 2**64 - 3 and stats.family(4).total == 0
    assert stats.as_dict()["ipv6"] == {"total": 2**64, "in_use": 3, "free": 2**64 - 3}


def test_stats_per_family_of_a_dual_stack_pool() -> None:
    allocator = Allocator(by_name(DUAL))
    allocator.allocate(svc("a", ip_family_policy=REQUIRE_DUAL_STACK, ip_families=(4, 6)))
    allocator.allocate(svc("b", ip_families=(6,)))
    stats = allocator.stats()["doc-example-dual"]
    assert (stats.family(4).total, stats.family(4).in_use, stats.family(4).free) == (4, 1, 3)
    assert (stats.family(6).total, stats.family(6).in_use, stats.family(6).free) == (4, 2, 2)
    assert (stats.total, stats.in_use, stats.free) == (8, 3, 5)


@pytest.mark.parametrize(
    ("entry", "total"),
    [
        ("198.18.0.0/24", 254),
        ("198.18.0.0/16", 65536 - 512),
        ("198.18.0.10-198.18.0.20", 11),
        ("198.18.0.250-198.18.1.5", 12 - 2),
        ("198.18.0.0/31", 1),
        ("198.18.0.255/32", 0),
        ("10.0.0.0/8", 2**24 - 2 * 2**16),
    ],
)
def test_avoid_buggy_ips_totals_are_counted_without_enumeration(entry: str, total: int) -> None:
    allocator = Allocator(by_name(pool("p", entry, avoid_buggy_ips=True)))
    assert allocator.stats()["p"].total == total


@pytest.mark.parametrize(("first", "last"), [(0, 0), (0, 255), (1, 254), (250, 770), (255, 256), (511, 1024)])
def test_count_buggy_ipv4_agrees_with_counting(first: int, last: int) -> None:
    assert count_buggy_ipv4(first, last) == sum(1 for x in range(first, last + 1) if x % 256 in (0, 255))
