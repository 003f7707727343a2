"""Failover edge cases a MetalLB layer-2 user relies on, run on whole SpeakerCores.

Builds on the fakes of tests/unit/test_speaker_core.py (`Cluster`, `FakeNetwork`,
`FakeAnnouncer`: a shared client neighbour cache in `heard`) and adds links that fail in one
direction only, a shared key, and per-step checks. Time is advanced by hand, LOOP_S a step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from raylb import wire
from raylb.actors.speaker.core import SpeakerCore
from raylb.election import EXCLUDE_LABEL, Interfaces, diff, elect, owned_ips
from raylb.membership import HEARTBEAT_INTERVAL_S
from raylb.pools import IPAddress
from raylb.selectors import LabelSelector
from raylb.snapshot import Advertisement, NodeInfo, ServiceState, Snapshot
from tests.unit.test_speaker_core import (
    ADDRESSES,
    KEY,
    LOOP_S,
    NODES,
    VIPS,
    Cluster,
    FakeNetwork,
    FakeTransport,
    converged,
    expected,
    make_snapshot,
)

FORGER_KEY = b"a key that is not the cluster's"
ZONES = {"node1": "a", "node2": "b", "node3": "a"}
# Long enough for any single event to settle: a death (dead_after_s + one tick), a quiet
# start (dead_after_s), a stall grace (two intervals), with a wide margin.
SETTLE_S = 1.0
# A partitioned node's first heartbeat after the heal arrives within one interval; the
# receiver re-elects at its next step.
HEAL_S = HEARTBEAT_INTERVAL_S + 2 * LOOP_S


# ----------------------------------------------------------------------------------- fakes


@dataclass
class DirectedNetwork(FakeNetwork):
    """A FakeNetwork whose links can also be cut in one direction: (source, destination)."""

    blocked: set[tuple[str, str]] = field(default_factory=set)

    def transport(self, address: str) -> FakeTransport:
        self.inboxes.setdefault(address, [])
        return DirectedTransport(self, address)


@dataclass
class DirectedTransport(FakeTransport):
    network: DirectedNetwork

    def send(self, data: bytes, address: str) -> None:
        if (self.address, address) in self.network.blocked:
            self.sent.append((data, address))
            return
        super().send(data, address)


class Lan(Cluster):
    """`Cluster` on a DirectedNetwork, optionally keyed, remembering the snapshot it pushed
    and running `checks` after every step."""

    def __init__(self, names: Iterable[str] = NODES) -> None:
        self.incarnations: dict[str, int] = {}
        self.checks: list[Callable[[], None]] = []
        self.snapshot = make_snapshot(version=0)
        super().__init__(())
        self.network = DirectedNetwork()
        for name in names:
            self.add(name)

    def add(self, name: str, *, incarnation: int = 1) -> SpeakerCore:
        self.incarnations[name] = incarnation
        return super().add(name, incarnation=incarnation)

    def restart(self, name: str) -> SpeakerCore:
        """A new speaker process on `name`: larger incarnation, the current snapshot pushed."""
        speaker = self.add(name, incarnation=self.incarnations[name] + 1)
        speaker.push(self.snapshot)
        return speaker

    def push(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        super().push(snapshot)

    def step(self) -> None:
        super().step()
        for check in self.checks:
            check()

    def block(self, source: str, destination: str) -> None:
        self.network.blocked.add((ADDRESSES[source], ADDRESSES[destination]))

    def heal(self) -> None:
        self.network.blocked.clear()
        self.network.cut.clear()

    def running(self) -> set[str]:
        return {n for n, s in self.speakers.items() if n not in self.stopped and not s.status()["left"]}

    def deliver(self, data: bytes, *, source: str, to: Iterable[str]) -> None:
        """A datagram arriving late (or forged) at `to`, as if sent from `source`'s address."""
        for name in to:
            self.network.inboxes[ADDRESSES[name]].append((data, ADDRESSES[source]))

    def calls(self) -> dict[str, int]:
        return {n: len(a.calls) for n, a in self.announcers.items()}


def settled(snapshot: Snapshot | None = None) -> Lan:
    """Three speakers that have agreed on `snapshot` (default: every VIP, Cluster policy)."""
    lan = Lan()
    lan.push(snapshot or make_snapshot())
    lan.run(SETTLE_S)
    assert_every_ip_has_its_one_announcer(lan, lan.snapshot, set(NODES))
    return lan


