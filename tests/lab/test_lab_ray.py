"""A real multi-node Ray cluster in the lab: head in control, one raylet per node namespace.

One lab (2 nodes) serves the whole module, because starting Ray costs ~25 s on this machine.
The tests run in file order; the last one tears the lab down itself and checks that no process
of it survives (the fixture's finalizer removes the lab again, idempotently, whatever happens).
Drivers run inside the control namespace, as they would on a control-plane machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from raylb.cluster.lab import Lab, down, lab_namespaces
from raylb.cluster.lab.ray_nodes import NODE_LABEL, node_resource
from tests.lab.conftest import unique_lab_name

pytestmark = [pytest.mark.root, pytest.mark.ray]

DRIVER_TIMEOUT_S = 120.0
#: Ray's GCS declares a silent node dead after its health checks fail (~14 s with defaults).
NODE_DEATH_TIMEOUT_S = 60.0

DRIVER = """
import json, os, sys, time
import ray

ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
command = sys.argv[1]


def nodes():
    return [
        {"ip": n["NodeManagerAddress"], "alive": n["Alive"], "labels": n.get("Labels") or {}}
        for n in ray.nodes()
    ]


@ray.remote(num_cpus=0)
class Where:
    def where(self):
        return {"netns_inode": os.stat("/proc/self/ns/net").st_ino,
                "ip": ray.util.get_node_ip_address()}


if command == "nodes":
    print(json.dumps(nodes()))
elif command == "where":
    how = sys.argv[2]
    if how == "label":
        actor = Where.options(label_selector={sys.argv[3]: sys.argv[4]}).remote()
    else:
        actor = Where.options(resources={sys.argv[3]: 1}).remote()
    print(json.dumps(ray.get(actor.where.remote(), timeout=60)))
elif command == "wait":  # wait NODE alive|dead TIMEOUT_S: poll the node table
    name, want, timeout_s = sys.argv[2], sys.argv[3] == "alive", float(sys.argv[4])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = any(n["alive"] for n in nodes() if n["labels"].get("raylb.io/node") == name)
        if alive == want:
            print(json.dumps({"node": name, "alive": alive}))
            sys.exit(0)
        time.sleep(0.5)
    sys.exit(f"{name} not {sys.argv[3]} after {timeout_s} s")
"""


@pytest.fixture(scope="module")
def ray_lab() -> Iterator[Lab]:
    name = unique_lab_name()
    try:
        yield Lab.up(name=name, nodes=2, ray=True)
    finally:
        down(name)


@pytest.fixture(scope="module")
def driver_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray-driver") / "driver.py"
    path.write_text(DRIVER)
    return path


def running(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (state Z) or dead (X)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def drive(lab: Lab, script: Path, *args: str) -> object:
    """Run the driver in the control namespace; its last stdout line, parsed as JSON."""
    proc = lab.popen(
        lab.control, [sys.executable, str(script), *args], env=lab.driver_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=DRIVER_TIMEOUT_S + NODE_DEATH_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"driver {args} failed:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def test_head_and_nodes_are_alive_with_their_labels(ray_lab: Lab, driver_script: Path) -> None:
    nodes = drive(ray_lab, driver_script, "nodes")
    assert isinstance(nodes, list)
    seen = {n["labels"].get(NODE_LABEL): (n["ip"], n["alive"]) for n in nodes}
    assert seen == {
        "control": ("198.18.0.1", True),
        "node1": ("198.18.0.11", True),
        "node2": ("198.18.0.12", True),
    }


@pytest.mark.parametrize("how", ["label", "resource"])
def test_an_actor_pinned_to_node2_runs_in_its_namespace(
    ray_lab: Lab, driver_script: Path, how: str
) -> None:
    node2 = ray_lab.host("node2")
    key = NODE_LABEL if how == "label" else node_resource("node2")
    where = drive(ray_lab, driver_script, "where", how, key, "node2")
    assert where == {
        "netns_inode": os.stat(f"/var/run/netns/{node2.netns}").st_ino,
        "ip": str(node2.ipv4),
    }


def test_kill_host_is_a_node_failure_and_restart_brings_it_back(
    ray_lab: Lab, driver_script: Path
) -> None:
    node2 = ray_lab.host("node2")
    assert ray_lab.pids(node2)
    ray_lab.kill_host(node2)
    assert ray_lab.pids(node2) == []
    timeout = str(NODE_DEATH_TIMEOUT_S)
    assert drive(ray_lab, driver_script, "wait", "node2", "dead", timeout) == {
        "node": "node2", "alive": False,
    }  # fmt: skip
    ray_lab.restart_node(node2)
    assert drive(ray_lab, driver_script, "wait", "node2", "alive", timeout) == {
        "node": "node2", "alive": True,
    }  # fmt: skip
    where = drive(ray_lab, driver_script, "where", "label", NODE_LABEL, "node2")
    assert where["ip"] == str(node2.ipv4)  # type: ignore[index]


def test_down_ends_every_ray_process_of_the_lab(ray_lab: Lab) -> None:
    pids = [p for host in ray_lab.hosts for p in ray_lab.pids(host)]
    assert len(pids) > 10  # gcs, raylets, dashboard, agents, workers...
    ray_lab.down()
    assert lab_namespaces(ray_lab.name) == []
    # Killed daemons were reparented to pid 1, which reaps them in its own time: zombies are
    # dead, so count only processes that still run.
    assert [p for p in pids if running(p)] == []
    marker = str(ray_lab.state_dir).encode()
    leftovers = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes():
                leftovers.append(int(proc.name))
        except OSError:
            continue
    assert [p for p in leftovers if running(p)] == []
