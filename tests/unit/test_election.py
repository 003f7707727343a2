"""The announcer rule: every eligibility rule as a table, the invariants as properties."""

from __future__ import annotations

import hashlib
import ipaddress
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb import election
from raylb.election import EXCLUDE_LABEL
from raylb.selectors import LabelSelector, Requirement
from raylb.snapshot import Advertisement, NodeInfo, ServiceState, Snapshot
from tests.unit.test_snapshot import NODE_NAMES, snapshots

V4 = ipaddress.ip_address("198.18.0.10")
V6 = ipaddress.ip_address("2001:db8:18::10")
ALL = frozenset({"a", "b", "c"})
EVERYWHERE = Advertisement("l2", frozenset({"pool"}))


def world(
    *,
    policy: str = "Cluster",
    endpoint_nodes: frozenset[str] = frozenset(),
    ready: bool = True,
    ads: tuple[Advertisement, ...] = (EVERYWHERE,),
    labels: dict[str, tuple[tuple[str, str], ...]] | None = None,
) -> tuple[Snapshot, ServiceState]:
    labels = labels or {}
    service = ServiceState("ns/web", (V4,), "pool", policy, endpoint_nodes, ready)
    nodes = tuple(NodeInfo(n, labels.get(n, ())) for n in sorted(ALL))
    return Snapshot(version=1, services=(service,), advertisements=ads, nodes=nodes), service


ZONE_A = LabelSelector(match_labels=(("zone", "a"),))
ZONES = {"a": (("zone", "a"),), "b": (("zone", "b"),), "c": (("zone", "c"),)}