def share(node: str, alive: Iterable[str], vips: Iterable[IPAddress] = VIPS) -> set[IPAddress]:
    alive = set(alive)
    return {vip for vip in vips if expected(vip, alive) == node}


def holders(lan: Lan, ip: IPAddress, among: Iterable[str]) -> dict[str, Interfaces]:
    return {n: lan.announcers[n].held[ip] for n in among if ip in lan.announcers[n].held}


def assert_every_ip_has_its_one_announcer(lan: Lan, snapshot: Snapshot, alive: set[str]) -> None:
    results = elect(snapshot=snapshot, alive=alive)
    for ip, result in results.items():
        want = {} if result.announcer is None else {result.announcer: result.interfaces}
        assert holders(lan, ip, alive) == want, ip
    for name in alive:
        assert set(lan.announcers[name].held) <= set(results), name


def relabelled(snapshot: Snapshot, labels: Mapping[str, Mapping[str, str]], names: Iterable[str] = NODES) -> Snapshot:
    nodes = tuple(NodeInfo(n, tuple(labels.get(n, {}).items()), ADDRESSES[n]) for n in names)
    return replace(snapshot, nodes=nodes)


def advertised(snapshot: Snapshot, *ads: Advertisement) -> Snapshot:
    return replace(snapshot, advertisements=ads)


ZONED = {n: {"zone": z} for n, z in ZONES.items()}
IN_ZONE_A = Advertisement("l2", frozenset({"lab"}), (LabelSelector(match_labels=(("zone", "a"),)),))
ON_ETH1 = Advertisement("l2", frozenset({"lab"}), interfaces=("eth1",))


# ------------------------------------------------------------------ snapshot changes


SNAPSHOT_CHANGES: dict[str, tuple[Snapshot, Snapshot]] = {
    "a service is added": (make_snapshot(1, vips=VIPS[:-3]), make_snapshot(2)),
    "a service is removed": (make_snapshot(1), make_snapshot(2, vips=VIPS[:-3])),
    "Local endpoints move to another node": (
        make_snapshot(1, policy="Local", endpoint_nodes=["node1"]),
        make_snapshot(2, policy="Local", endpoint_nodes=["node2"]),
    ),
    "a Local service gains an endpoint node": (
        make_snapshot(1, policy="Local", endpoint_nodes=["node1"]),
        make_snapshot(2, policy="Local", endpoint_nodes=["node1", "node3"]),
    ),
    "a Cluster service loses its last ready endpoint": (make_snapshot(1), make_snapshot(2, endpoint_nodes=())),
    "a Cluster service gets its first ready endpoint": (make_snapshot(1, endpoint_nodes=()), make_snapshot(2)),
    "a node gains the exclude-from-external-load-balancers label": (
        make_snapshot(1),
        relabelled(make_snapshot(2), {"node2": {EXCLUDE_LABEL: ""}}),
    ),
    "an L2Advertisement gains a nodeSelector": (
        relabelled(make_snapshot(1), ZONED),
        advertised(relabelled(make_snapshot(2), ZONED), IN_ZONE_A),
    ),
    "a node's labels stop matching the nodeSelector": (
        advertised(relabelled(make_snapshot(1), ZONED), IN_ZONE_A),
        advertised(relabelled(make_snapshot(2), {**ZONED, "node3": {"zone": "b"}}), IN_ZONE_A),
    ),
    "the only L2Advertisement is deleted": (make_snapshot(1), advertised(make_snapshot(2))),
    "the L2Advertisement names an interface": (make_snapshot(1), advertised(make_snapshot(2), ON_ETH1)),
    "a node is dropped from the snapshot": (make_snapshot(1), make_snapshot(2, nodes=["node1", "node2"])),
}


@pytest.mark.parametrize(("before", "after"), SNAPSHOT_CHANGES.values(), ids=SNAPSHOT_CHANGES.keys())
def test_a_snapshot_change_moves_exactly_the_affected_ips_at_the_next_step(before: Snapshot, after: Snapshot) -> None:
    lan = Lan()
    lan.push(before)
    lan.run(SETTLE_S)
    assert_every_ip_has_its_one_announcer(lan, before, set(NODES))
    owned_before = {n: dict(lan.announcers[n].held) for n in NODES}
    calls_before = lan.calls()
    lan.push(after)
    lan.step()  # one loop iteration, same instant
    assert_every_ip_has_its_one_announcer(lan, after, set(NODES))
    for name in NODES:
        plan = diff(owned_before[name], owned_ips(node=name, snapshot=after, alive=frozenset(NODES)))
        made = lan.announcers[name].calls[calls_before[name] :]
        wanted = {("withdraw", str(ip)) for ip in plan.stop} | {("announce", str(ip)) for ip in plan.start}
        assert sorted(made) == sorted(wanted), name  # nothing else flaps, nothing is said twice


