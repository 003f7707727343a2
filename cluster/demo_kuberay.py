"""`raylb demo --kuberay`: raylb in a real Kubernetes cluster, deployed by the KubeRay operator.

The in-cluster path end to end, in the demo's short style: a lab whose nodes are real kubelets
(containerd, kube-proxy, the CNI bridge) with the KubeRay operator on the control host; raylb
installed as the README's in-cluster section says (incluster.py runs those commands); the
seed's manifests and two backend Deployments; then each Service's IP, pool and announcing node
from `raylb status` in the head pod, a request from the client answered by a pod on some node
through kube-proxy, and a live failover of a node that announces.

The failover is shown on one more Service, `web-local`: externalTrafficPolicy Local over the
web pods (one on every node), so the pod that answers runs on the node that announces and the
client sees the takeover by who answers. The node with the Ray head pod is labelled
exclude-from-external-load-balancers for that step: the demo kills a speaker's node, not the
Ray head (tests/lab/test_head_restart.py shows that one). The lab stays up to look around.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import yaml

from raylb.cluster.demo import (
    HTTP_PORT,
    POLL_S,
    TAKEOVER_TIMEOUT_S,
    VENV_BIN,
    DemoResult,
    Failover,
    Steps,
    check_existing,
    table,
    url,
)
from raylb.cluster.localkube.provision import ensure_binaries
from raylb.cluster.lab.failover_probe import ProbeRun, takeover
from raylb.cluster.lab.incluster import DEMO_MANIFEST, HEAD_CONTAINER, NAMESPACE, InCluster, backend, served
from raylb.cluster.lab.lab import Lab, state_dir
from raylb.cluster.lab.topology import CLIENT, CONTROL, netns_name

#: The label that keeps a Node out of announcing (MetalLB honours it too).
EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"
FAILOVER_SERVICE = "default/web-local"
SETTLE_TIMEOUT_S = 300.0
SERVE_TIMEOUT_S = 60.0


WEB_LOCAL: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-local", "namespace": "default"},
    "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
             "ports": [{"port": HTTP_PORT, "protocol": "TCP"}]},
}  # fmt: skip
#: The pods behind demo.yaml's port-80 Services (app=web: one on every node; app=billing).
BACKENDS = {"web": 3, "billing": 2}


def extra_documents() -> list[dict[str, Any]]:
    return [*(backend(app, replicas=n) for app, n in BACKENDS.items()), WEB_LOCAL]


def services(system: InCluster) -> dict[str, dict[str, Any]]:
    """`raylb status` rows by Service: ips, pool, node (the announcer), pending (why not)."""
    return {row["service"]: row for row in (system.status() or {}).get("services", [])}


def settled(found: dict[str, dict[str, Any]], expected: set[str], served_by_pods: set[str]) -> bool:
    """Every expected Service is decided (an IP, or a reason it waits), and those with pods
    behind them are announced (MetalLB announces no Service without endpoints)."""
    return expected <= set(found) and all(found[k]["ips"] or found[k].get("pending") for k in expected) and all(
        found[k]["ips"] and found[k]["node"] for k in served_by_pods
    )


def wait(predicate: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_S)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


def services_table(found: dict[str, dict[str, Any]], keys: set[str]) -> str:
    rows = [["SERVICE", "EXTERNAL-IP", "POOL", "ANNOUNCED BY"]]
    for key in sorted(keys):
        row = found[key]
        if row["ips"]:
            rows.append([key, ",".join(row["ips"]), row["pool"] or "-", row["node"] or "- (no endpoints)"])
        else:
            rows.append([key, "<pending>", "-", f"- ({row.get('pending')})"])
    return table(rows, indent="    ")


def run_kuberay_demo(*, name: str, fresh: bool = False, echo: Callable[[str], None] = print) -> DemoResult:
    """The in-cluster demo on lab `name`; leaves the lab running. Raises DemoError on failure."""
    root = state_dir(name)
    steps = Steps(echo, lambda: [
        f"{root}/kube/ (API server, scheduler, controller-manager, KubeRay operator)",
        f"{root}/nodeN/ (containerd, kubelet, kube-proxy); the pods' logs with the kubectl below",
    ])  # fmt: skip
    result = DemoResult(lab=name)
    check_existing(name, fresh=fresh, steps=steps, kuberay=True)
    with steps.step("the Kubernetes, CoreDNS and KubeRay binaries (built once, minutes; cached in ~/.cache/raylb)"):
        ensure_binaries(lambda line: echo(f"    {line}"))

    with steps.step(f"building lab {name!r}: a Kubernetes cluster of real kubelets in namespaces rlb-{name}-*"):
        started = time.monotonic()
        lab = Lab.up(name=name, nodes=3, ray=False, kube=True, kubelets=True)
        nodes = [n.name for n in lab.nodes]
        echo(f"    up in {time.monotonic() - started:.0f} s: control (API server, controller-manager, scheduler, "
             f"CoreDNS, the KubeRay operator), {', '.join(nodes)} (containerd, kubelet, kube-proxy), client")  # fmt: skip

    system = InCluster(lab)
    with steps.step("installing raylb as the README's in-cluster section says (the lab's kubectl, as cluster admin)"):
        system.install(manifest=DEMO_MANIFEST, progress=lambda line: echo(f"    {line}"))
        system.apply_documents(extra_documents(), "demo-backends")
        echo("    backends: deployment/web (3 pods, one per node), deployment/billing (2), service/web-local")

    with steps.step("KubeRay starts the RayCluster; raylb's operator sizes the speaker group to the Nodes"):
        started = time.monotonic()
        system.wait_speakers(nodes, progress=lambda line: echo(f"    {line}"))
        group = system.get("-n", NAMESPACE, "raycluster", "raylb")["spec"]["workerGroupSpecs"][0]
        head = system.head_node()
        echo(f"    ready in {time.monotonic() - started:.0f} s: the Ray head pod on {head}, "
             f"{group['replicas']} speaker pods (one per Node), the operator and allocator in the head pod")  # fmt: skip

    demo_services = [d for d in yaml.safe_load_all(DEMO_MANIFEST.read_text()) if d and d["kind"] == "Service"]
    demo_services.append(WEB_LOCAL)
    expected = {f"default/{d['metadata']['name']}" for d in demo_services}
    with_pods = {f"default/{d['metadata']['name']}" for d in demo_services if d["spec"]["selector"]["app"] in BACKENDS}
    http = {k for k in with_pods if k != FAILOVER_SERVICE}
    with steps.step("waiting until every Service has an IP and an announcing node (raylb status, in the head pod)"):
        started = time.monotonic()
        found = wait(lambda: (f := services(system)) and settled(f, expected, with_pods) and f,
                     timeout_s=SETTLE_TIMEOUT_S, what="every Service allocated and announced")  # fmt: skip
        result.services = {k: found[k] for k in expected}
        echo(f"    done in {time.monotonic() - started:.0f} s\n")
        echo(services_table(found, expected) + "\n")

    with steps.step(f"requests from the client ({lab.client.netns}) go to the announcing node, kube-proxy picks a pod"):
        for key in sorted(http):
            row = found[key]
            answer = wait(lambda row=row: served(system, row["ips"][0]), timeout_s=SERVE_TIMEOUT_S,
                          what=f"an answer via {row['ips'][0]} ({key})")  # fmt: skip
            result.http[key] = answer["node"]
            echo(f"    GET {url(row['ips'][0]):<26} -> pod {answer['pod']} on {answer['node']}"
                 f"   ({key}, announced by {row['node']})")  # fmt: skip

    with steps.step(f"failover: {FAILOVER_SERVICE} (externalTrafficPolicy Local: the announcing node serves)"):
        system.kubectl("label", "node", head, f"{EXCLUDE}=", "--overwrite")
        echo(f"    {head} (the Ray head pod's node) labelled {EXCLUDE}: the node killed below is a speaker's only")
        ips, victim = wait(
            lambda: (r := services(system).get(FAILOVER_SERVICE)) and r["ips"] and r["node"] not in (None, head)
            and (r["ips"], r["node"]),
            timeout_s=SETTLE_TIMEOUT_S, what=f"{FAILOVER_SERVICE} announced by a node without the head",
        )  # fmt: skip
        vip = ips[0]
        echo(f"    killing {victim}, which announces {vip}: its port on the lab bridge goes down, then every "
             "process in its namespace and its pods")  # fmt: skip
        with ProbeRun(functools.partial(lab.popen, lab.client), vip=vip, duration_s=TAKEOVER_TIMEOUT_S + 60) as run:
            run.wait_for(lambda s: any(x.ok and x.node == victim for x in s), timeout_s=SERVE_TIMEOUT_S,
                         what=f"an answer from {victim}")  # fmt: skip
            killed_at = time.monotonic()
            lab.kill_node(victim)
            run.wait_for(lambda s: takeover(s, event_s=killed_at), timeout_s=TAKEOVER_TIMEOUT_S,
                         what=f"another node answering for {vip}")  # fmt: skip
            outage = takeover(run.stop(), event_s=killed_at)
        assert outage is not None
        echo(f"    {victim} -> {outage.after}: the client (a request every 10 ms) got no answer for "
             f"{outage.duration_s:.3f} s ({outage.failed} failed requests)")  # fmt: skip
        moved = wait(lambda: (r := services(system).get(FAILOVER_SERVICE)) and r["node"] not in (None, victim)
                     and r["node"], timeout_s=SERVE_TIMEOUT_S, what="raylb status naming the new node")  # fmt: skip
        echo(f"    raylb status: {FAILOVER_SERVICE} announced by {moved}")
        result.failover = Failover(
            service=FAILOVER_SERVICE, vip=vip, before=victim, after=outage.after,
            outage_s=outage.duration_s, failed_requests=outage.failed, kubernetes_node=moved,
        )  # fmt: skip

    with steps.step(f"bringing {victim} back: containerd, kubelet and kube-proxy start again"):
        started = time.monotonic()
        lab.start_worker(victim)
        system.wait_speakers(nodes)
        system.kubectl("label", "node", head, f"{EXCLUDE}-")
        echo(f"    KubeRay's worker on {victim} runs a speaker again after {time.monotonic() - started:.0f} s; "
             f"the label is off {head} again")  # fmt: skip
    result.look_around = look_around(name, kubectl=str(lab.kube_binary("kubectl")), head_pod=system.head_pod(), vip=vip)
    return result


def look_around(name: str, *, kubectl: str, head_pod: str | None, vip: str | None) -> str:
    """The closing words: how to look at the running cluster and how to remove it."""
    control, client = netns_name(name, CONTROL), netns_name(name, CLIENT)
    admin = state_dir(name) / "admin.kubeconfig"
    kubectl_in = f"ip netns exec {control} {kubectl} --kubeconfig {admin}"
    lines = [
        "The lab keeps running. Look around (the lab is reachable only inside its namespaces):",
        f"  kubectl:        {kubectl_in} get nodes,pods,svc -A -o wide",
        *([f"  raylb status:   {kubectl_in} -n {NAMESPACE} exec {head_pod} -c {HEAD_CONTAINER} -- raylb status"]
          if head_pod else []),
        *([f"  a request:      ip netns exec {client} curl -s {url(vip)}"] if vip else []),
        f"  logs:           {state_dir(name)}/",
        f"Remove it:        {VENV_BIN}/raylb lab down --name {name}",
    ]
    return "\n".join(lines)

