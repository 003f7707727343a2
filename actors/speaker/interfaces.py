"""Which interfaces a service IP is announced on, kept right as links and addresses change.

The rule (as MetalLB's layer-2 mode, narrowed to the subnet when nothing is named):
- the interfaces an L2Advertisement names, if it names any;
- otherwise every interface with an address whose subnet contains the service IP;
- never an interface that is down (administratively or without carrier), NOARP, a loopback,
  or enslaved to a bridge or bond (the master carries the address and answers).

`choose_interfaces` is that rule as a pure function over a `Link` snapshot. `Announcements`
holds the wanted IPs and keeps a `Responder` in line with the rule. It reads the links
(actors/speaker/netlink.py: two rtnetlink dumps, no pyroute2 in the speaker's process) once
and again only when they change: a thread listens to netlink link and address events (and
resyncs every `RESYNC_INTERVAL_S` in case an event was lost), re-reads them and re-applies the
rule to every IP, so a link going down or coming back, or an address moving, takes effect
without a restart. Announcing or withdrawing one IP reads nothing: it places that IP against
the links already read (a takeover of 3 000 VIPs is 3 000 look-ups, not 3 000 netlink dumps).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raylb.actors.speaker import netlink
from raylb.actors.speaker.responder import Responder

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# linux/if.h flags and rtnetlink multicast groups
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_NOARP = 0x80
IFF_LOWER_UP = 0x10000
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

# Netlink events can be lost (buffer overrun); a full resync this often repairs any miss.
RESYNC_INTERVAL_S = 5.0
# Events come in bursts (one link change -> several messages); settle this long before acting.
DEBOUNCE_S = 0.02


@dataclass(frozen=True)
class Link:
    """One network interface as the selection rule sees it."""

    name: str
    index: int
    mac: str
    up: bool  # administratively up and with carrier
    noarp: bool
    loopback: bool
    enslaved: bool  # has a master (bridge or bond port)
    addresses: tuple[IPInterface, ...] = ()

    @property
    def usable(self) -> bool:
        return self.up and not (self.noarp or self.loopback or self.enslaved)

    @property
    def local_ips(self) -> frozenset[IPAddress]:
        return frozenset(a.ip for a in self.addresses)


def choose_interfaces(vip: IPAddress, links: Sequence[Link], *, named: Sequence[str] | None = None) -> tuple[str, ...]:
    """The names of the interfaces `vip` is announced on (see the module docstring)."""
    chosen = []
    for link in links:
        if not link.usable or vip in link.local_ips:
            continue
        if named:
            if link.name in named:
                chosen.append(link.name)
        elif any(a.version == vip.version and vip in a.network for a in link.addresses):
            chosen.append(link.name)
    return tuple(sorted(chosen))


def read_links() -> list[Link]:
    """Snapshot of the namespace's links and their addresses (a netlink dump of each)."""
    raw_links, raw_addresses = netlink.dump()
    addresses: dict[int, list[IPInterface]] = {}
    for entry in raw_addresses:
        addresses.setdefault(entry.index, []).append(entry.address)
    return [
        Link(
            name=raw.name,
            index=raw.index,
            mac=raw.mac,
            up=bool(raw.flags & IFF_UP) and bool(raw.flags & IFF_LOWER_UP) and raw.operstate in ("UP", "UNKNOWN"),
            noarp=bool(raw.flags & IFF_NOARP),
            loopback=bool(raw.flags & IFF_LOOPBACK),
            enslaved=bool(raw.master),
            addresses=tuple(addresses.get(raw.index, ())),
        )
        for raw in raw_links
    ]


