"""An attacker on the lab's node network: sends UDP with any source address, and listens in.

`Forger` sends from the lab's client namespace through a raw IPv4 socket, so a datagram can
claim to come from a node (spoofed source), as any host on the segment can. `capture`
records the membership datagrams one node receives from another (to replay them later).
Only lab node-network addresses (198.18.0.0/24) are accepted as source and destination, and
every sending loop is bounded in count and time.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Iterable

from raylb.cluster.lab import Host, Lab, in_netns

NODE_NETWORK = ipaddress.ip_network("198.18.0.0/24")
MAX_DATAGRAMS = 50_000  # per call: the largest flood any test sends
MAX_SEND_S = 30.0
ETH_P_IP = 0x0800


def _lab_address(address: object) -> str:
    parsed = ipaddress.ip_address(str(address))
    if parsed not in NODE_NETWORK:
        raise ValueError(f"{parsed} is not on the lab's node network {NODE_NETWORK}: refusing to send")
    return str(parsed)


def udp_packet(*, source: str, destination: str, port: int, payload: bytes, source_port: int = 40000) -> bytes:
    """IPv4 + UDP; the kernel fills in the IP checksum and id, the UDP checksum is 0 (none)."""
    udp = struct.pack("!HHHH", source_port, port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )  # fmt: skip
    return header + udp


class Forger:
    """Raw IPv4 out of the lab's client namespace."""

    def __init__(self, lab: Lab) -> None:
        with in_netns(lab.client.netns):
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(
        self, payloads: Iterable[bytes], *, source: object, destination: object, port: int, rate_per_s: float = 10_000.0
    ) -> int:
        """Send each payload, paced at `rate_per_s`; returns how many were sent."""
        src, dst = _lab_address(source), _lab_address(destination)
        start = time.monotonic()
        sent = 0
        for payload in payloads:
            if sent >= MAX_DATAGRAMS or time.monotonic() - start > MAX_SEND_S:
                break
            self._sock.sendto(udp_packet(source=src, destination=dst, port=port, payload=payload), (dst, 0))
            sent += 1
            ahead_s = start + sent / rate_per_s - time.monotonic()
            if ahead_s > 0:
                time.sleep(ahead_s)
        return sent

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Forger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def capture(receiver: Host, *, sender: Host, port: int, count: int, timeout_s: float = 5.0) -> list[bytes]:
    """Up to `count` UDP payloads to `port` that `receiver` gets from `sender`, within timeout_s."""
    with in_netns(receiver.netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    out: list[bytes] = []
    try:
        sock.bind((receiver.ifname, 0))
        sock.settimeout(0.2)
        want_src = socket.inet_aton(str(sender.ipv4))
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            try:
                frame = sock.recv(2048)
            except TimeoutError:
                continue
            ihl = (frame[0] & 0x0F) * 4
            if len(frame) < ihl + 8 or frame[9] != socket.IPPROTO_UDP or frame[12:16] != want_src:
                continue
            if struct.unpack("!H", frame[ihl + 2 : ihl + 4])[0] == port:
                out.append(frame[ihl + 8 :])
    finally:
        sock.close()
    return out
