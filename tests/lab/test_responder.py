"""The ARP/NDP responder in a real node namespace, seen from the lab's client.

Each test starts responder harnesses (cluster/lab/responder_harness.py) inside node namespaces and
looks from the client: its kernel's neighbour table, HTTP through the VIP, and raw ARP/NS
probes (cluster/lab/probe.py) that show exactly which MACs answer. Every packet loop is
bounded; only lab addresses are used.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from raylb import packets
from raylb.cluster.lab.responder_harness import HarnessClient
from raylb.cluster.lab.probe import Prober
from raylb.actors.speaker.responder import DEFAULT_BURST_COUNT, DEFAULT_BURST_INTERVAL_S
from raylb.cluster.lab import Host, Lab, system
from tests.lab.conftest import fixture_lab

pytestmark = pytest.mark.root

VIP4 = IPv4Address("198.18.0.130")
VIP6 = IPv6Address("2001:db8:18::1:10")
CONVERGE_S = 5.0


def wait_for(predicate: Callable[[], object], *, timeout_s: float = CONVERGE_S, what: str) -> Any:
    return system.wait_for(predicate, timeout_s=timeout_s, what=what, interval_s=0.05)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with fixture_lab(nodes=2) as built:
        yield built


@pytest.fixture
def harness(lab: Lab) -> Iterator[Callable[[Host], HarnessClient]]:
    """harness(node) -> a responder harness running in that node; all are stopped after."""
    started: list[HarnessClient] = []

    def _start(node: Host) -> HarnessClient:
        client = HarnessClient(partial(lab.popen, node))
        started.append(client)
        return client

    yield _start
    for client in started:
        client.close()


def client_neighbour(lab: Lab, ip: IPv4Address | IPv6Address) -> str | None:
    """The client kernel's MAC for `ip`, or None (no entry, or one without an address)."""
    out = lab.run(lab.client, ["ip", "neigh", "show", str(ip), "dev", lab.client.ifname]).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else None


def flush_client_neighbours(lab: Lab) -> None:
    for family in ("-4", "-6"):
        lab.run(lab.client, ["ip", family, "neigh", "flush", "dev", lab.client.ifname])


def http(lab: Lab, vip: IPv4Address | IPv6Address) -> tuple[int, str] | None:
    try:
        return lab.http_get(lab.client, vip, timeout_s=1.0)
    except OSError:
        return None


def test_client_reaches_owned_vips_through_the_announcing_node(lab: Lab, harness, prober: Prober) -> None:  # type: ignore[no-untyped-def]
    flush_client_neighbours(lab)
    node = lab.nodes[0]
    speaker = harness(node)
    for vip in (VIP4, VIP6):
        assert speaker.command(f"announce {vip}")["interfaces"] == ["eth0"]
        status, body = wait_for(lambda vip=vip: http(lab, vip), what=f"HTTP via {vip}")  # type: ignore[misc]
        assert status == 200 and node.name in body
        assert client_neighbour(lab, vip) == node.mac
    counters = speaker.counters()
    for vip in (VIP4, VIP6):
        entry = counters[f"{vip}@eth0"]
        assert entry["requests"] >= 1 and entry["replies"] >= 1
        assert entry["gratuitous"] >= 1


def test_the_node_never_answers_for_its_own_address_or_unowned_ips(lab: Lab, harness, prober: Prober) -> None:  # type: ignore[no-untyped-def]
    node = lab.nodes[0]
    speaker = harness(node)
    assert speaker.command(f"announce {node.ipv4}")["ok"] is False  # refused: the node's own IP
    assert speaker.command(f"announce {VIP4}")["ok"] is True
    # the node's own address is answered by its kernel only: exactly one reply, from node's MAC
    assert prober.answering(node.ipv4) == (node.mac,)
    assert speaker.counters().get(f"{node.ipv4}@eth0", {}).get("replies", 0) == 0
    assert prober.arp(IPv4Address("198.18.0.131"), timeout_s=0.2, collect=True).macs == ()
    assert prober.ns(IPv6Address("2001:db8:18::1:11"), timeout_s=0.2, collect=True).macs == ()


