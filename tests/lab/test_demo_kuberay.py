"""`raylb demo --kuberay` does what it tells a newcomer, checked with the commands it prints.

One demo run in a lab of its own (unique name): real kubelets, raylb deployed by the KubeRay
operator, the seed's Services with backend pods, requests through kube-proxy and a failover
of a node. The demo leaves its lab running for the user; this test removes it.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import subprocess
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from raylb.cluster import demo
from raylb.cluster.demo_kuberay import EXCLUDE, FAILOVER_SERVICE, run_kuberay_demo
from raylb.cluster.lab import down, lab_namespaces
from tests.lab.conftest import unique_lab_name
from tests.lab.test_demo import EXPECTED as DEMO_EXPECTED

pytestmark = [pytest.mark.root, pytest.mark.kube]

NODES = {"node1", "node2", "node3"}
# (service, pool, network the IP must lie in): demo.yaml's, as the classic demo checks them.
EXPECTED = [*DEMO_EXPECTED, (FAILOVER_SERVICE, "doc-example", "198.18.0.128/26")]
Ran = tuple[demo.DemoResult, list[str], dict[str, str]]


@pytest.fixture(scope="module")
def ran() -> Iterator[Ran]:
    name = unique_lab_name()
    lines: list[str] = []
    try:
        result = run_kuberay_demo(name=name, echo=lambda text: lines.extend(text.splitlines()))
        print("\n".join(["", *lines, result.look_around]))
        printed = result.look_around.splitlines()[1:]
        commands = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in printed}
        yield result, lines, commands
    finally:
        down(name)
    assert lab_namespaces(name) == []


def run_printed(command: str) -> str:
    """A command exactly as the demo printed it; its stdout."""
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize(("key", "pool", "network"), EXPECTED)
def test_services_got_ips_from_the_right_pools(ran: Ran, key: str, pool: str, network: str) -> None:
    result, lines, commands = ran
    row = result.services[key]
    assert row["pool"] == pool
    (ip,) = row["ips"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(network)
    assert any(line.split()[:2] == [key, ip] for line in lines if line.startswith("    default/")), "in the table"
    kube = json.loads(run_printed(commands["kubectl"].replace("get nodes,pods,svc -A -o wide", "get svc -A -o json")))
    name = key.split("/")[1]
    (svc,) = [s for s in kube["items"] if s["metadata"]["name"] == name]
    assert [i["ip"] for i in svc["status"]["loadBalancer"]["ingress"]] == [ip]


def test_services_with_pods_are_announced_and_the_others_say_why_not(ran: Ran) -> None:
    result, lines, _ = ran
    for key in ("default/web", "default/billing", "default/web6"):
        assert result.services[key]["node"] in NODES
    for key in ("default/dns-tcp", "default/dns-udp"):  # no app=dns pods: nothing to announce
        assert result.services[key]["node"] is None
        assert any(key in line and "no endpoints" in line for line in lines)
    assert not result.services["default/legacy"]["ips"]
    assert any("default/legacy" in line and "<pending>" in line and "no-such-pool" in line for line in lines)


def test_requests_from_the_client_were_served_by_pods_through_kube_proxy(ran: Ran) -> None:
    result, lines, _ = ran
    assert set(result.http) == {"default/web", "default/billing", "default/web6"}
    assert set(result.http.values()) <= NODES
    for key in result.http:
        assert any(line.startswith("    GET ") and f"({key}, announced by" in line for line in lines)


def test_killing_the_announcing_node_moved_the_service_and_the_node_came_back(ran: Ran) -> None:
    result, lines, commands = ran
    failover = result.failover
    assert failover is not None and failover.service == FAILOVER_SERVICE
    assert failover.after in NODES - {failover.before}
    assert failover.kubernetes_node == failover.after  # raylb status followed the client's view
    assert failover.outage_s > 0 and failover.failed_requests > 0
    assert any(f"{failover.before} -> {failover.after}" in line for line in lines)
    nodes = json.loads(run_printed(commands["kubectl"].replace("get nodes,pods,svc -A -o wide", "get nodes -o json")))
    assert sorted(n["metadata"]["name"] for n in nodes["items"]) == sorted(NODES)
    assert not [n for n in nodes["items"] if EXCLUDE in n["metadata"]["labels"]], "the demo takes its label off"


def test_the_printed_commands_for_looking_around_work(ran: Ran) -> None:
    result, _, commands = ran
    status = run_printed(commands["raylb status"])
    assert "default/web " in status and "SPEAKER NODE" in status
    for node in NODES:  # the node killed by the demo has a speaker again
        assert any(line.split()[:2] == [node, "yes"] for line in status.splitlines()), status
    assert '"node"' in run_printed(commands["a request"])
    assert commands["Remove it"].endswith(f"raylb lab down --name {result.lab}")


def test_a_second_demo_on_the_same_lab_refuses_and_exits_non_zero(ran: Ran) -> None:
    result, _, _ = ran
    outcome = CliRunner().invoke(demo.command, ["--kuberay", "--name", result.lab])
    assert outcome.exit_code == 1
    assert f"a lab named {result.lab!r} already exists" in outcome.output
    assert f"raylb demo --kuberay --name {result.lab} --fresh" in outcome.output
