"""The speaker worker Pod exactly as KubeRay v1.5.0 generates it from deploy/kuberay/raycluster.yaml.

The real kuberay-operator (from the provisioning cache) runs against the test API server with
v1.5.0's own CRDs and creates the RayCluster's Pods (no kubelet runs them). From the generated
speaker Pod: the NODE_NAME guard really stops KubeRay's appended `ray start` (its command runs
here in bash, `ray start` replaced by an echo); the Pod takes only the host ports listed in the
manifest (no hostPort 8080); its container runs as root with NET_RAW alone; and Pod Security
`baseline` refuses it, which is why metallb-system is labelled privileged.
"""

from __future__ import annotations

import copy
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from raylb.cluster.kube import manifests
from raylb.cluster.localkube.controlplane import REPO, ControlPlane
from tests.kube.kuberay import KubeRayOperator, install_kuberay_crds, raycluster

pytestmark = pytest.mark.kube

GROUP = "speakers"
ECHO = "RAY-START-RAN"
NAMESPACE_YAML = REPO / "deploy" / "rbac" / "namespace.yaml"


@pytest.fixture(scope="module")
def worker_pod(control_plane: ControlPlane, admin_api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict[str, Any]]:
    """The speaker worker Pod KubeRay generated (the group set to one replica, as the operator
    would for a one-node cluster), in a namespace of its own."""
    install_kuberay_crds(admin_api)
    namespace = f"kr-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    kuberay = KubeRayOperator(control_plane.admin_kubeconfig, namespace=namespace,
                              log=tmp_path_factory.mktemp("kuberay") / "kuberay-operator.log")
    try:
        doc = raycluster(namespace)
        (group,) = doc["spec"]["workerGroupSpecs"]
        group["replicas"] = group["minReplicas"] = group["maxReplicas"] = 1
        manifests.apply_documents(admin_api, [doc])

        def generated() -> dict[str, Any] | None:
            pods = core.list_namespaced_pod(namespace, label_selector=f"ray.io/group={GROUP}").items
            return admin_api.sanitize_for_serialization(pods[0]) if pods else None

        yield kuberay.wait_for(generated, what="KubeRay creates the speaker worker Pod")
    finally:
        kuberay.stop()
        manifests.request(admin_api, "DELETE", manifests.object_path(admin_api, raycluster(namespace)))
        core.delete_collection_namespaced_pod(namespace)  # no garbage collector runs here
        core.delete_namespace(namespace)


def ray_container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]  # KubeRay's Ray container is the first


def run_generated(pod: dict[str, Any], tmp_path: Path, node_name: str | None) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The container's command + args, in bash, with `ray start` echoed and the labels file in tmp_path."""
    container = ray_container(pod)
    labels_file = "/tmp/raylb-node-labels.yaml"
    here = tmp_path / "labels.yaml"
    (args,) = container["args"]
    assert "ray start" in args and labels_file in args, args
    script = args.replace("ray start", f"echo {ECHO} ray start").replace(labels_file, str(here))
    env = {"PATH": "/usr/bin:/bin", **({"NODE_NAME": node_name} if node_name is not None else {})}
    argv = [*container["command"], script]
    assert argv[0] == "/bin/bash", argv
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False), here


@pytest.mark.parametrize("node_name", [None, ""])
def test_without_a_node_name_the_generated_command_stops_before_ray_start(
    worker_pod: dict[str, Any], tmp_path: Path, node_name: str | None
) -> None:
    result, labels = run_generated(worker_pod, tmp_path, node_name)
    assert result.returncode != 0, result
    assert ECHO not in result.stdout, "KubeRay's `ray start` ran without a node name"
    assert "NODE_NAME" in result.stderr and not labels.exists()


def test_with_a_node_name_the_generated_command_writes_the_label_then_starts_ray(
    worker_pod: dict[str, Any], tmp_path: Path
) -> None:
    result, labels = run_generated(worker_pod, tmp_path, "node-1")
    assert result.returncode == 0, result
    assert ECHO in result.stdout
    assert yaml.safe_load(labels.read_text()) == {"raylb.io/node": "node-1"}


def test_the_generated_pod_takes_only_the_ports_the_manifest_lists(worker_pod: dict[str, Any]) -> None:
    container = ray_container(worker_pod)
    assert worker_pod["spec"]["hostNetwork"] is True
    ports = {(p["name"], p["containerPort"], p.get("hostPort")) for p in container.get("ports") or []}
    assert ports == {("metrics", 7952, 7952), ("metrics-speaker", 7473, 7473)}, "host ports: the two the manifest declares"
    assert all(8080 not in (p["containerPort"], p.get("hostPort")) for p in container["ports"])
    (args,) = container["args"]
    params = raycluster()["spec"]["workerGroupSpecs"][0]["rayStartParams"]
    for flag in ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
                 "dashboard-agent-grpc-port", "runtime-env-agent-port", "min-worker-port", "max-worker-port"):
        assert f"--{flag}={params[flag]}" in args, flag
    assert "8080" not in args and "52365" not in args, args
    for probe in ("readinessProbe", "livenessProbe"):  # ours, on the agent's port; not KubeRay's 52365
        assert f"localhost:{params['dashboard-agent-listen-port']}/" in " ".join(container[probe]["exec"]["command"])


def test_the_generated_container_runs_as_root_with_net_raw_alone(worker_pod: dict[str, Any]) -> None:
    context = ray_container(worker_pod)["securityContext"]
    assert context["runAsUser"] == 0 and context["runAsNonRoot"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}


def _dry_run_into(admin_api: client.ApiClient, pod: dict[str, Any], labels: dict[str, str]) -> None:
    namespace = f"psa-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin_api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=labels)))
    body = copy.deepcopy(pod)
    body["metadata"] = {"name": pod["metadata"]["name"], "namespace": namespace, "labels": pod["metadata"]["labels"]}
    body.pop("status", None)
    try:
        manifests.request(admin_api, "POST", f"/api/v1/namespaces/{namespace}/pods", body=body, query=[("dryRun", "All")])
    finally:
        client.CoreV1Api(admin_api).delete_namespace(namespace)


def test_pod_security_baseline_refuses_the_speaker_pod_and_the_manifest_namespace_admits_it(
    admin_api: client.ApiClient, worker_pod: dict[str, Any]
) -> None:
    with pytest.raises(ApiException) as refused:
        _dry_run_into(admin_api, worker_pod, {"pod-security.kubernetes.io/enforce": "baseline"})
    assert refused.value.status == 403 and "hostNetwork" in str(refused.value.body), refused.value.body
    (namespace,) = [d for d in manifests.load_documents([NAMESPACE_YAML]) if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert {labels.get(f"pod-security.kubernetes.io/{mode}") for mode in ("enforce", "audit", "warn")} == {"privileged"}
    _dry_run_into(admin_api, worker_pod, labels)
