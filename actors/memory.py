"""The in-memory desired-state store as a Ray actor, and the operator's adapters to it.

Tests and `raylb lab` runs without Kubernetes share one `MemoryCluster` between the driver
(which applies MetalLB, pools and Services like kubectl would) and the operator (which reads
changes and writes results). The store lives in its own named actor so it outlives operator
restarts, as an API server would.

It also outlives the Ray head, as an API server on another machine would, when the head keeps
its tables in Redis (GCS fault tolerance): every object is mirrored into Ray's internal
key-value store, which then lives in Redis, and the actor, restarted by Ray on the head that
came back, starts from there. Without fault tolerance the mirror dies with the head, like
everything else in it.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from ray.experimental import internal_kv

from raylb.cluster.memory import MemoryCluster
from raylb.desired import Change, Key, Ref, WireObject, key_of, relist_diff

MEMORY_NAME = "raylb-memory"
CALL_TIMEOUT_S = 10.0
#: Internal KV namespace and key prefix of the mirrored objects.
KV_NAMESPACE = "raylb"
KV_PREFIX = b"memory/"


class DurableMemoryCluster(MemoryCluster):
    """MemoryCluster whose objects survive the actor: mirrored into Ray's internal KV on every
    write, read back when the actor starts (results included: Service status keeps its IPs)."""

    def __init__(self) -> None:
        super().__init__()
        newest = 0
        for key in internal_kv._internal_kv_list(KV_PREFIX, namespace=KV_NAMESPACE):
            stored = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
            if stored is None:
                continue
            kind, obj = json.loads(stored)
            self._objects[Ref.of(kind, obj)] = obj
            newest = max(newest, int(obj.get("metadata", {}).get("resourceVersion", 0)))
        self._versions = itertools.count(newest + 1)

    @staticmethod
    def _kv_key(ref: Ref) -> bytes:
        return KV_PREFIX + json.dumps([ref.kind, ref.namespace, ref.name]).encode()

    def _store(self, ref: Ref, obj: dict[str, Any], change_type: Any) -> None:
        super()._store(ref, obj, change_type)  # under the lock, so the mirror keeps the order
        internal_kv._internal_kv_put(self._kv_key(ref), json.dumps([ref.kind, obj]), namespace=KV_NAMESPACE)

    def delete(self, ref: Ref) -> bool:
        with self._lock:  # re-entrant: the base class takes it again
            gone = super().delete(ref)
            if gone:
                internal_kv._internal_kv_del(self._kv_key(ref), namespace=KV_NAMESPACE)
            return gone


def start_memory(*, namespace: str = "raylb") -> Any:
    """The store actor, created if missing; max_concurrency lets readers block while others write.
    Restarted by Ray whenever it dies (its node, the head, with it), from its mirror."""
    from raylb.actors.ray_ops import control_placement  # noqa: PLC0415

    options = dict(
        name=MEMORY_NAME, namespace=namespace, lifetime="detached", get_if_exists=True, max_concurrency=16,
        num_cpus=0, max_restarts=-1,
    )  # fmt: skip
    return ray.remote(DurableMemoryCluster).options(**options, **control_placement()).remote()


class MemoryDesired:
    """raylb.desired.Desired over the store actor; each instance is one reader (one operator life)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._reader = uuid.uuid4().hex
        self._known = Known()
        self.synced = False  # True once the full first list has arrived

    def wait_changes(self, *, timeout_s: float) -> list[Change]:
        ref = self._handle.watch.remote(reader=self._reader, timeout_s=timeout_s)
        try:
            changes, full_list = ray.get(ref, timeout=timeout_s + CALL_TIMEOUT_S)
        except Exception:
            if not self.synced:  # the full list may be lost with the reply: start over as a new reader
                self._reader = uuid.uuid4().hex
            raise
        self.synced = True
        return self._known.relist(changes) if full_list else self._known.follow(changes)


class MemoryResults:
    """raylb.desired.Results over the store actor."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        ray.get(getattr(self._handle, method).remote(*args, **kwargs), timeout=CALL_TIMEOUT_S)

    def set_ingress(
        self, service: Ref, ips: Sequence[str], *, annotations: Mapping[str, str | None] | None = None
    ) -> None:
        self._call("set_ingress", service, list(ips), annotations=dict(annotations or {}))

    def set_annotations(self, ref: Ref, annotations: Mapping[str, str | None]) -> None:
        self._call("set_annotations", ref, dict(annotations))

    def record_event(self, ref: Ref, *, type: str, reason: str, message: str) -> None:
        self._call("record_event", ref, type=type, reason=reason, message=message)

    def put_l2_status(self, service: Ref, *, node: str, interfaces: Sequence[str]) -> None:
        self._call("put_l2_status", service, node=node, interfaces=list(interfaces))

    def delete_l2_status(self, service: Ref) -> None:
        self._call("delete_l2_status", service)

    def set_conditions(self, ref: Ref, conditions: Sequence[Mapping[str, str]]) -> None:
        self._call("set_conditions", ref, [dict(c) for c in conditions])


class Known:
    """The last object of every Ref a reader was told about, so that a full list arriving after
    the store forgot the reader is told as the difference (raylb.desired.relist_diff), deletions
    included, as the Kubernetes source does after a 410."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[Key, WireObject]] = {}  # kind -> key -> object

    def follow(self, changes: list[Change]) -> list[Change]:
        for change in changes:
            objects = self._objects.setdefault(change.kind, {})
            if change.type == "DELETED":
                objects.pop(key_of(change.obj), None)
            else:
                objects[key_of(change.obj)] = change.obj
        return changes

    def relist(self, listed: list[Change]) -> list[Change]:
        by_kind: dict[str, list[WireObject]] = {}
        for change in listed:
            by_kind.setdefault(change.kind, []).append(change.obj)
        diff = [
            change
            for kind in sorted(self._objects.keys() | by_kind.keys())
            for change in relist_diff(kind, self._objects.get(kind, {}), by_kind.get(kind, []))
        ]
        return self.follow(diff)


class MemorySecrets:
    """The membership key's Secret kept in the store actor (raylb.actors.memberlist_key)."""

    def __init__(self, handle: Any, *, namespace: str) -> None:
        from raylb.keyring import SECRET_NAME  # noqa: PLC0415

        self._handle = handle
        self._ref = Ref("Secret", namespace, SECRET_NAME)

    def get(self) -> Mapping[str, Any] | None:
        return ray.get(self._handle.get.remote(self._ref), timeout=CALL_TIMEOUT_S)

    def create(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        existing = self.get()
        if existing is not None:
            return existing
        ray.get(self._handle.apply.remote("Secret", dict(obj)), timeout=CALL_TIMEOUT_S)
        return self.get() or obj
