"""The local control plane is a real, usable Kubernetes API: the contract other tests rely on."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from raylb.cluster.localkube.controlplane import ControlPlane
from raylb.cluster.kube.manifests import request

pytestmark = pytest.mark.kube

V4_RANGE = ipaddress.ip_network("198.19.0.0/16")
V6_RANGE = ipaddress.ip_network("2001:db8:19::/108")


def _lb_service(name: str, *, policy: str | None = None, families: list[str] | None = None) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(
            type="LoadBalancer",
            selector={"app": name},
            ports=[client.V1ServicePort(name="http", port=80, target_port=8080, protocol="TCP")],
            ip_family_policy=policy,
            ip_families=families,
        ),
    )


def test_readyz_answers_ok(admin_api: client.ApiClient) -> None:
    assert request(admin_api, "GET", "/readyz") == "ok"


def test_kubeconfig_points_at_the_running_server(control_plane: ControlPlane) -> None:
    text = control_plane.admin_kubeconfig.read_text()
    assert control_plane.url in text
    assert control_plane.url.startswith("https://127.0.0.1:")
    with control_plane.admin_client() as api:
        version = client.VersionApi(api).get_code()
    assert version.git_version.startswith("v1.34.")


def test_nodes_services_and_endpointslices_can_be_created_directly(
    admin_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    discovery = client.DiscoveryV1Api(admin_api)
    node_name = f"node-{uuid.uuid4().hex[:8]}"
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node_name, labels={"zone": "a"})))

    created = core.create_namespaced_service(namespace, _lb_service("web"))
    assert created.spec.type == "LoadBalancer"
    assert ipaddress.ip_address(created.spec.cluster_ip) in V4_RANGE
    assert created.status.load_balancer.ingress is None  # nobody has assigned an IP yet

    discovery.create_namespaced_endpoint_slice(
        namespace,
        client.V1EndpointSlice(
            metadata=client.V1ObjectMeta(name="web-1", labels={"kubernetes.io/service-name": "web"}),
            address_type="IPv4",
            endpoints=[client.V1Endpoint(addresses=["198.18.0.50"], node_name=node_name,
                                         conditions=client.V1EndpointConditions(ready=True))],
            ports=[client.DiscoveryV1EndpointPort(name="http", port=8080, protocol="TCP")],
        ),
    )
    slices = discovery.list_namespaced_endpoint_slice(namespace, label_selector="kubernetes.io/service-name=web")
    assert [e.node_name for s in slices.items for e in s.endpoints] == [node_name]
    assert core.read_node(node_name).metadata.labels["zone"] == "a"


@pytest.mark.parametrize(
    ("policy", "families", "expected_ranges"),
    [
        (None, None, [V4_RANGE]),  # primary family of the cluster: IPv4
        ("SingleStack", ["IPv6"], [V6_RANGE]),
        ("RequireDualStack", ["IPv4", "IPv6"], [V4_RANGE, V6_RANGE]),
        ("RequireDualStack", ["IPv6", "IPv4"], [V6_RANGE, V4_RANGE]),
    ],
)
def test_cluster_ips_come_from_the_configured_ranges(
    admin_api: client.ApiClient, namespace: str, policy: str | None, families: list[str] | None,
    expected_ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    core = client.CoreV1Api(admin_api)
    svc = core.create_namespaced_service(namespace, _lb_service("svc", policy=policy, families=families))
    ips = [ipaddress.ip_address(ip) for ip in svc.spec.cluster_ips]
    assert len(ips) == len(expected_ranges)
    assert all(ip in net for ip, net in zip(ips, expected_ranges, strict=True))


def test_service_status_is_written_through_the_status_subresource(
    admin_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_service(namespace, _lb_service("lb"))
    body = {"status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.200"}]}}}
    core.patch_namespaced_service_status("lb", namespace, body)
    assert core.read_namespaced_service("lb", namespace).status.load_balancer.ingress[0].ip == "198.18.0.200"
    # The main resource ignores status: a plain update cannot change it.
    svc = core.read_namespaced_service("lb", namespace)
    svc.status.load_balancer.ingress[0].ip = "198.18.0.201"
    core.replace_namespaced_service("lb", namespace, svc)
    assert core.read_namespaced_service("lb", namespace).status.load_balancer.ingress[0].ip == "198.18.0.200"


def test_restart_apiserver_keeps_data_and_address(control_plane: ControlPlane, namespace: str) -> None:
    with control_plane.admin_client() as api:
        before = client.CoreV1Api(api).create_namespaced_service(namespace, _lb_service("kept"))
    url = control_plane.url
    old_pids = list(control_plane.pids)

    control_plane.restart_apiserver()

    assert control_plane.url == url
    assert control_plane.pids != old_pids
    with control_plane.admin_client() as api:
        after = client.CoreV1Api(api).read_namespaced_service("kept", namespace)
    assert (after.metadata.uid, after.spec.cluster_ip) == (before.metadata.uid, before.spec.cluster_ip)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it counts as gone once it is no longer running.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_stop_leaves_no_process_and_no_files(control_plane: ControlPlane) -> None:
    plane = ControlPlane.start(binaries=control_plane.binaries)
    pids, workdir = plane.pids, plane.workdir
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    assert workdir.is_dir()

    plane.stop()
    plane.stop()  # idempotent

    assert not any(_alive(p) for p in pids)
    assert not workdir.exists()


OWNER = """
import sys, time
from pathlib import Path
from raylb.cluster.localkube.controlplane import ControlPlane
plane = ControlPlane.start(workdir=Path(sys.argv[1]))
print(" ".join(map(str, plane.pids)), flush=True)
time.sleep(600)
"""


def test_the_servers_die_with_a_sigkilled_owner(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in (owner.stdout.readline() if owner.stdout else "").split()]
        assert len(pids) == 2, "the owner did not start etcd and kube-apiserver"
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    finally:
        owner.kill()  # no exit hook runs
        owner.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), f"servers {pids} outlived their SIGKILLed owner"


def _alive(pid: int) -> bool:
    """Running, not a zombie (the servers' parent is gone, so init reaps them)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False
