"""raylb in-cluster: deployed on the lab's real kubelets by the real KubeRay operator, with
`kubectl apply -k deploy/` as the README says, and serving through kube-proxy.

One cluster for the module (three kubelet nodes; bringing it up takes minutes on two cores).
The backends are the lab's backend image: each answer says which pod and node served it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from raylb.cluster.lab import Lab, down
from raylb.cluster.lab.incluster import DEMO_MANIFEST, InCluster, backend, served
from tests.lab.conftest import unique_lab_name

pytestmark = [pytest.mark.root, pytest.mark.kube]

SETTLE_S = 60.0
POLL_S = 0.5
NODES = ["node1", "node2", "node3"]
#: The lab's fourth node: its kubelet is stopped and its Node deleted before raylb is installed.
SPARE = "node4"
EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"


def remove_node(system: InCluster, node: str) -> None:
    """The node fails and the admin deletes its Node."""
    system.lab.kill_node(node)
    system.kubectl("delete", "node", node, "--wait=false")


@pytest.fixture(scope="module")
def incluster() -> Iterator[InCluster]:
    name = unique_lab_name()
    try:
        with Lab.up(name=name, nodes=4, ray=False, kube=True, kubelets=True) as lab:
            system = InCluster(lab)
            remove_node(system, SPARE)  # it joins in test_a_fourth_node_...
            system.install(manifest=DEMO_MANIFEST)
            system.wait_speakers(NODES)
            system.apply_documents(backends(), "test-backends")
            yield system
    finally:
        down(name)


def backends() -> list[dict[str, Any]]:
    """demo.yaml's Services select app=web (web, web6), app=billing and app=dns."""
    return [backend("web", replicas=3), backend("billing", replicas=2)]


def wait_for(what: str, check: Callable[[], Any], *, timeout_s: float = SETTLE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(POLL_S)


def service_row(system: InCluster, name: str) -> dict[str, Any] | None:
    status = system.status() or {}
    rows = [s for s in status.get("services", []) if s["service"] == f"default/{name}"]
    return rows[0] if rows else None


def announced(system: InCluster, name: str) -> tuple[list[str], str] | None:
    row = service_row(system, name)
    return (row["ips"], row["node"]) if row and row["ips"] and row["node"] else None


def test_the_raycluster_is_ready_and_the_rayjob_started_the_operator_in_cluster(incluster: InCluster) -> None:
    cluster = incluster.get("-n", "metallb-system", "raycluster", "raylb")
    assert cluster["status"]["state"] == "ready"
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 3, "the operator sized the speaker group to the three Nodes"
    status = incluster.status()
    assert status is not None and status["operator"] is not None
    assert sorted(s["node"] for s in status["speakers"] if s["alive"]) == NODES


def test_services_get_ips_from_the_seed_pools_and_kube_proxy_serves_them_from_every_node(incluster: InCluster) -> None:
    pools = {"web": "doc-example", "billing": "doc-example-reserved", "web6": "doc-example-ipv6"}
    seen_nodes: dict[str, set[str]] = {}
    for name, pool in pools.items():
        ips, announcer = wait_for(f"{name} announced", lambda name=name: announced(incluster, name))
        assert service_row(incluster, name)["pool"] == pool
        (address,) = ips
        nodes: set[str] = set()
        for _ in range(40):  # kube-proxy picks endpoints at random: 40 tries reach every node
            answer = wait_for(f"{name} at {address} answers the client", lambda: served(incluster, address))
            nodes.add(answer["node"])
        seen_nodes[name] = nodes
        assert nodes - {announcer}, f"{name}: only {announcer}, the announcing node, served"
    assert seen_nodes["web"] == {"node1", "node2", "node3"}


def local_service(node: str) -> list[dict[str, Any]]:
    """A Service with externalTrafficPolicy Local whose pods run on `node` alone."""
    return [
        backend("local", replicas=2, node=node),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "local", "namespace": "default"},
         "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "local"},
                  "ports": [{"port": 80, "protocol": "TCP"}]}},
    ]


def test_with_local_traffic_only_the_node_with_endpoints_announces_and_the_announcer_follows_the_pods(
    incluster: InCluster,
) -> None:
    incluster.apply_documents(local_service("node2"), "test-local")
    (address,), announcer = wait_for("local announced by node2",
                                     lambda: (a := announced(incluster, "local")) and a[1] == "node2" and a)
    answer = wait_for("local answers", lambda: served(incluster, address))
    assert answer["node"] == "node2"
    incluster.apply_documents(local_service("node3"), "test-local")
    wait_for("local announced by node3", lambda: (a := announced(incluster, "local")) and a[1] == "node3")
    answer = wait_for("local answers from node3", lambda: (s := served(incluster, address)) and s["node"] == "node3" and s)
    assert answer["node"] == "node3"


