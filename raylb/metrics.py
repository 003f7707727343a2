"""Prometheus metrics: MetalLB's names, labels and types exactly, and raylb's own.

Operators of MetalLB watch it through dashboards and alerts written against MetalLB's metric
names, so raylb exports the same families with the same labels and types (`METALLB`, taken
from MetalLB v0.16's source: internal/allocator/stats.go, internal/layer2/stats.go,
speaker/main.go, internal/k8s/controllers/stats.go). Its own figures are under `raylb_`.

Each process exports the numbers it owns, built fresh at scrape time from that process's state
by the pure functions here (`allocator_families`, `speaker_families`, `operator_families`):
nothing is counted twice and nothing goes stale.

Exposition is Prometheus's text format 0.0.4, written by `expose` rather than by
prometheus_client's `generate_latest`, for two reasons that matter to existing dashboards:
- prometheus_client appends `_total` to every counter; MetalLB's layer-2 counters
  (`metallb_layer2_requests_received`, ...) have no such suffix, and a dashboard querying that
  name would find nothing;
- prometheus_client writes values as floats; pool sizes are written here as exact integers
  (a /64 has 18 446 744 073 709 551 616 addresses; MetalLB's int64 counters overflow on it).
The families themselves are prometheus_client `Metric` objects, so its parser reads them back
(tests/unit/test_metrics.py does).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from raylb.peerstats import PeerStats

__all__ = ["Metric", "METALLB", "RAYLB", "SPECS", "expose", "allocator_families", "speaker_families", "operator_families"]

GAUGE, COUNTER = "gauge", "counter"


@dataclass(frozen=True)
class Spec:
    """One metric family as MetalLB (or raylb) declares it."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


def _spec(name: str, type: str, labels: tuple[str, ...], help: str) -> tuple[str, Spec]:
    return name, Spec(name, type, labels, help)


# MetalLB v0.16, verbatim (names, types, label names, help).
METALLB: dict[str, Spec] = dict(
    [
        _spec("metallb_allocator_addresses_total", GAUGE, ("pool",), "Number of usable IP addresses, per pool"),
        _spec("metallb_allocator_ipv4_addresses_total", GAUGE, ("pool",), "Number of usable IPV4 addresses, per pool"),
        _spec("metallb_allocator_ipv6_addresses_total", GAUGE, ("pool",), "Number of usable IPV6 addresses, per pool"),
        _spec("metallb_allocator_addresses_in_use_total", GAUGE, ("pool",), "Number of IP addresses in use, per pool"),
        _spec("metallb_allocator_ipv4_addresses_in_use_total", GAUGE, ("pool",), "Number of IPV4 addresses in use, per pool"),
        _spec("metallb_allocator_ipv6_addresses_in_use_total", GAUGE, ("pool",), "Number of IPV6 addresses in use, per pool"),
        _spec("metallb_allocator_services_allocated_total", GAUGE, ("pool",), "Number of services allocated, per pool"),
        _spec("metallb_speaker_announced", GAUGE, ("service", "protocol", "node", "ip"),
              "Services being announced from this node. This is desired state, it does not guarantee that the routing protocols have converged."),  # fmt: skip
        _spec("metallb_layer2_requests_received", COUNTER, ("ip",), "Number of layer2 requests received for owned IPs"),
        _spec("metallb_layer2_responses_sent", COUNTER, ("ip",), "Number of layer2 responses sent for owned IPs in response to requests"),
        _spec("metallb_layer2_gratuitous_sent", COUNTER, ("ip",), "Number of gratuitous layer2 packets sent for owned IPs as a result of failovers"),
        _spec("metallb_k8s_client_updates_total", COUNTER, (), "Number of k8s object updates that have been processed."),
        _spec("metallb_k8s_client_update_errors_total", COUNTER, (), "Number of k8s object updates that failed for some reason."),
        _spec("metallb_k8s_client_config_loaded_bool", GAUGE, (), "1 if the MetalLB configuration was successfully loaded at least once."),
        _spec("metallb_k8s_client_config_stale_bool", GAUGE, (), "1 if running on a stale configuration, because the latest config failed to load."),
    ]
)

