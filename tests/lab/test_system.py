"""raylb end to end on a real multi-node Ray cluster in the lab (issue 4).

One lab for the module: operator, allocator and in-memory store on the head (control
namespace), a speaker on each of three Ray nodes, the client probing from its namespace.
Tests run in file order, from observing to destructive; the Ray head is killed last.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raylb.cluster.lab.failover_probe import ProbeRun, takeover
from raylb.cluster.lab.probe import Prober
from raylb.cluster.lab import Lab, prometheus, system
from tests.lab.conftest import fixture_lab

MANIFESTS = Path(__file__).parent / "manifests"
SERVICES = ["default/web", "default/billing", "default/web6", "default/dns-tcp", "default/dns-udp", "default/local"]
TAKEOVER_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with fixture_lab(nodes=3, ray=True) as built:
        system.start(built, manifests=[system.EXAMPLES / "demo.yaml", system.EXAMPLES / "lab-nodes.yaml", MANIFESTS / "local.yaml"])
        system.wait_announced(built, SERVICES, timeout_s=90)
        built.start_prometheus()
        yield built


def probe_run(lab: Lab, vip: str, duration_s: float) -> ProbeRun:
    return ProbeRun(functools.partial(lab.popen, lab.client), vip=vip, duration_s=duration_s)


def test_every_vip_is_answered_by_exactly_its_announcing_node(lab: Lab, prober: Prober) -> None:
    services = system.services(lab)
    seen = 0
    for key in SERVICES:
        node = lab.host(services[key]["node"])
        for ip in services[key]["ips"]:
            assert prober.answering(ipaddress.ip_address(ip)) == (node.mac,), f"{key} {ip} should be answered by {node.name} only"
            seen += 1
    assert seen == len(SERVICES)


def test_http_to_a_vip_reaches_the_announcing_node(lab: Lab) -> None:
    services = system.services(lab)
    for key in ("default/web", "default/web6", "default/billing"):
        vip = services[key]["ips"][0]
        status, body = lab.http_get(lab.client, vip)
        assert (status, body) == (200, services[key]["node"]), key


def test_local_policy_is_announced_only_from_the_node_with_an_endpoint(lab: Lab) -> None:
    assert system.services(lab)["default/local"]["node"] == "node3"


def test_status_service_tells_each_node_its_rank_and_why_it_does_not_announce(lab: Lab) -> None:
    import json  # noqa: PLC0415

    [local] = json.loads(system.raylb(lab, "status", "--service", "default/local", "--json").stdout)
    assert local["announcer"] == "node3"
    reasons = {n["node"]: n["reason"] for n in local["nodes"]}
    assert reasons == {"node1": "NO_LOCAL_ENDPOINT", "node2": "NO_LOCAL_ENDPOINT", "node3": "ANNOUNCER"}
    assert sorted(n["rank"] for n in local["nodes"]) == [1, 2, 3]
    text = system.raylb(lab, "status", "--service", "default/web").stdout
    web = system.services(lab)["default/web"]
    assert f"{web['ips'][0]} (announced by {web['node']})" in text
    assert text.count(f"outranked by node {web['node']}") == 2, text
    # each speaker's own status says the same about itself
    why = {s["node"]: s["why"] for s in system.status(lab)["speakers"]}
    assert {node: why[node][local["ip"]] for node in why} == {n["node"]: n["text"] for n in local["nodes"]}


def test_status_shows_a_service_without_an_ip_as_pending_with_the_reason(lab: Lab, tmp_path: Path) -> None:
    manifest = tmp_path / "nowhere.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: nowhere, namespace: default, annotations: "
        "{metallb.io/address-pool: nowhere}}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n"
    )
    system.apply(lab, manifest)
    try:
        line = system.wait_for(
            lambda: next((l for l in system.raylb(lab, "status").stdout.splitlines() if l.startswith("default/nowhere")), None),
            timeout_s=30, what="default/nowhere listed",
        )  # fmt: skip
        assert line.split()[1] == "<pending>" and "'nowhere'" in line and "does not exist" in line, line
    finally:
        system.raylb(lab, "delete", "Service", "nowhere")


def scrape(lab: Lab, host: object, port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """One /metrics scrape from the client namespace: name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    status, body = lab.http_get(lab.client, host.ipv4, port=port, path="/metrics")  # type: ignore[attr-defined]
    assert status == 200, body
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(body):
        for sample in fam.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_every_process_serves_metallbs_metrics_and_they_agree_with_status(lab: Lab) -> None:
    from raylb.actors.metrics_http import ALLOCATOR_PORT, OPERATOR_PORT, SPEAKER_PORT  # noqa: PLC0415

    status = system.status(lab)
    services = {s["service"]: s for s in status["services"] if s["ips"]}
    announced: dict[str, set[str]] = {}
    for node in lab.nodes:
        for labels, value in scrape(lab, node, SPEAKER_PORT).get("metallb_speaker_announced", []):
            assert labels["node"] == node.name and labels["protocol"] == "layer2" and value == 1
            announced.setdefault(labels["ip"], set()).add(node.name)
    for key in SERVICES:
        for ip in services[key]["ips"]:
            assert announced.get(ip) == {services[key]["node"]}, (key, ip, announced.get(ip))
    alloc = scrape(lab, lab.control, ALLOCATOR_PORT)
    in_use = {labels["pool"]: value for labels, value in alloc["metallb_allocator_addresses_in_use_total"]}
    assert in_use["doc-example"] == status["pools"]["doc-example"]["in_use"]
    operator = scrape(lab, lab.control, OPERATOR_PORT)
    assert operator["metallb_k8s_client_updates_total"][0][1] > 0


