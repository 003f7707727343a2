"""The node's links and addresses from two rtnetlink dumps, without pyroute2.

The speaker needs one thing from netlink: a snapshot of the links (name, index, MAC, flags,
operstate, master) and their addresses, re-read when the link watcher hears a change.
pyroute2 does that and much more, and importing it costs the speaker's process about 11 MB
of its ~100 MB (measured with `import ray` loaded first). These ~100 lines ask the kernel for
RTM_GETLINK and RTM_GETADDR dumps on a plain AF_NETLINK socket and decode the few attributes
used; `parse_links`/`parse_addresses` are pure and tested against pyroute2's reading of the
same namespace.

Layouts: linux/netlink.h (nlmsghdr), linux/rtnetlink.h (ifinfomsg, ifaddrmsg, rtattr),
linux/if_link.h (IFLA_*), linux/if_addr.h (IFA_*).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTATTR = struct.Struct("=HH")  # length, type
NLMSG_DONE, NLMSG_ERROR = 3, 2
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_OPERSTATE = 1, 3, 10, 16
IFA_ADDRESS, IFA_LOCAL = 1, 2
# RFC 2863 operational states, as the kernel numbers them (IF_OPER_*)
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
RECV_BYTES = 1 << 16


@dataclass(frozen=True)
class RawLink:
    index: int
    name: str
    mac: str
    flags: int
    operstate: str
    master: int


@dataclass(frozen=True)
class RawAddress:
    index: int
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attributes(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            return
        yield kind & 0x3FFF, data[offset + RTATTR.size : offset + length]  # without NLA_F_* bits
        offset += _align(length)


def messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, _, _, _ = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            return
        yield kind, data[offset + NLMSG_HDR.size : offset + length]
        offset += _align(length)


def parse_link(payload: bytes) -> RawLink:
    _, _, index, flags, _ = IFINFOMSG.unpack_from(payload)
    attrs = dict(_attributes(payload, IFINFOMSG.size, len(payload)))
    operstate = attrs.get(IFLA_OPERSTATE, b"\0")[0]
    return RawLink(
        index=index,
        name=attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace"),
        mac=":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b"")),
        flags=flags,
        operstate=OPERSTATES[operstate] if operstate < len(OPERSTATES) else "UNKNOWN",
        master=struct.unpack("=I", attrs[IFLA_MASTER])[0] if IFLA_MASTER in attrs else 0,
    )


def parse_address(payload: bytes) -> RawAddress | None:
    family, prefixlen, _, _, index = IFADDRMSG.unpack_from(payload)
    attrs = dict(_attributes(payload, IFADDRMSG.size, len(payload)))
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)  # IFA_LOCAL is ours on point-to-point links
    if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return RawAddress(index=index, address=ipaddress.ip_interface((ipaddress.ip_address(raw), prefixlen)))


def _dump(sock: socket.socket, kind: int, header: bytes, seq: int) -> Iterator[bytes]:
    request = NLMSG_HDR.pack(NLMSG_HDR.size + len(header), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + header
    sock.send(request)
    while True:
        for msg_type, payload in messages(sock.recv(RECV_BYTES)):
            if msg_type == NLMSG_DONE:
                return
            if msg_type == NLMSG_ERROR:
                code = struct.unpack_from("=i", payload)[0]
                if code:
                    raise OSError(-code, f"netlink dump {kind} failed")
                continue
            yield payload


def dump() -> tuple[list[RawLink], list[RawAddress]]:
    """Every link and every address of the current network namespace."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        links = [parse_link(p) for p in _dump(sock, RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), 1)]
        addresses = [a for p in _dump(sock, RTM_GETADDR, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), 2) if (a := parse_address(p))]
    return links, addresses
