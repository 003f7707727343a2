"""Ray's side of the operator, in this process: an allocator and no speakers.

For running the operator's logic without a Ray cluster - the allocation demo, and the
reconcile benchmark against an API server - where only allocation and the writes to
Kubernetes matter. Implements raylb.actors.operator.RayLike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raylb.actors.allocator import AllocatorService
from raylb.keyring import KeySet
from raylb.snapshot import NodeInfo, Snapshot


class NoKeys:
    """The key source of an operator without speakers: asking for a key is a bug."""

    def read(self) -> bytes:
        raise RuntimeError("InProcessRay runs no speakers, so no membership key is read")


class InProcessRay:
    def __init__(self) -> None:
        self.allocator = AllocatorService()

    def nodes(self) -> dict[str, Any]:
        return {}

    def call_allocator(self, method: str, **kwargs: Any) -> Any:
        return getattr(self.allocator, method)(**kwargs)

    def remove_allocator(self) -> None:
        self.allocator = AllocatorService()

    def speaker_names(self) -> set[str]:
        return set()

    def ensure_speaker(self, node: Any, *, keys: KeySet) -> None:
        raise RuntimeError("InProcessRay runs no speakers")

    def push_keys(self, keys: KeySet, nodes: Mapping[str, NodeInfo]) -> None:
        return None

    def remove_speaker(self, node: str, *, graceful: bool) -> None:
        return None

    def push(self, snapshot: Snapshot, nodes: Mapping[str, NodeInfo]) -> None:
        return None

    def tell_node_dead(self, dead: str, nodes: Mapping[str, NodeInfo]) -> None:
        return None

    def statuses(self, nodes: Mapping[str, NodeInfo]) -> dict[str, dict[str, Any]]:
        return {}
