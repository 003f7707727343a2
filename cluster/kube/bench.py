"""`raylb bench reconcile`: N LoadBalancer Services on a real API server, until all have IPs.

The target (DESIGN.md): 1 000 Services created at once all have an IP in status within 10 s,
with at most 2 API write requests per Service. This runs the real operator core - the
Kubernetes watches (KubeDesired), the Kubernetes writer (KubeResults) and the reconcile logic -
in this process with an in-process allocator (InProcessRay): Ray only carries calls between
the operator and the allocator, which costs microseconds against the API round trips
measured here.

One run: a fresh namespace; the operator started and settled; N Services created by several
threads as fast as the API server takes them; a watch (its own connection) notes when each
Service's status first shows an IP. Reported per run, median over --repeat runs:

- total_s: first create sent -> the last Service shows an IP;
- p50_s / p99_s: per Service, create sent -> its IP visible in the watch;
- writes_per_service: the operator's API write requests / N, split by what they were for
  (status, annotation, events, other); reads are counted apart (they are not writes, but they
  are round trips).

By default it starts its own etcd + kube-apiserver (raylb.cluster.localkube.controlplane) and
stops them afterwards; with --kubeconfig it uses that cluster (cluster-admin rights needed
to install CRDs and RBAC) and the same credentials for the operator.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
from kubernetes import client

from raylb.actors.local import InProcessRay, NoKeys
from raylb.actors.operator import KUBE_WRITE_CONCURRENCY, OperatorCore, OperatorLoop
from raylb.cluster.kube import manifests
from raylb.cluster.kube.client import KINDS, Api, build_api_client
from raylb.cluster.kube.install import install
from raylb.cluster.kube.results import KubeResults
from raylb.cluster.kube.source import KubeDesired
from raylb.reconcile import OPERATOR_NAMESPACE

BENCH_POOL = "raylb-bench"
# RFC 2544's benchmarking block, minus the lab's 198.18.0.0/24 and the API server's ClusterIP
# range 198.19.0.0/16: 32 768 addresses. They are only written into Kubernetes objects here,
# never put on an interface or sent a packet.
BENCH_POOL_CIDR = "198.18.128.0/17"
MAX_SERVICES = 30_000
CREATE_THREADS = 8
# An operator that has not assigned every IP by then is reported as failed, not waited for.
DEFAULT_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 60.0
POLL_S = 0.05


# ---- the cluster side ----------------------------------------------------------------------


def metallb_documents(*, pools: Mapping[str, Sequence[str]], namespace: str = OPERATOR_NAMESPACE) -> list[dict[str, Any]]:
    """The MetalLB resource, one IPAddressPool per entry of `pools`, and an L2Advertisement."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "metallb.io/v1beta1", "kind": "MetalLB", "metadata": {"name": "metallb", "namespace": namespace},
         "spec": {}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "l2", "namespace": namespace},
         "spec": {}},
    ]
    for name, addresses in pools.items():
        docs.append({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                     "metadata": {"name": name, "namespace": namespace}, "spec": {"addresses": list(addresses)}})
    return docs


