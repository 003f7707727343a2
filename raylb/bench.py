"""`raylb bench ...`: benchmark commands that print one JSON object each."""

from __future__ import annotations

from raylb.cli import LazyGroup

# name -> "module:attribute" of the click command that runs that benchmark
BENCHMARKS: dict[str, str] = {
    "alloc": "raylb.bench_alloc:command",
    "arp": "raylb.cluster.lab.arp_bench:command",
    "footprint": "raylb.cluster.lab.footprint:command",
    "reconcile": "raylb.cluster.kube.bench:command",
    "membership": "raylb.cluster.membership_bench:command",
}


group = LazyGroup(name="bench", lazy=BENCHMARKS, help="Run a benchmark and print its figures as JSON.")
