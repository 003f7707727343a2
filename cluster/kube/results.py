"""The operator's decisions written to a real API server: raylb.desired.Results.

Every method is idempotent and compares before it writes: it reads the object (a read is
cheap and not a write), computes the new version, and writes only when something differs, so
re-applying a whole plan after a restart costs reads, not writes. Status subresources are
replaced with the resourceVersion that was read (optimistic concurrency); a 409 means
someone wrote in between, so the method reads again and retries, a bounded number of times.

`writes` counts API write requests (POST/PUT/PATCH/DELETE) sent, for the benchmark's
writes-per-service figure. Errors come out as raylb's error tree (see raylb.cluster.kube.client):
a 403 is a ForbiddenError naming the verb and resource, never swallowed.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client

from raylb.cluster.kube.client import Api, ConflictError, KindInfo, NotFoundError, kind_info
from raylb.desired import Ref
from raylb.errors import PermanentError
from raylb.reconcile import OPERATOR_NAMESPACE

log = logging.getLogger(__name__)

COMPONENT = "raylb"
# Read-modify-replace attempts before a 409 is given up on (each one re-reads first). Two
# writers racing on one object settle in two; five leaves room for a busy controller.
CONFLICT_ATTEMPTS = 5
# The same event (object, type, reason, message) is not recorded again within this window:
# the operator re-runs its plan often, and Kubernetes itself aggregates repeats into one.
EVENT_DEDUP_S = 600.0
EVENT_DEDUP_MAX = 10_000  # remembered events (oldest forgotten first)
# Labels MetalLB puts on a ServiceL2Status, so `kubectl get servicel2statuses -l ...` works.
L2_LABEL_SERVICE_NAME = "metallb.io/service-name"
L2_LABEL_SERVICE_NAMESPACE = "metallb.io/service-namespace"
L2_LABEL_NODE = "metallb.io/node"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")  # at most 63 chars

MERGE_PATCH = "application/merge-patch+json"


def l2_status_name(service: Ref) -> str:
    """The ServiceL2Status name of `service`: deterministic, short, valid whatever the names.

    64 bits of SHA-256 over "namespace/name": collisions are out of reach for any cluster.
    """
    digest = hashlib.sha256(f"{service.namespace}/{service.name}".encode()).hexdigest()
    return f"l2-{digest[:16]}"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    current: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]], *, now: str
) -> list[dict[str, Any]]:
    """`wanted` as stored: lastTransitionTime kept while a condition's status stays the same,
    `now` when it changes or is new; message defaults to "" (as the schema does);
    observedGeneration becomes an integer."""
    previous = {c.get("type"): c for c in current}
    merged = []
    for condition in wanted:
        c: dict[str, Any] = {"message": "", **condition}
        if "observedGeneration" in c:
            c["observedGeneration"] = int(c["observedGeneration"])
        if "lastTransitionTime" not in c:
            old = previous.get(c.get("type"))
            same = old is not None and old.get("status") == c.get("status") and old.get("lastTransitionTime")
            c["lastTransitionTime"] = old["lastTransitionTime"] if same else now
        merged.append(c)
    return merged


def ingress_for(current: Sequence[Mapping[str, Any]], ips: Sequence[str]) -> list[dict[str, Any]]:
    """status.loadBalancer.ingress holding `ips`, keeping what the server added to known IPs."""
    by_ip = {entry.get("ip"): entry for entry in current}
    return [dict(by_ip.get(ip) or {"ip": ip}) for ip in ips]


class KubeResults:
    """raylb.desired.Results over the real API server."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        operator_namespace: str = OPERATOR_NAMESPACE,
        conflict_attempts: int = CONFLICT_ATTEMPTS,
        event_dedup_s: float = EVENT_DEDUP_S,
    ) -> None:
        self.api = Api(api_client)
        self.operator_namespace = operator_namespace
        self.conflict_attempts = conflict_attempts
        self.event_dedup_s = event_dedup_s
        self.writes = 0  # API write requests sent
        self.conflicts = 0  # 409s met (and retried)
        self._lock = threading.Lock()
        self._uids: dict[Ref, str] = {}
        self._recent_events: OrderedDict[tuple[Ref, str, str, str], float] = OrderedDict()

    # ---- raylb.desired.Results -------------------------------------------------------------

    def set_ingress(
        self, service: Ref, ips: Sequence[str], *, annotations: Mapping[str, str | None] | None = None
    ) -> None:
        """One PUT to services/status. The API server keeps metadata changes in a Service status
        update, so the pool annotation rides along; should a server drop it, the operator sees
        the annotation missing and writes it on its own (one write more, never a wrong state)."""

        def mutate(obj: dict[str, Any]) -> None:
            status = obj.setdefault("status", {})
            current = (status.get("loadBalancer") or {}).get("ingress") or []
            if [entry.get("ip") for entry in current] != list(ips):
                status["loadBalancer"] = {"ingress": ingress_for(current, ips)} if ips else {}
            if annotations:
                notes = dict(obj.setdefault("metadata", {}).get("annotations") or {})
                for key, value in annotations.items():
                    if value is None:
                        notes.pop(key, None)
                    else:
                        notes[key] = value
                obj["metadata"]["annotations"] = notes

        self._update(service, subresource="status", mutate=mutate)

    def set_annotations(self, ref: Ref, annotations: Mapping[str, str | None]) -> None:
        info, what = kind_info(ref.kind), self._what(ref)
        obj = self._read(ref)
        current = (obj.get("metadata") or {}).get("annotations") or {}
        patch = {
            key: value
            for key, value in annotations.items()
            if (value is None and key in current) or (value is not None and current.get(key) != value)
        }
        if patch:
            self._write("PATCH", info.object_path(ref.namespace, ref.name), what=what,
                        body={"metadata": {"annotations": patch}}, content_type=MERGE_PATCH)

    def record_event(self, ref: Ref, *, type: str, reason: str, message: str) -> None:  # noqa: A002 - the protocol's name
        key = (ref, type, reason, message)
        now = time.monotonic()
        with self._lock:
            last = self._recent_events.get(key)
            if last is not None and now - last < self.event_dedup_s:
                return
        info = kind_info(ref.kind)
        namespace = ref.namespace or "default"  # events about cluster-scoped objects, as kubectl shows them
        involved: dict[str, Any] = {"apiVersion": info.api_version, "kind": ref.kind, "name": ref.name}
        if ref.namespace:
            involved["namespace"] = ref.namespace
        uid = self._uid(ref)
        if uid:
            involved["uid"] = uid
        stamp = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name[:200]}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": involved,
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        events = kind_info("Event")
        self._write("POST", events.collection_path(namespace), what=f"events {namespace} (about {ref})", body=event)
        with self._lock:
            self._recent_events[key] = now
            self._recent_events.move_to_end(key)
            while len(self._recent_events) > EVENT_DEDUP_MAX:
                self._recent_events.popitem(last=False)

    def put_l2_status(self, service: Ref, *, node: str, interfaces: Sequence[str]) -> None:
        ref = self.l2_status_ref(service)
        info, what = kind_info(ref.kind), self._what(ref)
        labels = {L2_LABEL_SERVICE_NAME: service.name, L2_LABEL_SERVICE_NAMESPACE: service.namespace,
                  L2_LABEL_NODE: node}
        labels = {k: v for k, v in labels.items() if _LABEL_VALUE.match(v)}  # long node names: no label
        status = {
            "node": node,
            "serviceName": service.name,
            "serviceNamespace": service.namespace,
            "interfaces": [{"name": name} for name in interfaces],
        }
        try:
            obj = self._read(ref)
        except NotFoundError:
            body = {
                "apiVersion": info.api_version,
                "kind": ref.kind,
                "metadata": {"name": ref.name, "namespace": ref.namespace, "labels": labels},
                "spec": {},
            }
            self._write("POST", info.collection_path(ref.namespace), what=what, body=body)
        else:
            if ((obj.get("metadata") or {}).get("labels") or {}) != labels:
                self._write("PATCH", info.object_path(ref.namespace, ref.name), what=what,
                            body={"metadata": {"labels": labels}}, content_type=MERGE_PATCH)
        # The status subresource ignores status on create; it is always its own write.
        self._update(ref, subresource="status", mutate=lambda o: o.__setitem__("status", status))

    def delete_l2_status(self, service: Ref) -> None:
        ref = self.l2_status_ref(service)
        try:
            self._read(ref)
            self._write("DELETE", kind_info(ref.kind).object_path(ref.namespace, ref.name), what=self._what(ref))
        except NotFoundError:
            return

    def set_conditions(self, ref: Ref, conditions: Sequence[Mapping[str, str]]) -> None:
        def mutate(obj: dict[str, Any]) -> None:
            status = obj.get("status") or {}
            current = status.get("conditions") or []
            merged = merge_conditions(current, conditions, now=now_rfc3339())
            if merged != current:
                obj["status"] = {**status, "conditions": merged}

        self._update(ref, subresource="status", mutate=mutate)

    # ---- helpers the operator and tests may use --------------------------------------------

    def l2_status_ref(self, service: Ref) -> Ref:
        return Ref("ServiceL2Status", self.operator_namespace, l2_status_name(service))

    def read(self, ref: Ref) -> dict[str, Any]:
        """The object as the API server has it now."""
        return self._read(ref)

    # ---- internals -------------------------------------------------------------------------

    @staticmethod
    def _what(ref: Ref, *, subresource: str = "") -> str:
        return kind_info(ref.kind).describe(ref.namespace, ref.name, subresource=subresource)

    def _read(self, ref: Ref) -> dict[str, Any]:
        info = kind_info(ref.kind)
        obj = self.api.request("GET", info.object_path(ref.namespace, ref.name), what=self._what(ref))
        uid = (obj.get("metadata") or {}).get("uid")
        if uid:
            with self._lock:
                self._uids[ref] = uid
        return obj

    def _read_for_update(self, ref: Ref) -> dict[str, Any]:
        """The read of a read-modify-replace (a seam: tests write in between to force a 409)."""
        return self._read(ref)

    def _uid(self, ref: Ref) -> str | None:
        with self._lock:
            uid = self._uids.get(ref)
        if uid is None:
            try:
                uid = (self._read(ref).get("metadata") or {}).get("uid")
            except PermanentError:  # gone, or not ours to read: the event still names it
                return None
        return uid

    def _write(self, method: str, path: str, *, what: str, body: Any = None,
               content_type: str | None = None) -> dict[str, Any]:
        with self._lock:
            self.writes += 1
        return self.api.request(method, path, what=what, body=body, content_type=content_type)

    def _update(self, ref: Ref, *, subresource: str, mutate: Callable[[dict[str, Any]], None]) -> None:
        """Read, mutate a copy, and replace if it differs; on 409 read again (bounded)."""
        info: KindInfo = kind_info(ref.kind)
        what = self._what(ref, subresource=subresource)
        for attempt in range(1, self.conflict_attempts + 1):
            obj = self._read_for_update(ref)
            new = copy.deepcopy(obj)
            mutate(new)
            if new == obj:
                return
            try:
                self._write("PUT", info.object_path(ref.namespace, ref.name, subresource=subresource), what=what,
                            body=new)
                return
            except ConflictError as exc:
                with self._lock:
                    self.conflicts += 1
                log.info("update %s: conflict (attempt %d of %d), reading again", what, attempt,
                         self.conflict_attempts)
                last = exc
        raise ConflictError(
            f"update {what}: still conflicting after {self.conflict_attempts} attempts "
            f"(another writer keeps changing it): {last}"
        ) from last
