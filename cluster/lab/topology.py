"""The lab's address plan and names, as pure data.

Everything the lab builds (namespaces, interfaces, addresses, MACs, VIP ranges) is derived here
from a lab name and a node count, without touching the system, so the plan can be unit-tested
without root and `raylb lab down` can find a lab's namespaces from its name alone.

Addresses come only from the documentation/benchmarking blocks the project is allowed to use:
198.18.0.0/24 (RFC 2544 benchmarking space) and 2001:db8:18::/64 (RFC 3849 documentation space).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

# --- address plan -------------------------------------------------------------------------------

SUBNET_V4 = IPv4Network("198.18.0.0/24")
SUBNET_V6 = IPv6Network("2001:db8:18::/64")

#: Pool space: only VIPs live here; no host address is ever taken from it.
VIP_RANGE_V4 = IPv4Network("198.18.0.128/25")
VIP_RANGE_V6 = IPv6Network("2001:db8:18::1:0/112")

#: Seed pools used by the demos and docs (name -> MetalLB address entry).
POOL_DOC_EXAMPLE = "198.18.0.128-198.18.0.191"
POOL_DOC_EXAMPLE_RESERVED = "198.18.0.192-198.18.0.223"
POOL_DOC_EXAMPLE_IPV6 = "2001:db8:18::1:0/120"
SEED_POOLS: dict[str, str] = {
    "doc-example": POOL_DOC_EXAMPLE,
    "doc-example-reserved": POOL_DOC_EXAMPLE_RESERVED,
    "doc-example-ipv6": POOL_DOC_EXAMPLE_IPV6,
}

#: Extra node-network addresses for `raylb bench membership --real` (cluster/lab/membership_real.py):
#: endpoint i of the bench takes the i-th, on one of its lab's nodes. Never a VIP, never a host's.
MEMBERSHIP_ENDPOINTS_V4 = IPv4Network("198.18.0.64/26")

#: Pod networks of the in-cluster lab (cluster/lab/kubecluster.py): node K takes the K-th /24
#: and /64 of these. ClusterIPs (198.19.0.0/16, 2001:db8:19::/108) are kube-proxy's rules only.
POD_NETWORK_V4 = IPv4Network("198.18.64.0/18")
POD_NETWORK_V6 = IPv6Network("2001:db8:18:1000::/52")
CLUSTER_IP_RANGE_V4 = IPv4Network("198.19.0.0/16")
CLUSTER_IP_RANGE_V6 = IPv6Network("2001:db8:19::/108")
CLUSTER_DOMAIN = "cluster.local"

#: Host byte of the fixed hosts; node K gets NODE_HOST_BYTE_BASE + K.
CONTROL_HOST_BYTE = 1
CLIENT_HOST_BYTE = 60
NODE_HOST_BYTE_BASE = 10
#: 40 nodes keep every node address (11..50) below the client (60) and the VIP range (128+).
MAX_NODES = 40

# --- names --------------------------------------------------------------------------------------

#: Every lab namespace starts with this, so `raylb lab down --all` can always find them.
NETNS_PREFIX = "rlb-"
DEFAULT_LAB_NAME = "lab"
BRIDGE_HOST = "br"
CONTROL = "control"
CLIENT = "client"
#: The NIC inside each host namespace (the namespace-side end of its veth).
HOST_IFNAME = "eth0"
#: The bridge inside the bridge namespace.
BRIDGE_IFNAME = "br0"
#: Linux IFNAMSIZ is 16 including the terminating NUL.
MAX_IFNAME_LEN = 15

#: Lab names are short and dash-free, so "rlb-{name}-{host}" splits unambiguously and
#: `down(name)` never matches another lab whose name merely starts the same way.
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
HOST_NAME_RE = re.compile(r"^(br|control|client|node([1-9][0-9]?))$")

#: Locally administered unicast MACs (bit 0x02 of the first octet set, 0x01 clear):
#: 02:18:00:00:<side>:<host byte>, side 00 = the host's eth0, 01 = its port on the bridge.
MAC_PREFIX = "02:18:00:00"
MAC_SIDE_HOST = 0x00
MAC_SIDE_BRIDGE = 0x01


@dataclass(frozen=True)
class Host:
    """One machine of the lab: a namespace with one NIC on the lab bridge."""

    name: str
    netns: str
    ifname: str
    ipv4: IPv4Address
    ipv6: IPv6Address
    mac: str

    @property
    def is_node(self) -> bool:
        return self.name.startswith("node")

    @property
    def bridge_port(self) -> str:
        """Name of this host's veth end inside the bridge namespace."""
        return bridge_port_name(self.name)

    @property
    def bridge_port_mac(self) -> str:
        return mac_for(self.ipv4, side=MAC_SIDE_BRIDGE)


