"""raylb's actors on a local Ray, driven as a user drives them (the tests/actors tier: no root,
no lab, one Ray node in this process): `raylb run --memory`, `raylb apply`, `raylb status`,
`raylb uninstall`; and Ray restarting the allocator and the operator without any Service
changing IP. A local Ray has no node labelled as a speaker node, so nothing is announced here:
that is the lab's part (tests/lab/).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from click.testing import CliRunner

from raylb.actors.allocator import ALLOCATOR_NAME
from raylb.actors.memory import MEMORY_NAME
from raylb.actors.names import RAY_NAMESPACE
from raylb.actors.operator import OPERATOR_NAME
from raylb.cli import main

pytestmark = [pytest.mark.ray]

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "demo.yaml"
NO_METRICS = ["--metrics-port", "0", "--allocator-metrics-port", "0", "--speaker-metrics-port", "0"]
SETTLE_S = 60.0
EXTRA = """apiVersion: v1
kind: Service
metadata: {name: extra, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: extra}
  ports: [{port: 80, protocol: TCP}]
"""


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, namespace=RAY_NAMESPACE, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def raylb(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def status() -> dict[str, Any]:
    return json.loads(raylb("status", "--json"))  # type: ignore[no-any-return]


def ips_when_settled(keys: set[str]) -> dict[str, list[str]]:
    """Each of `keys`' IPs once all of them have one (the operator's rounds are asynchronous)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            rows = {s["service"]: s for s in status()["services"]}
        except AssertionError:  # an actor restarting: `raylb status` says so and exits non-zero
            rows = {}
        if keys <= rows.keys() and all(rows[k]["ips"] for k in keys):
            return {k: rows[k]["ips"] for k in keys}
        assert time.monotonic() < deadline, f"not all of {sorted(keys)} got an IP within {SETTLE_S:.0f} s: {rows}"
        time.sleep(0.5)


def restart(name: str) -> None:
    """Kill the actor as a crash would; Ray restarts it (the actors are started with max_restarts=-1)."""
    handle = ray.get_actor(name, namespace=RAY_NAMESPACE)
    pid = ray.get(handle.__ray_call__.remote(lambda self: __import__("os").getpid()))
    ray.kill(handle, no_restart=False)
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            again = ray.get(handle.__ray_call__.remote(lambda self: __import__("os").getpid()), timeout=5)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            again = None
        if again is not None and again != pid:
            return
        assert time.monotonic() < deadline, f"{name} was not restarted within {SETTLE_S:.0f} s"
        time.sleep(0.5)


SEEDED = {"default/web": "198.18.0.128/26", "default/billing": "198.18.0.192/27", "default/web6": "2001:db8:18::1:0/120"}


def test_run_apply_and_status_as_a_user_types_them(local_ray: None) -> None:
    assert "started the raylb operator (memory)" in raylb("run", "--memory", *NO_METRICS)
    assert "attached to the running raylb operator" in raylb("run", "--memory", *NO_METRICS)
    raylb("apply", "-f", str(DEMO))
    ips = ips_when_settled(set(SEEDED))
    for key, network in SEEDED.items():
        (ip,) = ips[key]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(network), key
    rows = {s["service"]: s for s in status()["services"]}
    assert not rows["default/legacy"]["ips"] and "no-such-pool" in rows["default/legacy"]["pending"]
    text = raylb("status")
    assert "default/web " in text and "doc-example" in text


@pytest.mark.parametrize("actor", [ALLOCATOR_NAME, OPERATOR_NAME])
def test_a_restarted_actor_changes_no_ip_and_allocates_on(local_ray: None, actor: str, tmp_path: Path) -> None:
    before = ips_when_settled(set(SEEDED))
    restart(actor)
    assert ips_when_settled(set(SEEDED)) == before
    extra = tmp_path / "extra.yaml"
    extra.write_text(EXTRA.replace("name: extra", f"name: extra-{actor}"))
    raylb("apply", "-f", str(extra))
    key = f"default/extra-{actor}"
    got = ips_when_settled({key})[key]
    assert not set(got) & {ip for ips in before.values() for ip in ips}, "a new Service got a taken IP"
    assert ips_when_settled(set(SEEDED)) == before, "the restarted actor's rounds moved an IP"


def test_uninstall_removes_every_actor(local_ray: None) -> None:
    assert "removed: " in raylb("uninstall")
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == RAY_NAMESPACE}
    assert not names & {OPERATOR_NAME, ALLOCATOR_NAME, MEMORY_NAME}
    assert "removed: nothing (raylb was not running)" in raylb("uninstall")
