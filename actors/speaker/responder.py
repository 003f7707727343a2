"""The node-local ARP and NDP responder: answers "who has this service IP?" on raw sockets.

A speaker that wins a service IP tells the responder `gain(ip, interface)`; from then on the
responder answers ARP requests / Neighbor Solicitations for that IP on that interface with the
interface's MAC, and announces it (gratuitous ARP / unsolicited NA with Override) at once and
in a short burst after, so neighbours switch over without waiting for their caches to expire.
`lose(ip, interface)` stops the answers and cancels the burst immediately;
`reannounce(ip, interface)` repeats the announcement and its burst for an IP already owned.
Announcements are paced per interface by a token bucket (raylb.pacing: 10 000 frames/s, 100
at once): a takeover of 3 000 VIPs tells the segment about each within 0.3 s, never in one
storm, and every VIP is announced once before any is announced again.

Per interface it owns two AF_PACKET sockets (ARP, IPv6) with kernel BPF filters (raylb.bpf)
that pass only requests for targets in a bounded prefix cover of the owned IPs, so an
unrelated flood never wakes Python; Python checks exact ownership. While an interface owns
few IPs (`SYNC_REFILTER_MAX_TARGETS`), `gain` rebuilds its filter before it
returns. Past that, a rebuild costs up to ~50 ms (3 000 targets), too much per gain in a
takeover of thousands: `gain` then swaps in the filter without target test (every request of
the family passes, ~20 instructions, microseconds) and the loop thread builds the tight cover
once the gains have paused for `BATCH_QUIET_S`. Either way an IP is answered from the moment
`gain` returns, and no neighbour is told about an IP the filter would drop. During a mass
takeover (about a second) Python sees every request of that family on the interface. Frame encoding and validation are
the pure functions of raylb.packets; this module only moves bytes.

One thread serves all sockets through a selector; `gain`/`lose` may be called from any thread.
Nothing a peer sends can stop the loop: bad frames are counted by reason and dropped, and any
other error in handling one frame is logged, counted as `internal_error` and the loop goes on.
"""

from __future__ import annotations

import ctypes
import errno
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

from raylb import bpf, packets, pacing

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
# Up to this many owned IPs on an interface, `gain` rebuilds the filter itself
# (measured: 0.04-0.6 ms for 8-64 targets); above, the loop rebuilds once per batch (3 000
# targets: 40-75 ms, so per-gain rebuilds would cost minutes in a mass takeover).
SYNC_REFILTER_MAX_TARGETS = 32
# A batch of gains is over once none came for this long; then the tight filter is built once.
BATCH_QUIET_S = 0.05


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
    # AF_INET6 sockets for IPV6_JOIN_GROUP. The kernel charges each group to its socket's
    # option memory (net.core.optmem_max): in the lab a socket took between ~500 and ~3 000
    # groups before ENOMEM, so a node owning thousands of IPv6 VIPs opens another when full.
    mld: list[socket.socket] = field(default_factory=list)
    mld_of: dict[ipaddress.IPv6Address, socket.socket] = field(default_factory=dict)
    local: frozenset[IPAddress] = frozenset()
    owned: set[IPAddress] = field(default_factory=set)
    groups: Counter[ipaddress.IPv6Address] = field(default_factory=Counter)


