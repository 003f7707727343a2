"""The K-observer membership at scale, on the deterministic simulation (cluster/membership_sim.py):
real SpeakerCores over a simulated network. Sizes here run in seconds; `raylb bench
membership --nodes 1000` takes the big ones. No timing figures are asserted, only what the
protocol must guarantee: who ends up alive, who announces, and per-node cost independent of n."""

from __future__ import annotations

from collections import Counter

import pytest

from raylb.actors.speaker.core import BROADCASTS_PER_S
from raylb import wire
from raylb.cluster.membership_sim import KEY, NetConfig, Simulation
from raylb.observers import OBSERVERS, QUORUM, Topology

SETTLE_S = 1.5
NODES = 40


def settled(nodes: int = NODES, **kwargs: object) -> Simulation:
    sim = Simulation(nodes=nodes, **kwargs)  # type: ignore[arg-type]
    sim.run(SETTLE_S)
    assert sim.alive_everywhere() and sim.exactly_one_announcer()
    return sim


def observers_of(sim: Simulation, node: str) -> list[str]:
    topology = Topology(sim.names, k=OBSERVERS)
    return sorted(topology.observers(node, frozenset(sim.running())))


def test_per_node_traffic_does_not_grow_with_the_cluster() -> None:
    rates = {}
    for nodes in (20, 300):  # from 250 nodes on the broadcast period grows with n
        sim = settled(nodes)
        sent, received = sim.network.sent.copy(), sim.network.received.copy()
        sim.run(1.0)
        rates[nodes] = sim.rates_per_node_s(sent, received, 1.0)
    for r in rates.values():  # 20 heartbeats a second to each of K observers (a 1 s window: +/- 1),
        assert r["sent_mean"] <= 21 * OBSERVERS + BROADCASTS_PER_S  # plus the anti-entropy broadcasts


def test_all_to_all_traffic_grows_with_the_cluster() -> None:
    """The control: the protocol before K observers, which the simulation must show as O(n)."""
    sim = settled(20, observers=None)
    sent, received = sim.network.sent.copy(), sim.network.received.copy()
    sim.run(1.0)
    assert sim.rates_per_node_s(sent, received, 1.0)["sent_mean"] >= 19 * 20 - 2


def test_a_crash_is_seen_by_every_survivor_and_its_vips_get_exactly_one_new_announcer() -> None:
    sim = settled()
    victim = next(n for n in sim.names if any(sim.announcers[n].held for _ in [0]))
    sim.kill(victim)
    sim.run(SETTLE_S)
    assert sim.alive_everywhere() and sim.exactly_one_announcer()
    assert {o for _, o, dead in sim.deaths if dead == victim} == set(sim.running())
    assert sim.false_removals() == 0


def test_one_observers_false_accusation_moves_nothing() -> None:
    sim = settled()
    accused = sim.names[0]
    observer = observers_of(sim, accused)[0]
    sim.block(accused, observer)  # the observer stops hearing it: it accuses, alone
    held = {n: set(a.held) for n, a in sim.announcers.items()}
    sim.run(2.0)
    assert sim.speakers[observer].status()["counts"].get("alerts_sent", 0) >= 1
    assert sim.false_removals() == 0 and sim.alive_everywhere()
    assert {n: set(a.held) for n, a in sim.announcers.items()} == held


def test_a_node_cut_off_from_quorum_observers_refutes_where_it_is_heard() -> None:
    """QUORUM observers accuse it, so it is removed; it hears the alerts and tells everyone
    it is alive: only the observers that cannot hear it keep it dead (like a one-way link in
    the all-to-all protocol: for as long as the cut lasts, they may announce its VIPs too)."""
    sim = settled()
    accused = sim.names[0]
    blind = observers_of(sim, accused)[:QUORUM]
    for observer in blind:
        sim.block(accused, observer)
    sim.run(1.0)
    assert any(dead == accused for _, _, dead in sim.deaths)  # it was removed
    for name in sim.running():
        assert (accused in sim.speakers[name].membership.alive()) == (name not in blind), name
    sim.heal()
    sim.run(1.0)
    assert sim.alive_everywhere() and sim.exactly_one_announcer()


def test_a_crash_together_with_most_of_its_observers_is_still_detected() -> None:
    sim = settled()
    victim = sim.names[0]
    for observer in observers_of(sim, victim)[:-1]:  # only one of its observers survives
        sim.kill(observer)
    sim.kill(victim)
    sim.run(3.0)
    assert sim.alive_everywhere() and sim.exactly_one_announcer()


def test_a_partition_heals_into_one_view_and_one_announcer_per_vip() -> None:
    sim = settled()
    minority = sim.names[:4]
    sim.partition(minority, sim.names[4:])
    sim.run(1.0)
    majority_view = sim.speakers[sim.names[10]].membership.alive()
    assert not set(minority) & majority_view  # the majority removed the minority
    sim.heal()
    sim.run(1.0)
    assert sim.alive_everywhere() and sim.exactly_one_announcer()