# ------------------------------------------------------------------ any history


service_st = st.tuples(
    st.sampled_from(["Cluster", "Local"]),
    st.frozensets(st.sampled_from(NODES)),  # nodes with a ready endpoint
    st.booleans(),  # has_ready_endpoint, for a Cluster service without endpoint nodes
)


def varied_snapshot(services: list[tuple[str, frozenset[str], bool]], excluded: str | None, zone: str | None) -> Snapshot:
    """Service i holds VIPS[i]; `excluded` carries the exclude label; `zone` narrows the
    L2Advertisement to the nodes of that zone."""
    selectors = () if zone is None else (LabelSelector(match_labels=(("zone", zone),)),)
    return Snapshot(
        services=tuple(
            ServiceState(f"default/svc{i}", (VIPS[i],), "lab", policy, endpoints, ready)
            for i, (policy, endpoints, ready) in enumerate(services)
        ),
        advertisements=(Advertisement("l2", frozenset({"lab"}), selectors),),
        nodes=tuple(
            NodeInfo(n, (("zone", ZONES[n]),) + (((EXCLUDE_LABEL, ""),) if n == excluded else ()), ADDRESSES[n])
            for n in NODES
        ),
    )


varied_snapshots = st.builds(
    varied_snapshot,
    st.lists(service_st, max_size=len(VIPS)),
    st.sampled_from([None, *NODES]),
    st.sampled_from([None, "a", "b"]),
)


class SpeakersUnderChurn(RuleBasedStateMachine):
    """Deaths, returns, goodbyes, partitions and snapshot changes in any order; after each
    has settled, every live speaker agrees and every IP has exactly its one announcer."""

    @initialize(snapshot=varied_snapshots)
    def start(self, snapshot: Snapshot) -> None:
        self.lan = Lan()
        self.lan.checks.append(self.each_speaker_acts_on_its_own_view)
        self.lan.push(replace(snapshot, version=1))
        self.lan.run(SETTLE_S)

    def each_speaker_acts_on_its_own_view(self) -> None:
        for name in self.lan.running():
            speaker = self.lan.speakers[name]
            own = owned_ips(node=name, snapshot=speaker.snapshot, alive=speaker.membership.alive())
            assert speaker.owned() == (own if speaker.status()["ready"] else {}), name

    @rule(node=st.sampled_from(NODES))
    def crash(self, node: str) -> None:
        self.lan.stopped.add(node)
        self.lan.run(SETTLE_S)

    @rule(node=st.sampled_from(NODES))
    def resume_a_frozen_process(self, node: str) -> None:
        self.lan.stopped.discard(node)
        self.lan.run(SETTLE_S)

    @rule(node=st.sampled_from(NODES))
    def restart(self, node: str) -> None:
        self.lan.restart(node)
        self.lan.run(SETTLE_S)

    @rule(node=st.sampled_from(NODES))
    def leave(self, node: str) -> None:
        if node not in self.lan.stopped:
            self.lan.speakers[node].leave(self.lan.now_s)
        self.lan.run(SETTLE_S)

    @rule(node=st.sampled_from(NODES))
    def ray_reports_dead(self, node: str) -> None:
        for name in self.lan.running():
            self.lan.speakers[name].on_ray_node_dead(node, now_s=self.lan.now_s)
        self.lan.run(SETTLE_S)

    @rule(node=st.sampled_from(NODES), way=st.sampled_from(["deaf", "mute", "both"]), for_s=st.sampled_from([0.1, 2.0]))
    def partition_then_heal(self, node: str, way: str, for_s: float) -> None:
        for peer in NODES:
            if peer != node:
                if way in ("deaf", "both"):
                    self.lan.block(peer, node)
                if way in ("mute", "both"):
                    self.lan.block(node, peer)
        self.lan.run(for_s)
        self.lan.heal()
        self.lan.run(SETTLE_S)

    @rule(snapshot=varied_snapshots)
    def change_snapshot(self, snapshot: Snapshot) -> None:
        self.lan.push(replace(snapshot, version=self.lan.snapshot.version + 1))
        self.lan.run(SETTLE_S)

    @invariant()
    def live_speakers_agree_and_every_ip_has_its_one_eligible_announcer(self) -> None:
        if not hasattr(self, "lan"):
            return
        alive = self.lan.running()
        for name in alive:
            speaker = self.lan.speakers[name]
            assert speaker.membership.alive() == alive, name
            assert speaker.snapshot.version == self.lan.snapshot.version
        assert_every_ip_has_its_one_announcer(self.lan, self.lan.snapshot, alive)
        for name, speaker in self.lan.speakers.items():
            if speaker.status()["left"]:
                assert self.lan.announcers[name].held == {}


