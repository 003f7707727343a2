"""The operator's one narrow interface to wherever desired state lives.

The operator reads desired state (MetalLB, pools, advertisements, Services, EndpointSlices,
Nodes, Namespaces) as a stream of `Change`s of wire-format objects (plain dicts, exactly as
the Kubernetes API serves them) and writes its results through `Results`. Two
implementations exist: raylb.cluster.memory (in memory, drives the actor tests) and
raylb.cluster.kube (the real API server). Keeping the objects in wire form means both
implementations hand the operator the same bytes, and the pydantic models in raylb.models
check them in one place.

`World` is the operator's cache: the latest version of every object, rebuilt from changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

# Kinds the operator watches, with whether they live in a namespace.
NAMESPACED: Mapping[str, bool] = {
    "MetalLB": True,
    "AddressPool": True,
    "IPAddressPool": True,
    "L2Advertisement": True,
    "Service": True,
    "EndpointSlice": True,
    "Node": False,
    "Namespace": False,
}

ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]
WireObject = Mapping[str, Any]


@dataclass(frozen=True, order=True)
class Ref:
    """Names one object: kind, namespace ("" when cluster-scoped) and name."""

    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, kind: str, obj: WireObject) -> Ref:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace", "") if NAMESPACED.get(kind, True) else ""
        return cls(kind, namespace or "", meta.get("name", ""))

    @property
    def key(self) -> str:
        """"namespace/name" (or "name" when cluster-scoped), as Kubernetes tools print it."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"


@dataclass(frozen=True)
class Change:
    """One observed change of one object; DELETED carries the last known object."""

    type: ChangeType
    kind: str
    obj: WireObject

    @property
    def ref(self) -> Ref:
        return Ref.of(self.kind, self.obj)


Key = tuple[str, str]  # (namespace, name) of one object of a known kind


def key_of(obj: WireObject) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def meta_field(obj: WireObject, field: str) -> Any:
    return (obj.get("metadata") or {}).get(field)


def relist_diff(kind: str, known: Mapping[Key, WireObject], listed: Iterable[WireObject]) -> list[Change]:
    """Changes that turn `known` (what readers already have) into `listed` (a fresh list).

    New objects are ADDED, objects with another resourceVersion MODIFIED, vanished ones
    DELETED (carrying the last known object); an object deleted and recreated under the same
    name (another uid) is DELETED then ADDED. Unchanged objects produce nothing. Sorted by
    (namespace, name), so the result is deterministic.
    """
    fresh = {key_of(obj): obj for obj in listed}
    changes: list[Change] = []
    for key in sorted(known.keys() | fresh.keys()):
        old, new = known.get(key), fresh.get(key)
        if new is None:
            assert old is not None
            changes.append(Change("DELETED", kind, old))
        elif old is None:
            changes.append(Change("ADDED", kind, new))
        elif meta_field(old, "uid") != meta_field(new, "uid"):
            changes.append(Change("DELETED", kind, old))
            changes.append(Change("ADDED", kind, new))
        elif meta_field(old, "resourceVersion") != meta_field(new, "resourceVersion"):
            changes.append(Change("MODIFIED", kind, new))
    return changes


class Desired(Protocol):
    """Read side: what the cluster wants.

    `synced` turns True once every kind has been listed in full. Before that the World is
    incomplete - an empty World does not mean "nothing is wanted" - and the operator must not
    act on it (it would tear down a running system after every restart).
    """

    @property
    def synced(self) -> bool: ...

    def wait_changes(self, *, timeout_s: float) -> list[Change]:
        """Block until at least one change is available or `timeout_s` passed; return them.

        The first call that returns with `synced` True returns every existing object as ADDED,
        so a new operator rebuilds its World from scratch. A source that lost its stream and
        relisted reports the difference, never a gap.
        """
        ...


class Results(Protocol):
    """Write side: what the operator decided. Every method is idempotent."""

    def set_ingress(
        self, service: Ref, ips: Sequence[str], *, annotations: Mapping[str, str | None] | None = None
    ) -> None:
        """Set status.loadBalancer.ingress and, in the same write, merge `annotations` (the
        pool annotation travels with the IP, so a new Service costs one write, not two)."""
        ...

    def set_annotations(self, ref: Ref, annotations: Mapping[str, str | None]) -> None:
        """Merge annotations; a None value removes that annotation."""
        ...

    def record_event(self, ref: Ref, *, type: str, reason: str, message: str) -> None: ...

    def put_l2_status(self, service: Ref, *, node: str, interfaces: Sequence[str]) -> None:
        """Create or update the one ServiceL2Status of `service`, naming the announcing node."""
        ...

    def delete_l2_status(self, service: Ref) -> None: ...

    def set_conditions(self, ref: Ref, conditions: Sequence[Mapping[str, str]]) -> None:
        """Replace status.conditions of a raylb custom resource (MetalLB or a pool)."""
        ...


class World:
    """The operator's cache of desired state: the latest wire object per Ref."""

    def __init__(self) -> None:
        self._objects: dict[Ref, WireObject] = {}

    def apply(self, change: Change) -> None:
        if change.type == "DELETED":
            self._objects.pop(change.ref, None)
        else:
            self._objects[change.ref] = change.obj

    def get(self, ref: Ref) -> WireObject | None:
        return self._objects.get(ref)

    def of_kind(self, kind: str) -> Iterator[tuple[Ref, WireObject]]:
        for ref in sorted(r for r in self._objects if r.kind == kind):
            yield ref, self._objects[ref]

    def __len__(self) -> int:
        return len(self._objects)
