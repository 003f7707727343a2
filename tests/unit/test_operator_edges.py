"""The operator at the edges: invalid or foreign resources, tampered and garbled Service state,
Services that lose their pool or stop being managed. Same harness as test_operator_core."""

from __future__ import annotations

from typing import Any

import pytest

from raylb.desired import Ref
from tests.unit.fakes import NS, endpoint_slice, ip_pool, l2adv, metallb, service
from tests.unit.test_operator_core import NODES, System, seed, system  # noqa: F401 - `system` is the fixture

POOL = "metallb.io/ip-allocated-from-pool"


def elsewhere(manifest: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    """The manifest moved out of the operator namespace."""
    return {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}


def serve_web(system: System) -> None:
    """The seed plus Service `web` with a ready endpoint on node2, settled: web holds 198.18.0.128."""
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node2"]))
    system.settle()


@pytest.mark.parametrize(
    ("spec", "field", "said"),
    [({"logLevel": "verbose"}, "spec.logLevel", "verbose"), ({"nodeSelecter": {}}, "spec.nodeSelecter", "unknown field")],
    ids=["bad-value", "misspelt-field"],
)
def test_an_invalid_metallb_is_degraded_naming_the_field_and_runs_once_fixed(
    system: System, spec: dict[str, Any], field: str, said: str
) -> None:
    system.cluster.apply("MetalLB", metallb(**spec))
    system.settle()
    degraded = system.conditions("MetalLB", "metallb")["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert field in degraded["message"] and said in degraded["message"]
    assert system.ray.speakers == {} and system.ray.allocator is None
    system.cluster.apply("MetalLB", metallb())
    system.settle()
    assert system.conditions("MetalLB", "metallb")["Degraded"]["reason"] == "NoProblems"
    assert set(system.ray.speakers) == set(NODES)


def test_a_pool_outside_the_operator_namespace_gives_no_ip_and_gets_no_condition(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("IPAddressPool", elsewhere(ip_pool("stray", ["198.18.0.64/30"])))
    system.cluster.apply("Service", service("web", annotations={"metallb.io/address-pool": "stray"}))
    system.settle()
    assert system.ingress("web") == []
    failed = system.events("AllocationFailed")
    assert len(failed) == 1 and "'stray'" in failed[0].message and "does not exist" in failed[0].message
    assert "status" not in (system.cluster.get(Ref("IPAddressPool", "default", "stray")) or {})


def test_an_advertisement_outside_the_operator_namespace_announces_nothing(system: System) -> None:
    seed(system.cluster)
    system.cluster.delete(Ref("L2Advertisement", NS, "l2"))
    system.cluster.apply("L2Advertisement", elsewhere(l2adv()))
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node2"]))
    system.settle()
    assert system.ingress("web") == ["198.18.0.128"]  # IPs are allocated without an advertisement ...
    assert system.cluster.l2_statuses() == {}  # ... but nobody announces them
    assert all(snap.advertisements == () for snap in system.ray.speakers.values())


@pytest.mark.parametrize("tampered", [{}, {POOL: "doc-example-reserved"}], ids=["removed", "changed"])
@pytest.mark.parametrize("allocator_restarts", [False, True], ids=["running", "after-allocator-restart"])
def test_a_tampered_pool_annotation_is_put_back_without_a_new_ip_or_event(
    system: System, tampered: dict[str, str], allocator_restarts: bool
) -> None:
    serve_web(system)
    system.cluster.apply("Service", service("web", annotations=tampered))  # status is kept, as on an update
    if allocator_restarts:  # the restored allocator must read the pool from the IP, not the annotation
        system.ray.allocator = None
        system.restart_operator()
    system.settle()
    assert system.ingress("web") == ["198.18.0.128"]
    assert system.annotations("web")[POOL] == "doc-example"
    assert len(system.events("IPAllocated")) == 1


def test_a_service_whose_pool_is_deleted_loses_its_ip_and_gets_one_when_the_pool_returns(system: System) -> None:
    serve_web(system)
    assert system.cluster.l2_statuses()["default/web"]["node"] in NODES
    pool = system.cluster.get(Ref("IPAddressPool", NS, "doc-example"))
    assert pool is not None
    system.cluster.delete(Ref("IPAddressPool", NS, "doc-example"))
    system.settle()
    assert system.ingress("web") == []
    assert POOL not in system.annotations("web")
    failed = system.events("AllocationFailed")
    assert [(e.ref.name, e.type) for e in failed] == [("web", "Warning")]
    assert system.cluster.l2_statuses() == {}
    system.cluster.apply("IPAddressPool", pool)
    system.settle()
    assert system.ingress("web") == ["198.18.0.128"]
    assert system.annotations("web")[POOL] == "doc-example"
    assert len(system.events("IPAllocated")) == 2
    assert "default/web" in system.cluster.l2_statuses()


@pytest.mark.parametrize(
    ("web_spec", "metallb_spec"),
    [({"type": "ClusterIP"}, {}), ({"loadBalancerClass": "other"}, {}), ({}, {"loadBalancerClass": "raylb"})],
    ids=["type-cluster-ip", "service-class-changed", "metallb-class-changed"],
)
def test_a_service_no_longer_managed_is_cleared_and_its_ip_freed(
    system: System, web_spec: dict[str, Any], metallb_spec: dict[str, Any]
) -> None:
    serve_web(system)
    assert "default/web" in system.cluster.l2_statuses()
    system.cluster.apply("MetalLB", metallb(**metallb_spec))
    system.cluster.apply("Service", service("web", annotations=system.annotations("web"), **web_spec))
    system.cluster.apply("Service", service("next", **metallb_spec))
    system.settle()
    assert system.ingress("web") == []
    assert POOL not in system.annotations("web")
    assert "default/web" not in system.cluster.l2_statuses()
    assert system.ingress("next") == ["198.18.0.128"]


def test_a_service_changed_to_cluster_ip_without_its_pool_annotation_is_cleared_too(system: System) -> None:
    serve_web(system)
    system.cluster.apply("Service", service("web", type="ClusterIP"))  # the annotation is gone too
    system.cluster.apply("Service", service("next"))
    system.settle()
    assert system.ingress("next") == ["198.18.0.128"]
    assert system.ingress("web") == [], "two Services now show the same IP"


def test_garbage_in_a_service_status_is_replaced_by_a_proper_ip(system: System) -> None:
    seed(system.cluster)
    garbled = service("web")
    garbled["status"] = {"loadBalancer": {"ingress": [{"ip": "not-an-ip"}]}}
    system.cluster.apply("Service", garbled)
    system.settle()
    assert system.ingress("web") == ["198.18.0.128"]
    assert len(system.events("IPAllocated")) == 1
    assert system.core.counters.failures == 0


MALFORMED = {
    "EndpointSlice": {**endpoint_slice("web", []), "metadata": {"name": "web-broken", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "web"}}, "endpoints": "not-a-list"},
    "Service": service("broken", ports=[{"port": "http"}]),
    "Node": {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node2", "labels": ["not", "a", "map"]}},
}  # fmt: skip  # each fails to parse; the EndpointSlice is a second slice of `web` itself


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_object_does_not_stop_other_services_being_served(system: System, kind: str) -> None:
    seed(system.cluster)
    system.cluster.apply(kind, MALFORMED[kind])
    system.cluster.apply("Service", service("web", externalTrafficPolicy="Local"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node3"]))
    system.settle()
    assert system.core.counters.failures == 0
    assert system.ingress("web") == ["198.18.0.128"]
    assert system.cluster.l2_statuses()["default/web"]["node"] == "node3"
    assert set(system.ray.speakers) == set(NODES)
