"""`raylb bench membership --nodes 1000 --json`: the membership protocol at scale, simulated.

Runs cluster/membership_sim.py (the real SpeakerCore, membership, election and wire code over
a simulated network) through: a cold start of every node at once; steady state (datagram
rates per node); crashes of random nodes, each restarted afterwards (detection time as seen
by every survivor, exactly one announcer per VIP once settled); 1 % loss plus one one-way
cut link (removals of live nodes); a partition of a tenth of the nodes and its healing
(time until every view is right again). Times are simulated seconds with the speaker's loop
slot (25 ms) as resolution.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import click

from raylb.actors.speaker.core import BROADCASTS_PER_S, MIN_BROADCAST_PERIOD_S
from raylb.cluster.lab.options import lab_name_option
from raylb.cluster.membership_sim import LOOP_S, Simulation
from raylb.observers import OBSERVERS

SETTLE_LIMIT_S = 10.0


def _until(sim: Simulation, predicate: Any, limit_s: float) -> float | None:
    """Run slot by slot until `predicate()`; simulated seconds taken, None if not within limit_s."""
    start = sim.now_s
    while sim.now_s - start < limit_s:
        if predicate():
            return round(sim.now_s - start, 3)
        sim.run(LOOP_S)
    return None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def run(*, nodes: int, crashes: int, loss_s: float, seed: int, observers: int | None, steady_s: float = 2.0) -> dict[str, Any]:
    wall = time.perf_counter()
    sim = Simulation(nodes=nodes, observers=observers, seed=seed)
    startup_s = _until(sim, lambda: sim.alive_everywhere() and sim.exactly_one_announcer(), SETTLE_LIMIT_S)

    sim.run(1.0)  # the joins' answers are over
    sent, received = sim.network.sent.copy(), sim.network.received.copy()
    sim.run(steady_s)
    rates = sim.rates_per_node_s(sent, received, steady_s)

    detections: list[float] = []
    one_announcer_after_crash = True
    victims = random.Random(seed)
    for _ in range(crashes):
        victim = victims.choice(sim.running())
        killed_s = sim.now_s
        sim.kill(victim)
        _until(sim, sim.alive_everywhere, SETTLE_LIMIT_S)
        sim.run(0.2)
        one_announcer_after_crash &= sim.exactly_one_announcer()
        detections += [t - killed_s for t, _, dead in sim.deaths if dead == victim and t >= killed_s]
        sim.start(victim)
        _until(sim, lambda: sim.alive_everywhere() and sim.exactly_one_announcer(), SETTLE_LIMIT_S)

    lossy_from = sim.now_s
    sim.network.config.loss = 0.01
    a = sim.names[0]
    observer = sorted(sim.speakers[a].membership.targets())[0]
    sim.block(a, observer)  # one observer of `a` stops hearing it: a false accusation
    sim.run(loss_s)
    false_removals = sim.false_removals(since_s=lossy_from)
    sim.network.config.loss = 0.0
    sim.heal()
    _until(sim, sim.alive_everywhere, SETTLE_LIMIT_S)

    minority = sim.names[: max(1, nodes // 10)]
    majority = sim.names[len(minority) :]
    sim.partition(minority, majority)
    sim.run(1.0)
    sim.heal()
    healed_s = _until(sim, lambda: sim.alive_everywhere() and sim.exactly_one_announcer(), SETTLE_LIMIT_S)

    return {
        "nodes": nodes,
        "observers": observers,
        "seed": seed,
        "startup_converged_s": startup_s,
        "datagrams_per_node_per_s": {k: round(v, 1) for k, v in rates.items()},
        "steady_window_s": steady_s,
        # K-observer mode tells everyone it is alive once per period (actors/speaker/core.py); a
        # window shorter than 1-2 periods after the start may hold none of these broadcasts.
        "anti_entropy_period_s": None if observers is None else max(MIN_BROADCAST_PERIOD_S, (nodes - 1) / BROADCASTS_PER_S),
        "crash_detection_s": {"p50": _quantile(detections, 0.5), "p99": _quantile(detections, 0.99),
                              "max": _quantile(detections, 1.0), "samples": len(detections), "crashes": crashes},
        "exactly_one_announcer_after_crash": one_announcer_after_crash,
        "loss_1pct": {"seconds": loss_s, "false_removals": false_removals,
                      "false_removals_per_hour": round(false_removals * 3600 / loss_s, 1),
                      "one_way_cut_link": f"{a} -> {observer}"},
        "partition_of_10pct_heals_in_s": healed_s,
        "exactly_one_announcer_after_heal": sim.exactly_one_announcer(),
        "wall_s": round(time.perf_counter() - wall, 1),
    }  # fmt: skip


@click.command(name="membership")
@click.option("--nodes", default=1000, show_default=True, help="Speakers simulated (with --real: endpoints, at most 64).")
@click.option("--crashes", default=3, show_default=True, help="Random nodes killed (and restarted), one at a time.")
@click.option("--loss-s", default=5.0, show_default=True, help="Simulated seconds at 1 % loss with a one-way cut link.")
@click.option("--steady-s", default=2.0, show_default=True, help="Simulated seconds over which datagram rates are measured.")
@click.option("--seed", default=1, show_default=True)
@click.option("--all-to-all", is_flag=True, help="Every speaker watches every other (the protocol before K observers).")
@click.option("--real", is_flag=True, help="Real UDP: bare endpoints as processes in a lab of their own (root).")
@click.option("--namespaces", default=10, show_default=True, help="With --real: node namespaces the endpoints share.")
@click.option("--idle-s", default=20.0, show_default=True, help="With --real: seconds of steady state measured.")
@click.option("--soak-s", default=60.0, show_default=True, help="With --real: seconds per loss level counting false removals.")
@click.option("--kills", default=3, show_default=True, help="With --real: endpoints killed per loss level.")
@lab_name_option("mb")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
def command(
    nodes: int, crashes: int, loss_s: float, steady_s: float, seed: int, all_to_all: bool, real: bool,
    namespaces: int, idle_s: float, soak_s: float, kills: int, name: str, as_json: bool,
) -> None:  # fmt: skip
    """Detection time, datagram rates, false removals and partition healing of the membership
    protocol, simulated for --nodes speakers in this process; with --real, measured over real
    UDP with --nodes endpoint processes in the lab (datagrams/s, CPU, detection at 0/1/5 % loss)."""
    if real:
        from raylb.cluster.lab import membership_real  # noqa: PLC0415 - the lab needs root; the simulation does not

        if not 3 <= nodes <= membership_real.MEMBERSHIP_ENDPOINTS_V4.num_addresses or namespaces < 1 or kills < 0:
            raise click.BadParameter("with --real: --nodes 3..64, --namespaces at least 1, --kills at least 0")
        log = (lambda _line: None) if as_json else click.echo
        try:
            result = membership_real.run(name=name, endpoints=nodes, namespaces=min(namespaces, nodes),
                                         idle_s=idle_s, soak_s=soak_s, kills=kills, log=log)  # fmt: skip
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(json.dumps(result, indent=None if as_json else 2))
        return
    if nodes < 3 or crashes < 0 or loss_s <= 0 or steady_s <= 0:
        raise click.BadParameter("--nodes must be at least 3, --crashes at least 0, --loss-s and --steady-s above 0")
    result = run(nodes=nodes, crashes=crashes, loss_s=loss_s, seed=seed, steady_s=steady_s,
                 observers=None if all_to_all else OBSERVERS)  # fmt: skip
    click.echo(json.dumps(result, indent=None if as_json else 2))
