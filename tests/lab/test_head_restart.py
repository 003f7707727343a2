"""The Ray control plane goes away and comes back (issue 12, finding 3).

The lab's head keeps Ray's tables in Redis (GCS fault tolerance, cluster/lab/redis.py). When the
head dies, the speakers keep answering; when it comes back, the raylets reconnect to the same
cluster (same processes), the detached operator, allocator and store are restarted by Ray and
carry on where they were, and nobody resubmits anything. Without fault tolerance a new head is a
new cluster: every raylet exits on the cluster-ID mismatch and takes its speaker with it.

One lab (2 nodes, in-memory store) for the module; tests run in file order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raylb.cluster.lab import Host, Lab, system
from tests.lab.answer_watch import AnswerWatch
from tests.lab.conftest import fixture_lab

pytestmark = [pytest.mark.root, pytest.mark.ray]

MANIFESTS = Path(__file__).parent / "manifests"
SERVICES = ["default/web", "default/billing", "default/web6"]
#: How long the head stays down: as long as a head Pod being rescheduled might take.
HEAD_DOWN_S = 60.0
#: Bounds on convergence after the head is back (the head itself starts in ~10-15 s here).
RESUME_TIMEOUT_S = 180.0
#: How long Redis stays down; the GCS gives up on it after ~3.5 s and exits (Ray 2.60).
REDIS_DOWN_S = 10.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with fixture_lab(nodes=2, ray=True) as built:
        system.start(built, manifests=[system.EXAMPLES / "demo.yaml", system.EXAMPLES / "lab-nodes.yaml"])
        system.wait_announced(built, SERVICES, timeout_s=90)
        yield built


def processes(lab: Lab, host: Host, names: tuple[str, ...]) -> dict[str, int]:
    """PID by command name of the processes named `names` on `host`."""
    found: dict[str, int] = {}
    for pid in lab.pids(host):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in names:
            found[comm] = pid
    return found


def data_plane(lab: Lab) -> dict[str, dict[str, int]]:
    """The raylet's and the speaker's PID on every node (a restarted process has a new PID)."""
    return {node.name: processes(lab, node, ("raylet", "ray::Speaker")) for node in lab.nodes}


def vips(services: dict[str, dict]) -> dict[str, str]:
    """Every VIP of the watched services and the MAC of the node announcing it."""
    return {ip: services[key]["node"] for key in SERVICES for ip in services[key]["ips"]}


def assert_answered_throughout(lab: Lab, watch: AnswerWatch, expected: dict[str, str]) -> None:
    macs = {vip: (lab.host(node).mac,) for vip, node in expected.items()}
    silent = watch.unanswered()
    assert not silent, f"{len(silent)} ARP/NDP questions went unanswered, first {silent[:3]}"
    for vip, mac in macs.items():
        assert watch.answerers(vip) == {mac}, f"{vip}: answered by {watch.answerers(vip)}, expected only {mac}; {watch.timeline(vip)}"


def assert_data_plane_undisturbed(
    lab: Lab, watch: AnswerWatch, *, running: dict[str, dict[str, int]], before: dict[str, dict], after: dict[str, dict]
) -> dict[str, float]:
    """Every VIP answered throughout by its node, the same raylets and speakers, the same IPs;
    returns the longest gap between answers per VIP."""
    expected = vips(before)
    assert_answered_throughout(lab, watch, expected)
    assert data_plane(lab) == running, "a raylet or speaker was restarted"
    assert {k: after[k]["ips"] for k in SERVICES} == {k: before[k]["ips"] for k in SERVICES}
    return {vip: round(watch.longest_gap_s(vip), 3) for vip in expected}


def operator_resumed(lab: Lab) -> bool:
    """The operator deployed and every watched service announced (`raylb status` also lists
    services that wait for an IP, such as demo.yaml's `legacy`: they never get a node)."""
    status = system.status(lab)
    operator = status["operator"] or {}
    services = {s["service"]: s for s in status["services"]}
    return bool(operator.get("deployed")) and all(services.get(k, {}).get("node") for k in SERVICES)


def test_the_store_restarted_by_ray_keeps_every_object(lab: Lab) -> None:
    """The in-memory store is what an API server is to the operator: its objects outlive it
    (mirrored in Ray's internal KV), or a head restart would look like everything deleted."""
    before = system.wait_announced(lab, SERVICES, timeout_s=60)
    listed = "print(sorted(o['metadata']['name'] for o in ray.get(ray.get_actor('raylb-memory').list.remote('Service'))))"
    names = system.python(lab, listed)
    system.kill_actor(lab, "raylb-memory")
    system.wait_for(lambda: system.python(lab, listed) == names, timeout_s=RESUME_TIMEOUT_S, what="store back with its objects")
    after = system.wait_announced(lab, SERVICES, timeout_s=60)
    assert {k: after[k]["ips"] for k in SERVICES} == {k: before[k]["ips"] for k in SERVICES}


def test_the_head_down_for_a_minute_and_back_changes_nothing_in_the_data_plane(lab: Lab) -> None:
    before = system.wait_announced(lab, SERVICES, timeout_s=60)
    running = data_plane(lab)
    assert {n: set(p) for n, p in running.items()} == {n.name: {"raylet", "ray::Speaker"} for n in lab.nodes}
    expected = vips(before)
    with AnswerWatch(lab, expected) as watch:
        killed_at = time.monotonic()
        lab.kill_ray_head()
        # The scenario, not a wait for convergence: the head stays away this long.
        time.sleep(max(0.0, killed_at + HEAD_DOWN_S - time.monotonic()))
        back_at = time.monotonic()
        lab.start_ray_head()  # returns once the GCS counts the head and every raylet alive
        nodes_at = time.monotonic()
        system.wait_for(lambda: operator_resumed(lab), timeout_s=RESUME_TIMEOUT_S, what="operator resumed")
        resumed_at = time.monotonic()
        after = system.wait_announced(lab, SERVICES, timeout_s=60)
    gaps = assert_data_plane_undisturbed(lab, watch, running=running, before=before, after=after)
    print(
        f"\nhead down {back_at - killed_at:.1f} s; head + raylets back {nodes_at - back_at:.1f} s after its start; "
        f"operator resumed {resumed_at - back_at:.1f} s after the head's start; {len(watch.samples)} ARP/NDP "
        f"questions, none unanswered; longest gap between answers per VIP {gaps}"
    )


def test_a_service_created_after_the_head_is_back_gets_an_ip_and_the_others_keep_theirs(lab: Lab) -> None:
    before = system.wait_announced(lab, SERVICES, timeout_s=60)
    system.apply(lab, MANIFESTS / "after-head.yaml")
    after = system.wait_announced(lab, [*SERVICES, "default/after-head"], timeout_s=RESUME_TIMEOUT_S)
    new_ips = after["default/after-head"]["ips"]
    assert new_ips and not set(new_ips) & {ip for k in SERVICES for ip in before[k]["ips"]}
    assert {k: after[k]["ips"] for k in SERVICES} == {k: before[k]["ips"] for k in SERVICES}


def test_redis_restarting_does_not_disturb_the_data_plane(lab: Lab) -> None:
    """Ray 2.60's GCS does not reconnect to a Redis that restarted: it exits ~3.5 s after losing
    it, and the head comes back as KubeRay would bring it back (the head container restarts).
    Through all of it the speakers answer, and no raylet or speaker restarts."""
    before = system.wait_announced(lab, SERVICES, timeout_s=60)
    running = data_plane(lab)
    expected = vips(before)
    with AnswerWatch(lab, expected) as watch:
        lost_at = time.monotonic()
        lab.kill_redis()
        time.sleep(max(0.0, lost_at + REDIS_DOWN_S - time.monotonic()))  # the scenario: Redis away
        gcs_outlived_redis = bool(processes(lab, lab.control, ("gcs_server",)))
        lab.start_redis()
        lab.kill_ray_head()  # what is left of it: the GCS has exited, the head's raylet waits
        lab.start_ray_head()
        system.wait_for(lambda: operator_resumed(lab), timeout_s=RESUME_TIMEOUT_S, what="operator resumed")
        after = system.wait_announced(lab, SERVICES, timeout_s=60)
    gaps = assert_data_plane_undisturbed(lab, watch, running=running, before=before, after=after)
    print(
        f"\nRedis down {REDIS_DOWN_S:.0f} s (GCS still running after it: {gcs_outlived_redis}), head restarted: "
        f"{len(watch.samples)} questions, none unanswered; longest gaps {gaps}"
    )
