"""Acting as a lab host: run commands in its namespace and probe other hosts from it.

Commands run through `ip netns exec`, exactly as an operator would type them. Probes (ICMP echo,
HTTP GET, TCP connect) run in the calling thread after it enters the source namespace, so they
need no extra tools (the CI image has no `ping`) and each sends a bounded number of packets, only
to addresses inside the lab's subnets.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from raylb.cluster.lab import netns as ns
from raylb.cluster.lab.topology import in_lab_subnets

IP_NETNS_EXEC = ("ip", "netns", "exec")
DEFAULT_RUN_TIMEOUT_S = 60.0

ICMP_ECHO_REQUEST_V4 = 8
ICMP_ECHO_REPLY_V4 = 0
ICMP_ECHO_REQUEST_V6 = 128
ICMP_ECHO_REPLY_V6 = 129


def netns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    return [*IP_NETNS_EXEC, netns, *map(str, argv)]


def run(
    netns: str, argv: Sequence[str], *, check: bool = True, timeout_s: float = DEFAULT_RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        netns_argv(netns, argv), capture_output=True, text=True, check=check, timeout=timeout_s
    )


def popen(netns: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[Any]:
    return subprocess.Popen(netns_argv(netns, argv), **kwargs)  # type: ignore[call-overload]


def _lab_address(address: str | IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    addr = ip_address(address)
    if not in_lab_subnets(addr):
        raise ValueError(f"refusing to probe {addr}: outside the lab subnets")
    return addr


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(netns: str, address: str | IPv4Address | IPv6Address, *, timeout_s: float = 1.0) -> bool:
    """Send ONE ICMP(v6) echo request from `netns` to a lab address; True if a reply came back."""
    addr = _lab_address(address)
    ident = os.getpid() & 0xFFFF
    seq = int(time.monotonic() * 1000) & 0xFFFF
    payload = b"raylb-lab-ping"
    with ns.in_netns(netns):
        if isinstance(addr, IPv4Address):
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST_V4, 0, 0, ident, seq)
            csum = _checksum(header + payload)
            packet = struct.pack("!BBHHH", ICMP_ECHO_REQUEST_V4, 0, csum, ident, seq) + payload
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            # The kernel fills in the ICMPv6 checksum (RFC 3542 section 3.1).
            packet = struct.pack("!BBHHH", ICMP_ECHO_REQUEST_V6, 0, 0, ident, seq) + payload
    with sock:
        sock.sendto(packet, (str(addr), 0))
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, source = sock.recvfrom(2048)
            if ip_address(source[0].split("%")[0]) != addr:
                continue
            if isinstance(addr, IPv4Address):
                data = data[(data[0] & 0x0F) * 4 :]  # raw IPv4 sockets include the IP header
                reply_type = ICMP_ECHO_REPLY_V4
            else:
                reply_type = ICMP_ECHO_REPLY_V6
            if len(data) >= 8:
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[:8])
                if kind == reply_type and rid == ident and rseq == seq:
                    return True
    return False


def _tcp_socket(netns: str, addr: IPv4Address | IPv6Address) -> socket.socket:
    """A TCP socket for `addr`'s family, created inside `netns` (a socket stays in the namespace
    it was created in, so it is used from here like any other)."""
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    with ns.in_netns(netns):
        return socket.socket(family, socket.SOCK_STREAM)


def http_get(
    netns: str, address: str | IPv4Address | IPv6Address, *, port: int = 80, path: str = "/",
    timeout_s: float = 2.0,
) -> tuple[int, str]:
    """One HTTP/1.0 GET from `netns` to a lab address: (status, body)."""
    addr = _lab_address(address)
    with _tcp_socket(netns, addr) as sock:
        sock.settimeout(timeout_s)
        sock.connect((str(addr), port))
        host = str(addr) if addr.version == 4 else f"[{addr}]"
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode()


def tcp_open(
    netns: str, address: str | IPv4Address | IPv6Address, port: int, *, timeout_s: float = 0.5
) -> bool:
    """True if a TCP connect from `netns` to address:port succeeds."""
    addr = _lab_address(address)
    with _tcp_socket(netns, addr) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((str(addr), port))
        except OSError:
            return False
        return True


DNS_TYPES = {"A": 1, "AAAA": 28}


def dns_query(
    netns: str, server: str | IPv4Address | IPv6Address, name: str, *, qtype: str = "A",
    timeout_s: float = 2.0,
) -> list[str]:
    """One DNS question over UDP from `netns` to a lab DNS server: the addresses answered."""
    addr = _lab_address(server)
    ident = os.getpid() & 0xFFFF
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", DNS_TYPES[qtype], 1)
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    with ns.in_netns(netns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout_s)
        sock.sendto(query, (str(addr), 53))
        reply = sock.recv(4096)
    return _dns_answers(reply, len(query))


def _dns_answers(reply: bytes, offset: int) -> list[str]:
    """Addresses in the answer section of a reply whose question ends at `offset`."""
    _ident, _flags, _qd, answers, _ns, _ar = struct.unpack("!HHHHHH", reply[:12])
    found = []
    for _ in range(answers):
        if reply[offset] & 0xC0 == 0xC0:  # compressed name: a 2-byte pointer
            offset += 2
        else:
            while reply[offset]:
                offset += reply[offset] + 1
            offset += 1
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", reply[offset : offset + 10])
        data = reply[offset + 10 : offset + 10 + length]
        if rtype in (1, 28):
            found.append(str(ip_address(data)))
        offset += 10 + length
    return found


def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05, what: str
) -> None:
    """Poll `predicate` until it is true; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(interval_s)
