"""`raylb demo`: the operator's allocation logic on the seed's manifests, in this process.

Loads MetalLB, pools and Services from a manifest file into the in-memory store, runs the real
operator core (config checking, allocation, status writes, events) with an in-process
allocator until nothing changes, and prints what a user would see with kubectl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from raylb.actors.local import InProcessRay
from raylb.actors.operator import OperatorCore
from raylb.cluster.memory import MemoryCluster
from raylb.desired import Change, Ref
from raylb.reconcile import POOL_ANNOTATION

REPO = Path(__file__).resolve().parent.parent
DEMO_MANIFESTS = REPO / "deploy" / "examples" / "demo.yaml"
MAX_ROUNDS = 20


class _Reader:
    def __init__(self, cluster: MemoryCluster) -> None:
        self.cluster = cluster

    def wait_changes(self, *, timeout_s: float) -> list[Change]:
        return self.cluster.wait_changes(reader="demo", timeout_s=timeout_s)


def load(cluster: MemoryCluster, path: Path) -> int:
    count = 0
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            cluster.apply(str(doc["kind"]), doc)
            count += 1
    return count


def settle(core: OperatorCore, cluster: MemoryCluster) -> int:
    """Run rounds until one writes nothing; returns the number of rounds."""
    for rounds in range(1, MAX_ROUNDS + 1):
        before = cluster.write_count()
        core.step(timeout_s=0)
        if cluster.write_count() == before and rounds > 1:
            return rounds
    return MAX_ROUNDS


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def report(cluster: MemoryCluster, ray: InProcessRay) -> str:
    failures: dict[Ref, list[str]] = {}
    for event in cluster.recorded_events():
        if event.reason == "AllocationFailed":
            failures.setdefault(event.ref, []).append(event.message)
        elif event.reason == "DeprecatedAnnotation":
            failures.setdefault(event.ref, []).append("uses the deprecated metallb.universe.tf/ prefix")
    rows = [["SERVICE", "EXTERNAL-IP", "POOL", "NOTE"]]
    for svc in cluster.list("Service"):
        meta: dict[str, Any] = svc["metadata"]
        ref = Ref("Service", meta["namespace"], meta["name"])
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ips = ",".join(i["ip"] for i in ingress) or "<pending>"
        pool = (meta.get("annotations") or {}).get(POOL_ANNOTATION, "-")
        rows.append([ref.key, ips, pool, "; ".join(failures.get(ref, []))])
    pools = [["POOL", "FAMILY", "TOTAL", "IN USE", "FREE"]]
    for name, stats in ray.allocator.stats().items():
        for family in ("ipv4", "ipv6"):
            fam: dict[str, int] = stats[family]  # type: ignore[assignment]
            if fam["total"]:
                pools.append([name, family, str(fam["total"]), str(fam["in_use"]), str(fam["free"])])
    return f"{_table(rows)}\n\n{_table(pools)}"


@click.command()
@click.option("--manifests", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEMO_MANIFESTS, show_default=True)
def command(manifests: Path) -> None:
    """Allocate IPs for the seed's Services with the seed's pools, in this process."""
    cluster = MemoryCluster()
    ray = InProcessRay()
    core = OperatorCore(desired=_Reader(cluster), results=cluster, ray=ray)
    click.echo(f"==> loaded {load(cluster, manifests)} objects from {manifests}")
    rounds = settle(core, cluster)
    click.echo(f"==> the operator settled after {rounds} rounds and {cluster.write_count()} writes\n")
    click.echo(report(cluster, ray))
