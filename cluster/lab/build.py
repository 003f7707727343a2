"""Wiring a lab with netlink: the bridge namespace, one veth per host, and each host's settings.

Separate from lab.py so the order of the steps (and why each setting exists) reads top to
bottom. Every netlink socket here is opened inside a lab namespace; the root namespace is never
configured.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from raylb.cluster.lab import netns as ns
from raylb.cluster.lab.topology import (
    BRIDGE_IFNAME,
    CLUSTER_IP_RANGE_V4,
    CLUSTER_IP_RANGE_V6,
    VIP_RANGE_V4,
    VIP_RANGE_V6,
    Host,
    node_index,
    pod_cidrs,
)

#: The routing table named "local" (RT_TABLE_LOCAL in linux/rtnetlink.h).
RT_TABLE_LOCAL = 255
#: Routes to local addresses are host-scoped, as `ip route add local ...` makes them.
RT_SCOPE_HOST = 254

#: The bridge namespace carries no addresses at all, not even IPv6 link-local ones.
BRIDGE_SYSCTLS: dict[str, str | int] = {
    "net.ipv6.conf.all.disable_ipv6": 1,
    "net.ipv6.conf.default.disable_ipv6": 1,
}

#: Every host: IPv6 addresses usable at once, without duplicate address detection (the lab
#: assigns unique addresses itself), set before eth0 comes up.
HOST_SYSCTLS: dict[str, str | int] = {
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.eth0.accept_dad": 0,
}

#: Nodes: what kube-proxy's strictARP requires of the node. arp_ignore=1 answers ARP only for
#: addresses configured on the receiving NIC (so never for VIPs routed to lo below);
#: arp_announce=2 always uses the NIC's own address as ARP sender (never a VIP).
NODE_SYSCTLS: dict[str, str | int] = {
    "net.ipv4.conf.all.arp_ignore": 1,
    "net.ipv4.conf.eth0.arp_ignore": 1,
    "net.ipv4.conf.all.arp_announce": 2,
    "net.ipv4.conf.eth0.arp_announce": 2,
}


def _index(ipr: object, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)  # type: ignore[attr-defined]
    if not found:
        raise LookupError(f"interface {ifname} not found")
    return int(found[0])


def build_bridge(bridge_netns: str) -> None:
    """The switch: a bridge with STP off (ports forward at once) and multicast snooping off
    (NDP multicast is flooded to every port like on a dumb switch, whoever joined which group)."""
    ns.write_sysctls(bridge_netns, BRIDGE_SYSCTLS)
    with ns.iproute(bridge_netns) as ipr:
        ipr.link("set", index=_index(ipr, "lo"), state="up")
        ipr.link("add", ifname=BRIDGE_IFNAME, kind="bridge", br_stp_state=0, br_mcast_snooping=0)
        ipr.link("set", index=_index(ipr, BRIDGE_IFNAME), state="up")


def plug_host(bridge_netns: str, host: Host) -> None:
    """A veth from the bridge into the host's namespace, the host end named eth0 with its MAC."""
    with ns.iproute(bridge_netns) as ipr:
        ipr.link(
            "add",
            ifname=host.bridge_port,
            address=host.bridge_port_mac,
            kind="veth",
            peer={"ifname": host.ifname, "address": host.mac, "net_ns_fd": host.netns},
        )
        port = _index(ipr, host.bridge_port)
        ipr.link("set", index=port, master=_index(ipr, BRIDGE_IFNAME))
        ipr.link("set", index=port, state="up")


def configure_host(host: Host) -> None:
    """Addresses, sysctls and (on nodes) the AnyIP routes for the VIP ranges."""
    sysctls = dict(HOST_SYSCTLS)
    if host.is_node:
        sysctls.update(NODE_SYSCTLS)
    ns.write_sysctls(host.netns, sysctls)
    with ns.iproute(host.netns) as ipr:
        lo = _index(ipr, "lo")
        eth = _index(ipr, host.ifname)
        ipr.link("set", index=lo, state="up")
        ipr.addr("add", index=eth, address=str(host.ipv4), prefixlen=24)
        ipr.addr("add", index=eth, address=str(host.ipv6), prefixlen=64)
        ipr.link("set", index=eth, state="up")
        if host.is_node:
            # AnyIP: the node accepts traffic for every VIP without any VIP on a NIC, so only
            # the speaker's responder (never the kernel) answers ARP/NDP for them.
            ipr.route(
                "add", dst=str(VIP_RANGE_V4), type="local", table=RT_TABLE_LOCAL, oif=lo,
                scope=RT_SCOPE_HOST, family=socket.AF_INET,
            )
            ipr.route(
                "add", dst=str(VIP_RANGE_V6), type="local", table=RT_TABLE_LOCAL, oif=lo,
                scope=RT_SCOPE_HOST, family=socket.AF_INET6,
            )


def add_cluster_routes(hosts: Sequence[Host], nodes: Sequence[Host], *, control: Host) -> None:
    """On every host, a route to each node's pod CIDRs through that node (the lab's flat pod
    network: no overlay, no NAT), except a node's own, which its CNI bridge serves. Nodes also
    get a route for the ClusterIP ranges: a connection a node opens itself needs a route before
    kube-proxy's DNAT rewrites its destination (a real node has a default route for that)."""
    for host in hosts:
        with ns.iproute(host.netns) as ipr:
            if host.is_node:
                ipr.route("add", dst=str(CLUSTER_IP_RANGE_V4), gateway=str(control.ipv4), family=socket.AF_INET)
                ipr.route("add", dst=str(CLUSTER_IP_RANGE_V6), gateway=str(control.ipv6), family=socket.AF_INET6)
            for node in nodes:
                if node.name == host.name:
                    continue
                v4, v6 = pod_cidrs(node_index(node.name))
                ipr.route("add", dst=str(v4), gateway=str(node.ipv4), family=socket.AF_INET)
                ipr.route("add", dst=str(v6), gateway=str(node.ipv6), family=socket.AF_INET6)


def set_link(netns: str, ifname: str, *, up: bool) -> None:
    with ns.iproute(netns) as ipr:
        ipr.link("set", index=_index(ipr, ifname), state="up" if up else "down")


def link_is_up(netns: str, ifname: str) -> bool:
    with ns.iproute(netns) as ipr:
        link = ipr.get_links(_index(ipr, ifname))[0]
        return bool(link["flags"] & 1)  # IFF_UP
