"""The commands that start, inspect and remove a running raylb on a Ray cluster.

    raylb run        start the detached operator (or attach to the running one)
    raylb apply -f   put manifests into the in-memory store (clusters without Kubernetes)
    raylb status     pools, services and speakers, from the actors (--json for scripts)
    raylb uninstall  remove every raylb actor

They connect to Ray at --address, $RAY_ADDRESS, or a local cluster; `ray job submit -- python
-m raylb run` runs the same code as a Ray job.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click
import ray
import yaml

from raylb.actors.allocator import ALLOCATOR_NAME
from raylb.actors.memory import MEMORY_NAME, start_memory
from raylb.actors.operator import OPERATOR_NAME, OperatorSettings, settings_conflict, start_operator
from raylb.actors.ray_ops import RAY_NAMESPACE
from raylb.actors.speaker.actor import find_speakers, speaker_name
from raylb.desired import NAMESPACED
from raylb.config import build_config
from raylb.errors import AllocationError, ConfigError, Problem
from raylb.models import RESOURCE_KINDS, AddressPool, IPAddressPool, parse, parse_view
from raylb.models.service import Service
from raylb.reconcile import OPERATOR_NAMESPACE
from raylb.services import to_request
from raylb.speakergroup import parse_group_ref

CALL_TIMEOUT_S = 15.0
address_option = click.option("--address", envvar="RAY_ADDRESS", default=None, help="Ray cluster address (default: $RAY_ADDRESS or auto).")


def connect(address: str | None) -> None:
    if ray.is_initialized():
        return
    if address and address != "auto":
        _check_reachable(address)
    _keep_stdout_for_output()
    try:
        ray.init(address=address or "auto", namespace=RAY_NAMESPACE, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise click.ClickException(
            f"cannot reach a Ray cluster at {address or 'auto'}: {exc}; start one or pass --address / $RAY_ADDRESS"
        ) from exc


def _keep_stdout_for_output() -> None:
    """Ray's core writes some notices (a raylet that died, state dumps) straight to file
    descriptor 1. Our output (e.g. `status --json`, read by scripts) moves to a private copy of
    stdout, and fd 1 goes to stderr, so those notices can never corrupt it."""
    if getattr(sys.stdout, "name", None) != "<stdout>" or not hasattr(sys.stdout, "fileno"):
        return  # already redirected, or captured (tests): leave it alone
    try:
        private = os.dup(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), 1)
    sys.stdout = os.fdopen(private, "w", buffering=1)


# Long enough for a loaded machine; Ray itself would retry a dead address for minutes.
REACH_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """Fail at once, clearly, when nothing listens at a Ray address given as host:port."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port; let Ray judge it
    if not 1 <= int(port) <= 65535:
        raise click.ClickException(f"cannot reach a Ray cluster at {address}: port {port} is not in 1..65535")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise click.ClickException(
            f"cannot reach a Ray cluster at {address}: {exc}; start one or pass --address / $RAY_ADDRESS"
        ) from exc


def read_manifests(files: tuple[Path, ...], *, operator_namespace: str = OPERATOR_NAMESPACE) -> list[tuple[str, dict[str, Any]]]:
    """Every document of every file, checked before anything is applied: a bad one stops all."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in files:
        try:
            loaded = list(yaml.safe_load_all(path.read_text()))
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except yaml.YAMLError as exc:
            raise click.ClickException(f"{path}: not valid YAML: {exc}") from exc
        if all(doc is None for doc in loaded):
            raise click.ClickException(f"{path}: no objects to apply")
        for index, doc in enumerate(loaded):
            if doc is None:
                continue
            where = f"{path} document {index + 1}"
            if not isinstance(doc, dict):
                raise click.ClickException(f"{where}: expected a mapping with kind and metadata, got {type(doc).__name__}")
            kind = doc.get("kind")
            if kind not in NAMESPACED:
                raise click.ClickException(f"{where}: kind={kind!r} is not one raylb reads; use one of {', '.join(NAMESPACED)}")
            meta = doc.get("metadata")
            if not isinstance(meta, dict) or not meta.get("name"):
                raise click.ClickException(f"{where}: {kind} needs metadata.name")
            if NAMESPACED[kind] and not meta.get("namespace"):
                meta["namespace"] = operator_namespace if kind in RESOURCE_KINDS else "default"  # as kubectl would
            try:
                _check(kind, doc)
            except (ConfigError, AllocationError) as err:
                raise click.ClickException(f"{where}: {err}") from err
            if kind in RESOURCE_KINDS:
                if meta["namespace"] != operator_namespace:
                    click.echo(f"warning: {where}: {kind} {meta['name']} is in namespace {meta['namespace']!r}; "
                               f"raylb reads only {operator_namespace!r}", err=True)  # fmt: skip
            docs.append((str(kind), doc))
    return docs


def _check(kind: str, doc: dict[str, Any]) -> None:
    """What an API server and MetalLB's webhook would refuse: a resource that does not fit its
    schema, a pool whose own addresses are wrong, a LoadBalancer Service raylb cannot read.
    (Checks across resources, such as overlapping pools, are the operator's: it sees them all.)"""
    if kind in RESOURCE_KINDS:
        model = parse(doc)
        problems: tuple[Problem, ...] = ()
        if isinstance(model, IPAddressPool):
            problems = build_config(ip_address_pools=[model]).problems
        elif isinstance(model, AddressPool):
            problems = build_config(address_pools=[model]).problems
        if problems:
            raise ConfigError(list(problems))
    elif kind == "Service":
        service = parse_view(kind, Service, doc)
        if service.spec.type == "LoadBalancer":
            to_request(service, namespace_labels={})


def _actor(name: str) -> Any | None:
    try:
        return ray.get_actor(name, namespace=RAY_NAMESPACE)
    except ValueError:
        return None


@click.command("run")
@address_option
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None, help="Kubeconfig of the cluster to serve (default: in-cluster, then $KUBECONFIG).")
@click.option("--memory", is_flag=True, help="Read desired state from raylb's in-memory store instead of Kubernetes.")
@click.option("--operator-namespace", default=OPERATOR_NAMESPACE, show_default=True)
@click.option("--speaker-group", metavar="RAYCLUSTER/GROUP", default=None,
              help="In-cluster on KubeRay: the RayCluster (in the operator namespace) and worker group the "
                   "speakers run in; the operator sizes it to the Nodes matching the MetalLB resource.")