def test_scaling_to_zero_withdraws_and_scaling_back_announces_again(incluster: InCluster) -> None:
    (address,), _ = wait_for("billing announced", lambda: announced(incluster, "billing"))
    incluster.kubectl("scale", "deployment/billing", "--replicas=0")
    wait_for("billing withdrawn", lambda: (r := service_row(incluster, "billing")) and r["ips"] and not r["node"])
    assert served(incluster, address) is None
    incluster.kubectl("scale", "deployment/billing", "--replicas=2")
    wait_for("billing announced again", lambda: announced(incluster, "billing"))
    wait_for("billing answers again", lambda: served(incluster, address))


def test_a_node_labelled_exclude_from_external_load_balancers_stops_announcing(incluster: InCluster) -> None:
    label = EXCLUDE
    _, announcer = wait_for("web announced", lambda: announced(incluster, "web"))
    incluster.kubectl("label", "node", announcer, f"{label}=")
    try:
        _, moved = wait_for("web moves off the excluded node",
                            lambda: (a := announced(incluster, "web")) and a[1] != announcer and a)
        assert moved != announcer
        status = incluster.status()
        owned = {s["node"]: s["owned"] for s in status["speakers"]}
        assert not owned[announcer], f"{announcer} is excluded but still owns {owned[announcer]}"
    finally:
        incluster.kubectl("label", "node", announcer, f"{label}-")


def test_deleting_and_recreating_the_metallb_resource_gives_the_same_ips(incluster: InCluster) -> None:
    names = ("web", "billing", "web6")
    before = {n: wait_for(f"{n} announced", lambda n=n: announced(incluster, n))[0] for n in names}
    metallb = incluster.get("-n", "metallb-system", "metallbs.metallb.io", "metallb")
    incluster.kubectl("-n", "metallb-system", "delete", "metallbs.metallb.io", "metallb")
    wait_for("speakers gone", lambda: not [s for s in (incluster.status() or {"speakers": [1]})["speakers"]],
             timeout_s=120)
    incluster.apply_documents([{"apiVersion": metallb["apiVersion"], "kind": "MetalLB",
                                "metadata": {"name": "metallb", "namespace": "metallb-system"},
                                "spec": metallb.get("spec", {})}], "test-metallb")
    incluster.wait_speakers(NODES)
    after = {n: wait_for(f"{n} announced again", lambda n=n: announced(incluster, n), timeout_s=120)[0] for n in names}
    assert after == before


def speaker_group_replicas(system: InCluster) -> int:
    return int(system.get("-n", "metallb-system", "raycluster", "raylb")["spec"]["workerGroupSpecs"][0]["replicas"])


def test_killing_the_announcing_node_fails_over_as_the_client_sees_it_and_the_node_comes_back_with_a_speaker(
    incluster: InCluster,
) -> None:
    head = incluster.head_node()
    incluster.kubectl("label", "node", head, f"{EXCLUDE}=")  # the victim must not take the control plane
    try:
        (address,), victim = wait_for("web announced off the head's node",
                                      lambda: (a := announced(incluster, "web")) and a[1] != head and a)
        wait_for("web answers", lambda: served(incluster, address))
        killed = time.monotonic()
        incluster.lab.kill_node(victim)
        wait_for("web answers again after the kill", lambda: served(incluster, address, timeout_s=0.5))
        client_seen_s = time.monotonic() - killed
        (survivor,) = set(NODES) - {head, victim}
        wait_for(f"{survivor} announces web", lambda: (a := announced(incluster, "web")) and a[1] == survivor)
        print(f"\nkilled {victim}: the client was served again after {client_seen_s:.2f} s")
        restarted = time.monotonic()
        incluster.lab.start_worker(victim)
        incluster.wait_speakers(NODES)
        print(f"{victim} back with a live speaker {time.monotonic() - restarted:.1f} s after its kubelet started")
        assert speaker_group_replicas(incluster) == 3
    finally:
        incluster.kubectl("label", "node", head, f"{EXCLUDE}-")


def test_a_fourth_node_gets_a_speaker_that_announces_and_removing_it_shrinks_the_group(incluster: InCluster) -> None:
    incluster.lab.start_worker(SPARE)
    incluster.kubectl("wait", f"node/{SPARE}", "--for=condition=Ready", "--timeout=120s")
    incluster.wait_speakers([*NODES, SPARE])
    assert speaker_group_replicas(incluster) == 4
    incluster.apply_documents(local_service(SPARE), "test-local")
    (address,), _ = wait_for(f"local announced by {SPARE}",
                             lambda: (a := announced(incluster, "local")) and a[1] == SPARE and a)
    assert wait_for("local answers", lambda: served(incluster, address))["node"] == SPARE
    remove_node(incluster, SPARE)
    wait_for("the speaker group shrinks to three", lambda: speaker_group_replicas(incluster) == 3)
    wait_for("local withdrawn", lambda: (r := service_row(incluster, "local")) and not r["node"])
    status = incluster.status()
    assert sorted(s["node"] for s in status["speakers"] if s["alive"]) == NODES
