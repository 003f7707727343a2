"""The snapshot speakers receive: validation, indexes, plain-dict and pickle round trips."""

from __future__ import annotations

import copy
import ipaddress
import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb import snapshot as snap
from raylb.selectors import LabelSelector, Requirement
from raylb.snapshot import Advertisement, NodeInfo, ServiceState, Snapshot

# ------------------------------------------------------------------ strategies (shared with test_election)

NODE_NAMES = [f"n{i}" for i in range(6)]
POOLS = ["p1", "p2", "p3"]
IPS = [ipaddress.ip_address(t) for t in ("198.18.0.10", "198.18.0.11", "198.18.0.12", "2001:db8:18::10", "2001:db8:18::11")]
LABELS = [("zone", "a"), ("zone", "b"), ("role", "edge"), ("node.kubernetes.io/exclude-from-external-load-balancers", "")]
SELECTORS = [
    LabelSelector(match_labels=(("zone", "a"),)),
    LabelSelector(requirements=(Requirement("role", "Exists"),)),
    LabelSelector(requirements=(Requirement("zone", "NotIn", frozenset({"b"})),)),
    LabelSelector(),
]

nodes_st = st.lists(st.sampled_from(NODE_NAMES), unique=True, max_size=6).flatmap(
    lambda names: st.tuples(
        *[
            st.builds(
                NodeInfo,
                name=st.just(n),
                address=st.sampled_from([None, f"198.18.0.{NODE_NAMES.index(n) + 11}"]),
                labels=st.lists(st.sampled_from(LABELS), unique_by=lambda kv: kv[0], max_size=3).map(tuple),
            )
            for n in names
        ]
    )
)
ads_st = st.lists(
    st.builds(
        Advertisement,
        name=st.just("x"),
        pools=st.frozensets(st.sampled_from(POOLS)),
        node_selectors=st.lists(st.sampled_from(SELECTORS), max_size=2).map(tuple),
        interfaces=st.lists(st.sampled_from(["eth0", "eth1"]), unique=True, max_size=2).map(tuple),
    ),
    max_size=3,
).map(lambda ads: tuple(Advertisement(f"ad{i}", a.pools, a.node_selectors, a.interfaces) for i, a in enumerate(ads)))
services_st = st.lists(
    st.builds(
        ServiceState,
        key=st.just("x"),
        ips=st.lists(st.sampled_from(IPS), unique=True, min_size=1, max_size=2).map(tuple),
        pool=st.sampled_from(POOLS),
        external_traffic_policy=st.sampled_from(["Cluster", "Local"]),
        endpoint_nodes=st.frozensets(st.sampled_from(NODE_NAMES)),
        has_ready_endpoint=st.booleans(),
    ),
    max_size=6,
).map(
    lambda ss: tuple(
        ServiceState(f"ns/s{i}", s.ips, s.pool, s.external_traffic_policy, s.endpoint_nodes, s.has_ready_endpoint)
        for i, s in enumerate(ss)
    )
)
snapshots = st.builds(
    Snapshot, version=st.integers(0, 2**40), services=services_st, advertisements=ads_st, nodes=nodes_st
)


def sample() -> Snapshot:
    return Snapshot(
        version=7,
        services=(
            ServiceState(
                key="web/front",
                ips=(ipaddress.ip_address("198.18.0.10"), ipaddress.ip_address("2001:db8:18::10")),
                pool="public",
                external_traffic_policy="Local",
                endpoint_nodes=frozenset({"n1"}),
                has_ready_endpoint=True,
            ),
        ),
        advertisements=(
            Advertisement(
                name="l2",
                pools=frozenset({"public"}),
                node_selectors=(
                    LabelSelector(
                        match_labels=(("zone", "a"),),
                        requirements=(Requirement("role", "In", frozenset({"edge", "lb"})),),
                    ),
                ),
                interfaces=("eth1",),
            ),
        ),
        nodes=(NodeInfo("n1", (("zone", "a"), ("role", "edge")), "198.18.0.11"), NodeInfo("n2")),
    )


# ------------------------------------------------------------------ tests


def test_empty_snapshot_is_version_zero() -> None:
    assert snap.EMPTY.version == 0
    assert snap.EMPTY == Snapshot()
    assert snap.EMPTY.node_names == frozenset()
    assert snap.EMPTY.advertisements_for("any") == ()


def test_indexes() -> None:
    s = sample()
    assert s.node("n1") == NodeInfo("n1", (("role", "edge"), ("zone", "a")), "198.18.0.11")
    assert s.peer_addresses() == {"n1": "198.18.0.11", "n2": None}
    assert s.node("n9") is None
    assert s.node_names == {"n1", "n2"}
    assert [a.name for a in s.advertisements_for("public")] == ["l2"]
    assert s.advertisements_for("private") == ()


def test_node_labels_are_normalised_so_equal_nodes_compare_equal() -> None:
    assert NodeInfo("n", (("b", "2"), ("a", "1"))) == NodeInfo("n", (("a", "1"), ("b", "2")))
    assert NodeInfo("n", (("a", "1"),)).label_map == {"a": "1"}


