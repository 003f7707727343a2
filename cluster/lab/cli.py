"""`raylb lab up|down|status`: the lab from the command line.

`up` leaves the lab running after the command exits (its processes live in the namespaces);
`down` needs nothing but the lab's name, so it also cleans up after a crashed run.
With Kubernetes (the default) `up` prints where the API server answers and the paths of the
admin and operator kubeconfigs; `status` shows whether it still answers.
"""

from __future__ import annotations

import json
import time

import click

from raylb.cluster.localkube.provision import ensure_binaries
from raylb.cluster.lab import kube as lab_kube
from raylb.cluster.lab import lab as lab_module
from raylb.cluster.lab import netns as ns
from raylb.cluster.lab.lab import Lab, LabError
from raylb.cluster.lab.options import lab_name_option
from raylb.cluster.lab.prometheus import PORT as PROMETHEUS_PORT
from raylb.cluster.lab.ray_nodes import RayOptions
from raylb.cluster.lab.topology import DEFAULT_LAB_NAME, MAX_NODES, SEED_POOLS, parse_netns_name
from raylb.errors import RaylbError

NAME_OPTION = lab_name_option(DEFAULT_LAB_NAME)


@click.group(name="lab")
def group() -> None:
    """Build and remove the network-namespace lab (needs root)."""


@group.command()
@NAME_OPTION
@click.option("--nodes", type=click.IntRange(1, MAX_NODES), default=3, show_default=True)
@click.option("--ray/--no-ray", default=True, show_default=True, help="start a Ray cluster")
@click.option("--http/--no-http", default=True, show_default=True, help="HTTP server per node")
@click.option(
    "--kube/--no-kube", default=True, show_default=True,
    help="etcd + kube-apiserver in the control namespace, CRDs and RBAC installed",
)  # fmt: skip
@click.option(
    "--kubernetes", is_flag=True,
    help="a real cluster: kubelet, containerd and kube-proxy on every node; controllers and "
    "CoreDNS on the control host (implies --kube, replaces --http)",
)
@click.option(
    "--prometheus/--no-prometheus", default=True, show_default=True,
    help="a real Prometheus on the control address scraping every raylb /metrics endpoint",
)  # fmt: skip
@click.option(
    "--ray-system-config", default="{}", metavar="JSON",
    help="Ray system config for the head, e.g. '{\"health_check_period_ms\": 500}'",
)  # fmt: skip
def up(
    name: str, nodes: int, ray: bool, http: bool, kube: bool, kubernetes: bool, prometheus: bool,
    ray_system_config: str,
) -> None:  # fmt: skip
    """Build a lab: bridge, control, NODES nodes and a client."""
    start_s = time.monotonic()
    try:
        system_config = json.loads(ray_system_config)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--ray-system-config") from exc
    options = RayOptions(system_config=system_config)
    if kube or kubernetes:  # a first build takes minutes: show its progress before the lab starts
        ensure_binaries(lambda line: click.echo(f"[provision] {line}"))
    try:
        lab = Lab.up(
            name=name, nodes=nodes, ray=ray, http=http, ray_options=options, kube=kube,
            kubelets=kubernetes,
        )  # fmt: skip
    except (LabError, RaylbError, TimeoutError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    if prometheus:
        try:
            lab.start_prometheus()
        except (OSError, TimeoutError, RuntimeError) as exc:
            lab.down()  # half a lab is removed, as Lab.up does
            raise click.ClickException(f"Prometheus did not start: {exc}") from exc
    took_s = time.monotonic() - start_s
    click.echo(f"lab {name!r} is up in {took_s:.1f} s")
    for host in lab.hosts:
        line = f"{host.name:<8} {host.netns:<22} {host.ipv4!s:<13} {host.ipv6!s:<18} {host.mac}"
        click.echo(f"  {line}")
    click.echo(f"  pools: {', '.join(f'{k}={v}' for k, v in SEED_POOLS.items())}")
    if ray:
        click.echo(f"  ray: {lab.ray_address}  dashboard: {lab.dashboard_url}  GCS tables in Redis {lab.redis.address}")
        click.echo(f"    token (RAY_AUTH_TOKEN_PATH, raylb --token-file): {lab.ray_access.token_path}")
    if prometheus:
        click.echo(f"  prometheus: http://{lab.control.ipv4}:{PROMETHEUS_PORT} (scrapes raylb's /metrics once raylb runs)")
    if lab.kube is not None:
        click.echo(f"  kubernetes: {lab.kube.url} (from the lab's namespaces only)")
        click.echo(f"    admin kubeconfig:    {lab.kube.admin_kubeconfig}")
        click.echo(f"    operator kubeconfig: {lab.kube.operator_kubeconfig}")
    click.echo(f"run commands inside with: ip netns exec {lab.client.netns} <command>")
    click.echo(f"remove with: raylb lab down --name {name}")


@group.command()
@NAME_OPTION
@click.option("--all", "all_labs", is_flag=True, help="remove EVERY rlb-* namespace on this host")
def down(name: str, all_labs: bool) -> None:
    """Remove a lab (idempotent)."""
    removed = lab_module.down_all() if all_labs else lab_module.down(name)
    listing = f": {', '.join(removed)}" if removed else ""
    click.echo(f"removed {len(removed)} namespaces{listing}")


@group.command()
@NAME_OPTION
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def status(name: str, as_json: bool) -> None:
    """Show the lab's namespaces and how many processes run in each."""
    hosts = {
        parse_netns_name(n)[1]: {"netns": n, "processes": len(ns.pids(n))}  # type: ignore[index]
        for n in lab_module.lab_namespaces(name)
    }
    report: dict[str, object] = {"name": name, "running": bool(hosts), "hosts": hosts}
    kube = _kube_report(name) if hosts else None
    if kube is not None:
        report["kube"] = kube
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not hosts:
        click.echo(f"lab {name!r} is not running")
        return
    click.echo(f"lab {name!r}:")
    for host, info in hosts.items():
        click.echo(f"  {host:<8} {info['netns']:<22} {info['processes']} processes")
    if kube is not None:
        state = "answering" if kube["ready"] else "NOT answering"
        click.echo(f"  kubernetes {kube['url']} {state} (servers running: {len(kube['alive_pids'])} of 2)")
        click.echo(f"    admin kubeconfig:    {kube['admin_kubeconfig']}")
        click.echo(f"    operator kubeconfig: {kube['operator_kubeconfig']}")


def _kube_report(name: str) -> dict[str, object] | None:
    """The lab's control plane as recorded in its state file, and whether it answers now."""
    try:
        lab = Lab.attach(name)
    except LabError:
        return None
    if lab.kube is None:
        return None
    return {
        **lab.kube.as_dict(),
        "ready": lab_kube.ready(lab.control, lab.kube),
        "alive_pids": lab_kube.alive_pids(lab.control, lab.kube),
    }


def _register_failover() -> None:
    from raylb.cluster.lab.failover import command as failover  # noqa: PLC0415 (keeps `lab up` light)

    group.add_command(failover)


_register_failover()
