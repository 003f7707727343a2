"""The speaker group written to the RayCluster raylb runs in (KubeRay, ray.io/v1).

One narrow door: read the RayCluster, ask raylb.speakergroup what to change, send that as one
JSON Patch of the group's workerGroupSpecs entry. Nothing else of the RayCluster is touched,
and the operator's RBAC allows exactly this: get and patch rayclusters in its own namespace
(deploy/rbac/namespace-role.yaml). Errors come out as raylb's error tree
(raylb.cluster.kube.client), naming the RayCluster.
"""

from __future__ import annotations

from kubernetes import client

from raylb.cluster.kube.client import Api, KindInfo
from raylb.speakergroup import GroupRef, GroupShape, group_patch

RAYCLUSTER = KindInfo("RayCluster", "ray.io", "v1", "rayclusters", True, True)
JSON_PATCH = "application/json-patch+json"


class KubeSpeakerGroup:
    """Gives one RayCluster worker group a GroupShape (raylb.actors.speaker_group.GroupPort)."""

    def __init__(self, api_client: client.ApiClient, *, namespace: str, ref: GroupRef) -> None:
        self.api = Api(api_client)
        self.namespace = namespace
        self.ref = ref
        self.path = RAYCLUSTER.object_path(namespace, ref.cluster)
        self.what = RAYCLUSTER.describe(namespace, ref.cluster)
        self.patches = 0  # patch requests sent

    def shape(self, shape: GroupShape) -> bool:
        """Read the RayCluster and patch the group when it differs; True when it patched."""
        current = self.api.request("GET", self.path, what=self.what)
        ops = group_patch(current, self.ref, shape)
        if not ops:
            return False
        self.api.request("PATCH", self.path, what=self.what, body=ops, content_type=JSON_PATCH)
        self.patches += 1
        return True

    def close(self) -> None:
        self.api.close()
