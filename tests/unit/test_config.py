"""build_config: every rule of raylb.config, table-driven, plus order-independence invariants."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb.config import Config, build_config, convert_selector
from raylb.errors import Problem
from raylb.models.meta import LabelSelector
from raylb.models.pools import AddressPool, IPAddressPool, L2Advertisement
from raylb.pools import AddressRange
from raylb.selectors import LabelSelector as CoreSelector
from raylb.selectors import Requirement

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def ipool(name: str, *addresses: str, created: datetime | None = None, labels: dict[str, str] | None = None, **spec: Any) -> IPAddressPool:
    metadata: dict[str, Any] = {"name": name, "namespace": "metallb-system", "labels": labels or {}}
    if created is not None:
        metadata["creationTimestamp"] = created
    return IPAddressPool.model_validate({"metadata": metadata, "spec": {"addresses": list(addresses), **spec}})


def apool(name: str, *addresses: str, protocol: str = "layer2", created: datetime | None = None, **spec: Any) -> AddressPool:
    metadata: dict[str, Any] = {"name": name, "namespace": "metallb-system"}
    if created is not None:
        metadata["creationTimestamp"] = created
    return AddressPool.model_validate({"metadata": metadata, "spec": {"protocol": protocol, "addresses": list(addresses), **spec}})


def adv(name: str, **spec: Any) -> L2Advertisement:
    return L2Advertisement.model_validate({"metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec})


def rng(text: str) -> AddressRange:
    first, _, last = text.partition("-")
    return AddressRange(ipaddress.ip_address(first), ipaddress.ip_address(last or first))


def triples(config: Config) -> list[tuple[str, str, str, str]]:
    return [(p.kind, p.name, p.field, p.value) for p in config.problems]


# --- address entries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("198.18.0.7", "198.18.0.7"),
        ("198.18.0.0/30", "198.18.0.0-198.18.0.3"),
        ("198.18.0.5/30", "198.18.0.4-198.18.0.7"),  # host bits set: the network, as MetalLB
        ("172.20.0.100/24", "172.20.0.0-172.20.0.255"),  # the operator sample's pool
        ("198.18.0.10-198.18.0.20", "198.18.0.10-198.18.0.20"),
        ("198.18.0.10 - 198.18.0.20", "198.18.0.10-198.18.0.20"),
        ("2001:db8:18::/126", "2001:db8:18::-2001:db8:18::3"),
        ("2001:db8:18::1-2001:db8:18::100", "2001:db8:18::1-2001:db8:18::100"),
        ("2001:db8:18::/64", "2001:db8:18::-2001:db8:18::ffff:ffff:ffff:ffff"),
    ],
)
def test_good_entries_become_ranges(entry: str, expected: str) -> None:
    config = build_config(ip_address_pools=[ipool("p", entry)])
    assert config.problems == ()
    assert config.pools["p"].ranges == (rng(expected),)


@pytest.mark.parametrize(
    ("addresses", "field", "value", "words"),
    [
        (["198.18.0.1", "banana"], "spec.addresses[1]", "banana", "invalid address"),
        (["198.18.0.300"], "spec.addresses[0]", "198.18.0.300", "invalid address"),
        (["198.18.0.0/33"], "spec.addresses[0]", "198.18.0.0/33", "invalid CIDR"),
        (["198.18.0.20-198.18.0.10"], "spec.addresses[0]", "198.18.0.20-198.18.0.10", "after end"),
        (["198.18.0.1-2001:db8:18::1"], "spec.addresses[0]", "198.18.0.1-2001:db8:18::1", "different IP families"),
        (["198.18.0.1-"], "spec.addresses[0]", "198.18.0.1-", "invalid range"),
        (["198.18.0.1-banana"], "spec.addresses[0]", "198.18.0.1-banana", "the end 'banana' is not an IP address"),
        # a dash does not make a range: told it is not an address (was "expected FIRST-LAST")
        (["not-an-ip"], "spec.addresses[0]", "not-an-ip", "invalid address 'not-an-ip': not an IP address"),
        ([""], "spec.addresses[0]", "", "empty"),
        ([], "spec.addresses", "[]", "at least one"),
        (["198.18.0.0/24", "198.18.0.10"], "spec.addresses[1]", "198.18.0.10", "spec.addresses[0]='198.18.0.0/24'"),
        (["198.18.0.10-198.18.0.20", "198.18.0.0/28"], "spec.addresses[1]", "198.18.0.0/28", "same pool"),
        (["2001:db8:18::/120", "2001:db8:18::5-2001:db8:18::6"], "spec.addresses[1]", "2001:db8:18::5-2001:db8:18::6", "same pool"),
    ],
)
def test_bad_addresses_are_reported_with_field_and_value_and_the_pool_is_left_out(
    addresses: list[str], field: str, value: str, words: str
) -> None:
    config = build_config(ip_address_pools=[ipool("bad", *addresses), ipool("good", "198.18.1.1")])
    (problem,) = config.problems
    assert (problem.kind, problem.name, problem.field, problem.value) == ("IPAddressPool", "bad", field, value)
    assert words in problem.message
    assert list(config.pools) == ["good"]
    assert config.problems_of("IPAddressPool", "bad") == (problem,)
    assert f"IPAddressPool 'bad': {field}=" in str(problem)


def test_every_bad_entry_of_a_pool_is_reported_not_only_the_first() -> None:
    config = build_config(ip_address_pools=[ipool("bad", "x", "198.18.0.1", "y")])
    assert [p.field for p in config.problems] == ["spec.addresses[0]", "spec.addresses[2]"]


def test_same_family_ranges_that_touch_do_not_overlap() -> None:
    config = build_config(ip_address_pools=[ipool("a", "198.18.0.0/25", "198.18.0.128-198.18.0.130"), ipool("b", "198.18.0.131")])
    assert config.problems == () and sorted(config.pools) == ["a", "b"]


def test_v4_and_v6_with_the_same_integer_value_do_not_overlap() -> None:
    config = build_config(ip_address_pools=[ipool("a", "0.0.0.1"), ipool("b", "::1")])
    assert config.problems == ()


# --- pool settings --------------------------------------------------------------------------


def test_pool_settings_are_carried_over() -> None:
    config = build_config(
        ip_address_pools=[
            ipool(
                "p",
                "198.18.0.0/28",
                "2001:db8:18::/124",
                autoAssign=False,
                avoidBuggyIPs=True,
                serviceAllocation={
                    "priority": 5,
                    "namespaces": ["a", "b"],
                    "namespaceSelectors": [{"matchLabels": {"team": "x"}}],
                    "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}],
                },
            )
        ]
    )
    pool = config.pools["p"]
    assert (pool.kind, pool.auto_assign, pool.avoid_buggy_ips) == ("IPAddressPool", False, True)
    assert pool.ranges == (rng("198.18.0.0-198.18.0.15"), rng("2001:db8:18::-2001:db8:18::f"))
    assert pool.allocation is not None
    assert (pool.allocation.priority, pool.allocation.namespaces) == (5, frozenset({"a", "b"}))
    assert pool.allocation.namespace_selectors == (CoreSelector(match_labels=(("team", "x"),)),)
    assert pool.allocation.service_selectors == (CoreSelector(requirements=(Requirement("app", "In", frozenset({"web"})),)),)


def test_pool_without_service_allocation_has_none_and_ranges_are_sorted() -> None:
    pool = build_config(ip_address_pools=[ipool("p", "2001:db8:18::1", "198.18.0.9", "198.18.0.1")]).pools["p"]
    assert pool.allocation is None
    assert [str(r) for r in pool.ranges] == ["198.18.0.1", "198.18.0.9", "2001:db8:18::1"]


def test_layer2_address_pool_becomes_a_pool_announced_everywhere() -> None:
    config = build_config(address_pools=[apool("legacy", "198.18.0.0/29", autoAssign=False)])
    assert config.problems == ()
    pool = config.pools["legacy"]
    assert (pool.kind, pool.auto_assign, pool.allocation) == ("AddressPool", False, None)
    (implied,) = config.advertisements
    assert (implied.kind, implied.name, implied.pools, implied.node_selectors) == ("AddressPool", "legacy", {"legacy"}, ())
    assert implied.selects_node({"any": "node"})


def test_bgp_address_pool_is_reported_unsupported_and_left_out() -> None:
    config = build_config(address_pools=[apool("b", "198.18.0.0/29", protocol="bgp"), apool("l", "198.18.1.0/29")])
    assert triples(config) == [("AddressPool", "b", "spec.protocol", "bgp")]
    assert "layer2" in config.problems[0].message
    assert list(config.pools) == ["l"]


def test_bgp_advertisements_on_a_layer2_pool_are_reported_but_the_pool_works() -> None:
    config = build_config(address_pools=[apool("l", "198.18.0.0/29", bgpAdvertisements=[{"localPref": 100}])])
    assert triples(config) == [("AddressPool", "l", "spec.bgpAdvertisements", "1")]
    assert list(config.pools) == ["l"]


# --- names and overlaps across pools -----------------------------------------------------------


@pytest.mark.parametrize(
    ("pools", "kept", "refused"),
    [
        # same name, two IPAddressPools: the older wins
        ([ipool("p", "198.18.0.1", created=T0 + timedelta(1)), ipool("p", "198.18.0.2", created=T0)], {"p": "198.18.0.2"}, [("IPAddressPool", "p", "metadata.name", "p")]),
        # AddressPool and IPAddressPool share one name space; same age: IPAddressPool wins
        ([apool("p", "198.18.0.1", created=T0), ipool("p", "198.18.0.2", created=T0)], {"p": "198.18.0.2"}, [("AddressPool", "p", "metadata.name", "p")]),
        # ... but an older AddressPool keeps its name
        ([apool("p", "198.18.0.1", created=T0), ipool("p", "198.18.0.2", created=T0 + timedelta(1))], {"p": "198.18.0.1"}, [("IPAddressPool", "p", "metadata.name", "p")]),
    ],
)
def test_duplicate_pool_names_first_come_first_served(pools: list[Any], kept: dict[str, str], refused: list[tuple[str, ...]]) -> None:
    ips = [p for p in pools if isinstance(p, IPAddressPool)]
    legacy = [p for p in pools if isinstance(p, AddressPool)]
    config = build_config(ip_address_pools=ips, address_pools=legacy)
    assert {n: str(p.ranges[0]) for n, p in config.pools.items()} == kept
    assert triples(config) == refused
    assert "same name" in config.problems[0].message


@pytest.mark.parametrize(
    ("pools", "kept", "refused"),
    [
        # older pool keeps its addresses even though its name sorts later
        ([ipool("zeta", "198.18.0.0/24", created=T0), ipool("alpha", "198.18.0.100-198.18.0.110", created=T0 + timedelta(1))],
         ["zeta"], [("IPAddressPool", "alpha", "spec.addresses[0]", "198.18.0.100-198.18.0.110")]),
        # same creation time (or none): by name
        ([ipool("b", "198.18.0.5"), ipool("a", "198.18.0.0/29")], ["a"], [("IPAddressPool", "b", "spec.addresses[0]", "198.18.0.5")]),
        # pools with a creation time come before pools without one
        ([ipool("a", "198.18.0.5"), ipool("b", "198.18.0.0/29", created=T0)], ["b"], [("IPAddressPool", "a", "spec.addresses[0]", "198.18.0.5")]),
        # AddressPool against IPAddressPool, IPv6; each overlapping entry of the refused pool is named
        ([apool("old", "2001:db8:18::/120", created=T0), ipool("new", "2001:db8:18::1:0/120", "2001:db8:18::ff", "2001:db8:18::1", created=T0 + timedelta(1))],
         ["old"], [("IPAddressPool", "new", "spec.addresses[1]", "2001:db8:18::ff"), ("IPAddressPool", "new", "spec.addresses[2]", "2001:db8:18::1")]),
        # a pool refused for an overlap does not claim addresses: the third pool survives
        ([ipool("a", "198.18.0.0/30", created=T0), ipool("b", "198.18.0.3-198.18.0.9", created=T0 + timedelta(1)), ipool("c", "198.18.0.5", created=T0 + timedelta(2))],
         ["a", "c"], [("IPAddressPool", "b", "spec.addresses[0]", "198.18.0.3-198.18.0.9")]),
        # a pool refused for its own errors does not claim addresses either
        ([ipool("a", "198.18.0.0/30", "junk", created=T0), ipool("b", "198.18.0.1", created=T0 + timedelta(1))],
         ["b"], [("IPAddressPool", "a", "spec.addresses[1]", "junk")]),
    ],
)
def test_overlapping_pools_first_come_first_served(pools: list[Any], kept: list[str], refused: list[tuple[str, ...]]) -> None:
    ips = [p for p in pools if isinstance(p, IPAddressPool)]
    legacy = [p for p in pools if isinstance(p, AddressPool)]
    config = build_config(ip_address_pools=ips, address_pools=legacy)
    assert sorted(config.pools) == kept
    assert triples(config) == refused


def test_overlap_problem_names_the_pool_and_entry_that_keeps_the_addresses() -> None:
    config = build_config(
        ip_address_pools=[ipool("a", "198.18.1.1", "198.18.0.0/24", created=T0), ipool("b", "198.18.0.7", created=T0 + timedelta(1))]
    )
    (problem,) = config.problems
    assert "IPAddressPool 'a' spec.addresses[1]='198.18.0.0/24'" in problem.message


# --- selectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "field", "value"),
    [
        ({"key": "a", "operator": "Equals", "values": ["x"]}, "matchExpressions[0].operator", "Equals"),
        ({"key": "a", "operator": "in", "values": ["x"]}, "matchExpressions[0].operator", "in"),
        ({"key": "a", "operator": "In", "values": []}, "matchExpressions[0].values", ""),
        ({"key": "a", "operator": "NotIn"}, "matchExpressions[0].values", ""),
        ({"key": "a", "operator": "Exists", "values": ["x"]}, "matchExpressions[0].values", "x"),
        ({"key": "a", "operator": "DoesNotExist", "values": ["x", "y"]}, "matchExpressions[0].values", "x,y"),
    ],
)
def test_bad_selectors_are_reported_and_never_widen(expression: dict[str, Any], field: str, value: str) -> None:
    selector = {"matchExpressions": [expression]}
    config = build_config(
        ip_address_pools=[
            ipool("p", "198.18.0.1", serviceAllocation={"serviceSelectors": [{}, selector]}),
            ipool("q", "198.18.0.2"),
        ],
        l2_advertisements=[adv("by-node", nodeSelectors=[selector]), adv("by-pool", ipAddressPoolSelectors=[selector]), adv("all")],
    )
    assert triples(config) == [
        ("IPAddressPool", "p", f"spec.serviceAllocation.serviceSelectors[1].{field}", value),
        ("L2Advertisement", "by-node", f"spec.nodeSelectors[0].{field}", value),
        ("L2Advertisement", "by-pool", f"spec.ipAddressPoolSelectors[0].{field}", value),
    ]
    assert list(config.pools) == ["q"]
    assert [a.name for a in config.advertisements] == ["all"]


@pytest.mark.parametrize(
    ("wire", "core"),
    [
        ({}, CoreSelector()),
        ({"matchLabels": {"b": "2", "a": "1"}}, CoreSelector(match_labels=(("a", "1"), ("b", "2")))),
        (
            {"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["x", "y"]}, {"key": "e", "operator": "Exists"}]},
            CoreSelector(requirements=(Requirement("k", "NotIn", frozenset({"x", "y"})), Requirement("e", "Exists"))),
        ),
    ],
)
def test_label_selectors_convert_to_the_core_type(wire: dict[str, Any], core: CoreSelector) -> None:
    converted, problems = convert_selector(LabelSelector.model_validate(wire), kind="K", name="n", field="f")
    assert (converted, problems) == (core, [])


# --- advertisements -------------------------------------------------------------------------------


def test_advertisement_pool_selection() -> None:
    pools = [
        ipool("gold", "198.18.0.1", labels={"tier": "gold"}),
        ipool("silver", "198.18.0.2", labels={"tier": "silver"}),
        ipool("plain", "198.18.0.3"),
    ]
    config = build_config(
        ip_address_pools=pools,
        l2_advertisements=[
            adv("a-all"),
            adv("b-list", ipAddressPools=["plain"]),
            adv("c-selector", ipAddressPoolSelectors=[{"matchLabels": {"tier": "gold"}}]),
            adv("d-both", ipAddressPools=["plain"], ipAddressPoolSelectors=[{"matchExpressions": [{"key": "tier", "operator": "Exists"}]}]),
            adv("e-nodes", nodeSelectors=[{"matchLabels": {"zone": "a"}}, {"matchLabels": {"zone": "b"}}], interfaces=["eth1"]),
        ],
    )
    assert config.problems == ()
    by_name = {a.name: a for a in config.advertisements}
    assert by_name["a-all"].pools == {"gold", "silver", "plain"}
    assert by_name["b-list"].pools == {"plain"}
    assert by_name["c-selector"].pools == {"gold"}
    assert by_name["d-both"].pools == {"gold", "silver", "plain"}
    e = by_name["e-nodes"]
    assert (e.interfaces, e.selects_node({"zone": "b"}), e.selects_node({"zone": "c"})) == (("eth1",), True, False)
    assert by_name["a-all"].selects_node({})


def test_advertisement_naming_an_unknown_pool_is_reported_and_keeps_the_known_ones() -> None:
    config = build_config(ip_address_pools=[ipool("p", "198.18.0.1")], l2_advertisements=[adv("x", ipAddressPools=["p", "typo"])])
    assert triples(config) == [("L2Advertisement", "x", "spec.ipAddressPools[1]", "typo")]
    assert config.advertisements[0].pools == {"p"}


def test_advertisement_naming_only_unknown_pools_announces_nothing_not_everything() -> None:
    config = build_config(ip_address_pools=[ipool("p", "198.18.0.1")], l2_advertisements=[adv("x", ipAddressPools=["typo"])])
    assert config.advertisements[0].pools == frozenset()


def test_advertisement_naming_a_refused_pool_is_not_reported_twice() -> None:
    config = build_config(ip_address_pools=[ipool("bad", "junk")], l2_advertisements=[adv("x", ipAddressPools=["bad"])])
    assert triples(config) == [("IPAddressPool", "bad", "spec.addresses[0]", "junk")]
    assert config.advertisements[0].pools == frozenset()


def test_config_is_frozen() -> None:
    config = build_config(ip_address_pools=[ipool("p", "198.18.0.1")])
    with pytest.raises(TypeError):
        config.pools["q"] = config.pools["p"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.problems = ()  # type: ignore[misc]
    assert isinstance(config.problems, tuple) and all(isinstance(p, Problem) for p in config.problems)


# --- invariants ------------------------------------------------------------------------------------

# Small random pools in 198.18.0.0/24 so that overlaps are common.
_entry = st.tuples(st.integers(0, 60), st.integers(0, 8)).map(lambda t: f"198.18.0.{t[0]}-198.18.0.{t[0] + t[1]}")
_pools = st.lists(
    st.tuples(st.sampled_from("abcdef"), st.lists(_entry, min_size=1, max_size=3), st.integers(0, 3), st.booleans()),
    max_size=6,
    unique_by=lambda t: (t[0], t[3]),  # Kubernetes: one object per kind, namespace and name
)


def _build(specs: list[tuple[str, list[str], int, bool]]) -> Config:
    ips = [ipool(n, *a, created=T0 + timedelta(days=d)) for n, a, d, legacy in specs if not legacy]
    legacy = [apool(n, *a, created=T0 + timedelta(days=d)) for n, a, d, legacy in specs if legacy]
    return build_config(ip_address_pools=ips, address_pools=legacy, l2_advertisements=[adv("all"), adv("some", ipAddressPools=["a", "z"])])


@settings(max_examples=200, deadline=None)
@given(_pools, st.randoms(use_true_random=False))
def test_result_does_not_depend_on_input_order(specs: list[tuple[str, list[str], int, bool]], random: Any) -> None:
    shuffled = list(specs)
    random.shuffle(shuffled)
    assert _build(specs) == _build(shuffled)


@settings(max_examples=200, deadline=None)
@given(_pools)
def test_accepted_pools_never_overlap_and_every_refusal_has_a_reason(specs: list[tuple[str, list[str], int, bool]]) -> None:
    config = _build(specs)
    ranges = [(name, r) for name, pool in config.pools.items() for r in pool.ranges]
    for i, (na, ra) in enumerate(ranges):
        for nb, rb in ranges[i + 1 :]:
            assert not ra.overlaps(rb), (na, ra, nb, rb)
    declared = {(("AddressPool" if legacy else "IPAddressPool"), n) for n, _, _, legacy in specs}
    accepted = {(p.kind, p.name) for p in config.pools.values()}
    refused = declared - accepted
    for kind, name in refused:
        assert config.problems_of(kind, name), f"{kind} {name} left out without a problem"
    # An accepted pool has no problem with its addresses.
    for kind, name in accepted:
        assert not [p for p in config.problems_of(kind, name) if p.field.startswith("spec.addresses")]