def announced_by_prometheus(lab: Lab) -> dict[str, set[str]]:
    """VIP -> nodes, from metallb_speaker_announced as Prometheus last scraped it."""
    out: dict[str, set[str]] = {}
    for r in prometheus.query(lab, "metallb_speaker_announced == 1"):
        out.setdefault(r["metric"]["ip"], set()).add(r["metric"]["node"])
    return out


def test_prometheus_scrapes_every_endpoint_and_agrees_with_status(lab: Lab) -> None:
    expected_targets = {f"{n.name}/raylb-speaker" for n in lab.nodes} | {"control/raylb-operator", "control/raylb-allocator"}
    system.wait_for(lambda: prometheus.targets_up(lab) == dict.fromkeys(expected_targets, True), timeout_s=30,
                    what="every raylb endpoint scraped")  # fmt: skip
    status = system.status(lab)
    in_use = status["pools"]["doc-example"]["in_use"]
    query = 'metallb_allocator_addresses_in_use_total{pool="doc-example"}'
    system.wait_for(lambda: [float(r["value"][1]) for r in prometheus.query(lab, query)] == [in_use], timeout_s=30,
                    what=f"{query} == {in_use}")  # fmt: skip
    services = {s["service"]: s for s in status["services"] if s["ips"]}
    wanted = {ip: {services[k]["node"]} for k in SERVICES for ip in services[k]["ips"]}
    system.wait_for(lambda: {ip: n for ip, n in announced_by_prometheus(lab).items() if ip in wanted} == wanted,
                    timeout_s=30, what="metallb_speaker_announced: exactly the announcing node per VIP")  # fmt: skip


def test_operator_and_allocator_crashes_change_no_ip_and_announcements_continue(lab: Lab) -> None:
    before = system.services(lab)
    web = before["default/web"]
    system.kill_actor(lab, "raylb-operator")
    system.kill_actor(lab, "raylb-allocator")
    assert lab.http_get(lab.client, web["ips"][0]) == (200, web["node"])  # the data plane never noticed
    # Ray restarts both; the allocator restores from the recorded status before serving anything.
    system.wait_for(lambda: (system.status(lab)["operator"] or {}).get("snapshot_version"), timeout_s=60, what="operator back")
    after = system.wait_announced(lab, SERVICES, timeout_s=60)
    assert {k: after[k]["ips"] for k in SERVICES} == {k: before[k]["ips"] for k in SERVICES}


def test_killing_the_announcing_node_moves_its_ip_and_the_node_gets_a_speaker_again(lab: Lab) -> None:
    web = system.services(lab)["default/web"]
    vip, victim = web["ips"][0], web["node"]
    try:
        with probe_run(lab, vip, duration_s=TAKEOVER_TIMEOUT_S + 10) as run:
            run.wait_for(lambda s: any(x.ok for x in s), timeout_s=10, what="first answer")
            killed_at = time.monotonic()
            lab.kill_host(victim)
            run.wait_for(
                lambda s: takeover(s, event_s=killed_at), timeout_s=TAKEOVER_TIMEOUT_S, what=f"takeover from {victim}"
            )
            outage = takeover(run.stop(), event_s=killed_at)
        assert outage is not None and outage.before == victim and outage.after not in (None, victim)
        print(f"\nfailover {victim} -> {outage.after}: client-observed outage {outage.end_s - outage.start_s:.3f} s")
        # Prometheus saw it: the VIP is now announced by the new node only, and the new node's
        # speaker recorded how long it took to detect the death and that it took the VIP over.
        system.wait_for(lambda: announced_by_prometheus(lab).get(vip) == {outage.after}, timeout_s=30,
                        what=f"metallb_speaker_announced naming {outage.after} for {vip}")  # fmt: skip
        detected = prometheus.query(lab, f'raylb_peer_failure_detection_seconds{{node="{outage.after}",peer="{victim}"}}')
        handed = prometheus.query(lab, f'raylb_peer_handovers_total{{node="{outage.after}",peer="{victim}"}}')
        assert len(detected) == 1 and float(detected[0]["value"][1]) > 0, detected
        assert len(handed) == 1 and float(handed[0]["value"][1]) >= 1, handed
        print(f"Prometheus: {outage.after} detected {victim}'s death after {float(detected[0]['value'][1]):.3f} s")
    finally:  # the machine comes back even when the takeover failed, so later tests see three nodes
        lab.restart_node(victim)
    system.wait_for(lambda: victim in system.speakers_alive(lab), timeout_s=90, what=f"speaker back on {victim}")
    system.wait_announced(lab, SERVICES, timeout_s=60)


