"""`raylb bench footprint`: what a speaker node costs in memory, process by process.

Builds a lab with one speaker node (real Ray, raylb on the in-memory store, one IPv4 and one
IPv6 Service announced from that node), waits until the speaker announces, and reads every
process in the node's namespace from /proc: RSS (what `ps` and the issue's table show), PSS
(shared pages split among the processes that map them; PSS adds up to the node's real use)
and USS (pages only that process holds). The lab's HTTP server stands in for the node's
pods and is listed but not counted.

Two controls make the figures readable:
- a bare actor (one method, nothing imported) pinned to the node next to the speaker: the
  floor any Ray worker costs, which no change in raylb can go below;
- `--agents`: SIGKILL the dashboard agent, then (after the node is restarted) the
  runtime-env agent, and report whether the raylet exits with it. Ray 2.60 starts both
  agents from the raylet with fate sharing, and has no `ray start` option to leave either
  out, so this is the evidence for why they stay.

Prints one JSON object; figures in MiB.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import click

from raylb.cluster.lab import system
from raylb.cluster.lab.lab import Lab, LabError
from raylb.cluster.lab.options import lab_name_option
from raylb.cluster.lab.ray_nodes import RayOptions
from raylb.errors import RaylbError

# argv fragment -> process kind, first match wins: Ray's proctitles, then the raylet (whose
# arguments name the agents' and workers' scripts), then those scripts
KINDS: tuple[tuple[str, str], ...] = (
    ("ray::Speaker", "speaker"),
    ("ray::BareActor", "bare_actor"),
    ("ray::DashboardAgent", "dashboard_agent"),
    ("ray::RuntimeEnvAgent", "runtime_env_agent"),
    ("ray::IDLE", "idle_worker"),
    ("raylet/raylet ", "raylet"),
    ("dashboard/agent.py", "dashboard_agent"),
    ("runtime_env/agent/main.py", "runtime_env_agent"),
    ("log_monitor.py", "log_monitor"),
    ("default_worker.py", "idle_worker"),
    ("raylb.cluster.lab.http", "lab_http"),
)
NOT_COUNTED = {"lab_http", "bare_actor"}  # the node's pods' stand-in, and our control
TARGET_SPEAKER_MB = 60
TARGET_NODE_MB = 250
FATE_WAIT_S = 15.0
SETTLE_S = 5.0  # after the speaker announces, let its threads and caches reach steady state
RAYLET_START_WAIT_S = 300
CPU_WINDOW_S = 10.0  # idle CPU is measured over this window


def kind_of(cmdline: str) -> str:
    for fragment, kind in KINDS:
        if fragment in cmdline:
            return kind
    return "other"


def memory_of(pid: int) -> dict[str, float] | None:
    """RSS, PSS and USS of one process in MiB, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {k: round(v / 1024, 1) for k, v in (("rss_mb", fields.get("Rss", 0)), ("pss_mb", fields.get("Pss", 0)), ("uss_mb", uss))}


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (fields 14 and 15 of /proc/PID/stat), None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def processes(lab: Lab, node: str, *, cpu_window_s: float = 0.0) -> list[dict[str, Any]]:
    """Every process of `node` with its memory and, over `cpu_window_s`, its CPU in % of a core."""
    pids = lab.pids(node)
    cpu_before = {pid: cpu_seconds(pid) for pid in pids}
    if cpu_window_s:
        time.sleep(cpu_window_s)  # a measurement window, not a wait for convergence
    out = []
    for pid in pids:
        memory, before, after = memory_of(pid), cpu_before[pid], cpu_seconds(pid)
        if memory is None:
            continue
        entry: dict[str, Any] = {"pid": pid, "process": kind_of(cmdline_of(pid)), **memory}
        if cpu_window_s and before is not None and after is not None:
            entry["cpu_percent"] = round(100 * (after - before) / cpu_window_s, 2)
        out.append(entry)
    return sorted(out, key=lambda p: -p["rss_mb"])


