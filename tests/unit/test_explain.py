"""Why a node does not announce: every reason as a table row, agreement with the election as a property."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb import election
from raylb.election import EXCLUDE_LABEL
from raylb.explain import IPExplanation, Reason, explain, for_service, summary, unannounceable
from raylb.selectors import LabelSelector
from raylb.snapshot import Advertisement, NodeInfo, ServiceState, Snapshot
from tests.unit.test_election import world as election_world
from tests.unit.test_snapshot import NODE_NAMES, snapshots

V4 = ipaddress.ip_address("198.18.0.10")
V6 = ipaddress.ip_address("2001:db8:18::10")
ALL = frozenset({"a", "b", "c"})
EVERYWHERE = Advertisement("l2", frozenset({"pool"}))
ZONE_C = Advertisement("l2", frozenset({"pool"}), (LabelSelector(match_labels=(("zone", "c"),)),))


def world(*, labels: dict[str, tuple[tuple[str, str], ...]] | None = None, **kwargs: object) -> Snapshot:
    """test_election's world, each node labelled zone=<its name> unless told otherwise."""
    zones = {n: (("zone", n),) for n in ALL}
    return election_world(labels={**zones, **(labels or {})}, **kwargs)[0]  # type: ignore[arg-type]


def reasons(snapshot: Snapshot, alive: frozenset[str], no_interface: dict | None = None) -> dict[str, str]:
    e = explain(snapshot=snapshot, alive=alive, no_interface=no_interface)[V4]
    return {v.node: v.reason.name for v in e.verdicts}


