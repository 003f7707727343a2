"""What the operator decides, as pure functions of what it observes.

The operator actor (raylb.actors.operator) only moves data: it feeds `World` from the
desired-state stream, asks this module what the system should look like, calls the allocator,
and executes the `Write`s returned here. Everything that can be decided without I/O is decided
here, so it is tested without Ray or Kubernetes:

- `read_system`: which MetalLB resource is honoured, and a condition for every other one;
- `read_config`: pool and advertisement resources -> checked `Config` (parse errors included);
- `read_services`: managed LoadBalancer Services -> `ServiceView` (request, recorded IPs,
  ready endpoints by node); `ServiceViews` does the same, re-parsing only what changed;
- `service_writes`: the writes that make a Service's status, annotation and events match its
  allocation outcome - nothing when they already match, so a steady state writes nothing;
- `pool_condition_writes` / `metallb_condition_writes`: status conditions, only on change;
  Degraded names desired state the operator persistently cannot read (`SourceError`);
- `speaker_nodes`: on which Ray nodes a speaker must run;
- `build_snapshot`: the versioned snapshot the speakers elect from.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from raylb import annotations
from raylb.config import Config, build_config
from raylb.desired import Ref, WireObject, World
from raylb.errors import AllocationError, ConfigError, Problem
from raylb.ipam.allocator import Assignment
from raylb.ipam.request import ServiceRequest
from raylb.models import AddressPool, IPAddressPool, L2Advertisement, MetalLB, parse, select_honoured
from raylb.models.kube import EndpointSlice, Node
from raylb.models.metallb import HONOURED_NAME
from raylb.models.service import Service
from raylb.pools import IPAddress
from raylb.services import deprecated_annotations, is_managed, to_request
from raylb.snapshot import Advertisement, NodeInfo, ServiceState, Snapshot

OPERATOR_NAMESPACE = "metallb-system"
POOL_ANNOTATION = annotations.current(annotations.IP_ALLOCATED_FROM_POOL)

# Condition types on the MetalLB resource, as the MetalLB Operator reports them.
AVAILABLE, PROGRESSING, DEGRADED = "Available", "Progressing", "Degraded"
# Condition type on pool and advertisement resources: the resource is usable as written.
VALID = "Valid"


# --- writes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetIngress:
    ref: Ref
    ips: tuple[str, ...]
    annotations: tuple[tuple[str, str | None], ...] = ()  # written in the same request


@dataclass(frozen=True)
class SetAnnotations:
    ref: Ref
    annotations: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class RecordEvent:
    ref: Ref
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


@dataclass(frozen=True)
class PutL2Status:
    ref: Ref  # the Service
    node: str
    interfaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteL2Status:
    ref: Ref  # the Service


@dataclass(frozen=True)
class SetConditions:
    ref: Ref
    conditions: tuple[tuple[tuple[str, str], ...], ...]  # each condition as sorted items


Write = SetIngress | SetAnnotations | RecordEvent | PutL2Status | DeleteL2Status | SetConditions


def condition(*, type: str, status: bool, reason: str, message: str, now: datetime) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted(
            {
                "type": type,
                "status": "True" if status else "False",
                "reason": reason,
                "message": message,
                "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }.items()
        )
    )


def _same_conditions(observed: WireObject, wanted: Sequence[tuple[tuple[str, str], ...]]) -> bool:
    """Equal ignoring lastTransitionTime, so re-asserting a condition writes nothing."""

    def strip(items: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, str(v)) for k, v in items if k in ("type", "status", "reason", "message")))

    have = [strip(c.items()) for c in (observed.get("status") or {}).get("conditions") or []]
    return sorted(have) == sorted(strip(c) for c in wanted)


def _conditions_write(ref: Ref, observed: WireObject, wanted: Sequence[tuple[tuple[str, str], ...]]) -> list[Write]:
    return [] if _same_conditions(observed, wanted) else [SetConditions(ref, tuple(wanted))]


# --- the system: which MetalLB is honoured --------------------------------------------------


@dataclass(frozen=True)
class SystemView:
    metallb: MetalLB | None
    writes: tuple[Write, ...] = ()  # conditions for ignored or invalid MetalLB resources


def read_system(world: World, *, operator_namespace: str, now: datetime) -> SystemView:
    parsed: list[MetalLB] = []
    writes: list[Write] = []
    for ref, obj in world.of_kind("MetalLB"):
        try:
            model = parse({**obj, "kind": "MetalLB"})
        except ConfigError as exc:
            message = "; ".join(str(p) for p in exc.problems)
            wanted = [condition(type=DEGRADED, status=True, reason="InvalidSpec", message=message, now=now)]
            writes += _conditions_write(ref, obj, wanted)
            continue
        assert isinstance(model, MetalLB)
        parsed.append(model)
    honoured = select_honoured(parsed, operator_namespace=operator_namespace, now=now)
    for model, cond in honoured.ignored:
        ref = Ref("MetalLB", model.metadata.namespace or "", model.metadata.name)
        wanted = [condition(type=cond.type, status=True, reason=cond.reason, message=cond.message, now=now)]
        writes += _conditions_write(ref, world.get(ref) or {}, wanted)
    return SystemView(metallb=honoured.metallb, writes=tuple(writes))


@dataclass(frozen=True)
class SourceError:
    """A kind of desired state the operator cannot read (persistently): why, in the user's words."""

    kind: str
    reason: str  # API_ACCESS_DENIED or API_UNAVAILABLE
    message: str  # names the verb and resource, e.g. "... cannot list resource "nodes" ..."