RAYLB: dict[str, Spec] = dict(
    [
        _spec("raylb_peer_failure_detection_seconds", GAUGE, ("node", "peer"),
              "Last time from a peer's last heartbeat to this speaker declaring it dead"),  # fmt: skip
        _spec("raylb_peer_handovers_total", COUNTER, ("node", "peer"), "IPs this speaker took over from a peer that died or left"),
        _spec("raylb_heartbeats_lost_total", COUNTER, ("node", "peer"), "Heartbeats from a peer that never arrived (gaps in its sequence)"),
        _spec("raylb_heartbeat_delay_seconds", GAUGE, ("node", "peer"), "Largest gap between two heartbeats of a peer since the last scrape"),
        _spec("raylb_snapshot_version_lag", GAUGE, ("node",), "Versions this speaker's snapshot is behind the newest one a peer holds"),
        _spec("raylb_responder_drops_total", COUNTER, ("node", "reason"), "Frames the ARP/NDP responder dropped, by reason"),
        _spec("raylb_reconcile_round_seconds", GAUGE, (), "Duration of the operator's last reconcile round"),
        _spec("raylb_reconcile_queue_depth", GAUGE, (), "Changes of desired state taken in the last round"),
        _spec("raylb_service_ip_seconds", GAUGE, (), "Time from creation to IP written, of the last Service given its first IP"),
        _spec("raylb_services_given_ip_total", COUNTER, (), "Services given their first IP by this operator"),
    ]
)

SPECS: dict[str, Spec] = {**METALLB, **RAYLB}


def family(name: str, samples: Iterable[tuple[Mapping[str, str], int | float]]) -> Metric:
    """A family of `SPECS[name]` with its samples (label values by label name, value)."""
    spec = SPECS[name]
    metric = Metric(name, spec.help, spec.type)
    for labels, value in samples:
        if set(labels) != set(spec.labels):
            raise ValueError(f"{name}: labels {sorted(labels)} given, {sorted(spec.labels)} declared")
        metric.add_sample(name, dict(labels), value)
    return metric


# ------------------------------------------------------------------------------ per process


def allocator_families(stats: Mapping[str, Mapping[str, object]], services: Mapping[str, int]) -> list[Metric]:
    """The allocator's: pool sizes and use (`Allocator.stats` as dicts), Services per pool."""

    def per_pool(pick: str, family_key: str | None = None) -> list[tuple[dict[str, str], int]]:
        out = []
        for pool, s in sorted(stats.items()):
            source = s if family_key is None else s[family_key]
            out.append(({"pool": pool}, int(source[pick])))  # type: ignore[index]
        return out

    return [
        family("metallb_allocator_addresses_total", per_pool("total")),
        family("metallb_allocator_ipv4_addresses_total", per_pool("total", "ipv4")),
        family("metallb_allocator_ipv6_addresses_total", per_pool("total", "ipv6")),
        family("metallb_allocator_addresses_in_use_total", per_pool("in_use")),
        family("metallb_allocator_ipv4_addresses_in_use_total", per_pool("in_use", "ipv4")),
        family("metallb_allocator_ipv6_addresses_in_use_total", per_pool("in_use", "ipv6")),
        family("metallb_allocator_services_allocated_total",
               [({"pool": p}, services.get(p, 0)) for p in sorted(stats)]),  # fmt: skip
    ]


