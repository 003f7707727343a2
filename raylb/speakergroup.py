"""The speaker group: how many KubeRay workers the speakers need, and where they may run.

In MetalLB the speakers are a DaemonSet: one pod on every node that matches the MetalLB
resource's spec.nodeSelector and whose taints the pod tolerates. raylb's speakers run on Ray
workers, which KubeRay creates as a worker group of a RayCluster with a fixed replica count.
When raylb runs in-cluster, the operator keeps that group DaemonSet-shaped, decided here from
Nodes and the MetalLB resource alone:

- `replicas` (and minReplicas = maxReplicas): the Nodes a speaker pod can be scheduled on -
  matching spec.nodeSelector, every NoSchedule/NoExecute taint tolerated (a cordoned node counts
  as tainted node.kubernetes.io/unschedulable, as the scheduler treats it);
- `template.spec.nodeSelector`: the MetalLB resource's, so workers land only on those Nodes;
- `template.spec.tolerations`: what a DaemonSet pod gets (BASE_TOLERATIONS) and
  spec.speakerTolerations after them.

Without the MetalLB resource nothing runs: zero replicas. The group's pod anti-affinity (in
deploy/kuberay/raycluster.yaml) makes the replicas one per node.

Known limit: KubeRay (v1.5.0) never recreates a running worker when the pod template changes.
After a nodeSelector change the operator stops the speaker actors on nodes that left the
selector at once, and the group gets the new size and template, but workers already running
on those nodes stay there (and a shrink makes KubeRay delete *random* workers), so a node that
newly matches gets a worker only when a replica is free. Deleting the worker Pods of the nodes
that left the selector lets KubeRay recreate them on matching nodes. Doing that automatically
needs the worker Pod names (scaleStrategy.workersToDelete) - not done yet.

`group_patch` turns a shape into the JSON Patch (RFC 6902) of one workerGroupSpecs entry; it is
empty when the RayCluster already has that shape, so a steady state writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raylb.desired import WireObject
from raylb.errors import PermanentError
from raylb.models.kube import Node
from raylb.models.metallb import MetalLB, Toleration

# Effects that keep a pod off a node; PreferNoSchedule only steers the scheduler.
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
# The taint the scheduler treats a cordoned node (spec.unschedulable) as carrying.
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"

# What a speaker pod tolerates whatever the MetalLB resource says, in this order:
# - the tolerations Kubernetes' DaemonSet controller gives every daemon pod
#   (pkg/controller/daemon/util: not-ready/unreachable without tolerationSeconds, so a speaker
#   stays bound to a node that is briefly NotReady and serves again when it returns; pressure
#   and cordon, so a node keeps its speaker; network-unavailable, for hostNetwork pods), except
#   that not-ready and unreachable are tolerated with every effect, not only NoExecute: the
#   node lifecycle controller also taints a NotReady node NoSchedule (and the API server taints
#   every new Node not-ready:NoSchedule until it is Ready). A DaemonSet just keeps its pod
#   there; this group is sized by a count, and a NotReady node that stopped counting would
#   shrink it - KubeRay then deletes a *random* worker, perhaps a healthy node's speaker;
# - the control-plane taint, which the MetalLB Operator's speaker DaemonSet tolerates
#   (control-plane nodes announce too; a nodeSelector keeps them out).
BASE_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
)

# A RayCluster name and a group name: DNS-1123 labels (KubeRay puts both into pod names/labels).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class GroupError(PermanentError):
    """The RayCluster cannot take the speaker group's shape as asked (names what to fix)."""


@dataclass(frozen=True)
class GroupRef:
    """The worker group the speakers run in: RayCluster `cluster`, workerGroupSpecs `group`."""

    cluster: str
    group: str

    def __str__(self) -> str:
        return f"{self.cluster}/{self.group}"


def parse_group_ref(text: str) -> GroupRef:
    """"RAYCLUSTER/GROUP" -> GroupRef; ValueError saying what is wrong with `text`."""
    cluster, slash, group = text.partition("/")
    if not slash or not _NAME.fullmatch(cluster) or not _NAME.fullmatch(group):
        raise ValueError(
            f"speaker group {text!r}: expected RAYCLUSTER/GROUP, the RayCluster's name and the "
            "groupName of its speakers' workerGroupSpecs entry (lowercase DNS labels), e.g. raylb/speakers"
        )
    return GroupRef(cluster=cluster, group=group)


@dataclass(frozen=True)
class GroupShape:
    """What the speaker group should look like (wire-format parts, ready for the patch)."""

    replicas: int
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[tuple[tuple[str, Any], ...], ...] = ()  # each toleration as items, in order

    def node_selector_wire(self) -> dict[str, str]:
        return dict(self.node_selector)

    def tolerations_wire(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.tolerations]


