"""The operator actor: the only writer to Kubernetes, and the loop that drives everything.

One named, detached actor that Ray restarts on failure. Its loop: take the changes of desired
state, decide with raylb.reconcile, call the allocator, execute the writes, keep one speaker on
every matching Ray node and publish one versioned snapshot to them. `OperatorCore` holds that
logic with every side effect injected (desired state, results, Ray), so tests run it against
the in-memory store and a fake Ray; `OperatorActor` is the Ray shell around it.

The loop never dies: each round is wrapped, failures are logged and counted, and the next
round starts from the cached world - every step is idempotent. A desired-state source that
persistently cannot read some kind (e.g. RBAC forbids listing Nodes) is reported on the MetalLB
resource's Degraded condition, in status() and in the log, once it has lasted past a grace
period. Against an API server, writes to different objects go out in parallel.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from raylb import notices
from raylb import reconcile as rc
from raylb.actors.allocator import NotRestored, Outcome
from raylb.actors.memberlist_key import REFRESH_S, KeySource
from raylb.actors.metrics_http import ALLOCATOR_PORT, OPERATOR_PORT, SPEAKER_PORT, serve
from raylb.actors.speaker_group import SpeakerGroupKeeper
from raylb.desired import Change, Desired, Ref, Results, World
from raylb.errors import ForbiddenError, Problem
from raylb.ipam.request import ServiceRequest
from raylb.keyring import KeySet, accept_first, fingerprint, for_new_speaker, plan_keys
from raylb.metrics import Metric, OperatorFigures, operator_families
from raylb.models import MetalLB
from raylb.pools import Pool
from raylb.snapshot import EMPTY, NodeInfo, Snapshot
from raylb.speakergroup import parse_group_ref, speaker_group_shape

log = logging.getLogger(__name__)

OPERATOR_NAME = "raylb-operator"
# How long one wait for changes may block; also the cadence of node-table and speaker polls.
POLL_S = 0.25
# Pause after a failed round (e.g. API server unreachable) so a persistent failure costs little CPU.
FAILURE_BACKOFF_S = 0.5
# A desired-state source error (e.g. RBAC forbids listing Nodes) is reported - MetalLB's
# Degraded condition, status(), one ERROR log line - only once it has lasted this long and
# been seen in at least SOURCE_ERROR_ROUNDS rounds: right after an API server restart its
# authorizer answers 403 until its RBAC cache has filled (a second or two, plus up to 5 s of
# the watcher's backoff before it tries again), which is nothing a user must act on.
SOURCE_ERROR_GRACE_S = 10.0
SOURCE_ERROR_ROUNDS = 2
# Writes to different objects go out in parallel against a real API server, up to this many
# at once: each is a round trip of a few ms (plus a read), and 1 000 new Services need
# ~5 000 of them. Writes to one object keep their order.
KUBE_WRITE_CONCURRENCY = 8


class RayLike(Protocol):
    """What OperatorCore needs from Ray (raylb.actors.ray_ops.RayOps, or a fake)."""

    def nodes(self) -> Mapping[str, Any]: ...
    def call_allocator(self, method: str, **kwargs: Any) -> Any: ...
    def remove_allocator(self) -> None: ...
    def speaker_names(self) -> set[str]: ...
    def ensure_speaker(self, node: Any, *, keys: KeySet) -> Any: ...
    def remove_speaker(self, node: str, *, graceful: bool) -> None: ...
    def push(self, snapshot: Snapshot, nodes: Mapping[str, NodeInfo]) -> None: ...
    def tell_node_dead(self, dead: str, nodes: Mapping[str, NodeInfo]) -> None: ...
    def push_keys(self, keys: KeySet, nodes: Mapping[str, NodeInfo]) -> None: ...
    def statuses(self, nodes: Mapping[str, NodeInfo]) -> dict[str, dict[str, Any]]: ...


def execute(write: rc.Write, results: Results) -> None:
    """Carry out one decided write."""
    if isinstance(write, rc.SetIngress):
        results.set_ingress(write.ref, write.ips, annotations=dict(write.annotations) or None)
    elif isinstance(write, rc.SetAnnotations):
        results.set_annotations(write.ref, dict(write.annotations))
    elif isinstance(write, rc.RecordEvent):
        results.record_event(write.ref, type=write.type, reason=write.reason, message=write.message)
    elif isinstance(write, rc.PutL2Status):
        results.put_l2_status(write.ref, node=write.node, interfaces=write.interfaces)
    elif isinstance(write, rc.DeleteL2Status):
        results.delete_l2_status(write.ref)
    elif isinstance(write, rc.SetConditions):
        results.set_conditions(write.ref, [dict(c) for c in write.conditions])
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"unknown write {write!r}")


def _reflect(world: World, write: rc.Write) -> None:
    """Apply a successful write to the cached world at once, so the next round does not repeat it
    before the watch delivers the change."""
    if not isinstance(write, (rc.SetIngress, rc.SetAnnotations)):
        return
    obj = world.get(write.ref)
    if obj is None:
        return
    new = {**obj, "metadata": dict(obj.get("metadata") or {}), "status": dict(obj.get("status") or {})}
    if isinstance(write, rc.SetIngress):
        new["status"]["loadBalancer"] = {"ingress": [{"ip": ip} for ip in write.ips]} if write.ips else {}
    if write.annotations:
        notes = dict(new["metadata"].get("annotations") or {})
        for key, value in write.annotations:
            if value is None:
                notes.pop(key, None)
            else:
                notes[key] = value
        new["metadata"]["annotations"] = notes
    world.apply(Change("MODIFIED", write.ref.kind, new))


def _source_reason(error: Exception) -> str:
    """APIAccessDenied for an RBAC denial, else APIUnavailable."""
    return rc.API_ACCESS_DENIED if isinstance(error, ForbiddenError) else rc.API_UNAVAILABLE


@dataclass
class _SourceErrorSeen:
    message: str
    reason: str
    since: datetime
    rounds: int


@dataclass
class Counters:
    rounds: int = 0
    failures: int = 0
    writes: int = 0
    write_failures: int = 0
    restores: int = 0
    last_error: str = ""


@dataclass
class OperatorCore:
    """The operator's logic; every side effect goes through `desired`, `results` and `ray`."""

    desired: Desired
    results: Results
    ray: RayLike
    key_source: KeySource
    operator_namespace: str = rc.OPERATOR_NAMESPACE
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    write_concurrency: int = 1  # KUBE_WRITE_CONCURRENCY against an API server
    source_error_grace_s: float = SOURCE_ERROR_GRACE_S
    # In-cluster on KubeRay: keeps the speakers' worker group sized to the matching Nodes.
    speaker_group: SpeakerGroupKeeper | None = None
    world: World = field(default_factory=World)
    counters: Counters = field(default_factory=Counters)
    snapshot: Snapshot = EMPTY
    deployed: bool = False
    _last_error: dict[str, str] = field(default_factory=dict)
    _deprecation_told: set[str] = field(default_factory=set)
    _problems: frozenset[Problem] = frozenset()
    _announcers: dict[str, str] = field(default_factory=dict)
    _valid_requests: dict[str, ServiceRequest] = field(default_factory=dict)
    _speaker_nodes: dict[str, NodeInfo] = field(default_factory=dict)
    _source_seen: dict[str, _SourceErrorSeen] = field(default_factory=dict)
    source_errors: tuple[rc.SourceError, ...] = ()  # the persistent ones, as reported
    _unsynced_report: tuple[tuple[rc.SourceError, ...], datetime] | None = None
    _pool: ThreadPoolExecutor | None = None
    _service_views: rc.ServiceViews = field(default_factory=rc.ServiceViews)
    _key: bytes | None = None  # the membership key (raylb.keyring), read every REFRESH_S
    _older_keys: tuple[bytes, ...] = ()  # keys read before it in this operator's life
    _key_read_at: datetime | None = None
    _keys: KeySet | None = None  # what every speaker should hold (plan_keys)
    _undeployed_told: frozenset[str] = frozenset()  # Services told raylb is not deployed
    _unannounced: dict[str, str] = field(default_factory=dict)  # Services told nobody may announce them
    _unannounced_on: tuple[Any, ...] | None = None  # the snapshot version and unplaced IPs judged on
    figures: OperatorFigures = field(default_factory=OperatorFigures)  # for metrics

    def step(self, *, timeout_s: float = POLL_S) -> None:
        """One round: take changes (waiting up to timeout_s), then reconcile. Never raises."""
        try:
            changes = self.desired.wait_changes(timeout_s=timeout_s)
            started_s = time.monotonic()
            for change in changes:
                self.world.apply(change)
            self.figures.queue_depth = len(changes)
            if getattr(self.desired, "synced", True):
                self.reconcile()
                self.figures.round_s = time.monotonic() - started_s
            else:  # an incomplete world must not be acted on; only say why nothing happens
                now = self.clock()
                self._report_unsynced(self._track_source_errors(now), now)
        except Exception as exc:  # noqa: BLE001 - the loop must survive anything
            self.counters.failures += 1
            self.counters.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("operator round failed")
        finally:
            self.counters.rounds += 1

    def reconcile(self) -> None:
        now = self.clock()
        source_errors = self._track_source_errors(now)
        system = rc.read_system(self.world, operator_namespace=self.operator_namespace, now=now)
        self._apply(system.writes)
        self._keep_speaker_group(system.metallb)
        if system.metallb is None:
            self._report_unsynced(source_errors, now)
            self._teardown()
            self._tell_undeployed()
            return
        metallb = system.metallb
        self.deployed = True
        self._undeployed_told = frozenset()
        config = rc.read_config(self.world, operator_namespace=self.operator_namespace)
        self.figures.config_loaded = self.figures.config_loaded or not config.problems
        self.figures.config_stale = bool(config.problems)
        self._apply(rc.pool_condition_writes(self.world, config, operator_namespace=self.operator_namespace, now=now))
        failed = self._apply(rc.problem_events(config, operator_namespace=self.operator_namespace, previous=self._problems))
        # A problem whose event could not be recorded is not remembered: it is told again next round.
        self._problems = frozenset(p for p in config.problems if rc.problem_ref(p, self.operator_namespace) not in failed)

        views = self._service_views.read(self.world, load_balancer_class=metallb.spec.load_balancer_class)
        self._valid_requests = rc.valid_requests(views, previous=self._valid_requests)
        requests = rc.allocation_requests(views, valid=self._valid_requests)
        outcomes = self._allocate(pools=config.pools, requests=requests, views=views)
        outcomes = notices.name_invalid_pools(outcomes, requests=requests, config=config)
        writes: list[rc.Write] = []
        for key, view in views.items():
            writes += rc.service_writes(
                view, view.error or outcomes.get(key), last_error=self._last_error.get(key), holding=key in requests
            )
            if key not in self._deprecation_told:
                writes += rc.deprecation_events(view)
        failed = self._apply(writes)  # one batch: writes to different Services go out in parallel
        for key, view in views.items():  # remember what was told only where every write landed
            if view.ref in failed:
                self._last_error.pop(key, None)
                continue
            outcome = view.error or outcomes.get(key)
            if isinstance(outcome, Exception):
                self._last_error[key] = outcome.message
            else:
                self._last_error.pop(key, None)
            if view.deprecated:
                self._deprecation_told.add(key)
        self._apply(rc.stale_services(self.world, views))

        ray_nodes = self.ray.nodes()
        nodes = rc.speaker_nodes(self.world, metallb, ray_nodes={n: r.address for n, r in ray_nodes.items()})
        keys = self._read_keys(now) if nodes else None  # no speaker to run: the key is not needed
        self._ensure_speakers(nodes, ray_nodes, keys=keys)
        statuses = self.ray.statuses(nodes)
        if keys is not None:
            self._keys = plan_keys(keys.accept[0], previous=self._older_keys,
                                   reports={n: s.get("keys") or {} for n, s in statuses.items()})
            self.ray.push_keys(self._keys, nodes)
        # Speakers ignore snapshots older than the one they hold; after an operator restart the
        # numbering continues above theirs instead of starting again at 1.
        held = max((int(s.get("snapshot_version", 0)) for s in statuses.values()), default=0)
        assignments = {k: o for k, o in outcomes.items() if not isinstance(o, Exception)}
        candidate = rc.build_snapshot(
            version=max(self.snapshot.version, held) + 1, config=config, views=views, assignments=assignments,
            nodes=nodes.values(),
        )  # fmt: skip
        if not rc.same_content(candidate, self.snapshot) or held > self.snapshot.version:
            self.snapshot = candidate
        self.ray.push(self.snapshot, nodes)
        unplaced = {n: frozenset(ipaddress.ip_address(i) for i in st.get("unplaced", ())) for n, st in statuses.items()}
        judged_on = (self.snapshot.version, tuple(sorted((n, tuple(sorted(map(str, u)))) for n, u in unplaced.items() if u)))
        if judged_on != self._unannounced_on:
            writes, unannounced = notices.unannounced_events(self.snapshot, told=self._unannounced, no_interface=unplaced)
            failed = {ref.key for ref in self._apply(writes)}  # told again next round
            self._unannounced = {k: m for k, m in unannounced.items() if k not in failed}
            self._unannounced_on = None if failed else judged_on

        announcers = self._announcers_from(statuses, views)
        failed = self._apply(rc.announcement_writes(views, announcers=announcers, previous=self._announcers))
        self._announcers = rc.announcers_written(announcers, previous=self._announcers, failed=failed)
        ready = len(set(self.ray.speaker_names()) & set(nodes))
        self._apply(
            rc.metallb_condition_writes(
                self.world, metallb, speakers_wanted=len(nodes), speakers_ready=ready, problems=len(config.problems),
                now=now, source_errors=source_errors,
            )
        )

    # --- steps ---------------------------------------------------------------------------

    def _track_source_errors(self, now: datetime) -> tuple[rc.SourceError, ...]:
        """The desired-state errors that persist (see SOURCE_ERROR_GRACE_S); logs each once.

        A source without `errors()` (the in-memory ones) never has any.
        """
        errors_of = getattr(self.desired, "errors", None)
        current: Mapping[str, Exception] = errors_of() if callable(errors_of) else {}
        seen: dict[str, _SourceErrorSeen] = {}
        for kind, error in current.items():
            old = self._source_seen.get(kind)
            since, rounds = (old.since, old.rounds + 1) if old is not None else (now, 1)
            seen[kind] = _SourceErrorSeen(message=str(error), reason=_source_reason(error), since=since, rounds=rounds)
        self._source_seen = seen
        persistent = tuple(
            rc.SourceError(kind=kind, reason=s.reason, message=s.message)
            for kind, s in sorted(seen.items())
            if s.rounds >= SOURCE_ERROR_ROUNDS and (now - s.since).total_seconds() >= self.source_error_grace_s
        )
        before = {e.kind for e in self.source_errors}
        for error in persistent:
            if error.kind not in before:
                age_s = (now - seen[error.kind].since).total_seconds()
                log.error("cannot read %s for %.0f s (%s): %s", error.kind, age_s, error.reason, error.message)
        for kind in sorted(before - {e.kind for e in persistent}):
            log.info("reading %s works again", kind)
        self.source_errors = persistent
        return persistent

    def _report_unsynced(self, source_errors: tuple[rc.SourceError, ...], now: datetime) -> None:
        """Degraded on the MetalLB resource while desired state cannot be read at all.

        Re-asserted when the errors change and every grace period (a write that failed, e.g.
        because the resource does not exist yet, is tried again; an unchanged one costs a read).
        """
        if not source_errors or self.world.get(Ref("MetalLB", self.operator_namespace, rc.HONOURED_NAME)):
            self._unsynced_report = None
            return
        last = self._unsynced_report
        if last is not None and last[0] == source_errors and (now - last[1]).total_seconds() < self.source_error_grace_s:
            return
        self._apply(rc.unsynced_metallb_writes(operator_namespace=self.operator_namespace,
                                               source_errors=source_errors, now=now))
        self._unsynced_report = (source_errors, now)

    def _keep_speaker_group(self, metallb: MetalLB | None) -> None:
        if self.speaker_group is None:
            return
        shape = speaker_group_shape((obj for _, obj in self.world.of_kind("Node")), metallb)
        error = self.speaker_group.keep(shape)  # logs it; counted here like a failed write
        if error is not None:
            self.counters.write_failures += 1
            self.counters.last_error = f"speaker group: {error}"

    def _allocate(
        self, *, pools: Mapping[str, Pool], requests: Mapping[str, ServiceRequest], views: Mapping[str, rc.ServiceView]
    ) -> dict[str, Outcome]:
        try:
            return self.ray.call_allocator("sync", pools=pools, requests=requests)
        except NotRestored:
            assignments = rc.recorded_assignments(views, requests=requests)
            moved = self.ray.call_allocator("restore", pools=pools, assignments=assignments)
            self.counters.restores += 1
            if moved:
                log.warning("after restore these services need new IPs: %s", ", ".join(moved))
            return self.ray.call_allocator("sync", pools=pools, requests=requests)

    def _read_keys(self, now: datetime) -> KeySet:
        """The membership keys to start speakers with; the key is read again every REFRESH_S.
        Until a key was read once no speaker can start, so a failed first read fails the round."""
        due = self._key_read_at is None or (now - self._key_read_at).total_seconds() >= REFRESH_S
        if due:
            try:
                key = self.key_source.read()
            except Exception as exc:
                if self._key is None:
                    raise
                log.warning("cannot read the membership key (keeping the one held): %s", exc)
                self.counters.last_error = f"membership key: {exc}"
            else:
                if key != self._key:
                    if self._key is not None:
                        log.info("membership key changed to %s: rotating", fingerprint(key))
                        self._older_keys = (self._key, *self._older_keys)[:2]
                    self._key = key
                    self._keys = accept_first(key, previous=self._older_keys)
            self._key_read_at = now
        assert self._key is not None
        return self._keys or plan_keys(self._key, previous=self._older_keys, reports={})

    def _ensure_speakers(
        self, nodes: Mapping[str, NodeInfo], ray_nodes: Mapping[str, Any], *, keys: KeySet | None
    ) -> None:
        for name in nodes:
            assert keys is not None  # read whenever there are nodes
            self.ray.ensure_speaker(ray_nodes[name], keys=for_new_speaker(keys))
        for name in self.ray.speaker_names() - set(nodes):
            # The node left the selector (graceful handover) or died (its peers are told).
            alive = name in ray_nodes
            if not alive:
                self.ray.tell_node_dead(name, nodes)
            self.ray.remove_speaker(name, graceful=alive)
        self._speaker_nodes = dict(nodes)

    def _announcers_from(self, statuses: Mapping[str, Mapping[str, Any]], views: Mapping[str, rc.ServiceView]) -> dict[str, str]:
        by_ip: dict[str, str] = {}
        for node, status in sorted(statuses.items()):
            for ip in status.get("owned", ()):
                by_ip.setdefault(str(ip), node)
        out: dict[str, str] = {}
        for service in self.snapshot.services:
            for ip in service.ips:
                if str(ip) in by_ip and service.key in views:
                    out.setdefault(service.key, by_ip[str(ip)])
        return out

    def _tell_undeployed(self) -> None:
        views = self._service_views.read(self.world, load_balancer_class=None)  # parses only what changed
        writes = notices.not_deployed_events(views, operator_namespace=self.operator_namespace, told=self._undeployed_told)
        failed = self._apply(writes)
        self._undeployed_told |= {w.ref.key for w in writes if w.ref not in failed}

    def _teardown(self) -> None:
        self._speaker_nodes = {}  # status lists no speaker that was removed
        if not self.deployed and not self.ray.speaker_names():
            return
        for name in sorted(self.ray.speaker_names()):
            self.ray.remove_speaker(name, graceful=True)
        self.ray.remove_allocator()
        self.deployed = False
        self.snapshot = EMPTY
        failed = self._apply(rc.announcement_writes({}, announcers={}, previous=self._announcers))
        self._announcers = rc.announcers_written({}, previous=self._announcers, failed=failed)

    def _apply(self, writes: Sequence[rc.Write]) -> frozenset[Ref]:
        """Execute writes: in order per object, different objects in parallel (up to
        write_concurrency). Outcomes are booked here, on the loop's thread, in write order.
        Returns the objects with a failed write, whose memory the caller must not advance."""
        groups: dict[Ref, list[rc.Write]] = {}
        for write in writes:
            groups.setdefault(write.ref, []).append(write)
        if self.write_concurrency <= 1 or len(groups) <= 1:
            done = [self._execute_all(group) for group in groups.values()]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.write_concurrency, thread_name_prefix="raylb-write")
            done = list(self._pool.map(self._execute_all, groups.values()))
        failed: set[Ref] = set()
        for results in done:
            for write, error in results:
                if error is not None:
                    failed.add(write.ref)
                    self.counters.write_failures += 1
                    self.counters.last_error = f"{type(write).__name__} {write.ref}: {error}"
                    log.warning("write failed: %s %s: %s", type(write).__name__, write.ref, error)
                    self.figures.update_errors += 1
                    continue
                self.counters.writes += 1
                self.figures.updates += 1
                self._time_to_ip(write)
                _reflect(self.world, write)
        return frozenset(failed)

    def _time_to_ip(self, write: rc.Write) -> None:
        """A Service's first IP, written: how long since it was created (raylb_service_ip_seconds)."""
        if not isinstance(write, rc.SetIngress) or not write.ips:
            return
        obj = self.world.get(write.ref) or {}
        if ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
            return  # not its first IP
        created = (obj.get("metadata") or {}).get("creationTimestamp")
        try:
            at = datetime.strptime(str(created), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return
        self.figures.service_ip_s = max(0.0, (self.clock() - at).total_seconds())
        self.figures.services_given_ip += 1

    def metrics(self) -> list[Metric]:
        return operator_families(self.figures)

    def _execute_all(self, writes: Sequence[rc.Write]) -> list[tuple[rc.Write, Exception | None]]:
        """Writes to one object, in order; one failure does not stop the ones after it."""
        out: list[tuple[rc.Write, Exception | None]] = []
        for write in writes:
            try:
                execute(write, self.results)
            except Exception as exc:  # noqa: BLE001 - one failed write must not stop the others
                out.append((write, exc))
            else:
                out.append((write, None))
        return out

    def close(self) -> None:
        """Stop the write threads (the loop has stopped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def status(self) -> dict[str, Any]:
        return {
            "deployed": self.deployed,
            "snapshot_version": self.snapshot.version,
            "services": len(self.snapshot.services),
            "speakers": sorted(self._speaker_nodes),
            "announcers": dict(self._announcers),
            "membership_key": fingerprint(self._key) if self._key is not None else None,
            # Services without an IP, and why (the last refusal, or raylb not deployed)
            "pending": {**{k: "raylb is not deployed (no MetalLB resource)" for k in self._undeployed_told},
                        **self._last_error},  # fmt: skip
            "counters": self.counters.__dict__.copy(),
            # desired state the operator cannot read: persistent (reported as Degraded) ...
            "source_errors": {e.kind: f"{e.reason}: {e.message}" for e in self.source_errors},
            # ... and failing for less than the grace period (e.g. right after an API restart)
            "source_errors_transient": sorted(set(self._source_seen) - {e.kind for e in self.source_errors}),
        }


class OperatorLoop:
    """Runs an OperatorCore on its own thread until stopped (the actor's body)."""

    def __init__(self, core: OperatorCore) -> None:
        self.core = core
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raylb-operator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            failures = self.core.counters.failures
            self.core.step(timeout_s=POLL_S)
            if self.core.counters.failures > failures:
                self._stop.wait(FAILURE_BACKOFF_S)  # a failing round backs off instead of spinning

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.core.close()



# --- the Ray shell --------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorSettings:
    """How the operator reaches desired state; passed again by Ray on every restart."""

    operator_namespace: str = rc.OPERATOR_NAMESPACE
    source: str = "memory"  # "memory" (the store actor) or "kube" (a Kubernetes API server)
    kubeconfig: str | None = None  # with "kube": a kubeconfig path; None = in-cluster or $KUBECONFIG
    # with "memory": a file holding the membership key ($RAYLB_MEMBERLIST_KEY_FILE of `raylb run`);
    # None: $RAYLB_MEMBERLIST_KEY of the operator's process, else a key kept in the store actor
    memberlist_key_file: str | None = None
    # /metrics ports (raylb.actors.metrics_http; 0 = off): the operator's and the allocator's on
    # the control node, each speaker's on its node address
    metrics_port: int = OPERATOR_PORT
    allocator_metrics_port: int = ALLOCATOR_PORT
    speaker_metrics_port: int = SPEAKER_PORT
    # With "kube" on KubeRay: "RAYCLUSTER/GROUP", the worker group the speakers run in, which the
    # operator sizes to the matching Nodes (raylb.speakergroup). None: nobody sizes it.
    speaker_group: str | None = None


def connect(settings: OperatorSettings) -> tuple[Desired, Results, KeySource]:
    from raylb.actors.memberlist_key import SecretKeySource, environment  # noqa: PLC0415

    namespace = settings.operator_namespace
    if settings.source == "memory":
        from raylb.actors.memory import MemoryDesired, MemoryResults, MemorySecrets, start_memory  # noqa: PLC0415
        from raylb.keyring import ENV_KEY_FILE  # noqa: PLC0415

        handle = start_memory()
        environ = dict(environment())
        if settings.memberlist_key_file:
            environ[ENV_KEY_FILE] = settings.memberlist_key_file
        keys = SecretKeySource(MemorySecrets(handle, namespace=namespace), namespace=namespace, environ=environ)
        return MemoryDesired(handle), MemoryResults(handle), keys
    if settings.source == "kube":
        from raylb.cluster.kube.client import Api, build_api_client  # noqa: PLC0415
        from raylb.cluster.kube.results import KubeResults  # noqa: PLC0415
        from raylb.cluster.kube.secrets import KubeSecrets  # noqa: PLC0415
        from raylb.cluster.kube.source import KubeDesired  # noqa: PLC0415

        client = build_api_client(settings.kubeconfig)
        return (
            KubeDesired(client, operator_namespace=namespace),
            KubeResults(client, operator_namespace=namespace),
            SecretKeySource(KubeSecrets(Api(client), namespace=namespace), namespace=namespace),
        )
    raise ValueError(f"unknown desired-state source {settings.source!r}; use 'memory' or 'kube'")


def connect_speaker_group(settings: OperatorSettings) -> SpeakerGroupKeeper | None:
    """The keeper of the speakers' KubeRay worker group, when the settings name one."""
    if settings.speaker_group is None:
        return None
    if settings.source != "kube":
        raise ValueError("a speaker group is sized from Kubernetes Nodes: it needs the 'kube' source")
    from raylb.cluster.kube.client import build_api_client  # noqa: PLC0415
    from raylb.cluster.kube.raycluster import KubeSpeakerGroup  # noqa: PLC0415

    port = KubeSpeakerGroup(build_api_client(settings.kubeconfig), namespace=settings.operator_namespace,
                            ref=parse_group_ref(settings.speaker_group))
    return SpeakerGroupKeeper(port)


class OperatorActor:
    """The Ray actor: builds the core from settings and runs its loop on a thread."""

    def __init__(self, settings: OperatorSettings) -> None:
        from raylb.actors.ray_ops import RayOps  # noqa: PLC0415

        logging.basicConfig(level=logging.INFO)
        self._settings = settings
        desired, results, key_source = connect(settings)
        ray_ops = RayOps(allocator_metrics_port=settings.allocator_metrics_port,
                         speaker_metrics_port=settings.speaker_metrics_port)  # fmt: skip
        self._core = OperatorCore(
            desired=desired, results=results, ray=ray_ops, key_source=key_source,
            operator_namespace=settings.operator_namespace,
            write_concurrency=KUBE_WRITE_CONCURRENCY if settings.source == "kube" else 1,
            speaker_group=connect_speaker_group(settings),
        )
        self._loop = OperatorLoop(self._core)
        self._loop.start()
        self._metrics = serve(self._core.metrics, host="", port=settings.metrics_port)

    def status(self) -> dict[str, Any]:
        return self._core.status()

    def ping(self) -> bool:
        return True

    def settings(self) -> dict[str, Any]:
        return asdict(self._settings)


def settings_conflict(running: Mapping[str, Any], wanted: OperatorSettings) -> str | None:
    """Why `wanted` cannot attach to an operator started with `running` (None: it can)."""
    differ = {k: (running.get(k), v) for k, v in asdict(wanted).items() if running.get(k) != v}
    if not differ:
        return None
    told = ", ".join(f"{k}: running {old!r}, asked {new!r}" for k, (old, new) in sorted(differ.items()))
    return f"raylb already runs on this Ray cluster with other settings ({told}); run `raylb uninstall` first to change them"


def start_operator(settings: OperatorSettings, *, namespace: str = "raylb") -> Any:
    """The operator actor: named, detached, restarted by Ray; attaches to a running one."""
    import ray  # noqa: PLC0415

    from raylb.actors.ray_ops import control_placement  # noqa: PLC0415

    return (
        ray.remote(OperatorActor)
        .options(
            name=OPERATOR_NAME,
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_concurrency=4,
            num_cpus=0,
            **control_placement(),
        )
        .remote(settings)
    )
