"""`raylb lab failover`: client-observed failover time, measured in a lab of its own.

Builds a lab (control + 3 nodes + client, real Ray), starts raylb on the in-memory store with
12 LoadBalancer Services (6 IPv4, 6 IPv6, endpoints on every node) so every node announces
some VIPs of each family. Each trial picks a node, probes one IPv4 and one IPv6 VIP it
announces from the client every 10 ms (a new TCP connection per request), fails the node -
SIGKILL of every process in its namespace (`--mode kill`) or its link set down (`--mode
link`) - and records the outage: last answer before the failure to first answer from another
node. The node is then brought back and the system allowed to settle before the next trial.
Graceful trials make the announcing speaker leave on purpose (what a drain or a node leaving
the selector does) and measure the handover the same way.

Prints one JSON object: per family p50_s, p99_s (nearest rank), max_s and every sample.

With `--vips N` it measures a mass failover instead (cluster/lab/failover_many.py): N VIPs
owned by one node out of `--total-vips`, the node killed, the client's time to reach each.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from raylb.cluster.lab.failover_probe import Outage, ProbeRun, Sample, takeover
from raylb.cluster.lab import system
from raylb.cluster.lab.failover_plot import Timeline, plot_png
from raylb.cluster.lab.lab import Lab, LabError
from raylb.cluster.lab.options import lab_name_option
from raylb.errors import RaylbError

SERVICES_PER_FAMILY = 6
PROBE_INTERVAL_MS = 10.0
TAKEOVER_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 120.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(values: list[float]) -> dict[str, Any]:
    rounded = [round(v, 4) for v in values]
    return {
        "n": len(values),
        "p50_s": percentile(rounded, 50),
        "p99_s": percentile(rounded, 99),
        "max_s": max(rounded) if rounded else None,
        "samples_s": rounded,
    }


def bench_manifest(path: Path) -> Path:
    """Pools, an advertisement and 2 x SERVICES_PER_FAMILY Services with endpoints on every node."""
    docs = [
        "apiVersion: metallb.io/v1beta1\nkind: MetalLB\nmetadata: {name: metallb, namespace: metallb-system}\nspec: {}",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: bench-v4, namespace: metallb-system}\n"
        "spec: {addresses: [198.18.0.224/28]}",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: bench-v6, namespace: metallb-system}\n"
        "spec: {addresses: ['2001:db8:18::1:100/124']}",
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: bench, namespace: metallb-system}\nspec: {}",
    ]
    for node in ("node1", "node2", "node3"):
        docs.append(f"apiVersion: v1\nkind: Node\nmetadata: {{name: {node}, labels: {{kubernetes.io/hostname: {node}}}}}")
    for family, pool in (("IPv4", "bench-v4"), ("IPv6", "bench-v6")):
        for i in range(SERVICES_PER_FAMILY):
            name = f"bench-{family.lower()}-{i}"
            docs.append(
                f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, "
                f"annotations: {{metallb.io/address-pool: {pool}}}}}\n"
                f"spec: {{type: LoadBalancer, ipFamilies: [{family}], ipFamilyPolicy: SingleStack, "
                f"selector: {{app: {name}}}, ports: [{{port: 80, protocol: TCP}}]}}"
            )
            endpoints = ", ".join(
                f"{{addresses: [10.244.{n}.{i + 10}], conditions: {{ready: true}}, nodeName: node{n}}}" for n in (1, 2, 3)
            )
            docs.append(
                f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-lab, namespace: default, "
                f"labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{endpoints}]"
            )
    path.write_text("\n---\n".join(docs) + "\n")
    return path


def keys() -> list[str]:
    return [f"default/bench-{f}-{i}" for f in ("ipv4", "ipv6") for i in range(SERVICES_PER_FAMILY)]


def vips_of(lab: Lab, node: str) -> dict[str, str]:
    """One VIP per family that `node` announces now."""
    out: dict[str, str] = {}
    for key, svc in sorted(system.services(lab).items()):
        if svc["node"] == node and key.startswith("default/bench-"):
            family = "ipv6" if "ipv6" in key else "ipv4"
            out.setdefault(family, svc["ips"][0])
    return out


@dataclass
class Results:
    outages: dict[str, list[float]] = field(default_factory=lambda: {"ipv4": [], "ipv6": []})
    failed_requests: list[int] = field(default_factory=list)
    graceful: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    timelines: list[Timeline] = field(default_factory=list)  # with --plot


def measure(lab: Lab, vips: dict[str, str], fail: Any) -> tuple[float, dict[str, tuple[Outage | None, tuple[Sample, ...]]]]:
    """Probe each VIP, call `fail()`; returns when it was called and per family the outage
    (None: no takeover within TAKEOVER_TIMEOUT_S) with every sample the client took."""
    spawn = functools.partial(lab.popen, lab.client)
    duration_s = TAKEOVER_TIMEOUT_S + 10
    runs = {f: ProbeRun(spawn, vip=v, duration_s=duration_s, interval_ms=PROBE_INTERVAL_MS) for f, v in vips.items()}
    try:
        for run in runs.values():
            run.wait_for(lambda s: any(x.ok for x in s), timeout_s=10, what="first answer")
        event_s = time.monotonic()
        fail()
        out: dict[str, tuple[Outage | None, tuple[Sample, ...]]] = {}
        for family, run in runs.items():
            try:
                run.wait_for(lambda s: takeover(s, event_s=event_s), timeout_s=TAKEOVER_TIMEOUT_S, what="takeover")
            except TimeoutError:
                out[family] = (None, tuple(run.stop()))
                continue
            samples = tuple(run.stop())
            out[family] = (takeover(samples, event_s=event_s), samples)
        return event_s, out
    finally:
        for run in runs.values():
            run.stop()


def detected_at(lab: Lab, *, node: str, peer: str, after_s: float) -> float | None:
    """When `node`'s speaker declared `peer` dead (CLOCK_MONOTONIC), if it did after `after_s`."""
    return detection(lambda code: system.python(lab, code), node=node, peer=peer, after_s=after_s)