class Announcements:
    """Wanted service IPs -> (IP, interface) pairs in a Responder, following link changes."""

    def __init__(self, responder: Responder, *, links: Callable[[], list[Link]] = read_links) -> None:
        self._responder = responder
        self._read_links = links
        self._links: list[Link] | None = None  # as last read; None until the first need
        self._wanted: dict[IPAddress, tuple[str, ...] | None] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._stopping = False

    def announce(self, vip: IPAddress, *, interfaces: Sequence[str] | None = None) -> tuple[str, ...]:
        """Announce `vip` (on the named interfaces, else by subnet); returns where it is now."""
        with self._lock:
            named = tuple(interfaces) if interfaces else None
            self._wanted[vip] = named
            if self._links is None:
                self._links = self._read_links()
            self._place(vip, named, self._links)
        return self._responder.where(vip)

    def withdraw(self, vip: IPAddress) -> None:
        with self._lock:
            self._wanted.pop(vip, None)
            for name in self._responder.where(vip):
                self._responder.lose(vip, name)

    def reannounce(self, vip: IPAddress) -> tuple[str, ...]:
        """Announce `vip` again on every interface it is placed on; returns those interfaces."""
        return tuple(name for name in self._responder.where(vip) if self._responder.reannounce(vip, name))

    def _place(self, vip: IPAddress, named: tuple[str, ...] | None, links: list[Link]) -> None:
        """Make the responder hold `vip` exactly where the rule puts it on `links`."""
        desired = set(choose_interfaces(vip, links, named=named))
        current = set(self._responder.where(vip))
        for name in sorted(current - desired):
            self._responder.lose(vip, name)
        opened = self._responder.interfaces()
        by_name = {link.name: link for link in links}
        for name in sorted(desired - current):
            if name not in opened:
                try:
                    self._responder.open_interface(name, local_addresses=by_name[name].local_ips)
                except OSError as err:  # vanished in between; the next event or resync retries
                    log.warning("cannot open %s: %s", name, err)
                    continue
            self._responder.gain(vip, name)

    def placement(self) -> dict[IPAddress, tuple[str, ...]]:
        result: dict[IPAddress, list[str]] = {}
        for ip, name in self._responder.owned():
            result.setdefault(ip, []).append(name)
        return {ip: tuple(sorted(names)) for ip, names in result.items()}

    def reconcile(self) -> None:
        """Read the links, then make the responder's interfaces and owned pairs match the rule."""
        with self._lock:
            links = self._links = self._read_links()
            by_name = {link.name: link for link in links}
            desired: set[tuple[IPAddress, str]] = set()
            for vip, named in self._wanted.items():
                desired.update((vip, name) for name in choose_interfaces(vip, links, named=named))
            needed = {name for _, name in desired}
            opened = self._responder.interfaces()
            for name, mac in opened.items():
                link = by_name.get(name)
                if name not in needed or link is None or not link.usable or link.mac != mac:
                    self._responder.close_interface(name)
            for name in sorted(needed):
                try:
                    self._responder.open_interface(name, local_addresses=by_name[name].local_ips)
                except OSError as err:  # vanished in between; the next event or resync retries
                    log.warning("cannot open %s: %s", name, err)
            current = self._responder.owned()
            for ip, name in sorted(current - desired, key=str):
                self._responder.lose(ip, name)
            for ip, name in sorted(desired - current, key=str):
                self._responder.gain(ip, name)

    # ----- netlink watch ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="raylb-links", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _watch(self) -> None:
        groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, groups))
            sock.setblocking(False)
            while not self._stopping:
                readable, _, _ = select.select([sock, self._stop_r], [], [], RESYNC_INTERVAL_S)
                if self._stop_r in readable:
                    return
                if sock in readable:
                    # Only "something changed" matters: drain the burst, then read the full state.
                    while select.select([sock], [], [], DEBOUNCE_S)[0]:
                        try:
                            sock.recv(65536)
                        except BlockingIOError:
                            break
                        except OSError as err:  # ENOBUFS: events lost; the resync below covers it
                            log.debug("netlink recv: %s", err)
                            break
                try:
                    self.reconcile()
                except Exception:  # never let the watcher die; retry on the next event/resync
                    log.exception("interface reconcile failed")
        finally:
            sock.close()
