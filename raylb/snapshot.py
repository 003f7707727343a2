"""The versioned snapshot the operator publishes to every speaker.

Speakers never watch Kubernetes. The operator folds everything a speaker needs to elect
announcers (services with their IPs, where their ready endpoints are, the L2Advertisements
with their pools already resolved, and the nodes with their labels) into one immutable
`Snapshot` with a version number, and pushes the whole object (not one call per event).
A speaker that misses versions loses nothing: the newest snapshot is complete on its own.

Everything here is frozen and hashable, so a snapshot can be shared between threads, pickled
by Ray, compared, and fed to the pure election (`raylb.election`). `to_dict`/`from_dict` give
a plain JSON-able form (for logs, the CLI and tests); `from_dict` checks what it reads and
names the offending field in its error.

An advertisement applies to a service through the service's pool: `Advertisement.pools` holds
pool names already resolved from the L2Advertisement's `ipAddressPools` and
`ipAddressPoolSelectors` (see `resolve_advertisement_pools`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from raylb.pools import IPAddress
from raylb.selectors import LabelSelector, Requirement

CLUSTER = "Cluster"
LOCAL = "Local"
TRAFFIC_POLICIES = (CLUSTER, LOCAL)


@dataclass(frozen=True)
class NodeInfo:
    """A node as the speakers see it: a name, its labels (sorted pairs), and the node-network
    address its speaker receives heartbeats on (None until known)."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    address: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("node name must not be empty")
        object.__setattr__(self, "labels", tuple(sorted(self.labels)))

    @property
    def label_map(self) -> Mapping[str, str]:
        return MappingProxyType(dict(self.labels))


@dataclass(frozen=True)
class Advertisement:
    """An L2Advertisement after resolution.

    `node_selectors` empty means every node may announce; several selectors are OR-ed.
    `interfaces` empty means "announce on every suitable interface" (auto-select).
    """

    name: str
    pools: frozenset[str]
    node_selectors: tuple[LabelSelector, ...] = ()
    interfaces: tuple[str, ...] = ()

    def matches_node(self, labels: Mapping[str, str]) -> bool:
        return not self.node_selectors or any(s.matches(labels) for s in self.node_selectors)


@dataclass(frozen=True)
class ServiceState:
    """One LoadBalancer service with its allocated IPs and where it can be served.

    `endpoint_nodes`: nodes hosting at least one READY endpoint (for policy Local).
    `has_ready_endpoint`: any ready endpoint anywhere (for policy Cluster); forced True when
    `endpoint_nodes` is not empty, so the two can never contradict each other.
    """

    key: str  # "namespace/name"
    ips: tuple[IPAddress, ...]
    pool: str
    external_traffic_policy: str = CLUSTER
    endpoint_nodes: frozenset[str] = frozenset()
    has_ready_endpoint: bool = False

    def __post_init__(self) -> None:
        if self.external_traffic_policy not in TRAFFIC_POLICIES:
            raise ValueError(
                f"service {self.key}: externalTrafficPolicy={self.external_traffic_policy!r}, "
                f"expected one of {TRAFFIC_POLICIES}"
            )
        if self.endpoint_nodes and not self.has_ready_endpoint:
            object.__setattr__(self, "has_ready_endpoint", True)


