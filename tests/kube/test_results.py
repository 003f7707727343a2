"""KubeResults against the real API server, with the operator ServiceAccount's rights.

What the operator decides must land where `kubectl` shows it: Service ingress, annotations,
events, ServiceL2Status objects and status conditions of raylb's resources. Each write is
idempotent (repeating it sends nothing), 409 conflicts are retried on a fresh read, and an
RBAC denial comes back as a ForbiddenError naming verb and resource.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from raylb.cluster.kube.client import KINDS, Api, ConflictError, ForbiddenError, NotFoundError
from raylb.cluster.localkube.controlplane import OPERATOR_NAMESPACE, ControlPlane
from raylb.cluster.kube.install import install
from raylb.cluster.kube.results import L2_LABEL_NODE, KubeResults, l2_status_name
from raylb.desired import Ref
from tests.kube.accounts import service_account_client

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def crds(admin_api: client.ApiClient) -> None:
    install(admin_api)


@pytest.fixture
def results(operator_api: client.ApiClient, crds: None) -> KubeResults:
    return KubeResults(operator_api, operator_namespace=OPERATOR_NAMESPACE)


@pytest.fixture
def service(admin_api: client.ApiClient, namespace: str) -> Ref:
    client.CoreV1Api(admin_api).create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(type="LoadBalancer", ports=[client.V1ServicePort(port=80)]),
    ))
    return Ref("Service", namespace, "web")


def _get(admin_api: client.ApiClient, ref: Ref, *, subresource: str = "") -> dict[str, Any]:
    info = KINDS[ref.kind]
    return Api(admin_api).request("GET", info.object_path(ref.namespace, ref.name, subresource=subresource),
                                  what=str(ref))


def _ingress_ips(admin_api: client.ApiClient, ref: Ref) -> list[str]:
    status = _get(admin_api, ref).get("status") or {}
    return [e["ip"] for e in (status.get("loadBalancer") or {}).get("ingress") or []]


# ---- Service status and annotations --------------------------------------------------------


def test_set_ingress_ipv4_and_ipv6_shows_in_status(results: KubeResults, service: Ref,
                                                    admin_api: client.ApiClient) -> None:
    results.set_ingress(service, ["198.18.0.10", "2001:db8:18::10"])
    assert _ingress_ips(admin_api, service) == ["198.18.0.10", "2001:db8:18::10"]
    assert results.writes == 1
    results.set_ingress(service, ["198.18.0.10", "2001:db8:18::10"])
    assert results.writes == 1, "writing what is already there must not write"
    results.set_ingress(service, ["2001:db8:18::11"])
    assert _ingress_ips(admin_api, service) == ["2001:db8:18::11"]
    results.set_ingress(service, [])
    assert _ingress_ips(admin_api, service) == []
    assert results.writes == 3


def test_the_pool_annotation_rides_in_the_status_write(results: KubeResults, service: Ref,
                                                        admin_api: client.ApiClient) -> None:
    pool = "metallb.io/ip-allocated-from-pool"
    results.set_ingress(service, ["198.18.0.12"], annotations={pool: "doc-example"})
    obj = results.read(service)
    assert _ingress_ips(admin_api, service) == ["198.18.0.12"]
    assert obj["metadata"]["annotations"][pool] == "doc-example"
    assert results.writes == 1  # one PUT to services/status carried both
    results.set_ingress(service, [], annotations={pool: None})
    assert pool not in (results.read(service)["metadata"].get("annotations") or {})
    assert results.writes == 2


def test_set_annotations_merges_and_removes(results: KubeResults, service: Ref, admin_api: client.ApiClient) -> None:
    results.set_annotations(service, {"metallb.io/ip-allocated-from-pool": "doc-example", "metallb.io/other": "x"})
    results.set_annotations(service, {"metallb.io/ip-allocated-from-pool": "doc-example"})
    assert results.writes == 1
    annotations = _get(admin_api, service)["metadata"]["annotations"]
    assert annotations["metallb.io/ip-allocated-from-pool"] == "doc-example" and annotations["metallb.io/other"] == "x"
    results.set_annotations(service, {"metallb.io/other": None, "metallb.io/absent": None})
    annotations = _get(admin_api, service)["metadata"].get("annotations") or {}
    assert "metallb.io/other" not in annotations and "metallb.io/ip-allocated-from-pool" in annotations
    assert results.writes == 2


class ConflictingResults(KubeResults):
    """Another writer changes the object between our read and our replace, `times` times."""

    def __init__(self, api: client.ApiClient, *, admin: client.ApiClient, times: int, **kwargs: Any) -> None:
        super().__init__(api, **kwargs)
        self.admin, self.times, self.reads = admin, times, 0

    def _read_for_update(self, ref: Ref) -> dict[str, Any]:
        obj = super()._read_for_update(ref)
        self.reads += 1
        if self.reads <= self.times:
            client.CoreV1Api(self.admin).patch_namespaced_service(
                ref.name, ref.namespace, {"metadata": {"labels": {"touched": str(self.reads)}}})
        return obj


def test_conflict_between_read_and_replace_is_retried_on_a_fresh_read(
    operator_api: client.ApiClient, admin_api: client.ApiClient, service: Ref, crds: None
) -> None:
    results = ConflictingResults(operator_api, admin=admin_api, times=1)
    results.set_ingress(service, ["198.18.0.20"])
    assert results.conflicts == 1 and results.reads == 2 and results.writes == 2
    stored = _get(admin_api, service)
    assert _ingress_ips(admin_api, service) == ["198.18.0.20"]
    assert stored["metadata"]["labels"]["touched"] == "1"  # the other writer's change survived


def test_conflicts_are_retried_a_bounded_number_of_times(
    operator_api: client.ApiClient, admin_api: client.ApiClient, service: Ref, crds: None
) -> None:
    results = ConflictingResults(operator_api, admin=admin_api, times=100, conflict_attempts=3)
    with pytest.raises(ConflictError, match=r"update services/status .*/web: still conflicting after 3 attempts"):
        results.set_ingress(service, ["198.18.0.21"])
    assert results.writes == 3 and results.reads == 3
    assert _ingress_ips(admin_api, service) == []


# ---- events --------------------------------------------------------------------------------


def test_events_show_on_the_service(results: KubeResults, service: Ref, admin_api: client.ApiClient) -> None:
    results.set_ingress(service, ["198.18.0.30"])
    results.record_event(service, type="Normal", reason="IPAllocated", message="Assigned IP [198.18.0.30]")
    results.record_event(service, type="Normal", reason="IPAllocated", message="Assigned IP [198.18.0.30]")
    results.record_event(service, type="Warning", reason="AllocationFailed", message="no pool matches")
    uid = _get(admin_api, service)["metadata"]["uid"]
    # What `kubectl describe service` lists: events whose involvedObject is this very object.
    events = client.CoreV1Api(admin_api).list_namespaced_event(
        service.namespace,
        field_selector=f"involvedObject.kind=Service,involvedObject.name={service.name},involvedObject.uid={uid}",
    ).items
    seen = sorted((e.type, e.reason, e.message, e.source.component, e.count) for e in events)
    assert seen == [("Normal", "IPAllocated", "Assigned IP [198.18.0.30]", "raylb", 1),
                    ("Warning", "AllocationFailed", "no pool matches", "raylb", 1)]
    assert results.writes == 3  # ingress + two distinct events; the repeat was not sent


# ---- ServiceL2Status -----------------------------------------------------------------------


def test_service_l2_status_created_updated_deleted(results: KubeResults, service: Ref,
                                                    admin_api: client.ApiClient) -> None:
    ref = results.l2_status_ref(service)
    assert ref == Ref("ServiceL2Status", OPERATOR_NAMESPACE, l2_status_name(service))
    results.put_l2_status(service, node="node-a", interfaces=["eth0"])
    stored = _get(admin_api, ref)
    assert stored["status"] == {"node": "node-a", "serviceName": "web", "serviceNamespace": service.namespace,
                                "interfaces": [{"name": "eth0"}]}
    assert stored["metadata"]["labels"] == {"metallb.io/service-name": "web",
                                            "metallb.io/service-namespace": service.namespace,
                                            L2_LABEL_NODE: "node-a"}
    writes = results.writes
    results.put_l2_status(service, node="node-a", interfaces=["eth0"])
    assert results.writes == writes, "an unchanged ServiceL2Status must not be written"

    results.put_l2_status(service, node="node-b", interfaces=["eth1", "eth2"])
    stored = _get(admin_api, ref)
    assert stored["status"]["node"] == "node-b" and stored["metadata"]["labels"][L2_LABEL_NODE] == "node-b"
    assert [i["name"] for i in stored["status"]["interfaces"]] == ["eth1", "eth2"]

    results.delete_l2_status(service)
    with pytest.raises(NotFoundError):
        _get(admin_api, ref)
    writes = results.writes
    results.delete_l2_status(service)
    assert results.writes == writes


# ---- conditions ----------------------------------------------------------------------------

CR_SPECS = {
    "MetalLB": {},
    "IPAddressPool": {"addresses": ["198.18.0.64/28"]},
    "AddressPool": {"protocol": "layer2", "addresses": ["198.18.0.80/28"]},
    "L2Advertisement": {"ipAddressPools": ["x"]},
}


@pytest.fixture
def custom_resource(request: pytest.FixtureRequest, admin_api: client.ApiClient, crds: None) -> Iterator[Ref]:
    kind = request.param
    name = f"c-{uuid.uuid4().hex[:8]}"
    info = KINDS[kind]
    api = Api(admin_api)
    api.request("POST", info.collection_path(OPERATOR_NAMESPACE), what=kind, body={
        "apiVersion": info.api_version, "kind": kind,
        "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE}, "spec": CR_SPECS[kind]})
    yield Ref(kind, OPERATOR_NAMESPACE, name)
    api.request("DELETE", info.object_path(OPERATOR_NAMESPACE, name), what=kind)


@pytest.mark.parametrize("custom_resource", sorted(CR_SPECS), indirect=True)
def test_conditions_on_a_custom_resource_read_back(results: KubeResults, custom_resource: Ref,
                                                   admin_api: client.ApiClient) -> None:
    conditions = [
        {"type": "Available", "status": "False", "reason": "ConfigInvalid",
         "message": "spec.addresses[0]='198.18.0.9-198.18.0.1': range ends before it starts"},
        {"type": "Degraded", "status": "True", "reason": "ConfigInvalid", "message": "see Available"},
    ]
    results.set_conditions(custom_resource, conditions)
    stored = _get(admin_api, custom_resource)["status"]["conditions"]
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in stored] == [
        (c["type"], c["status"], c["reason"], c["message"]) for c in conditions]
    assert all(c["lastTransitionTime"].endswith("Z") for c in stored)
    assert results.writes == 1
    results.set_conditions(custom_resource, conditions)
    assert results.writes == 1, "the same conditions again must not write"
    results.set_conditions(custom_resource, [{"type": "Available", "status": "True", "reason": "Ok"}])
    (available,) = _get(admin_api, custom_resource)["status"]["conditions"]
    assert (available["status"], available["reason"], available["message"]) == ("True", "Ok", "")
    assert results.writes == 2
    # The event `kubectl describe` shows under the resource (matched by kind, name and uid).
    results.record_event(custom_resource, type="Warning", reason="ConfigInvalid", message="range ends before it starts")
    uid = _get(admin_api, custom_resource)["metadata"]["uid"]
    events = client.CoreV1Api(admin_api).list_namespaced_event(OPERATOR_NAMESPACE, field_selector=(
        f"involvedObject.kind={custom_resource.kind},involvedObject.name={custom_resource.name},"
        f"involvedObject.uid={uid}")).items
    assert [(e.type, e.reason, e.involved_object.api_version) for e in events] == [
        ("Warning", "ConfigInvalid", "metallb.io/v1beta1")]


# ---- RBAC denial ---------------------------------------------------------------------------


def test_a_denied_write_is_a_forbidden_error_naming_verb_and_resource(
    control_plane: ControlPlane, admin_api: client.ApiClient, namespace: str, service: Ref, crds: None
) -> None:
    """An account that may read Services but not write their status learns exactly that."""
    reader = service_account_client(control_plane, admin_api, namespace=namespace, cluster_rules=[
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}])
    results = KubeResults(reader)
    with pytest.raises(ForbiddenError) as denied:
        results.set_ingress(service, ["198.18.0.40"])
    message = str(denied.value)
    assert message.startswith(f"update services/status {namespace}/web: forbidden (HTTP 403)"), message
    assert 'cannot update resource "services/status"' in message
    with pytest.raises(ForbiddenError, match=r"create events"):
        results.record_event(service, type="Normal", reason="IPAllocated", message="x")
    with pytest.raises(ForbiddenError, match=r"get servicel2statuses.metallb.io metallb-system/l2-"):
        results.put_l2_status(service, node="n", interfaces=[])
    assert _ingress_ips(admin_api, service) == []