def detection(run_python: Callable[[str], str], *, node: str, peer: str, after_s: float) -> float | None:
    """`detected_at` with a Ray driver snippet run by `run_python` (here, or in the head pod)."""
    code = (f"import json; s = ray.get(ray.get_actor('raylb-speaker-{node}').status.remote(), timeout=10); "
            f"print(json.dumps(s.get('peer_deaths', {{}}).get({peer!r})))")  # fmt: skip
    try:
        death = json.loads(run_python(code).strip().splitlines()[-1])
    except Exception:  # noqa: BLE001 - the picture then shows no detection mark for this trial
        return None
    at = None if death is None else death.get("detected_at_s")
    return at if at is not None and at >= after_s else None


def settle(lab: Lab) -> None:
    nodes = {n.name for n in lab.nodes}
    system.wait_for(lambda: system.speakers_alive(lab) == nodes, timeout_s=SETTLE_TIMEOUT_S, what="all speakers alive")
    system.wait_announced(lab, keys(), timeout_s=SETTLE_TIMEOUT_S)
    # Every node announces again what the hash gives it (the returning node took its VIPs back).
    system.wait_for(
        lambda: all(vips_of(lab, n) for n in nodes), timeout_s=SETTLE_TIMEOUT_S, what="every node announcing"
    )


def record(
    results: Results, lab: Lab, *, trial: int, mode: str, victim: str, vips: dict[str, str],
    event_s: float, measured: dict[str, tuple[Outage | None, tuple[Sample, ...]]], plot: bool,
) -> str:  # fmt: skip
    """Book one trial's outages (and its timelines when plotting); the log line's tail."""
    told = []
    for family, (outage, samples) in measured.items():
        if outage is None:
            if mode != "graceful":
                results.missed.append(f"trial {trial - 1} {family} {vips[family]}")
            told.append(f"{family} no takeover")
        else:
            if mode == "graceful":
                results.graceful.append(outage.duration_s)
            else:
                results.outages[family].append(outage.duration_s)
                results.failed_requests.append(outage.failed)
            told.append(f"{family} {outage.duration_s:.3f} s")
        if plot:  # detection is asked for once the lab has settled (see `add_detection`)
            results.timelines.append(Timeline(
                trial=trial, family=family, mode=mode, victim=victim, vip=vips[family], event_s=event_s,
                samples=samples, outage=outage,
            ))  # fmt: skip
    return ", ".join(told)


def add_detection(results: Results, *, trial: int, detected: Callable[[str, str, float], float | None]) -> None:
    """When the node that took over declared the victim dead, for the trial's timelines:
    `detected(node, victim, after_s)` (`detected_at`, or its in-cluster variant). Asked after
    the trial (a Ray driver costs the GCS a little, and a raylet restarting on a busy machine
    needs all of it); speakers keep the last death of each peer in their status."""
    for i, t in enumerate(results.timelines):
        if t.trial == trial and t.outage is not None and t.outage.after:
            results.timelines[i] = replace(t, detected_s=detected(t.outage.after, t.victim, t.event_s))


def run_trials(lab: Lab, *, trials: int, mode: str, graceful_trials: int, log: Any, plot: bool = False) -> Results:
    results = Results()
    names = [n.name for n in lab.nodes]
    for i in range(trials):
        victim = names[i % len(names)]
        vips = vips_of(lab, victim)
        fail = (lambda: lab.kill_host(victim)) if mode == "kill" else (lambda: lab.link_down(victim))
        event_s, measured = measure(lab, vips, fail)
        told = record(results, lab, trial=i + 1, mode=mode, victim=victim, vips=vips, event_s=event_s,
                       measured=measured, plot=plot)  # fmt: skip
        log(f"trial {i + 1}/{trials}: {mode} {victim}: {told}")
        if mode == "kill":
            lab.restart_node(victim)
        else:
            lab.link_up(victim)
        settle(lab)
        if plot:
            add_detection(results, trial=i + 1, detected=lambda n, v, t: detected_at(lab, node=n, peer=v, after_s=t))
    for i in range(graceful_trials):
        victim = names[i % len(names)]
        vips = vips_of(lab, victim)
        name = f"raylb-speaker-{victim}"
        event_s, measured = measure(lab, vips, lambda: system.python(lab, f"ray.get(ray.get_actor({name!r}).leave.remote())"))
        told = record(results, lab, trial=trials + i + 1, mode="graceful", victim=victim, vips=vips,
                       event_s=event_s, measured=measured, plot=plot)  # fmt: skip
        log(f"graceful {i + 1}/{graceful_trials}: {victim} left: {told}")
        if plot:  # before the fresh speaker there joins and the takeover is undone
            add_detection(results, trial=trials + i + 1,
                          detected=lambda n, v, t: detected_at(lab, node=n, peer=v, after_s=t))  # fmt: skip
        system.kill_actor(lab, name, restart=False)  # the operator starts a fresh speaker there
        settle(lab)
    return results


