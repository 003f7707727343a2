"""raylb on the lab's Kubernetes cluster, deployed the way its README tells a user to.

On a lab started with kubelets (`raylb lab up --kubernetes`; the KubeRay operator already runs
on the control host, see kubecluster.control_addons_argv) `install` does what a user does,
with the lab's kubectl as the cluster admin:

1. the raylb image (built from deploy/kuberay/Dockerfile) is imported into every node's
   containerd, which is the lab's stand-in for pushing it to a registry;
2. `kubectl apply -f deploy/rbac/namespace.yaml`, then the two Secrets raycluster.yaml asks
   for (`raylb-ray-token`, `raylb-redis`);
3. a Redis for the head's GCS fault tolerance: raycluster.yaml names
   redis.metallb-system.svc:6379 and leaves running it to the user. The lab's Redis runs on the
   control host, and a Service without selector (with its EndpointSlice) points that name at it;
4. `kubectl apply -k deploy/`, then the MetalLB resource and pools of a manifest
   (deploy/examples/demo.yaml by default).

Then KubeRay starts the RayCluster (head as an ordinary pod, no workers), the RayJob submits
`raylb run --speaker-group raylb/speakers`, and the operator grows the speaker group to one
worker per Node. `wait_speakers` returns once `raylb status`, run in the head pod with
`kubectl exec`, lists a live speaker on every node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from raylb.cluster.localkube.controlplane import REPO
from raylb.cluster.lab import images
from raylb.cluster.lab.hosts import http_get
from raylb.cluster.lab.redis import REDIS_PORT, write_secret
from raylb.errors import RaylbError

NAMESPACE = "metallb-system"
DEPLOY = REPO / "deploy"
DEMO_MANIFEST = DEPLOY / "examples" / "demo.yaml"
RAYCLUSTER = "raylb"
HEAD_CONTAINER = "ray-head"
#: The Secrets raycluster.yaml reads, and the files in the lab's state directory that hold them.
TOKEN_SECRET, REDIS_SECRET = "raylb-ray-token", "raylb-redis"
TOKEN_FILE = "incluster-ray-token"
#: The name raycluster.yaml's gcsFaultToleranceOptions.redisAddress gives the user's Redis.
REDIS_SERVICE, REDIS_SERVICE_PORT = "redis", 6379
#: KubeRay's head pod starts a Ray head from a 250 MB image on two busy cores.
READY_TIMEOUT_S = 420.0
POLL_S = 1.0
KUBECTL_TIMEOUT_S = 120.0


class InClusterError(RaylbError):
    """raylb did not come up on the lab's Kubernetes cluster; the message says how far it got."""


Progress = Callable[[str], None]


