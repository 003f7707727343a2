"""The lab as a real Kubernetes cluster (`raylb lab up --kubernetes`): kubelets in node
namespaces, kube-proxy, CoreDNS and the controllers on the control host, and a root namespace
that none of it touches."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from raylb.cluster.localkube.provision import KUBERNETES_VERSION
from raylb.cluster.lab import Lab, down
from raylb.cluster.lab import kube as lab_kube
from raylb.cluster.lab import kubecluster
from raylb.cluster.lab.hosts import dns_query, tcp_open, wait_until
from raylb.cluster.lab.netns import list_netns
from tests.lab.conftest import unique_lab_name

pytestmark = [pytest.mark.root, pytest.mark.kube]

ROOT_SYSCTLS = [f"/proc/sys/{key}" for key in kubecluster.KUBELET_SYSCTLS] + [
    "/proc/sys/net/netfilter/nf_conntrack_max",
    "/proc/sys/net/ipv4/ip_forward",
]


def root_view() -> dict[str, str]:
    """What the lab must never change in the root namespace: interfaces, addresses, routes,
    iptables rules and the sysctls a kubelet or kube-proxy would write."""
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    view = {
        "links": out("ip", "-o", "link", "show"),
        "addresses": out("ip", "-o", "address", "show"),
        "routes4": out("ip", "route", "show", "table", "all"),
        "routes6": out("ip", "-6", "route", "show", "table", "all"),
        "iptables": out("iptables-save"),
        "ip6tables": out("ip6tables-save"),
    }
    for path in ROOT_SYSCTLS:
        view[path] = Path(path).read_text() if Path(path).exists() else "(absent)"
    # Counters and timestamps change on their own; only rules matter.
    for key in ("iptables", "ip6tables"):
        view[key] = "\n".join(line for line in view[key].splitlines() if not line.startswith(("#", ":")))
    return view


@pytest.fixture(scope="module")
def cluster_lab() -> Iterator[tuple[Lab, dict[str, str]]]:
    before = root_view()
    name = unique_lab_name()
    try:
        with Lab.up(name=name, nodes=2, ray=False, kubelets=True) as lab:
            yield lab, before
    finally:
        down(name)


@pytest.fixture
def api(cluster_lab: tuple[Lab, dict[str, str]]) -> Iterator[client.ApiClient]:
    lab = cluster_lab[0]
    with lab_kube.admin_api(lab.control, lab.kube) as api:  # type: ignore[arg-type]
        yield api


def test_every_node_is_a_real_kubelet_that_registered_itself(cluster_lab: tuple[Lab, dict[str, str]],
                                                             api: client.ApiClient) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    assert sorted(nodes) == ["node1", "node2"]
    for name, node in nodes.items():
        assert node.status.node_info.kubelet_version == KUBERNETES_VERSION
        assert node.status.node_info.container_runtime_version.startswith("containerd://")
        addresses = {a.address for a in node.status.addresses if a.type == "InternalIP"}
        host = cluster_lab[0].host(name)
        assert addresses == {str(host.ipv4), str(host.ipv6)}


def test_coredns_answers_cluster_names_from_the_client(cluster_lab: tuple[Lab, dict[str, str]]) -> None:
    lab = cluster_lab[0]
    answers = dns_query(lab.client.netns, lab.control.ipv4, "kubernetes.default.svc.cluster.local")
    assert answers == ["198.19.0.1"]


def test_kube_proxy_on_each_node_forwards_the_kubernetes_service_to_the_api_server(
    cluster_lab: tuple[Lab, dict[str, str]],
) -> None:
    lab = cluster_lab[0]
    for node in lab.nodes:  # kube-proxy programs its rules shortly after the node turns Ready
        wait_until(lambda: tcp_open(node.netns, "198.19.0.1", 443, timeout_s=1.0),  # noqa: B023
                   timeout_s=30, what=f"the kubernetes Service from {node.name}")
    # The client has no kube-proxy (and no route): a ClusterIP is a node's rule only.
    assert not tcp_open(lab.client.netns, "198.19.0.1", 443, timeout_s=0.5)


def test_the_root_namespace_is_untouched(cluster_lab: tuple[Lab, dict[str, str]]) -> None:
    lab, before = cluster_lab
    after = root_view()
    changed = {key for key in before if before[key] != after[key]}
    assert not changed, {key: (before[key][-400:], after[key][-400:]) for key in changed}
    assert all(tcp_open(n.netns, "198.19.0.1", 443, timeout_s=2.0) for n in lab.nodes)  # it ran


def test_lab_down_removes_the_nodes_cgroups_and_pod_namespaces() -> None:
    name = unique_lab_name()
    try:
        Lab.up(name=name, nodes=1, ray=False, kubelets=True)
        assert kubecluster.lab_cgroups(name) == [kubecluster.cgroup_name(name, "node1")]
    finally:
        down(name)
    assert kubecluster.lab_cgroups(name) == []
    assert not [n for n in list_netns() if name in n]
