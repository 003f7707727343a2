"""Desired state kept in memory: the first implementation of raylb.desired's interface.

It behaves like a tiny API server for the kinds raylb watches: objects carry a
resourceVersion, every write produces a change that readers receive in order, and each
reader (an operator incarnation) starts with a full list. Results written by the operator
(ingress, annotations, events, ServiceL2Status, conditions) land on the stored objects, so a
test reads them back the way `kubectl get` would. Thread-safe; the Ray actor in
raylb.actors.memory shares one instance between the test driver and the operator.

It stays small however long it runs, as an API server does: the change log keeps only what a
reader has yet to read, a reader silent for `reader_idle_s` (a dead operator incarnation) is
forgotten and, should it come back, listed in full again (`watch` says so, like a watch that
expired), and only the newest `EVENTS_KEPT` events are kept.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from raylb.desired import Change, ChangeType, Ref, WireObject

L2_STATUS_KIND = "ServiceL2Status"
#: A reader that has not asked for changes this long is gone (a live operator asks every round).
READER_IDLE_S = 300.0
#: Events kept for `recorded_events` (Kubernetes expires its events after an hour).
EVENTS_KEPT = 10_000


def _now_rfc3339() -> str:
    """Now, to the microsecond (the API server stamps whole seconds; finer keeps the order of
    objects created within one second, which tests and scripts do)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _merge_annotations(obj: dict[str, Any], annotations: Mapping[str, str | None]) -> None:
    current = obj.setdefault("metadata", {}).setdefault("annotations", {})
    for key, value in annotations.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value


@dataclass(frozen=True)
class Event:
    ref: Ref
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


