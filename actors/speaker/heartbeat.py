"""The speakers' heartbeat transport: one UDP socket on the node network.

Speakers learn that a peer is gone from its silence (raylb.membership), so heartbeats must
travel the same network as the ARP/NDP answers: a dead link then looks exactly like a dead
node. The socket is bound to the node's own address (the one in the snapshot's NodeInfo), not
to 0.0.0.0, so replies and heartbeats leave through the node network and a speaker started on
the wrong machine fails at once (EADDRNOTAVAIL) instead of heartbeating from somewhere else.

Sending never blocks and never raises past `send` for a peer that is gone: a full queue or an
unreachable neighbour is an OSError the core counts as a lost datagram. Receiving drains what
is queued, waiting at most the given time for the first datagram, and at most
`RECEIVE_BATCH` datagrams per call so a flood on the port cannot hold the loop.

The node network is IPv4 here (the lab's node addresses, and Ray's node addresses, are IPv4);
an IPv6 node network needs only AF_INET6 in `UdpTransport`.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket

from raylb import wire

# MetalLB's memberlist listens on 7946; raylb takes the next port so both can run on the
# same nodes while a cluster migrates from one to the other.
DEFAULT_PORT = 7947
# 64 peers heartbeating every 50 ms queue ~64 datagrams per interval; more than that in one
# call is a flood, and the rest waits for the next iteration (the kernel buffer keeps it).
RECEIVE_BATCH = 256
# Room for ~3 000 datagrams of the largest size: a stall of the speaker of a second with 64
# peers loses nothing.
RCVBUF_BYTES = 1 << 20


class UdpTransport:
    """Datagrams to and from the other speakers, all on `port`."""

    def __init__(self, address: str, *, port: int = DEFAULT_PORT) -> None:
        parsed = ipaddress.ip_address(address)
        if parsed.version != 4:
            raise ValueError(f"heartbeat address {address}: the node network must be IPv4")
        self.address = str(parsed)
        self.port = port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            self._sock.bind((self.address, port))
        except OSError as err:
            self._sock.close()
            hint = {
                errno.EADDRINUSE: "another speaker already runs on this node",
                errno.EADDRNOTAVAIL: "the address is not on this machine (wrong node?)",
            }.get(err.errno or 0, err.strerror)
            raise OSError(err.errno, f"cannot bind heartbeat socket to {self.address}:{port}: {hint}") from err
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, data: bytes, address: str) -> None:
        self._sock.sendto(data, (address, self.port))

    def wait(self, timeout_s: float) -> bool:
        """Block until a datagram is queued or `timeout_s` passed; True if one is queued."""
        if self._sock.fileno() < 0:
            return False
        readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout_s))
        return bool(readable)

    def receive(self, wait_s: float = 0.0) -> list[tuple[bytes, str]]:
        """Queued datagrams (payload, source address), waiting at most `wait_s` for the first."""
        if wait_s > 0 and not self.wait(wait_s):
            return []
        out: list[tuple[bytes, str]] = []
        for _ in range(RECEIVE_BATCH):
            try:
                data, source = self._sock.recvfrom(wire.MAX_DATAGRAM_LEN + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ECONNREFUSED queued by an ICMP error; the socket is fine
                continue
            out.append((data, source[0]))
        return out

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> UdpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