def outcome(results: Results, *, mode: str, trials: int, started: float) -> dict[str, Any]:
    """The benchmark's JSON fields (also `--kubernetes`'s)."""
    return {
        "mode": mode,
        "trials": trials,
        "probe_interval_ms": PROBE_INTERVAL_MS,
        "ipv4": summarize(results.outages["ipv4"]),
        "ipv6": summarize(results.outages["ipv6"]),
        "failed_requests_p50": percentile([float(x) for x in results.failed_requests], 50),
        "graceful_p50_s": percentile([round(v, 4) for v in results.graceful], 50),
        "graceful_max_s": round(max(results.graceful), 4) if results.graceful else None,
        "graceful_samples_s": [round(v, 4) for v in results.graceful],
        "no_takeover": results.missed,
        "wall_s": round(time.monotonic() - started, 1),
    }


@click.command("failover")
@click.option("--trials", default=20, show_default=True, type=click.IntRange(1, 200))
@click.option("--mode", type=click.Choice(["kill", "link"]), default="kill", show_default=True)
@click.option("--graceful-trials", default=6, show_default=True, type=click.IntRange(0, 100))
@lab_name_option("fo")
@click.option("--vips", default=0, type=click.IntRange(0, 30_000),
              help="mass failover: this many VIPs on the killed node (kill mode, IPv6, NDP client check)")
@click.option("--total-vips", default=10_000, show_default=True, type=click.IntRange(1, 30_000),
              help="with --vips: VIPs in the whole cluster")
@click.option("--kubernetes", is_flag=True,
              help="raylb in-cluster on the lab's kubelets (KubeRay), the client served through kube-proxy")
@click.option("--json", "as_json", is_flag=True, help="print only the JSON result")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also draw each trial's client timeline and the outage distribution into this PNG")
def command(
    trials: int, mode: str, graceful_trials: int, vips: int, total_vips: int, name: str, kubernetes: bool,
    as_json: bool, plot_path: Path | None,
) -> None:  # fmt: skip
    """Measure client-observed failover in a lab of its own (needs root); removed afterwards."""
    log = (lambda _msg: None) if as_json else click.echo
    if kubernetes:
        if vips or mode != "kill":
            raise click.UsageError("--kubernetes measures kill and graceful trials only (no --vips, --mode link)")
        from raylb.cluster.lab import failover_kube  # noqa: PLC0415

        try:
            out, timelines = failover_kube.run(name=name, trials=trials, graceful_trials=graceful_trials, log=log,
                                               plot=plot_path is not None)  # fmt: skip
        except (LabError, RaylbError, TimeoutError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from exc
        if plot_path is not None:
            title = f"raylb lab failover --kubernetes: {trials} kill trial(s), {graceful_trials} graceful"
            out["plot"] = str(plot_png(timelines, plot_path, title=title))
            log(f"the failover picture: {out['plot']}")
        click.echo(json.dumps(out, sort_keys=True))
        return
    if vips:
        if vips > total_vips:
            raise click.BadParameter(f"{vips} is more than --total-vips {total_vips}", param_hint="--vips")
        from raylb.cluster.lab import failover_many  # noqa: PLC0415

        try:
            out = failover_many.run(name=name, vips=vips, total=total_vips, trials=trials, log=log)
        except (LabError, RaylbError, TimeoutError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(json.dumps(out, sort_keys=True))
        return
    started = time.monotonic()
    try:  # a lab of that name that already runs is someone's: refused, and left alone
        lab = Lab.up(name=name, nodes=3, ray=True)
    except (LabError, RaylbError, TimeoutError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    with lab:  # removed afterwards, also after a failure
        manifest = bench_manifest(Path(f"/tmp/rlb-{name}-failover.yaml"))
        system.start(lab, manifests=[manifest])
        settle(lab)
        results = run_trials(lab, trials=trials, mode=mode, graceful_trials=graceful_trials, log=log,
                             plot=plot_path is not None)  # fmt: skip
    out = outcome(results, mode=mode, trials=trials, started=started)
    if plot_path is not None:
        title = f"raylb lab failover: {trials} {mode} trial(s), {graceful_trials} graceful"
        out["plot"] = str(plot_png(results.timelines, plot_path, title=title))
        log(f"the failover picture: {out['plot']}")
    click.echo(json.dumps(out, sort_keys=True))
