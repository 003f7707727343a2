"""Apply YAML manifests (deploy/rbac, deploy/crds, samples) to an API server, idempotently.

`kubectl apply` is not on this machine and the client library's `create_from_yaml` fails on
objects that already exist, so this is server-side apply in a few lines: each document is
PATCHed with `application/apply-patch+yaml` under one field manager, which creates the object
or updates it to match. The REST path of a kind comes from the API server's discovery
document for its group/version (one GET per group/version, cached per call).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from raylb.errors import PermanentError

FIELD_MANAGER = "raylb"


def load_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every non-empty YAML document of the given files (directories: their *.yaml, sorted)."""
    docs: list[dict[str, Any]] = []
    for path in paths:
        files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if doc:
                    if "kind" not in doc or "apiVersion" not in doc:
                        raise PermanentError(f"{file}: a document has no kind/apiVersion: {doc!r:.200}")
                    docs.append(doc)
    return docs


def _group_version_path(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


class _Discovery:
    """kind -> (plural, namespaced) per group/version, fetched on first use."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._kinds: dict[str, dict[str, tuple[str, bool]]] = {}

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        kinds = self._kinds.get(api_version)
        if kinds is None or kind not in kinds:
            kinds = self._fetch(api_version)
            self._kinds[api_version] = kinds
        if kind not in kinds:
            raise PermanentError(f"the API server does not serve kind {kind!r} in {api_version!r}")
        return kinds[kind]

    def _fetch(self, api_version: str) -> dict[str, tuple[str, bool]]:
        try:
            data = request(self._api, "GET", _group_version_path(api_version))
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return {
            r["kind"]: (r["name"], bool(r["namespaced"]))
            for r in data.get("resources", [])
            if "/" not in r["name"]  # skip subresources such as services/status
        }


def request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str | None = None,
) -> Any:
    """One raw REST call through `api` (its auth and TLS); JSON is decoded, text returned as is.

    Raises the client's ApiException subclasses (ForbiddenException, ...) on a non-2xx answer.
    """
    headers = {"Accept": "application/json, */*"}
    if content_type:
        headers["Content-Type"] = content_type
    serialized = api.param_serialize(
        method=method, resource_path=path, query_params=query or [], header_params=headers,
        body=body, auth_settings=["BearerToken"],
    )
    response = api.call_api(*serialized)
    data = response.read()
    text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=text, data=None)
    try:
        return json.loads(text)
    except ValueError:
        return text


def object_path(api: client.ApiClient, doc: dict[str, Any], *, discovery: _Discovery | None = None) -> str:
    """REST path of the object a manifest document describes."""
    discovery = discovery or _Discovery(api)
    plural, namespaced = discovery.resource(doc["apiVersion"], doc["kind"])
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise PermanentError(f"{doc['kind']} without metadata.name cannot be applied")
    base = _group_version_path(doc["apiVersion"])
    if namespaced:
        namespace = meta.get("namespace") or "default"
        return f"{base}/namespaces/{namespace}/{plural}/{name}"
    return f"{base}/{plural}/{name}"


def apply_documents(
    api: client.ApiClient, docs: Iterable[dict[str, Any]], *, field_manager: str = FIELD_MANAGER
) -> list[dict[str, Any]]:
    """Server-side apply each document, in order; returns the objects as the server stored them."""
    discovery = _Discovery(api)
    applied = []
    for doc in docs:
        path = object_path(api, doc, discovery=discovery)
        applied.append(
            request(
                api, "PATCH", path, body=doc, content_type="application/apply-patch+yaml",
                query=[("fieldManager", field_manager), ("force", "true")],
            )
        )
    return applied


def apply_paths(api: client.ApiClient, paths: Iterable[Path], *, field_manager: str = FIELD_MANAGER) -> list[dict[str, Any]]:
    """Apply every document of the given files/directories (namespaces first)."""
    docs = load_documents(paths)
    docs.sort(key=lambda d: 0 if d["kind"] in ("Namespace", "CustomResourceDefinition") else 1)
    return apply_documents(api, docs, field_manager=field_manager)


def wait_crds_established(api: client.ApiClient, names: Iterable[str], *, timeout_s: float = 60.0) -> None:
    """Poll until every named CRD reports condition Established=True (bounded by timeout_s)."""
    ext = client.ApiextensionsV1Api(api)
    pending = set(names)
    deadline = time.monotonic() + timeout_s
    while pending:
        for name in sorted(pending):
            crd = ext.read_custom_resource_definition(name)
            conditions = (crd.status.conditions if crd.status else None) or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                pending.discard(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise PermanentError(f"CRDs not Established after {timeout_s:.0f} s: {sorted(pending)}")
        time.sleep(0.1)