# Degraded reasons for desired state that cannot be read.
API_ACCESS_DENIED = "APIAccessDenied"  # RBAC forbids a verb on a kind the operator must read
API_UNAVAILABLE = "APIUnavailable"  # anything else: unreachable, server errors


def _degraded(*, problems: int, source_errors: Sequence[SourceError], now: datetime) -> tuple[tuple[str, str], ...]:
    """Degraded: unreadable desired state first (nothing can be trusted without it), then
    pool/advertisement problems."""
    parts = [f"cannot read {e.kind}: {e.message}" for e in sorted(source_errors, key=lambda e: e.kind)]
    if problems:
        parts.append(f"{problems} pool or advertisement problem(s); see their status")
    if source_errors:
        denied = any(e.reason == API_ACCESS_DENIED for e in source_errors)
        reason = API_ACCESS_DENIED if denied else API_UNAVAILABLE
    else:
        reason = "ConfigurationProblems" if problems else "NoProblems"
    return condition(type=DEGRADED, status=bool(parts), reason=reason, message="; ".join(parts), now=now)


def metallb_condition_writes(
    world: World,
    metallb: MetalLB,
    *,
    speakers_wanted: int,
    speakers_ready: int,
    problems: int,
    now: datetime,
    source_errors: Sequence[SourceError] = (),
) -> list[Write]:
    """Available / Progressing / Degraded, as the MetalLB Operator sets them."""
    ref = Ref("MetalLB", metallb.metadata.namespace or "", metallb.metadata.name)
    ready = speakers_ready >= speakers_wanted
    wanted = [
        condition(
            type=AVAILABLE,
            status=ready,
            reason="SpeakersReady" if ready else "SpeakersStarting",
            message=f"{speakers_ready}/{speakers_wanted} speakers running",
            now=now,
        ),
        condition(
            type=PROGRESSING,
            status=not ready,
            reason="Deploying" if not ready else "Deployed",
            message="waiting for speakers" if not ready else "all speakers running",
            now=now,
        ),
        _degraded(problems=problems, source_errors=source_errors, now=now),
    ]
    return _conditions_write(ref, world.get(ref) or {}, wanted)


def unsynced_metallb_writes(
    *, operator_namespace: str, source_errors: Sequence[SourceError], now: datetime
) -> list[Write]:
    """Conditions for the MetalLB resource while desired state cannot be read at all.

    A source that has not listed every kind hands the operator nothing, so it cannot know
    whether a MetalLB resource exists; it reports on the one name it would honour.
    """
    if not source_errors:
        return []
    ref = Ref("MetalLB", operator_namespace, HONOURED_NAME)
    waiting = "desired state not fully read: " + ", ".join(sorted(e.kind for e in source_errors))
    wanted = (
        condition(type=AVAILABLE, status=False, reason="DesiredStateUnreadable", message=waiting, now=now),
        condition(type=PROGRESSING, status=True, reason="WaitingForAPI", message=waiting, now=now),
        _degraded(problems=0, source_errors=source_errors, now=now),
    )
    return [SetConditions(ref, wanted)]