def run_command(address: str | None, kubeconfig: str | None, memory: bool, operator_namespace: str,
                speaker_group: str | None) -> None:
    """Start the raylb operator on the Ray cluster, or attach to the one already running."""
    if speaker_group is not None:
        if memory:
            raise click.ClickException("--speaker-group sizes a KubeRay worker group from Kubernetes Nodes; "
                                       "it cannot be used with --memory")
        try:
            parse_group_ref(speaker_group)
        except ValueError as exc:
            raise click.ClickException(f"--speaker-group: {exc}") from exc
    if kubeconfig:
        kubeconfig = str(Path(kubeconfig).resolve())
        if not memory:
            _check_kubeconfig(kubeconfig)
    connect(address)
    settings = OperatorSettings(
        operator_namespace=operator_namespace, source="memory" if memory else "kube", kubeconfig=kubeconfig,
        speaker_group=speaker_group,
    )
    existing = _actor(OPERATOR_NAME)
    if existing is not None:  # attach only to an operator doing what this run asks for
        try:
            running = ray.get(existing.settings.remote(), timeout=CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a restarting or wedged operator: say so, do not guess
            raise click.ClickException(f"the running raylb operator did not tell its settings: {exc}") from exc
        conflict = settings_conflict(running, settings)
        if conflict:
            raise click.ClickException(conflict)
    if memory:
        start_memory(namespace=RAY_NAMESPACE)
    handle = start_operator(settings, namespace=RAY_NAMESPACE)
    try:
        ray.get(handle.ping.remote(), timeout=120)
    except Exception as exc:  # noqa: BLE001 - Ray wraps the operator's own error; show its last line
        why = [line for line in str(exc).splitlines() if line.strip()]
        raise click.ClickException(f"the raylb operator did not start: {why[-1] if why else type(exc).__name__}") from exc
    click.echo(("attached to the running" if existing else "started the") + f" raylb operator ({settings.source})")


def _check_kubeconfig(path: str) -> None:
    """Refuse a kubeconfig the operator could not use, here, before anything starts."""
    from raylb.cluster.kube.client import build_api_client  # noqa: PLC0415 - kubernetes only when needed

    try:
        build_api_client(path).close()
    except Exception as exc:  # noqa: BLE001 - whatever the client says is the reason
        raise click.ClickException(f"--kubeconfig {path}: cannot be used: {exc}") from exc


@click.command("apply")
@address_option
@click.option("-f", "--filename", "files", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def apply_command(address: str | None, files: tuple[Path, ...]) -> None:
    """Apply manifests to raylb's in-memory store (what kubectl apply does with Kubernetes)."""
    docs = read_manifests(files)
    connect(address)
    store = start_memory(namespace=RAY_NAMESPACE)
    for kind, doc in docs:
        ray.get(store.apply.remote(kind, doc), timeout=CALL_TIMEOUT_S)
        meta = doc["metadata"]
        click.echo(f"{kind} {meta.get('namespace', '')}/{meta['name']} applied".replace(" /", " "))


@click.command("delete")
@address_option
@click.argument("kind")
@click.argument("name")
@click.option("-n", "--namespace", default="", help="Namespace of the object (default: where `raylb apply` puts it).")
def delete_command(address: str | None, kind: str, name: str, namespace: str) -> None:
    """Delete one object from raylb's in-memory store."""
    from raylb.desired import Ref  # noqa: PLC0415

    if kind not in NAMESPACED:
        raise click.ClickException(f"kind={kind!r} is not one raylb reads; use one of {', '.join(NAMESPACED)}")
    if NAMESPACED[kind] and not namespace:  # where `raylb apply` put it, as kubectl would
        namespace = OPERATOR_NAMESPACE if kind in RESOURCE_KINDS else "default"
    connect(address)
    store = start_memory(namespace=RAY_NAMESPACE)
    gone = ray.get(store.delete.remote(Ref(kind, namespace, name)), timeout=CALL_TIMEOUT_S)
    click.echo(f"{kind} {name} {'deleted' if gone else 'not found'}")


def gather_status() -> dict[str, Any]:
    """Everything `raylb status` shows, from the actors themselves."""
    out: dict[str, Any] = {"operator": None, "pools": {}, "services": [], "speakers": []}
    operator = _actor(OPERATOR_NAME)
    if operator is not None:
        try:
            out["operator"] = ray.get(operator.status.remote(), timeout=CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - status reports what it can reach
            out["operator"] = {"error": str(exc)}
    allocator = _actor(ALLOCATOR_NAME)
    if allocator is not None:
        try:
            out["pools"] = ray.get(allocator.stats.remote(), timeout=CALL_TIMEOUT_S)
            assignments = ray.get(allocator.assignments.remote(), timeout=CALL_TIMEOUT_S)
        except Exception:  # noqa: BLE001
            assignments = ()
        announcers = (out["operator"] or {}).get("announcers", {})
        out["services"] = [
            {"service": a.service, "ips": [str(ip) for ip in a.ips], "pool": a.pool, "node": announcers.get(a.service)}
            for a in assignments
        ]
    for node, handle in find_speakers(RAY_NAMESPACE).items():
        try:
            status = ray.get(handle.status.remote(), timeout=5)
            out["speakers"].append({"node": node, "alive": True, "owned": sorted(status.get("owned", {})), "peers_alive": status.get("alive", [])})
        except Exception:  # noqa: BLE001 - a dead node's speaker just shows as not alive
            out["speakers"].append({"node": node, "alive": False, "owned": []})
    return out


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


@click.command("status")
@address_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def status_command(address: str | None, as_json: bool) -> None:
    """Pools, services and speakers of the running raylb."""
    connect(address)
    status = gather_status()
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True, default=str))
        return
    if status["operator"] is None:
        click.echo("raylb is not running on this Ray cluster (start it with `raylb run`)")
        sys.exit(1)
    pools = [["POOL", "FAMILY", "SIZE", "USED", "FREE"]]
    for name, stats in sorted(status["pools"].items()):
        for family in ("ipv4", "ipv6"):
            fam = stats[family]
            if fam["total"]:
                pools.append([name, family, str(fam["total"]), str(fam["in_use"]), str(fam["free"])])
    services = [["SERVICE", "IPS", "POOL", "ANNOUNCED FROM"]]
    services += [[s["service"], ",".join(s["ips"]), s["pool"], s["node"] or "-"] for s in status["services"]]
    speakers = [["SPEAKER NODE", "ALIVE", "IPS OWNED"]]
    speakers += [[s["node"], "yes" if s["alive"] else "no", ",".join(s["owned"]) or "-"] for s in status["speakers"]]
    click.echo("\n\n".join(_table(t) for t in (pools, services, speakers)))


@click.command("uninstall")
@address_option
def uninstall_command(address: str | None) -> None:
    """Remove every raylb actor: speakers (saying goodbye first), allocator, operator, store."""
    connect(address)
    removed = []
    operator = _actor(OPERATOR_NAME)
    if operator is not None:  # first, or it would start new speakers while we remove them
        ray.kill(operator, no_restart=True)
        removed.append(OPERATOR_NAME)
    for node, handle in find_speakers(RAY_NAMESPACE).items():
        try:
            ray.get(handle.leave.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - killed below either way
            pass
        ray.kill(handle, no_restart=True)
        removed.append(speaker_name(node))
    for name in (ALLOCATOR_NAME, MEMORY_NAME):
        handle = _actor(name)
        if handle is not None:
            ray.kill(handle, no_restart=True)
            removed.append(name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_actor(n) for n in removed):
        time.sleep(0.2)
    click.echo("removed: " + (", ".join(sorted(removed)) or "nothing (raylb was not running)"))
