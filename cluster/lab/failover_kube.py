"""`raylb lab failover --kubernetes`: the failover benchmark on the lab's real Kubernetes cluster.

Same trials, fields and targets as `raylb lab failover` (failover.py), but raylb runs in-cluster
(deployed by KubeRay as incluster.py does it) and the client's requests go through kube-proxy
to pods of the lab's backend image. The 12 Services have externalTrafficPolicy Local and one
backend pod on every node, so the node that answers (the backend says which) is the node that
announces: a sample from another node after the kill is the takeover.

Victims are the nodes without the Ray head pod (killing that one is the head-restart test's
subject, not a speaker failover). A killed node loses everything in its namespace and its pods;
it comes back by starting its kubelet again, and KubeRay's worker there gets a speaker again.

Also prints the memory of each node's speaker worker pod (Ray worker processes and the
speaker) against the node's kubelet and containerd (with its shims): PSS and RSS in MiB.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from raylb.cluster.lab import failover
from raylb.cluster.lab.failover_plot import Timeline
from raylb.cluster.lab.footprint import memory_of
from raylb.cluster.lab.incluster import InCluster, backend
from raylb.cluster.lab.lab import Lab

SETTLE_TIMEOUT_S = 180.0
POLL_S = 1.0
POOLS = {"IPv4": ("bench-v4", "198.18.0.224/28"), "IPv6": ("bench-v6", "2001:db8:18::1:100/124")}


def manifest() -> list[dict[str, Any]]:
    """MetalLB, two pools, an advertisement, the backend on every node and 2 x 6 Services."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "metallb.io/v1beta1", "kind": "MetalLB",
         "metadata": {"name": "metallb", "namespace": "metallb-system"}, "spec": {}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
         "metadata": {"name": "bench", "namespace": "metallb-system"}, "spec": {}},
    ]
    for pool, addresses in POOLS.values():
        docs.append({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                     "metadata": {"name": pool, "namespace": "metallb-system"},
                     "spec": {"addresses": [addresses], "autoAssign": False}})
    docs.append(backend("bench", replicas=3))
    for family, (pool, _) in POOLS.items():
        for i in range(failover.SERVICES_PER_FAMILY):
            docs.append({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": f"bench-{family.lower()}-{i}", "namespace": "default",
                             "annotations": {"metallb.io/address-pool": pool}},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ipFamilies": [family],
                         "ipFamilyPolicy": "SingleStack", "selector": {"app": "bench"},
                         "ports": [{"port": 80, "protocol": "TCP"}]},
            })  # fmt: skip
    return docs


def services(system: InCluster) -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in (system.status() or {}).get("services", [])}


def vips_of(found: dict[str, dict[str, Any]], node: str) -> dict[str, str]:
    """One VIP per family that `node` announces in `found` (from `services`)."""
    out: dict[str, str] = {}
    for key, svc in sorted(found.items()):
        if svc["node"] == node and key.startswith("default/bench-") and svc["ips"]:
            out.setdefault("ipv6" if "ipv6" in key else "ipv4", svc["ips"][0])
    return out


def settle(system: InCluster, nodes: list[str], victims: list[str]) -> None:
    """Every speaker alive, every bench Service announced, every victim announcing some."""
    system.wait_speakers(nodes, timeout_s=SETTLE_TIMEOUT_S)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        found = services(system)
        bench = [s for k, s in found.items() if k.startswith("default/bench-")]
        if len(bench) == 2 * failover.SERVICES_PER_FAMILY and all(s["node"] for s in bench) \
                and all(vips_of(found, v) for v in victims):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench Services not all announced within {SETTLE_TIMEOUT_S:.0f} s: "
                               f"{ {k: s['node'] for k, s in found.items()} }")
        time.sleep(POLL_S)


def head_python(system: InCluster, code: str) -> str:
    """A Ray driver snippet in the head pod (namespace raylb)."""
    head = system.head_pod()
    prelude = "import ray; ray.init(address='auto', namespace='raylb', logging_level='ERROR', log_to_driver=False)\n"
    return system.kubectl("-n", "metallb-system", "exec", str(head), "-c", "ray-head", "--",
                          "python", "-c", prelude + code)