def test_endpoint_nodes_imply_a_ready_endpoint() -> None:
    s = ServiceState("a/b", (), "p", "Local", frozenset({"n1"}), has_ready_endpoint=False)
    assert s.has_ready_endpoint


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Snapshot(version=-1), "version must be >= 0"),
        (lambda: Snapshot(services=(ServiceState("a/b", (), "p"),) * 2), "service 'a/b' twice"),
        (lambda: Snapshot(nodes=(NodeInfo("n1"), NodeInfo("n1"))), "node 'n1' twice"),
        (
            lambda: Snapshot(advertisements=(Advertisement("x", frozenset()),) * 2),
            "advertisement 'x' twice",
        ),
        (lambda: ServiceState("a/b", (), "p", external_traffic_policy="local"), "externalTrafficPolicy='local'"),
        (lambda: NodeInfo(""), "node name"),
    ],
)
def test_invalid_snapshots_are_refused(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_snapshot_is_hashable_and_usable_as_a_key() -> None:
    assert {sample(): 1}[sample()] == 1


def test_pickle_and_deepcopy_keep_the_indexes() -> None:
    s = sample()
    for clone in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert clone == s
        assert clone.node("n1") is not None
        assert clone.advertisements_for("public")[0].name == "l2"


def test_dict_form_is_json_and_round_trips() -> None:
    s = sample()
    data = json.loads(json.dumps(snap.to_dict(s)))
    assert data["services"][0]["ips"] == ["198.18.0.10", "2001:db8:18::10"]
    assert data["advertisements"][0]["nodeSelectors"][0]["matchExpressions"][0] == {
        "key": "role",
        "operator": "In",
        "values": ["edge", "lb"],
    }
    assert snap.from_dict(data) == s


@settings(max_examples=150, deadline=None)
@given(snapshots)
def test_any_snapshot_round_trips_through_dicts_and_pickle(s: Snapshot) -> None:
    assert snap.from_dict(json.loads(json.dumps(snap.to_dict(s)))) == s
    assert pickle.loads(pickle.dumps(s)) == s


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("version"), r"snapshot\.version: missing"),
        (lambda d: d.update(version=True), r"snapshot\.version=True: expected int"),
        (lambda d: d.update(version="7"), r"snapshot\.version='7': expected int"),
        (lambda d: d.update(services={}), r"snapshot\.services=\{\}: expected list"),
        (lambda d: d["services"].append(3), r"snapshot\.services\[1\]: expected an object"),
        (lambda d: d["services"][0]["ips"].append("198.18.0.300"), r"snapshot\.services\[0\]\.ips\[2\]: '198\.18\.0\.300'"),
        (lambda d: d["services"][0].pop("pool"), r"snapshot\.services\[0\]\.pool: missing"),
        (lambda d: d["services"][0].update(externalTrafficPolicy="Both"), "externalTrafficPolicy='Both'"),
        (lambda d: d["advertisements"][0].update(pools="public"), r"advertisements\[0\]\.pools='public'"),
        (
            lambda d: d["advertisements"][0]["nodeSelectors"][0]["matchExpressions"][0].pop("operator"),
            r"nodeSelectors\[0\]\.matchExpressions\[0\]\.operator: missing",
        ),
        (lambda d: d["nodes"][0].update(labels=[]), r"snapshot\.nodes\[0\]\.labels=\[\]: expected dict"),
        (lambda d: d["nodes"][0].update(address=5), r"snapshot\.nodes\[0\]\.address=5: expected str"),
        (lambda d: d["nodes"].append(d["nodes"][0]), "node 'n1' twice"),
    ],
)
def test_from_dict_names_the_bad_field(mutate, message: str) -> None:
    data = snap.to_dict(sample())
    mutate(data)
    with pytest.raises(ValueError, match=message):
        snap.from_dict(data)


def test_from_dict_takes_null_for_an_unknown_address() -> None:
    data = snap.to_dict(sample())
    data["nodes"][0]["address"] = None
    assert snap.from_dict(data).node("n1").address is None


def test_from_dict_refuses_a_non_object() -> None:
    with pytest.raises(ValueError, match="expected an object"):
        snap.from_dict([])  # type: ignore[arg-type]


POOL_LABELS = {"public": {"tier": "edge"}, "private": {"tier": "core"}, "lab": {}}


@pytest.mark.parametrize(
    ("names", "selectors", "expected"),
    [
        ((), (), {"public", "private", "lab"}),  # neither: every pool, as MetalLB does
        (("public",), (), {"public"}),
        (("public", "missing"), (), {"public"}),  # a name of no existing pool covers nothing
        ((), (LabelSelector(match_labels=(("tier", "core"),)),), {"private"}),
        (("lab",), (LabelSelector(match_labels=(("tier", "core"),)),), {"lab", "private"}),
        ((), (LabelSelector(match_labels=(("tier", "none"),)),), set()),
        ((), (LabelSelector(requirements=(Requirement("tier", "Exists"),)),), {"public", "private"}),
    ],
)
def test_resolve_advertisement_pools(names, selectors, expected) -> None:
    got = snap.resolve_advertisement_pools(pool_labels=POOL_LABELS, pool_names=names, pool_selectors=selectors)
    assert got == frozenset(expected)
