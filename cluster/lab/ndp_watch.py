"""The client's view of a mass failover: which MAC each of thousands of IPv6 VIPs resolves to.

HTTP to 3 000 VIPs every few milliseconds is more than this machine can drive, and the client
kernel's neighbour table cannot hold them (its gc_thresh3, 1 024 entries by default, is shared
by every namespace and may not be raised from here). So the client check is address
resolution, done by hand on a raw socket in the client namespace: a VIP is reachable again
once the client learns a live node's MAC for it - from the new owner's unsolicited NA (what
updates a real client's cache) or from its answer to a Neighbor Solicitation (what a client
without an entry, or whose entry failed, asks). Either comes after the new owner's responder
holds the VIP, and the node accepts traffic for every VIP, so from then on packets flow.

Run inside the client's namespace, driven over stdin/stdout (one JSON object per line):

    python -m raylb.cluster.lab.ndp_watch --vips-file F --victim-mac M --node-mac A --node-mac B

    verify   one NS per VIP; {"verify": {"victim": n, "other": n, "none": n}}
    watch    {"watching": true} at once, then listen for NAs and ask every VIP not yet taken
             over again, round after round, until all are or --watch-s passes:
             {"taken": {vip: t}, "via": {"announcement": n, "reply": n}, "missing": [...]}
             t is CLOCK_MONOTONIC, shared with the caller, who notes when it killed the node.
    quit

Bounded: NS leave at most --rate a second, only for the given VIPs, which must lie in the lab's
IPv6 subnet; a watch lasts at most --watch-s.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import sys
import time
from collections.abc import Callable

from raylb import bpf, packets
from raylb.actors.speaker.responder import attach_filter
from raylb.cluster.lab.topology import SUBNET_V6

DEFAULT_RATE_PER_S = 5_000  # NS frames/s: a round over 3 000 VIPs takes 0.6 s; the node's
# responders answer them in Python, so the probe must not itself become the flood
VERIFY_WAIT_S = 1.0
MAX_RATE_PER_S = 20_000
MAX_WATCH_S = 120.0


class Watcher:
    def __init__(self, *, ifname: str, vips: list[ipaddress.IPv6Address], victim_mac: str, node_macs: set[str],
                 src_ip: ipaddress.IPv6Address, rate_per_s: int) -> None:  # fmt: skip
        self.vips = vips
        self.victim_mac = victim_mac
        self.node_macs = node_macs
        self.src_ip = src_ip
        self.rate_per_s = rate_per_s
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        attach_filter(self.sock, bpf.neighbor_advertisement_filter())
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((ifname, packets.ETH_P_IPV6))
        self.sock.setblocking(False)
        self.mac = self.sock.getsockname()[4][:6]
        self.frames = {
            vip: packets.build_neighbor_solicitation(src_mac=self.mac, src_ip=src_ip, target=vip) for vip in vips
        }

    def _receive(self, on_answer: Callable[[ipaddress.IPv6Address, str, bool, float], None]) -> None:
        while True:
            try:
                frame = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            now_s = time.monotonic()
            try:
                advert = packets.parse_neighbor_advertisement(frame)
            except packets.FrameError:
                continue
            mac = packets.mac_str(advert.target_lladdr or advert.eth_src)
            on_answer(advert.target, mac, advert.solicited, now_s)

    def _rounds(self, pending: Callable[[], list[ipaddress.IPv6Address]], *, until_s: float, once: bool,
                on_answer: Callable[[ipaddress.IPv6Address, str, bool, float], None]) -> None:  # fmt: skip
        """Ask every pending VIP, paced at `rate_per_s`, round after round (or once), while
        receiving answers; stops at `until_s` or when nothing is pending."""
        queue: list[ipaddress.IPv6Address] = []
        start_s = time.monotonic()
        sent = 0
        rounds = 0
        while time.monotonic() < until_s:
            if not queue:
                if once and rounds:
                    break
                queue = list(reversed(pending()))
                rounds += 1
                if not queue:
                    return
            due = int((time.monotonic() - start_s) * self.rate_per_s) + 1
            while sent < due and queue:
                try:
                    self.sock.send(self.frames[queue.pop()])
                except OSError:  # ENOBUFS: lost, as on a wire; the next round asks again
                    pass
                sent += 1
            select.select([self.sock], [], [], 0.001)
            self._receive(on_answer)

    def verify(self) -> dict[str, int]:
        seen: dict[ipaddress.IPv6Address, str] = {}

        def record(vip: ipaddress.IPv6Address, mac: str, solicited: bool, now_s: float) -> None:
            if vip in self.frames and solicited:
                seen.setdefault(vip, mac)

        self._receive(lambda *_: None)  # forget what queued up before
        self._rounds(lambda: [v for v in self.vips if v not in seen], until_s=time.monotonic() + 30, once=True, on_answer=record)
        deadline = time.monotonic() + VERIFY_WAIT_S
        while time.monotonic() < deadline and len(seen) < len(self.vips):
            select.select([self.sock], [], [], 0.01)
            self._receive(record)
        victim = sum(1 for mac in seen.values() if mac == self.victim_mac)
        return {"victim": victim, "other": len(seen) - victim, "none": len(self.vips) - len(seen)}

    def watch(self, *, watch_s: float) -> dict[str, object]:
        taken: dict[ipaddress.IPv6Address, float] = {}
        via = {"announcement": 0, "reply": 0}

        def record(vip: ipaddress.IPv6Address, mac: str, solicited: bool, now_s: float) -> None:
            if vip in self.frames and vip not in taken and mac != self.victim_mac and mac in self.node_macs:
                taken[vip] = now_s
                via["reply" if solicited else "announcement"] += 1

        self._receive(lambda *_: None)
        self._rounds(lambda: [v for v in self.vips if v not in taken], until_s=time.monotonic() + watch_s, once=False, on_answer=record)
        return {
            "taken": {str(v): round(t, 6) for v, t in taken.items()},
            "via": via,
            "missing": [str(v) for v in self.vips if v not in taken],
        }


def _reply(payload: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raylb.cluster.lab.ndp_watch", description=__doc__)
    parser.add_argument("--vips-file", required=True, help="one IPv6 VIP per line")
    parser.add_argument("--victim-mac", required=True)
    parser.add_argument("--node-mac", action="append", required=True, help="MACs of the nodes that may take over")
    parser.add_argument("--iface", default="eth0")
    parser.add_argument("--src-ip", default=str(SUBNET_V6.network_address + 0x60))
    parser.add_argument("--rate", type=int, default=DEFAULT_RATE_PER_S)
    parser.add_argument("--watch-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    with open(args.vips_file) as f:
        vips = [ipaddress.IPv6Address(line.strip()) for line in f if line.strip()]
    src = ipaddress.IPv6Address(args.src_ip)
    outside = [str(v) for v in [*vips, src] if v not in SUBNET_V6]
    if outside:
        parser.error(f"addresses outside the lab subnet {SUBNET_V6}: {outside[:5]}")
    if not 0 < args.rate <= MAX_RATE_PER_S or not 0 < args.watch_s <= MAX_WATCH_S:
        parser.error(f"--rate must be in 1..{MAX_RATE_PER_S} and --watch-s in (0, {MAX_WATCH_S:g}]")
    watcher = Watcher(ifname=args.iface, vips=vips, victim_mac=args.victim_mac.lower(),
                      node_macs={m.lower() for m in args.node_mac}, src_ip=src, rate_per_s=args.rate)  # fmt: skip
    _reply({"ready": True, "vips": len(vips)})
    for line in sys.stdin:
        command = line.strip()
        if command == "verify":
            _reply({"verify": watcher.verify()})
        elif command == "watch":
            _reply({"watching": True})
            _reply(watcher.watch(watch_s=args.watch_s))
        elif command == "quit":
            break
        else:
            _reply({"error": f"unknown command {command!r}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
