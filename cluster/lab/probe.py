"""The client's side of ARP/NDP: ask on a raw socket, time the answers, or flood.

Lab tests and `raylb bench arp` use this from the client namespace to see exactly what a
neighbour sees: which MACs answer for an IP, and how fast. `flood` sends a bounded stream of
ARP requests for addresses nobody owns (the unrelated traffic a responder must shrug off).
Everything sent is built by raylb.packets; every send loop is bounded in count and time.

    python -m raylb.cluster.lab.probe flood --iface eth0 --rate 20000 --seconds 5
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import select
import socket
import struct
import os
import sys
import time
from dataclasses import dataclass

from raylb import bpf, packets
from raylb.cluster.lab.topology import SUBNET_V4

SO_ATTACH_FILTER = 26
LAB_SUBNET = SUBNET_V4  # the only IPv4 space the lab may use
NETNS_RUN_DIR = "/var/run/netns"
LAB_NETNS_PREFIXES = ("rlb-", "rlbt-")  # the lab's namespaces and ad-hoc test namespaces


class OutsideLabError(RuntimeError):
    """Refused: probes and floods run only inside a lab network namespace."""


def require_lab_netns() -> str:
    """The name of the lab namespace this thread is in; OutsideLabError anywhere else.

    Whatever sends test traffic checks this first, so a probe or a flood started by mistake in
    the root namespace (where 198.18.0.0/24 may route to a real network) sends nothing.
    """
    here = os.stat("/proc/thread-self/ns/net")
    try:
        names = sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(LAB_NETNS_PREFIXES))
    except FileNotFoundError:
        names = []
    for name in names:
        st = os.stat(os.path.join(NETNS_RUN_DIR, name))
        if (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino):
            return name
    raise OutsideLabError("refusing to send: not inside a lab network namespace (rlb-*); run it via `ip netns exec`")


@dataclass(frozen=True)
class Answer:
    """What came back for one question: first-answer latency and every distinct MAC seen."""

    rtt_s: float | None
    macs: tuple[str, ...]


def _inbound_ethertype_filter(ethertype: int) -> list[bpf.Instruction]:
    """Inbound frames of one ethertype (the prober must not read its own flood)."""
    return [
        (bpf.LD_W_ABS, 0, 0, (bpf.SKF_AD_OFF + bpf.SKF_AD_PKTTYPE) & 0xFFFFFFFF),
        (bpf.JEQ_K, 0, 1, bpf.PACKET_OUTGOING),
        (bpf.RET_K, 0, 0, 0),
        (bpf.LD_H_ABS, 0, 0, bpf.OFF_ETHERTYPE),
        (bpf.JEQ_K, 0, 1, ethertype),
        (bpf.RET_K, 0, 0, bpf.ACCEPT_BYTES),
        (bpf.RET_K, 0, 0, 0),
    ]


def _socket(ifname: str, ethertype: int, *, listen: bool) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    if listen:
        code = bpf.pack(_inbound_ethertype_filter(ethertype))
        buffer = ctypes.create_string_buffer(code, len(code))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(code) // 8, ctypes.addressof(buffer)))
        sock.bind((ifname, ethertype))
    else:
        sock.bind((ifname, 0))  # protocol 0: send only, receive nothing
    return sock


class Prober:
    """ARP and NS questions from one interface of the current namespace."""

    def __init__(self, ifname: str, *, ipv4: ipaddress.IPv4Address, ipv6: ipaddress.IPv6Address) -> None:
        require_lab_netns()
        self.ifname = ifname
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self._arp = _socket(ifname, packets.ETH_P_ARP, listen=True)
        self._ndp = _socket(ifname, packets.ETH_P_IPV6, listen=True)
        self.mac: bytes = self._arp.getsockname()[4][:6]

    def close(self) -> None:
        self._arp.close()
        self._ndp.close()

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drain(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            for _ in range(100_000):
                sock.recv(2048)
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)

    def arp(self, target: ipaddress.IPv4Address, *, timeout_s: float = 0.5, collect: bool = False) -> Answer:
        """Broadcast one who-has for `target`; the first reply's latency, and (with `collect`)
        every MAC replying within `timeout_s`."""
        self._drain(self._arp)
        frame = packets.build_arp_request(src_mac=self.mac, src_ip=self.ipv4, target_ip=target)

        def match(data: bytes) -> str | None:
            try:
                reply = packets.parse_arp(data)
            except packets.FrameError:
                return None
            if reply.op == packets.ARP_OP_REPLY and reply.sender_ip == target and reply.target_ip == self.ipv4:
                return packets.mac_str(reply.sender_mac)
            return None

        return self._ask(self._arp, frame, match, timeout_s=timeout_s, collect=collect)

    def ns(
        self,
        target: ipaddress.IPv6Address,
        *,
        timeout_s: float = 0.5,
        collect: bool = False,
        with_source_lladdr: bool = True,
        unicast_mac: bytes | None = None,
    ) -> Answer:
        """One Neighbor Solicitation for `target` (multicast, or unicast to `unicast_mac`)."""
        self._drain(self._ndp)
        if unicast_mac is None:
            frame = packets.build_neighbor_solicitation(
                src_mac=self.mac, src_ip=self.ipv6, target=target, with_source_lladdr=with_source_lladdr
            )
        else:
            frame = packets.build_neighbor_solicitation(
                src_mac=self.mac,
                src_ip=self.ipv6,
                target=target,
                with_source_lladdr=with_source_lladdr,
                dst_ip=target,
                eth_dst=unicast_mac,
            )

        def match(data: bytes) -> str | None:
            try:
                advert = packets.parse_neighbor_advertisement(data)
            except packets.FrameError:
                return None
            if advert.target == target and advert.solicited and advert.ip_dst == self.ipv6 and data[:6] == self.mac:
                return packets.mac_str(advert.target_lladdr or advert.eth_src)
            return None

        return self._ask(self._ndp, frame, match, timeout_s=timeout_s, collect=collect)

    def answering(
        self, target: ipaddress.IPv4Address | ipaddress.IPv6Address, *, timeout_s: float = 0.3, tries: int = 3
    ) -> tuple[str, ...]:
        """Every MAC that answers one question for `target` (ARP for IPv4, NS for IPv6) within
        `timeout_s`. Asked again, up to `tries` times, only while nobody answers: a busy machine
        may let one window pass in silence, but a second answerer is never asked away."""
        for _ in range(max(1, tries)):
            if target.version == 4:
                macs = self.arp(target, timeout_s=timeout_s, collect=True).macs  # type: ignore[arg-type]
            else:
                macs = self.ns(target, timeout_s=timeout_s, collect=True).macs  # type: ignore[arg-type]
            if macs:
                return macs
        return ()

    @staticmethod
    def _ask(sock: socket.socket, frame: bytes, match, *, timeout_s: float, collect: bool) -> Answer:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        sock.send(frame)
        deadline = start + timeout_s
        rtt: float | None = None
        macs: list[str] = []
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            if not select.select([sock], [], [], remaining)[0]:
                break
            data = sock.recv(2048)
            mac = match(data)
            if mac is None:
                continue
            if rtt is None:
                rtt = time.perf_counter() - start
            if mac not in macs:
                macs.append(mac)
            if not collect:
                break
        return Answer(rtt_s=rtt, macs=tuple(macs))


def flood(*, ifname: str, rate_per_s: int, seconds: float, src_ip: ipaddress.IPv4Address) -> int:
    """ARP who-has for 198.18.0.64-127 (never owned in the lab) at `rate_per_s` for `seconds`.

    Bounded twice: at most rate*seconds frames, and never past `seconds` + 1 s of wall time.
    Returns the number of frames sent.
    """
    require_lab_netns()
    sock = _socket(ifname, packets.ETH_P_ARP, listen=False)
    mac = sock.getsockname()[4][:6]
    frames = [
        packets.build_arp_request(src_mac=mac, src_ip=src_ip, target_ip=ipaddress.IPv4Address(f"198.18.0.{n}"))
        for n in range(64, 128)
    ]
    total = int(rate_per_s * seconds)
    tick_s = 0.002  # pace in small batches; finer pacing costs more CPU than it buys
    start = time.perf_counter()
    hard_stop = start + seconds + 1.0
    sent = 0
    try:
        while sent < total:
            now = time.perf_counter()
            if now >= hard_stop:
                break
            due = min(total, int((now - start) * rate_per_s) + 1)
            while sent < due:
                try:
                    sock.send(frames[sent % len(frames)])
                except OSError:  # ENOBUFS: the queue is full; the frame is lost, as on a wire
                    pass
                sent += 1
            time.sleep(tick_s)
    finally:
        sock.close()
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raylb.cluster.lab.probe")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("flood", help="bounded unrelated ARP flood")
    f.add_argument("--iface", default="eth0")
    f.add_argument("--rate", type=int, default=20_000)
    f.add_argument("--seconds", type=float, default=5.0)
    f.add_argument("--src-ip", default="198.18.0.60")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 60 or not 0 < args.rate <= 100_000:
        parser.error("flood is limited to 60 s and 100 000 frames/s")
    if ipaddress.IPv4Address(args.src_ip) not in LAB_SUBNET:
        parser.error(f"--src-ip must be inside the lab subnet {LAB_SUBNET}")
    start = time.perf_counter()
    sent = flood(ifname=args.iface, rate_per_s=args.rate, seconds=args.seconds, src_ip=ipaddress.IPv4Address(args.src_ip))
    elapsed = time.perf_counter() - start
    print(json.dumps({"sent": sent, "elapsed_s": round(elapsed, 3), "rate_per_s": round(sent / elapsed)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