class MemoryCluster:
    """Objects by Ref, an ordered change log, and one cursor per reader."""

    def __init__(self, *, reader_idle_s: float = READER_IDLE_S, events_kept: int = EVENTS_KEPT) -> None:
        self._lock = threading.Condition()
        self._objects: dict[Ref, dict[str, Any]] = {}
        self._log: list[Change] = []
        self._base = 0  # position of _log[0] in the stream of every change ever made
        self._cursors: dict[str, int] = {}  # reader -> position of its next change
        self._asked: dict[str, float] = {}  # reader -> monotonic time of its last call
        self._reader_idle_s = reader_idle_s
        self._versions = itertools.count(1)
        self.events: deque[Event] = deque(maxlen=events_kept)
        self.l2_status: dict[Ref, dict[str, Any]] = {}
        self.writes = 0

    # --- the test driver's side: what kubectl apply/delete would do -----------------------

    def apply(self, kind: str, obj: WireObject) -> Ref:
        """Create or replace an object (status of an existing object is kept if absent)."""
        new = copy.deepcopy(dict(obj))
        ref = Ref.of(kind, new)
        with self._lock:
            old = self._objects.get(ref)
            if old is not None and "status" not in new and "status" in old:
                new["status"] = old["status"]
            # What the API server sets on create and keeps on update: which pool came first
            # decides overlaps (raylb.config), and a recreated object is another object.
            meta = new.setdefault("metadata", {})
            born = (old or {}).get("metadata", {})
            meta["uid"] = born.get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = born.get("creationTimestamp") or _now_rfc3339()
            self._store(ref, new, "MODIFIED" if old is not None else "ADDED")
        return ref

    def delete(self, ref: Ref) -> bool:
        with self._lock:
            obj = self._objects.pop(ref, None)
            if obj is None:
                return False
            self._log.append(Change("DELETED", ref.kind, obj))
            self._trim()
            self._lock.notify_all()
            return True

    def log_length(self) -> int:
        """Changes held for readers that have yet to read them."""
        with self._lock:
            return len(self._log)

    def get(self, ref: Ref) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get(ref)
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(o) for r, o in sorted(self._objects.items()) if r.kind == kind]

    def recorded_events(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def l2_statuses(self) -> dict[str, dict[str, Any]]:
        """Announcing node per service ("namespace/name" -> ServiceL2Status status)."""
        with self._lock:
            return {ref.key: copy.deepcopy(status) for ref, status in self.l2_status.items()}

    def write_count(self) -> int:
        with self._lock:
            return self.writes

    # --- raylb.desired.Desired --------------------------------------------------------------

    def wait_changes(self, *, reader: str, timeout_s: float) -> list[Change]:
        return self.watch(reader=reader, timeout_s=timeout_s)[0]

    def watch(self, *, reader: str, timeout_s: float) -> tuple[list[Change], bool]:
        """The reader's next changes (blocking up to `timeout_s` for one), and whether they are
        a full list: the reader's first call, or its first after it was forgotten."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._asked[reader] = time.monotonic()
            self._forget_idle_readers()
            if reader not in self._cursors:
                self._cursors[reader] = self._end()
                self._trim()
                return [Change("ADDED", r.kind, copy.deepcopy(o)) for r, o in sorted(self._objects.items())], True
            while self._cursors[reader] == self._end():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or reader not in self._cursors:
                    return [], False
                self._lock.wait(remaining)
            if reader not in self._cursors:  # forgotten while it waited: it hears so next call
                return [], False
            start, self._cursors[reader] = self._cursors[reader], self._end()
            changes = [copy.deepcopy(c) for c in self._log[start - self._base :]]
            self._trim()
            return changes, False

    def _end(self) -> int:
        return self._base + len(self._log)

    def _forget_idle_readers(self) -> None:
        cutoff = time.monotonic() - self._reader_idle_s
        for reader in [r for r, t in self._asked.items() if t < cutoff]:
            del self._asked[reader]
            self._cursors.pop(reader, None)

    def _trim(self) -> None:
        """Drop the changes every reader has read."""
        keep_from = min(self._cursors.values(), default=self._end())
        if keep_from > self._base:
            del self._log[: keep_from - self._base]
            self._base = keep_from

    # --- raylb.desired.Results --------------------------------------------------------------

    def set_ingress(
        self, service: Ref, ips: Sequence[str], *, annotations: Mapping[str, str | None] | None = None
    ) -> None:
        def mutate(obj: dict[str, Any]) -> None:
            obj.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": ip} for ip in ips]} if ips else {}
            _merge_annotations(obj, annotations or {})

        self._modify(service, mutate)

    def set_annotations(self, ref: Ref, annotations: Mapping[str, str | None]) -> None:
        self._modify(ref, lambda obj: _merge_annotations(obj, annotations))

    def record_event(self, ref: Ref, *, type: str, reason: str, message: str) -> None:
        with self._lock:
            self.writes += 1
            self.events.append(Event(ref, type, reason, message))

    def put_l2_status(self, service: Ref, *, node: str, interfaces: Sequence[str]) -> None:
        with self._lock:
            self.writes += 1
            self.l2_status[service] = {
                "node": node,
                "serviceName": service.name,
                "serviceNamespace": service.namespace,
                "interfaces": [{"name": name} for name in interfaces],
            }

    def delete_l2_status(self, service: Ref) -> None:
        with self._lock:
            if self.l2_status.pop(service, None) is not None:
                self.writes += 1

    def set_conditions(self, ref: Ref, conditions: Sequence[Mapping[str, str]]) -> None:
        self._modify(ref, lambda obj: obj.setdefault("status", {}).__setitem__("conditions", [dict(c) for c in conditions]))

    # --- internals --------------------------------------------------------------------------

    def _modify(self, ref: Ref, mutate: Any) -> None:
        with self._lock:
            obj = self._objects.get(ref)
            if obj is None:
                raise KeyError(f"{ref} not found")
            new = copy.deepcopy(obj)
            mutate(new)
            if new != obj:
                self.writes += 1
                self._store(ref, new, "MODIFIED")

    def _store(self, ref: Ref, obj: dict[str, Any], change_type: ChangeType) -> None:
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        self._objects[ref] = obj
        self._log.append(Change(change_type, ref.kind, copy.deepcopy(obj)))
        self._trim()  # with no reader, nothing is kept: a new reader gets the full list
        self._lock.notify_all()
