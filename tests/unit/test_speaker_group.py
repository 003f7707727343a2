"""The speaker group's shape (raylb.speakergroup) and when the operator applies it.

The shape is the MetalLB speaker DaemonSet's: one replica per Node that matches the MetalLB
resource's nodeSelector and whose blocking taints are tolerated; the nodeSelector and the
tolerations (DaemonSet defaults, control plane, speakerTolerations) go into the pod template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from raylb.actors.operator import OperatorCore
from raylb.actors.speaker_group import SpeakerGroupKeeper
from raylb.cluster.memory import MemoryCluster
from raylb.desired import Ref
from raylb.errors import TemporaryError
from raylb.models import MetalLB
from raylb.speakergroup import (
    BASE_TOLERATIONS,
    GroupError,
    GroupRef,
    GroupShape,
    group_patch,
    parse_group_ref,
    speaker_group_shape,
    tolerates,
)
from tests.unit.fakes import FakeKeys, FakeRay, LocalDesired, metallb, node

REF = GroupRef("raylb", "speakers")


def tainted(name: str, *taints: tuple[str, str, str], unschedulable: bool = False, **labels: str) -> dict[str, Any]:
    obj = node(name, **labels)
    obj["spec"] = {"taints": [{"key": k, "value": v, "effect": e} for k, v, e in taints], "unschedulable": unschedulable}
    return obj


def model(**spec: Any) -> MetalLB:
    return MetalLB.model_validate(metallb(**spec))


# --- tolerations (Kubernetes' ToleratesTaint) ------------------------------------------------

# (toleration, taint (key, value, effect), tolerated)
TOLERATES = [
    ({"key": "a", "operator": "Exists"}, ("a", "x", "NoSchedule"), True),
    ({"key": "a", "operator": "Exists", "effect": "NoExecute"}, ("a", "x", "NoSchedule"), False),
    ({"key": "a", "operator": "Equal", "value": "x"}, ("a", "x", "NoSchedule"), True),
    ({"key": "a", "value": "x"}, ("a", "x", "NoExecute"), True),  # Equal is the default
    ({"key": "a", "operator": "Equal", "value": "y"}, ("a", "x", "NoSchedule"), False),
    ({"key": "a", "operator": "Equal"}, ("a", "", "NoSchedule"), True),  # empty value equals empty
    ({"key": "b", "operator": "Exists"}, ("a", "x", "NoSchedule"), False),
    ({"operator": "Exists"}, ("anything", "x", "NoExecute"), True),  # empty key + Exists: all taints
    ({"operator": "Exists", "effect": "NoSchedule"}, ("anything", "", "NoExecute"), False),
]


@pytest.mark.parametrize(("toleration", "taint", "expected"), TOLERATES)
def test_a_toleration_matches_a_taint_as_kubernetes_does(
    toleration: dict[str, str], taint: tuple[str, str, str], expected: bool
) -> None:
    key, value, effect = taint
    assert tolerates([toleration], key=key, value=value, effect=effect) is expected


# --- the shape --------------------------------------------------------------------------------

WORKER = {"role": "worker"}
NODES = [
    node("w1", role="worker"),
    node("w2", role="worker"),
    node("cp", role="control"),
]

# (case, nodes, MetalLB spec (None: no MetalLB resource), expected replicas)
SHAPES: list[tuple[str, list[dict[str, Any]], dict[str, Any] | None, int]] = [
    ("no MetalLB resource: nothing runs", NODES, None, 0),
    ("no nodeSelector: every node", NODES, {}, 3),
    ("nodeSelector: matching nodes only", NODES, {"nodeSelector": WORKER}, 2),
    ("nodeSelector with two labels: all must match",
     [node("a", role="worker", zone="z1"), node("b", role="worker")], {"nodeSelector": {"role": "worker", "zone": "z1"}}, 1),
    ("no node matches", NODES, {"nodeSelector": {"role": "gpu"}}, 0),
    ("no nodes", [], {}, 0),
    ("an untolerated NoSchedule taint keeps a node out",
     [*NODES, tainted("t", ("dedicated", "db", "NoSchedule"))], {}, 3),
    ("an untolerated NoExecute taint keeps a node out",
     [*NODES, tainted("t", ("dedicated", "db", "NoExecute"))], {}, 3),
    ("PreferNoSchedule does not keep a node out",
     [*NODES, tainted("t", ("dedicated", "db", "PreferNoSchedule"))], {}, 4),
    ("speakerTolerations let a tainted node in",
     [*NODES, tainted("t", ("dedicated", "db", "NoSchedule"))],
     {"speakerTolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}, 4),
    ("a toleration for another value does not",
     [*NODES, tainted("t", ("dedicated", "db", "NoSchedule"))],
     {"speakerTolerations": [{"key": "dedicated", "operator": "Equal", "value": "web"}]}, 3),
    ("control-plane nodes announce too (MetalLB Operator)",
     [*NODES, tainted("c", ("node-role.kubernetes.io/control-plane", "", "NoSchedule"))], {}, 4),
    ("a NotReady or unreachable node keeps its speaker (DaemonSet)",
     [*NODES, tainted("d", ("node.kubernetes.io/not-ready", "", "NoExecute"),
                      ("node.kubernetes.io/unreachable", "", "NoExecute"))], {}, 4),
    ("a NotReady node keeps counting: the API server and the node lifecycle controller taint it NoSchedule",
     [*NODES, tainted("n", ("node.kubernetes.io/not-ready", "", "NoSchedule"))], {}, 4),
    ("a cordoned node keeps its speaker (DaemonSet)", [*NODES, tainted("k", unschedulable=True)], {}, 4),
    ("a tainted node that does not match the selector stays out",
     [*NODES, tainted("t", ("dedicated", "db", "NoSchedule"), role="worker")],
     {"nodeSelector": WORKER, "speakerTolerations": [{"key": "dedicated", "operator": "Exists"}]}, 3),
    ("an object that is no Node is skipped", [*NODES, {"metadata": {}}], {}, 3),
]


@pytest.mark.parametrize(("case", "nodes", "spec", "replicas"), SHAPES, ids=[s[0] for s in SHAPES])
def test_the_group_has_one_replica_per_node_a_speaker_can_run_on(
    case: str, nodes: list[dict[str, Any]], spec: dict[str, Any] | None, replicas: int
) -> None:
    shape = speaker_group_shape(nodes, None if spec is None else model(**spec))
    assert shape.replicas == replicas, case


def test_the_template_gets_the_node_selector_and_daemonset_tolerations_then_speaker_tolerations() -> None:
    extra = {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute", "tolerationSeconds": 30}
    shape = speaker_group_shape(NODES, model(nodeSelector={"role": "worker", "a": "b"}, speakerTolerations=[extra]))
    assert shape.node_selector_wire() == {"a": "b", "role": "worker"}
    assert shape.tolerations_wire() == [*map(dict, BASE_TOLERATIONS), extra]
    # A speakerToleration equal to a default one is not listed twice.
    again = speaker_group_shape(NODES, model(speakerTolerations=[dict(BASE_TOLERATIONS[0])]))
    assert again.tolerations_wire() == [*map(dict, BASE_TOLERATIONS)]
    assert speaker_group_shape(NODES, None).node_selector_wire() == {}


# --- the patch ----------------------------------------------------------------------------------


def raycluster(*groups: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "raylb", "namespace": "metallb-system"}, "spec": {"workerGroupSpecs": list(groups)}}


def group(name: str, replicas: int, *, node_selector: dict[str, str] | None = None,
          tolerations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "ray-worker"}]}
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {"groupName": name, "replicas": replicas, "minReplicas": replicas, "maxReplicas": replicas,
            "template": {"spec": spec}}


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON Patch subset group_patch emits (test, add on an object member), as the API server
    applies it."""
    import copy  # noqa: PLC0415

    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = op["path"].strip("/").split("/")
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] == "test":
            assert target[last] == op["value"], op
        else:
            assert op["op"] == "add", op
            target[last] = op["value"]
    return out


