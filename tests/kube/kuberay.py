"""KubeRay v1.5.0 against the test API server: its own CRDs, and its operator as a subprocess.

The cached KubeRay operator (raylb.cluster.localkube.provision) is the one a user installs; run
against the session's API server it creates the Pods a RayCluster asks for (no kubelet runs
them), so a test can read the worker command and ports KubeRay really generates.
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from raylb.cluster.kube import manifests
from raylb.cluster.localkube.controlplane import REPO
from raylb.cluster.localkube.provision import ensure_binaries, kuberay_crds

RAYCLUSTER_YAML = REPO / "deploy" / "kuberay" / "raycluster.yaml"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
STOP_S = 10.0  # SIGTERM grace before SIGKILL
POLL_S = 0.1


# Each KubeRay CRD is ~1 MB of schema; on two busy cores the API server took over a minute to
# establish all three.
ESTABLISHED_S = 300.0


def install_kuberay_crds(admin_api: client.ApiClient, *, only: tuple[str, ...] = ()) -> None:
    """KubeRay v1.5.0's own CRDs (all, or the files named in `only`), created or replaced (another
    module may have installed a later KubeRay's), then waited for until Established."""
    paths = [p for p in kuberay_crds() if not only or p.name in only]
    assert paths, "no KubeRay CRDs in the provisioning cache (run ensure_binaries first)"
    docs = manifests.load_documents(paths)
    for doc in docs:
        try:  # create/replace, not apply: these CRDs are ~1 MB of field-manager data otherwise
            manifests.request(admin_api, "POST", CRD_PATH, body=doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
            path = f"{CRD_PATH}/{doc['metadata']['name']}"
            current = manifests.request(admin_api, "GET", path)
            replacement = copy.deepcopy(doc)
            replacement["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            manifests.request(admin_api, "PUT", path, body=replacement)
    manifests.wait_crds_established(admin_api, [d["metadata"]["name"] for d in docs], timeout_s=ESTABLISHED_S)


def raycluster(namespace: str | None = None) -> dict[str, Any]:
    """deploy/kuberay/raycluster.yaml's RayCluster (optionally moved to `namespace`)."""
    (doc,) = [d for d in manifests.load_documents([RAYCLUSTER_YAML]) if d["kind"] == "RayCluster"]
    if namespace is not None:
        doc["metadata"]["namespace"] = namespace
    return doc


class KubeRayOperator:
    """The cached kuberay-operator binary, watching one namespace, as admin; stopped by PID."""

    def __init__(self, kubeconfig: Path, *, namespace: str, log: Path) -> None:
        binary = ensure_binaries()["kuberay-operator"]
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), f"-kubeconfig={kubeconfig}", f"-watch-namespace={namespace}",
                 "-enable-leader-election=false",
                 # No listening sockets: metrics and health endpoints are not needed here.
                 "-metrics-addr=0", "-health-probe-bind-address=0", "-log-stdout-encoder=console"],
                stdout=out, stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin"},
            )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_for(self, check: Callable[[], Any], *, what: str, timeout_s: float = 90.0) -> Any:
        """Poll check() until truthy (bounded); fail with the operator's log if it exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            assert self.proc.poll() is None, f"kuberay-operator exited ({self.proc.returncode}):\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}\n{self.log_tail()}"
            time.sleep(POLL_S)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_S)
