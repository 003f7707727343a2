"""Every Ray call the operator makes, in one class.

The operator's logic (raylb.actors.operator.OperatorCore) talks to Ray only through
`RayOps`, so the same logic runs against a test double without a Ray cluster. Calls carry a
timeout, and calls to all speakers share one: dead or hung speakers cost one timeout per
round, never a hung control loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ray

from raylb.actors.allocator import ALLOCATOR_NAME, AllocatorService
from raylb.keyring import KeySet
from raylb.actors.names import RAY_NAMESPACE, SPEAKER_PREFIX
from raylb.snapshot import NodeInfo, Snapshot

log = logging.getLogger(__name__)

# Label every Ray node carries with its (Kubernetes) node name; `raylb lab up` and the KubeRay
# manifests set it. The Ray head carries role=control and runs no speaker.
NODE_LABEL = "raylb.io/node"
ROLE_LABEL = "raylb.io/role"
# Long enough for a loaded 2-core box, short enough that one dead actor cannot stall the loop.
CALL_TIMEOUT_S = 5.0


def control_placement() -> dict[str, Any]:
    """Options that keep a control-plane actor on the control node (the node labelled
    raylb.io/role=control), where one exists. A hard constraint on purpose: an operator or
    store placed on a speaker node would die with that node and take the control plane along.
    Without a control node (a plain local Ray) the actor goes wherever Ray puts it."""
    if any((n.get("Labels") or {}).get(ROLE_LABEL) == "control" for n in ray.nodes() if n.get("Alive")):
        return {"label_selector": {ROLE_LABEL: "control"}}
    return {}


@dataclass(frozen=True)
class RayNode:
    name: str  # the raylb.io/node label
    node_id: str
    address: str  # the node's IP on the node network


class RayOps:
    """Allocator, speakers and the node table, seen through Ray."""

    def __init__(
        self, *, namespace: str = RAY_NAMESPACE, call_timeout_s: float = CALL_TIMEOUT_S,
        allocator_metrics_port: int = 0, speaker_metrics_port: int = 0,
    ) -> None:  # fmt: skip
        self.namespace = namespace
        self.allocator_metrics_port = allocator_metrics_port  # 0: no endpoint (raylb.actors.metrics_http)
        self.speaker_metrics_port = speaker_metrics_port
        self.call_timeout_s = call_timeout_s
        self._pushed: dict[str, int] = {}  # node -> snapshot version last acknowledged
        self._keys_pushed: dict[str, KeySet] = {}  # node -> membership keys last acknowledged

    # --- the node table ------------------------------------------------------------------

    def nodes(self) -> dict[str, RayNode]:
        """Alive Ray nodes that carry a node name and are not the control node."""
        found: dict[str, RayNode] = {}
        for entry in ray.nodes():
            labels = entry.get("Labels") or {}
            name = labels.get(NODE_LABEL)
            if not entry.get("Alive") or not name or labels.get(ROLE_LABEL) == "control":
                continue
            found[name] = RayNode(name=name, node_id=entry["NodeID"], address=entry["NodeManagerAddress"])
        return found

    # --- the allocator ---------------------------------------------------------------------

    def allocator(self) -> Any:
        """The allocator actor, created if missing (detached: it outlives an operator restart)."""
        actor_class = ray.remote(AllocatorService)
        return actor_class.options(  # type: ignore[attr-defined]
            name=ALLOCATOR_NAME,
            namespace=self.namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
            **control_placement(),
        ).remote(metrics_port=self.allocator_metrics_port)

    def call_allocator(self, method: str, **kwargs: Any) -> Any:
        handle = self.allocator()
        return ray.get(getattr(handle, method).remote(**kwargs), timeout=self.call_timeout_s)

    def remove_allocator(self) -> None:
        self._kill(ALLOCATOR_NAME)

    # --- speakers ----------------------------------------------------------------------------

    def speaker(self, node: str) -> Any | None:
        try:
            return ray.get_actor(SPEAKER_PREFIX + node, namespace=self.namespace)
        except ValueError:
            return None

    def speaker_names(self) -> set[str]:
        names = set()
        for info in ray.util.list_named_actors(all_namespaces=True):
            if info.get("namespace") == self.namespace and info["name"].startswith(SPEAKER_PREFIX):
                names.add(info["name"][len(SPEAKER_PREFIX) :])
        return names

    def ensure_speaker(self, node: RayNode, *, keys: KeySet) -> Any:
        from raylb.actors.speaker.actor import start_speaker  # noqa: PLC0415 (speaker pulls in sockets)

        handle = self.speaker(node.name)
        if handle is None:
            self._pushed.pop(node.name, None)
            self._keys_pushed[node.name] = keys
            handle = start_speaker(
                node_name=node.name, node_id=node.node_id, node_address=node.address, keys=keys,
                namespace=self.namespace, metrics_port=self.speaker_metrics_port,
            )  # fmt: skip
        return handle

    def remove_speaker(self, node: str, *, graceful: bool) -> None:
        handle = self.speaker(node)
        self._pushed.pop(node, None)
        self._keys_pushed.pop(node, None)
        if handle is None:
            return
        if graceful:
            try:
                ray.get(handle.leave.remote(), timeout=self.call_timeout_s)
            except Exception as exc:  # noqa: BLE001 - a speaker that cannot say goodbye is killed anyway
                log.warning("speaker on %s did not leave cleanly: %s", node, exc)
        ray.kill(handle, no_restart=True)

    def tell_node_dead(self, dead: str, nodes: Mapping[str, NodeInfo]) -> None:
        """Ray's node table says `dead` is gone: tell the speakers (their second signal)."""
        for name in nodes:
            handle = self.speaker(name)
            if handle is not None:
                handle.node_dead.remote(dead)  # fire and forget: heartbeats are the first signal

    def push(self, snapshot: Snapshot, nodes: Mapping[str, NodeInfo]) -> None:
        """Send the snapshot to every speaker that has not acknowledged this version yet."""
        acked = self._offer("push", snapshot, nodes, held=lambda n: self._pushed.get(n) == snapshot.version,
                            what=f"snapshot {snapshot.version}")  # fmt: skip
        self._pushed.update({name: int(value) for name, value in acked.items()})

    def push_keys(self, keys: KeySet, nodes: Mapping[str, NodeInfo]) -> None:
        """Send the membership keys to every speaker that has not acknowledged them yet."""
        acked = self._offer("set_keys", keys, nodes, held=lambda n: self._keys_pushed.get(n) == keys,
                            what="the membership keys")  # fmt: skip
        self._keys_pushed.update(dict.fromkeys(acked, keys))

    def _offer(
        self, method: str, value: Any, nodes: Mapping[str, NodeInfo], *, held: Callable[[str], bool], what: str
    ) -> dict[str, Any]:
        """Call `method(value)` on every speaker that does not hold it yet; the replies of
        those that took it (the others are tried again next round)."""
        refs = {
            name: getattr(handle, method).remote(value)
            for name in nodes
            if not held(name) and (handle := self.speaker(name)) is not None
        }
        acked = {}
        for name, reply in self._gather(refs).items():
            if isinstance(reply, Exception):
                log.info("speaker on %s did not take %s yet: %s", name, what, reply)
            else:
                acked[name] = reply
        return acked

    def statuses(self, nodes: Mapping[str, NodeInfo]) -> dict[str, dict[str, Any]]:
        refs = {name: h.status.remote() for name in nodes if (h := self.speaker(name)) is not None}
        # an unreachable speaker simply reports nothing
        return {name: value for name, value in self._gather(refs).items() if not isinstance(value, Exception)}

    def _gather(self, refs: Mapping[str, Any]) -> dict[str, Any]:
        """Every reply that arrives within ONE shared timeout (a hung speaker costs one timeout per
        round, not one per speaker); a missing or failed reply becomes its exception."""
        if not refs:
            return {}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.call_timeout_s)
        arrived = set(ready)
        out: dict[str, Any] = {}
        for name, ref in refs.items():
            if ref not in arrived:
                out[name] = TimeoutError(f"no reply within {self.call_timeout_s} s")
                continue
            try:
                out[name] = ray.get(ref, timeout=0)
            except Exception as exc:  # noqa: BLE001 - reported to the caller as a value
                out[name] = exc
        return out

    def _kill(self, name: str) -> None:
        try:
            ray.kill(ray.get_actor(name, namespace=self.namespace), no_restart=True)
        except ValueError:
            pass
