"""The operator keeps the speakers' KubeRay worker group sized to the matching Nodes, for real.

The real API server with KubeRay v1.5.0's CRDs, the RayCluster of deploy/kuberay/raycluster.yaml,
Nodes created here, and the operator (KubeDesired + KubeResults + OperatorCore) running as the
raylb-operator ServiceAccount with deploy/rbac's rights, with the speaker group named as
rayjob.yaml names it. Each test labels its own Nodes with a value of its own, and the MetalLB
resource selects that value, so Nodes other tests left behind never count.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from raylb.actors.speaker_group import SpeakerGroupKeeper
from raylb.cluster.kube import manifests
from raylb.cluster.kube.bench import RunningOperator
from raylb.cluster.localkube.controlplane import OPERATOR_NAMESPACE
from raylb.cluster.kube.install import install
from raylb.cluster.kube.raycluster import RAYCLUSTER, KubeSpeakerGroup
from raylb.speakergroup import BASE_TOLERATIONS, GroupRef
from tests.kube.kuberay import install_kuberay_crds, raycluster
from tests.kube.test_operator_kube import _wipe, wait_for

pytestmark = pytest.mark.kube

REF = GroupRef("raylb", "speakers")  # as deploy/kuberay/rayjob.yaml names it
LABEL = "raylb.test/speakers"
RECHECK_S = 1.0
STARTED: list[RunningOperator] = []  # the running operators, for failure messages  # a RayCluster edited behind the operator's back is put right within this long here


@pytest.fixture(scope="module")
def kuberay(admin_api: client.ApiClient) -> None:
    install(admin_api)  # metallb.io CRDs and deploy/rbac
    install_kuberay_crds(admin_api, only=("ray.io_rayclusters.yaml",))


@pytest.fixture
def cluster(admin_api: client.ApiClient, kuberay: None) -> Iterator[dict[str, Any]]:
    """RayCluster raylb from deploy/ in the operator namespace, and no raylb configuration."""
    _wipe(admin_api)
    doc = raycluster()
    path = manifests.object_path(admin_api, doc)
    _delete(admin_api, path)
    manifests.request(admin_api, "POST", path.rsplit("/", 1)[0], body=doc)
    yield doc
    _delete(admin_api, path)
    _wipe(admin_api)


def _delete(admin_api: client.ApiClient, path: str) -> None:
    try:
        manifests.request(admin_api, "DELETE", path)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def start(operator_api: client.ApiClient, cluster: dict[str, Any]) -> Iterator[Callable[..., RunningOperator]]:
    """Starts an operator with a speaker-group keeper (the operator ServiceAccount's rights)."""
    started: list[RunningOperator] = []

    def run(ref: GroupRef = REF) -> RunningOperator:
        port = KubeSpeakerGroup(operator_api, namespace=OPERATOR_NAMESPACE, ref=ref)
        running = RunningOperator(operator_api, speaker_group=SpeakerGroupKeeper(port, recheck_s=RECHECK_S, retry_s=0.5))
        started.append(running)
        STARTED[:] = started
        return running

    yield run
    for running in started:
        running.stop()


@pytest.fixture
def nodes(admin_api: client.ApiClient) -> Iterator["Nodes"]:
    made = Nodes(client.CoreV1Api(admin_api))
    yield made
    made.delete_all()


class Nodes:
    """Nodes this test creates, labelled LABEL=<value>; deleted afterwards."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self.prefix = f"sg-{uuid.uuid4().hex[:6]}"
        self.made: set[str] = set()

    def add(self, name: str, value: str | None, *, taints: list[dict[str, str]] | None = None) -> str:
        full = f"{self.prefix}-{name}"
        labels = {LABEL: value} if value is not None else {}
        self.core.create_node({"metadata": {"name": full, "labels": labels}, "spec": {"taints": taints or []}})
        self.made.add(full)
        return full

    def relabel(self, name: str, value: str | None) -> None:
        self.core.patch_node(f"{self.prefix}-{name}", {"metadata": {"labels": {LABEL: value}}})

    def delete(self, name: str) -> None:
        self.core.delete_node(f"{self.prefix}-{name}")
        self.made.discard(f"{self.prefix}-{name}")

    def delete_all(self) -> None:
        for name in sorted(self.made):
            self.core.delete_node(name)


def metallb(admin_api: client.ApiClient, **spec: Any) -> None:
    manifests.apply_documents(admin_api, [{"apiVersion": "metallb.io/v1beta1", "kind": "MetalLB",
                                           "metadata": {"name": "metallb", "namespace": OPERATOR_NAMESPACE},
                                           "spec": spec}])


def group(admin_api: client.ApiClient) -> dict[str, Any]:
    doc = manifests.request(admin_api, "GET", RAYCLUSTER.object_path(OPERATOR_NAMESPACE, REF.cluster))
    (found,) = [g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == REF.group]
    return found


def wait_group(admin_api: client.ApiClient, replicas: int, selector: dict[str, str],
               tolerations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Until the group has `replicas` (all three fields), `selector` and `tolerations` (default: the base ones)."""
    wanted = tolerations if tolerations is not None else [dict(t) for t in BASE_TOLERATIONS]

    def shaped() -> dict[str, Any] | None:
        g = group(admin_api)
        spec = g["template"]["spec"]
        ok = (g.get("replicas"), g.get("minReplicas"), g.get("maxReplicas")) == (replicas,) * 3 and (
            spec.get("nodeSelector") or {}) == selector and spec.get("tolerations") == wanted
        return g if ok else None

    try:
        return wait_for(shaped, what=f"speaker group with {replicas} replicas, nodeSelector {selector}")
    except AssertionError as exc:
        g = group(admin_api)
        raise AssertionError(f"{exc}; nodes seen: {[(o['metadata']['name'], o['metadata'].get('labels'), o.get('spec')) for r in STARTED for _, o in r.core.world.of_kind('Node')]}, applied: {[r.core.speaker_group.applied for r in STARTED if r.core.speaker_group]}; the group has replicas {g.get('replicas')}, nodeSelector "
                             f"{g['template']['spec'].get('nodeSelector')}, tolerations {g['template']['spec'].get('tolerations')}") from None


def test_the_group_follows_the_nodes_that_match_the_metallb_node_selector(
    admin_api: client.ApiClient, start: Callable[..., RunningOperator], nodes: Nodes
) -> None:
    value, other = f"v-{nodes.prefix}", f"w-{nodes.prefix}"
    for name in ("a", "b"):
        nodes.add(name, value)
    nodes.add("c", other)
    nodes.add("d", None)
    assert group(admin_api)["replicas"] == 0, "deploy/ starts the group empty"
    metallb(admin_api, nodeSelector={LABEL: value})
    running = start()
    selector = {LABEL: value}
    wait_group(admin_api, 2, selector)

    nodes.add("e", value)  # a node that joins gets a speaker
    wait_group(admin_api, 3, selector)
    nodes.delete("a")  # a node that leaves shrinks the group
    wait_group(admin_api, 2, selector)
    nodes.relabel("c", value)  # relabelling a node in ...
    wait_group(admin_api, 3, selector)
    nodes.relabel("b", other)  # ... and out
    wait_group(admin_api, 2, selector)

    metallb(admin_api, nodeSelector={LABEL: other})  # changing the nodeSelector moves the speakers
    wait_group(admin_api, 1, {LABEL: other})
    assert running.core.counters.write_failures == 0, running.core.counters.last_error


def test_tainted_nodes_count_once_speaker_tolerations_let_them_in(
    admin_api: client.ApiClient, start: Callable[..., RunningOperator], nodes: Nodes
) -> None:
    value = f"v-{nodes.prefix}"
    nodes.add("plain", value)
    nodes.add("db", value, taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
    nodes.add("cp", value, taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    metallb(admin_api, nodeSelector={LABEL: value})
    start()
    wait_group(admin_api, 2, {LABEL: value})  # control-plane taint tolerated, dedicated=db not
    toleration = {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}
    metallb(admin_api, nodeSelector={LABEL: value}, speakerTolerations=[toleration])
    wait_group(admin_api, 3, {LABEL: value}, [*map(dict, BASE_TOLERATIONS), toleration])


def test_an_edited_group_is_put_right_and_deleting_metallb_empties_it(
    admin_api: client.ApiClient, start: Callable[..., RunningOperator], nodes: Nodes
) -> None:
    value = f"v-{nodes.prefix}"
    nodes.add("a", value)
    metallb(admin_api, nodeSelector={LABEL: value})
    running = start()
    wait_group(admin_api, 1, {LABEL: value})
    # `kubectl apply -k deploy/` again: the manifest's replicas and tolerations come back.
    manifests.apply_documents(admin_api, [raycluster()])
    assert group(admin_api)["replicas"] == 0
    wait_group(admin_api, 1, {LABEL: value})
    manifests.request(admin_api, "DELETE", f"/apis/metallb.io/v1beta1/namespaces/{OPERATOR_NAMESPACE}/metallbs/metallb")
    wait_group(admin_api, 0, {})
    assert running.core.counters.write_failures == 0, running.core.counters.last_error


def test_a_missing_raycluster_is_reported_and_the_operator_goes_on(
    admin_api: client.ApiClient, start: Callable[..., RunningOperator], nodes: Nodes
) -> None:
    metallb(admin_api)
    running = start(GroupRef("no-such-cluster", "speakers"))
    running.wait_deployed()
    wait_for(lambda: running.core.counters.write_failures >= 2, what="the failure counted, and tried again")
    assert "rayclusters.ray.io metallb-system/no-such-cluster: not found" in running.core.counters.last_error
    assert running.core.counters.failures == 0, "no round failed"
    assert group(admin_api)["replicas"] == 0, "the real RayCluster is not touched"
