"""ServiceAccounts with chosen (or no) rights, for tests that prove a denial is reported.

The operator's own account comes from the control plane (deploy/rbac); these are throwaway
accounts in a test namespace, made by the admin client, with a token from the TokenRequest API.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from kubernetes import client

from raylb.cluster.localkube.controlplane import ControlPlane

TOKEN_EXPIRATION_S = 3600


def service_account_client(
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    *,
    namespace: str,
    cluster_rules: Sequence[dict[str, Any]] = (),
) -> client.ApiClient:
    """An ApiClient of a new ServiceAccount in `namespace` holding exactly `cluster_rules`
    (a ClusterRole bound cluster-wide; none when empty)."""
    name = f"sa-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    if cluster_rules:
        rbac = client.RbacAuthorizationV1Api(admin_api)
        rbac.create_cluster_role({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                  "metadata": {"name": f"{namespace}-{name}"}, "rules": list(cluster_rules)})
        rbac.create_cluster_role_binding({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{namespace}-{name}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{namespace}-{name}"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        })
    token = core.create_namespaced_service_account_token(
        name, namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                           expiration_seconds=TOKEN_EXPIRATION_S)),
    ).status.token
    configuration = client.Configuration(host=control_plane.url)
    configuration.ssl_ca_cert = str(control_plane.pki.ca_cert)
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)
