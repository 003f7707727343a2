"""The lab's address plan and names (pure; no root, no namespaces)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raylb.cluster.lab import topology as topo
from raylb.pools import parse_address_entry


@pytest.mark.parametrize(
    ("host", "ipv4", "ipv6", "mac"),
    [
        ("control", "198.18.0.1", "2001:db8:18::1", "02:18:00:00:00:01"),
        ("node1", "198.18.0.11", "2001:db8:18::11", "02:18:00:00:00:0b"),
        ("node2", "198.18.0.12", "2001:db8:18::12", "02:18:00:00:00:0c"),
        ("node40", "198.18.0.50", "2001:db8:18::50", "02:18:00:00:00:32"),
        ("client", "198.18.0.60", "2001:db8:18::60", "02:18:00:00:00:3c"),
    ],
)
def test_address_plan(host: str, ipv4: str, ipv6: str, mac: str) -> None:
    made = topo.make_host("lab", host)
    assert made == topo.Host(
        name=host, netns=f"rlb-lab-{host}", ifname="eth0",
        ipv4=IPv4Address(ipv4), ipv6=IPv6Address(ipv6), mac=mac,
    )  # fmt: skip


def test_plan_order_and_roles() -> None:
    hosts = topo.plan_hosts("t1a2b", nodes=3)
    assert [h.name for h in hosts] == ["control", "node1", "node2", "node3", "client"]
    assert [h.is_node for h in hosts] == [False, True, True, True, False]
    assert {h.netns for h in hosts} == {f"rlb-t1a2b-{h.name}" for h in hosts}
    assert topo.bridge_netns("t1a2b") == "rlb-t1a2b-br"


@given(st.integers(min_value=1, max_value=topo.MAX_NODES))
def test_every_plan_is_unique_inside_the_lab_subnets_and_outside_the_vip_ranges(nodes: int) -> None:
    hosts = topo.plan_hosts("lab", nodes=nodes)
    for attr in ("name", "netns", "ipv4", "ipv6", "mac", "bridge_port", "bridge_port_mac"):
        values = [getattr(h, attr) for h in hosts]
        assert len(set(values)) == len(values), attr
    for h in hosts:
        assert h.ipv4 in topo.SUBNET_V4 and h.ipv6 in topo.SUBNET_V6
        assert h.ipv4 not in topo.VIP_RANGE_V4 and h.ipv6 not in topo.VIP_RANGE_V6
        assert len(h.bridge_port) <= topo.MAX_IFNAME_LEN and len(h.ifname) <= topo.MAX_IFNAME_LEN
        first_octet = int(h.mac.split(":")[0], 16)
        assert first_octet & 0x02 and not first_octet & 0x01  # locally administered unicast
        assert topo.parse_netns_name(h.netns) == ("lab", h.name)


def test_vip_ranges_and_seed_pools() -> None:
    assert topo.VIP_RANGE_V4.subnet_of(topo.SUBNET_V4)
    assert topo.VIP_RANGE_V6.subnet_of(topo.SUBNET_V6)
    ranges = {name: parse_address_entry(entry) for name, entry in topo.SEED_POOLS.items()}
    for name, rng in ranges.items():
        vip_range = topo.VIP_RANGE_V4 if rng.first.version == 4 else topo.VIP_RANGE_V6
        assert rng.first in vip_range and rng.last in vip_range, name
    v4_a, v4_b = ranges["doc-example"], ranges["doc-example-reserved"]
    assert v4_a.last < v4_b.first  # the two IPv4 seed pools do not overlap
    assert ranges["doc-example-ipv6"].first == IPv6Address("2001:db8:18::1:0")


@pytest.mark.parametrize("name", ["lab", "t1a2b", "a", "abcdefghijkl"])
def test_valid_lab_names(name: str) -> None:
    assert topo.check_lab_name(name) == name


@pytest.mark.parametrize("name", ["", "Lab", "1lab", "my-lab", "a_b", "abcdefghijklm", "rlb lab"])
def test_invalid_lab_names_are_refused_with_the_value(name: str) -> None:
    with pytest.raises(ValueError, match="lab name"):
        topo.check_lab_name(name)


@pytest.mark.parametrize(
    ("netns", "parsed"),
    [
        ("rlb-lab-node1", ("lab", "node1")),
        ("rlb-t1a2b-br", ("t1a2b", "br")),
        ("rlb-lab-control", ("lab", "control")),
        ("rlb-lab-node1-extra", None),
        ("rlbt-x1", None),
        ("rlb-lab-router", None),
        ("other", None),
        ("rlb--node1", None),
    ],
)
def test_parse_netns_name(netns: str, parsed: tuple[str, str] | None) -> None:
    assert topo.parse_netns_name(netns) == parsed


def test_lab_prefix_does_not_match_a_longer_lab_name() -> None:
    assert not "rlb-t12-node1".startswith(topo.lab_netns_prefix("t1"))


@pytest.mark.parametrize("nodes", [0, -1, topo.MAX_NODES + 1])
def test_node_count_out_of_range(nodes: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        topo.plan_hosts("lab", nodes=nodes)


@pytest.mark.parametrize(
    ("address", "inside"),
    [("198.18.0.11", True), ("198.18.0.200", True), ("198.18.1.1", False), ("8.8.8.8", False),
     ("2001:db8:18::1:5", True), ("2001:db8:20::1", False),
     # pod networks and ClusterIPs of the in-cluster lab, and their edges
     ("198.18.64.0", True), ("198.18.127.255", True), ("198.18.128.0", False),
     ("198.18.63.255", False), ("198.19.0.1", True), ("198.20.0.1", False),
     ("2001:db8:18:1000::5", True), ("2001:db8:18:2000::1", False),
     ("2001:db8:19::1", True), ("2001:db8:19::10:0", False)],
)  # fmt: skip
def test_in_lab_subnets(address: str, inside: bool) -> None:
    assert topo.in_lab_subnets(ip_address(address)) is inside


@pytest.mark.parametrize("index", [1, 2, topo.MAX_NODES])
def test_pod_cidrs_are_per_node_and_inside_the_pod_networks(index: int) -> None:
    v4, v6 = topo.pod_cidrs(index)
    assert v4.subnet_of(topo.POD_NETWORK_V4) and v6.subnet_of(topo.POD_NETWORK_V6)
    assert (v4.prefixlen, v6.prefixlen) == (24, 64)
    others = [topo.pod_cidrs(k) for k in range(1, topo.MAX_NODES + 1) if k != index]
    assert all(not v4.overlaps(o4) and not v6.overlaps(o6) for o4, o6 in others)


def test_pod_cidrs_refuse_a_node_index_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        topo.pod_cidrs(0)
