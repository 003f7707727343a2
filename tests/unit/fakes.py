"""Test doubles for the operator's Ray side, and manifests in the seed's vocabulary.

`FakeRay` runs the real AllocatorService in-process and answers speaker status with the real
election, so the operator logic is exercised end to end without a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raylb.actors.allocator import AllocatorService
from raylb.actors.ray_ops import RayNode
from raylb.cluster.memory import MemoryCluster
from raylb.desired import Change
from raylb.election import owned_ips
from raylb.keyring import KeyRing, KeySet
from raylb.snapshot import EMPTY, NodeInfo, Snapshot

NS = "metallb-system"


class LocalDesired:
    """raylb.desired.Desired over a MemoryCluster in this process, as one reader."""

    def __init__(self, cluster: MemoryCluster, reader: str = "operator", *, synced: bool = True) -> None:
        self.cluster, self.reader = cluster, reader
        self.synced = synced  # a test may hold it False to model a source still listing

    def wait_changes(self, *, timeout_s: float) -> list[Change]:
        return self.cluster.wait_changes(reader=self.reader, timeout_s=timeout_s) if self.synced else []


class FakeKeys:
    """The operator's key source: a fixed key a test may change (a rotation), or a failure."""

    def __init__(self, key: bytes = b"membership-key-of-the-tests") -> None:
        self.key = key
        self.error: Exception | None = None
        self.reads = 0

    def read(self) -> bytes:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.key


class FakeRay:
    def __init__(self, nodes: Mapping[str, str]) -> None:
        self.node_table = {name: RayNode(name=name, node_id=f"id-{name}", address=addr) for name, addr in nodes.items()}
        self.allocator: AllocatorService | None = None
        self.speakers: dict[str, Snapshot] = {}
        self.removed: list[tuple[str, bool]] = []
        self.allocator_starts = 0
        self.told_dead: list[str] = []
        self.keyrings: dict[str, KeyRing] = {}  # each speaker's keys, as a real speaker keeps them
        self.started_with: dict[str, KeySet] = {}
        self.unplaced: dict[str, list[str]] = {}  # node -> IPs its speaker reports it cannot place

    def nodes(self) -> dict[str, RayNode]:
        return dict(self.node_table)

    def call_allocator(self, method: str, **kwargs: Any) -> Any:
        if self.allocator is None:
            self.allocator = AllocatorService()
            self.allocator_starts += 1
        return getattr(self.allocator, method)(**kwargs)

    def remove_allocator(self) -> None:
        self.allocator = None

    def speaker_names(self) -> set[str]:
        return set(self.speakers)

    def ensure_speaker(self, node: RayNode, *, keys: KeySet) -> None:
        if node.name not in self.speakers:
            self.started_with[node.name] = keys
            self.keyrings[node.name] = KeyRing(keys, now_s=0.0)
        self.speakers.setdefault(node.name, EMPTY)

    def push_keys(self, keys: KeySet, nodes: Mapping[str, NodeInfo]) -> None:
        for name in nodes:
            if name in self.keyrings:
                self.keyrings[name].update(keys, now_s=0.0)

    def remove_speaker(self, node: str, *, graceful: bool) -> None:
        self.speakers.pop(node, None)
        self.keyrings.pop(node, None)
        self.removed.append((node, graceful))

    def tell_node_dead(self, dead: str, nodes: Mapping[str, NodeInfo]) -> None:
        self.told_dead.append(dead)

    def push(self, snapshot: Snapshot, nodes: Mapping[str, NodeInfo]) -> None:
        for name in nodes:  # like a real speaker: an older snapshot than the one held is ignored
            if name in self.speakers and snapshot.version >= self.speakers[name].version:
                self.speakers[name] = snapshot

    def statuses(self, nodes: Mapping[str, NodeInfo]) -> dict[str, dict[str, Any]]:
        alive = frozenset(self.speakers)
        return {
            name: {
                "owned": [str(ip) for ip in owned_ips(node=name, snapshot=snap, alive=alive)],
                "snapshot_version": snap.version,
                "keys": self.keyrings[name].report(0.0),
                "unplaced": list(self.unplaced.get(name, ())),  # IPs with no usable interface there
            }
            for name, snap in self.speakers.items()
        }


def metallb(name: str = "metallb", namespace: str = NS, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "MetalLB", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ip_pool(name: str, addresses: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"addresses": addresses, **spec},
    }


def l2adv(name: str = "l2", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def service(
    name: str, namespace: str = "default", *, annotations: Mapping[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    body = {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": name}, **spec}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
        "spec": body,
    }


def endpoint_slice(service_name: str, nodes: list[str], namespace: str = "default", *, ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{service_name}-eps", "namespace": namespace, "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [f"10.244.{i}.10"], "conditions": {"ready": ready}, "nodeName": n} for i, n in enumerate(nodes)],
    }


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}}}
