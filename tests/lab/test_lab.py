"""The namespace lab behaves like a small L2 network of Kubernetes nodes (needs root).

Every probe is bounded (one ICMP echo, one UDP datagram, one HTTP request at a time) and goes
only to lab addresses inside lab namespaces.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from click.testing import CliRunner

from raylb.cluster.lab import Lab, LabError, down, in_netns, lab_namespaces
from raylb.cluster.lab import netns as ns
from raylb.cluster.lab.cli import group as lab_cli
from raylb.cluster.lab.hosts import wait_until
from raylb.cluster.lab.topology import VIP_RANGE_V4, VIP_RANGE_V6
from tests.lab.conftest import unique_lab_name

pytestmark = pytest.mark.root

#: Linux gives up on an unanswered neighbour after ucast/mcast_solicit (3) probes one
#: retrans_time (1 s) apart; allow slack on a loaded machine.
NEIGH_FAIL_TIMEOUT_S = 10.0
#: Addresses in the VIP ranges that nothing in these tests ever owns.
UNOWNED_VIP_V4 = VIP_RANGE_V4.network_address + 99
UNOWNED_VIP_V6 = VIP_RANGE_V6.network_address + 0x99


def netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def neighbour(lab: Lab, address: IPv4Address | IPv6Address) -> tuple[str | None, str]:
    """(lladdr or None, state) of the client's neighbour entry for `address`."""
    out = lab.run(lab.client, ["ip", "neigh", "show", "to", str(address), "dev", "eth0"]).stdout
    if not out.strip():
        return None, "NONE"
    mac = re.search(r"lladdr (\S+)", out)
    return (mac.group(1) if mac else None), out.split()[-1]


