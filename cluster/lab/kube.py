"""The lab's Kubernetes control plane: etcd and kube-apiserver on the control host.

In a real cluster the API server runs on a control-plane machine and raylb's operator reaches
it over the network; in the lab that machine is the control namespace, so the API server
binds the control host's address (198.18.0.1) there and the operator actor, pinned to the
Ray head in the same namespace, reaches it with the kubeconfig written here.

Nothing outside the control namespace can reach 198.18.0.1 (the root namespace has no route to
the lab), and a connection attempt from the root namespace would leave the machine towards
the real 198.18.0.0/15 benchmarking space. So every admin request goes through `admin_api()`,
which enters the control namespace for the calling thread while the client is in use.

Files, all under the lab's state directory (/tmp/rlb-NAME/):
    admin.kubeconfig      cluster-admin (client certificate): what a human uses
    operator.kubeconfig   the metallb-system/raylb-operator ServiceAccount, deploy/rbac/ only
    kube/                 PKI, etcd data and the two servers' logs (etcd.log, kube-apiserver.log)

The servers outlive the process that started them (like the Ray daemons); they stop with the
control namespace, which `Lab.down()` empties by PID.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from raylb.cluster.kube import install, manifests
from raylb.cluster.localkube.controlplane import ControlPlane, https_ok
from raylb.cluster.localkube.provision import Binaries, ensure_binaries
from raylb.cluster.lab import netns as ns
from raylb.cluster.lab.topology import Host

ADMIN_KUBECONFIG = "admin.kubeconfig"
OPERATOR_KUBECONFIG = "operator.kubeconfig"
WORKDIR = "kube"


@dataclass(frozen=True)
class LabKube:
    """Where a lab's API server answers and the files to reach it (stored in lab.json)."""

    url: str
    admin_kubeconfig: str
    operator_kubeconfig: str
    workdir: str
    pids: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pids": list(self.pids)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabKube:
        return cls(
            url=str(data["url"]), admin_kubeconfig=str(data["admin_kubeconfig"]),
            operator_kubeconfig=str(data["operator_kubeconfig"]), workdir=str(data["workdir"]),
            pids=tuple(int(p) for p in data.get("pids", ())),
        )  # fmt: skip

    @property
    def logs(self) -> dict[str, Path]:
        return {name: Path(self.workdir) / f"{name}.log" for name in ("etcd", "kube-apiserver")}


def start(
    control: Host, *, state_dir: Path, binaries: Binaries | None = None,
    progress: Callable[[str], None] = lambda line: None, cluster: bool = False,
) -> tuple[ControlPlane, LabKube]:  # fmt: skip
    """Start etcd + kube-apiserver in `control`'s namespace on its IPv4 address, install the
    CRDs and RBAC, and write both kubeconfigs into `state_dir`. Stops what it started on failure."""
    binaries = binaries or ensure_binaries(progress)
    # The lab owns the servers: they must survive this process (as `raylb lab up` exits) and
    # end with the namespace.
    plane = ControlPlane.start(
        bind_address=str(control.ipv4), netns=control.netns, binaries=binaries, workdir=state_dir / WORKDIR,
        outlive_caller=True, cluster=cluster,
    )
    try:
        with ns.in_netns(control.netns):
            with plane.admin_client() as api:
                install.install(api)
            operator_source = plane.operator_kubeconfig()
        admin = state_dir / ADMIN_KUBECONFIG
        operator = state_dir / OPERATOR_KUBECONFIG
        shutil.copy2(plane.admin_kubeconfig, admin)
        shutil.copy2(operator_source, operator)
    except BaseException:
        plane.stop()
        raise
    info = LabKube(
        url=plane.url, admin_kubeconfig=str(admin), operator_kubeconfig=str(operator),
        workdir=str(plane.workdir), pids=tuple(plane.pids),
    )  # fmt: skip
    return plane, info


def reap(plane: ControlPlane) -> None:
    """After the namespace was emptied: collect the exit status of the servers we spawned."""
    plane.stop()


@contextlib.contextmanager
def admin_api(control: Host, info: LabKube) -> Iterator[client.ApiClient]:
    """A cluster-admin ApiClient, usable ONLY inside the `with` body and only from this thread:
    the thread sits in the control namespace meanwhile, so every connection opens there."""
    with ns.in_netns(control.netns):
        api = config.new_client_from_config(config_file=info.admin_kubeconfig)
        try:
            yield api
        finally:
            api.close()


def apply(control: Host, info: LabKube, paths: list[Path]) -> list[dict[str, Any]]:
    """Server-side apply manifests as cluster-admin; the namespaces they use are created first
    (a fresh API server creates `default` shortly after it turns ready)."""
    docs = manifests.load_documents(paths)
    namespaces = sorted({d["metadata"]["namespace"] for d in docs if (d.get("metadata") or {}).get("namespace")})
    ns_docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces]
    with admin_api(control, info) as api:
        return manifests.apply_documents(api, [*ns_docs, *docs])


def ready(control: Host, info: LabKube) -> bool:
    """True when the API server answers /readyz as the admin, asked from the control namespace."""
    if not ns.exists(control.netns):
        return False
    with contextlib.suppress(OSError), ns.in_netns(control.netns):  # OSError: files gone
        return https_ok(f"{info.url}/readyz", *_admin_credentials(info))
    return False


def _admin_credentials(info: LabKube) -> tuple[str, str, str]:
    """(ca, cert, key) of the admin, as raylb.cluster.localkube.pki names them in the work dir."""
    pki_dir = Path(info.workdir) / "pki"
    return str(pki_dir / "ca.crt"), str(pki_dir / "admin.crt"), str(pki_dir / "admin.key")


def alive_pids(control: Host, info: LabKube) -> list[int]:
    """The recorded server PIDs that still run in the control namespace."""
    running = set(ns.pids(control.netns))
    return [p for p in info.pids if p in running]


__all__ = ["LabKube", "admin_api", "alive_pids", "apply", "ready", "reap", "start"]
