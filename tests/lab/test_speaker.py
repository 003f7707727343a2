"""Speaker actors on a real 3-node Ray cluster in the lab, seen from the client.

One lab (3 nodes, Ray) and one driver (tests/lab/speaker_driver.py, in the control namespace)
serve the whole module, because Ray costs tens of seconds to start on this machine. The driver
starts one speaker per node and pushes a hand-made snapshot; the tests then look from the
client namespace: which MACs answer ARP/NDP for each VIP (cluster/lab/probe.py), which node
serves HTTP through the VIP, and, with the failover prober (cluster/lab/failover_probe.py),
what a client sees while the announcer leaves or dies. Outages are printed (run with -s) and
never asserted: timing targets belong to the benchmark. Tests run in file order; the last one
kills a node.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from raylb import snapshot as snap
from raylb.cluster.lab.failover_probe import ProbeRun, Sample, takeover
from raylb.cluster.lab.probe import Prober
from raylb.cluster.lab import Host, Lab, system
from raylb.election import pick
from raylb.pools import IPAddress
from tests.lab.conftest import fixture_lab

pytestmark = [pytest.mark.root, pytest.mark.ray]

DRIVER = Path(__file__).with_name("speaker_driver.py")
NODES = ("node1", "node2", "node3")
VIP4 = ipaddress.ip_address("198.18.0.130")
LOCAL_VIP4 = ipaddress.ip_address("198.18.0.131")
LOCAL_VIP6 = ipaddress.ip_address("2001:db8:18::1:20")
CONVERGE_S = 20.0
TAKEOVER_S = 15.0
PROBE_DURATION_S = 60.0


def same_winner_v6(v4: IPAddress) -> IPAddress:
    """An IPv6 VIP elected to the same node as `v4` among all nodes, so that one node failure
    shows both families' failover."""
    for n in range(0x10, 0x100):
        v6 = ipaddress.ip_address(f"2001:db8:18::1:{n:x}")
        if pick(ip=v6, candidates=NODES) == pick(ip=v4, candidates=NODES):
            return v6
    raise AssertionError("no IPv6 VIP with the same winner")


VIP6 = same_winner_v6(VIP4)
VIPS = (VIP4, VIP6)


def make_snapshot(lab: Lab, *, version: int = 1) -> snap.Snapshot:
    return snap.Snapshot(
        version=version,
        services=(
            snap.ServiceState(key="default/web", ips=VIPS, pool="lab", endpoint_nodes=frozenset(NODES)),
            snap.ServiceState(
                key="default/local", ips=(LOCAL_VIP4, LOCAL_VIP6), pool="lab",
                external_traffic_policy=snap.LOCAL, endpoint_nodes=frozenset({"node3"}),
            ),  # fmt: skip
        ),
        advertisements=(snap.Advertisement(name="l2", pools=frozenset({"lab"})),),
        nodes=tuple(snap.NodeInfo(name=n.name, address=str(n.ipv4)) for n in lab.nodes),
    )