def test_a_group_that_differs_is_patched_to_the_shape_and_nothing_else_changes() -> None:
    shape = speaker_group_shape(NODES, model(nodeSelector=WORKER))
    before = raycluster(group("other", 5), group("speakers", 3))
    ops = group_patch(before, REF, shape)
    assert ops[0] == {"op": "test", "path": "/spec/workerGroupSpecs/1/groupName", "value": "speakers"}
    after = apply_patch(before, ops)
    speakers = after["spec"]["workerGroupSpecs"][1]
    assert speakers["replicas"] == speakers["minReplicas"] == speakers["maxReplicas"] == 2
    assert speakers["template"]["spec"]["nodeSelector"] == WORKER
    assert speakers["template"]["spec"]["tolerations"] == shape.tolerations_wire()
    assert speakers["template"]["spec"]["containers"] == [{"name": "ray-worker"}]
    assert after["spec"]["workerGroupSpecs"][0] == before["spec"]["workerGroupSpecs"][0]
    assert group_patch(after, REF, shape) == [], "a group that has the shape is not written"


@pytest.mark.parametrize(
    ("changed", "paths"),
    [
        ("replicas", {"replicas"}),
        ("maxReplicas", {"maxReplicas"}),
        ("nodeSelector", {"template/spec/nodeSelector"}),
        ("tolerations", {"template/spec/tolerations"}),
    ],
)
def test_only_what_differs_is_patched(changed: str, paths: set[str]) -> None:
    shape = GroupShape(replicas=2, node_selector=(("role", "worker"),), tolerations=((("key", "k"), ("operator", "Exists")),))
    have = group("speakers", 2, node_selector={"role": "worker"}, tolerations=[{"key": "k", "operator": "Exists"}])
    if changed in ("replicas", "maxReplicas"):
        have[changed] = 7
    else:
        have["template"]["spec"][changed] = {} if changed == "nodeSelector" else []
    ops = group_patch(raycluster(have), REF, shape)
    assert {op["path"].removeprefix("/spec/workerGroupSpecs/0/") for op in ops[1:]} == paths


