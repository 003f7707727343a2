"""Every CRD in deploy/crds/ installs on the real API server, and deploy/rbac/ covers them.

Schema behaviour (what the server rejects) is tested with the models; this file is about the
manifests as files: they apply, become Established, and the operator's Role reaches exactly
their resources in its own namespace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from raylb.cluster.kube import manifests
from raylb.cluster.localkube.controlplane import OPERATOR_NAMESPACE, REPO

pytestmark = pytest.mark.kube

CRD_DIR = REPO / "deploy" / "crds"
CRD_FILES = sorted(CRD_DIR.glob("*.yaml"))


def _crd_docs() -> list[dict[str, Any]]:
    return manifests.load_documents(CRD_FILES)


def test_deploy_crds_is_not_empty() -> None:
    assert CRD_FILES, f"no CRDs in {CRD_DIR}"
    assert all(doc["kind"] == "CustomResourceDefinition" for doc in _crd_docs())


@pytest.fixture(scope="module")
def installed(admin_api: client.ApiClient) -> list[dict[str, Any]]:
    docs = _crd_docs()
    manifests.apply_documents(admin_api, docs)
    manifests.wait_crds_established(admin_api, [d["metadata"]["name"] for d in docs], timeout_s=60)
    return docs


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: Path(p).name)
def test_crd_file_installs_and_is_established(admin_api: client.ApiClient, path: Path,
                                               installed: list[dict[str, Any]]) -> None:
    ext = client.ApiextensionsV1Api(admin_api)
    for doc in manifests.load_documents([path]):
        crd = ext.read_custom_resource_definition(doc["metadata"]["name"])
        conditions = {c.type: c.status for c in crd.status.conditions}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
        assert crd.status.accepted_names.plural == doc["spec"]["names"]["plural"]


def test_applying_crds_twice_changes_nothing(admin_api: client.ApiClient, installed: list[dict[str, Any]]) -> None:
    ext = client.ApiextensionsV1Api(admin_api)
    before = {d["metadata"]["name"]: ext.read_custom_resource_definition(d["metadata"]["name"]).metadata.generation
              for d in installed}
    manifests.apply_documents(admin_api, installed)
    after = {name: ext.read_custom_resource_definition(name).metadata.generation for name in before}
    assert after == before


def _plurals(docs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(group, storage-or-first served version, plural) of each CRD."""
    found = []
    for doc in docs:
        spec = doc["spec"]
        versions = [v for v in spec["versions"] if v.get("served")]
        version = next((v for v in versions if v.get("storage")), versions[0])
        found.append((spec["group"], version["name"], spec["names"]["plural"]))
    return found


def test_operator_can_list_every_crd_resource_in_its_namespace_only(
    operator_api: client.ApiClient, installed: list[dict[str, Any]]
) -> None:
    custom = client.CustomObjectsApi(operator_api)
    for group, version, plural in _plurals(installed):
        custom.list_namespaced_custom_object(group, version, OPERATOR_NAMESPACE, plural)
        with pytest.raises(ApiException) as denied:
            custom.list_namespaced_custom_object(group, version, "default", plural)
        assert denied.value.status == 403, (plural, denied.value.body)


@pytest.mark.parametrize("plural", ["metallbs", "ipaddresspools", "l2advertisements", "addresspools"])
def test_operator_cannot_write_configuration_objects(
    operator_api: client.ApiClient, installed: list[dict[str, Any]], plural: str
) -> None:
    group, version, _ = next(p for p in _plurals(installed) if p[2] == plural)
    custom = client.CustomObjectsApi(operator_api)
    with pytest.raises(ApiException) as denied:
        custom.delete_collection_namespaced_custom_object(group, version, OPERATOR_NAMESPACE, plural)
    assert denied.value.status == 403