def speaker_families(
    *,
    node: str,
    announced: Mapping[str, Iterable[str]],
    responder: Mapping[str, Mapping[str, object]],
    peers: PeerStats,
    delays_s: Mapping[str, float],
    snapshot_lag: int,
) -> list[Metric]:
    """A speaker's: what it announces (IP -> service keys), its responder's counters (as
    `Responder.counters` gives them, keyed "ip@interface"), and what it saw of its peers."""
    per_ip: dict[str, Counter[str]] = {}
    drops: Counter[str] = Counter()
    for key, c in responder.items():
        ip = key.rpartition("@")[0]
        drops.update(c.get("drops") or {})  # type: ignore[arg-type]
        if ip == "*":  # frames not attributable to an IP: only their drops count
            continue
        total = per_ip.setdefault(ip, Counter())
        for what in ("requests", "replies", "gratuitous"):
            total[what] += int(c.get(what) or 0)  # type: ignore[call-overload]

    def by_peer(values: Mapping[str, float]) -> list[tuple[dict[str, str], float]]:
        return [({"node": node, "peer": p}, v) for p, v in sorted(values.items())]

    return [
        family("metallb_speaker_announced", [
            ({"service": svc, "protocol": "layer2", "node": node, "ip": ip}, 1)
            for ip, services in sorted(announced.items()) for svc in sorted(services)
        ]),  # fmt: skip
        family("metallb_layer2_requests_received", [({"ip": ip}, c["requests"]) for ip, c in sorted(per_ip.items())]),
        family("metallb_layer2_responses_sent", [({"ip": ip}, c["replies"]) for ip, c in sorted(per_ip.items())]),
        family("metallb_layer2_gratuitous_sent", [({"ip": ip}, c["gratuitous"]) for ip, c in sorted(per_ip.items())]),
        family("raylb_peer_failure_detection_seconds", by_peer(peers.detection_s)),
        family("raylb_peer_handovers_total", by_peer(peers.handovers)),
        family("raylb_heartbeats_lost_total", by_peer(peers.lost)),
        family("raylb_heartbeat_delay_seconds", by_peer(delays_s)),
        family("raylb_snapshot_version_lag", [({"node": node}, snapshot_lag)]),
        family("raylb_responder_drops_total", [({"node": node, "reason": r}, n) for r, n in sorted(drops.items())]),
    ]


@dataclass
class OperatorFigures:
    """What the operator counts for its metrics (actors/operator.py fills it in)."""

    updates: int = 0  # writes to Kubernetes that succeeded
    update_errors: int = 0
    config_loaded: bool = False  # pools and advertisements read without a problem at least once
    config_stale: bool = False  # the latest configuration has problems (the rest keeps running)
    round_s: float = 0.0
    queue_depth: int = 0
    service_ip_s: float | None = None  # the last Service given its first IP: creation to IP written
    services_given_ip: int = 0


def operator_families(f: OperatorFigures) -> list[Metric]:
    """The operator's: MetalLB's Kubernetes-client families and raylb's reconcile figures."""
    return [
        family("metallb_k8s_client_updates_total", [({}, f.updates)]),
        family("metallb_k8s_client_update_errors_total", [({}, f.update_errors)]),
        family("metallb_k8s_client_config_loaded_bool", [({}, int(f.config_loaded))]),
        family("metallb_k8s_client_config_stale_bool", [({}, int(f.config_stale))]),
        family("raylb_reconcile_round_seconds", [({}, f.round_s)]),
        family("raylb_reconcile_queue_depth", [({}, f.queue_depth)]),
        family("raylb_service_ip_seconds", [({}, f.service_ip_s)] if f.service_ip_s is not None else []),
        family("raylb_services_given_ip_total", [({}, f.services_given_ip)]),
    ]


def expose(families: Iterable[Metric]) -> bytes:
    """Prometheus text format 0.0.4 with names verbatim and integers exact (module docstring)."""
    lines: list[str] = []
    for metric in families:
        lines.append(f"# HELP {metric.name} {_escape_help(metric.documentation)}")
        lines.append(f"# TYPE {metric.name} {metric.type}")
        for sample in metric.samples:
            labels = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(sample.labels.items()))
            lines.append(f"{sample.name}{{{labels}}} {_value(sample.value)}" if labels else f"{sample.name} {_value(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _value(value: int | float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)  # exact, whatever its size
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