def test_exactly_one_mac_answers_per_vip(lab: Lab, harness, prober: Prober) -> None:  # type: ignore[no-untyped-def]
    owner, other = lab.nodes[0], lab.nodes[1]
    harness(owner).command(f"announce {VIP4}")
    harness(owner).command(f"announce {VIP6}")
    harness(other).command("announce 198.18.0.140")  # a responder next door, owning something else
    for _ in range(5):
        assert prober.answering(VIP4) == (owner.mac,)
        assert prober.answering(VIP6) == (owner.mac,)


def test_solicitations_without_source_link_layer_option_are_answered(lab: Lab, harness, prober: Prober) -> None:  # type: ignore[no-untyped-def]
    node = lab.nodes[0]
    harness(node).command(f"announce {VIP6}")
    multicast = prober.ns(VIP6, with_source_lladdr=False, timeout_s=0.5)
    assert multicast.macs == (node.mac,)
    # a unicast reachability probe (RFC 4861 7.3.1), which is how kernels confirm a STALE entry
    unicast = prober.ns(VIP6, with_source_lladdr=False, unicast_mac=packets.mac_bytes(node.mac), timeout_s=0.5)
    assert unicast.macs == (node.mac,)


def test_moving_a_vip_updates_the_client_through_gratuitous_packets(lab: Lab, harness) -> None:  # type: ignore[no-untyped-def]
    flush_client_neighbours(lab)
    first, second = lab.nodes[0], lab.nodes[1]
    old, new = harness(first), harness(second)
    for vip in (VIP4, VIP6):
        old.command(f"announce {vip}")
        status, body = wait_for(lambda vip=vip: http(lab, vip), what=f"HTTP via {vip}")  # type: ignore[misc]
        assert first.name in body
        assert client_neighbour(lab, vip) == first.mac
    for vip in (VIP4, VIP6):
        old.command(f"withdraw {vip}")
        new.command(f"announce {vip}")
    # No client traffic in between: only the announcements can change the entries.
    for vip in (VIP4, VIP6):
        wait_for(lambda vip=vip: client_neighbour(lab, vip) == second.mac, what=f"client entry for {vip} -> {second.mac}")
    for vip in (VIP4, VIP6):
        status, body = wait_for(lambda vip=vip: http(lab, vip), what=f"HTTP via {vip}")  # type: ignore[misc]
        assert status == 200 and second.name in body
    assert new.counters()[f"{VIP4}@eth0"]["gratuitous"] >= 1


def test_reannouncing_wins_the_client_back_after_another_node_claimed_the_vip(lab: Lab, harness) -> None:  # type: ignore[no-untyped-def]
    # What a node coming back from a partition does: it announces the VIP, then withdraws
    # without telling anyone; only the owner announcing again corrects the client's cache.
    flush_client_neighbours(lab)
    owner, intruder = lab.nodes[0], lab.nodes[1]
    right, wrong = harness(owner), harness(intruder)
    for vip in (VIP4, VIP6):
        right.command(f"announce {vip}")
        wait_for(lambda vip=vip: http(lab, vip), what=f"HTTP via {vip}")  # type: ignore[misc]
        assert client_neighbour(lab, vip) == owner.mac
    for vip in (VIP4, VIP6):
        wrong.command(f"announce {vip}")
        wait_for(lambda vip=vip: client_neighbour(lab, vip) == intruder.mac, what=f"client entry for {vip} -> {intruder.mac}")
        wrong.command(f"withdraw {vip}")
    for vip in (VIP4, VIP6):
        assert client_neighbour(lab, vip) == intruder.mac  # withdrawing tells the client nothing
        assert right.command(f"reannounce {vip}") == {"ok": True, "interfaces": [owner.ifname]}
    for vip in (VIP4, VIP6):
        wait_for(lambda vip=vip: client_neighbour(lab, vip) == owner.mac, what=f"client entry for {vip} -> {owner.mac}")
    assert wrong.command(f"reannounce {VIP4}") == {"ok": False, "interfaces": []}  # not owned: nothing sent


def test_after_release_the_old_node_no_longer_answers(lab: Lab, harness, prober: Prober) -> None:  # type: ignore[no-untyped-def]
    node = lab.nodes[0]
    speaker = harness(node)
    speaker.command(f"announce {VIP4}")
    speaker.command(f"announce {VIP6}")
    assert prober.arp(VIP4).macs == (node.mac,)
    assert prober.ns(VIP6).macs == (node.mac,)
    speaker.command(f"withdraw {VIP4}")
    speaker.command(f"withdraw {VIP6}")
    assert prober.arp(VIP4, timeout_s=0.3, collect=True).macs == ()
    assert prober.ns(VIP6, timeout_s=0.3, collect=True).macs == ()
    assert speaker.command("placement")["placement"] == {}