def manifest(path: Path) -> Path:
    docs = [
        "apiVersion: metallb.io/v1beta1\nkind: MetalLB\nmetadata: {name: metallb, namespace: metallb-system}\nspec: {}",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: fp, namespace: metallb-system}\n"
        "spec: {addresses: [198.18.0.224/28, '2001:db8:18::1:100/124']}",
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: fp, namespace: metallb-system}\nspec: {}",
        "apiVersion: v1\nkind: Node\nmetadata: {name: node1, labels: {kubernetes.io/hostname: node1}}",
    ]
    for family in ("IPv4", "IPv6"):
        name = f"fp-{family.lower()}"
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec: {{type: LoadBalancer, ipFamilies: [{family}], ipFamilyPolicy: SingleStack, "
            f"selector: {{app: {name}}}, ports: [{{port: 80, protocol: TCP}}]}}"
        )
        docs.append(
            f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-lab, namespace: default, "
            f"labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\n"
            f"endpoints: [{{addresses: [198.18.64.10], conditions: {{ready: true}}, nodeName: node1}}]"
        )
    path.write_text("\n---\n".join(docs) + "\n")
    return path


BARE_ACTOR = """
class BareActor:
    def ping(self):
        return 1
a = ray.remote(BareActor).options(name="fp-bare", lifetime="detached", num_cpus=0,
                                  resources={"raylb-node-node1": 0.001}).remote()
print(ray.get(a.ping.remote()))
"""


def fate_of(lab: Lab, kind: str) -> dict[str, Any]:
    """SIGKILL the node's `kind` process; does the raylet go with it?"""
    before = processes(lab, "node1")
    victims = [p["pid"] for p in before if p["process"] == kind]
    raylets = [p["pid"] for p in before if p["process"] == "raylet"]
    if not victims or not raylets:
        return {"killed": kind, "error": f"no {kind} or raylet found"}
    os.kill(victims[0], signal.SIGKILL)
    deadline = time.monotonic() + FATE_WAIT_S
    while time.monotonic() < deadline:
        if not Path(f"/proc/{raylets[0]}").exists() or "raylet" not in cmdline_of(raylets[0]):
            return {"killed": kind, "raylet_exited": True}
        time.sleep(0.1)
    return {"killed": kind, "raylet_exited": False, "watched_s": FATE_WAIT_S}


def run(*, name: str, agents: bool) -> dict[str, Any]:
    started = time.monotonic()
    # A busy shared machine may take longer than Ray's default 60 s to register a node.
    options = RayOptions(env={"RAY_raylet_start_wait_time_s": str(RAYLET_START_WAIT_S)})
    with Lab.up(name=name, nodes=1, ray=True, ray_options=options) as lab:
        system.start(lab, manifests=[manifest(Path(f"/tmp/rlb-{name}-footprint.yaml"))])
        system.wait_announced(lab, ["default/fp-ipv4", "default/fp-ipv6"], timeout_s=120)
        system.python(lab, BARE_ACTOR)
        time.sleep(SETTLE_S)  # steady state, not convergence: nothing to poll for
        found = processes(lab, "node1", cpu_window_s=CPU_WINDOW_S)
        counted = [p for p in found if p["process"] not in NOT_COUNTED]
        totals = {key: round(sum(p.get(key, 0) for p in counted), 1) for key in ("rss_mb", "pss_mb", "uss_mb", "cpu_percent")}
        speaker = next((p for p in found if p["process"] == "speaker"), None)
        bare = next((p for p in found if p["process"] == "bare_actor"), None)
        fates = []
        if agents:
            fates.append(fate_of(lab, "dashboard_agent"))
            lab.restart_node("node1")
            system.wait_for(lambda: "node1" in system.speakers_alive(lab), timeout_s=120, what="speaker back")
            fates.append(fate_of(lab, "runtime_env_agent"))
    return {
        "node_processes": found,
        "node_total": totals,
        "speaker": speaker,
        "bare_ray_actor": bare,
        "targets_mb": {"speaker_rss": TARGET_SPEAKER_MB, "node_rss": TARGET_NODE_MB},
        "agents_fate": fates,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.monotonic() - started, 1),
    }


@click.command("footprint")
@lab_name_option("fp")
@click.option("--agents/--no-agents", default=True, show_default=True,
              help="also kill each Ray agent and report whether the raylet goes with it")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print only the JSON result")
def command(name: str, agents: bool, as_json: bool) -> None:
    """RSS/PSS/USS per process on a speaker node in a lab of its own (needs root)."""
    try:
        out = run(name=name, agents=agents)
    except (LabError, RaylbError, TimeoutError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(out, sort_keys=True, indent=None if as_json else 2))