class Driver:
    """The driver process in the control namespace, one JSON line each way."""

    def __init__(self, lab: Lab) -> None:
        self.process = lab.popen(
            lab.control, [sys.executable, str(DRIVER)], env=lab.driver_env(), cwd=str(DRIVER.parents[2]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._next(120.0).get("ready")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def _next(self, timeout_s: float) -> dict[str, Any]:
        try:
            return json.loads(self._lines.get(timeout=timeout_s))  # type: ignore[no-any-return]
        except queue.Empty:
            raise TimeoutError(f"speaker driver gave no answer within {timeout_s} s") from None

    def __call__(self, cmd: str, *, timeout_s: float = 120.0, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.process.stdin.flush()
        answer = self._next(timeout_s)
        assert answer["ok"], f"driver {cmd} failed: {answer.get('error')}"
        return answer

    def push(self, snapshot: snap.Snapshot) -> dict[str, int]:
        return self("push", snapshot=snap.to_dict(snapshot))["versions"]  # type: ignore[no-any-return]

    def status(self) -> dict[str, dict[str, Any]]:
        return self("status")["status"]  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self("quit", timeout_s=10.0)
                self.process.wait(10.0)
            except (OSError, TimeoutError, AssertionError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(10.0)


def wait_for(predicate: Callable[[], object], *, timeout_s: float = CONVERGE_S, what: str) -> Any:
    return system.wait_for(predicate, timeout_s=timeout_s, what=what, interval_s=0.1)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with fixture_lab(nodes=3, ray=True) as built:
        yield built


@contextlib.contextmanager
def running_speakers(lab: Lab) -> Iterator[Driver]:
    """A driver with a speaker on every node, the snapshot pushed, all seeing each other."""
    client = Driver(lab)
    try:
        for node in NODES:
            client("start", node=node)
        assert client.push(make_snapshot(lab)) == dict.fromkeys(NODES, 1)
        wait_for(lambda: all_converged(client.status(), NODES), what="all speakers ready and seeing each other")
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def driver(lab: Lab) -> Iterator[Driver]:
    with running_speakers(lab) as client:
        yield client


def all_converged(status: dict[str, dict[str, Any]], alive: Iterable[str]) -> bool:
    alive = sorted(alive)
    return all(status.get(n, {}).get("ready") and status[n]["alive"] == alive for n in alive)


def owners(status: dict[str, dict[str, Any]], vip: IPAddress) -> set[str]:
    return {n for n, s in status.items() if str(vip) in s.get("owned", {})}


def wait_answering(prober: Prober, vip: IPAddress, node: Host) -> None:
    """Poll until `node`'s MAC, and no other, answers ARP/NDP for `vip`."""
    wait_for(lambda: prober.answering(vip) == (node.mac,), what=f"only {node.name} answering {vip}")


def wait_http(lab: Lab, vip: IPAddress) -> str:
    """Poll until HTTP through `vip` works; the name of the node that served it."""
    return wait_for(lambda: http_node(lab, vip), what=f"HTTP via {vip}")  # type: ignore[no-any-return]


def http_node(lab: Lab, vip: IPAddress) -> str | None:
    try:
        status, body = lab.http_get(lab.client, vip, timeout_s=0.5)
    except OSError:
        return None
    return body if status == 200 else None


def failover(
    lab: Lab, driver: Driver, *, victim: Host, action: Callable[[], None], label: str
) -> dict[IPAddress, float]:
    """Probe both VIPs from the client, run `action` (the failure), wait for the takeover,
    print the outages, check who took over and return each VIP's outage in seconds."""
    survivors = [n for n in NODES if n != victim.name]
    runs = {vip: ProbeRun(partial(lab.popen, lab.client), vip=str(vip), duration_s=PROBE_DURATION_S) for vip in VIPS}
    try:
        for vip, run in runs.items():
            run.wait_for(
                lambda s: sum(x.ok and x.node == victim.name for x in s) >= 20, timeout_s=CONVERGE_S,
                what=f"20 answers from {victim.name} via {vip}",
            )  # fmt: skip
        event_s = time.monotonic()
        action()
        for vip, run in runs.items():
            new = pick(ip=vip, candidates=survivors)

            def served_by_new(samples: list[Sample], new: str | None = new) -> bool:
                return any(s.ok and s.t > event_s and s.node == new for s in samples)

            run.wait_for(served_by_new, timeout_s=TAKEOVER_S, what=f"an answer from {new} via {vip}")
    finally:
        results = {vip: run.stop() for vip, run in runs.items()}
    outages: dict[IPAddress, float] = {}
    for vip, samples in results.items():
        outage = takeover(samples, event_s=event_s)
        assert outage is not None, f"{vip}: no takeover seen"
        outages[vip] = outage.duration_s
        first_new_s = next(s.t for s in samples if s.ok and s.t > event_s and s.node == outage.after)
        print(
            f"\n[failover:{label}] {vip}: outage {outage.duration_s * 1000:.0f} ms "
            f"({outage.failed} failed requests), {outage.before} -> {outage.after}, "
            f"first answer from {outage.after} {(first_new_s - event_s) * 1000:.0f} ms after the event"
        )
        assert outage.before == victim.name
        assert outage.after == pick(ip=vip, candidates=survivors)
    return outages


# ----------------------------------------------------------------------------------- tests


def test_exactly_one_mac_answers_each_vip_and_http_reaches_the_announcer(
    lab: Lab, driver: Driver, prober: Prober
) -> None:
    for vip in VIPS:
        expected = lab.host(pick(ip=vip, candidates=NODES))  # type: ignore[arg-type]
        wait_answering(prober, vip, expected)
        for _ in range(5):  # steady state, not a lucky moment
            assert prober.answering(vip) == (expected.mac,)
        assert wait_http(lab, vip) == expected.name
        assert owners(driver.status(), vip) == {expected.name}
    status = driver.status()
    counters = status[pick(ip=VIP4, candidates=NODES)]["responder"]  # type: ignore[index]
    assert counters[f"{VIP4}@eth0"]["replies"] >= 1


def test_local_policy_is_announced_only_by_the_node_with_the_endpoint(
    lab: Lab, driver: Driver, prober: Prober
) -> None:
    node3 = lab.host("node3")
    for vip in (LOCAL_VIP4, LOCAL_VIP6):
        wait_answering(prober, vip, node3)
        for _ in range(3):
            assert prober.answering(vip) == (node3.mac,)
        assert owners(driver.status(), vip) == {"node3"}
        assert wait_http(lab, vip) == "node3"


def test_graceful_leave_of_the_announcer_hands_over_at_once(lab: Lab, driver: Driver, prober: Prober) -> None:
    victim = lab.host(pick(ip=VIP4, candidates=NODES))  # type: ignore[arg-type]
    failover(lab, driver, victim=victim, action=lambda: driver("leave", node=victim.name), label="leave")
    survivors = [n for n in NODES if n != victim.name]
    for vip in VIPS:
        new = lab.host(pick(ip=vip, candidates=survivors))  # type: ignore[arg-type]
        wait_answering(prober, vip, new)
    status = driver.status()
    for name in survivors:
        assert status[name]["peers"][victim.name]["reason"] == "leave"
    # the node gets a speaker again (a new incarnation) and takes its VIPs back
    driver("start", node=victim.name)
    assert driver.push(make_snapshot(lab)) == dict.fromkeys(NODES, 1)
    wait_for(lambda: all_converged(driver.status(), NODES), what=f"{victim.name}'s new speaker seen by all")
    for vip in VIPS:
        wait_answering(prober, vip, victim)


def test_killing_the_announcing_node_moves_its_vips_to_another_node(lab: Lab, driver: Driver, prober: Prober) -> None:
    victim = lab.host(pick(ip=VIP4, candidates=NODES))  # type: ignore[arg-type]
    failover(lab, driver, victim=victim, action=lambda: lab.kill_host(victim), label="kill")
    survivors = [n for n in NODES if n != victim.name]
    for vip in VIPS:
        new = lab.host(pick(ip=vip, candidates=survivors))  # type: ignore[arg-type]
        wait_answering(prober, vip, new)
        assert wait_http(lab, vip) == new.name
    status = driver.status()
    for name in survivors:
        assert status[name]["alive"] == survivors
        assert status[name]["peers"][victim.name]["reason"] == "timeout"
