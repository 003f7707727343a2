"""KubeDesired against the real API server, with the operator ServiceAccount's rights.

The promise of raylb.desired.Desired, kept over real watches: the first answer is the whole
world as ADDED, later answers are every change in order, and nothing is lost or repeated
across a dropped stream, an API server restart or a 410 Gone. A denial is reported, not
swallowed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
import pytest
from kubernetes import client

from raylb.cluster.kube.client import KINDS, Api, ForbiddenError, GoneError
from raylb.cluster.localkube.controlplane import OPERATOR_NAMESPACE, ControlPlane
from raylb.cluster.kube.install import install
from raylb.cluster.kube.source import KindWatcher, KubeDesired
from raylb.desired import NAMESPACED, Change, Ref, World
from tests.kube.accounts import service_account_client

pytestmark = pytest.mark.kube

POLL_S = 0.2
CONVERGE_S = 60.0  # generous: an API server restart alone takes ~15 s on two busy cores


@pytest.fixture(scope="module")
def crds(admin_api: client.ApiClient) -> None:
    install(admin_api)


@pytest.fixture
def desired(operator_api: client.ApiClient, crds: None) -> Iterator[KubeDesired]:
    source = KubeDesired(operator_api, operator_namespace=OPERATOR_NAMESPACE)
    yield source
    source.stop()


def lb_service(name: str, **labels: str) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name, labels=labels or None),
        spec=client.V1ServiceSpec(type="LoadBalancer", ports=[client.V1ServicePort(port=80)]),
    )


def collect_until(source: KubeDesired, received: list[Change], done: Callable[[list[Change]], bool],
                  *, timeout_s: float = CONVERGE_S) -> list[Change]:
    """wait_changes into `received` until done(received) (poll, bounded)."""
    deadline = time.monotonic() + timeout_s
    while not done(received):
        assert time.monotonic() < deadline, f"not converged after {timeout_s} s; errors={source.errors()}; " \
                                            f"got {[(c.type, str(c.ref)) for c in received][-20:]}"
        received.extend(source.wait_changes(timeout_s=POLL_S))
    return received


def in_namespace(changes: list[Change], namespace: str, kind: str = "Service") -> list[tuple[str, str]]:
    return [(c.type, c.ref.name) for c in changes if c.kind == kind and c.ref.namespace == namespace]


def test_initial_list_then_changes_in_order(desired: KubeDesired, admin_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_service(namespace, lb_service("a"))
    core.create_namespaced_service(namespace, lb_service("b"))
    received: list[Change] = []
    # The first answer is the complete list (the services above may already be in it, or
    # arrive just after if they were created while the watcher was listing).
    collect_until(desired, received, lambda r: {("ADDED", "a"), ("ADDED", "b")} <= set(in_namespace(r, namespace)))
    first_kinds = {c.kind for c in received}
    assert {"Service", "Namespace"} <= first_kinds
    assert all(c.type == "ADDED" for c in received if c.ref.namespace != namespace)
    assert desired.synced and desired.errors() == {}

    core.create_namespaced_service(namespace, lb_service("c"))
    core.patch_namespaced_service("a", namespace, {"metadata": {"labels": {"step": "2"}}})
    core.delete_namespaced_service("b", namespace)
    core.patch_namespaced_service("a", namespace, {"metadata": {"labels": {"step": "3"}}})
    expected = [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b"), ("MODIFIED", "a")]
    collect_until(desired, received, lambda r: len(in_namespace(r, namespace)) >= len(expected))
    assert in_namespace(received, namespace) == expected

    # Wire form: camelCase dicts as the API serves them, kind and apiVersion filled in.
    last_a = [c.obj for c in received if c.ref == Ref("Service", namespace, "a")][-1]
    assert last_a["kind"] == "Service" and last_a["apiVersion"] == "v1"
    assert last_a["spec"]["type"] == "LoadBalancer" and "clusterIPs" in last_a["spec"]
    assert last_a["metadata"]["labels"] == {"step": "3"} and "managedFields" not in last_a["metadata"]
    deleted_b = [c.obj for c in received if c.type == "DELETED"][-1]
    assert deleted_b["metadata"]["name"] == "b"


def test_every_kind_is_watched(desired: KubeDesired, admin_api: client.ApiClient, namespace: str) -> None:
    """One object of each kind, made after the first list, arrives as ADDED with its own kind."""
    received: list[Change] = []
    collect_until(desired, received, lambda r: desired.synced)
    suffix = uuid.uuid4().hex[:8]
    core = client.CoreV1Api(admin_api)
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=f"node-{suffix}", labels={"zone": "a"})))
    core.create_namespaced_service(namespace, lb_service("web"))
    client.DiscoveryV1Api(admin_api).create_namespaced_endpoint_slice(namespace, client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(name="web-1", labels={"kubernetes.io/service-name": "web"}),
        address_type="IPv4",
        endpoints=[client.V1Endpoint(addresses=["10.0.0.1"], node_name=f"node-{suffix}",
                                     conditions=client.V1EndpointConditions(ready=True))],
    ))
    api = Api(admin_api)
    specs = {"MetalLB": {}, "AddressPool": {"protocol": "layer2", "addresses": ["198.18.0.96/28"]},
             "IPAddressPool": {"addresses": ["198.18.0.112/28"]}, "L2Advertisement": {}}
    for kind, spec in specs.items():
        info = KINDS[kind]
        api.request("POST", info.collection_path(OPERATOR_NAMESPACE), what=kind, body={
            "apiVersion": info.api_version, "kind": kind,
            "metadata": {"name": f"w-{suffix}", "namespace": OPERATOR_NAMESPACE}, "spec": spec})
    wanted = {
        Ref("Node", "", f"node-{suffix}"), Ref("Service", namespace, "web"),
        Ref("EndpointSlice", namespace, "web-1"), Ref("Namespace", "", namespace),
        *(Ref(kind, OPERATOR_NAMESPACE, f"w-{suffix}") for kind in specs),
    }
    try:
        collect_until(desired, received, lambda r: wanted <= {c.ref for c in r})
        assert {ref.kind for ref in wanted} == set(NAMESPACED)
        by_ref = {c.ref: c.obj for c in received}
        assert by_ref[Ref("EndpointSlice", namespace, "web-1")]["endpoints"][0]["nodeName"] == f"node-{suffix}"
        assert by_ref[Ref("IPAddressPool", OPERATOR_NAMESPACE, f"w-{suffix}")]["spec"]["autoAssign"] is True
        assert by_ref[Ref("L2Advertisement", OPERATOR_NAMESPACE, f"w-{suffix}")]["apiVersion"] == "metallb.io/v1beta1"
    finally:
        for kind in specs:
            api.request("DELETE", KINDS[kind].object_path(OPERATOR_NAMESPACE, f"w-{suffix}"), what=kind)
        core.delete_node(f"node-{suffix}")


def test_a_second_reader_starts_from_a_full_list(desired: KubeDesired, operator_api: client.ApiClient,
                                                 admin_api: client.ApiClient, namespace: str) -> None:
    client.CoreV1Api(admin_api).create_namespaced_service(namespace, lb_service("keep"))
    first: list[Change] = []
    collect_until(desired, first, lambda r: ("ADDED", "keep") in in_namespace(r, namespace))
    with KubeDesired(operator_api, kinds=("Service",)) as second:
        again: list[Change] = []
        collect_until(second, again, lambda r: ("ADDED", "keep") in in_namespace(r, namespace))
        assert {c.kind for c in again} == {"Service"} and all(c.type == "ADDED" for c in again)


def _server_view(admin_api: client.ApiClient, namespace: str) -> dict[str, str]:
    items = client.CoreV1Api(admin_api).list_namespaced_service(namespace).items
    return {s.metadata.name: s.metadata.resource_version for s in items}


def _world_view(world: World, namespace: str) -> dict[str, str]:
    return {ref.name: obj["metadata"]["resourceVersion"] for ref, obj in world.of_kind("Service")
            if ref.namespace == namespace}


def test_watch_resumes_after_an_api_server_restart_without_losing_events(
    control_plane: ControlPlane, desired: KubeDesired, operator_api: client.ApiClient,
    admin_api: client.ApiClient, namespace: str,
) -> None:
    core = client.CoreV1Api(admin_api)
    for name in ("a", "b", "c"):
        core.create_namespaced_service(namespace, lb_service(name))
    received: list[Change] = []
    collect_until(desired, received, lambda r: len(in_namespace(r, namespace)) >= 3)
    # A watcher that listed before the last writes and then sat still: its resourceVersion
    # predates the restarted API server's watch cache, so it must get a real 410 Gone.
    stale = KindWatcher(Api(operator_api), KINDS["Service"], namespace=None, emit=lambda changes: None)
    stale.relist()
    stale_emitted: list[Change] = []
    stale.emit = stale_emitted.extend
    core.patch_namespaced_service("c", namespace, {"metadata": {"labels": {"before": "restart"}}})
    collect_until(desired, received, lambda r: ("MODIFIED", "c") in in_namespace(r, namespace))

    control_plane.restart_apiserver()
    # Right after it is back, while the watchers are still reconnecting (backing off):
    core.create_namespaced_service(namespace, lb_service("d"))
    core.patch_namespaced_service("a", namespace, {"metadata": {"labels": {"after": "restart"}}})
    core.delete_namespaced_service("b", namespace)

    server = _server_view(admin_api, namespace)

    def converged(changes: list[Change]) -> bool:
        world = World()  # what an operator fed with everything received so far would hold
        for change in changes:
            world.apply(change)
        return _world_view(world, namespace) == server

    collect_until(desired, received, converged)
    mine = [(c.type, c.ref.name, c.obj["metadata"]["resourceVersion"]) for c in received
            if c.kind == "Service" and c.ref.namespace == namespace]
    assert len(mine) == len(set(mine)), f"an event was delivered twice: {mine}"
    after = [(t, n) for t, n, _ in mine[mine.index(next(m for m in mine if m[:2] == ("MODIFIED", "c"))) + 1:]]
    assert sorted(after) == [("ADDED", "d"), ("DELETED", "b"), ("MODIFIED", "a")]

    # The stale watcher: a real 410 from the restarted server, then a relist reporting the diff.
    with pytest.raises(GoneError):
        stale.step()
    stale.step()
    assert stale.relists == 1
    assert sorted((c.type, c.ref.name) for c in stale_emitted if c.ref.namespace == namespace) == [
        ("ADDED", "d"), ("DELETED", "b"), ("MODIFIED", "a"), ("MODIFIED", "c")]
    # Every watcher recovers. (Right after a restart the API server answers 403 for a moment,
    # until its RBAC cache is filled: errors() may briefly show ForbiddenErrors.)
    deadline = time.monotonic() + CONVERGE_S
    while desired.errors():
        assert time.monotonic() < deadline, f"watchers did not recover: {desired.errors()}"
        received.extend(desired.wait_changes(timeout_s=POLL_S))


def test_a_forbidden_watch_is_reported_and_logged_not_swallowed(
    control_plane: ControlPlane, admin_api: client.ApiClient, namespace: str, crds: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An account that may watch Services but not Nodes: errors() names the kind, verb and
    resource; nothing is released to the operator (a partial world would mislead it)."""
    account = service_account_client(control_plane, admin_api, namespace=namespace, cluster_rules=[
        {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]}])
    caplog.set_level(logging.ERROR, logger="raylb.cluster.kube.source")
    with KubeDesired(account, kinds=("Service", "Node")) as source:
        deadline = time.monotonic() + CONVERGE_S
        while "Node" not in source.errors():
            assert time.monotonic() < deadline, "the denial was never reported"
            assert source.wait_changes(timeout_s=POLL_S) == []
        error = source.errors()["Node"]
        assert isinstance(error, ForbiddenError)
        assert str(error).startswith("get nodes: forbidden (HTTP 403)") and 'cannot list resource "nodes"' in str(error)
        assert "Service" not in source.errors()
        assert not source.synced and source.wait_changes(timeout_s=POLL_S) == []
    assert any("watch of Node" in r.getMessage() and "forbidden" in r.getMessage() for r in caplog.records)


def test_stop_ends_every_thread_promptly(operator_api: client.ApiClient, crds: None) -> None:
    source = KubeDesired(operator_api, watch_timeout_s=30)
    received: list[Change] = []
    collect_until(source, received, lambda r: source.synced)
    source.stop()  # each thread is blocked reading an idle 30 s watch right now
    assert not any(thread.is_alive() for thread in source._threads)
    assert source.wait_changes(timeout_s=1) == []
