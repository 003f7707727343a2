"""`raylb lab failover --vips 3000`: a node owning thousands of VIPs dies; how long until the
client reaches each of them again.

The lab (control + 3 nodes + client, real Ray, raylb on the in-memory store) gets
`--total-vips` LoadBalancer Services (default 10 000), each pinned to one IPv6 address of the
lab's VIP range (`metallb.io/loadBalancerIPs`) with endpoints on every node. The addresses are
chosen with raylb's own election (`raylb.election.pick`) so that exactly `--vips` of them are
announced by node1 while all three nodes live, and the rest by node2 and node3. IPv6 because
the lab's IPv4 node subnet is a /24: it cannot hold 10 000 VIPs.

Each trial: the client's NDP watcher (cluster/lab/ndp_watch.py) checks that node1 answers for
all of its VIPs, every process of node1 is SIGKILLed, and the watcher records, per VIP, when
the client first learns a surviving node's MAC for it (unsolicited NA or answer to its NS).
The outage of a VIP is that moment minus the moment of the kill. node1 then comes back (its
raylet, then a fresh speaker from the operator) and takes its VIPs back before the next trial.

Prints one JSON object: per trial p50/p99/max over the VIPs, the worst trial's p99, and how
the client learned the new MACs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from raylb.cluster.lab import system
from raylb.cluster.lab.failover import percentile
from raylb.cluster.lab.lab import Lab
from raylb.cluster.lab.topology import VIP_RANGE_V6
from raylb.election import pick

VICTIM = "node1"
NODES = ("node1", "node2", "node3")
WATCH_S = 20.0
SETTLE_TIMEOUT_S = 300.0
APPLY_TIMEOUT_S = 900.0


def choose_vips(*, owned: int, total: int) -> tuple[list[ipaddress.IPv6Address], list[ipaddress.IPv6Address]]:
    """(`owned` addresses the election gives VICTIM, `total - owned` it gives the others),
    from the lab's IPv6 VIP range in order."""
    if not 0 < owned <= total <= VIP_RANGE_V6.num_addresses // 2:
        raise ValueError(f"--vips {owned} / --total-vips {total}: need 0 < vips <= total <= {VIP_RANGE_V6.num_addresses // 2}")
    mine: list[ipaddress.IPv6Address] = []
    others: list[ipaddress.IPv6Address] = []
    for offset in range(1, VIP_RANGE_V6.num_addresses):
        ip = VIP_RANGE_V6.network_address + offset
        winner = pick(ip=ip, candidates=NODES)
        if winner == VICTIM and len(mine) < owned:
            mine.append(ip)
        elif winner != VICTIM and len(others) < total - owned:
            others.append(ip)
        if len(mine) == owned and len(others) == total - owned:
            return mine, others
    raise AssertionError("the VIP range ran out")  # cannot happen: checked above


