"""The node-local ARP and NDP responder: answers "who has this service IP?" on raw sockets.

A speaker that wins a service IP tells the responder `gain(ip, interface)`; from then on the
responder answers ARP requests / Neighbor Solicitations for that IP on that interface with the
interface's MAC, and announces it (gratuitous ARP / unsolicited NA with Override) at once and
in a short burst after, so neighbours switch over without waiting for their caches to expire.
`lose(ip, interface)` stops the answers and cancels the burst immediately;
`reannounce(ip, interface)` repeats the announcement and its burst for an IP already owned.

Per interface it owns two AF_PACKET sockets (ARP, IPv6) with kernel BPF filters (raylb.bpf)
that pass only requests for owned IPs, so an unrelated flood never wakes Python. Frame
encoding and validation are the pure functions of raylb.packets; this module only moves bytes.

One thread serves all sockets through a selector; `gain`/`lose` may be called from any thread.
Nothing a peer sends can stop the loop: bad frames are counted by reason and dropped, and any
other error in handling one frame is logged, counted as `internal_error` and the loop goes on.
"""

from __future__ import annotations

import ctypes
import heapq
import ipaddress
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raylb import bpf, packets

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# linux/if_packet.h and socket.h numbers not all exported by Python's socket module
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_MR_MULTICAST = 0
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4

# After the announcement sent at once, this many more at this spacing: a neighbour that missed
# one (or ignored it inside its ARP locktime, 1 s by default on Linux) still switches within ~1 s.
DEFAULT_BURST_COUNT = 3
DEFAULT_BURST_INTERVAL_S = 0.35
RECV_BATCH = 64  # frames read per readiness event before the selector is asked again
RCVBUF_BYTES = 1 << 20  # absorbs bursts of legitimate requests


@dataclass
class IpCounters:
    """What happened for one (IP, interface); `ip` is '*' for frames not attributable to an IP."""

    requests: int = 0
    replies: int = 0
    gratuitous: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "replies": self.replies,
            "gratuitous": self.gratuitous,
            "drops": dict(self.drops),
        }


@dataclass
class _Interface:
    name: str
    index: int
    mac: bytes
    arp: socket.socket
    ndp: socket.socket
    mld: socket.socket | None  # AF_INET6 socket for IPV6_JOIN_GROUP (None if IPv6 is off)
    local: frozenset[IPAddress] = frozenset()
    owned: set[IPAddress] = field(default_factory=set)
    groups: Counter[ipaddress.IPv6Address] = field(default_factory=Counter)