# --- pools and advertisements ---------------------------------------------------------------


def read_config(world: World, *, operator_namespace: str) -> Config:
    """Parse the pool and advertisement resources of the operator namespace and check them."""
    found: dict[str, list] = {"AddressPool": [], "IPAddressPool": [], "L2Advertisement": []}
    problems: list[Problem] = []
    for kind, models in found.items():
        for ref, obj in world.of_kind(kind):
            if ref.namespace != operator_namespace:
                continue
            try:
                models.append(parse({**obj, "kind": kind}))
            except ConfigError as exc:
                problems.extend(exc.problems)
    config = build_config(
        address_pools=[m for m in found["AddressPool"] if isinstance(m, AddressPool)],
        ip_address_pools=[m for m in found["IPAddressPool"] if isinstance(m, IPAddressPool)],
        l2_advertisements=[m for m in found["L2Advertisement"] if isinstance(m, L2Advertisement)],
    )
    return replace(config, problems=(*problems, *config.problems)) if problems else config


def pool_condition_writes(world: World, config: Config, *, operator_namespace: str, now: datetime) -> list[Write]:
    """A Valid condition on every pool and advertisement: True, or False naming each problem."""
    writes: list[Write] = []
    for kind in ("AddressPool", "IPAddressPool", "L2Advertisement"):
        for ref, obj in world.of_kind(kind):
            if ref.namespace != operator_namespace:
                continue
            problems = config.problems_of(kind, ref.name)
            message = "; ".join(f"{p.field}={p.value!r}: {p.message}" for p in problems)
            wanted = [
                condition(
                    type=VALID,
                    status=not problems,
                    reason="InvalidConfiguration" if problems else "Valid",
                    message=message,
                    now=now,
                )
            ]
            writes += _conditions_write(ref, obj, wanted)
    return writes


def problem_ref(problem: Problem, operator_namespace: str) -> Ref:
    """The resource a configuration problem is reported on."""
    return Ref(problem.kind, operator_namespace, problem.name)


def problem_events(config: Config, *, operator_namespace: str, previous: frozenset[Problem]) -> list[Write]:
    """A Warning event for each problem that is new since the last reconcile."""
    return [
        RecordEvent(problem_ref(p, operator_namespace), "Warning", "InvalidConfiguration", str(p))
        for p in config.problems
        if p not in previous
    ]


# --- services -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceView:
    """One managed LoadBalancer Service, as the operator needs it."""

    ref: Ref
    obj: WireObject
    request: ServiceRequest | None  # None when `error` says why it cannot be parsed
    error: AllocationError | None
    recorded_ips: tuple[IPAddress, ...]  # status.loadBalancer.ingress, as written before
    recorded_pool: str | None  # the ip-allocated-from-pool annotation
    deprecated: tuple[str, ...]  # metallb.universe.tf/ annotations in use
    external_traffic_policy: str
    endpoint_nodes: frozenset[str]
    has_ready_endpoint: bool

    @property
    def key(self) -> str:
        return self.ref.key


def _ips(texts: Iterable[str]) -> tuple[IPAddress, ...]:
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_address(text))
        except ValueError:
            continue  # someone else's garbage in our status is not ours to keep
    return tuple(out)


def _slice_readiness(obj: WireObject) -> tuple[str, frozenset[str], bool] | None:
    """(service key, nodes with a ready endpoint, any endpoint ready) of one EndpointSlice."""
    try:
        eps = EndpointSlice.model_validate(obj)
    except ValueError:
        return None
    key = eps.service_key
    if key is None:
        return None
    return key, frozenset(eps.ready_nodes()), any(e.is_ready for e in eps.endpoints)