def manifest(path: Path, vips: list[ipaddress.IPv6Address]) -> Path:
    """MetalLB, one pool (the lab's IPv6 VIP range), the nodes, and one Service per VIP."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "metallb.io/v1beta1", "kind": "MetalLB", "metadata": {"name": "metallb", "namespace": "metallb-system"}, "spec": {}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "many", "namespace": "metallb-system"},
         "spec": {"addresses": [str(VIP_RANGE_V6)], "autoAssign": False}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "many", "namespace": "metallb-system"}, "spec": {}},
    ]  # fmt: skip
    for node in NODES:
        docs.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}})
    endpoints = [{"addresses": [f"198.18.64.{n}"], "conditions": {"ready": True}, "nodeName": node} for n, node in enumerate(NODES, 1)]
    for i, vip in enumerate(vips):
        name = f"many-{i}"
        docs.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {"metallb.io/address-pool": "many", "metallb.io/loadBalancerIPs": str(vip)}},
            "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                     "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]},
        })  # fmt: skip
        docs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-lab", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": endpoints,
        })  # fmt: skip
    path.write_text("\n---\n".join(json.dumps(d) for d in docs) + "\n")  # JSON is YAML
    return path


class Client:
    """The NDP watcher in the client namespace."""

    def __init__(self, lab: Lab, *, vips_file: Path) -> None:
        macs = {n.name: n.mac for n in lab.nodes}
        argv = [sys.executable, "-m", "raylb.cluster.lab.ndp_watch", "--vips-file", str(vips_file),
                "--victim-mac", macs[VICTIM], "--watch-s", str(WATCH_S)]  # fmt: skip
        for name, mac in macs.items():
            if name != VICTIM:
                argv += ["--node-mac", mac]
        self.process = lab.popen(lab.client, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.read()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the NDP watcher exited ({self.process.wait()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask("quit")
            except (OSError, RuntimeError, ValueError):
                pass
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def settle(client: Client, *, owned: int, log: Any) -> dict[str, int]:
    """Until node1 answers for every one of its VIPs."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        seen = client.ask("verify")["verify"]
        if seen["victim"] == owned:
            return seen  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{VICTIM} answers for {seen['victim']} of its {owned} VIPs after {SETTLE_TIMEOUT_S} s: {seen}")
        log(f"waiting for {VICTIM} to announce its VIPs: {seen}")
        time.sleep(2.0)


def trial(lab: Lab, client: Client) -> dict[str, Any]:
    ack = client.ask("watch")
    assert ack.get("watching"), ack
    event_s = time.monotonic()
    lab.kill_host(VICTIM)
    result = client.read()
    outages = sorted(t - event_s for t in result["taken"].values())
    return {
        "n": len(outages),
        "missing": len(result["missing"]),
        "p50_s": percentile([round(v, 4) for v in outages], 50),
        "p99_s": percentile([round(v, 4) for v in outages], 99),
        "max_s": round(outages[-1], 4) if outages else None,
        "min_s": round(outages[0], 4) if outages else None,
        "via": result["via"],
    }


def run(*, name: str, vips: int, total: int, trials: int, log: Any) -> dict[str, Any]:
    started = time.monotonic()
    mine, others = choose_vips(owned=vips, total=total)
    with Lab.up(name=name, nodes=len(NODES), ray=True) as lab:
        path = manifest(Path(f"/tmp/rlb-{name}-many.yaml"), [*mine, *others])
        vips_file = Path(f"/tmp/rlb-{name}-victim-vips.txt")
        vips_file.write_text("".join(f"{v}\n" for v in mine))
        system.raylb(lab, "run", "--memory")
        t0 = time.monotonic()
        system.raylb(lab, "apply", "-f", str(path), timeout_s=APPLY_TIMEOUT_S)
        log(f"applied {total} Services in {time.monotonic() - t0:.1f} s")
        client = Client(lab, vips_file=vips_file)
        try:
            t0 = time.monotonic()
            settle(client, owned=vips, log=log)
            log(f"{VICTIM} answers for all {vips} VIPs {time.monotonic() - t0:.1f} s later")
            results = []
            for i in range(trials):
                results.append(trial(lab, client))
                log(f"trial {i + 1}/{trials}: {json.dumps(results[-1])}")
                lab.restart_node(VICTIM)
                settle(client, owned=vips, log=log)
        finally:
            client.close()
    p99s = [r["p99_s"] for r in results if r["p99_s"] is not None]
    return {
        "vips": vips,
        "total_vips": total,
        "family": "ipv6",
        "client_check": "NDP resolution from the client (unsolicited NA or NS answer from a surviving node)",
        "trials": results,
        "p50_s_median_trial": percentile([r["p50_s"] for r in results if r["p50_s"] is not None], 50),
        "p99_s_worst_trial": max(p99s) if p99s else None,
        "missing_total": sum(r["missing"] for r in results),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.monotonic() - started, 1),
    }
