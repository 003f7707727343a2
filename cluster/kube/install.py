"""Put raylb's manifests on a cluster: the CRDs (deploy/crds) and the RBAC (deploy/rbac).

One call for `raylb lab up`, the benchmark and the tests: apply every document (server-side
apply, so it creates or updates and is safe to repeat; see raylb.cluster.kube.manifests),
then wait until each CRD is Established, because until then the API server answers 404 for
its resources and a watcher would start by failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from raylb.cluster.kube import manifests
from raylb.errors import PermanentError

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "deploy" / "crds"
RBAC_DIR = REPO / "deploy" / "rbac"
# A CRD turns Established within about a second on an idle API server; 60 s bounds a busy one.
ESTABLISHED_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Installed:
    """What install() applied: CRD names, and every object as "Kind namespace/name"."""

    crds: tuple[str, ...]
    objects: tuple[str, ...]


def _describe(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    where = f"{meta['namespace']}/{meta.get('name', '')}" if meta.get("namespace") else meta.get("name", "")
    return f"{doc.get('kind')} {where}"


def install(
    api: client.ApiClient,
    *,
    crds: bool = True,
    rbac: bool = True,
    paths: Sequence[Path] = (),
    timeout_s: float = ESTABLISHED_TIMEOUT_S,
) -> Installed:
    """Apply deploy/crds (if `crds`), deploy/rbac (if `rbac`) and any extra `paths`; wait
    until every applied CRD is Established. Needs cluster-admin rights."""
    sources = [*([CRD_DIR] if crds else []), *([RBAC_DIR] if rbac else []), *paths]
    if not sources:
        return Installed(crds=(), objects=())
    docs = manifests.load_documents(sources)
    if crds and not any(d["kind"] == "CustomResourceDefinition" for d in docs):
        raise PermanentError(f"no CustomResourceDefinition found in {CRD_DIR}; run `raylb crds` to generate them")
    # CRDs and Namespaces first: later documents may be of those kinds or live in them.
    docs.sort(key=lambda d: 0 if d["kind"] in ("Namespace", "CustomResourceDefinition") else 1)
    crd_docs = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    others = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    manifests.apply_documents(api, crd_docs)
    names = tuple(d["metadata"]["name"] for d in crd_docs)
    manifests.wait_crds_established(api, names, timeout_s=timeout_s)
    manifests.apply_documents(api, others)
    return Installed(crds=names, objects=tuple(_describe(d) for d in docs))