def lb_service(name: str, *, annotations: Mapping[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A LoadBalancer Service body. No NodePorts: nothing here uses them, and the API server
    has only 2 768 to give (30000-32767), fewer than a few benchmark runs create."""
    body: dict[str, Any] = {
        "type": "LoadBalancer",
        "allocateLoadBalancerNodePorts": False,
        "ports": [{"port": 80, "protocol": "TCP"}],
        "selector": {"app": name},
        **spec,
    }
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": dict(annotations or {})}, "spec": body}


def ingress_ips(obj: Mapping[str, Any]) -> list[str]:
    return [e.get("ip", "") for e in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]


class IngressWatch:
    """Watches the Services of one namespace on its own connection: the monotonic time at
    which each first shows an IP in status, its IPs now, and every distinct IP list it showed
    (`history`, to prove an IP never changed). Resumes after a dropped stream; relists on 410."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api = Api(api_client)
        self.path = KINDS["Service"].collection_path(namespace)
        self.namespace = namespace
        self.seen_at: dict[str, float] = {}
        self.ips: dict[str, list[str]] = {}
        self.history: dict[str, list[list[str]]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._rv: str | None = None
        self._relist()
        self._thread = threading.Thread(target=self._run, name="bench-ingress-watch", daemon=True)
        self._thread.start()

    def _relist(self) -> None:
        listed = self.api.request("GET", self.path, what=f"services {self.namespace}")
        for obj in listed.get("items") or []:
            self._note(obj)
        self._rv = (listed.get("metadata") or {}).get("resourceVersion", "")

    def _note(self, obj: Mapping[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        ips = ingress_ips(obj)
        with self._cond:
            if ips:
                self.seen_at.setdefault(name, time.monotonic())
            self.ips[name] = ips
            history = self.history.setdefault(name, [])
            if ips and (not history or history[-1] != ips):
                history.append(ips)
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._rv is None:
                    self._relist()
                query = [("watch", "true"), ("resourceVersion", self._rv or ""), ("allowWatchBookmarks", "true"),
                         ("timeoutSeconds", "60")]
                for event in self.api.stream(self.path, what=f"services {self.namespace}", query=query,
                                             read_timeout_s=90.0):
                    if event.get("type") == "ERROR":  # 410 Gone, mostly: start over from a list
                        self._rv = None
                        break
                    obj = event.get("object") or {}
                    self._rv = (obj.get("metadata") or {}).get("resourceVersion", self._rv)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._note(obj)
            except Exception:  # noqa: BLE001 - an observer: resume (an API server restart, say)
                if self._stop.wait(0.2):
                    return
            self._stop.wait(0.05)  # never spin on streams that end at once

    def wait_all(self, names: Sequence[str], *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not all(n in self.seen_at for n in names):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 1.0))
        return True

    def stop(self) -> None:
        self._stop.set()
        self.api.shutdown()
        self._thread.join(timeout=5)
        self.api.close()


def create_services(api_client: client.ApiClient, namespace: str, bodies: Sequence[dict[str, Any]], *,
                    threads: int = CREATE_THREADS) -> dict[str, float]:
    """Create every body (several threads); returns name -> monotonic time its create was sent."""
    api = Api(api_client)
    path = KINDS["Service"].collection_path(namespace)
    sent: dict[str, float] = {}

    def create(body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        sent[name] = time.monotonic()
        api.request("POST", path, what=f"services {namespace}/{name}", body=body)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(create, bodies))
    return sent


def delete_services(api_client: client.ApiClient, namespace: str, names: Sequence[str], *,
                    threads: int = CREATE_THREADS) -> None:
    api = Api(api_client)
    info = KINDS["Service"]

    def delete(name: str) -> None:
        with contextlib.suppress(Exception):  # cleanup: a missing one is already gone
            api.request("DELETE", info.object_path(namespace, name), what=f"services {namespace}/{name}")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(delete, names))


# ---- the operator side ---------------------------------------------------------------------


class CountingApi:
    """Wraps KubeResults.api: counts every request by what it is for. The operator writes from
    several threads at once, so requests are classified by method and path, not by caller."""

    def __init__(self, inner: Api) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @staticmethod
    def classify(method: str, path: str) -> str:
        if method == "GET":
            return "read"
        if method == "POST" and path.endswith("/events"):
            return "event"
        if method == "PUT" and "/services/" in path and path.endswith("/status"):
            return "status"
        if method == "PATCH" and "/services/" in path:
            return "annotation"
        return "other"

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            self.counts[self.classify(method, path)] += 1
        return self.inner.request(method, path, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RunningOperator:
    """The operator core on its own thread, against `api_client`: KubeDesired + KubeResults +
    an in-process allocator."""

    def __init__(self, api_client: client.ApiClient, *, operator_namespace: str = OPERATOR_NAMESPACE,
                 write_concurrency: int = KUBE_WRITE_CONCURRENCY, **core_options: Any) -> None:
        self.desired = KubeDesired(api_client, operator_namespace=operator_namespace)
        self.results = KubeResults(api_client, operator_namespace=operator_namespace)
        self.requests = CountingApi(self.results.api)
        self.results.api = self.requests  # type: ignore[assignment]
        self.core = OperatorCore(desired=self.desired, results=self.results, ray=InProcessRay(), key_source=NoKeys(),
                                 operator_namespace=operator_namespace, write_concurrency=write_concurrency,
                                 **core_options)
        self.loop = OperatorLoop(self.core)
        self.loop.start()

    def wait_deployed(self, *, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Until the operator has seen every kind and honours the MetalLB resource."""
        deadline = time.monotonic() + timeout_s
        while not (self.desired.synced and self.core.deployed):
            if time.monotonic() > deadline:
                raise click.ClickException(f"operator not deployed after {timeout_s:.0f} s; "
                                           f"errors={self.desired.errors()} status={self.core.status()}")
            time.sleep(POLL_S)

    def wait_quiet(self, *, rounds: int = 3, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
        """Until `rounds` operator rounds pass without a write (bounded); False on timeout."""
        deadline = time.monotonic() + timeout_s
        last, rounds_at = self.results.writes, self.core.counters.rounds
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
            writes, done = self.results.writes, self.core.counters.rounds
            if writes != last:
                last, rounds_at = writes, done
            elif done - rounds_at >= rounds:
                return True
        return False

    def stop(self) -> None:
        self.loop.stop()
        self.desired.stop()


@contextlib.contextmanager
def cluster_clients(kubeconfig: Path | None, progress: Callable[[str], None]) -> Iterator[tuple[Any, Any]]:
    """(admin client, operator client): of a fresh local control plane, or both from `kubeconfig`."""
    if kubeconfig is not None:
        api = build_api_client(kubeconfig)
        yield api, api
        return
    from raylb.cluster.localkube.controlplane import ControlPlane  # noqa: PLC0415 - only when no cluster is given
    from raylb.cluster.localkube.provision import ensure_binaries  # noqa: PLC0415

    binaries = ensure_binaries(progress)  # progress goes to stderr; stdout carries only the JSON
    progress("starting etcd + kube-apiserver")
    with ControlPlane.start(binaries=binaries) as plane, plane.admin_client() as admin, plane.operator_client() as operator:
        yield admin, operator


# ---- measuring -----------------------------------------------------------------------------


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_once(admin: client.ApiClient, operator: client.ApiClient, *, services: int, threads: int,
             timeout_s: float, progress: Callable[[str], None]) -> dict[str, Any]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    running = RunningOperator(operator)
    watch: IngressWatch | None = None
    names = [f"svc-{i:05d}" for i in range(services)]
    try:
        running.wait_deployed()
        watch = IngressWatch(admin, namespace)
        writes_before = running.results.writes
        counts_before = Counter(running.requests.counts)
        progress(f"creating {services} services in {namespace} ({threads} threads)")
        sent = create_services(admin, namespace, [lb_service(n) for n in names], threads=threads)
        created_s = max(sent.values()) - min(sent.values())
        complete = watch.wait_all(names, timeout_s=timeout_s)
        # The writes that follow an assignment (annotation, event) may land just after the IP.
        running.wait_quiet(timeout_s=10.0)
        start = min(sent.values())
        latencies = [watch.seen_at[n] - sent[n] for n in names if n in watch.seen_at]
        ips = [ip for n in names for ip in watch.ips.get(n, [])]
        writes = running.results.writes - writes_before
        counts = running.requests.counts - counts_before
        result = {
            "complete": complete,
            "with_ip": len(latencies),
            "distinct_ips": len(set(ips)) == len(ips),
            "total_s": round(max(watch.seen_at[n] for n in names) - start, 3) if complete else None,
            "create_s": round(created_s, 3),
            "p50_s": round(_quantile(latencies, 0.5), 3) if latencies else None,
            "p99_s": round(_quantile(latencies, 0.99), 3) if latencies else None,
            "writes_per_service": round(writes / services, 3),
            "status_writes_per_service": round(counts["status"] / services, 3),
            "annotation_writes_per_service": round(counts["annotation"] / services, 3),
            "event_writes_per_service": round(counts["event"] / services, 3),
            "other_writes_per_service": round(counts["other"] / services, 3),
            "writes_per_service_without_events": round((writes - counts["event"]) / services, 3),
            "reads_per_service": round(counts["read"] / services, 3),
            "operator_rounds": running.core.counters.rounds,
            "operator_failures": running.core.counters.failures,
            "write_failures": running.core.counters.write_failures,
        }
    finally:
        if watch is not None:
            watch.stop()
        running.stop()
        progress(f"deleting {services} services")
        delete_services(admin, namespace, names, threads=threads)
        with contextlib.suppress(Exception):
            client.CoreV1Api(admin).delete_namespace(namespace)
    return result


def measure(*, services: int, repeat: int, threads: int, kubeconfig: Path | None, timeout_s: float,
            progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    with cluster_clients(kubeconfig, progress) as (admin, operator):
        progress("installing CRDs and RBAC")
        install(admin)
        manifests.apply_documents(admin, metallb_documents(pools={BENCH_POOL: [BENCH_POOL_CIDR]}))
        runs = []
        for i in range(repeat):
            progress(f"run {i + 1}/{repeat}")
            runs.append(run_once(admin, operator, services=services, threads=threads, timeout_s=timeout_s,
                                 progress=progress))
            progress(json.dumps(runs[-1], sort_keys=True))
    summary: dict[str, Any] = {"services": services, "repeat": repeat, "create_threads": threads,
                               "control_plane": "kubeconfig" if kubeconfig else "local"}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            summary[key] = round(statistics.median(values), 3)
        elif all(isinstance(v, bool) for v in values):
            summary[key] = all(values)
        else:
            summary[key] = values
    summary["runs"] = runs
    summary["targets"] = {"total_s": 10.0, "writes_per_service": 2.0}
    return summary


@click.command(name="reconcile")
@click.option("--services", default=1000, show_default=True, help="LoadBalancer Services created per run.")
@click.option("--repeat", default=3, show_default=True, help="Runs; the median is reported.")
@click.option("--threads", default=CREATE_THREADS, show_default=True, help="Threads creating Services.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Use this cluster (cluster-admin) instead of starting a local control plane.")
@click.option("--timeout-s", default=DEFAULT_TIMEOUT_S, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Give up on a run when not every Service has an IP by then.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
def command(services: int, repeat: int, threads: int, kubeconfig: Path | None, timeout_s: float, as_json: bool) -> None:
    """Create N LoadBalancer Services on an API server; time until all have an IP."""
    if not 1 <= services <= MAX_SERVICES or repeat < 1 or threads < 1:
        raise click.BadParameter(f"--services must be 1..{MAX_SERVICES}; --repeat and --threads at least 1")
    progress = (lambda _: None) if as_json else (lambda text: click.echo(text, err=True))
    result = measure(services=services, repeat=repeat, threads=threads, kubeconfig=kubeconfig,
                     timeout_s=timeout_s, progress=progress)
    click.echo(json.dumps(result, sort_keys=True) if as_json else json.dumps(result, sort_keys=True, indent=2))

