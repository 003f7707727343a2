"""The real control plane every test in tests/kube/ talks to: one per session.

Starting etcd and kube-apiserver costs seconds, so the whole folder shares one pair; tests
isolate themselves by creating their own namespaces (see `namespace`). The binaries come from
`raylb.cluster.localkube.provision` (fast when cached; the first build takes minutes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from raylb.cluster.localkube.controlplane import ControlPlane
from raylb.cluster.localkube.provision import ensure_binaries


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A running ControlPlane: `.url`, `.admin_kubeconfig`, `.admin_client()`,
    `.operator_kubeconfig()`, `.operator_client()`, `.restart_apiserver()`."""
    plane = ControlPlane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def admin_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """ApiClient with cluster-admin rights."""
    with control_plane.admin_client() as api:
        yield api


@pytest.fixture(scope="session")
def operator_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """ApiClient of the metallb-system/raylb-operator ServiceAccount (deploy/rbac applied)."""
    with control_plane.operator_client() as api:
        yield api


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test. Deleting it afterwards only marks it Terminating (the
    namespace controller lives in kube-controller-manager, which is not run); harmless."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Provision the binaries before any test runs when kube tests are selected.

    A first build takes minutes; done here it is outside every test's timeout and its
    progress lines reach the terminal. Later sessions find the cache and return at once.
    """
    if config.option.collectonly or not any(item.get_closest_marker("kube") for item in items):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[provision] {line}")

    ensure_binaries(say)
