"""SpeakerCore against fakes: a fake UDP network, a fake announcer, and time passed by hand.

Each scenario runs whole speakers (membership + election + announcer) that talk over
`FakeNetwork`, stepping them every LOOP_S of simulated time, the way the actor's loop does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from raylb import wire
from raylb.actors.speaker.core import RETRY_S, SpeakerCore
from raylb.election import Interfaces, pick
from raylb.keyring import KeySet
from raylb.membership import DEAD_AFTER_S, HEARTBEAT_INTERVAL_S, Membership
from raylb.pools import IPAddress
from raylb.snapshot import Advertisement, NodeInfo, ServiceState, Snapshot

LOOP_S = 0.025
KEY = b"membership-key-of-the-unit-tests"
KEYS = KeySet(accept=(KEY,))
NODES = ("node1", "node2", "node3")
ADDRESSES = {"node1": "198.18.0.11", "node2": "198.18.0.12", "node3": "198.18.0.13"}
VIPS = tuple(ipaddress.ip_address(f"198.18.0.{n}") for n in range(128, 140)) + (
    ipaddress.ip_address("2001:db8:18::1:10"),
)


# ----------------------------------------------------------------------------------- fakes


@dataclass
class FakeNetwork:
    """Datagrams between fake transports; a cut address neither sends nor receives."""

    inboxes: dict[str, list[tuple[bytes, str]]] = field(default_factory=dict)
    cut: set[str] = field(default_factory=set)

    def transport(self, address: str) -> FakeTransport:
        self.inboxes.setdefault(address, [])
        return FakeTransport(self, address)


@dataclass
class FakeTransport:
    network: FakeNetwork
    address: str
    sent: list[tuple[bytes, str]] = field(default_factory=list)

    def send(self, data: bytes, address: str) -> None:
        self.sent.append((data, address))
        if self.address in self.network.cut or address in self.network.cut:
            return
        if address in self.network.inboxes:
            self.network.inboxes[address].append((data, self.address))

    def receive(self, wait_s: float = 0.0) -> list[tuple[bytes, str]]:
        inbox = self.network.inboxes[self.address]
        out, inbox[:] = list(inbox), []
        return out

    def kinds_sent(self) -> list[int]:
        return [wire.decode(d, keys=(KEY,)).kind for d, _ in self.sent]


@dataclass
class FakeAnnouncer:
    """Records what is announced; `broken` makes every call raise.

    With `heard` set (a client's neighbour cache: VIP -> node it last heard announce it) and
    `node` named, every announcement made while `link_up` reaches the client; `link_returns`
    is what the real responder does when the link comes back: announce all it holds."""

    held: dict[IPAddress, Interfaces] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    broken: bool = False
    node: str = ""
    heard: dict[IPAddress, str] | None = None
    link_up: bool = True

    def _on_air(self, ip: IPAddress) -> None:
        if self.heard is not None and self.link_up:
            self.heard[ip] = self.node

    def announce(self, ip: IPAddress, interfaces: Interfaces) -> None:
        self.calls.append(("announce", str(ip)))
        if self.broken:
            raise OSError("interface eth0 vanished")
        self.held[ip] = interfaces
        self._on_air(ip)

    def reannounce(self, ip: IPAddress) -> None:
        self.calls.append(("reannounce", str(ip)))
        if self.broken:
            raise OSError("interface eth0 vanished")
        self._on_air(ip)

    def link_returns(self) -> None:
        self.link_up = True
        for ip in self.held:
            self._on_air(ip)

    def withdraw(self, ip: IPAddress) -> None:
        self.calls.append(("withdraw", str(ip)))
        if self.broken:
            raise OSError("interface eth0 vanished")
        self.held.pop(ip, None)

    def counters(self) -> Mapping[str, Any]:
        return {f"{ip}@eth0": {"replies": 1} for ip in self.held}


def make_snapshot(
    version: int = 1, *, vips: Iterable[IPAddress] = VIPS, policy: str = "Cluster",
    endpoint_nodes: Iterable[str] = NODES, nodes: Iterable[str] = NODES,
) -> Snapshot:  # fmt: skip
    return Snapshot(
        version=version,
        services=tuple(
            ServiceState(
                key=f"default/svc{i}", ips=(vip,), pool="lab", external_traffic_policy=policy,
                endpoint_nodes=frozenset(endpoint_nodes),
            )  # fmt: skip
            for i, vip in enumerate(vips)
        ),
        advertisements=(Advertisement(name="l2", pools=frozenset({"lab"})),),
        nodes=tuple(NodeInfo(name=n, address=ADDRESSES[n]) for n in nodes),
    )


class Cluster:
    """Speakers on a fake network, stepped together in simulated time."""

    def __init__(self, names: Iterable[str] = NODES, *, now_s: float = 100.0) -> None:
        self.now_s = now_s
        self.network = FakeNetwork()
        self.speakers: dict[str, SpeakerCore] = {}
        self.announcers: dict[str, FakeAnnouncer] = {}
        self.transports: dict[str, FakeTransport] = {}
        self.stopped: set[str] = set()  # not stepped: a frozen or killed process
        self.heard: dict[IPAddress, str] = {}  # the client's neighbour cache: VIP -> node
        for name in names:
            self.add(name)

    def add(self, name: str, *, incarnation: int = 1) -> SpeakerCore:
        self.announcers[name] = FakeAnnouncer(node=name, heard=self.heard)
        self.transports[name] = self.network.transport(ADDRESSES[name])
        membership = Membership(name, now_s=self.now_s, incarnation=incarnation)
        self.speakers[name] = SpeakerCore(
            membership=membership, transport=self.transports[name], announcer=self.announcers[name], keys=KEYS
        )
        self.stopped.discard(name)
        return self.speakers[name]

    def push(self, snapshot: Snapshot) -> None:
        for speaker in self.speakers.values():
            speaker.push(snapshot)

    def step(self) -> None:
        for name, speaker in self.speakers.items():
            if name not in self.stopped:
                speaker.step(self.now_s)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / LOOP_S)):
            self.now_s += LOOP_S
            self.step()

    def owners(self, vip: IPAddress) -> set[str]:
        return {n for n, a in self.announcers.items() if vip in a.held and n not in self.stopped}


def expected(vip: IPAddress, alive: Iterable[str]) -> str:
    winner = pick(ip=vip, candidates=alive)
    assert winner is not None
    return winner


def converged(cluster: Cluster, alive: Iterable[str] = NODES) -> None:
    alive = list(alive)
    for vip in VIPS:
        assert cluster.owners(vip) == {expected(vip, alive)}, vip


# ----------------------------------------------------------------------------------- tests


def test_a_fresh_speaker_is_quiet_until_ready_then_announces_what_it_wins() -> None:
    cluster = Cluster(["node1"])
    speaker, transport = cluster.speakers["node1"], cluster.transports["node1"]
    cluster.push(make_snapshot(nodes=NODES))
    cluster.run(DEAD_AFTER_S - 2 * LOOP_S)
    assert transport.sent == []  # no heartbeat while quiet
    assert cluster.announcers["node1"].held == {}
    assert speaker.status()["ready"] is False
    cluster.run(3 * LOOP_S)
    # nobody else answered: alone, node1 wins every VIP, and it now heartbeats to both peers
    assert set(cluster.announcers["node1"].held) == set(VIPS)
    assert {address for _, address in transport.sent} == {ADDRESSES["node2"], ADDRESSES["node3"]}
    assert set(transport.kinds_sent()) == {wire.HEARTBEAT}


def test_a_speaker_that_hears_every_peer_is_ready_before_the_quiet_window_ends() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(DEAD_AFTER_S + 4 * LOOP_S)
    converged(cluster)
    late = cluster.add("node2", incarnation=2)  # node2's speaker restarts
    late.push(make_snapshot())
    cluster.run(HEARTBEAT_INTERVAL_S + 2 * LOOP_S)
    assert late.status()["ready"] is True  # heard node1 and node3 well within dead_after_s
    converged(cluster)


def test_three_speakers_converge_to_exactly_one_owner_per_vip() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    converged(cluster)
    assert all(s.status()["alive"] == list(NODES) for s in cluster.speakers.values())


def test_heartbeats_go_to_every_peer_at_the_heartbeat_interval() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    transport = cluster.transports["node1"]
    transport.sent.clear()
    cluster.run(1.0)
    per_peer = {a: sum(1 for _, b in transport.sent if b == a) for a in (ADDRESSES["node2"], ADDRESSES["node3"])}
    assert all(abs(n - 1.0 / HEARTBEAT_INTERVAL_S) <= 1 for n in per_peer.values()), per_peer


@pytest.mark.parametrize("how", ["process_frozen", "link_cut"])
def test_silent_peer_ips_move_after_dead_after_s_and_not_before(how: str) -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    victim = expected(VIPS[0], NODES)
    mine = {vip for vip in VIPS if expected(vip, NODES) == victim}
    if how == "process_frozen":
        cluster.stopped.add(victim)
    else:
        cluster.network.cut.add(ADDRESSES[victim])
    survivors = [n for n in NODES if n != victim]
    cluster.run(DEAD_AFTER_S - HEARTBEAT_INTERVAL_S)
    for vip in mine:  # still within the grace: nobody else claims the victim's IPs yet
        assert not cluster.owners(vip) - {victim}
    cluster.run(HEARTBEAT_INTERVAL_S + 3 * LOOP_S)
    for vip in VIPS:
        owners = cluster.owners(vip) - {victim}
        assert owners == {expected(vip, survivors)}, vip
    for name in survivors:
        assert victim not in cluster.speakers[name].status()["alive"]
        assert cluster.speakers[name].status()["peers"][victim]["reason"] == "timeout"


def test_leave_hands_over_at_the_next_step_of_the_peers() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    leaver = expected(VIPS[0], NODES)
    cluster.speakers[leaver].leave(cluster.now_s)
    assert cluster.announcers[leaver].held == {}  # released at once
    sent = cluster.transports[leaver].kinds_sent()
    assert sent[-4:] == [wire.LEAVE] * 4  # twice to each of the two peers
    cluster.step()  # same instant: the goodbye is read and the election re-run
    survivors = [n for n in NODES if n != leaver]
    for vip in VIPS:
        assert cluster.owners(vip) - {leaver} == {expected(vip, survivors)}
    # and the leaver stays silent afterwards
    before = len(cluster.transports[leaver].sent)
    cluster.run(0.5)
    assert len(cluster.transports[leaver].sent) == before
    assert cluster.speakers[leaver].status()["left"] is True


def test_a_peer_that_comes_back_takes_its_ips_back() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    victim = expected(VIPS[0], NODES)
    cluster.stopped.add(victim)
    cluster.run(1.0)
    cluster.add(victim, incarnation=2).push(make_snapshot())
    cluster.run(1.0)
    converged(cluster)


@pytest.mark.parametrize("cut_for_s", [DEAD_AFTER_S + 0.2, 5.0])
def test_after_a_partition_heals_every_vip_was_last_announced_by_its_owner(cut_for_s: float) -> None:
    # A node whose link goes down believes its peers dead and claims every VIP; when the link
    # returns it announces them all before it hears the peers and withdraws. The client's
    # cache then points at it for IPs it no longer answers for (in the lab it still serves
    # them through AnyIP, so the next failover of such an IP goes unnoticed or is lost).
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    converged(cluster)
    assert cluster.heard == {vip: expected(vip, NODES) for vip in VIPS}
    victim = expected(VIPS[0], NODES)
    cluster.network.cut.add(ADDRESSES[victim])
    cluster.announcers[victim].link_up = False
    cluster.run(cut_for_s)
    assert set(cluster.announcers[victim].held) == set(VIPS)  # alone, it owns everything
    cluster.network.cut.discard(ADDRESSES[victim])
    cluster.announcers[victim].link_returns()
    cluster.run(1.0)
    converged(cluster)
    assert {vip: cluster.heard[vip] for vip in VIPS} == {vip: expected(vip, NODES) for vip in VIPS}
    survivor = next(n for n in NODES if n != victim)
    assert cluster.speakers[survivor].status()["counts"]["reannounced"] >= 1


def test_a_failed_reannouncement_is_counted_and_never_escapes_step() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    victim = expected(VIPS[0], NODES)
    survivor = next(n for n in NODES if n != victim)
    cluster.network.cut.add(ADDRESSES[victim])
    cluster.run(1.0)
    cluster.announcers[survivor].broken = True
    cluster.network.cut.discard(ADDRESSES[victim])
    cluster.run(0.2)
    assert cluster.speakers[survivor].status()["counts"]["reannounce_failed"] >= 1


def test_newer_snapshot_replaces_older_and_older_is_ignored() -> None:
    cluster = Cluster(["node1"])
    speaker = cluster.speakers["node1"]
    assert speaker.push(make_snapshot(version=3, nodes=["node1"])) == 3
    cluster.run(DEAD_AFTER_S + 2 * LOOP_S)
    assert set(cluster.announcers["node1"].held) == set(VIPS)
    # an older snapshot (e.g. a retry delivered late) changes nothing
    assert speaker.push(make_snapshot(version=2, vips=VIPS[:1], nodes=["node1"])) == 3
    cluster.run(2 * LOOP_S)
    assert set(cluster.announcers["node1"].held) == set(VIPS)
    assert speaker.status()["counts"]["snapshots_ignored"] == 1
    # a newer one takes effect at the next step
    assert speaker.push(make_snapshot(version=4, vips=VIPS[:2], nodes=["node1"])) == 4
    cluster.run(LOOP_S)
    assert set(cluster.announcers["node1"].held) == set(VIPS[:2])
    assert speaker.status()["snapshot_version"] == 4
    # the same version again is neither newer nor counted as older
    assert speaker.push(make_snapshot(version=4, vips=(), nodes=["node1"])) == 4
    cluster.run(LOOP_S)
    assert set(cluster.announcers["node1"].held) == set(VIPS[:2])


def test_local_policy_announces_only_on_nodes_with_an_endpoint() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot(policy="Local", endpoint_nodes=["node3"]))
    cluster.run(1.0)
    assert set(cluster.announcers["node3"].held) == set(VIPS)
    assert cluster.announcers["node1"].held == {} and cluster.announcers["node2"].held == {}


def test_announcer_errors_are_counted_and_retried_and_never_escape_step() -> None:
    cluster = Cluster(["node1"])
    speaker, announcer = cluster.speakers["node1"], cluster.announcers["node1"]
    announcer.broken = True
    speaker.push(make_snapshot(nodes=["node1"]))
    cluster.run(DEAD_AFTER_S + 2 * LOOP_S)  # would raise here if errors escaped
    assert announcer.held == {}
    assert speaker.status()["counts"]["announce_failed"] == len(VIPS)
    assert speaker.status()["owned"] == {}
    attempts = len(announcer.calls)
    cluster.run(RETRY_S / 2)
    assert len(announcer.calls) == attempts  # no retry storm
    announcer.broken = False
    cluster.run(RETRY_S)
    assert set(announcer.held) == set(VIPS)
    assert set(speaker.status()["owned"]) == {str(v) for v in VIPS}


def test_a_failed_withdraw_keeps_the_ip_owned_and_is_retried() -> None:
    cluster = Cluster(["node1"])
    speaker, announcer = cluster.speakers["node1"], cluster.announcers["node1"]
    speaker.push(make_snapshot(nodes=["node1"]))
    cluster.run(DEAD_AFTER_S + 2 * LOOP_S)
    announcer.broken = True
    speaker.push(make_snapshot(version=2, vips=(), nodes=["node1"]))
    cluster.run(LOOP_S)
    assert set(speaker.owned()) == set(VIPS)  # the truth: the responder still answers
    announcer.broken = False
    cluster.run(RETRY_S + LOOP_S)
    assert speaker.owned() == {} and announcer.held == {}


def test_ray_reporting_a_node_dead_moves_its_ips_until_it_heartbeats_again() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    victim = expected(VIPS[0], NODES)
    observer = next(n for n in NODES if n != victim)
    cluster.speakers[observer].on_ray_node_dead(victim, now_s=cluster.now_s)
    assert victim not in cluster.speakers[observer].status()["alive"]
    cluster.run(0.5)  # its heartbeats keep coming: evidence beats hearsay
    assert victim in cluster.speakers[observer].status()["alive"]
    converged(cluster)


def test_status_reports_node_incarnation_version_peers_owned_and_counters() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot(version=7))
    cluster.run(1.0)
    status = cluster.speakers["node1"].status()
    owned = {str(v) for v in VIPS if expected(v, NODES) == "node1"}
    assert status["node"] == "node1"
    assert status["incarnation"] == 1
    assert status["snapshot_version"] == 7
    assert status["newest_peer_snapshot_version"] == 7
    assert status["alive"] == list(NODES)
    assert set(status["peers"]) == {"node2", "node3"}
    assert all(p["alive"] and p["address"] for p in status["peers"].values())
    assert set(status["owned"]) == owned
    assert set(status["responder"]) == {f"{ip}@eth0" for ip in owned}
    assert status["counts"]["heartbeats_sent"] > 0


def test_next_wakeup_is_the_next_heartbeat_or_death_deadline() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    wakeup = cluster.speakers["node1"].next_wakeup_s()
    assert wakeup is not None
    assert cluster.now_s < wakeup <= cluster.now_s + HEARTBEAT_INTERVAL_S


def test_status_tells_why_this_node_does_not_announce_each_ip() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    victim = expected(VIPS[0], NODES)
    cluster.stopped.add(victim)
    cluster.run(DEAD_AFTER_S + 4 * LOOP_S)
    survivors = [n for n in NODES if n != victim]
    for name in survivors:
        why = cluster.speakers[name].status(no_interface=frozenset({VIPS[1]}))["why"]
        assert set(why) == {str(v) for v in VIPS}
        for vip in VIPS:
            if vip == VIPS[1]:
                assert why[str(vip)] == "not eligible: no usable interface for the IP on this node"
            elif expected(vip, survivors) == name:
                assert why[str(vip)] == "announcer", vip
            else:
                assert why[str(vip)] == f"outranked by node {expected(vip, survivors)}", vip
    other = cluster.speakers[survivors[0]].explain(no_interface={})[VIPS[0]].of(victim)
    assert other is not None and other.text == "not alive"


def test_a_death_is_counted_for_metrics_detection_time_and_handovers_from_that_peer() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    victim = expected(VIPS[0], NODES)
    owned = {vip for vip in VIPS if expected(vip, NODES) == victim}
    cluster.stopped.add(victim)
    cluster.run(DEAD_AFTER_S + 4 * LOOP_S)
    survivors = [n for n in NODES if n != victim]
    taken = 0
    for name in survivors:
        stats = cluster.speakers[name].peer_stats
        death = cluster.speakers[name].status()["peer_deaths"][victim]
        assert DEAD_AFTER_S < death["silent_for_s"] <= DEAD_AFTER_S + 2 * LOOP_S
        assert death["detected_at_s"] <= cluster.now_s
        taken += stats.handovers[victim]
        assert set(stats.handovers) == {victim}
    assert taken == len(owned)  # every IP the victim held, counted once, by whoever took it


def test_heartbeats_lost_on_the_way_are_counted_per_peer() -> None:
    cluster = Cluster()
    cluster.push(make_snapshot())
    cluster.run(1.0)
    delays = cluster.speakers["node1"].peer_stats.take_delays()
    assert set(delays) == {"node2", "node3"} and all(d <= HEARTBEAT_INTERVAL_S + 2 * LOOP_S for d in delays.values())
    cluster.network.cut.add(ADDRESSES["node2"])
    cluster.run(3 * HEARTBEAT_INTERVAL_S)  # shorter than dead_after_s: node2 stays alive
    cluster.network.cut.discard(ADDRESSES["node2"])
    cluster.run(2 * HEARTBEAT_INTERVAL_S)
    stats = cluster.speakers["node1"].peer_stats
    assert stats.lost["node2"] >= 2 and stats.lost["node3"] == 0
    assert stats.take_delays()["node2"] >= 3 * HEARTBEAT_INTERVAL_S
