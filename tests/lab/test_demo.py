"""`make demo` does what it tells a newcomer (issue 6), checked against Kubernetes itself.

One full demo run in a lab of its own (unique name): the lab with Ray and the API server,
raylb submitted with `ray job submit`, the seed's manifests applied, every Service allocated
from the right pool and announced, HTTP from the client answered by the announcing node, a
failover to another node. The demo leaves its lab running for the user; this test removes it.
The commands the demo prints for looking around are run too, exactly as printed.
"""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from kubernetes import client

from raylb.cluster import demo
from raylb.cluster.lab import Lab, down, lab_namespaces
from raylb.cluster.lab import kube as lab_kube
from raylb.cluster.lab.failover_plot import read_trials
from raylb.reconcile import POOL_ANNOTATION
from tests.lab.conftest import unique_lab_name

pytestmark = [pytest.mark.root, pytest.mark.ray, pytest.mark.kube]

NODES = {"node1", "node2", "node3"}
# (service, pool, network the IP must lie in): the seed's pools as deploy/examples/demo.yaml
# asks for them, web6 single-stack IPv6 from the reserved-by-annotation IPv6 pool.
EXPECTED = [
    ("default/web", "doc-example", "198.18.0.128/26"),
    ("default/billing", "doc-example-reserved", "198.18.0.192/27"),
    ("default/web6", "doc-example-ipv6", "2001:db8:18::1:0/120"),
    ("default/dns-tcp", "doc-example", "198.18.0.140/32"),
    ("default/dns-udp", "doc-example", "198.18.0.140/32"),
]


@pytest.fixture(scope="module")
def ran() -> Iterator[tuple[demo.DemoResult, Lab, list[str]]]:
    name = unique_lab_name()
    lines: list[str] = []
    try:
        result = demo.run_demo(name=name, echo=lines.append)
        yield result, Lab.attach(name), lines
    finally:
        down(name)
    assert lab_namespaces(name) == []


def kube_services(lab: Lab) -> dict[str, client.V1Service]:
    assert lab.kube is not None
    with lab_kube.admin_api(lab.control, lab.kube) as api:
        items = client.CoreV1Api(api).list_namespaced_service("default").items
    return {f"default/{s.metadata.name}": s for s in items}


@pytest.mark.parametrize(("key", "pool", "network"), EXPECTED)
def test_services_got_ips_from_the_right_pools_in_kubernetes(
    ran: tuple[demo.DemoResult, Lab, list[str]], key: str, pool: str, network: str
) -> None:
    result, lab, _ = ran
    svc = kube_services(lab)[key]
    ips = [i.ip for i in svc.status.load_balancer.ingress]
    assert len(ips) == 1 and ipaddress.ip_address(ips[0]) in ipaddress.ip_network(network)
    assert svc.metadata.annotations[POOL_ANNOTATION] == pool
    assert result.services[key]["ips"] == ips and result.services[key]["pool"] == pool
    assert result.services[key]["node"] in NODES


def test_the_service_naming_an_unknown_pool_stays_pending_and_says_why(ran: tuple[demo.DemoResult, Lab, list[str]]) -> None:
    result, lab, lines = ran
    assert not kube_services(lab)["default/legacy"].status.load_balancer.ingress
    assert "no-such-pool" in result.services["default/legacy"]["error"]
    assert any("default/legacy" in line and "<pending>" in line and "no-such-pool" in line for line in lines)


def test_http_from_the_client_reached_the_announcing_node(ran: tuple[demo.DemoResult, Lab, list[str]]) -> None:
    result, _, _ = ran
    assert set(result.http) == {"default/web", "default/billing", "default/web6"}  # the port-80 ones
    for key, body in result.http.items():
        assert body == result.services[key]["node"], key


def test_killing_the_announcing_node_moved_the_ip_to_another_node(ran: tuple[demo.DemoResult, Lab, list[str]]) -> None:
    result, _, lines = ran
    failover = result.failover
    assert failover is not None and failover.service == "default/web"
    assert failover.before == result.services["default/web"]["node"]
    assert failover.after in NODES - {failover.before}
    assert failover.kubernetes_node == failover.after  # ServiceL2Status followed the client's view
    assert failover.outage_s > 0 and failover.failed_requests > 0
    assert any(f"{failover.before} -> {failover.after}" in line for line in lines)
    assert failover.picture is not None and any(failover.picture in line for line in lines)  # says where
    assert [(t["victim"], t["after"]) for t in read_trials(Path(failover.picture))] == [(failover.before, failover.after)]


def test_the_printed_commands_for_looking_around_work(ran: tuple[demo.DemoResult, Lab, list[str]]) -> None:
    result, lab, _ = ran
    text = demo.look_around(lab.name, vip=result.services["default/web"]["ips"][0])
    commands = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in text.splitlines()[1:]}
    status = subprocess.run(shlex.split(commands["raylb status"]), capture_output=True, text=True, timeout=120, check=False)
    assert status.returncode == 0, status.stderr
    assert "default/web " in status.stdout and "SPEAKER NODE" in status.stdout
    listing = subprocess.run(shlex.split(commands["no kubectl"]), capture_output=True, text=True, timeout=120, check=False)
    assert listing.returncode == 0, listing.stderr
    assert f"web ['{result.services['default/web']['ips'][0]}']" in listing.stdout
    assert commands["Remove it"].endswith(f"raylb lab down --name {lab.name}")


def test_a_second_demo_on_the_same_lab_refuses_and_exits_non_zero(ran: tuple[demo.DemoResult, Lab, list[str]]) -> None:
    _, lab, _ = ran
    outcome = CliRunner().invoke(demo.command, ["--name", lab.name])
    assert outcome.exit_code == 1
    assert f"a lab named {lab.name!r} already exists" in outcome.output
    assert f"--name {lab.name} --fresh" in outcome.output
    assert lab_namespaces(lab.name)  # and it touched nothing
