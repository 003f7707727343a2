"""One bare membership endpoint: a speaker's membership without Ray and without ARP/NDP.

`raylb bench membership --real` (cluster/lab/membership_real.py) starts many of these as
plain processes in the lab's node namespaces, each on a node-network address of its own. Each
runs what a speaker runs for membership - `SpeakerCore` (membership, election, wire format
with HMAC) over the real `UdpTransport` on the heartbeat port, stepped by the speaker's own
loop (actors/speaker/loop.py) - with an announcer that only remembers what it was given.

It writes JSON lines to stdout, one at start and one per change of its view, so the harness
can time deaths against the moment it killed a process (CLOCK_MONOTONIC is one clock for
every namespace of the machine):

    {"started": NAME, "pid": N}
    {"t": MONOTONIC_S, "alive": N_ALIVE, "died": [...], "joined": [...]}

and, every REPORT_S, its datagram counters: {"t": ..., "sent": N, "received": N}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from raylb import snapshot as snap
from raylb.actors.speaker import loop
from raylb.actors.speaker.core import SpeakerCore
from raylb.actors.speaker.heartbeat import DEFAULT_PORT, UdpTransport
from raylb.election import Handover
from raylb.keyring import KeySet
from raylb.cluster.membership_sim import SimAnnouncer  # holds what it is given, announces nothing
from raylb.membership import Membership
from raylb.observers import OBSERVERS

REPORT_S = 1.0


class CountingTransport(UdpTransport):
    """The real transport, counting datagrams each way."""

    def __init__(self, address: str, *, port: int) -> None:
        super().__init__(address, port=port)
        self.sent = 0
        self.received = 0

    def send(self, data: bytes, address: str) -> None:
        self.sent += 1
        super().send(data, address)

    def receive(self, wait_s: float = 0.0) -> list[tuple[bytes, str]]:
        got = super().receive(wait_s)
        self.received += len(got)
        return got


def say(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class ReportingCore(SpeakerCore):
    """A SpeakerCore that says when its view changed (at the step that changed it) and, every
    REPORT_S, how many datagrams went each way."""

    def __init__(self, *, transport: CountingTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self.counting = transport
        self._next_report_s = 0.0

    def step(self, now_s: float) -> Handover:
        before = self.membership.alive()
        handover = super().step(now_s)
        after = self.membership.alive()
        if after != before:
            say({"t": now_s, "alive": len(after), "died": sorted(before - after), "joined": sorted(after - before)})
        if now_s >= self._next_report_s:
            say({"t": now_s, "sent": self.counting.sent, "received": self.counting.received})
            self._next_report_s = now_s + REPORT_S
        return handover


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--address", required=True, help="this endpoint's node-network address (IPv4)")
    parser.add_argument("--snapshot", required=True, type=Path, help="JSON of raylb.snapshot.to_dict: the node list")
    parser.add_argument("--key-file", required=True, type=Path, help="the membership key, hex")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)

    transport = CountingTransport(args.address, port=args.port)
    membership = Membership(args.name, now_s=time.monotonic(), incarnation=time.time_ns(), observers=OBSERVERS)
    keys = KeySet(accept=(bytes.fromhex(args.key_file.read_text().strip()),))
    core = ReportingCore(membership=membership, transport=transport, announcer=SimAnnouncer(), keys=keys)
    core.push(snap.from_dict(json.loads(args.snapshot.read_text())))
    say({"started": args.name, "pid": os.getpid()})
    loop.run(core, transport, stop=threading.Event(), errors=Counter())  # until the harness kills it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