def check_lab_name(name: str) -> str:
    if not LAB_NAME_RE.fullmatch(name):
        raise ValueError(
            f"lab name {name!r} is invalid: use 1-12 lowercase letters or digits, starting with "
            "a letter (no dashes, so namespace names stay unambiguous)"
        )
    return name


def netns_name(lab: str, host: str) -> str:
    return f"{NETNS_PREFIX}{check_lab_name(lab)}-{host}"


def lab_netns_prefix(lab: str) -> str:
    return f"{NETNS_PREFIX}{check_lab_name(lab)}-"


def parse_netns_name(netns: str) -> tuple[str, str] | None:
    """(lab, host) for a lab namespace name, None for anything else."""
    if not netns.startswith(NETNS_PREFIX):
        return None
    lab, sep, host = netns[len(NETNS_PREFIX) :].partition("-")
    if not sep or not LAB_NAME_RE.fullmatch(lab) or not HOST_NAME_RE.fullmatch(host):
        return None
    return lab, host


def node_name(index: int) -> str:
    if not 1 <= index <= MAX_NODES:
        raise ValueError(f"node index {index} is out of range 1..{MAX_NODES}")
    return f"node{index}"


def node_index(name: str) -> int:
    match = HOST_NAME_RE.fullmatch(name)
    if not match or not match.group(2):
        raise ValueError(f"{name!r} is not a node name (node1..node{MAX_NODES})")
    index = int(match.group(2))
    node_name(index)  # range check
    return index


def host_byte(host: str) -> int:
    if host == CONTROL:
        return CONTROL_HOST_BYTE
    if host == CLIENT:
        return CLIENT_HOST_BYTE
    return NODE_HOST_BYTE_BASE + node_index(host)


def ipv4_for(host: str) -> IPv4Address:
    return SUBNET_V4.network_address + host_byte(host)


def ipv6_for(host: str) -> IPv6Address:
    # The host byte is written as decimal digits in the last group (node1 -> ::11, client ->
    # ::60), so the v4 and v6 addresses of a host read alike; 11..60 are all valid hex groups.
    return IPv6Address(f"{SUBNET_V6.network_address}{host_byte(host)}")


def mac_for(ipv4: IPv4Address, *, side: int = MAC_SIDE_HOST) -> str:
    return f"{MAC_PREFIX}:{side:02x}:{int(ipv4) & 0xFF:02x}"


def bridge_port_name(host: str) -> str:
    name = f"v-{host}"
    assert len(name) <= MAX_IFNAME_LEN, name
    return name


def make_host(lab: str, host: str) -> Host:
    v4 = ipv4_for(host)
    return Host(
        name=host,
        netns=netns_name(lab, host),
        ifname=HOST_IFNAME,
        ipv4=v4,
        ipv6=ipv6_for(host),
        mac=mac_for(v4),
    )


def plan_hosts(lab: str, *, nodes: int) -> list[Host]:
    """All hosts of a lab with `nodes` nodes: control, node1..nodeN, client (in that order)."""
    check_lab_name(lab)
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"lab {lab!r}: nodes={nodes} is out of range 1..{MAX_NODES}")
    names = [CONTROL, *(node_name(k) for k in range(1, nodes + 1)), CLIENT]
    return [make_host(lab, name) for name in names]


def pod_cidrs(index: int) -> tuple[IPv4Network, IPv6Network]:
    """Node `index`'s pod CIDRs: the index-th /24 of POD_NETWORK_V4 and /64 of POD_NETWORK_V6."""
    node_name(index)  # range check
    v4 = list(POD_NETWORK_V4.subnets(new_prefix=24))[index]
    v6 = IPv6Network((int(POD_NETWORK_V6.network_address) + (index << 64), 64))
    return v4, v6


def bridge_netns(lab: str) -> str:
    return netns_name(lab, BRIDGE_HOST)


def in_lab_subnets(address: IPv4Address | IPv6Address) -> bool:
    """True for addresses inside the lab's networks (nodes, pods, ClusterIPs): the only
    destinations lab tools may probe."""
    if isinstance(address, IPv4Address):
        return any(address in net for net in (SUBNET_V4, POD_NETWORK_V4, CLUSTER_IP_RANGE_V4))
    return any(address in net for net in (SUBNET_V6, POD_NETWORK_V6, CLUSTER_IP_RANGE_V6))
