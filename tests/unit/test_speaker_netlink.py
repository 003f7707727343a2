"""actors/speaker/netlink.py reads the same links and addresses as pyroute2 does.

Reading rtnetlink needs no privilege, so this runs against the test's own namespace; the
decoders are also fed hand-built messages for what a namespace may not have (a master).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from pyroute2 import IPRoute

from raylb.actors.speaker import netlink
from raylb.actors.speaker.interfaces import read_links


def test_links_and_addresses_match_pyroute2() -> None:
    links, addresses = netlink.dump()
    with IPRoute() as ipr:
        expected_links = {
            m["index"]: (m.get("ifname"), m.get("address") or "", m["flags"], m.get("operstate"), m.get("master") or 0)
            for m in ipr.get_links()
        }
        expected_addresses = sorted(
            (m["index"], str(ipaddress.ip_interface(f"{m.get('local') or m.get('address')}/{m['prefixlen']}")))
            for m in ipr.get_addr()
        )
    assert {raw.index: (raw.name, raw.mac, raw.flags, raw.operstate, raw.master) for raw in links} == expected_links
    assert sorted((a.index, str(a.address)) for a in addresses) == expected_addresses
    assert any(link.loopback for link in read_links())


def rtattr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * ((-length) % 4)


def test_decodes_a_bridge_port_and_a_point_to_point_address() -> None:
    payload = netlink.IFINFOMSG.pack(socket.AF_UNSPEC, 1, 7, 0x11043, 0) + b"".join([
        rtattr(netlink.IFLA_IFNAME, b"v-node1\0"),
        rtattr(netlink.IFLA_ADDRESS, bytes.fromhex("021800000111")),
        rtattr(netlink.IFLA_MASTER, struct.pack("=I", 3)),
        rtattr(netlink.IFLA_OPERSTATE, bytes([6])),
    ])  # fmt: skip
    link = netlink.parse_link(payload)
    assert (link.name, link.mac, link.master, link.operstate) == ("v-node1", "02:18:00:00:01:11", 3, "UP")
    local, peer = ipaddress.ip_address("198.18.0.11").packed, ipaddress.ip_address("198.18.0.1").packed
    payload = netlink.IFADDRMSG.pack(socket.AF_INET, 32, 0, 0, 7) + rtattr(netlink.IFA_ADDRESS, peer) + rtattr(netlink.IFA_LOCAL, local)
    assert netlink.parse_address(payload) == netlink.RawAddress(7, ipaddress.ip_interface("198.18.0.11/32"))


def test_truncated_messages_end_the_walk() -> None:
    header = netlink.NLMSG_HDR.pack(8, 0, 0, 0, 0)  # claims less than a header
    assert list(netlink.messages(header)) == []
    assert list(netlink.messages(b"\0" * 10)) == []
