"""The membership key's Secret through the API server (raylb.actors.memberlist_key).

The operator may get and create Secrets in its own namespace only (deploy/rbac), and reads
exactly one: `raylb-memberlist`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raylb.cluster.kube.client import Api, ConflictError, NotFoundError
from raylb.keyring import SECRET_NAME


class KubeSecrets:
    def __init__(self, api: Api, *, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self._path = f"/api/v1/namespaces/{namespace}/secrets"
        self._what = f"secrets {namespace}/{SECRET_NAME}"

    def get(self) -> Mapping[str, Any] | None:
        try:
            return self._api.request("GET", f"{self._path}/{SECRET_NAME}", what=self._what)
        except NotFoundError:
            return None

    def create(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            return self._api.request("POST", self._path, what=self._what, body=dict(obj))
        except ConflictError:  # created meanwhile (409 AlreadyExists): use that one
            found = self.get()
            if found is None:
                raise
            return found
