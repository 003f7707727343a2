"""`raylb bench membership --real`: the membership over real UDP, many endpoints, no Ray.

The simulation (cluster/membership_sim.py) runs 1 000 speakers in one process; this runs the
same code as plain processes on the node network: N bare endpoints
(cluster/membership_endpoint.py: SpeakerCore, the real UDP transport and HMAC, the speaker's
loop) spread over the lab's node namespaces, endpoint i on address i of
MEMBERSHIP_ENDPOINTS_V4. It measures:

- at idle: datagrams sent and received per endpoint per second, and CPU per endpoint (share
  of one core, from /proc/PID/stat);
- at each loss level (0 %, then 1 % and 5 % of membership datagrams dropped at random by an
  iptables rule in the OUTPUT chain of every node namespace; this kernel has no netem): false
  removals during a soak, then detection: an endpoint is SIGKILLed and every survivor's
  report of its death is timed against the kill (CLOCK_MONOTONIC is one clock for all
  namespaces), then the endpoint is started again (a new incarnation) and rejoins.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylb import snapshot as snap
from raylb.actors.speaker.heartbeat import DEFAULT_PORT
from raylb.cluster.lab.failover import percentile
from raylb.cluster.lab.lab import Lab
from raylb.cluster.lab.topology import MEMBERSHIP_ENDPOINTS_V4
from raylb.pools import IPAddress

READY_TIMEOUT_S = 120.0
DETECT_TIMEOUT_S = 10.0
LOSS_LEVELS = (0.0, 0.01, 0.05)
POLL_S = 0.05


@dataclass
class Endpoint:
    name: str
    address: str
    host: str
    process: subprocess.Popen[str] | None = None
    alive_seen: int = 0  # size of its view, from its last report
    counters: list[tuple[float, int, int]] = field(default_factory=list)  # (t, sent, received)
    deaths: dict[str, float] = field(default_factory=dict)  # peer -> when this endpoint saw it die (latest)
    false_removals: list[tuple[float, str]] = field(default_factory=list)


class Bench:
    """N endpoints over the lab's nodes; `log` gets progress lines."""

    def __init__(self, lab: Lab, *, endpoints: int, log: Callable[[str], None]) -> None:
        if endpoints > MEMBERSHIP_ENDPOINTS_V4.num_addresses:
            raise ValueError(f"--nodes {endpoints}: at most {MEMBERSHIP_ENDPOINTS_V4.num_addresses} endpoints")
        self.lab, self.log = lab, log
        hosts = [n.name for n in lab.nodes]
        self.endpoints = {
            f"ep{i:03d}": Endpoint(name=f"ep{i:03d}", address=str(MEMBERSHIP_ENDPOINTS_V4.network_address + i),
                                   host=hosts[i % len(hosts)])
            for i in range(endpoints)
        }  # fmt: skip
        self.killed: dict[str, float] = {}  # endpoint -> when, while it is down
        self._lines: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        root = lab.state_dir / "membership-real"
        root.mkdir(parents=True, exist_ok=True)
        self.key_file = root / "key"
        self.key_file.write_text(secrets.token_hex(32))
        self.snapshot_file = root / "snapshot.json"
        nodes = tuple(snap.NodeInfo(name=e.name, address=e.address) for e in self.endpoints.values())
        vips: tuple[IPAddress, ...] = tuple(ipaddress.ip_address(f"198.18.0.{200 + i}") for i in range(4))
        self.snapshot_file.write_text(json.dumps(snap.to_dict(snap.Snapshot(
            version=1, nodes=nodes,
            services=tuple(snap.ServiceState(key=f"default/s{i}", ips=(ip,), pool="p", has_ready_endpoint=True)
                           for i, ip in enumerate(vips)),
            advertisements=(snap.Advertisement(name="l2", pools=frozenset({"p"})),),
        ))))  # fmt: skip

    # --- processes ------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        e = self.endpoints[name]
        argv = [sys.executable, "-m", "raylb.cluster.membership_endpoint", "--name", e.name, "--address", e.address,
                "--snapshot", str(self.snapshot_file), "--key-file", str(self.key_file), "--port", str(DEFAULT_PORT)]
        e.process = self.lab.popen(e.host, argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        e.alive_seen = 0
        threading.Thread(target=self._read, args=(e.name, e.process), daemon=True).start()

    def _read(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                self._lines.put((name, json.loads(line)))
            except json.JSONDecodeError:
                continue

    def pump(self) -> None:
        """Take in what the endpoints reported so far."""
        while True:
            try:
                name, record = self._lines.get_nowait()
            except queue.Empty:
                return
            e = self.endpoints[name]
            if "alive" in record:
                e.alive_seen = record["alive"]
                for peer in record["died"]:
                    e.deaths[peer] = record["t"]
                    if peer not in self.killed:
                        e.false_removals.append((record["t"], peer))
            elif "sent" in record:
                e.counters.append((record["t"], record["sent"], record["received"]))

    def kill(self, name: str) -> float:
        e = self.endpoints[name]
        assert e.process is not None
        at = time.monotonic()
        os.kill(e.process.pid, signal.SIGKILL)
        self.killed[name] = at
        e.process.wait(5)
        return at

    def wait_all_alive(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Until every endpoint's view holds every endpoint; how long that took."""
        started = time.monotonic()
        while True:
            self.pump()
            if all(e.alive_seen == len(self.endpoints) for e in self.endpoints.values()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                short = {n: e.alive_seen for n, e in self.endpoints.items() if e.alive_seen != len(self.endpoints)}
                raise TimeoutError(f"membership not complete within {timeout_s:.0f} s: views {short}")
            time.sleep(POLL_S)

    def set_loss(self, loss: float) -> int:
        """Drop `loss` of the membership datagrams each node namespace sends (0: none); returns
        how many datagrams the rules it replaces had dropped."""
        rule = ["OUTPUT", "-p", "udp", "--dport", str(DEFAULT_PORT), "-m", "statistic", "--mode", "random",
                "--probability", f"{loss:.4f}", "-j", "DROP"]  # fmt: skip
        dropped = 0
        for node in self.lab.nodes:
            listing = self.lab.run(node, ["iptables", "-L", "OUTPUT", "-n", "-v", "-x"]).stdout
            dropped += sum(int(line.split()[0]) for line in listing.splitlines()[2:] if " DROP " in f" {line} ")
            self.lab.run(node, ["iptables", "-F", "OUTPUT"])
            if loss > 0:
                self.lab.run(node, ["iptables", "-A", *rule])
        return dropped

    def stop_all(self) -> None:
        for e in self.endpoints.values():
            if e.process is not None and e.process.poll() is None:
                e.process.kill()
                e.process.wait(5)

    # --- measurements ---------------------------------------------------------------------------

    def idle(self, seconds: float) -> dict[str, Any]:
        """Datagrams/s each way and CPU per endpoint over `seconds` of steady state."""
        self.pump()
        before = {n: (e.counters[-1] if e.counters else None, cpu_s(e)) for n, e in self.endpoints.items()}
        started = time.monotonic()
        time.sleep(seconds)  # a measurement window, not a wait for a condition
        self.pump()
        wall = time.monotonic() - started
        sent, received, cpu = [], [], []
        for name, e in self.endpoints.items():
            (first, cpu_before), last = before[name], e.counters[-1]
            if first is not None and last[0] > first[0]:
                sent.append((last[1] - first[1]) / (last[0] - first[0]))
                received.append((last[2] - first[2]) / (last[0] - first[0]))
            cpu.append(100.0 * (cpu_s(e) - cpu_before) / wall)
        return {
            "seconds": round(wall, 1),
            "sent_per_s": spread(sent), "received_per_s": spread(received), "cpu_pct_of_core": spread(cpu),
        }  # fmt: skip

    def loss_phase(self, loss: float, *, soak_s: float, kills: int) -> dict[str, Any]:
        """False removals over a soak at `loss`, then `kills` endpoints killed one at a time."""
        self.set_loss(loss)
        try:
            self.pump()
            before = {n: len(e.false_removals) for n, e in self.endpoints.items()}
            time.sleep(soak_s)  # a measurement window: removals of live endpoints are counted
            self.pump()
            false_soak = sum(len(e.false_removals) - before[n] for n, e in self.endpoints.items())
            detections: list[float] = []
            names = sorted(self.endpoints)
            for k in range(kills):
                victim = names[(k * 7 + int(loss * 1000)) % len(names)]
                detections += self.detect(victim)
            removals = [r for n, e in self.endpoints.items() for r in e.false_removals[before[n]:]]
        finally:
            dropped = self.set_loss(0.0)
        return {
            "loss": loss, "soak_s": soak_s, "datagrams_dropped": dropped, "false_removals_in_soak": false_soak,
            # over the whole phase: each endpoint's removal of a live one, and who was removed
            "false_removals": len(removals), "falsely_removed": sorted({peer for _, peer in removals}),
            "kills": kills, "detection_s": spread(detections),
        }  # fmt: skip

    def detect(self, victim: str) -> list[float]:
        """Kill `victim`: when each survivor saw it die (seconds after the kill); start it again."""
        for e in self.endpoints.values():
            e.deaths.pop(victim, None)
        killed_at = self.kill(victim)
        survivors = [e for n, e in self.endpoints.items() if n != victim]
        deadline = killed_at + DETECT_TIMEOUT_S
        while True:
            self.pump()
            if all(victim in e.deaths for e in survivors):
                break
            if time.monotonic() > deadline:
                missing = [e.name for e in survivors if victim not in e.deaths]
                raise TimeoutError(f"{victim} killed: {len(missing)} survivors never saw it die: {missing[:10]}")
            time.sleep(POLL_S)
        seen = [e.deaths[victim] - killed_at for e in survivors]
        self.log(f"killed {victim}: every survivor saw it die, p50 {percentile(seen, 50) or 0.0:.3f} s, max {max(seen):.3f} s")
        self.start(victim)
        self.wait_all_alive()
        del self.killed[victim]
        return seen


def cpu_s(e: Endpoint) -> float:
    if e.process is None:
        return 0.0
    try:
        fields = Path(f"/proc/{e.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": round(percentile(values, 50) or 0.0, 3), "p99": round(percentile(values, 99) or 0.0, 3),
            "max": round(max(values), 3)}  # fmt: skip


def run(
    *, name: str, endpoints: int, namespaces: int, idle_s: float, soak_s: float, kills: int,
    losses: tuple[float, ...] = LOSS_LEVELS, log: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:  # fmt: skip
    """The whole benchmark in a lab of its own (removed afterwards); the JSON fields."""
    started = time.monotonic()
    with Lab.up(name=name, nodes=namespaces, ray=False, http=False) as lab:
        bench = Bench(lab, endpoints=endpoints, log=log)
        try:
            for e in bench.endpoints.values():
                lab.run(e.host, ["ip", "addr", "add", f"{e.address}/{MEMBERSHIP_ENDPOINTS_V4.prefixlen}", "dev", "eth0"])
            for endpoint in bench.endpoints:
                bench.start(endpoint)
            joined_s = bench.wait_all_alive()
            log(f"{endpoints} endpoints on {namespaces} node namespaces see each other after {joined_s:.1f} s")
            idle = bench.idle(idle_s)
            log(f"idle: {idle}")
            phases = []
            for loss in losses:
                phases.append(bench.loss_phase(loss, soak_s=soak_s, kills=kills))
                log(f"loss {loss:.0%}: {phases[-1]}")
        finally:
            bench.stop_all()
    return {
        "real": True, "nodes": endpoints, "namespaces": namespaces, "joined_s": round(joined_s, 2), "idle": idle,
        "loss_phases": phases, "load_avg": list(os.getloadavg()), "wall_s": round(time.monotonic() - started, 1),
    }  # fmt: skip
