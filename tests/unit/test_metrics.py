"""Prometheus metrics: MetalLB's families exactly as MetalLB v0.16 declares them, exact pool
sizes, and each process's families built from its own state."""

from __future__ import annotations


from prometheus_client.parser import text_string_to_metric_families

from raylb.actors.allocator import AllocatorService
from raylb.metrics import METALLB, RAYLB, OperatorFigures, expose, operator_families, speaker_families
from raylb.peerstats import PeerStats
from tests.unit.test_allocator import pool, svc

# Read from MetalLB v0.16's source (name: type, labels):
# internal/allocator/stats.go, internal/layer2/stats.go, speaker/main.go,
# internal/k8s/controllers/stats.go.
FROM_METALLB_SOURCE = {
    "metallb_allocator_addresses_total": ("gauge", ("pool",)),
    "metallb_allocator_ipv4_addresses_total": ("gauge", ("pool",)),
    "metallb_allocator_ipv6_addresses_total": ("gauge", ("pool",)),
    "metallb_allocator_addresses_in_use_total": ("gauge", ("pool",)),
    "metallb_allocator_ipv4_addresses_in_use_total": ("gauge", ("pool",)),
    "metallb_allocator_ipv6_addresses_in_use_total": ("gauge", ("pool",)),
    "metallb_allocator_services_allocated_total": ("gauge", ("pool",)),
    "metallb_speaker_announced": ("gauge", ("service", "protocol", "node", "ip")),
    "metallb_layer2_requests_received": ("counter", ("ip",)),
    "metallb_layer2_responses_sent": ("counter", ("ip",)),
    "metallb_layer2_gratuitous_sent": ("counter", ("ip",)),
    "metallb_k8s_client_updates_total": ("counter", ()),
    "metallb_k8s_client_update_errors_total": ("counter", ()),
    "metallb_k8s_client_config_loaded_bool": ("gauge", ()),
    "metallb_k8s_client_config_stale_bool": ("gauge", ()),
}


def exposed_types(text: str) -> dict[str, str]:
    return {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}


def sample_names(text: str) -> set[str]:
    return {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_metallb_families_are_declared_exactly_as_metallb_declares_them() -> None:
    assert {n: (s.type, s.labels) for n, s in METALLB.items()} == FROM_METALLB_SOURCE
    assert all(name.startswith("raylb_") for name in RAYLB)


def allocator_with(*pools: object, services: int) -> AllocatorService:
    service = AllocatorService()
    service.restore(pools={p.name: p for p in pools}, assignments=())  # type: ignore[attr-defined]
    service.sync(pools={p.name: p for p in pools}, requests={f"default/s{i}": svc(f"s{i}") for i in range(services)})  # type: ignore[attr-defined]
    return service


def test_allocator_families_count_exactly_even_a_64_pool() -> None:
    service = allocator_with(pool("a", "198.18.0.128/30"), pool("big", "2001:db8:18::/64"), services=5)
    text = expose(service.metrics()).decode()
    lines = set(text.splitlines())
    assert {
        'metallb_allocator_addresses_total{pool="a"} 4',
        'metallb_allocator_addresses_in_use_total{pool="a"} 4',
        'metallb_allocator_ipv4_addresses_in_use_total{pool="a"} 4',
        'metallb_allocator_services_allocated_total{pool="a"} 4',
        # 2**64 exactly (MetalLB's int64 overflows; a float would print 1.8446744073709552e+19)
        'metallb_allocator_ipv6_addresses_total{pool="big"} 18446744073709551616',
        'metallb_allocator_ipv6_addresses_in_use_total{pool="big"} 0',  # the fifth IPv4 Service fits nowhere
        'metallb_allocator_ipv4_addresses_total{pool="big"} 0',
    } <= lines, lines
    assert exposed_types(text) == {n: t for n, (t, _) in FROM_METALLB_SOURCE.items() if n.startswith("metallb_allocator")}


def test_layer2_counters_keep_metallbs_names_without_a_total_suffix() -> None:
    peers = PeerStats()
    peers.on_datagram("node2", incarnation=1, seq=1, now_s=0.0)
    peers.on_datagram("node2", incarnation=1, seq=4, now_s=0.15)  # seq 2 and 3 lost
    peers.on_death("node2", silent_for_s=0.31, now_s=0.46)
    peers.on_handover("node2", 2)
    responder = {
        "198.18.0.128@eth0": {"requests": 5, "replies": 4, "gratuitous": 3, "drops": {"not-owned": 1}},
        "198.18.0.128@eth1": {"requests": 1, "replies": 1, "gratuitous": 3, "drops": {}},
        "*@eth0": {"requests": 0, "replies": 0, "gratuitous": 0, "drops": {"malformed": 2}},
    }
    text = expose(speaker_families(node="node1", announced={"198.18.0.128": ["default/web"]}, responder=responder,
                                   peers=peers, delays_s=peers.take_delays(), snapshot_lag=0)).decode()  # fmt: skip
    lines = set(text.splitlines())
    assert {
        'metallb_speaker_announced{ip="198.18.0.128",node="node1",protocol="layer2",service="default/web"} 1',
        'metallb_layer2_requests_received{ip="198.18.0.128"} 6',
        'metallb_layer2_responses_sent{ip="198.18.0.128"} 5',
        'metallb_layer2_gratuitous_sent{ip="198.18.0.128"} 6',
        'raylb_peer_failure_detection_seconds{node="node1",peer="node2"} 0.31',
        'raylb_peer_handovers_total{node="node1",peer="node2"} 2',
        'raylb_heartbeats_lost_total{node="node1",peer="node2"} 2',
        'raylb_heartbeat_delay_seconds{node="node1",peer="node2"} 0.15',
        'raylb_responder_drops_total{node="node1",reason="malformed"} 2',
    } <= lines, lines
    names = sample_names(text)
    assert "metallb_layer2_requests_received" in names and "metallb_layer2_requests_received_total" not in names
    types = exposed_types(text)
    assert types["metallb_layer2_requests_received"] == "counter" and types["metallb_speaker_announced"] == "gauge"
    parsed = {f.name for f in text_string_to_metric_families(text)}  # prometheus_client reads it back
    assert "metallb_speaker_announced" in parsed


def test_operator_families() -> None:
    text = expose(operator_families(OperatorFigures(updates=7, update_errors=1, config_loaded=True, round_s=0.5))).decode()
    lines = set(text.splitlines())
    assert {"metallb_k8s_client_updates_total 7", "metallb_k8s_client_update_errors_total 1",
            "metallb_k8s_client_config_loaded_bool 1", "metallb_k8s_client_config_stale_bool 0"} <= lines  # fmt: skip
    assert {n: t for n, t in exposed_types(text).items() if n.startswith("metallb_")} == {
        n: t for n, (t, _) in FROM_METALLB_SOURCE.items() if n.startswith("metallb_k8s_client")
    }