def test_an_absent_node_selector_equals_an_empty_one() -> None:
    shape = GroupShape(replicas=1)
    assert group_patch(raycluster(group("speakers", 1, tolerations=[])), REF, shape) == []


def test_a_raycluster_without_the_group_is_a_clear_error() -> None:
    with pytest.raises(GroupError, match=r"RayCluster metallb-system/raylb: spec.workerGroupSpecs has no "
                                         r"groupName='speakers' \(groups: \['workers'\]\)"):
        group_patch(raycluster(group("workers", 1)), REF, GroupShape(replicas=1))


@pytest.mark.parametrize(
    ("text", "ok"),
    [("raylb/speakers", True), ("my-cluster/group-1", True), ("raylb", False), ("raylb/", False),
     ("/speakers", False), ("Raylb/speakers", False), ("raylb/speakers/x", False), ("a_b/c", False)],
)
def test_the_group_setting_names_a_raycluster_and_a_group(text: str, ok: bool) -> None:
    if ok:
        cluster, group_name = text.split("/")
        assert parse_group_ref(text) == GroupRef(cluster, group_name)
    else:
        with pytest.raises(ValueError, match="expected RAYCLUSTER/GROUP"):
            parse_group_ref(text)


# --- when the operator applies it -------------------------------------------------------------


@dataclass
class FakePort:
    shapes: list[GroupShape] = field(default_factory=list)
    fail: Exception | None = None

    def shape(self, shape: GroupShape) -> bool:
        if self.fail is not None:
            raise self.fail
        changed = not self.shapes or self.shapes[-1] != shape
        self.shapes.append(shape)
        return changed


