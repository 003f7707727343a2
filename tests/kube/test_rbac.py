"""deploy/rbac/ gives the operator exactly what it needs, and nothing more.

Checked two ways against the real API server: real requests made with the operator
ServiceAccount's token (allowed ones succeed, forbidden ones get 403), and
SelfSubjectAccessReviews for the cases a request cannot easily exercise (e.g. metallb.io
resources before their CRDs exist, other namespaces).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from raylb.cluster.localkube.controlplane import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, RBAC_DIR, ControlPlane
from raylb.keyring import SECRET_NAME

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def target(admin_api: client.ApiClient) -> dict[str, str]:
    """A namespace with a LoadBalancer Service, a Node, a Secret and a ConfigMap, made by admin."""
    ns = f"rbac-{uuid.uuid4().hex[:8]}"
    node = f"node-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
    core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(type="LoadBalancer", ports=[client.V1ServicePort(port=80)]),
    ))
    core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"k": "v"}))
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"k": "v"}))
    return {"namespace": ns, "node": node}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _core_event(ns: str) -> client.CoreV1Event:
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"web.{uuid.uuid4().hex[:12]}"),
        involved_object=client.V1ObjectReference(kind="Service", namespace=ns, name="web", api_version="v1"),
        reason="IPAllocated", message="Assigned IP", type="Normal",
        first_timestamp=_now(), last_timestamp=_now(), count=1,
        source=client.V1EventSource(component="raylb-operator"),
    )


def _events_v1_event(ns: str) -> client.EventsV1Event:
    return client.EventsV1Event(
        metadata=client.V1ObjectMeta(name=f"web.{uuid.uuid4().hex[:12]}"),
        regarding=client.V1ObjectReference(kind="Service", namespace=ns, name="web", api_version="v1"),
        reason="IPAllocated", note="Assigned IP", type="Normal", action="Allocate",
        event_time=_now(), reporting_controller="raylb.io/operator", reporting_instance="raylb-operator-0",
    )


def _drain(response: Any) -> bytes:
    """Read a raw (unpreloaded) response to its end so its connection can be reused."""
    try:
        return response.read()
    finally:
        response.release_conn()


Call = Callable[[client.ApiClient, dict[str, str]], Any]


def _membership_secret(api: client.ApiClient) -> bytes:
    """What the operator does with its Secret: get it, or create it when absent (KubeSecrets)."""
    from raylb.actors.memberlist_key import SecretKeySource  # noqa: PLC0415
    from raylb.cluster.kube.client import Api  # noqa: PLC0415
    from raylb.cluster.kube.secrets import KubeSecrets  # noqa: PLC0415

    source = SecretKeySource(KubeSecrets(Api(api), namespace=OPERATOR_NAMESPACE), namespace=OPERATOR_NAMESPACE)
    key = source.read()
    assert source.read() == key  # read back, not made again
    return key

ALLOWED: dict[str, Call] = {
    "list services (all namespaces)": lambda api, t: client.CoreV1Api(api).list_service_for_all_namespaces(),
    "watch services": lambda api, t: _drain(client.CoreV1Api(api).list_service_for_all_namespaces(
        watch=True, timeout_seconds=1, _preload_content=False)),
    "get a service": lambda api, t: client.CoreV1Api(api).read_namespaced_service("web", t["namespace"]),
    "patch a service annotation": lambda api, t: client.CoreV1Api(api).patch_namespaced_service(
        "web", t["namespace"], {"metadata": {"annotations": {"metallb.io/ip-allocated-from-pool": "p"}}}),
    "patch services/status": lambda api, t: client.CoreV1Api(api).patch_namespaced_service_status(
        "web", t["namespace"], {"status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.240"}]}}}),
    "create a core event": lambda api, t: client.CoreV1Api(api).create_namespaced_event(
        t["namespace"], _core_event(t["namespace"])),
    "create an events.k8s.io event": lambda api, t: client.EventsV1Api(api).create_namespaced_event(
        t["namespace"], _events_v1_event(t["namespace"])),
    "list endpointslices": lambda api, t: client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces(),
    "list nodes": lambda api, t: client.CoreV1Api(api).list_node(),
    "get a node": lambda api, t: client.CoreV1Api(api).read_node(t["node"]),
    "list namespaces": lambda api, t: client.CoreV1Api(api).list_namespace(),
    "create and get the membership key Secret": lambda api, t: _membership_secret(api),
}

FORBIDDEN: dict[str, Call] = {
    "list secrets (all namespaces)": lambda api, t: client.CoreV1Api(api).list_secret_for_all_namespaces(),
    "list secrets (own namespace)": lambda api, t: client.CoreV1Api(api).list_namespaced_secret(OPERATOR_NAMESPACE),
    "get a secret": lambda api, t: client.CoreV1Api(api).read_namespaced_secret("s", t["namespace"]),
    "get another secret in its own namespace": lambda api, t: client.CoreV1Api(api).read_namespaced_secret(
        "other", OPERATOR_NAMESPACE),
    "create a secret elsewhere": lambda api, t: client.CoreV1Api(api).create_namespaced_secret(
        t["namespace"], client.V1Secret(metadata=client.V1ObjectMeta(name=SECRET_NAME), string_data={"k": "v"})),
    "update the membership key Secret": lambda api, t: client.CoreV1Api(api).patch_namespaced_secret(
        SECRET_NAME, OPERATOR_NAMESPACE, {"metadata": {"labels": {"x": "y"}}}),
    "delete the membership key Secret": lambda api, t: client.CoreV1Api(api).delete_namespaced_secret(
        SECRET_NAME, OPERATOR_NAMESPACE),
    "get a configmap": lambda api, t: client.CoreV1Api(api).read_namespaced_config_map("c", t["namespace"]),
    "delete a service": lambda api, t: client.CoreV1Api(api).delete_namespaced_service("web", t["namespace"]),
    "create a service": lambda api, t: client.CoreV1Api(api).create_namespaced_service(
        t["namespace"], client.V1Service(metadata=client.V1ObjectMeta(name="x"),
                                         spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=1)]))),
    "create a namespace": lambda api, t: client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=f"x-{uuid.uuid4().hex[:6]}"))),
    "patch a node": lambda api, t: client.CoreV1Api(api).patch_node(t["node"], {"metadata": {"labels": {"x": "y"}}}),
    "patch nodes/status": lambda api, t: client.CoreV1Api(api).patch_node_status(t["node"], {"status": {}}),
    "create an endpointslice": lambda api, t: client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
        t["namespace"], client.V1EndpointSlice(metadata=client.V1ObjectMeta(name="x"), address_type="IPv4",
                                               endpoints=[])),
    "list pods": lambda api, t: client.CoreV1Api(api).list_pod_for_all_namespaces(),
    "create a serviceaccount token": lambda api, t: client.CoreV1Api(api).create_namespaced_service_account_token(
        OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[]))),
    "list clusterroles": lambda api, t: client.RbacAuthorizationV1Api(api).list_cluster_role(),
}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_operator_may(name: str, operator_api: client.ApiClient, target: dict[str, str]) -> None:
    ALLOWED[name](operator_api, target)


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_operator_may_not(name: str, operator_api: client.ApiClient, target: dict[str, str]) -> None:
    with pytest.raises(ApiException) as denied:
        FORBIDDEN[name](operator_api, target)
    assert denied.value.status == 403, denied.value.body


def test_forbidden_calls_are_allowed_for_admin(admin_api: client.ApiClient, target: dict[str, str]) -> None:
    """The 403s above come from RBAC, not from a broken request: admin may do the reads."""
    core = client.CoreV1Api(admin_api)
    core.read_namespaced_secret("s", target["namespace"])
    core.read_namespaced_config_map("c", target["namespace"])
    core.list_pod_for_all_namespaces()


# (verb, group, resource, subresource, namespace, allowed)
ACCESS_TABLE = [
    ("list", "", "services", "", "", True),
    ("watch", "", "services", "", "", True),
    ("update", "", "services", "status", "default", True),
    ("patch", "", "services", "status", "default", True),
    ("create", "", "services", "", "default", False),
    ("delete", "", "services", "", "default", False),
    ("watch", "discovery.k8s.io", "endpointslices", "", "", True),
    ("update", "discovery.k8s.io", "endpointslices", "", "default", False),
    ("watch", "", "nodes", "", "", True),
    ("update", "", "nodes", "", "", False),
    ("watch", "", "namespaces", "", "", True),
    ("create", "", "events", "", "default", True),
    ("patch", "events.k8s.io", "events", "", "default", True),
    ("delete", "", "events", "", "default", False),
    ("get", "", "secrets", "", OPERATOR_NAMESPACE, False),  # only raylb-memberlist, by name
    ("create", "", "secrets", "", OPERATOR_NAMESPACE, True),
    ("create", "", "secrets", "", "default", False),
    ("list", "", "secrets", "", OPERATOR_NAMESPACE, False),
    ("watch", "", "secrets", "", OPERATOR_NAMESPACE, False),
    ("list", "", "secrets", "", "", False),
    ("get", "", "configmaps", "", OPERATOR_NAMESPACE, False),
    ("create", "coordination.k8s.io", "leases", "", OPERATOR_NAMESPACE, False),
    # metallb.io in the operator namespace: read config, write its status only.
    ("list", "metallb.io", "metallbs", "", OPERATOR_NAMESPACE, True),
    ("watch", "metallb.io", "addresspools", "", OPERATOR_NAMESPACE, True),
    ("watch", "metallb.io", "ipaddresspools", "", OPERATOR_NAMESPACE, True),
    ("watch", "metallb.io", "l2advertisements", "", OPERATOR_NAMESPACE, True),
    ("patch", "metallb.io", "metallbs", "status", OPERATOR_NAMESPACE, True),
    ("update", "metallb.io", "ipaddresspools", "status", OPERATOR_NAMESPACE, True),
    ("update", "metallb.io", "ipaddresspools", "", OPERATOR_NAMESPACE, False),
    ("create", "metallb.io", "ipaddresspools", "", OPERATOR_NAMESPACE, False),
    ("delete", "metallb.io", "metallbs", "", OPERATOR_NAMESPACE, False),
    ("create", "metallb.io", "servicel2statuses", "", OPERATOR_NAMESPACE, True),
    ("delete", "metallb.io", "servicel2statuses", "", OPERATOR_NAMESPACE, True),
    ("patch", "metallb.io", "servicel2statuses", "status", OPERATOR_NAMESPACE, True),
    # ...and nowhere else.
    ("list", "metallb.io", "ipaddresspools", "", "default", False),
    ("create", "metallb.io", "servicel2statuses", "", "default", False),
    ("list", "metallb.io", "ipaddresspools", "", "", False),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", "", "", False),
    # The speakers' RayCluster: read and patch it in the operator namespace, nothing more.
    ("get", "ray.io", "rayclusters", "", OPERATOR_NAMESPACE, True),
    ("patch", "ray.io", "rayclusters", "", OPERATOR_NAMESPACE, True),
    ("list", "ray.io", "rayclusters", "", OPERATOR_NAMESPACE, False),
    ("watch", "ray.io", "rayclusters", "", OPERATOR_NAMESPACE, False),
    ("update", "ray.io", "rayclusters", "", OPERATOR_NAMESPACE, False),
    ("create", "ray.io", "rayclusters", "", OPERATOR_NAMESPACE, False),
    ("delete", "ray.io", "rayclusters", "", OPERATOR_NAMESPACE, False),
    ("patch", "ray.io", "rayclusters", "status", OPERATOR_NAMESPACE, False),
    ("get", "ray.io", "rayclusters", "", "default", False),
    ("patch", "ray.io", "rayclusters", "", "default", False),
    ("patch", "ray.io", "rayjobs", "", OPERATOR_NAMESPACE, False),
    ("patch", "ray.io", "rayservices", "", OPERATOR_NAMESPACE, False),
]


@pytest.mark.parametrize(("verb", "group", "resource", "subresource", "namespace", "allowed"), ACCESS_TABLE)
def test_self_subject_access_review(
    operator_api: client.ApiClient, verb: str, group: str, resource: str, subresource: str,
    namespace: str, allowed: bool,
) -> None:
    review = client.AuthorizationV1Api(operator_api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=resource, subresource=subresource or None,
                namespace=namespace or None,
            ),
        )),
    )
    assert review.status.allowed is allowed, review.status.reason


def test_operator_token_identifies_the_service_account(operator_api: client.ApiClient) -> None:
    review = client.AuthenticationV1Api(operator_api).create_self_subject_review(
        client.V1SelfSubjectReview())
    info = review.status.user_info
    assert info.username == f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    assert "system:serviceaccounts" in info.groups


def test_rbac_manifests_have_no_wildcards_and_no_secrets() -> None:
    """Static guard: least privilege cannot be widened by a '*' or a Secret rule slipping in:
    the only Secret rights are get of raylb-memberlist by name and create, in the operator's
    namespace."""
    rules = [
        rule
        for path in sorted(RBAC_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] in ("ClusterRole", "Role")
        for rule in doc["rules"]
    ]
    assert rules
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not {"configmaps", "pods"} & set(rule["resources"]), rule
        if "secrets" in rule["resources"]:
            assert rule["resources"] == ["secrets"] and rule["apiGroups"] == [""], rule
            assert rule in ({"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET_NAME], "verbs": ["get"]},
                            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}), rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_operator_kubeconfig_is_reused(control_plane: ControlPlane) -> None:
    assert control_plane.operator_kubeconfig() == control_plane.operator_kubeconfig()