def _service_view(
    ref: Ref, obj: WireObject, *, namespace_labels: Mapping[str, str], ready_nodes: frozenset[str] | None,
    load_balancer_class: str | None,
) -> ServiceView | None:
    """The view of one Service; None when raylb does not manage it (or it does not parse)."""
    try:
        service = Service.model_validate(obj)
    except ValueError:
        return None
    if not is_managed(service, load_balancer_class=load_balancer_class):
        return None
    request: ServiceRequest | None = None
    error: AllocationError | None = None
    try:
        request = to_request(service, namespace_labels=namespace_labels)
    except AllocationError as exc:
        error = exc
    return ServiceView(
        ref=ref,
        obj=obj,
        request=request,
        error=error,
        recorded_ips=_ips(service.ingress_ips),
        recorded_pool=service.metadata.annotations.get(POOL_ANNOTATION),
        deprecated=deprecated_annotations(service),
        external_traffic_policy=service.spec.external_traffic_policy or "Cluster",
        endpoint_nodes=ready_nodes or frozenset(),
        has_ready_endpoint=ready_nodes is not None,
    )


class ServiceViews:
    """`read_services` that remembers: a Service (or EndpointSlice) is parsed again only when it
    changed.

    The world holds a new object after every change (from the watch, or the operator's own
    reflected write), so the identity of the wire object says whether it changed; a Service's
    view is reused while its object, its namespace's labels, its ready endpoints and the
    configured class are all the same. With 1 000 Services a round that saw a few changes then
    costs a few parses instead of 1 000, and the operator keeps pace with a burst of creations.
    Pure: no I/O, just memory of earlier answers.
    """

    def __init__(self) -> None:
        self._slices: dict[Ref, tuple[WireObject, tuple[str, frozenset[str], bool] | None]] = {}
        self._views: dict[Ref, tuple[tuple[Any, ...], ServiceView | None]] = {}

    def _ready_endpoints(self, world: World) -> dict[str, frozenset[str]]:
        """Service key -> nodes hosting a ready endpoint; an empty set: ready endpoints without a node."""
        slices: dict[Ref, tuple[WireObject, tuple[str, frozenset[str], bool] | None]] = {}
        by_service: dict[str, set[str]] = {}
        any_ready: set[str] = set()
        for ref, obj in world.of_kind("EndpointSlice"):
            cached = self._slices.get(ref)
            readiness = cached[1] if cached is not None and cached[0] is obj else _slice_readiness(obj)
            slices[ref] = (obj, readiness)
            if readiness is None:
                continue
            key, nodes, ready = readiness
            by_service.setdefault(key, set()).update(nodes)
            if ready:
                any_ready.add(key)
        self._slices = slices
        return {k: frozenset(by_service.get(k, ())) for k in any_ready}

    def read(self, world: World, *, load_balancer_class: str | None) -> dict[str, ServiceView]:
        """Every managed LoadBalancer Service by key, parsed; bad annotations become `error`."""
        namespace_labels = {
            ref.name: dict(((obj.get("metadata") or {}).get("labels") or {}))
            for ref, obj in world.of_kind("Namespace")
        }
        ready = self._ready_endpoints(world)
        seen: dict[Ref, tuple[tuple[Any, ...], ServiceView | None]] = {}
        views: dict[str, ServiceView] = {}
        for ref, obj in world.of_kind("Service"):
            labels = namespace_labels.get(ref.namespace, {})
            ready_nodes = ready.get(ref.key)
            inputs = (obj, labels, ready_nodes, load_balancer_class)
            cached = self._views.get(ref)
            if cached is not None and cached[0][0] is obj and cached[0][1:] == inputs[1:]:
                view = cached[1]
            else:
                view = _service_view(ref, obj, namespace_labels=labels, ready_nodes=ready_nodes,
                                     load_balancer_class=load_balancer_class)
            seen[ref] = (inputs, view)
            if view is not None:
                views[ref.key] = view
        self._views = seen
        return views


def read_services(world: World, *, load_balancer_class: str | None) -> dict[str, ServiceView]:
    """Every managed LoadBalancer Service by key, parsed; bad annotations become `error`."""
    return ServiceViews().read(world, load_balancer_class=load_balancer_class)