@dataclass
class Clock:
    now_s: float = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_the_keeper_applies_a_new_shape_at_once_and_rechecks_an_unchanged_one_rarely() -> None:
    port, clock = FakePort(), Clock()
    keeper = SpeakerGroupKeeper(port, recheck_s=30, retry_s=5, clock=clock)
    one, two = GroupShape(replicas=1), GroupShape(replicas=2)
    assert keeper.keep(one) is None and port.shapes == [one]
    clock.now_s = 29
    keeper.keep(one)
    assert port.shapes == [one], "unchanged and checked recently: no request"
    keeper.keep(two)
    assert port.shapes == [one, two], "a changed shape goes out at once"
    clock.now_s = 60
    keeper.keep(two)
    assert port.shapes == [one, two, two], "rechecked after recheck_s (someone may have edited the RayCluster)"


def test_the_keeper_returns_a_failure_and_retries_after_a_pause(caplog: pytest.LogCaptureFixture) -> None:
    port, clock = FakePort(fail=TemporaryError("get rayclusters.ray.io metallb-system/raylb: unreachable")), Clock()
    keeper = SpeakerGroupKeeper(port, recheck_s=30, retry_s=5, clock=clock)
    shape = GroupShape(replicas=3)
    assert isinstance(keeper.keep(shape), TemporaryError)
    clock.now_s = 4
    assert keeper.keep(shape) is None and port.shapes == [], "no new attempt within retry_s"
    clock.now_s = 5
    assert isinstance(keeper.keep(shape), TemporaryError)
    assert sum("cannot shape the speaker group" in r.message for r in caplog.records) == 1, "one log line per failure"
    port.fail = None
    clock.now_s = 10
    assert keeper.keep(shape) is None and port.shapes == [shape]


def test_the_operator_sizes_the_group_from_nodes_and_counts_failures_without_stopping() -> None:
    cluster = MemoryCluster()
    port = FakePort()
    core = OperatorCore(desired=LocalDesired(cluster), results=cluster, ray=FakeRay({}), key_source=FakeKeys(),
                        speaker_group=SpeakerGroupKeeper(port, clock=Clock()))
    for name in ("n1", "n2", "n3"):
        cluster.apply("Node", node(name, role="worker" if name != "n3" else "edge"))
    core.step(timeout_s=0)
    assert port.shapes[-1].replicas == 0, "no MetalLB resource: no speakers"
    cluster.apply("MetalLB", metallb(nodeSelector=WORKER))
    core.step(timeout_s=0)
    assert port.shapes[-1].replicas == 2 and port.shapes[-1].node_selector_wire() == WORKER
    cluster.apply("Node", node("n4", role="worker"))
    core.step(timeout_s=0)
    assert port.shapes[-1].replicas == 3, "a node that joins gets a speaker"
    port.fail = TemporaryError("patch rayclusters.ray.io metallb-system/raylb: API server unreachable")
    cluster.delete(Ref("Node", "", "n1"))
    core.step(timeout_s=0)
    assert core.counters.write_failures == 1 and "speaker group" in core.counters.last_error
    assert core.counters.failures == 0, "a failed group write is no failed round"


def test_without_a_keeper_the_operator_touches_no_group() -> None:
    core = OperatorCore(desired=LocalDesired(MemoryCluster()), results=MemoryCluster(), ray=FakeRay({}), key_source=FakeKeys())
    core.step(timeout_s=0)
    assert core.speaker_group is None and core.counters.write_failures == 0


def test_the_setting_travels_with_the_operator_and_needs_kubernetes() -> None:
    from dataclasses import asdict  # noqa: PLC0415

    from raylb.actors.operator import OperatorSettings, connect_speaker_group, settings_conflict  # noqa: PLC0415

    assert connect_speaker_group(OperatorSettings(source="kube")) is None, "outside KubeRay nothing is sized"
    with pytest.raises(ValueError, match="needs the 'kube' source"):
        connect_speaker_group(OperatorSettings(source="memory", speaker_group="raylb/speakers"))
    running = asdict(OperatorSettings(source="kube"))
    told = settings_conflict(running, OperatorSettings(source="kube", speaker_group="raylb/speakers"))
    assert told is not None and "speaker_group: running None, asked 'raylb/speakers'" in told
    # An operator started before the setting existed has none: attaching without one is no conflict.
    del running["speaker_group"]
    assert settings_conflict(running, OperatorSettings(source="kube")) is None