def test_a_restarted_node_is_back_everywhere_and_a_graceful_leave_is_seen_at_once() -> None:
    sim = settled()
    node = sim.names[5]
    sim.kill(node)
    sim.run(1.0)
    sim.start(node)
    sim.run(1.0)
    assert sim.alive_everywhere() and sim.exactly_one_announcer()
    leaver = sim.names[6]
    sim.speakers[leaver].leave(sim.now_s)
    sim.kill(leaver)
    sim.run(0.1)  # far below the silence it would take to time out
    assert sim.alive_everywhere()
    assert sim.speakers[sim.names[0]].membership.view(sim.now_s)[leaver].reason == "leave"


@pytest.mark.parametrize("loss", [0.01, 0.05])
def test_random_loss_removes_nobody_and_lost_joins_are_made_good(loss: float) -> None:
    sim = Simulation(nodes=NODES, net=NetConfig(loss=loss))
    # A join lost at the start is repeated every broadcast period (5 s here, the first 5 to 10 s
    # in). One pair of the 1 560 losing the join and the next broadcast is likely (about 4 pairs
    # at 5 % loss), so 12 s is not enough; by 20 s every pair has had at least two more tries.
    sim.run(20.0)
    assert sim.false_removals() == 0
    assert sim.alive_everywhere() and sim.exactly_one_announcer()


def test_the_same_seed_gives_the_same_run() -> None:
    runs = []
    for _ in range(2):
        sim = Simulation(nodes=20, net=NetConfig(loss=0.05), seed=7)
        sim.run(1.0)
        sim.kill(sim.names[3])
        sim.run(1.0)
        runs.append((sim.deaths, dict(sim.network.sent)))
    assert runs[0] == runs[1]


def test_what_the_network_loses_does_not_depend_on_the_order_of_sending() -> None:
    """Speakers iterate sets whose order is salted per process: loss must follow the link, not the order."""
    from raylb.cluster.membership_sim import SimNetwork  # noqa: PLC0415

    links = [(f"a{i}", f"b{j}") for i in range(5) for j in range(5)] * 8
    delivered = []
    for order in (links, links[::-1]):
        network = SimNetwork(config=NetConfig(loss=0.3), seed=3)
        for source, destination in order:
            network.inboxes.setdefault(destination, [])
            network.send(source, destination, b"x")
        network.deliver_until(1.0)
        delivered.append(Counter((source, d) for d, inbox in network.inboxes.items() for _, source in inbox))
    assert delivered[0] == delivered[1]
    assert 0 < sum(delivered[0].values()) < len(links)


def test_alerts_from_nodes_that_do_not_watch_the_subject_are_refused() -> None:
    """Even a key holder that is not one of X's observers cannot get X removed by accusing it."""
    from raylb import wire  # noqa: PLC0415
    from raylb.cluster.membership_sim import KEY, WALL_BASE_NS  # noqa: PLC0415

    sim = settled()
    accused = sim.names[0]
    liars = [n for n in sim.names if n != accused and n not in observers_of(sim, accused)][:3]
    for liar in liars:
        # made by the liar's own membership: a valid sequence number, the subject's incarnation
        alert = sim.speakers[liar].membership.make_alert(accused, sent_ns=WALL_BASE_NS + int(sim.now_s * 1e9))
        for target in sim.running():
            if target != liar:
                sim.network.inboxes[sim.addresses[target]].append((wire.encode(alert, key=KEY), sim.addresses[liar]))
    sim.run(0.5)
    assert sim.false_removals() == 0 and sim.alive_everywhere()
    assert sim.speakers[sim.names[10]].status()["drops"].get("stale", 0) == len(liars)


def test_a_node_that_misses_the_first_alerts_still_removes_the_dead_node() -> None:
    """Alerts are not acknowledged, and a node watches only its own subjects: a node that lost
    the accusations of a dead node would keep it alive for ever (and never take over its VIPs).
    Here every accuser's first alert to one node is lost."""
    sim = settled()
    victim, deaf = sim.names[3], sim.names[17]
    deaf_address = sim.addresses[deaf]
    first_lost: set[str] = set()
    send = sim.network.send

    def lossy(source: str, destination: str, data: bytes) -> None:
        if destination == deaf_address:
            datagram = wire.decode(data, keys=[KEY])
            if datagram.kind == wire.ALERT and datagram.node not in first_lost:
                first_lost.add(datagram.node)
                sim.network.sent[source] += 1
                return
        send(source, destination, data)

    sim.network.send = lossy  # type: ignore[method-assign]
    sim.kill(victim)
    sim.run(SETTLE_S)
    assert len(first_lost) >= QUORUM, "the accusers' first alerts to the deaf node were lost"
    assert victim not in sim.speakers[deaf].membership.alive()
    assert sim.alive_everywhere() and sim.exactly_one_announcer()


def test_the_membership_benchmark_runs_at_a_small_size() -> None:
    """`raylb bench membership` itself (the big sizes are the benchmark's), so it cannot rot."""
    from raylb.cluster.membership_bench import run

    out = run(nodes=20, crashes=2, loss_s=1.0, seed=3, observers=OBSERVERS, steady_s=0.5)
    assert out["crash_detection_s"]["samples"] == 2 * 19  # every survivor, each crash
    assert out["exactly_one_announcer_after_crash"] and out["exactly_one_announcer_after_heal"]
    assert out["loss_1pct"]["false_removals"] == 0
    assert out["datagrams_per_node_per_s"]["sent_max"] <= 21 * OBSERVERS
