"""`raylb bench alloc`: how fast the pure allocator hands out and restores addresses.

Why: the design promises >= 100 000 allocations/s in-process and a /64 costing what a /24
costs (MetalLB scans the pool, O(n) per allocation). This measures it; nothing here is a test.

Workloads (all in-process, no I/O; requests are built before the clock starts):

- ``v4_16``: services into one IPv4 /16 (198.18.0.0/16, RFC 2544 benchmarking space). A /16
  holds 65 536 addresses, fewer than 100 000 services, so the run fills half the pool and then
  churns: each further allocation follows the release of a random live service (fixed seed).
  The clock covers the releases too, so the rate is conservative.
- ``v6_64``: the same sequence into one IPv6 /64 (2001:db8:18::/64), to compare the two sizes.
- ``many_pools``: services across many /25 pools carved from 198.18.0.0/15, first fit in name
  order, filled without churn while capacity lasts.
- ``restore``: `restore()` of the many-pools snapshot into a fresh allocator with the same pools.

Each measurement runs `--repeat` times; the JSON carries the median under the headline key and
min/median/max of every measurement under "runs". Wall-clock time, garbage collector on.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import click

from raylb.ipam.allocator import Allocator
from raylb.ipam.request import ServiceRequest
from raylb.pools import AddressRange, Pool

V4_BLOCK = ipaddress.ip_network("198.18.0.0/16")
V6_BLOCK = ipaddress.ip_network("2001:db8:18::/64")
MANY_POOLS_BLOCK = ipaddress.ip_network("198.18.0.0/15")
SMALL_POOL_PREFIX = 25  # 128 addresses per pool: 1 000 of them hold 128 000 > 100 000 services
CHURN_SEED = 20_260_601


def _pool(name: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Pool:
    return Pool(name=name, ranges=(AddressRange(network.network_address, network.broadcast_address),))


def _requests(count: int, *, family: int) -> list[ServiceRequest]:
    return [ServiceRequest(key=f"bench/svc-{i:06d}", namespace="bench", ip_families=(family,)) for i in range(count)]


def _churn_run(pools: dict[str, Pool], requests: list[ServiceRequest], *, fill: int) -> tuple[float, float, Allocator]:
    """Allocate `fill` requests, then release-one-allocate-one for the rest.

    Returns (wall seconds, CPU seconds of this process, allocator).
    """
    allocator = Allocator(pools)
    rng = random.Random(CHURN_SEED)
    live: list[str] = []
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    for req in requests[:fill]:
        allocator.allocate(req)
        live.append(req.key)
    for req in requests[fill:]:
        i = rng.randrange(len(live))
        live[i], live[-1] = live[-1], live[i]
        allocator.release(live.pop())
        allocator.allocate(req)
        live.append(req.key)
    return time.perf_counter() - start, time.process_time() - start_cpu, allocator


def _many_pools(pool_count: int) -> dict[str, Pool]:
    subnets = MANY_POOLS_BLOCK.subnets(new_prefix=SMALL_POOL_PREFIX)
    pools = {}
    for i in range(pool_count):
        name = f"bench-{i:04d}"
        pools[name] = _pool(name, next(subnets))
    return pools


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(*, services: int, pool_count: int, repeat: int, progress: Callable[[str], None] = lambda _: None) -> dict[str, object]:
    """Run every workload `repeat` times and return the figures as a JSON-ready dict."""
    v4_pools = {"bench-v4": _pool("bench-v4", V4_BLOCK)}
    v6_pools = {"bench-v6": _pool("bench-v6", V6_BLOCK)}
    many = _many_pools(pool_count)
    many_capacity = pool_count * 2 ** (32 - SMALL_POOL_PREFIX)
    fill = min(services, V4_BLOCK.num_addresses // 2)
    v4_requests = _requests(services, family=4)
    v6_requests = _requests(services, family=6)
    workloads = {"v4_16": (v4_pools, v4_requests, fill), "v6_64": (v6_pools, v6_requests, fill), "many_pools": (many, v4_requests, min(services, many_capacity))}
    wall: dict[str, list[float]] = {f"allocs_per_s_{name}": [] for name in workloads} | {"restore_s_100k": []}
    cpu: dict[str, list[float]] = {key: [] for key in wall}
    for round_no in range(repeat):
        progress(f"round {round_no + 1}/{repeat}")
        for name, (pools, requests, fill_count) in workloads.items():
            wall_s, cpu_s, allocator = _churn_run(pools, requests, fill=fill_count)
            wall[f"allocs_per_s_{name}"].append(services / wall_s)
            cpu[f"allocs_per_s_{name}"].append(services / cpu_s)
        snapshot = allocator.snapshot()  # of the last workload, many_pools
        fresh = Allocator(many)
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        dropped = fresh.restore(snapshot)
        wall["restore_s_100k"].append(time.perf_counter() - start)
        cpu["restore_s_100k"].append(time.process_time() - start_cpu)
        if dropped or fresh.snapshot() != snapshot:
            raise click.ClickException(f"restore did not reproduce the snapshot ({len(dropped)} dropped)")
    runs = {name: _summary(values) for name, values in wall.items()}
    result: dict[str, object] = {name: round(summary["median"], 3) for name, summary in runs.items()}
    result["ratio_v4_16_over_v6_64"] = round(runs["allocs_per_s_v4_16"]["median"] / runs["allocs_per_s_v6_64"]["median"], 3)
    result["runs"] = {name: {k: round(v, 3) for k, v in summary.items()} for name, summary in runs.items()}
    # The same runs timed in CPU seconds of this process: what the code costs when the machine
    # is shared (the wall-clock figures above are the headline).
    result["cpu_time"] = {name: {k: round(v, 3) for k, v in _summary(values).items()} for name, values in cpu.items()}
    result["params"] = {
        "services": services,
        "pools": pool_count,
        "repeat": repeat,
        "fill_before_churn": fill,
        "python": platform.python_version(),
        "clock": "wall (perf_counter), gc enabled",
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    return result


@click.command(name="alloc")
@click.option("--services", default=100_000, show_default=True, help="Allocations per workload (and assignments restored).")
@click.option("--pools", "pool_count", default=1_000, show_default=True, help="Pools in the many-pools workload (/25 each).")
@click.option("--repeat", default=3, show_default=True, help="Runs per measurement; the median is reported.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
def command(services: int, pool_count: int, repeat: int, as_json: bool) -> None:
    """Measure allocation rates (/16, /64, many pools) and restore time of the pure allocator."""
    if services < 1 or pool_count < 1 or repeat < 1:
        raise click.BadParameter("--services, --pools and --repeat must be at least 1")
    if pool_count > 2 ** (SMALL_POOL_PREFIX - MANY_POOLS_BLOCK.prefixlen):
        raise click.BadParameter(f"--pools: at most {2 ** (SMALL_POOL_PREFIX - MANY_POOLS_BLOCK.prefixlen)} /25 pools fit in {MANY_POOLS_BLOCK}")
    progress = (lambda _: None) if as_json else (lambda text: click.echo(text, err=True))
    result = measure(services=services, pool_count=pool_count, repeat=repeat, progress=progress)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    for name, summary in result["runs"].items():  # type: ignore[union-attr]
        click.echo(f"{name:28} median {summary['median']:>14,.3f}  min {summary['min']:>14,.3f}  max {summary['max']:>14,.3f}")
    click.echo(f"{'ratio_v4_16_over_v6_64':28} {result['ratio_v4_16_over_v6_64']}")
