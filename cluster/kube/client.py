"""raylb's one door to the Kubernetes API: building clients, REST paths, and error translation.

Everything else in raylb.cluster.kube talks to the API server through `Api`, which speaks
plain JSON (the wire dicts the operator reads) over the official client's connection pool,
auth and TLS, and turns every failure into raylb's error tree, so callers decide on retries
by type and never see a library exception:

    RaylbError
    ├── PermanentError            403, 401, 422, 404, other 4xx: retrying the same call won't help
    │   ├── ForbiddenError        403: RBAC denied the verb on the resource (raylb.errors)
    │   ├── InvalidError          422: the API server's schema rejected a field
    │   └── NotFoundError         404
    └── TemporaryError            5xx, 429 (delay from Retry-After), connection errors
        ├── ConflictError         409: stale resourceVersion or already exists; re-read
        └── GoneError             410: the resourceVersion is too old; relist

Messages name the verb, the resource and the server's own explanation, e.g.
``update services/status t-1/web: forbidden (HTTP 403): ... cannot update resource
"services/status" ...``.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from raylb.errors import ForbiddenError, PermanentError, RaylbError, TemporaryError

# (connect, read) timeouts of ordinary requests. A healthy API server answers in milliseconds;
# 30 s bounds a request to one that is overloaded or gone without closing the connection.
REQUEST_TIMEOUT_S = (5.0, 30.0)
# 429 without a usable Retry-After header: wait this long (the API server's own default hint).
DEFAULT_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class KindInfo:
    """Where one kind lives in the REST API."""

    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    operator_namespace_only: bool = False  # raylb reads it only in the operator's namespace

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def _base(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self, namespace: str | None = None) -> str:
        """The list/watch path: in `namespace`, or across all namespaces when None."""
        if self.namespaced and namespace:
            return f"{self._base()}/namespaces/{namespace}/{self.plural}"
        return f"{self._base()}/{self.plural}"

    def object_path(self, namespace: str, name: str, *, subresource: str = "") -> str:
        path = f"{self.collection_path(namespace if self.namespaced else None)}/{name}"
        return f"{path}/{subresource}" if subresource else path

    def describe(self, namespace: str | None, name: str | None = None, *, subresource: str = "") -> str:
        """How an error message names a resource: "services/status t-1/web", "nodes"."""
        resource = f"{self.plural}/{subresource}" if subresource else self.plural
        if self.group:
            resource = f"{resource}.{self.group}"
        where = "/".join(part for part in ((namespace if self.namespaced else None), name) if part)
        if not where and self.namespaced and namespace is None:
            where = "(all namespaces)"
        return f"{resource} {where}" if where else resource


# Every kind raylb reads or writes. metallb.io kinds live in the operator namespace, as with
# MetalLB; AddressPool is read at v1beta1 (its storage version; v1alpha1 is served too).
KINDS: Mapping[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo("MetalLB", "metallb.io", "v1beta1", "metallbs", True, True),
        KindInfo("AddressPool", "metallb.io", "v1beta1", "addresspools", True, True),
        KindInfo("IPAddressPool", "metallb.io", "v1beta1", "ipaddresspools", True, True),
        KindInfo("L2Advertisement", "metallb.io", "v1beta1", "l2advertisements", True, True),
        KindInfo("ServiceL2Status", "metallb.io", "v1beta1", "servicel2statuses", True, True),
        KindInfo("Service", "", "v1", "services", True),
        KindInfo("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True),
        KindInfo("Node", "", "v1", "nodes", False),
        KindInfo("Namespace", "", "v1", "namespaces", False),
        KindInfo("Event", "", "v1", "events", True),
    )
}


def kind_info(kind: str) -> KindInfo:
    try:
        return KINDS[kind]
    except KeyError:
        raise PermanentError(f"raylb does not know the REST path of kind {kind!r}; known: {sorted(KINDS)}") from None


# ---- errors --------------------------------------------------------------------------------


class InvalidError(PermanentError):
    """The API server rejected the object (HTTP 422); the message names the field."""


class NotFoundError(PermanentError):
    """The object does not exist (HTTP 404)."""


class ConflictError(TemporaryError):
    """HTTP 409: the object changed since it was read (or already exists)."""


class GoneError(TemporaryError):
    """HTTP 410: the resourceVersion is older than the API server remembers; relist."""


def _server_message(exc: ApiException) -> str:
    try:
        status = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return str(exc.body or exc.reason or "").strip()
    return str(status.get("message") or exc.reason or "").strip() if isinstance(status, dict) else str(status)


def _retry_after_s(exc: ApiException) -> float:
    headers = exc.headers or {}
    try:
        return max(0.0, float(headers.get("Retry-After", DEFAULT_RETRY_AFTER_S)))
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S


def translate(exc: BaseException, *, verb: str, what: str) -> RaylbError:
    """raylb's error for a failed `verb` on `what` (the caller raises it `from exc`)."""
    if isinstance(exc, RaylbError):
        return exc
    if not isinstance(exc, ApiException) or not exc.status:
        # Refused, reset, timed out, TLS: the server may be back soon.
        cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason else exc
        detail = getattr(exc, "reason", None) if isinstance(exc, ApiException) else None
        return TemporaryError(f"{verb} {what}: API server unreachable: {detail or cause}")
    status = int(exc.status)
    text = f"{verb} {what}: {{}} (HTTP {status}): {_server_message(exc)}"
    if status == 403:
        return ForbiddenError(text.format("forbidden"))
    if status == 401:
        return PermanentError(text.format("unauthorized") + " (check the credentials)")
    if status == 422:
        return InvalidError(text.format("invalid"))
    if status == 404:
        return NotFoundError(text.format("not found"))
    if status == 409:
        return ConflictError(text.format("conflict"), delay_s=0.0)
    if status == 410:
        return GoneError(text.format("gone"), delay_s=0.0)
    if status == 429:
        return TemporaryError(text.format("too many requests"), delay_s=_retry_after_s(exc))
    if status >= 500:
        return TemporaryError(text.format("server error"))
    return PermanentError(text.format("rejected"))