@pytest.mark.parametrize(
    ("case", "kwargs", "alive", "eligible"),
    [
        ("cluster, endpoints somewhere: every live node", {}, ALL, ALL),
        ("cluster, no ready endpoint: nobody", {"ready": False}, ALL, set()),
        ("dead speakers are out", {}, {"a", "c"}, {"a", "c"}),
        ("alive but not a node of the snapshot", {}, {"a", "zz"}, {"a"}),
        ("nobody alive", {}, set(), set()),
        ("local: only nodes with a ready endpoint", {"policy": "Local", "endpoint_nodes": frozenset({"b", "c"})}, ALL, {"b", "c"}),
        ("local: endpoint node dead", {"policy": "Local", "endpoint_nodes": frozenset({"b"})}, {"a", "c"}, set()),
        ("local: endpoint on a node outside the snapshot", {"policy": "Local", "endpoint_nodes": frozenset({"zz"})}, ALL | {"zz"}, set()),
        ("local: no endpoints", {"policy": "Local", "ready": True}, ALL, set()),
        ("no advertisement at all: nobody", {"ads": ()}, ALL, set()),
        ("advertisement of another pool: nobody", {"ads": (Advertisement("l2", frozenset({"other"})),)}, ALL, set()),
        (
            "node selector limits the nodes",
            {"ads": (Advertisement("l2", frozenset({"pool"}), (ZONE_A,)),), "labels": ZONES},
            ALL,
            {"a"},
        ),
        (
            "selectors of one advertisement are OR-ed",
            {
                "ads": (
                    Advertisement(
                        "l2", frozenset({"pool"}), (ZONE_A, LabelSelector(match_labels=(("zone", "c"),)))
                    ),
                ),
                "labels": ZONES,
            },
            ALL,
            {"a", "c"},
        ),
        (
            "several advertisements: a node matching any of them",
            {
                "ads": (
                    Advertisement("l2a", frozenset({"pool"}), (ZONE_A,)),
                    Advertisement("l2b", frozenset({"pool"}), (LabelSelector(match_labels=(("zone", "b"),)),)),
                    Advertisement("other", frozenset({"other"})),
                ),
                "labels": ZONES,
            },
            ALL,
            {"a", "b"},
        ),
        (
            "selector that matches nothing",
            {"ads": (Advertisement("l2", frozenset({"pool"}), (LabelSelector(match_labels=(("zone", "x"),)),)),), "labels": ZONES},
            ALL,
            set(),
        ),
        (
            "selector with an expression",
            {
                "ads": (Advertisement("l2", frozenset({"pool"}), (LabelSelector(requirements=(Requirement("zone", "NotIn", frozenset({"a"})),)),)),),
                "labels": ZONES,
            },
            ALL,
            {"b", "c"},
        ),
        ("exclude label, empty value", {"labels": {"b": ((EXCLUDE_LABEL, ""),)}}, ALL, {"a", "c"}),
        ("exclude label, any value (even 'false')", {"labels": {"b": ((EXCLUDE_LABEL, "false"),)}}, ALL, {"a", "c"}),
        (
            "exclude label wins over a local endpoint",
            {"policy": "Local", "endpoint_nodes": frozenset({"b"}), "labels": {"b": ((EXCLUDE_LABEL, "true"),)}},
            ALL,
            set(),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_eligibility_rules(case: str, kwargs: dict, alive: set[str], eligible: set[str]) -> None:
    snapshot, service = world(**kwargs)
    got = election.eligible_nodes(service=service, snapshot=snapshot, alive=frozenset(alive))
    assert set(got) == set(eligible), case
    winner = election.announcer(service=service, ip=V4, snapshot=snapshot, alive=frozenset(alive))
    if eligible:
        assert winner == min(eligible, key=lambda n: hashlib.sha256(f"{n}#{V4}".encode()).digest())
    else:
        assert winner is None


def test_rank_is_sha256_of_name_hash_ip() -> None:
    # Pinned values: the order must never change between releases or Python versions, or a
    # rolling upgrade would move IPs. hash() is salted per process and would fail this.
    assert election.rank("node-a", V4).hex()[:16] == hashlib.sha256(b"node-a#198.18.0.10").hexdigest()[:16]
    nodes = [f"node-{i}" for i in range(5)]
    assert election.order(ip=V4, candidates=nodes) == ["node-3", "node-2", "node-0", "node-1", "node-4"]
    assert election.order(ip=V6, candidates=nodes) == ["node-4", "node-1", "node-2", "node-3", "node-0"]


def test_pick_is_the_head_of_order_and_none_when_empty() -> None:
    nodes = [f"node-{i}" for i in range(5)]
    assert election.pick(ip=V4, candidates=nodes) == election.order(ip=V4, candidates=nodes)[0]
    assert election.pick(ip=V4, candidates=[]) is None


def test_each_ip_of_a_dual_stack_service_is_elected_on_its_own() -> None:
    nodes = tuple(NodeInfo(f"node-{i}") for i in range(5))
    alive = frozenset(n.name for n in nodes)
    service = ServiceState("ns/web", (V4, V6), "pool", has_ready_endpoint=True)
    snapshot = Snapshot(1, (service,), (EVERYWHERE,), nodes)
    assert election.announcer(service=service, ip=V4, snapshot=snapshot, alive=alive) == "node-3"
    assert election.announcer(service=service, ip=V6, snapshot=snapshot, alive=alive) == "node-4"
    assert election.owned_ips(node="node-3", snapshot=snapshot, alive=alive) == {V4: ()}
    assert election.owned_ips(node="node-4", snapshot=snapshot, alive=alive) == {V6: ()}


def test_announcer_refuses_an_ip_the_service_does_not_hold() -> None:
    snapshot, service = world()
    with pytest.raises(ValueError, match=r"ns/web does not hold IP 2001:db8:18::10"):
        election.announcer(service=service, ip=V6, snapshot=snapshot, alive=ALL)


@pytest.mark.parametrize(
    ("ads", "expected"),
    [
        ((Advertisement("l2", frozenset({"pool"}), (), ("eth1",)),), ("eth1",)),
        (
            (Advertisement("x", frozenset({"pool"}), (), ("eth2",)), Advertisement("y", frozenset({"pool"}), (), ("eth1", "eth2"))),
            ("eth1", "eth2"),
        ),
        # one matching advertisement without interfaces opens all of them
        ((Advertisement("x", frozenset({"pool"}), (), ("eth1",)), Advertisement("y", frozenset({"pool"}))), ()),
        # an advertisement that does not select the node does not add its interfaces
        (
            (
                Advertisement("x", frozenset({"pool"}), (), ("eth1",)),
                Advertisement("y", frozenset({"pool"}), (LabelSelector(match_labels=(("zone", "nowhere"),)),), ("eth9",)),
            ),
            ("eth1",),
        ),
    ],
)
def test_interfaces_come_from_the_matching_advertisements(ads, expected) -> None:
    snapshot, _ = world(ads=ads)
    owned = {}
    for node in ALL:
        owned.update(election.owned_ips(node=node, snapshot=snapshot, alive=ALL))
    assert owned == {V4: expected}


def test_a_shared_ip_has_one_announcer_chosen_from_the_union() -> None:
    one = ServiceState("ns/one", (V4,), "pool", "Local", frozenset({"a"}))
    two = ServiceState("ns/two", (V4,), "pool", "Local", frozenset({"c"}))
    snapshot = Snapshot(1, (one, two), (EVERYWHERE,), tuple(NodeInfo(n) for n in sorted(ALL)))
    result = election.elect(snapshot=snapshot, alive=ALL)[V4]
    assert result.eligible == {"a", "c"}
    assert result.services == ("ns/one", "ns/two")
    assert result.announcer == election.pick(ip=V4, candidates={"a", "c"})
    owners = [n for n in ALL if election.owned_ips(node=n, snapshot=snapshot, alive=ALL)]
    assert owners == [result.announcer]


def test_an_ip_nobody_may_announce_is_reported_with_no_announcer() -> None:
    snapshot, _ = world(ready=False)
    result = election.elect(snapshot=snapshot, alive=ALL)[V4]
    assert result.announcer is None and result.eligible == frozenset() and result.interfaces == ()


def test_diff_plans_the_handover() -> None:
    other = ipaddress.ip_address("198.18.0.11")
    plan = election.diff({V4: (), V6: ("eth1",)}, {V6: ("eth2",), other: ()})
    assert plan.start == {V6: ("eth2",), other: ()}
    assert plan.stop == {V4}
    assert election.diff({V4: ()}, {V4: ()}).empty


# ------------------------------------------------------------------ invariants


def reference_eligible(node: str, service: ServiceState, snapshot: Snapshot, alive: frozenset[str]) -> bool:
    """The rule written out naively, independent of the implementation."""
    info = {n.name: n for n in snapshot.nodes}.get(node)
    if info is None or node not in alive:
        return False
    labels = dict(info.labels)
    if EXCLUDE_LABEL in labels:
        return False
    if service.external_traffic_policy == "Local" and node not in service.endpoint_nodes:
        return False
    if service.external_traffic_policy == "Cluster" and not (service.has_ready_endpoint or service.endpoint_nodes):
        return False
    return any(
        service.pool in ad.pools and (not ad.node_selectors or any(s.matches(labels) for s in ad.node_selectors))
        for ad in snapshot.advertisements
    )


alive_st = st.frozensets(st.sampled_from(NODE_NAMES + ["ghost"]))


@settings(max_examples=300, deadline=None)
@given(snapshots, alive_st)
def test_every_electable_ip_has_exactly_one_announcer(snapshot: Snapshot, alive: frozenset[str]) -> None:
    results = election.elect(snapshot=snapshot, alive=alive)
    owned_by = {n: election.owned_ips(node=n, snapshot=snapshot, alive=alive) for n in NODE_NAMES + ["ghost"]}
    for ip, result in results.items():
        holders = [s for s in snapshot.services if ip in s.ips]
        expected = {n for n in NODE_NAMES for s in holders if reference_eligible(n, s, snapshot, alive)}
        assert result.eligible == expected
        owners = [n for n, owned in owned_by.items() if ip in owned]
        if expected:
            assert owners == [result.announcer]
            assert result.announcer == min(expected, key=lambda n: (election.rank(n, ip), n))
        else:
            assert owners == [] and result.announcer is None


@settings(max_examples=200, deadline=None)
@given(snapshots, alive_st, st.randoms(use_true_random=False))
def test_the_outcome_does_not_depend_on_any_ordering(snapshot: Snapshot, alive: frozenset[str], rnd: random.Random) -> None:
    def shuffled(items: tuple) -> tuple:
        items = list(items)
        rnd.shuffle(items)
        return tuple(items)

    other = Snapshot(
        version=snapshot.version,
        services=shuffled(snapshot.services),
        advertisements=shuffled(snapshot.advertisements),
        nodes=shuffled(snapshot.nodes),
    )
    assert election.elect(snapshot=other, alive=frozenset(shuffled(tuple(alive)))) == election.elect(
        snapshot=snapshot, alive=alive
    )


@settings(max_examples=300, deadline=None)
@given(snapshots, alive_st, st.sampled_from(NODE_NAMES))
def test_removing_a_node_moves_only_the_ips_it_announced(snapshot: Snapshot, alive: frozenset[str], gone: str) -> None:
    before = election.elect(snapshot=snapshot, alive=alive)
    after = election.elect(snapshot=snapshot, alive=alive - {gone})
    assert before.keys() == after.keys()
    for ip, was in before.items():
        now = after[ip]
        if was.announcer != gone:
            assert now.announcer == was.announcer, f"{ip} moved although {gone} did not announce it"
        else:
            # the next in line takes over, or nobody when the announcer was the only one
            rest = election.order(ip=ip, candidates=was.eligible - {gone})
            assert now.announcer == (rest[0] if rest else None)


@settings(max_examples=200, deadline=None)
@given(snapshots, alive_st, st.sampled_from(NODE_NAMES))
def test_a_node_coming_back_takes_back_exactly_what_it_lost(snapshot: Snapshot, alive: frozenset[str], node: str) -> None:
    with_node = election.elect(snapshot=snapshot, alive=alive | {node})
    without = election.elect(snapshot=snapshot, alive=alive - {node})
    for ip in with_node:
        if with_node[ip].announcer != node:
            assert with_node[ip].announcer == without[ip].announcer


def test_a_large_snapshot_elects_every_ip_once() -> None:
    # 1 000 services x 2 IPs (IPv4 ones shared) on 20 nodes, two overlapping advertisements.
    nodes = tuple(NodeInfo(f"node-{i}", (("zone", "a" if i % 2 else "b"),)) for i in range(20))
    base = int(ipaddress.ip_address("198.18.0.0"))
    services = tuple(
        ServiceState(
            f"ns/s{i}",
            (ipaddress.ip_address(base + (i % 250)), ipaddress.ip_address(f"2001:db8:18::{i:x}")),
            "pool",
            "Local" if i % 3 == 0 else "Cluster",
            frozenset({f"node-{i % 20}", f"node-{(i * 7) % 20}"}),
            True,
        )
        for i in range(1000)
    )
    snapshot = Snapshot(1, services, (Advertisement("zone-a", frozenset({"pool"}), (ZONE_A,)), EVERYWHERE), nodes)
    alive = frozenset(n.name for n in nodes)
    results = election.elect(snapshot=snapshot, alive=alive)
    assert all(r.announcer is not None for r in results.values())
    assert sum(len(election.owned_ips(node=n.name, snapshot=snapshot, alive=alive)) for n in nodes) == len(results)


def test_replace_keeps_snapshot_valid() -> None:
    snapshot, service = world()
    bumped = replace(snapshot, version=2)
    assert bumped.node("a") is not None and bumped.version == 2