def stale_services(world: World, managed: Mapping[str, ServiceView]) -> list[Write]:
    """Services raylb once served that are no longer managed: clear what raylb wrote.

    Known by the pool annotation raylb wrote, or, as MetalLB does, by being no LoadBalancer
    at all while status still shows an ingress IP (an update that changed the type and dropped
    our annotation, e.g. `kubectl replace`: the API server keeps the old status, and the IP
    is already free for another Service).
    """
    writes: list[Write] = []
    for ref, obj in world.of_kind("Service"):
        if ref.key in managed:
            continue
        notes = (obj.get("metadata") or {}).get("annotations") or {}
        has_ingress = bool(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"))
        not_load_balancer = (obj.get("spec") or {}).get("type", "ClusterIP") != "LoadBalancer"
        if POOL_ANNOTATION not in notes and not (has_ingress and not_load_balancer):
            continue
        unpool = ((POOL_ANNOTATION, None),) if POOL_ANNOTATION in notes else ()
        if has_ingress:
            writes.append(SetIngress(ref, (), annotations=unpool))
            ips = [i.get("ip") or i.get("hostname") for i in obj["status"]["loadBalancer"]["ingress"] if isinstance(i, dict)]
            kind = (obj.get("spec") or {}).get("type", "ClusterIP")
            why = f"its type is now {kind}" if not_load_balancer else "raylb no longer serves it (loadBalancerClass)"
            writes.append(RecordEvent(ref, "Normal", "IPReleased", f"released IP {ips}: {why}"))
        else:
            writes.append(SetAnnotations(ref, unpool))
        writes.append(DeleteL2Status(ref))
    return writes


def recorded_assignments(
    views: Mapping[str, ServiceView], *, requests: Mapping[str, ServiceRequest]
) -> list[Assignment]:
    """What Kubernetes says each service holds: the allocator restores from this after a restart."""
    return [
        Assignment(service=key, ips=v.recorded_ips, pool=v.recorded_pool or "", request=requests[key])
        for key, v in views.items()
        if v.recorded_ips and key in requests
    ]


def valid_requests(views: Mapping[str, ServiceView], *, previous: Mapping[str, ServiceRequest]) -> dict[str, ServiceRequest]:
    """The last request of each Service that could be read: its current one, else the one before
    an edit made it unreadable."""
    return {
        key: v.request if v.request is not None else previous[key]
        for key, v in views.items()
        if v.request is not None or key in previous
    }


def allocation_requests(
    views: Mapping[str, ServiceView], *, valid: Mapping[str, ServiceRequest]
) -> dict[str, ServiceRequest]:
    """What the allocator is asked for. A Service whose request became unreadable (a bad edit)
    keeps the address it holds under its last readable request, as MetalLB keeps it: the edit is
    reported, the traffic is not cut. Without an address it has nothing to keep."""
    return {
        key: v.request if v.request is not None else valid[key]
        for key, v in views.items()
        if v.request is not None or (v.recorded_ips and key in valid)
    }


Outcome = Assignment | AllocationError


def service_writes(
    view: ServiceView, outcome: Outcome | None, *, last_error: str | None, holding: bool = False
) -> list[Write]:
    """Make status, annotation and events of one Service match its allocation outcome; a Service
    `holding` its address under its last readable request (see allocation_requests) only hears
    why its request cannot be read."""
    writes: list[Write] = []
    if holding and view.error is not None:
        if view.error.message != last_error:
            writes.append(RecordEvent(view.ref, "Warning", "AllocationFailed", f"{view.error.reason}: {view.error.message}"))
        return writes
    if isinstance(outcome, Assignment):
        wanted = tuple(str(ip) for ip in outcome.ips)
        pool = ((POOL_ANNOTATION, outcome.pool),) if view.recorded_pool != outcome.pool else ()
        if tuple(str(ip) for ip in view.recorded_ips) != wanted:
            writes.append(SetIngress(view.ref, wanted, annotations=pool))
            message = f"Assigned IP {list(wanted)} from pool {outcome.pool}"
            writes.append(RecordEvent(view.ref, "Normal", "IPAllocated", message))
        elif pool:
            writes.append(SetAnnotations(view.ref, pool))
    elif isinstance(outcome, AllocationError):
        unpool = ((POOL_ANNOTATION, None),) if view.recorded_pool is not None else ()
        if view.recorded_ips:
            writes.append(SetIngress(view.ref, (), annotations=unpool))
        elif unpool:
            writes.append(SetAnnotations(view.ref, unpool))
        if outcome.message != last_error:
            writes.append(RecordEvent(view.ref, "Warning", "AllocationFailed", f"{outcome.reason}: {outcome.message}"))
    return writes


def deprecation_events(view: ServiceView) -> list[Write]:
    if not view.deprecated:
        return []
    names = ", ".join(view.deprecated)
    message = f"annotations {names} use the deprecated prefix metallb.universe.tf/; use metallb.io/ instead"
    return [RecordEvent(view.ref, "Warning", "DeprecatedAnnotation", message)]


def announcement_writes(
    views: Mapping[str, ServiceView], *, announcers: Mapping[str, str], previous: Mapping[str, str]
) -> list[Write]:
    """ServiceL2Status and a nodeAssigned event when a service's announcing node changes."""
    writes: list[Write] = []
    for key, node in sorted(announcers.items()):
        view = views.get(key)
        if view is None or previous.get(key) == node:
            continue
        writes.append(PutL2Status(view.ref, node))
        writes.append(RecordEvent(view.ref, "Normal", "nodeAssigned", f"announcing from node {node!r} with protocol layer2"))
    for key in sorted(set(previous) - set(announcers)):
        namespace, _, name = key.partition("/")
        writes.append(DeleteL2Status(Ref("Service", namespace, name)))  # also for a deleted Service
    return writes


def announcers_written(
    announcers: Mapping[str, str], *, previous: Mapping[str, str], failed: frozenset[Ref]
) -> dict[str, str]:
    """What the operator may remember as announced after `announcement_writes` ran: the new
    announcer where its writes landed, the previous one where they failed (so the next round
    writes again, also a failed removal)."""
    out: dict[str, str] = {}
    for key in sorted(set(announcers) | set(previous)):
        namespace, _, name = key.partition("/")
        node = previous.get(key) if Ref("Service", namespace, name) in failed else announcers.get(key)
        if node is not None:
            out[key] = node
    return out


# --- speakers and the snapshot --------------------------------------------------------------


def speaker_nodes(world: World, metallb: MetalLB, *, ray_nodes: Mapping[str, str]) -> dict[str, NodeInfo]:
    """Ray nodes (name -> address) that must run a speaker, with their Kubernetes labels.

    A Ray node is matched to the Kubernetes Node of the same name. With a nodeSelector on the
    MetalLB resource only nodes whose labels match it get a speaker (a Ray node without a
    Kubernetes Node matches only an empty selector).
    """
    selector = metallb.spec.node_selector or {}
    labels_by_name: dict[str, dict[str, str]] = {}
    for ref, obj in world.of_kind("Node"):
        try:
            labels_by_name[ref.name] = dict(Node.model_validate(obj).metadata.labels)
        except ValueError:
            continue
    out: dict[str, NodeInfo] = {}
    for name, address in sorted(ray_nodes.items()):
        labels = labels_by_name.get(name)
        if selector and (labels is None or any(labels.get(k) != v for k, v in selector.items())):
            continue
        out[name] = NodeInfo(name=name, labels=tuple((labels or {}).items()), address=address)
    return out


def build_snapshot(
    *,
    version: int,
    config: Config,
    views: Mapping[str, ServiceView],
    assignments: Mapping[str, Assignment],
    nodes: Iterable[NodeInfo],
) -> Snapshot:
    services = tuple(
        ServiceState(
            key=key,
            ips=assignment.ips,
            pool=assignment.pool,
            external_traffic_policy=views[key].external_traffic_policy,
            endpoint_nodes=views[key].endpoint_nodes,
            has_ready_endpoint=views[key].has_ready_endpoint,
        )
        for key, assignment in sorted(assignments.items())
        if key in views and assignment.ips
    )
    advertisements = tuple(
        Advertisement(
            # a legacy AddressPool's implied advertisement may share its name with an L2Advertisement
            name=a.name if a.kind == "L2Advertisement" else f"{a.kind}/{a.name}",
            pools=a.pools,
            node_selectors=a.node_selectors,
            interfaces=a.interfaces,
        )
        for a in config.advertisements
    )
    return Snapshot(version=version, services=services, advertisements=advertisements, nodes=tuple(nodes))


def same_content(a: Snapshot, b: Snapshot) -> bool:
    """Equal but for the version: no need to publish a new one."""
    return (a.services, a.advertisements, a.nodes) == (b.services, b.advertisements, b.nodes)