def memory(system: InCluster) -> dict[str, dict[str, float]]:
    """Per node: the speaker worker pod's processes against kubelet + containerd (and shims)."""
    lab = system.lab
    pods = system.get("-n", "metallb-system", "pods", "-l", "ray.io/group=speakers")["items"]
    uid_of = {p["spec"]["nodeName"]: p["metadata"]["uid"] for p in pods}
    out: dict[str, dict[str, float]] = {}
    for node in lab.nodes:
        sums = {"speaker_pod_pss_mb": 0.0, "speaker_pod_rss_mb": 0.0,
                "kubelet_containerd_pss_mb": 0.0, "kubelet_containerd_rss_mb": 0.0}
        uid = uid_of.get(node.name, "-").replace("-", "_")
        for pid in lab.pids(node):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                cgroup = Path(f"/proc/{pid}/cgroup").read_text()
            except OSError:
                continue
            mem = memory_of(pid)
            if mem is None:
                continue
            if uid in cgroup or uid.replace("_", "-") in cgroup:
                kind = "speaker_pod"
            elif comm == "kubelet" or comm.startswith("containerd"):
                kind = "kubelet_containerd"
            else:
                continue
            sums[f"{kind}_pss_mb"] += mem["pss_mb"]
            sums[f"{kind}_rss_mb"] += mem["rss_mb"]
        out[node.name] = {k: round(v, 1) for k, v in sums.items()}
    return out


def run(
    *, name: str, trials: int, graceful_trials: int, log: Any, plot: bool = False
) -> tuple[dict[str, Any], list[Timeline]]:
    """The benchmark's JSON fields, and each trial's client timeline when `plot`."""
    started = time.monotonic()
    with Lab.up(name=name, nodes=3, ray=False, kube=True, kubelets=True) as lab:
        system = InCluster(lab)
        system.install(manifest=None, progress=log)
        nodes = [n.name for n in lab.nodes]
        system.apply_documents(manifest(), "failover-bench")
        system.wait_speakers(nodes, progress=log)
        head = system.head_node()
        victims = [n for n in nodes if n != head]
        settle(system, nodes, victims)
        log(f"in-cluster, head pod on {head}; victims {', '.join(victims)}")
        footprint = memory(system)

        def detected(node: str, victim: str, after_s: float) -> float | None:
            return failover.detection(lambda code: head_python(system, code), node=node, peer=victim, after_s=after_s)

        results = failover.Results()
        for i in range(trials):
            victim = victims[i % len(victims)]
            vips = vips_of(services(system), victim)
            event_s, measured = failover.measure(lab, vips, lambda victim=victim: lab.kill_node(victim))
            told = failover.record(results, lab, trial=i + 1, mode="kill", victim=victim, vips=vips,
                                    event_s=event_s, measured=measured, plot=plot)  # fmt: skip
            log(f"trial {i + 1}/{trials}: kill {victim}: {told}")
            lab.start_worker(victim)
            settle(system, nodes, victims)
            if plot:
                failover.add_detection(results, trial=i + 1, detected=detected)
        for i in range(graceful_trials):
            victim = victims[i % len(victims)]
            vips = vips_of(services(system), victim)
            actor = f"raylb-speaker-{victim}"
            event_s, measured = failover.measure(
                lab, vips, lambda actor=actor: head_python(system, f"ray.get(ray.get_actor({actor!r}).leave.remote())"))
            told = failover.record(results, lab, trial=trials + i + 1, mode="graceful", victim=victim, vips=vips,
                                    event_s=event_s, measured=measured, plot=plot)  # fmt: skip
            log(f"graceful {i + 1}/{graceful_trials}: {victim} left: {told}")
            if plot:  # before the fresh speaker there joins and the takeover is undone
                failover.add_detection(results, trial=trials + i + 1, detected=detected)
            head_python(system, f"ray.kill(ray.get_actor({actor!r}), no_restart=True)")
            settle(system, nodes, victims)
    out = failover.outcome(results, mode="kill", trials=trials, started=started)
    out.update({"kubernetes": True, "head_node": head, "memory_mb": footprint})
    return out, results.timelines
