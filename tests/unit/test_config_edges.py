"""Edge cases of build_config and parse that tests/unit/test_config.py does not cover.

MetalLB facts cited below come from metallb/metallb internal/config/config.go (ParseCIDR,
poolsFor, addressPoolFromCR, addressPoolServiceAllocationsFromCR, setL2AdvertisementsToPools,
l2AdvertisementFromCR) and from the Go and apimachinery functions it calls.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from raylb.config import Config, build_config
from raylb.errors import ConfigError, Problem
from raylb.models import parse
from raylb.models.pools import AddressPool, IPAddressPool, L2Advertisement
from raylb.pools import ServiceAllocation
from tests.unit.test_config import T0, adv, apool, ipool, rng, triples

# --- address entries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("2001:db8:18::5/126", "2001:db8:18::4-2001:db8:18::7"),  # host bits set: the network (Go net.ParseCIDR)
        ("198.18.0.1/32", "198.18.0.1"),
        ("2001:db8:18::1/128", "2001:db8:18::1"),
        ("0.0.0.0/0", "0.0.0.0-255.255.255.255"),
        ("::/0", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2001:db8:18::1 - 2001:db8:18::5", "2001:db8:18::1-2001:db8:18::5"),
        ("198.18.0.1\t-\t198.18.0.5", "198.18.0.1-198.18.0.5"),  # ParseCIDR: strings.TrimSpace on each side
        ("  198.18.0.9  ", "198.18.0.9"),
        ("198.18.0.5-198.18.0.5", "198.18.0.5"),  # ParseCIDR refuses only start > end
    ],
)
def test_more_address_spellings_become_the_range_metallb_means(entry: str, expected: str) -> None:
    config = build_config(ip_address_pools=[ipool("p", entry)])
    assert config.problems == ()
    assert config.pools["p"].ranges == (rng(expected),)


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("2001:db8:18::9-2001:db8:18::1", "after end"),
        ("2001:db8:18::9 - 2001:db8:18::1", "after end"),
        ("2001:db8:18::1-198.18.0.1", "different IP families"),
        ("198.18.0.1--198.18.0.5", "invalid range"),
        ("198.18.0.0/24-198.18.1.0", "invalid CIDR"),
        ("198.18.0.1 198.18.0.2", "invalid address"),
        ("2001:db8:18::/129", "invalid CIDR"),
        ("\t", "empty"),
    ],
)
def test_more_bad_entries_are_reported_with_pool_field_and_value(entry: str, words: str) -> None:
    config = build_config(ip_address_pools=[ipool("bad", "198.18.9.1", entry), ipool("good", "198.18.1.1")])
    (problem,) = config.problems
    assert (problem.kind, problem.name, problem.field, problem.value) == ("IPAddressPool", "bad", "spec.addresses[1]", entry)
    assert words in problem.message
    assert list(config.pools) == ["good"]


# MetalLB checks every CIDR of every pool against all CIDRs seen so far, its own pool's included
# (poolsFor: "CIDR %q in pool %q overlaps with already defined CIDR %q"), so a pool that lists an
# address twice, in any spelling, is refused.
@pytest.mark.parametrize(
    ("addresses", "reported"),
    [
        (["198.18.0.1", "198.18.0.1"], {"spec.addresses[1]": "spec.addresses[0]='198.18.0.1'"}),
        (["198.18.0.0/30", "198.18.0.0-198.18.0.3"], {"spec.addresses[1]": "spec.addresses[0]='198.18.0.0/30'"}),
        (["2001:db8:18::1", "2001:0db8:18:0::1"], {"spec.addresses[1]": "spec.addresses[0]='2001:db8:18::1'"}),
        (["::/0", "2001:db8:18::1"], {"spec.addresses[1]": "spec.addresses[0]='::/0'"}),
        (
            ["198.18.0.0-198.18.0.5", "198.18.0.3-198.18.0.10", "198.18.0.8"],
            {"spec.addresses[1]": "spec.addresses[0]=", "spec.addresses[2]": "spec.addresses[1]="},
        ),
        (
            ["198.18.0.9", "198.18.0.0/28", "198.18.0.3"],
            {"spec.addresses[1]": "spec.addresses[0]='198.18.0.9'", "spec.addresses[2]": "spec.addresses[1]='198.18.0.0/28'"},
        ),
    ],
)
def test_duplicate_or_overlapping_entries_in_one_pool_are_reported_on_the_later_entry(
    addresses: list[str], reported: dict[str, str]
) -> None:
    config = build_config(ip_address_pools=[ipool("dup", *addresses), ipool("good", "198.18.1.1")])
    assert {p.field: p.message for p in config.problems}.keys() == reported.keys()
    for problem in config.problems:
        assert (problem.kind, problem.name) == ("IPAddressPool", "dup")
        assert problem.value == addresses[int(problem.field[len("spec.addresses[") : -1])]
        assert reported[problem.field] in problem.message and "same pool" in problem.message
    assert list(config.pools) == ["good"]


def test_a_pool_may_hold_a_whole_ipv4_and_a_whole_ipv6_space() -> None:
    config = build_config(ip_address_pools=[ipool("all", "::/0", "0.0.0.0/0")])
    assert config.problems == ()
    assert [r.version for r in config.pools["all"].ranges] == [4, 6]


def test_a_slash_zero_pool_claims_its_own_family_only() -> None:
    config = build_config(
        ip_address_pools=[
            ipool("everything", "0.0.0.0/0", created=T0),
            ipool("later-v4", "198.18.0.1", created=T0 + timedelta(1)),
            ipool("later-v6", "2001:db8:18::1", created=T0 + timedelta(1)),
        ]
    )
    assert sorted(config.pools) == ["everything", "later-v6"]
    assert triples(config) == [("IPAddressPool", "later-v4", "spec.addresses[0]", "198.18.0.1")]


# Go's net.ParseIP/ParseCIDR read an IPv4-mapped IPv6 address as the IPv4 address itself (To4() is
# non-nil, IPNet.Contains compares the last 4 bytes), so MetalLB's poolsFor finds the overlap with
# 198.18.0.1/32 and refuses the second pool. raylb keeps it as the IPv6 address ::ffff:c612:1.
@pytest.mark.parametrize("entry", ["::ffff:198.18.0.1", "::ffff:198.18.0.0/120"])
def test_an_ipv4_mapped_entry_does_not_hand_out_an_ipv4_address_a_second_time(entry: str) -> None:
    config = build_config(ip_address_pools=[ipool("v4", "198.18.0.1", created=T0), ipool("mapped", entry, created=T0 + timedelta(1))])
    assert list(config.pools) == ["v4"]
    assert [(p.name, p.field, p.value) for p in config.problems] == [("mapped", "spec.addresses[0]", entry)]


# Go's net.ParseIP and net.ParseCIDR refuse an address with a zone ("%eth0"), so MetalLB refuses the
# pool ("invalid CIDR"); Python's ipaddress accepts scoped IPv6 addresses since 3.9, and raylb would
# hand out "fe80::1%eth0", which is no valid Service ingress IP.
@pytest.mark.parametrize("entry", ["fe80::1%eth0", "fe80::1%eth0-fe80::5", "fe80::%eth0/64"])
def test_a_scoped_ipv6_address_is_refused(entry: str) -> None:
    config = build_config(ip_address_pools=[ipool("scoped", entry), ipool("good", "198.18.1.1")])
    assert triples(config) == [("IPAddressPool", "scoped", "spec.addresses[0]", entry)]
    assert list(config.pools) == ["good"]


# --- legacy AddressPool ------------------------------------------------------------------------------


def test_address_pool_defaults_and_avoid_buggy_ips_carry_over() -> None:
    # addressPoolFromCR: AutoAssign true unless set; AvoidBuggyIPs as written.
    config = build_config(address_pools=[apool("plain", "198.18.0.0/29"), apool("careful", "198.18.1.0/29", avoidBuggyIPs=True)])
    assert config.problems == ()
    plain, careful = config.pools["plain"], config.pools["careful"]
    assert (plain.auto_assign, plain.avoid_buggy_ips) == (True, False)
    assert (careful.auto_assign, careful.avoid_buggy_ips) == (True, True)


def test_v1alpha1_address_pool_builds_like_v1beta1_and_needs_a_protocol() -> None:
    doc: dict[str, Any] = {
        "apiVersion": "metallb.io/v1alpha1",
        "kind": "AddressPool",
        "metadata": {"name": "old", "namespace": "metallb-system"},
        "spec": {"protocol": "layer2", "addresses": ["198.18.0.0/29"]},
    }
    pool = parse(doc)
    assert isinstance(pool, AddressPool)
    config = build_config(address_pools=[pool])
    assert (config.pools["old"].kind, [a.name for a in config.advertisements]) == ("AddressPool", ["old"])
    del doc["spec"]["protocol"]
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert [(p.kind, p.name, p.field) for p in info.value.problems] == [("AddressPool", "old", "spec.protocol")]


def test_a_bgp_address_pool_claims_neither_its_name_nor_its_addresses() -> None:
    config = build_config(
        address_pools=[apool("shared", "198.18.0.0/24", protocol="bgp", created=T0)],
        ip_address_pools=[ipool("shared", "198.18.0.1", created=T0 + timedelta(1)), ipool("other", "198.18.0.5")],
        l2_advertisements=[adv("named", ipAddressPools=["shared"])],
    )
    assert triples(config) == [("AddressPool", "shared", "spec.protocol", "bgp")]
    assert {n: p.kind for n, p in config.pools.items()} == {"other": "IPAddressPool", "shared": "IPAddressPool"}
    (named,) = config.advertisements  # no implied advertisement for the refused AddressPool
    assert named.pools == {"shared"}


def test_a_bgp_address_pool_reports_every_problem_at_once() -> None:
    config = build_config(address_pools=[apool("b", "junk", protocol="bgp", bgpAdvertisements=[{}, {}]), apool("l", "198.18.1.0/29")])
    assert triples(config) == [
        ("AddressPool", "b", "spec.protocol", "bgp"),
        ("AddressPool", "b", "spec.addresses[0]", "junk"),
        ("AddressPool", "b", "spec.bgpAdvertisements", "2"),
    ]
    assert list(config.pools) == ["l"]


def test_an_address_pool_that_loses_its_name_gets_no_implied_advertisement() -> None:
    config = build_config(
        address_pools=[apool("p", "198.18.0.1", created=T0 + timedelta(1))],
        ip_address_pools=[ipool("p", "198.18.0.2", created=T0)],
    )
    assert triples(config) == [("AddressPool", "p", "metadata.name", "p")]
    assert config.pools["p"].kind == "IPAddressPool"
    assert config.advertisements == ()


# --- IPAddressPool serviceAllocation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "labels", "matches"),
    [
        ({"key": "team", "operator": "In", "values": ["a", "b"]}, {"team": "b"}, True),
        ({"key": "team", "operator": "In", "values": ["a", "b"]}, {"team": "c"}, False),
        ({"key": "team", "operator": "In", "values": ["a"]}, {}, False),
        ({"key": "team", "operator": "NotIn", "values": ["a"]}, {"team": "b"}, True),
        ({"key": "team", "operator": "NotIn", "values": ["a"]}, {}, True),  # absent key: NotIn holds, as in Kubernetes
        ({"key": "team", "operator": "NotIn", "values": ["a"]}, {"team": "a"}, False),
        ({"key": "team", "operator": "Exists"}, {"team": ""}, True),
        ({"key": "team", "operator": "Exists"}, {"other": "x"}, False),
        ({"key": "team", "operator": "DoesNotExist"}, {}, True),
        ({"key": "team", "operator": "DoesNotExist"}, {"team": "a"}, False),
    ],
)
def test_service_allocation_match_expressions_select_as_in_kubernetes(
    expression: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    selector = {"matchExpressions": [expression]}
    config = build_config(
        ip_address_pools=[ipool("p", "198.18.0.1", serviceAllocation={"namespaceSelectors": [selector], "serviceSelectors": [selector]})]
    )
    assert config.problems == ()
    allocation = config.pools["p"].allocation
    assert allocation is not None
    assert allocation.namespace_selectors[0].matches(labels) is matches
    assert allocation.service_selectors[0].matches(labels) is matches


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ({}, ServiceAllocation()),  # MetalLB: no namespaces and no selectors match every service
        ({"priority": 7}, ServiceAllocation(priority=7)),
        ({"priority": -3, "namespaces": ["a", "a"]}, ServiceAllocation(priority=-3, namespaces=frozenset({"a"}))),
    ],
)
def test_service_allocation_without_selectors_keeps_its_priority(wire: dict[str, Any], expected: ServiceAllocation) -> None:
    config = build_config(ip_address_pools=[ipool("p", "198.18.0.1", serviceAllocation=wire)])
    assert config.problems == ()
    assert config.pools["p"].allocation == expected


def test_every_bad_expression_of_every_selector_is_reported_with_its_full_path() -> None:
    bad_operator = {"key": "a", "operator": "Equals", "values": ["x"]}
    missing_values = {"key": "a", "operator": "In"}
    fine = {"key": "a", "operator": "Exists"}
    config = build_config(
        ip_address_pools=[
            ipool(
                "p",
                "198.18.0.1",
                serviceAllocation={
                    "namespaceSelectors": [{"matchLabels": {"t": "x"}}, {"matchExpressions": [fine, bad_operator, missing_values]}],
                    "serviceSelectors": [{"matchExpressions": [bad_operator]}],
                },
            ),
            ipool("q", "198.18.0.2"),
        ]
    )
    prefix = "spec.serviceAllocation."
    assert triples(config) == [
        ("IPAddressPool", "p", prefix + "namespaceSelectors[1].matchExpressions[1].operator", "Equals"),
        ("IPAddressPool", "p", prefix + "namespaceSelectors[1].matchExpressions[2].values", ""),
        ("IPAddressPool", "p", prefix + "serviceSelectors[0].matchExpressions[0].operator", "Equals"),
    ]
    assert "In, NotIn, Exists, DoesNotExist" in config.problems[0].message
    assert list(config.pools) == ["q"]


# MetalLB turns every selector into labels.Selector with metav1.LabelSelectorAsSelector, whose
# labels.NewRequirement validates keys (IsQualifiedName) and In/NotIn/matchLabels values
# (IsValidLabelValue); a bad one makes the pool unusable. raylb evaluates the typo literally, and
# with DoesNotExist or NotIn a typo in the key selects every service.
@pytest.mark.parametrize(
    ("selector", "field", "value"),
    [
        ({"matchExpressions": [{"key": "team ", "operator": "DoesNotExist"}]}, "matchExpressions[0].key", "team "),
        ({"matchExpressions": [{"key": "", "operator": "Exists"}]}, "matchExpressions[0].key", ""),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a b"]}]}, "matchExpressions[0].values", "a b"),
        ({"matchLabels": {"team/x/y": "a"}}, "matchLabels", "team/x/y"),
    ],
)
def test_a_selector_with_an_invalid_label_key_or_value_is_reported(selector: dict[str, Any], field: str, value: str) -> None:
    config = build_config(ip_address_pools=[ipool("p", "198.18.0.1", serviceAllocation={"serviceSelectors": [selector]})])
    (problem,) = config.problems
    assert (problem.name, problem.value) == ("p", value)
    assert problem.field.startswith(f"spec.serviceAllocation.serviceSelectors[0].{field}")
    assert "p" not in config.pools


# --- L2Advertisement ---------------------------------------------------------------------------------

_TIERED = [
    ipool("gold", "198.18.0.1", labels={"tier": "gold"}),
    ipool("silver", "198.18.0.2", labels={"tier": "silver"}),
    ipool("plain", "198.18.0.3"),
]


# setL2AdvertisementsToPools: every pool only when both ipAddressPools and ipAddressPoolSelectors
# are empty; otherwise the named pools plus the selected ones, which may be none at all.
@pytest.mark.parametrize(
    ("spec", "pools", "problems"),
    [
        ({"ipAddressPools": []}, {"gold", "silver", "plain"}, []),
        ({"ipAddressPoolSelectors": []}, {"gold", "silver", "plain"}, []),
        ({"ipAddressPoolSelectors": [{}]}, {"gold", "silver", "plain"}, []),  # an empty selector matches everything
        ({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "bronze"}}]}, set(), []),
        ({"ipAddressPoolSelectors": [{"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}]}, {"silver", "plain"}, []),
        ({"ipAddressPoolSelectors": [{"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}]}, {"plain"}, []),
        (
            {"ipAddressPools": ["typo"], "ipAddressPoolSelectors": [{"matchLabels": {"tier": "gold"}}]},
            {"gold"},
            [("L2Advertisement", "x", "spec.ipAddressPools[0]", "typo")],
        ),
        ({"ipAddressPools": ["plain", "plain"]}, {"plain"}, []),  # MetalLB refuses the duplicate; raylb lets it pass
    ],
)
def test_which_pools_an_advertisement_announces(spec: dict[str, Any], pools: set[str], problems: list[tuple[str, ...]]) -> None:
    config = build_config(ip_address_pools=_TIERED, l2_advertisements=[adv("x", **spec)])
    assert triples(config) == problems
    (advertisement,) = config.advertisements
    assert advertisement.pools == pools


def test_an_advertisement_may_name_a_legacy_address_pool() -> None:
    config = build_config(address_pools=[apool("legacy", "198.18.0.0/29")], l2_advertisements=[adv("x", ipAddressPools=["legacy"], interfaces=["eth1"])])
    assert config.problems == ()
    assert [(a.kind, a.name, a.pools) for a in config.advertisements] == [("AddressPool", "legacy", {"legacy"}), ("L2Advertisement", "x", {"legacy"})]


@pytest.mark.parametrize(
    ("expression", "node", "selected"),
    [
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "a"}, True),
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "c"}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "c"}, True),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {}, True),
        ({"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}, {"node-role.kubernetes.io/control-plane": ""}, False),
        ({"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}, {"zone": "a"}, True),
        ({"key": "lb", "operator": "Exists"}, {"lb": "yes"}, True),
        ({"key": "lb", "operator": "Exists"}, {}, False),
    ],
)
def test_node_selector_match_expressions_select_nodes(expression: dict[str, Any], node: dict[str, str], selected: bool) -> None:
    config = build_config(ip_address_pools=_TIERED, l2_advertisements=[adv("x", nodeSelectors=[{"matchExpressions": [expression]}])])
    assert config.problems == ()
    assert config.advertisements[0].selects_node(node) is selected


def test_node_selectors_are_ored_and_each_selector_is_anded() -> None:
    both = {"matchLabels": {"zone": "a"}, "matchExpressions": [{"key": "lb", "operator": "Exists"}]}
    other = {"matchLabels": {"zone": "b"}}
    (advertisement,) = build_config(l2_advertisements=[adv("x", nodeSelectors=[both, other])]).advertisements
    assert [advertisement.selects_node(n) for n in ({"zone": "a"}, {"zone": "a", "lb": ""}, {"zone": "b"})] == [False, True, True]


@pytest.mark.parametrize("spec", [{}, {"interfaces": []}])
def test_no_interfaces_listed_means_every_interface(spec: dict[str, Any]) -> None:
    # l2AdvertisementFromCR: len(Interfaces) == 0 sets AllInterfaces.
    (advertisement,) = build_config(ip_address_pools=_TIERED, l2_advertisements=[adv("x", **spec)]).advertisements
    assert advertisement.interfaces == ()


def test_interfaces_are_kept_in_the_order_written() -> None:
    (advertisement,) = build_config(l2_advertisements=[adv("x", interfaces=["eth1", "bond0"])]).advertisements
    assert advertisement.interfaces == ("eth1", "bond0")


def test_an_advertisement_with_a_bad_node_selector_is_dropped_with_all_its_problems() -> None:
    bad = {"matchExpressions": [{"key": "zone", "operator": "Is", "values": ["a"]}]}
    config = build_config(
        ip_address_pools=_TIERED,
        l2_advertisements=[adv("bad", ipAddressPools=["typo"], nodeSelectors=[{}, bad]), adv("good", ipAddressPools=["gold"])],
    )
    assert triples(config) == [
        ("L2Advertisement", "bad", "spec.ipAddressPools[0]", "typo"),
        ("L2Advertisement", "bad", "spec.nodeSelectors[1].matchExpressions[0].operator", "Is"),
    ]
    assert [(a.name, a.pools) for a in config.advertisements] == [("good", {"gold"})]
    assert set(config.pools) == {"gold", "silver", "plain"}


# --- every problem is precise, and bad resources never stop good ones -------------------------------

_GOOD_POOLS = [ipool("gold", "198.18.0.0/28", labels={"tier": "gold"}, created=T0), ipool("v6", "2001:db8:18::/120", created=T0)]
_GOOD_LEGACY = [apool("legacy", "198.18.2.0/29", created=T0)]
_GOOD_ADS = [adv("all"), adv("gold-only", ipAddressPoolSelectors=[{"matchLabels": {"tier": "gold"}}], nodeSelectors=[{"matchLabels": {"zone": "a"}}])]
_BAD_POOLS = [
    ipool("typo", "198.18.3.1", "198.18.3.300", created=T0),
    ipool("empty", created=T0),
    ipool("self-overlap", "198.18.4.0/30", "198.18.4.2", created=T0),
    ipool("steals", "198.18.0.5", created=T0 + timedelta(1)),
    ipool("gold", "198.18.5.1", created=T0 + timedelta(1)),
    ipool("bad-selector", "198.18.6.1", created=T0, serviceAllocation={"serviceSelectors": [{"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}]}),
]
_BAD_LEGACY = [apool("bgp", "198.18.7.0/29", protocol="bgp", created=T0), apool("legacy-dup", "198.18.2.4", created=T0 + timedelta(1))]
_BAD_ADS = [adv("missing", ipAddressPools=["nope"]), adv("bad-nodes", nodeSelectors=[{"matchExpressions": [{"key": "z", "operator": "NotIn"}]}])]


def _cluster(*, with_bad: bool) -> Config:
    return build_config(
        ip_address_pools=_GOOD_POOLS + (_BAD_POOLS if with_bad else []),
        address_pools=_GOOD_LEGACY + (_BAD_LEGACY if with_bad else []),
        l2_advertisements=_GOOD_ADS + (_BAD_ADS if with_bad else []),
    )


def test_bad_resources_leave_the_good_ones_exactly_as_they_would_be_alone() -> None:
    alone, mixed = _cluster(with_bad=False), _cluster(with_bad=True)
    assert alone.problems == ()
    assert mixed.pools == alone.pools
    assert [a for a in mixed.advertisements if a.name != "missing"] == list(alone.advertisements)


def test_every_problem_names_kind_resource_field_and_value() -> None:
    problems = _cluster(with_bad=True).problems
    declared = {(o.kind, o.metadata.name) for o in [*_BAD_POOLS, *_BAD_LEGACY, *_BAD_ADS]}
    assert {(p.kind, p.name) for p in problems} == declared
    for problem in problems:
        assert problem.field.startswith(("spec.", "metadata.")), problem
        assert f"{problem.kind} {problem.name!r}: {problem.field}={problem.value!r}: " in str(problem)
        assert problem.message
    written = {(p.name, p.field): p.value for p in problems}
    assert written[("typo", "spec.addresses[1]")] == "198.18.3.300"
    assert written[("steals", "spec.addresses[0]")] == "198.18.0.5"
    assert written[("legacy-dup", "spec.addresses[0]")] == "198.18.2.4"
    assert written[("self-overlap", "spec.addresses[1]")] == "198.18.4.2"


@pytest.mark.parametrize(
    "doc",
    [
        {"kind": "IPAddressPool"},
        {"kind": "IPAddressPool", "metadata": "p", "spec": {"addresses": ["198.18.0.1"]}},
        {"kind": "IPAddressPool", "metadata": {"name": "p"}, "spec": {"addresses": [7]}},
        {"kind": "IPAddressPool", "metadata": {"name": "p", "creationTimestamp": "yesterday"}, "spec": {"addresses": []}},
        {"kind": "IPAddressPool", "metadata": {"name": "p"}, "spec": {"addresses": [], "serviceAllocation": {"priority": "high"}}},
        {"kind": "L2Advertisement", "metadata": {"name": "a"}, "spec": {"nodeSelectors": [{"matchExpressions": [{"key": "k"}]}]}},
        {"kind": "L2Advertisement", "metadata": {"name": "a"}, "spec": {"interfaces": "eth0"}},
        {"kind": "AddressPool", "apiVersion": "metallb.io/v1alpha1", "metadata": {"name": "a"}, "spec": {"protocol": "BGP", "addresses": []}},
    ],
)
def test_parse_refuses_malformed_manifests_only_with_config_error(doc: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert info.value.problems and all(isinstance(p, Problem) and p.kind == doc["kind"] and p.field for p in info.value.problems)


# build_config promises never to raise on bad input, but _rank_time's astimezone(utc) overflows for
# a timestamp at the edge of datetime's range. The API server writes creationTimestamp itself in
# UTC, so a real cluster does not produce these; low severity.
@pytest.mark.parametrize("created", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_extreme_creation_timestamp_does_not_escape_build_config(created: str) -> None:
    pool = IPAddressPool.model_validate({"metadata": {"name": "p", "creationTimestamp": created}, "spec": {"addresses": ["198.18.0.1"]}})
    assert list(build_config(ip_address_pools=[pool]).pools) == ["p"]

