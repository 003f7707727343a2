"""deploy/monitoring/, the optional kustomize component for Prometheus Operator users.

The files: every resource of the component exists, the Service and the PodMonitor select the
Pods deploy/kuberay/raycluster.yaml makes and name ports those Pods declare, at the ports
raylb's processes serve. The server: the Prometheus Operator's own CRDs (fetched from the Go
module proxy into the cache by raylb.cluster.localkube.promcrds, never kept in the repository) are
installed into the test API server and every document is created with dryRun=All and
fieldValidation=Strict; a broken ServiceMonitor shows the same call does reject.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from raylb.actors.metrics_http import ALLOCATOR_PORT, OPERATOR_PORT, SPEAKER_PORT
from raylb.cluster.kube import manifests
from raylb.cluster.localkube import promcrds
from tests.kube.test_kuberay_manifests import DEPLOY, by_kind, container, dry_run_create, dry_run_rejections, install_crds, workers

COMPONENT = DEPLOY / "monitoring"


def component_documents() -> list[dict[str, Any]]:
    spec = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert (spec["apiVersion"], spec["kind"]) == ("kustomize.config.k8s.io/v1alpha1", "Component")
    assert set(spec) == {"apiVersion", "kind", "resources"}, "fields this test does not expand"
    files = [COMPONENT / entry for entry in spec["resources"]]
    assert {f.name for f in files} == {p.name for p in COMPONENT.glob("*.yaml")} - {"kustomization.yaml"}
    return manifests.load_documents(files)


def of_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in component_documents() if d["kind"] == kind]
    return doc


def ports_of(pod_template: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container({"template": pod_template}).get("ports", [])}


def test_the_service_and_the_podmonitor_reach_the_ports_raylb_serves() -> None:
    head = by_kind("RayCluster")["spec"]["headGroupSpec"]["template"]
    service = of_kind("Service")
    assert service["spec"]["selector"].items() <= head["metadata"]["labels"].items()
    head_ports = ports_of(head)
    assert {p["targetPort"]: head_ports[p["targetPort"]] for p in service["spec"]["ports"]} == {
        "metrics-op": OPERATOR_PORT, "metrics-alloc": ALLOCATOR_PORT,
    }  # fmt: skip
    monitor = of_kind("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {p["name"] for p in service["spec"]["ports"]}
    speaker = workers()["template"]
    pods = of_kind("PodMonitor")
    assert pods["spec"]["selector"]["matchLabels"].items() <= speaker["metadata"]["labels"].items()
    (endpoint,) = pods["spec"]["podMetricsEndpoints"]
    assert ports_of(speaker)[endpoint["port"]] == SPEAKER_PORT
    assert {d["metadata"]["namespace"] for d in component_documents()} == {"metallb-system"}


@pytest.fixture(scope="module")
def monitoring_api(admin_api: client.ApiClient) -> Iterator[client.ApiClient]:
    """The test API server with the Prometheus Operator's CRDs and namespace metallb-system."""
    install_crds(admin_api, promcrds.ensure_crds())
    yield admin_api


@pytest.mark.kube
def test_every_monitoring_manifest_passes_server_side_dry_run(monitoring_api: client.ApiClient) -> None:
    rejected = dry_run_rejections(monitoring_api, component_documents())
    assert not rejected, "\n".join(rejected)


@pytest.mark.kube
@pytest.mark.parametrize(("edit", "field"), [("unknown field", "scrapeEvery"), ("port not a string", "port")])
def test_the_dry_run_rejects_a_broken_servicemonitor(monitoring_api: client.ApiClient, edit: str, field: str) -> None:
    doc = copy.deepcopy(of_kind("ServiceMonitor"))
    if edit == "unknown field":
        doc["spec"]["endpoints"][0]["scrapeEvery"] = "30s"
    else:
        doc["spec"]["endpoints"][0]["port"] = 7474
    with pytest.raises(ApiException) as rejected:
        dry_run_create(monitoring_api, doc)
    assert rejected.value.status in (400, 422) and field in str(rejected.value.body), rejected.value.body
