"""Keeps the speakers' KubeRay worker group shaped like the MetalLB speaker DaemonSet.

Only when raylb runs in-cluster on KubeRay and is told which RayCluster group its speakers run
in (`raylb run --speaker-group RAYCLUSTER/GROUP`); elsewhere (the lab's Ray, the in-memory
store) the operator has no keeper and nothing changes. The shape is decided by
raylb.speakergroup; this class only decides *when* to ask the port to apply it:

- when the shape changed since it was last applied;
- every RECHECK_S anyway, so an edit of the RayCluster by someone else (e.g. `kubectl apply -k
  deploy/` again, which resets the replicas) is undone - a check is one read;
- after a failure, not before RETRY_S (a missing RayCluster or an RBAC denial must not cost a
  request every round); each distinct failure is logged once, and so is the recovery.

A failure is logged here (once per distinct message) and returned to the operator, which
counts it like its other write failures; the loop goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from raylb.speakergroup import GroupShape

log = logging.getLogger(__name__)

# A RayCluster edited behind the operator's back is put right within this long (one GET each).
RECHECK_S = 30.0
# Wait this long after a failed read or patch before the next attempt.
RETRY_S = 5.0


class GroupPort(Protocol):
    """Applies a shape to the group (raylb.cluster.kube.raycluster.KubeSpeakerGroup)."""

    def shape(self, shape: GroupShape) -> bool:
        """Make the group have `shape`; True when something was written."""
        ...


@dataclass
class SpeakerGroupKeeper:
    port: GroupPort
    recheck_s: float = RECHECK_S
    retry_s: float = RETRY_S
    clock: Callable[[], float] = time.monotonic
    applied: GroupShape | None = None  # the shape the group was last seen or made to have
    _checked_at: float = float("-inf")
    _failed_at: float | None = None
    _last_error: str = ""

    def keep(self, shape: GroupShape) -> Exception | None:
        """Apply `shape` if it is due (see the module docstring). Never raises: returns the
        failure of an attempt made now, for the operator to count."""
        now = self.clock()
        if self._failed_at is not None and now - self._failed_at < self.retry_s:
            return None
        if shape == self.applied and now - self._checked_at < self.recheck_s:
            return None
        try:
            patched = self.port.shape(shape)
        except Exception as exc:  # noqa: BLE001 - reported, retried after retry_s
            self._failed_at = now
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.warning("cannot shape the speaker group: %s", exc)
            return exc
        if self._last_error:
            log.info("the speaker group can be shaped again")
        self._failed_at, self._last_error = None, ""
        self.applied, self._checked_at = shape, now
        if patched:
            log.info("speaker group now: %d replicas, nodeSelector %s, %d tolerations",
                     shape.replicas, shape.node_selector_wire(), len(shape.tolerations))
        return None