def _attach(sock: socket.socket, program: list[bpf.Instruction]) -> None:
    code = bpf.pack(program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _packet_socket(ifname: str, *, ethertype: int, program: list[bpf.Instruction]) -> socket.socket:
    # Protocol 0 receives nothing until bound, so no unfiltered frame is queued before the filter.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        _attach(sock, program)
        sock.bind((ifname, ethertype))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Responder:
    """ARP + NDP answers for the IPs this node owns, per interface, on one thread."""

    def __init__(
        self,
        *,
        burst_count: int = DEFAULT_BURST_COUNT,
        burst_interval_s: float = DEFAULT_BURST_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst_count = burst_count
        self._burst_interval_s = burst_interval_s
        self._clock = clock
        self._lock = threading.RLock()
        self._interfaces: dict[str, _Interface] = {}
        self._counters: dict[tuple[str, str], IpCounters] = {}
        # (due, seq, ip, interface, generation): pending burst announcements
        self._bursts: list[tuple[float, int, IPAddress, str, int]] = []
        self._generation: dict[tuple[IPAddress, str], int] = {}
        self._seq = 0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ----- interfaces -------------------------------------------------------------------------

    def open_interface(self, name: str, *, local_addresses: Iterable[IPAddress] = ()) -> None:
        """Start listening on `name` (idempotent). `local_addresses` are never answered for."""
        with self._lock:
            if name in self._interfaces:
                self._interfaces[name].local = frozenset(local_addresses)
                return
            arp = _packet_socket(name, ethertype=packets.ETH_P_ARP, program=bpf.arp_request_filter(()))
            try:
                ndp = _packet_socket(name, ethertype=packets.ETH_P_IPV6, program=bpf.neighbor_solicitation_filter(()))
            except OSError:
                arp.close()
                raise
            mac = arp.getsockname()[4][:6]
            index = socket.if_nametoindex(name)
            mld: socket.socket | None
            try:
                mld = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            except OSError:
                mld = None
            iface = _Interface(name=name, index=index, mac=mac, arp=arp, ndp=ndp, mld=mld, local=frozenset(local_addresses))
            self._interfaces[name] = iface
            self._selector.register(arp, selectors.EVENT_READ, (name, 4))
            self._selector.register(ndp, selectors.EVENT_READ, (name, 6))
            log.info("responder listening on %s (%s)", name, packets.mac_str(mac))
        self._wake()

    def close_interface(self, name: str) -> None:
        """Stop listening on `name` and forget what it owned (the link is gone or changed)."""
        with self._lock:
            iface = self._interfaces.pop(name, None)
            if iface is None:
                return
            for ip in iface.owned:
                self._generation[(ip, name)] = self._generation.get((ip, name), 0) + 1
            for sock in (iface.arp, iface.ndp):
                self._selector.unregister(sock)
                sock.close()
            if iface.mld is not None:
                iface.mld.close()
        self._wake()

    def interfaces(self) -> dict[str, str]:
        """Open interfaces and their MACs."""
        with self._lock:
            return {name: packets.mac_str(i.mac) for name, i in self._interfaces.items()}

    def set_local_addresses(self, name: str, addresses: Iterable[IPAddress]) -> None:
        with self._lock:
            iface = self._interfaces.get(name)
            if iface is not None:
                iface.local = frozenset(addresses)
                for ip in iface.owned & iface.local:
                    log.warning("%s became a local address of %s; no longer answering for it", ip, name)
                    self._lose_locked(iface, ip)

    # ----- ownership --------------------------------------------------------------------------

    def gain(self, ip: IPAddress, interface: str) -> bool:
        """Answer for `ip` on `interface` from now on and announce it; False if not possible."""
        with self._lock:
            iface = self._interfaces.get(interface)
            if iface is None:
                log.warning("cannot announce %s: interface %s is not open", ip, interface)
                return False
            if ip in iface.local:
                log.warning("refusing to announce %s on %s: it is the node's own address", ip, interface)
                return False
            if ip in iface.owned:
                return True
            iface.owned.add(ip)
            key = (ip, interface)
            generation = self._generation.get(key, 0) + 1
            self._generation[key] = generation
            self._refilter(iface, ip.version)
            if ip.version == 6:
                self._join(iface, ip)
            self._announce_burst(iface, ip, generation)
        self._wake()
        return True

    def reannounce(self, ip: IPAddress, interface: str) -> bool:
        """Announce an IP already owned on `interface` again, with a fresh burst (the pending
        one is cancelled); False if it is not owned there. For when a neighbour may have been
        told otherwise since: a peer coming back from a partition announced it too."""
        with self._lock:
            iface = self._interfaces.get(interface)
            if iface is None or ip not in iface.owned:
                return False
            key = (ip, interface)
            generation = self._generation.get(key, 0) + 1
            self._generation[key] = generation
            self._announce_burst(iface, ip, generation)
        self._wake()
        return True

    def _announce_burst(self, iface: _Interface, ip: IPAddress, generation: int) -> None:
        """One announcement now and `burst_count` more later, tagged with `generation`."""
        self._announce(iface, ip)
        now = self._clock()
        for n in range(1, self._burst_count + 1):
            self._seq += 1
            heapq.heappush(self._bursts, (now + n * self._burst_interval_s, self._seq, ip, iface.name, generation))

    def lose(self, ip: IPAddress, interface: str) -> None:
        """Stop answering for `ip` on `interface` at once; pending announcements are cancelled."""
        with self._lock:
            iface = self._interfaces.get(interface)
            if iface is not None and ip in iface.owned:
                self._lose_locked(iface, ip)

    def _lose_locked(self, iface: _Interface, ip: IPAddress) -> None:
        iface.owned.discard(ip)
        key = (ip, iface.name)
        self._generation[key] = self._generation.get(key, 0) + 1
        self._refilter(iface, ip.version)
        if ip.version == 6:
            self._leave(iface, ip)

    def owned(self) -> set[tuple[IPAddress, str]]:
        with self._lock:
            return {(ip, i.name) for i in self._interfaces.values() for ip in i.owned}

    def counters(self) -> dict[tuple[str, str], IpCounters]:
        """A copy of the counters keyed by (ip, interface)."""
        with self._lock:
            return {
                key: IpCounters(c.requests, c.replies, c.gratuitous, Counter(c.drops))
                for key, c in self._counters.items()
            }

    # ----- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="raylb-responder", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop and close every socket; idempotent."""
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        for name in list(self._interfaces):
            self.close_interface(name)
        with self._lock:
            if self._wake_r >= 0:
                self._selector.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or we are closed

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._step()
            except Exception:  # the loop never dies; one bad step is logged and retried
                log.exception("responder loop step failed")
                time.sleep(0.01)

    def _step(self) -> None:
        with self._lock:
            timeout = None
            if self._bursts:
                timeout = max(0.0, self._bursts[0][0] - self._clock())
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            name, version = key.data
            self._drain(key.fileobj, name, version)  # type: ignore[arg-type]
        self._due_bursts()

    def _drain(self, sock: socket.socket, name: str, version: int) -> None:
        for _ in range(RECV_BATCH):
            try:
                frame, address = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # socket closed under us, or link gone
                log.debug("recv on %s failed: %s", name, err)
                return
            if address[2] == PACKET_OUTGOING:
                continue
            with self._lock:
                iface = self._interfaces.get(name)
                if iface is None or sock not in (iface.arp, iface.ndp):
                    return
                try:
                    if version == 4:
                        self._on_arp(iface, frame)
                    else:
                        self._on_ns(iface, frame)
                except Exception:
                    log.exception("handling a frame on %s failed", name)
                    self._count("*", name).drops["internal_error"] += 1

    def _due_bursts(self) -> None:
        with self._lock:
            now = self._clock()
            while self._bursts and self._bursts[0][0] <= now:
                _, _, ip, name, generation = heapq.heappop(self._bursts)
                iface = self._interfaces.get(name)
                if iface is None or ip not in iface.owned or self._generation.get((ip, name)) != generation:
                    continue  # lost, or gained again (that gain has its own burst)
                self._announce(iface, ip)

    # ----- frames -----------------------------------------------------------------------------

    def _on_arp(self, iface: _Interface, frame: bytes) -> None:
        try:
            request = packets.parse_arp_request(frame)
        except packets.FrameError as err:
            self._count("*", iface.name).drops[err.reason] += 1
            return
        ip = request.target_ip
        if ip not in iface.owned:
            self._count("*", iface.name).drops["not_owned"] += 1
            return
        counters = self._count(str(ip), iface.name)
        counters.requests += 1
        if request.eth_dst not in (packets.BROADCAST_MAC, iface.mac):
            counters.drops["not_for_us"] += 1
        elif request.is_announcement:
            counters.drops["announcement"] += 1
            if request.sender_mac != iface.mac:
                log.warning("%s on %s is announced by %s too", ip, iface.name, packets.mac_str(request.sender_mac))
        elif request.sender_mac == iface.mac:
            counters.drops["own_frame"] += 1
        else:
            self._send(iface, iface.arp, packets.build_arp_reply(request=request, mac=iface.mac), counters, "replies")

    def _on_ns(self, iface: _Interface, frame: bytes) -> None:
        try:
            solicitation = packets.parse_neighbor_solicitation(frame)
        except packets.FrameError as err:
            self._count("*", iface.name).drops[err.reason] += 1
            return
        ip = solicitation.target
        if ip not in iface.owned:
            self._count("*", iface.name).drops["not_owned"] += 1
            return
        counters = self._count(str(ip), iface.name)
        counters.requests += 1
        for_us_eth = solicitation.eth_dst in (packets.solicited_node_mac(ip), iface.mac)
        for_us_ip = solicitation.ip_dst in (packets.solicited_node_address(ip), ip)
        if not (for_us_eth and for_us_ip):
            counters.drops["not_for_us"] += 1
        elif solicitation.eth_src == iface.mac:
            counters.drops["own_frame"] += 1
        else:
            reply = packets.build_solicited_advertisement(solicitation=solicitation, mac=iface.mac)
            self._send(iface, iface.ndp, reply, counters, "replies")

    def _announce(self, iface: _Interface, ip: IPAddress) -> None:
        if ip.version == 4:
            frame, sock = packets.build_gratuitous_arp(mac=iface.mac, ip=ip), iface.arp
        else:
            frame, sock = packets.build_unsolicited_advertisement(mac=iface.mac, ip=ip), iface.ndp
        self._send(iface, sock, frame, self._count(str(ip), iface.name), "gratuitous")

    def _send(self, iface: _Interface, sock: socket.socket, frame: bytes, counters: IpCounters, what: str) -> None:
        try:
            sock.send(frame)
        except OSError as err:  # link down (ENETDOWN), full queue (ENOBUFS): count, carry on
            counters.drops["send_failed"] += 1
            log.debug("send on %s failed: %s", iface.name, err)
            return
        setattr(counters, what, getattr(counters, what) + 1)

    def _count(self, ip: str, name: str) -> IpCounters:
        counters = self._counters.get((ip, name))
        if counters is None:
            counters = self._counters[(ip, name)] = IpCounters()
        return counters

    # ----- kernel filters and multicast membership --------------------------------------------

    def _refilter(self, iface: _Interface, version: int) -> None:
        if version == 4:
            targets4 = [ip for ip in iface.owned if isinstance(ip, ipaddress.IPv4Address)]
            _attach(iface.arp, bpf.arp_request_filter(targets4))
        else:
            targets6 = [ip for ip in iface.owned if isinstance(ip, ipaddress.IPv6Address)]
            _attach(iface.ndp, bpf.neighbor_solicitation_filter(targets6))

    def _join(self, iface: _Interface, ip: ipaddress.IPv6Address) -> None:
        group = packets.solicited_node_address(ip)
        iface.groups[group] += 1
        if iface.groups[group] > 1:
            return
        self._membership(iface, group, join=True)

    def _leave(self, iface: _Interface, ip: ipaddress.IPv6Address) -> None:
        group = packets.solicited_node_address(ip)
        iface.groups[group] -= 1
        if iface.groups[group] > 0:
            return
        del iface.groups[group]
        self._membership(iface, group, join=False)

    def _membership(self, iface: _Interface, group: ipaddress.IPv6Address, *, join: bool) -> None:
        # The MAC filter of the NIC (packet membership) and MLD, so snooping switches forward
        # the group to us (IPV6_JOIN_GROUP); either failing is logged, not fatal.
        mreq = struct.pack("iHH8s", iface.index, PACKET_MR_MULTICAST, 6, packets.multicast_mac(group))
        option = PACKET_ADD_MEMBERSHIP if join else PACKET_DROP_MEMBERSHIP
        try:
            iface.ndp.setsockopt(SOL_PACKET, option, mreq)
        except OSError as err:
            log.warning("packet membership %s %s on %s failed: %s", "join" if join else "leave", group, iface.name, err)
        if iface.mld is not None:
            ipv6_mreq = group.packed + struct.pack("@I", iface.index)
            option = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
            try:
                iface.mld.setsockopt(socket.IPPROTO_IPV6, option, ipv6_mreq)
            except OSError as err:
                log.warning("MLD %s %s on %s failed: %s", "join" if join else "leave", group, iface.name, err)
