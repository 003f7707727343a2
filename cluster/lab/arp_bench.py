"""`raylb bench arp`: how fast a neighbour gets its answer, idle and under an unrelated flood.

Builds its own lab (one node, uniquely named), runs the responder harness in node1 owning one
IPv4 and one IPv6 VIP, and measures from the client namespace with raw sockets
(cluster/lab/probe.py): the time from sending an ARP request / Neighbor Solicitation to
receiving the reply, first idle, then while the client floods ARP requests for addresses
nobody owns (198.18.0.64-127) at 20 000 frames/s for a bounded time. The responder's CPU
share over the flood window comes from /proc/<pid>/stat (utime + stime). The lab is removed
afterwards, also on failure.

Targets (DESIGN.md): idle p99 <= 2 ms; under flood p99 <= 10 ms, none lost, < 20 % of a core.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import time
from functools import partial
from ipaddress import IPv4Address, IPv6Address

import click

from raylb.cluster.lab.responder_harness import HarnessClient
from raylb.cluster.lab.probe import Prober
from raylb.cluster.lab import Lab, down, in_netns, lab_namespaces

VIP4 = IPv4Address("198.18.0.130")
VIP6 = IPv6Address("2001:db8:18::1:10")
LOST_AFTER_S = 1.0  # a request not answered within this is counted as lost
FLOOD_PROBE_INTERVAL_S = 0.01


def percentile_ms(samples_s: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile, in milliseconds, rounded to microseconds."""
    if not samples_s:
        return None
    ordered = sorted(samples_s)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return round(ordered[rank - 1] * 1000, 3)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/<pid>/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # after the ")" the first field is the state (field 3), so field N is at index N - 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _unique_name() -> str:
    while True:
        name = f"b{secrets.token_hex(2)}"
        if not lab_namespaces(name):
            return name


def measure(*, samples: int, flood_rate: int, flood_seconds: float) -> dict[str, object]:
    name = _unique_name()
    try:
        with Lab.up(name=name, nodes=1, http=False) as lab:
            node = lab.nodes[0]
            with HarnessClient(partial(lab.popen, node)) as speaker:
                for vip in (VIP4, VIP6):
                    if not speaker.command(f"announce {vip}")["ok"]:
                        raise RuntimeError(f"responder in {node.name} refused {vip}")
                with in_netns(lab.client.netns):
                    prober = Prober(lab.client.ifname, ipv4=lab.client.ipv4, ipv6=lab.client.ipv6)
                with prober:
                    return _run(lab, speaker, prober, samples=samples, flood_rate=flood_rate, flood_seconds=flood_seconds)
    finally:
        down(name)


def _run(
    lab: Lab, speaker: HarnessClient, prober: Prober, *, samples: int, flood_rate: int, flood_seconds: float
) -> dict[str, object]:
    for _ in range(20):  # warm-up: caches, first-use code paths
        prober.arp(VIP4)
        prober.ns(VIP6)
    arp_idle = [a.rtt_s for a in (prober.arp(VIP4, timeout_s=LOST_AFTER_S) for _ in range(samples))]
    ndp_idle = [a.rtt_s for a in (prober.ns(VIP6, timeout_s=LOST_AFTER_S) for _ in range(samples))]

    flood = lab.popen(
        lab.client,
        [sys.executable, "-m", "raylb.cluster.lab.probe", "flood",
         "--rate", str(flood_rate), "--seconds", str(flood_seconds)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(0.3)  # ramp-up before the measured window
        cpu_start, wall_start = cpu_seconds(speaker.pid), time.monotonic()
        arp_flood: list[float | None] = []
        while flood.poll() is None and time.monotonic() - wall_start < flood_seconds:
            arp_flood.append(prober.arp(VIP4, timeout_s=LOST_AFTER_S).rtt_s)
            time.sleep(FLOOD_PROBE_INTERVAL_S)
        cpu_used, wall = cpu_seconds(speaker.pid) - cpu_start, time.monotonic() - wall_start
    finally:
        out, _ = flood.communicate(timeout=flood_seconds + 10)
    flood_report = json.loads(out) if out.strip() else {}
    drops = speaker.counters().get("*@eth0", {}).get("drops", {})

    def answered(values: list[float | None]) -> list[float]:
        return [v for v in values if v is not None]

    return {
        "arp_p50_ms": percentile_ms(answered(arp_idle), 0.50),
        "arp_p99_ms": percentile_ms(answered(arp_idle), 0.99),
        "ndp_p50_ms": percentile_ms(answered(ndp_idle), 0.50),
        "ndp_p99_ms": percentile_ms(answered(ndp_idle), 0.99),
        "arp_p50_ms_flood": percentile_ms(answered(arp_flood), 0.50),
        "arp_p99_ms_flood": percentile_ms(answered(arp_flood), 0.99),
        "lost_idle": sum(v is None for v in arp_idle + ndp_idle),
        "lost_under_flood": sum(v is None for v in arp_flood),
        "responder_cpu_pct_flood": round(100 * cpu_used / wall, 1) if wall > 0 else None,
        "samples_arp_idle": len(arp_idle),
        "samples_ndp_idle": len(ndp_idle),
        "samples_arp_flood": len(arp_flood),
        "flood_frames_sent": flood_report.get("sent"),
        "flood_rate_per_s": flood_report.get("rate_per_s"),
        "flood_window_s": round(wall, 2),
        "responder_python_drops": drops,  # frames that reached Python and were dropped
    }


@click.command(name="arp")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output is JSON too).")
@click.option("--samples", default=1000, show_default=True, help="Idle requests per protocol.")
@click.option("--flood-rate", default=20_000, show_default=True, help="Unrelated ARP frames per second.")
@click.option("--flood-seconds", default=5.0, show_default=True, help="Length of the flood (bounded to 60 s).")
def command(as_json: bool, samples: int, flood_rate: int, flood_seconds: float) -> None:
    """ARP/NDP reply latency from the client, idle and under an unrelated ARP flood."""
    if not 0 < flood_seconds <= 60 or not 0 < flood_rate <= 100_000 or not 0 < samples <= 100_000:
        raise click.BadParameter("flood is limited to 60 s and 100 000 frames/s; samples to 100 000")
    result = measure(samples=samples, flood_rate=flood_rate, flood_seconds=flood_seconds)
    click.echo(json.dumps(result))