def assert_flood_stays_in_the_kernel(
    lab: Lab, prober: Prober, speaker: HarnessClient, *, node: Host, targets: list[IPv4Address], probes: int
) -> None:  # fmt: skip
    """A 20 000 frames/s unrelated ARP flood for 3 s: every probe of `targets` is answered by
    `node`, and Python never saw an unowned request (the kernel filter dropped the flood)."""
    flood = lab.popen(
        lab.client,
        [sys.executable, "-m", "raylb.cluster.lab.probe", "flood", "--rate", "20000", "--seconds", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.3)  # let the flood ramp up before measuring (not a convergence wait)
        answers = [prober.arp(targets[n % len(targets)], timeout_s=0.5) for n in range(probes)]
        still_flooding = flood.poll() is None
    finally:
        out, _ = flood.communicate(timeout=10)
    assert still_flooding, "the flood ended before the probes did; the test proved nothing"
    assert all(a.macs == (node.mac,) for a in answers), [a for a in answers if not a.macs]
    assert int(json.loads(out)["sent"]) > 20_000
    unattributed = speaker.counters().get("*@eth0", {"drops": {}})
    assert unattributed["drops"].get("not_owned", 0) == 0, "the flood reached Python"


def test_unrelated_arp_flood_does_not_stop_answers(lab: Lab, harness, prober: Prober) -> None:  # type: ignore[no-untyped-def]
    node = lab.nodes[0]
    speaker = harness(node)
    speaker.command(f"announce {VIP4}")
    assert_flood_stays_in_the_kernel(lab, prober, speaker, node=node, targets=[VIP4], probes=40)


SCATTERED_FIRST = IPv4Address("198.18.64.0")  # pod-network space: unused by this lab, allowed
SCATTERED_COUNT, SCATTERED_STEP = 3000, 3  # every third address: nothing collapses, so the cover merges


def test_unrelated_flood_is_dropped_in_the_kernel_with_3000_targets(lab: Lab, harness, prober: Prober) -> None:  # type: ignore[no-untyped-def]
    """Past what an exact filter holds (~2 500 scattered IPv4 targets), the kernel still drops
    the flood: the filter matches a merged prefix cover, and Python sees no unowned request."""
    node = lab.nodes[0]
    speaker = harness(node)
    placed = speaker.command(f"announce-range {SCATTERED_FIRST} {SCATTERED_COUNT} {SCATTERED_STEP} eth0", timeout_s=60)
    assert placed == {"ok": True, "placed": SCATTERED_COUNT}
    owned = [SCATTERED_FIRST + SCATTERED_STEP * n for n in (0, 1, 1500, SCATTERED_COUNT - 1)]
    for vip in owned:
        wait_for(lambda vip=vip: prober.arp(vip, timeout_s=0.2).macs == (node.mac,), what=f"answers for {vip}")
    # the tight cover replaces the batch's loose filter once the gains have paused
    wait_for(lambda: speaker.command("filters")["pending"] == 0, what="the tight filter")
    assert_flood_stays_in_the_kernel(lab, prober, speaker, node=node, targets=owned, probes=20)
    # Between two owned targets, inside the merged cover: the kernel lets it through, Python
    # checks ownership and stays silent.
    assert prober.arp(SCATTERED_FIRST + 1, timeout_s=0.3, collect=True).macs == ()
    wait_for(lambda: speaker.counters()["*@eth0"]["drops"].get("not_owned", 0) >= 1, what="the exact check in Python")


def test_interface_selection_follows_the_link(lab: Lab, harness, prober: Prober) -> None:  # type: ignore[no-untyped-def]
    node = lab.nodes[0]
    speaker = harness(node)
    speaker.command(f"announce {VIP4}")
    assert speaker.command("placement")["placement"] == {str(VIP4): ["eth0"]}
    for side in ("bridge", "host"):  # the cable pulled (no carrier), then admin down in the node
        lab.link_down(node, side=side)
        try:
            wait_for(lambda: speaker.command("placement")["placement"] == {}, what=f"withdrawal after link down ({side})")
        finally:
            lab.link_up(node, side=side)
            # Admin down drops the node's global IPv6 address (keep_addr_on_down is 0 in the
            # lab); put it back so the lab stays as built for the tests after this one.
            lab.run(node, ["ip", "-6", "addr", "replace", f"{node.ipv6}/64", "dev", node.ifname, "nodad"])
        wait_for(
            lambda: speaker.command("placement")["placement"] == {str(VIP4): ["eth0"]},
            what=f"announcement after link up ({side})",
        )
        wait_for(lambda: prober.arp(VIP4, timeout_s=0.2).macs == (node.mac,), what="answers after link up")


def test_interface_selection_follows_addresses(lab: Lab, harness) -> None:  # type: ignore[no-untyped-def]
    node = lab.nodes[0]
    speaker = harness(node)
    speaker.command(f"announce {VIP6}")
    assert speaker.command("placement")["placement"] == {str(VIP6): ["eth0"]}
    address = f"{node.ipv6}/64"
    lab.run(node, ["ip", "-6", "addr", "del", address, "dev", node.ifname])
    try:
        # no address of eth0 holds the VIP's subnet any more (the link-local one is fe80::/64)
        wait_for(lambda: speaker.command("placement")["placement"] == {}, what="withdrawal after address removal")
    finally:
        lab.run(node, ["ip", "-6", "addr", "add", address, "dev", node.ifname, "nodad"], check=False)
    wait_for(
        lambda: speaker.command("placement")["placement"] == {str(VIP6): ["eth0"]},
        what="announcement after the address came back",
    )


def test_gain_announces_in_a_bounded_burst_and_loss_cancels_it(lab: Lab, harness) -> None:  # type: ignore[no-untyped-def]
    speaker = harness(lab.nodes[0])

    def gratuitous(vip: IPv4Address | IPv6Address) -> int:
        return int(speaker.counters().get(f"{vip}@eth0", {}).get("gratuitous", 0))  # type: ignore[arg-type]

    speaker.command(f"announce {VIP4}")
    wait_for(lambda: gratuitous(VIP4) == 1 + DEFAULT_BURST_COUNT, what="the announcement burst")
    speaker.command(f"announce {VIP6}")
    speaker.command(f"withdraw {VIP6}")  # lost before the burst's first repeat is due
    observed_until = time.monotonic() + (DEFAULT_BURST_COUNT + 1) * DEFAULT_BURST_INTERVAL_S
    while time.monotonic() < observed_until:  # bounded observation: nothing more may be sent
        assert gratuitous(VIP4) == 1 + DEFAULT_BURST_COUNT
        assert gratuitous(VIP6) == 1
        time.sleep(0.05)


def test_solicited_node_group_is_joined_on_gain_and_left_on_loss(lab: Lab, harness) -> None:  # type: ignore[no-untyped-def]
    node = lab.nodes[0]
    speaker = harness(node)
    group = str(packets.solicited_node_address(VIP6))
    mac = packets.mac_str(packets.solicited_node_mac(VIP6))

    def memberships() -> str:
        return lab.run(node, ["ip", "maddr", "show", "dev", node.ifname]).stdout

    assert group not in memberships() and mac not in memberships()
    speaker.command(f"announce {VIP6}")
    wait_for(lambda: group in memberships() and mac in memberships(), what=f"membership of {group}")
    speaker.command(f"withdraw {VIP6}")
    wait_for(lambda: group not in memberships() and mac not in memberships(), what=f"leaving {group}")


def test_thousands_of_ipv6_vips_join_every_solicited_node_group(lab: Lab, harness, prober: Prober) -> None:  # type: ignore[no-untyped-def]
    """One MLD socket holds a bounded number of groups (its option memory; ENOMEM past it);
    the responder opens another, so the last of 3 000 VIPs is joined and answered."""
    node = lab.nodes[0]
    speaker = harness(node)
    first, count = IPv6Address("2001:db8:18::1:1000"), 3000
    assert speaker.command(f"announce-range {first} {count} 1 eth0", timeout_s=60) == {"ok": True, "placed": count}
    last = first + count - 1
    group = str(packets.solicited_node_address(last))
    wait_for(lambda: group in lab.run(node, ["ip", "maddr", "show", "dev", node.ifname]).stdout, what=f"MLD membership of {group}")
    for vip in (first, last):
        wait_for(lambda vip=vip: prober.ns(vip, timeout_s=0.2).macs == (node.mac,), what=f"answers for {vip}")