class InCluster:
    """The lab's kubectl as cluster admin, and what raylb in the cluster looks like through it."""

    def __init__(self, lab: Any) -> None:
        if not lab.kubelets or lab.kube is None:
            raise InClusterError(f"lab {lab.name!r} has no kubelets: start it with `raylb lab up --kubernetes`")
        self.lab = lab

    # --- kubectl ---------------------------------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True, timeout_s: float = KUBECTL_TIMEOUT_S) -> str:
        """`kubectl ARGS` as the cluster admin from the control host; its stdout."""
        argv = [str(self.lab.kube_binary("kubectl")), f"--kubeconfig={self.lab.kube.admin_kubeconfig}", *args]
        done = self.lab.run(self.lab.control, argv, check=False, timeout_s=timeout_s)
        if check and done.returncode != 0:
            raise InClusterError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply_documents(self, documents: Sequence[dict[str, Any]], name: str) -> None:
        path = self.lab.state_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        self.kubectl("apply", "-f", str(path))

    # --- install ---------------------------------------------------------------------------------

    def install(self, *, manifest: Path | None = DEMO_MANIFEST, progress: Progress = lambda line: None) -> None:
        """Steps 1-4 of the module's docstring (4 only with a `manifest`); returns once KubeRay
        has the RayCluster."""
        self.import_image(progress)
        progress("namespace, Secrets and the Redis Service")
        self.kubectl("apply", "-f", str(DEPLOY / "rbac" / "namespace.yaml"))
        self.create_secrets()
        self.lab.start_redis()
        self.apply_documents(redis_service(self.lab.control.ipv4), "incluster-redis")
        progress("kubectl apply -k deploy/")
        self.kubectl("apply", "-k", str(DEPLOY))
        self.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                     *(f"crd/{p.stem.split('_', 1)[1]}.metallb.io" for p in sorted((DEPLOY / "crds").glob("*.yaml"))))
        if manifest is not None:
            progress(f"kubectl apply -f {manifest.relative_to(REPO) if manifest.is_relative_to(REPO) else manifest}")
            self.kubectl("apply", "-f", str(manifest))

    def import_image(self, progress: Progress) -> None:
        """The raylb image into every node's containerd (and into nodes started later)."""
        built = images.ensure_images(progress)
        raylb = built["raylb"]
        if raylb not in self.lab.node_images:
            self.lab.node_images.append(raylb)
        for node in self.lab.nodes:
            if not self.lab.pids(node):  # a stopped node gets it from `node_images` when it starts
                continue
            progress(f"importing {raylb.reference} into {node.name}'s containerd")
            images.import_into(raylb, containerd_socket=self.lab.containerd_socket(node))

    def create_secrets(self) -> None:
        """The README's two `kubectl create secret generic` commands, values from the lab's files."""
        token = self.lab.state_dir / TOKEN_FILE
        if not self.lab.redis.password_path.exists():
            self.lab.redis.write_config()
        values = ((TOKEN_SECRET, "token", write_secret(token)),
                  (REDIS_SECRET, "password", self.lab.redis.password_path.read_text().strip()))
        for name, key, value in values:
            if not self.get_or_none("-n", NAMESPACE, "secret", name):
                self.kubectl("-n", NAMESPACE, "create", "secret", "generic", name, f"--from-literal={key}={value}")

    def get_or_none(self, *args: str) -> dict[str, Any] | None:
        out = self.kubectl("get", *args, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    # --- waiting ---------------------------------------------------------------------------------

    def head_pod(self) -> str | None:
        pods = self.get("-n", NAMESPACE, "pods", "-l", f"ray.io/cluster={RAYCLUSTER},ray.io/node-type=head")
        running = [p["metadata"]["name"] for p in pods["items"] if p.get("status", {}).get("phase") == "Running"]
        return running[0] if running else None

    def head_node(self) -> str:
        """The Node the Ray head pod runs on."""
        pods = self.get("-n", NAMESPACE, "pods", "-l", f"ray.io/cluster={RAYCLUSTER},ray.io/node-type=head")
        (node,) = {p["spec"]["nodeName"] for p in pods["items"] if p.get("status", {}).get("phase") == "Running"}
        return str(node)

    def status(self) -> dict[str, Any] | None:
        """`raylb status --json` run in the head pod, or None while that cannot answer."""
        head = self.head_pod()
        if head is None:
            return None
        out = self.kubectl("-n", NAMESPACE, "exec", head, "-c", HEAD_CONTAINER, "--",
                           "raylb", "status", "--json", check=False)
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            return None

    def wait_speakers(self, nodes: Sequence[str], *, timeout_s: float = READY_TIMEOUT_S,
                      progress: Progress = lambda line: None) -> dict[str, Any]:
        """The status once the in-cluster operator runs and a live speaker is on each of `nodes`."""
        deadline = time.monotonic() + timeout_s
        said = ""
        while True:
            status = self.status()
            alive = sorted(s["node"] for s in (status or {}).get("speakers", []) if s.get("alive"))
            if status and status.get("operator") is not None and alive == sorted(nodes):
                return status
            where = self.where()
            if where != said:
                progress(where)
                said = where
            if time.monotonic() > deadline:
                raise InClusterError(f"raylb not up in-cluster after {timeout_s:.0f} s: {where}; "
                                     f"speakers alive {alive}, wanted {sorted(nodes)}")
            time.sleep(POLL_S)

    def where(self) -> str:
        """One line: the RayCluster's state and the pods of metallb-system."""
        try:
            cluster = self.get("-n", NAMESPACE, "raycluster", RAYCLUSTER)
            pods = self.get("-n", NAMESPACE, "pods")
        except InClusterError as exc:
            return str(exc)
        state = cluster.get("status", {}).get("state", "-")
        phases = ", ".join(
            f"{p['metadata']['name']}@{p['spec'].get('nodeName', '-')}={p['status'].get('phase')}"
            for p in pods["items"]
        )
        return f"RayCluster {state}; pods: {phases or 'none'}"


def backend(name: str, *, replicas: int, node: str | None = None) -> dict[str, Any]:
    """A Deployment of the lab's backend image, spread over the nodes (or on `node` alone)."""
    labels = {"app": name}
    spec: dict[str, Any] = {
        "containers": [{
            "name": "backend", "image": "raylb.local/backend:1", "imagePullPolicy": "Never",
            "env": [{"name": "PORT", "value": "80"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "ports": [{"containerPort": 80}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1},
        }],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": labels}}],
        "terminationGracePeriodSeconds": 1,
        # The backend runs as nobody; demo.yaml's Services send to port 80 (a safe, per-pod sysctl).
        "securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
    }
    if node is not None:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def served(system: InCluster, address: str, *, timeout_s: float = 2.0) -> dict[str, str] | None:
    """One GET from the lab's client to `address`: the backend's answer (pod, node), or None."""
    try:
        code, body = http_get(system.lab.client.netns, address, timeout_s=timeout_s)
    except OSError:
        return None
    return json.loads(body) if code == 200 else None  # type: ignore[no-any-return]


def redis_service(address: object) -> list[dict[str, Any]]:
    """A Service without selector, named as raycluster.yaml expects, and its EndpointSlice
    pointing at the lab's Redis on the control host."""
    labels = {"app.kubernetes.io/name": "raylb-lab-redis"}
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": REDIS_SERVICE, "namespace": NAMESPACE, "labels": labels},
         "spec": {"ports": [{"port": REDIS_SERVICE_PORT, "targetPort": REDIS_PORT, "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{REDIS_SERVICE}-lab", "namespace": NAMESPACE,
                      "labels": {**labels, "kubernetes.io/service-name": REDIS_SERVICE,
                                 "endpointslice.kubernetes.io/managed-by": "raylb-lab"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [str(address)], "conditions": {"ready": True}}],
         "ports": [{"port": REDIS_PORT, "protocol": "TCP"}]},
    ]

