"""install() puts raylb's CRDs and RBAC on a real API server; the schema does its share.

Three promises: install() is safe to repeat and leaves every CRD Established; every MetalLB,
IPAddressPool and L2Advertisement sample MetalLB publishes is accepted as written; and what a
schema can express (a missing or mistyped field, a protocol other than layer2/bgp) is
rejected by the API server itself with a 422 that names the field.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from raylb.cluster.kube import manifests
from raylb.cluster.kube.client import KINDS, Api, InvalidError, build_api_client
from raylb.cluster.localkube.controlplane import OPERATOR_NAMESPACE, ControlPlane
from raylb.cluster.kube.install import CRD_DIR, install

pytestmark = pytest.mark.kube

SAMPLE_KINDS = ("MetalLB", "IPAddressPool", "L2Advertisement", "AddressPool")


def test_install_establishes_every_crd_and_is_repeatable(admin_api: client.ApiClient) -> None:
    first = install(admin_api)
    expected = {d["metadata"]["name"] for d in manifests.load_documents([CRD_DIR])}
    assert set(first.crds) == expected
    assert "ServiceAccount metallb-system/raylb-operator" in first.objects
    ext = client.ApiextensionsV1Api(admin_api)
    generations = {}
    for name in expected:
        crd = ext.read_custom_resource_definition(name)
        assert {c.type: c.status for c in crd.status.conditions}.get("Established") == "True", name
        generations[name] = crd.metadata.generation
    second = install(admin_api)
    assert second == first
    assert {n: ext.read_custom_resource_definition(n).metadata.generation for n in expected} == generations


def _sample_docs(shared_data: Path) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((shared_data / "metallb-samples").glob("*.yaml"))
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in files
        for doc in manifests.load_documents([path])
        if doc["kind"] in SAMPLE_KINDS
    ]


def _contains(stored: Any, written: Any) -> bool:
    """Everything written is stored (the server may add defaults, never drop or change)."""
    if isinstance(written, dict):
        return isinstance(stored, dict) and all(_contains(stored.get(k), v) for k, v in written.items())
    return stored == written


def test_every_metallb_sample_installs(admin_api: client.ApiClient, shared_data: Path) -> None:
    install(admin_api, rbac=False)
    samples = _sample_docs(shared_data)
    kinds = {doc["kind"] for _, doc in samples}
    assert {"MetalLB", "IPAddressPool", "L2Advertisement"} <= kinds, kinds
    api = Api(admin_api)
    created: set[tuple[str, str]] = set()
    try:
        # One at a time: several samples share a name, and each must be accepted as written.
        for label, doc in samples:
            assert doc["metadata"].get("namespace", OPERATOR_NAMESPACE) == OPERATOR_NAMESPACE, label
            (stored,) = manifests.apply_documents(admin_api, [doc])
            created.add((doc["kind"], doc["metadata"]["name"]))
            assert _contains(stored.get("spec") or {}, doc.get("spec") or {}), (label, stored.get("spec"))
            assert stored["metadata"]["name"] == doc["metadata"]["name"]
    finally:
        for kind, name in sorted(created):
            api.request("DELETE", KINDS[kind].object_path(OPERATOR_NAMESPACE, name), what=f"{kind} {name}")


def _pool(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "metallb.io/v1beta1",
        "kind": kind,
        "metadata": {"name": f"bad-{uuid.uuid4().hex[:8]}", "namespace": OPERATOR_NAMESPACE},
        "spec": spec,
    }


# (kind, spec, field the 422 must name, words it must contain)
SCHEMA_REJECTS = {
    "IPAddressPool without addresses": ("IPAddressPool", {"autoAssign": True}, "spec.addresses", "Required"),
    "IPAddressPool with empty addresses": ("IPAddressPool", {"addresses": []}, "spec.addresses", "at least 1"),
    "IPAddressPool addresses not a list": ("IPAddressPool", {"addresses": "198.18.0.0/24"}, "spec.addresses",
                                           "array"),
    "IPAddressPool autoAssign not a boolean": ("IPAddressPool", {"addresses": ["198.18.0.0/28"], "autoAssign": "yes"},
                                               "spec.autoAssign", "boolean"),
    "AddressPool protocol not layer2/bgp": ("AddressPool", {"protocol": "ospf", "addresses": ["198.18.0.0/28"]},
                                            "spec.protocol", "Unsupported value"),
    "AddressPool without protocol": ("AddressPool", {"addresses": ["198.18.0.0/28"]}, "spec.protocol", "Required"),
    "L2Advertisement interfaces not a list": ("L2Advertisement", {"interfaces": "eth0"}, "spec.interfaces", "array"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_REJECTS))
def test_api_server_rejects_schema_errors_naming_the_field(admin_api: client.ApiClient, case: str) -> None:
    install(admin_api, rbac=False)
    kind, spec, field, words = SCHEMA_REJECTS[case]
    doc = _pool(kind, spec)
    with pytest.raises(InvalidError) as rejected:
        Api(admin_api).request("POST", KINDS[kind].collection_path(OPERATOR_NAMESPACE), body=doc,
                               what=f"{KINDS[kind].plural} {OPERATOR_NAMESPACE}/{doc['metadata']['name']}")
    message = str(rejected.value)
    assert "(HTTP 422)" in message and field in message and words in message, message
    assert doc["metadata"]["name"] in message


def test_build_api_client_from_a_path_and_from_kubeconfig_env(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    with build_api_client(control_plane.admin_kubeconfig) as api:
        names = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
        assert OPERATOR_NAMESPACE in names
    monkeypatch.setenv("KUBECONFIG", str(control_plane.operator_kubeconfig()))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with build_api_client() as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
        assert review.status.user_info.username == "system:serviceaccount:metallb-system:raylb-operator"