def poke(lab: Lab, address: IPv4Address | IPv6Address) -> None:
    """One UDP datagram from the client (discard port): makes its kernel resolve `address`."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with in_netns(lab.client.netns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        sock.sendto(b"raylb-lab", (str(address), 9))


def resolution_outcome(lab: Lab, address: IPv4Address | IPv6Address) -> tuple[str | None, str]:
    """Poke `address`, then poll the neighbour entry until resolution succeeded or failed."""
    poke(lab, address)
    result: list[tuple[str | None, str]] = []

    def settled() -> bool:
        result[:] = [neighbour(lab, address)]
        return result[0][1] not in ("INCOMPLETE", "NONE")

    wait_until(settled, timeout_s=NEIGH_FAIL_TIMEOUT_S, interval_s=0.1, what=f"neighbour {address}")
    return result[0]


# --- life cycle ---------------------------------------------------------------------------------


def test_up_creates_the_namespaces_and_down_removes_them_even_after_an_exception() -> None:
    name = unique_lab_name()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with Lab.up(name=name, nodes=2) as lab:
                hosts = ("br", "control", "node1", "node2", "client")
                expected = {f"rlb-{name}-{h}" for h in hosts}
                assert set(lab_namespaces(name)) == expected
                http_pids = [p for node in lab.nodes for p in lab.pids(node)]
                assert len(http_pids) == 2
                raise RuntimeError("boom")
        assert lab_namespaces(name) == []
        assert not [p for p in http_pids if os.path.exists(f"/proc/{p}")]
    finally:
        down(name)


def test_up_refuses_an_existing_lab_and_leaves_it_running(lab: Lab) -> None:
    with pytest.raises(LabError, match="already exists"):
        Lab.up(name=lab.name, nodes=1)
    assert len(lab_namespaces(lab.name)) == 6
    assert lab.http_get(lab.client, lab.nodes[0].ipv4) == (200, "node1")


def test_down_is_idempotent_and_needs_only_the_name(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=1)
    assert len(down(lab.name)) == 4
    assert down(lab.name) == []
    assert lab_namespaces(lab.name) == []
    lab.down()  # the object's own down after the fact is harmless too


def test_attach_finds_a_running_lab(shared_lab: Lab) -> None:
    attached = Lab.attach(shared_lab.name)
    assert attached.hosts == shared_lab.hosts
    assert attached.http and not attached.ray


def test_attach_to_a_missing_lab_says_so() -> None:
    with pytest.raises(LabError, match="not running"):
        Lab.attach(unique_lab_name(reserve=False))


def test_cli_up_status_down() -> None:
    name = unique_lab_name()
    runner = CliRunner()
    try:
        result = runner.invoke(lab_cli, ["up", "--name", name, "--nodes", "1", "--no-ray"])
        assert result.exit_code == 0, result.output
        assert f"rlb-{name}-node1" in result.output
        lab = Lab.attach(name)  # the lab's own Prometheus answers on the control address
        assert f"prometheus: http://{lab.control.ipv4}:9090" in result.output
        assert lab.http_get(lab.client, lab.control.ipv4, port=9090, path="/-/ready")[0] == 200
        status = runner.invoke(lab_cli, ["status", "--name", name])
        assert "node1" in status.output and "1 processes" in status.output
        again = runner.invoke(lab_cli, ["up", "--name", name, "--nodes", "1", "--no-ray"])
        assert again.exit_code != 0 and "already exists" in again.output
    finally:
        assert runner.invoke(lab_cli, ["down", "--name", name]).exit_code == 0
    assert lab_namespaces(name) == []
    assert "not running" in runner.invoke(lab_cli, ["status", "--name", name]).output


# --- the network --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_client_pings_every_node(shared_lab: Lab, family: str) -> None:
    for node in shared_lab.nodes:
        assert shared_lab.ping(shared_lab.client, getattr(node, family)), f"{node.name} {family}"


def test_ping_of_an_unowned_vip_gets_no_answer(shared_lab: Lab) -> None:
    assert not shared_lab.ping(shared_lab.client, UNOWNED_VIP_V4, timeout_s=0.3)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_each_node_serves_its_name_over_http(shared_lab: Lab, family: str) -> None:
    for node in shared_lab.nodes:
        assert shared_lab.http_get(shared_lab.client, getattr(node, family)) == (200, node.name)


def test_nodes_have_strict_arp_and_anyip_for_the_vip_ranges(shared_lab: Lab) -> None:
    node = shared_lab.nodes[0]
    for key, value in [
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.eth0.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.eth0.arp_announce", "2"),
        ("net.ipv6.conf.eth0.accept_dad", "0"),
    ]:
        assert ns.read_sysctl(node.netns, key) == value, key
    v4 = shared_lab.run(node, ["ip", "route", "show", "table", "local", "dev", "lo"]).stdout
    v6 = shared_lab.run(node, ["ip", "-6", "route", "show", "table", "local", "dev", "lo"]).stdout
    assert f"local {VIP_RANGE_V4} " in v4
    assert f"local {VIP_RANGE_V6} " in v6
    # strictARP is a node setting; the client keeps the kernel default.
    assert ns.read_sysctl(shared_lab.client.netns, "net.ipv4.conf.all.arp_ignore") == "0"


def test_host_macs_are_the_planned_ones(shared_lab: Lab) -> None:
    for host in shared_lab.hosts:
        out = shared_lab.run(host, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
        assert out == host.mac


@pytest.mark.parametrize("vip", [UNOWNED_VIP_V4, UNOWNED_VIP_V6], ids=["arp", "ndp"])
def test_no_node_kernel_answers_for_a_vip(shared_lab: Lab, vip: IPv4Address | IPv6Address) -> None:
    mac, state = resolution_outcome(shared_lab, vip)
    assert (mac, state) == (None, "FAILED")


def test_the_arp_check_would_see_an_answer(lab: Lab) -> None:
    """Control for the test above: with arp_ignore back at 0, node1's kernel does answer ARP for
    a VIP routed to its lo, so a passing test above really is arp_ignore at work."""
    node = lab.nodes[0]
    ns.write_sysctls(
        node.netns, {"net.ipv4.conf.all.arp_ignore": 0, "net.ipv4.conf.eth0.arp_ignore": 0}
    )
    mac, state = resolution_outcome(lab, UNOWNED_VIP_V4)
    assert mac == node.mac and state in ("REACHABLE", "STALE", "DELAY")


def test_node_address_resolves_to_the_node_mac(shared_lab: Lab) -> None:
    node = shared_lab.nodes[1]
    for address in (node.ipv4, node.ipv6):
        mac, _ = resolution_outcome(shared_lab, address)
        assert mac == node.mac


def test_probes_refuse_addresses_outside_the_lab(shared_lab: Lab) -> None:
    for outside in ("192.0.2.1", "8.8.8.8", "2001:db8:20::1"):
        with pytest.raises(ValueError, match="outside the lab"):
            shared_lab.ping(shared_lab.client, ip_address(outside))


# --- failures -----------------------------------------------------------------------------------


def test_kill_host_ends_every_process_in_the_namespace(lab: Lab) -> None:
    node = lab.nodes[1]
    sleeper = lab.popen(node, ["sleep", "300"])
    wait_until(lambda: len(lab.pids(node)) == 2, timeout_s=10, what="sleep and http in node2")
    lab.kill_host(node)
    assert lab.pids(node) == []
    assert sleeper.wait(timeout=5) == -9
    with pytest.raises(ConnectionRefusedError):
        lab.http_get(lab.client, node.ipv4)
    assert lab.http_get(lab.client, lab.nodes[0].ipv4) == (200, "node1")  # others unaffected
    lab.restart_node(node)
    assert lab.http_get(lab.client, node.ipv4) == (200, node.name)


@pytest.mark.parametrize("side", ["bridge", "host"])
def test_link_down_cuts_the_node_off_and_link_up_restores_it(lab: Lab, side: str) -> None:
    node = lab.nodes[2]
    lab.link_down(node, side=side)
    assert not lab.ping(lab.client, node.ipv4, timeout_s=0.3)
    assert lab.ping(lab.client, lab.nodes[0].ipv4)
    lab.link_up(node, side=side)
    wait_until(lambda: lab.ping(lab.client, node.ipv4, timeout_s=0.3), timeout_s=10, what="ping")


# --- entering namespaces from the test process --------------------------------------------------


def test_in_netns_switches_only_the_current_thread(shared_lab: Lab) -> None:
    outside = netns_inode("/proc/thread-self/ns/net")
    target = netns_inode(f"/var/run/netns/{shared_lab.client.netns}")
    seen_by_other_thread: list[int] = []
    inside = threading.Event()

    def observe() -> None:  # started outside; looks while the main thread is inside
        inside.wait(timeout=10)
        seen_by_other_thread.append(netns_inode("/proc/thread-self/ns/net"))

    other = threading.Thread(target=observe)
    other.start()
    with in_netns(shared_lab.client.netns):
        assert netns_inode("/proc/thread-self/ns/net") == target
        inside.set()
        other.join()
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    assert netns_inode("/proc/thread-self/ns/net") == outside
    assert seen_by_other_thread == [outside]
    with raw:  # the socket opened inside stays bound to the client's namespace
        raw.bind(("eth0", 0))
        mac = raw.getsockname()[4]
        assert ":".join(f"{b:02x}" for b in mac) == shared_lab.client.mac