SpeakersUnderChurn.TestCase.settings = settings(
    max_examples=50, stateful_step_count=10, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestAfterAnyHistoryEveryIpHasExactlyOneLiveEligibleAnnouncer = SpeakersUnderChurn.TestCase


# ------------------------------------------------------------------ start quiet


def test_a_speaker_joining_a_running_cluster_is_silent_until_ready_then_takes_only_its_share_without_a_gap() -> None:
    lan = Lan(["node1", "node2"])
    lan.push(make_snapshot())  # node3 listed, its speaker not started yet
    lan.run(SETTLE_S)
    assert_every_ip_has_its_one_announcer(lan, lan.snapshot, {"node1", "node2"})
    joiner = lan.add("node3")
    joiner.push(lan.snapshot)
    mine = share("node3", NODES)

    def never_more_than_its_share_and_never_a_gap() -> None:
        held = set(lan.announcers["node3"].held)
        if not joiner.status()["ready"]:
            assert held == set() and lan.transports["node3"].sent == []
        assert held <= mine
        for vip in VIPS:
            assert lan.owners(vip), f"{vip} unannounced while node3 joined"

    lan.checks.append(never_more_than_its_share_and_never_a_gap)
    lan.run(SETTLE_S)
    converged(lan)
    assert set(lan.announcers["node3"].held) == mine


def test_a_restarted_speaker_without_a_snapshot_announces_nothing_and_its_peers_keep_its_ips() -> None:
    lan = settled()
    victim = expected(VIPS[0], NODES)
    survivors = [n for n in NODES if n != victim]
    lan.stopped.add(victim)
    lan.run(SETTLE_S)
    lan.add(victim, incarnation=2)  # the operator has not pushed to the new process yet
    lan.run(SETTLE_S)
    assert lan.announcers[victim].held == {}
    assert lan.speakers[victim].status()["ready"] is True  # listened long enough, knows nothing
    for vip in VIPS:
        assert lan.owners(vip) == {expected(vip, survivors)}
    lan.speakers[victim].push(lan.snapshot)
    lan.run(HEAL_S)
    converged(lan)


def test_a_speaker_resuming_from_a_freeze_never_claims_its_peers_ips_even_with_its_backlog_lost() -> None:
    lan = settled()
    sleeper = expected(VIPS[0], NODES)
    mine = share(sleeper, NODES)
    lan.stopped.add(sleeper)
    lan.run(SETTLE_S)
    lan.network.inboxes[ADDRESSES[sleeper]].clear()  # the socket buffer overflowed meanwhile
    lan.checks.append(lambda: assert_subset(set(lan.announcers[sleeper].held), mine))
    lan.stopped.discard(sleeper)
    lan.run(SETTLE_S)
    converged(lan)
    assert lan.speakers[sleeper].status()["alive"] == list(NODES)


def assert_subset(held: set[IPAddress], allowed: set[IPAddress]) -> None:
    assert held <= allowed, sorted(map(str, held - allowed))


# ------------------------------------------------------------------ traffic policy


def test_a_local_service_whose_only_endpoint_node_dies_is_announced_by_nobody_until_an_endpoint_moves() -> None:
    lan = settled(make_snapshot(policy="Local", endpoint_nodes=["node3"]))
    lan.checks.append(lambda: assert_subset({v for n in ("node1", "node2") for v in lan.announcers[n].held}, set()))
    lan.stopped.add("node3")
    lan.run(SETTLE_S)
    assert all(lan.speakers[n].status()["alive"] == ["node1", "node2"] for n in ("node1", "node2"))
    lan.checks.clear()
    lan.push(make_snapshot(2, policy="Local", endpoint_nodes=["node2", "node3"]))
    lan.step()
    assert set(lan.announcers["node2"].held) == set(VIPS) and lan.announcers["node1"].held == {}


def test_a_cluster_service_without_a_ready_endpoint_stays_unannounced_through_a_death_and_a_restart() -> None:
    lan = Lan()
    lan.push(make_snapshot(endpoint_nodes=()))
    lan.checks.append(lambda: assert_subset({v for a in lan.announcers.values() for v in a.held}, set()))
    lan.run(SETTLE_S)
    lan.stopped.add("node2")
    lan.run(SETTLE_S)
    lan.restart("node2")
    lan.run(SETTLE_S)
    assert all(lan.speakers[n].status()["alive"] == list(NODES) for n in NODES)
    assert all(a.calls == [] for a in lan.announcers.values())


# ------------------------------------------------------------------ restarts and reordering


def test_a_late_goodbye_of_a_restarted_nodes_old_process_does_not_kill_the_new_one() -> None:
    lan = settled()
    node = expected(VIPS[0], NODES)
    peers = [n for n in NODES if n != node]
    for peer in peers:
        lan.block(node, peer)
    lan.speakers[node].leave(lan.now_s)  # the goodbye is delayed in the network
    goodbye = next(d for d, _ in lan.transports[node].sent if wire.decode(d, keys=(KEY,)).kind == wire.LEAVE)
    lan.heal()
    lan.restart(node)
    lan.run(SETTLE_S)
    converged(lan)
    calls = lan.calls()
    lan.deliver(goodbye, source=node, to=peers)
    lan.run(SETTLE_S)
    converged(lan)
    assert {n: c for n, c in lan.calls().items() if n in peers} == {n: calls[n] for n in peers}
    for peer in peers:
        assert lan.speakers[peer].status()["alive"] == list(NODES)
        assert lan.speakers[peer].membership.view(lan.now_s)[node].incarnation == 2


@pytest.mark.parametrize("sender", ["the same process before its goodbye", "the node's previous process"])
def test_a_heartbeat_delivered_after_a_goodbye_never_revives_the_node_that_left(sender: str) -> None:
    lan = settled()
    node = expected(VIPS[0], NODES)
    peers = [n for n in NODES if n != node]
    if sender == "the node's previous process":
        stale = lan.transports[node].sent[-1][0]
        lan.restart(node)
        lan.run(SETTLE_S)
        converged(lan)
    lan.run(HEARTBEAT_INTERVAL_S)
    if sender == "the same process before its goodbye":
        stale = lan.transports[node].sent[-1][0]
    assert wire.decode(stale, keys=(KEY,)).kind == wire.HEARTBEAT
    lan.speakers[node].leave(lan.now_s)
    lan.step()
    for vip in VIPS:
        assert lan.owners(vip) == {expected(vip, peers)}
    lan.deliver(stale, source=node, to=peers)
    lan.run(SETTLE_S)
    for vip in VIPS:
        assert lan.owners(vip) == {expected(vip, peers)}
    for peer in peers:
        assert node not in lan.speakers[peer].status()["alive"]


# ------------------------------------------------------------------ partitions


@pytest.mark.parametrize("way", ["mute", "deaf"])
def test_a_one_way_loss_double_announces_only_the_ips_the_deaf_side_thinks_orphaned_and_heals(way: str) -> None:
    lan = settled()
    victim = expected(VIPS[0], NODES)
    peers = [n for n in NODES if n != victim]
    for peer in peers:
        if way == "mute":  # nobody hears the victim; it hears everybody
            lan.block(victim, peer)
        else:  # the victim hears nobody; everybody hears it
            lan.block(peer, victim)
    lan.run(SETTLE_S)
    for vip in VIPS:
        owner = expected(vip, NODES)
        if way == "mute":
            want = {owner, expected(vip, peers)} if owner == victim else {owner}
        else:
            want = {owner, victim}
        assert lan.owners(vip) == want, vip
    lan.heal()
    lan.run(HEAL_S)
    converged(lan)
    assert all(lan.speakers[n].status()["alive"] == list(NODES) for n in NODES)


@pytest.mark.parametrize("fault", ["mute", "deaf", "frozen"])
def test_after_a_false_death_heals_every_vip_was_last_announced_by_its_owner(fault: str) -> None:
    lan = settled()
    victim = expected(VIPS[0], NODES)
    for peer in NODES:
        if peer != victim and fault == "mute":
            lan.block(victim, peer)
        if peer != victim and fault == "deaf":
            lan.block(peer, victim)
    if fault == "frozen":
        lan.stopped.add(victim)
    lan.run(SETTLE_S)
    lan.heal()
    lan.stopped.clear()
    lan.run(SETTLE_S)
    converged(lan)
    assert {vip: lan.heard[vip] for vip in VIPS} == {vip: expected(vip, NODES) for vip in VIPS}


# ------------------------------------------------------------------ leave


def test_leave_is_idempotent_and_a_speaker_that_left_never_announces_again() -> None:
    lan = settled()
    leaver = lan.speakers["node1"]
    leaver.leave(lan.now_s)
    sent, calls = len(lan.transports["node1"].sent), len(lan.announcers["node1"].calls)
    leaver.leave(lan.now_s)
    lan.push(make_snapshot(2, policy="Local", endpoint_nodes=["node1"]))  # only node1 may announce
    leaver.on_ray_node_dead("node2", now_s=lan.now_s)
    lan.run(SETTLE_S)
    assert len(lan.transports["node1"].sent) == sent
    assert len(lan.announcers["node1"].calls) == calls and lan.announcers["node1"].held == {}
    assert leaver.status()["counts"]["leaves_sent"] == 1
    assert all(lan.owners(vip) == set() for vip in VIPS)  # the only endpoint node is gone: nobody


# ------------------------------------------------------------------ hostile input


def forged_goodbye(node: str, *, key: bytes) -> bytes:
    leave = wire.Datagram(kind=wire.LEAVE, node=node, incarnation=1, seq=2**40, sent_ns=time.time_ns())
    return wire.encode(leave, key=key)


@pytest.mark.parametrize("forged", ["wrong key", "tag cut off"])
def test_a_forged_goodbye_moves_nothing_and_a_signed_one_hands_over(forged: str) -> None:
    lan = Lan()
    lan.push(make_snapshot())
    lan.run(SETTLE_S)
    converged(lan)
    victim = expected(VIPS[0], NODES)
    peers = [n for n in NODES if n != victim]
    data = forged_goodbye(victim, key=FORGER_KEY) if forged == "wrong key" else forged_goodbye(victim, key=KEY)[:-16]
    lan.deliver(data, source=victim, to=peers)
    lan.step()
    converged(lan)
    reason = "unauthenticated" if forged == "wrong key" else "malformed"
    assert all(lan.speakers[p].status()["drops"] == {reason: 1} for p in peers)
    lan.deliver(forged_goodbye(victim, key=KEY), source=victim, to=peers)  # the control
    lan.step()
    assert all(lan.speakers[p].status()["peers"][victim]["reason"] == "leave" for p in peers)


def encoded(kind: int, node: str, incarnation: int, seq: int, snapshot_version: int) -> bytes:
    subject = node if kind == wire.ALERT else None
    return wire.encode(wire.Datagram(kind, node, incarnation, seq, snapshot_version, subject=subject), key=FORGER_KEY)


datagrams = st.builds(
    encoded, st.sampled_from(wire.KINDS), st.sampled_from([*NODES, "ghost", "a" * 253]),
    st.integers(0, 3) | st.just(wire.U64_MAX), st.integers(0, 5) | st.just(wire.U64_MAX),
    st.integers(0, wire.U64_MAX),
)  # fmt: skip
arrivals = st.lists(st.lists(datagrams | st.binary(max_size=80), max_size=4), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrivals)
def test_whatever_arrives_a_speaker_never_raises_and_announces_what_its_own_view_elects(batches: list[list[bytes]]) -> None:
    lan = settled()
    speaker = lan.speakers["node1"]
    for batch in batches:
        for data in batch:
            lan.network.inboxes[ADDRESSES["node1"]].append((data, "198.18.0.99"))
        lan.now_s += LOOP_S
        lan.step()
        own = owned_ips(node="node1", snapshot=speaker.snapshot, alive=speaker.membership.alive())
        assert speaker.owned() == own == lan.announcers["node1"].held
