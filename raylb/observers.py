"""Who watches whom: K observers per node, on K pseudo-random rings (Rapid's topology).

With every speaker heartbeating every other one, each node sends and receives 20 x (n-1)
datagrams a second: 20 000 each way at 1 000 nodes. Instead each node is watched by K
observers and watches K subjects (raylb.membership, K-observer mode), as in Rapid (Suresh
et al., USENIX ATC 2018): ring r orders the listed nodes by SHA-256(r, name); a node's
observer on ring r is the first node after it on that ring that is alive in the caller's
view. With K rings the monitoring graph is (close to)
a random K-regular expander: no small set of failures cuts a node off from all its
observers, and per-node traffic is 2 x 20 x K datagrams a second, whatever n.

Everything is a pure function of (node list, alive set), so every speaker with the same
snapshot and the same view computes the same edges; the rings are cached per node list, an
edge costs a walk over the dead nodes next to it on each ring.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache

# 4 observers: 4 x 20 = 80 heartbeats/s sent and 80 received per node (target <= 200 in
# total), and a removal needs QUORUM of them, so one lossy or lying observer is outvoted and a
# node still has two spare observers when two of its observers die with it.
OBSERVERS = 4
# Observers that must accuse a node before anyone removes it (Rapid's "H" watermark, scaled
# down for K = 4): one observer's false accusation moves nothing.
QUORUM = 2


@lru_cache(maxsize=8)
def _rings(names: tuple[str, ...], k: int) -> tuple[tuple[str, ...], ...]:
    return tuple(
        tuple(sorted(names, key=lambda n, r=r: hashlib.sha256(f"{r}\0{n}".encode()).digest())) for r in range(k)
    )


class Topology:
    """The observer edges over one node list, for any view (alive set) over it."""

    def __init__(self, names: Iterable[str], *, k: int = OBSERVERS) -> None:
        if k < 1:
            raise ValueError(f"observers k={k}: must be >= 1")
        self.names = tuple(sorted(set(names)))
        self.k = k
        self._rings = _rings(self.names, k)
        self._position = [{n: i for i, n in enumerate(ring)} for ring in self._rings]

    def observers(self, node: str, alive: frozenset[str]) -> frozenset[str]:
        """Who watches `node` in the view `alive`: on each ring, the first node after it that
        is alive (up to k distinct; fewer when rings agree or few nodes are alive)."""
        return frozenset(walk[-1] for walk in self._walks(node, alive, step=1) if walk and walk[-1] in alive)

    def subjects(self, node: str, alive: frozenset[str]) -> frozenset[str]:
        """Whom `node` watches in the view `alive`: exactly the nodes that have it among their
        `observers` - on each ring, the nodes before it back to and including the first alive one."""
        return frozenset(n for walk in self._walks(node, alive, step=-1) for n in walk)

    def _walks(self, node: str, alive: frozenset[str], *, step: int) -> list[list[str]]:
        """Per ring, the nodes from `node` (excluded) in direction `step` up to and including
        the first alive one (all of them, if none is alive)."""
        walks: list[list[str]] = []
        for ring, position in zip(self._rings, self._position):
            start = position.get(node)
            if start is None:
                return []
            walk: list[str] = []
            for distance in range(1, len(ring)):
                candidate = ring[(start + step * distance) % len(ring)]
                walk.append(candidate)
                if candidate in alive:
                    break
            walks.append(walk)
        return walks