def attach_filter(sock: socket.socket, program: list[bpf.Instruction]) -> None:
    """Replace the classic BPF filter of `sock` (SO_ATTACH_FILTER swaps it atomically)."""
    code = bpf.pack(program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _packet_socket(ifname: str, *, ethertype: int, program: list[bpf.Instruction]) -> socket.socket:
    # Protocol 0 receives nothing until bound, so no unfiltered frame is queued before the filter.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        attach_filter(sock, program)
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
        self._clock = clock
        self._lock = threading.RLock()
        self._interfaces: dict[str, _Interface] = {}
        self._counters: dict[tuple[str, str], IpCounters] = {}
        self._schedule = pacing.AnnouncementSchedule(repeats=burst_count, repeat_interval_s=burst_interval_s)
        # (interface, IP version) -> time of the last change, for filters to rebuild once the
        # batch is over; and those that pass every request meanwhile (loosened by a gain)
        self._stale_filters: dict[tuple[str, int], float] = {}
        self._loose: set[tuple[str, int]] = set()
        self.problems: Counter[str] = Counter()  # failures outside any one frame, by kind
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
            iface = _Interface(name=name, index=index, mac=mac, arp=arp, ndp=ndp, local=frozenset(local_addresses))
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
                self._schedule.cancel(ip, name)
            self._schedule.drop_interface(name)
            for version in (4, 6):
                self._stale_filters.pop((name, version), None)
                self._loose.discard((name, version))
            for sock in (iface.arp, iface.ndp):
                self._selector.unregister(sock)
                sock.close()
            for sock in iface.mld:
                sock.close()
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
            if len(iface.owned) <= SYNC_REFILTER_MAX_TARGETS:  # both families: O(1), and close enough
                self._refilter(iface, ip.version)
            else:
                self._loosen(iface, ip.version)
            if ip.version == 6:
                self._join(iface, ip)
            self._schedule.announce(ip, interface, now_s=self._clock())
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
            self._schedule.announce(ip, interface, now_s=self._clock())
        self._wake()
        return True

    def lose(self, ip: IPAddress, interface: str) -> None:
        """Stop answering for `ip` on `interface` at once; pending announcements are cancelled."""
        with self._lock:
            iface = self._interfaces.get(interface)
            if iface is not None and ip in iface.owned:
                self._lose_locked(iface, ip)

    def _lose_locked(self, iface: _Interface, ip: IPAddress) -> None:
        iface.owned.discard(ip)
        self._schedule.cancel(ip, iface.name)
        if len(iface.owned) < SYNC_REFILTER_MAX_TARGETS and (iface.name, ip.version) not in self._stale_filters:
            self._refilter(iface, ip.version)
        else:  # the filter passes a superset meanwhile; Python drops what is not owned
            self._stale_filters[(iface.name, ip.version)] = self._clock()
        if ip.version == 6:
            self._leave(iface, ip)

    def filters_pending(self) -> int:
        """Filters still loose or wide after a batch of gains or losses (0: all tight)."""
        with self._lock:
            return len(self._stale_filters)

    def where(self, ip: IPAddress) -> tuple[str, ...]:
        """The interfaces `ip` is owned on (cost: one look-up per open interface)."""
        with self._lock:
            return tuple(sorted(name for name, i in self._interfaces.items() if ip in i.owned))

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
            self._refilter_stale()
            timeouts = [t for t in (self._schedule.next_s(self._clock()), self._quiet_in_s()) if t is not None]
            timeout = min(timeouts) if timeouts else None
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
        self._send_due()

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

    def _send_due(self) -> None:
        with self._lock:
            self._refilter_stale()
            for ip, name in self._schedule.due(self._clock()):
                iface = self._interfaces.get(name)
                if iface is not None and ip in iface.owned:
                    self._announce(iface, ip)  # type: ignore[arg-type]

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

    def _loosen(self, iface: _Interface, version: int) -> None:
        """Mid-batch: pass every request of the family until the batch is over."""
        key = (iface.name, version)
        if key not in self._loose:
            program = bpf.arp_request_filter() if version == 4 else bpf.neighbor_solicitation_filter()
            attach_filter(iface.arp if version == 4 else iface.ndp, program)
            self._loose.add(key)
        self._stale_filters[key] = self._clock()

    def _quiet_in_s(self) -> float | None:
        """Seconds until the oldest loosened filter's batch is over."""
        if not self._stale_filters:
            return None
        return max(0.0, min(self._stale_filters.values()) + BATCH_QUIET_S - self._clock())

    def _refilter_stale(self) -> None:
        now = self._clock()
        for (name, version), changed_s in sorted(self._stale_filters.items()):
            if now - changed_s < BATCH_QUIET_S:
                continue
            iface = self._interfaces.get(name)
            if iface is not None:
                self._refilter(iface, version)
            else:
                self._stale_filters.pop((name, version), None)
                self._loose.discard((name, version))

    def _refilter(self, iface: _Interface, version: int) -> None:
        """The tight filter for what `iface` owns now (the only place that builds a cover)."""
        self._stale_filters.pop((iface.name, version), None)
        self._loose.discard((iface.name, version))
        if version == 4:
            targets4 = [ip for ip in iface.owned if isinstance(ip, ipaddress.IPv4Address)]
            attach_filter(iface.arp, bpf.arp_request_filter(targets4))
        else:
            targets6 = [ip for ip in iface.owned if isinstance(ip, ipaddress.IPv6Address)]
            attach_filter(iface.ndp, bpf.neighbor_solicitation_filter(targets6))

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
            self._problem("packet_membership_failed", f"packet membership {group} on {iface.name}: {err}")
        ipv6_mreq = group.packed + struct.pack("@I", iface.index)
        if not join:
            sock = iface.mld_of.pop(group, None)
            if sock is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, ipv6_mreq)
                except OSError as err:
                    self._problem("mld_leave_failed", f"MLD leave {group} on {iface.name}: {err}")
            return
        if iface.mld:
            try:
                iface.mld[-1].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, ipv6_mreq)
                iface.mld_of[group] = iface.mld[-1]
                return
            except OSError as err:
                if err.errno not in (errno.ENOMEM, errno.ENOBUFS):  # not "this socket is full"
                    self._problem("mld_join_failed", f"MLD join {group} on {iface.name}: {err}")
                    return
        try:
            fresh = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError as err:  # IPv6 off on this node
            self._problem("mld_join_failed", f"MLD join {group} on {iface.name}: {err}")
            return
        try:
            fresh.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, ipv6_mreq)
        except OSError as err:
            fresh.close()
            self._problem("mld_join_failed", f"MLD join {group} on {iface.name}: {err}")
            return
        iface.mld.append(fresh)
        iface.mld_of[group] = fresh

    def _problem(self, kind: str, message: str) -> None:
        """Count a failure; log the first of each kind and then every 1 000th (a takeover of
        thousands of VIPs must not write thousands of lines while it runs)."""
        self.problems[kind] += 1
        if self.problems[kind] % 1000 == 1:
            log.warning("%s (%s so far): %s", kind, self.problems[kind], message)
