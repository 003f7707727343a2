"""A deterministic simulation of many speakers: the real SpeakerCore (membership, election,
wire format with HMAC) over a simulated network, in one process, in simulated time.

This machine cannot run 1 000 raylets, so `raylb bench membership` runs 1 000 SpeakerCores
here. The network delivers each datagram after a latency with jitter (so datagrams reorder),
drops a share of them at random, and can cut links one way (`block`) or split the nodes into
groups that cannot reach each other (`partition`). Nodes can be killed (they stop stepping
and receiving) and restarted (a new SpeakerCore with a larger incarnation). Time advances in
slots of `LOOP_S`, the speaker actor's loop interval: every running node steps once per slot
after the datagrams due by then are delivered. The same seed gives the same run.

What it measures: per-node datagram rates, when each survivor stopped counting a killed node
as alive, removals of nodes that were never killed (false removals), and whether every VIP
has exactly one announcer among the running nodes.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raylb.actors.speaker.core import SpeakerCore
from raylb.election import Interfaces, elect
from raylb.keyring import KeySet
from raylb.membership import Membership
from raylb.observers import OBSERVERS
from raylb.pools import IPAddress
from raylb.snapshot import Advertisement, NodeInfo, ServiceState, Snapshot

LOOP_S = 0.025  # raylb.actors.speaker.loop.LOOP_INTERVAL_S
KEY = b"simulated-cluster-membership-key"
WALL_BASE_NS = 1_800_000_000_000_000_000  # the simulated wall clock at t = 0


@dataclass
class NetConfig:
    latency_s: float = 0.0003  # one-way latency on a LAN
    jitter_s: float = 0.002  # uniform extra delay: datagrams overtake each other
    loss: float = 0.0  # share of datagrams dropped at random


@dataclass
class SimNetwork:
    """Datagrams in flight. Each link draws its loss and delay from its own generator, seeded
    by the run's seed and the link: the order in which speakers send (which follows the order
    of their sets, salted per process) cannot change which datagrams are lost."""

    config: NetConfig
    seed: int
    now_s: float = 0.0
    blocked: set[tuple[str, str]] = field(default_factory=set)  # (source, destination) cut one way
    groups: dict[str, int] = field(default_factory=dict)  # partition: address -> group
    down: set[str] = field(default_factory=set)  # killed nodes' addresses
    inboxes: dict[str, list[tuple[bytes, str]]] = field(default_factory=dict)
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    _flight: list[tuple[float, int, str, bytes, str]] = field(default_factory=list)
    _order: int = 0
    _links: dict[tuple[str, str], random.Random] = field(default_factory=dict)

    def _rng(self, source: str, destination: str) -> random.Random:
        link = (source, destination)
        if link not in self._links:
            self._links[link] = random.Random(f"{self.seed}:{source}>{destination}")
        return self._links[link]

    def send(self, source: str, destination: str, data: bytes) -> None:
        self.sent[source] += 1
        rng = self._rng(source, destination)
        if (source, destination) in self.blocked or rng.random() < self.config.loss:
            return
        if self.groups and self.groups.get(source) != self.groups.get(destination):
            return
        self._order += 1
        at = self.now_s + self.config.latency_s + rng.random() * self.config.jitter_s
        heapq.heappush(self._flight, (at, self._order, destination, data, source))

    def deliver_until(self, now_s: float) -> None:
        self.now_s = now_s
        while self._flight and self._flight[0][0] <= now_s:
            _, _, destination, data, source = heapq.heappop(self._flight)
            if destination in self.down or destination not in self.inboxes:
                continue
            self.received[destination] += 1
            self.inboxes[destination].append((data, source))


@dataclass
class SimTransport:
    network: SimNetwork
    address: str

    def send(self, data: bytes, address: str) -> None:
        self.network.send(self.address, address, data)

    def receive(self, wait_s: float = 0.0) -> list[tuple[bytes, str]]:
        inbox = self.network.inboxes[self.address]
        out, inbox[:] = list(inbox), []
        return out


@dataclass
class SimAnnouncer:
    held: set[IPAddress] = field(default_factory=set)

    def announce(self, ip: IPAddress, interfaces: Interfaces) -> None:
        self.held.add(ip)

    def withdraw(self, ip: IPAddress) -> None:
        self.held.discard(ip)

    def reannounce(self, ip: IPAddress) -> None:
        return None

    def counters(self) -> Mapping[str, Any]:
        return {}


def address_of(index: int) -> str:
    """A simulated node address (never sent anything: the network is simulated)."""
    return str(ipaddress.ip_address("198.18.0.0") + 1 + index) if index < 250 else f"sim-{index}"


class Simulation:
    """`nodes` speakers, K-observer mode with `observers` (None: every speaker watches every other)."""

    def __init__(
        self, *, nodes: int, observers: int | None = OBSERVERS, vips: int = 4, seed: int = 1,
        net: NetConfig | None = None,
    ) -> None:  # fmt: skip
        self.network = SimNetwork(config=net or NetConfig(), seed=seed)
        self.observers = observers
        self.names = [f"node-{i:04d}" for i in range(nodes)]
        self.addresses = {n: address_of(i) for i, n in enumerate(self.names)}
        self.vips: tuple[IPAddress, ...] = tuple(ipaddress.ip_address(f"198.18.0.{200 + i}") for i in range(vips))
        self.snapshot = Snapshot(
            version=1,
            services=tuple(ServiceState(key=f"default/s{i}", ips=(ip,), pool="p", has_ready_endpoint=True)
                           for i, ip in enumerate(self.vips)),  # fmt: skip
            advertisements=(Advertisement(name="l2", pools=frozenset({"p"})),),
            nodes=tuple(NodeInfo(name=n, address=self.addresses[n]) for n in self.names),
        )
        self.now_s = 0.0
        self.speakers: dict[str, SpeakerCore] = {}
        self.announcers: dict[str, SimAnnouncer] = {}
        self.incarnations: dict[str, int] = {}
        self.killed: dict[str, float] = {}  # node -> when
        self.deaths: list[tuple[float, str, str]] = []  # (time, observer, dead node) as seen
        for name in self.names:
            self.start(name)

    # ------------------------------------------------------------------ the world

    def start(self, name: str) -> None:
        """Start (or restart: a larger incarnation) the speaker of `name`."""
        self.incarnations[name] = self.incarnations.get(name, 0) + 1
        address = self.addresses[name]
        self.network.inboxes[address] = []
        self.network.down.discard(address)
        self.killed.pop(name, None)
        membership = Membership(name, now_s=self.now_s, incarnation=self.incarnations[name], observers=self.observers)
        self.announcers[name] = SimAnnouncer()
        core = SpeakerCore(
            membership=membership, transport=SimTransport(self.network, address), announcer=self.announcers[name],
            keys=KeySet(accept=(KEY,)), wall_ns=lambda: WALL_BASE_NS + int(self.now_s * 1e9),
        )  # fmt: skip
        core.push(self.snapshot)
        self.speakers[name] = core

    def kill(self, name: str) -> None:
        self.killed[name] = self.now_s
        self.network.down.add(self.addresses[name])

    def block(self, source: str, destination: str) -> None:
        self.network.blocked.add((self.addresses[source], self.addresses[destination]))

    def partition(self, *groups: Iterable[str]) -> None:
        self.network.groups = {self.addresses[n]: g for g, names in enumerate(groups) for n in names}

    def heal(self) -> None:
        self.network.groups = {}
        self.network.blocked.clear()

    # ------------------------------------------------------------------ time

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / LOOP_S)):
            self.now_s = round(self.now_s + LOOP_S, 9)
            self.network.deliver_until(self.now_s)
            for name in self.running():
                speaker = self.speakers[name]
                before = speaker.membership.alive()
                speaker.step(self.now_s)
                after = speaker.membership.alive()
                if after is not before:
                    for dead in sorted(before - after):
                        self.deaths.append((self.now_s, name, dead))

    def running(self) -> list[str]:
        return [n for n in self.names if n not in self.killed]

    # ------------------------------------------------------------------ what is seen

    def alive_everywhere(self) -> bool:
        """Every running speaker counts exactly the running nodes alive."""
        running = frozenset(self.running())
        return all(self.speakers[n].membership.alive() == running for n in running)

    def announcers_of(self, ip: IPAddress) -> set[str]:
        return {n for n in self.running() if ip in self.announcers[n].held}

    def exactly_one_announcer(self) -> bool:
        """Every VIP is announced by exactly the node the election gives it among the running ones."""
        results = elect(snapshot=self.snapshot, alive=frozenset(self.running()))
        return all(self.announcers_of(ip) == {results[ip].announcer} for ip in self.vips)

    def false_removals(self, since_s: float = 0.0) -> int:
        """Removals of nodes that were running at the time (each observer's view counts)."""
        return sum(1 for t, _, dead in self.deaths if t >= since_s and dead not in self.killed)

    def rates_per_node_s(self, since_sent: Counter[str], since_received: Counter[str], seconds: float) -> dict[str, float]:
        running = [self.addresses[n] for n in self.running()]
        sent = [(self.network.sent[a] - since_sent[a]) / seconds for a in running]
        received = [(self.network.received[a] - since_received[a]) / seconds for a in running]
        return {"sent_mean": sum(sent) / len(sent), "sent_max": max(sent),
                "received_mean": sum(received) / len(received), "received_max": max(received)}  # fmt: skip