# In V4's order the nodes are a, b, c (pinned by test_order_is_the_election_order below).
@pytest.mark.parametrize(
    ("case", "kwargs", "alive", "no_interface", "expected"),
    [
        ("all eligible: first announces, the others are outranked", {}, ALL, None,
         {"a": "ANNOUNCER", "b": "OUTRANKED", "c": "OUTRANKED"}),
        ("excluded by label (any value)", {"labels": {"a": ((EXCLUDE_LABEL, "false"),)}}, ALL, None,
         {"a": "EXCLUDED", "b": "ANNOUNCER", "c": "OUTRANKED"}),
        ("not selected by any L2Advertisement", {"ads": (ZONE_C,)}, ALL, None,
         {"a": "NO_ADVERTISEMENT", "b": "NO_ADVERTISEMENT", "c": "ANNOUNCER"}),
        ("no advertisement covers the pool", {"ads": (Advertisement("l2", frozenset({"other"})),)}, ALL, None,
         {"a": "NO_ADVERTISEMENT", "b": "NO_ADVERTISEMENT", "c": "NO_ADVERTISEMENT"}),
        ("Local: no ready endpoint on the node", {"policy": "Local", "endpoint_nodes": frozenset({"c"})}, ALL, None,
         {"a": "NO_LOCAL_ENDPOINT", "b": "NO_LOCAL_ENDPOINT", "c": "ANNOUNCER"}),
        ("Cluster: no ready endpoint anywhere", {"ready": False}, ALL, None,
         {"a": "NO_READY_ENDPOINT", "b": "NO_READY_ENDPOINT", "c": "NO_READY_ENDPOINT"}),
        ("no usable interface on a node that would be outranked", {}, ALL, {"b": {V4}},
         {"a": "ANNOUNCER", "b": "NO_INTERFACE", "c": "OUTRANKED"}),
        ("no usable interface on the elected node: nobody answers", {}, ALL, {"a": {V4}},
         {"a": "NO_INTERFACE", "b": "OUTRANKED", "c": "OUTRANKED"}),
        ("no usable interface for another IP only", {}, ALL, {"a": {V6}},
         {"a": "ANNOUNCER", "b": "OUTRANKED", "c": "OUTRANKED"}),
        ("not alive", {}, frozenset({"b", "c"}), None,
         {"a": "NOT_ALIVE", "b": "ANNOUNCER", "c": "OUTRANKED"}),
        ("configuration is told before liveness", {"labels": {"a": ((EXCLUDE_LABEL, ""),)}}, frozenset({"c"}), None,
         {"a": "EXCLUDED", "b": "NOT_ALIVE", "c": "ANNOUNCER"}),
        ("nobody alive", {}, frozenset(), None,
         {"a": "NOT_ALIVE", "b": "NOT_ALIVE", "c": "NOT_ALIVE"}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_reason(case: str, kwargs: dict, alive: frozenset[str], no_interface: dict | None, expected: dict) -> None:
    assert reasons(world(**kwargs), alive, no_interface) == expected, case


def test_order_is_the_election_order_and_ranks_count_from_one() -> None:
    e = explain(snapshot=world(), alive=ALL)[V4]
    assert [v.node for v in e.verdicts] == election.order(ip=V4, candidates=ALL) == ["a", "b", "c"]
    assert [v.rank for v in e.verdicts] == [1, 2, 3]


def test_outranked_names_the_announcer_not_the_next_node_up() -> None:
    e = explain(snapshot=world(), alive=frozenset({"b", "c"}))[V4]
    assert e.of("c") is not None and e.of("c").by == "b"
    assert e.of("c").text == "outranked by node b"
    assert e.announcer == "b"


def test_a_shared_ip_is_eligible_through_any_holder() -> None:
    web = ServiceState("ns/web", (V4,), "pool", "Local", frozenset({"a"}), True)
    api = ServiceState("ns/api", (V4,), "pool", "Local", frozenset({"b"}), True)
    snapshot = Snapshot(version=1, services=(web, api), advertisements=(EVERYWHERE,),
                        nodes=tuple(NodeInfo(n) for n in sorted(ALL)))  # fmt: skip
    e = explain(snapshot=snapshot, alive=ALL)[V4]
    assert e.services == ("ns/api", "ns/web")
    assert {v.node: v.reason for v in e.verdicts} == {"a": Reason.ANNOUNCER, "b": Reason.OUTRANKED, "c": Reason.NO_LOCAL_ENDPOINT}


def test_for_service_and_unannounceable() -> None:
    web = ServiceState("ns/web", (V4, V6), "pool", "Cluster", frozenset(), True)
    cold = ServiceState("ns/cold", (ipaddress.ip_address("198.18.0.11"),), "pool", "Cluster", frozenset(), False)
    snapshot = Snapshot(version=1, services=(web, cold), advertisements=(EVERYWHERE,),
                        nodes=tuple(NodeInfo(n) for n in sorted(ALL)))  # fmt: skip
    assert list(unannounceable(explain(snapshot=snapshot, alive=frozenset()))) == ["ns/cold"]  # dead is not "may not"
    explanations = explain(snapshot=snapshot, alive=ALL)
    assert [e.ip for e in for_service(explanations, "ns/web")] == [V4, V6]
    bad = unannounceable(explanations)
    assert list(bad) == ["ns/cold"]
    line = summary(bad["ns/cold"][ipaddress.ip_address("198.18.0.11")])
    assert line.startswith("198.18.0.11: ") and "a: not eligible: the service has no ready endpoint" in line
    elected = explanations[V4].announcer
    assert elected is not None  # the elected node cannot place V4: nobody answers for it
    blackhole = unannounceable(explain(snapshot=snapshot, alive=ALL, no_interface={elected: {V4}}))
    assert sorted(blackhole) == ["ns/cold", "ns/web"] and list(blackhole["ns/web"]) == [V4]


def test_to_dict_is_plain() -> None:
    d = explain(snapshot=world(), alive=frozenset({"b", "c"}))[V4].to_dict()
    assert d["announcer"] == "b"
    assert d["nodes"][0] == {"node": "a", "rank": 1, "reason": "NOT_ALIVE", "text": "not alive"}


alive_st = st.frozensets(st.sampled_from(NODE_NAMES + ["ghost"]))


@settings(max_examples=300, deadline=None)
@given(snapshots, alive_st)
def test_the_announcer_told_is_the_one_elected(snapshot: Snapshot, alive: frozenset[str]) -> None:
    elected = election.elect(snapshot=snapshot, alive=alive)
    told = explain(snapshot=snapshot, alive=alive)
    assert set(told) == set(elected)
    for ip, result in elected.items():
        e: IPExplanation = told[ip]
        assert e.announcer == result.announcer
        eligible_told = {v.node for v in e.verdicts if v.reason in (Reason.ANNOUNCER, Reason.OUTRANKED)}
        assert eligible_told == set(result.eligible)
        assert sorted(v.node for v in e.verdicts) == sorted(snapshot.node_names)