def _toleration_wire(toleration: Toleration) -> dict[str, Any]:
    return toleration.model_dump(by_alias=True, exclude_none=True)


def group_tolerations(metallb: MetalLB | None) -> list[dict[str, Any]]:
    """BASE_TOLERATIONS, then the MetalLB resource's speakerTolerations (repeats dropped)."""
    out: list[dict[str, Any]] = [dict(t) for t in BASE_TOLERATIONS]
    for toleration in metallb.spec.speaker_tolerations if metallb else ():
        wire = _toleration_wire(toleration)
        if wire not in out:
            out.append(wire)
    return out


def tolerates(tolerations: Sequence[Mapping[str, Any]], *, key: str, value: str, effect: str) -> bool:
    """Whether any toleration matches the taint (Kubernetes' Toleration.ToleratesTaint)."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != effect:
            continue
        if t.get("key") and t["key"] != key:
            continue
        operator = t.get("operator") or "Equal"
        if operator == "Exists" or (operator == "Equal" and (t.get("value") or "") == value):
            return True
    return False


def schedulable(node: Node, tolerations: Sequence[Mapping[str, Any]]) -> bool:
    """A speaker pod with `tolerations` may be scheduled on `node` (taints and cordon only)."""
    taints = [(t.key, t.value, t.effect) for t in node.spec.taints if t.effect in BLOCKING_EFFECTS]
    if node.spec.unschedulable:
        taints.append((UNSCHEDULABLE_TAINT, "", "NoSchedule"))
    return all(tolerates(tolerations, key=k, value=v, effect=e) for k, v, e in taints)


def speaker_group_shape(nodes: Iterable[WireObject], metallb: MetalLB | None) -> GroupShape:
    """The group's shape for these Nodes and this MetalLB resource (None: not deployed).

    Nodes that cannot be read as Nodes are skipped (they cannot be matched either).
    """
    tolerations = group_tolerations(metallb)
    wire_tolerations = tuple(tuple(t.items()) for t in tolerations)
    if metallb is None:
        return GroupShape(replicas=0, tolerations=wire_tolerations)
    selector = dict(sorted(metallb.spec.node_selector.items()))
    count = 0
    for obj in nodes:
        try:
            node = Node.model_validate(obj)
        except ValueError:
            continue
        labels = node.metadata.labels
        if all(labels.get(k) == v for k, v in selector.items()) and schedulable(node, tolerations):
            count += 1
    return GroupShape(replicas=count, node_selector=tuple(selector.items()), tolerations=wire_tolerations)


def group_patch(raycluster: WireObject, ref: GroupRef, shape: GroupShape) -> list[dict[str, Any]]:
    """JSON Patch operations giving `ref`'s workerGroupSpecs entry `shape`; [] when it has it.

    The entry is addressed by index, guarded by a `test` of its groupName, so a patch computed
    from a stale read of a reordered list is refused by the API server instead of resizing the
    wrong group. Raises GroupError when the RayCluster has no such group.
    """
    groups = (raycluster.get("spec") or {}).get("workerGroupSpecs") or []
    names = [g.get("groupName") for g in groups]
    if ref.group not in names:
        namespace = (raycluster.get("metadata") or {}).get("namespace", "")
        raise GroupError(
            f"RayCluster {namespace}/{ref.cluster}: spec.workerGroupSpecs has no groupName={ref.group!r} "
            f"(groups: {names}); fix the operator's --speaker-group or the RayCluster"
        )
    index = names.index(ref.group)
    group = groups[index]
    spec = (group.get("template") or {}).get("spec")
    base = f"/spec/workerGroupSpecs/{index}"
    ops: list[dict[str, Any]] = []
    for field in ("replicas", "minReplicas", "maxReplicas"):
        if group.get(field) != shape.replicas:
            ops.append({"op": "add", "path": f"{base}/{field}", "value": shape.replicas})
    if spec is None:
        raise GroupError(f"RayCluster {ref.cluster}: spec.workerGroupSpecs[{index}].template.spec is missing")
    if (spec.get("nodeSelector") or {}) != shape.node_selector_wire():
        ops.append({"op": "add", "path": f"{base}/template/spec/nodeSelector", "value": shape.node_selector_wire()})
    if (spec.get("tolerations") or []) != shape.tolerations_wire():
        ops.append({"op": "add", "path": f"{base}/template/spec/tolerations", "value": shape.tolerations_wire()})
    if not ops:
        return []
    return [{"op": "test", "path": f"{base}/groupName", "value": ref.group}, *ops]