def test_a_node_leaving_on_purpose_hands_over_at_once(lab: Lab) -> None:
    web = system.services(lab)["default/web"]
    vip, leaving = web["ips"][0], web["node"]
    staying = [n.name for n in lab.nodes if n.name != leaving]
    manifest = Path(f"/tmp/rlb-{lab.name}-select.yaml")
    nodes = "".join(
        f"---\napiVersion: v1\nkind: Node\nmetadata: {{name: {n.name}, labels: {{kubernetes.io/hostname: {n.name}"
        + (", raylb.io/speaker: 'yes'" if n.name in staying else "")
        + "}}\n"
        for n in lab.nodes
    )
    selector = "---\napiVersion: metallb.io/v1beta1\nkind: MetalLB\nmetadata: {name: metallb, namespace: metallb-system}\nspec: {nodeSelector: {raylb.io/speaker: 'yes'}}\n"
    manifest.write_text(nodes + selector)
    try:
        with probe_run(lab, vip, duration_s=TAKEOVER_TIMEOUT_S + 10) as run:
            run.wait_for(lambda s: any(x.ok for x in s), timeout_s=10, what="first answer")
            changed_at = time.monotonic()
            system.apply(lab, manifest)
            run.wait_for(
                lambda s: takeover(s, event_s=changed_at) or any(x.ok and x.node in staying and x.t > changed_at for x in s),
                timeout_s=TAKEOVER_TIMEOUT_S,
                what=f"handover from {leaving}",
            )
        system.wait_for(lambda: system.speakers_alive(lab) == set(staying), timeout_s=30, what="speaker removed")
    finally:
        manifest.write_text("apiVersion: metallb.io/v1beta1\nkind: MetalLB\nmetadata: {name: metallb, namespace: metallb-system}\nspec: {}\n")
        system.apply(lab, manifest)
        manifest.unlink()
    system.wait_for(lambda: system.speakers_alive(lab) == {n.name for n in lab.nodes}, timeout_s=60, what="speakers back")


def test_deleting_metallb_removes_everything_and_recreating_it_restores_the_same_ips(lab: Lab, prober: Prober) -> None:
    before = system.services(lab)
    system.raylb(lab, "delete", "MetalLB", "metallb", "-n", "metallb-system")
    system.wait_for(lambda: not (s := system.status(lab))["speakers"] and not s["operator"]["speakers"],
                    timeout_s=60, what="speakers removed, and no longer listed")  # fmt: skip
    assert prober.answering(ipaddress.ip_address(before["default/web"]["ips"][0])) == ()
    system.apply(lab, system.EXAMPLES / "demo.yaml")
    after = system.wait_announced(lab, SERVICES, timeout_s=90)
    assert {k: after[k]["ips"] for k in SERVICES} == {k: before[k]["ips"] for k in SERVICES}


def test_killing_the_ray_head_leaves_announcements_running(lab: Lab, prober: Prober) -> None:
    services = system.services(lab)
    web = services["default/web"]
    with probe_run(lab, web["ips"][0], duration_s=8) as run:
        run.wait_for(lambda s: any(x.ok for x in s), timeout_s=10, what="first answer")
        killed_at = time.monotonic()
        lab.kill_host(lab.control)  # Ray head, GCS, operator, allocator and store: the whole control plane
        run.wait_for(lambda s: sum(x.ok and x.t > killed_at + 3 for x in s) >= 20, timeout_s=30, what="answers after the kill")
        samples = run.stop()
    assert {x.node for x in samples if x.ok} == {web["node"]}  # never moved, never stopped for good
    for key in ("default/web", "default/web6"):
        ip, node = services[key]["ips"][0], services[key]["node"]
        assert lab.http_get(lab.client, ip) == (200, node)
        assert prober.answering(ipaddress.ip_address(ip)) == (lab.host(node).mac,)