@dataclass(frozen=True)
class Snapshot:
    """Everything speakers need, at one version. Version 0 is the empty snapshot."""

    version: int = 0
    services: tuple[ServiceState, ...] = ()
    advertisements: tuple[Advertisement, ...] = ()
    nodes: tuple[NodeInfo, ...] = ()
    _node_index: Mapping[str, NodeInfo] = field(init=False, repr=False, compare=False, hash=False)
    _ads_by_pool: Mapping[str, tuple[Advertisement, ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if self.version < 0:
            raise ValueError(f"snapshot version must be >= 0, got {self.version}")
        _unique("service", (s.key for s in self.services))
        _unique("node", (n.name for n in self.nodes))
        _unique("advertisement", (a.name for a in self.advertisements))
        object.__setattr__(self, "_node_index", MappingProxyType({n.name: n for n in self.nodes}))
        by_pool: dict[str, list[Advertisement]] = {}
        for ad in self.advertisements:
            for pool in ad.pools:
                by_pool.setdefault(pool, []).append(ad)
        object.__setattr__(
            self, "_ads_by_pool", MappingProxyType({p: tuple(a) for p, a in by_pool.items()})
        )

    def peer_addresses(self) -> dict[str, str | None]:
        """Node name -> heartbeat address, the argument of `Membership.set_peers`."""
        return {n.name: n.address for n in self.nodes}

    def node(self, name: str) -> NodeInfo | None:
        return self._node_index.get(name)

    @property
    def node_names(self) -> frozenset[str]:
        return frozenset(self._node_index)

    def advertisements_for(self, pool: str) -> tuple[Advertisement, ...]:
        """The advertisements covering `pool` (none: nobody announces its IPs)."""
        return self._ads_by_pool.get(pool, ())

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle only the fields; the indexes are rebuilt on load.
        return (Snapshot, (self.version, self.services, self.advertisements, self.nodes))


def _unique(kind: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"snapshot lists {kind} {name!r} twice")
        seen.add(name)


def resolve_advertisement_pools(
    *,
    pool_labels: Mapping[str, Mapping[str, str]],
    pool_names: Sequence[str] = (),
    pool_selectors: Sequence[LabelSelector] = (),
) -> frozenset[str]:
    """Which of the existing pools (name -> labels) an L2Advertisement covers.

    As in MetalLB: no names and no selectors means every pool; otherwise the union of the
    named pools (those that exist) and the pools matching any selector.
    """
    if not pool_names and not pool_selectors:
        return frozenset(pool_labels)
    named = {p for p in pool_names if p in pool_labels}
    selected = {p for p, labels in pool_labels.items() if any(s.matches(labels) for s in pool_selectors)}
    return frozenset(named | selected)


EMPTY = Snapshot()


# ----------------------------------------------------------------------------- plain dicts


def selector_to_dict(selector: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.requirements:
        out["matchExpressions"] = [
            {"key": r.key, "operator": r.operator, "values": sorted(r.values)} for r in selector.requirements
        ]
    return out


def selector_from_dict(data: Mapping[str, Any], *, where: str) -> LabelSelector:
    labels = _get(data, "matchLabels", dict, where, {})
    exprs = _get(data, "matchExpressions", list, where, [])
    reqs = []
    for i, e in enumerate(exprs):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(e, Mapping):
            raise ValueError(f"{at}: expected an object, got {e!r}")
        reqs.append(
            Requirement(
                key=_get(e, "key", str, at),
                operator=_get(e, "operator", str, at),
                values=frozenset(_get(e, "values", list, at, [])),
            )
        )
    return LabelSelector(
        match_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        requirements=tuple(reqs),
    )


def to_dict(snapshot: Snapshot) -> dict[str, Any]:
    """A JSON-able dict; `from_dict(to_dict(s)) == s`."""
    return {
        "version": snapshot.version,
        "services": [
            {
                "key": s.key,
                "ips": [str(ip) for ip in s.ips],
                "pool": s.pool,
                "externalTrafficPolicy": s.external_traffic_policy,
                "endpointNodes": sorted(s.endpoint_nodes),
                "hasReadyEndpoint": s.has_ready_endpoint,
            }
            for s in snapshot.services
        ],
        "advertisements": [
            {
                "name": a.name,
                "pools": sorted(a.pools),
                "nodeSelectors": [selector_to_dict(sel) for sel in a.node_selectors],
                "interfaces": list(a.interfaces),
            }
            for a in snapshot.advertisements
        ],
        "nodes": [
            {"name": n.name, "labels": dict(n.labels), **({"address": n.address} if n.address else {})}
            for n in snapshot.nodes
        ],
    }


def from_dict(data: Mapping[str, Any]) -> Snapshot:
    """Rebuild a snapshot; raise ValueError naming the field when the input is malformed."""
    if not isinstance(data, Mapping):
        raise ValueError(f"snapshot: expected an object, got {type(data).__name__}")
    version = _get(data, "version", int, "snapshot")
    services = []
    for i, s in enumerate(_get(data, "services", list, "snapshot", [])):
        at = f"snapshot.services[{i}]"
        if not isinstance(s, Mapping):
            raise ValueError(f"{at}: expected an object, got {s!r}")
        ips = []
        for j, text in enumerate(_get(s, "ips", list, at)):
            try:
                ips.append(ipaddress.ip_address(text))
            except ValueError:
                raise ValueError(f"{at}.ips[{j}]: {text!r} is not an IP address") from None
        services.append(
            ServiceState(
                key=_get(s, "key", str, at),
                ips=tuple(ips),
                pool=_get(s, "pool", str, at),
                external_traffic_policy=_get(s, "externalTrafficPolicy", str, at, CLUSTER),
                endpoint_nodes=frozenset(_get(s, "endpointNodes", list, at, [])),
                has_ready_endpoint=_get(s, "hasReadyEndpoint", bool, at, False),
            )
        )
    ads = []
    for i, a in enumerate(_get(data, "advertisements", list, "snapshot", [])):
        at = f"snapshot.advertisements[{i}]"
        if not isinstance(a, Mapping):
            raise ValueError(f"{at}: expected an object, got {a!r}")
        ads.append(
            Advertisement(
                name=_get(a, "name", str, at),
                pools=frozenset(_get(a, "pools", list, at, [])),
                node_selectors=tuple(
                    selector_from_dict(sel, where=f"{at}.nodeSelectors[{k}]")
                    for k, sel in enumerate(_get(a, "nodeSelectors", list, at, []))
                ),
                interfaces=tuple(_get(a, "interfaces", list, at, [])),
            )
        )
    nodes = []
    for i, n in enumerate(_get(data, "nodes", list, "snapshot", [])):
        at = f"snapshot.nodes[{i}]"
        if not isinstance(n, Mapping):
            raise ValueError(f"{at}: expected an object, got {n!r}")
        labels = _get(n, "labels", dict, at, {})
        nodes.append(
            NodeInfo(
                name=_get(n, "name", str, at),
                labels=tuple((str(k), str(v)) for k, v in labels.items()),
                address=_get(n, "address", str, at, None),
            )
        )
    return Snapshot(version=version, services=tuple(services), advertisements=tuple(ads), nodes=tuple(nodes))


_MISSING = object()


def _get(data: Mapping[str, Any], key: str, kind: type, where: str, default: Any = _MISSING) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object, got {data!r}")
    value = data.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise ValueError(f"{where}.{key}: missing")
        return default
    if value is None and default is None:
        return None  # an optional field written as null
    # bool is an int in Python; a version of True is a bug, not a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}.{key}={value!r}: expected {kind.__name__}")
    return value