# ---- clients -------------------------------------------------------------------------------


def build_api_client(kubeconfig: str | Path | None = None, *, pool_maxsize: int | None = None) -> client.ApiClient:
    """An ApiClient from, in order: `kubeconfig`, $KUBECONFIG, in-cluster config, ~/.kube/config."""
    configuration = client.Configuration()
    if pool_maxsize is not None:
        configuration.connection_pool_maxsize = pool_maxsize
    env = os.environ.get("KUBECONFIG")
    default = Path("~/.kube/config").expanduser()
    try:
        if kubeconfig is not None or env:
            config.load_kube_config(config_file=str(kubeconfig or env), client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        elif default.exists():
            config.load_kube_config(config_file=str(default), client_configuration=configuration)
        else:
            raise PermanentError(
                "no Kubernetes credentials: pass a kubeconfig path, set $KUBECONFIG, run in a Pod "
                f"(in-cluster config), or create {default}"
            )
    except config.ConfigException as exc:
        source = kubeconfig or env or "in-cluster config"
        raise PermanentError(f"cannot load Kubernetes credentials from {source}: {exc}") from exc
    return client.ApiClient(configuration)


def clone_api_client(api: client.ApiClient, *, pool_maxsize: int) -> client.ApiClient:
    """A new ApiClient with `api`'s server and credentials and its own connection pool.

    Each watch holds one connection for as long as it runs; a pool of their own keeps them
    from crowding out (or being discarded by) the writes made through the original client.
    """
    configuration = copy.deepcopy(api.configuration)
    configuration.connection_pool_maxsize = pool_maxsize
    return client.ApiClient(configuration)


class Api:
    """JSON requests and watch streams through one ApiClient, errors translated."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self._open: set[Any] = set()  # streaming responses, for shutdown()
        self._lock = threading.Lock()
        self._shut = False  # after shutdown(), no new stream opens

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None,
        body: Any,
        content_type: str | None,
        timeout_s: tuple[float, float],
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        serialized = self.api_client.param_serialize(
            method=method, resource_path=path, query_params=query or [], header_params=headers,
            body=body, auth_settings=["BearerToken"],
        )
        return self.api_client.call_api(*serialized, _request_timeout=timeout_s)

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout_s: tuple[float, float] = REQUEST_TIMEOUT_S,
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer. `what` names the resource in errors."""
        verb = _VERBS.get(method, method.lower())
        try:
            response = self._send(method, path, query=query, body=body, content_type=content_type, timeout_s=timeout_s)
            data = response.read()
            if not 200 <= response.status <= 299:
                raise ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, verb=verb, what=what) from exc
        try:
            return json.loads(data) if data else {}
        except ValueError as exc:
            raise TemporaryError(f"{verb} {what}: the API server sent something that is not JSON: {data[:200]!r}") from exc

    def stream(
        self, path: str, *, what: str, query: list[tuple[str, str]], read_timeout_s: float
    ) -> Iterator[dict[str, Any]]:
        """Open a watch (errors raised here, at once); iterate its JSON lines, one dict each,
        until the server ends the stream."""
        if self._shut:
            raise TemporaryError(f"watch {what}: client shut down")
        try:
            response = self._send("GET", path, query=query, body=None, content_type=None,
                                  timeout_s=(REQUEST_TIMEOUT_S[0], read_timeout_s))
            if not 200 <= response.status <= 299:
                data = response.read()
                raise ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, verb="watch", what=what) from exc
        raw = response.response  # the urllib3 response, not yet read
        with self._lock:
            self._open.add(raw)
            shut = self._shut
        if shut:  # shutdown() ran while this stream was opening
            raw.shutdown()
        return self._lines(raw, what=what)

    def _lines(self, raw: Any, *, what: str) -> Iterator[dict[str, Any]]:
        complete = False
        try:
            buffer = b""
            for chunk in raw.stream(64 * 1024, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            complete = True
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise translate(exc, verb="watch", what=what) from exc
        finally:
            with self._lock:
                self._open.discard(raw)
            if not complete:
                raw.close()  # unread data on the connection: never hand it back to the pool
            raw.release_conn()

    def shutdown(self) -> None:
        """Unblock every watch stream now (each ends with a TemporaryError)."""
        with self._lock:
            self._shut = True
            responses = list(self._open)
        for raw in responses:
            try:
                raw.shutdown()
            except (OSError, AttributeError):
                pass

    def close(self) -> None:
        self.shutdown()
        self.api_client.close()


_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
