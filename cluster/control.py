"""The commands that start, inspect and remove a running raylb on a Ray cluster.

    raylb run        start the detached operator (or attach to the running one)
    raylb apply -f   put manifests into the in-memory store (clusters without Kubernetes)
    raylb status     pools, services and speakers, from the actors (--json for scripts)
    raylb uninstall  remove every raylb actor

They connect to Ray at --address, $RAY_ADDRESS, or a local cluster; `ray job submit -- python
-m raylb run` runs the same code as a Ray job. A cluster with token authentication
(RAY_AUTH_MODE=token) lets them in with its token: --token-file, $RAY_AUTH_TOKEN_PATH or
$RAY_AUTH_TOKEN, the places Ray itself looks (a job inherits them from its cluster).
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
from raylb.actors.metrics_http import ALLOCATOR_PORT, OPERATOR_PORT, SPEAKER_PORT
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
#: Where Ray looks for a token (before ~/.ray/auth_token), and the switch that makes a client
#: send it: without RAY_AUTH_MODE=token, ray.init() with an explicit address sends nothing.
TOKEN_ENV, TOKEN_PATH_ENV, AUTH_MODE_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"


def _use_token_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """--token-file: checked here (Ray aborts the process on an empty or unreadable one), then
    handed to Ray the way it reads it."""
    if value is None:
        return
    try:
        token = value.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{value}: cannot be read: {exc}", ctx=ctx, param=param) from exc
    if not token:
        raise click.BadParameter(f"{value}: is empty; it should hold the cluster's token (`ray get-auth-token`)", ctx=ctx, param=param)
    os.environ[TOKEN_PATH_ENV] = str(value.resolve())


def address_option(command: Any) -> Any:
    """--address and --token-file: where the Ray cluster is and how to prove we may use it."""
    command = click.option(
        "--token-file", type=click.Path(dir_okay=False, path_type=Path), envvar=TOKEN_PATH_ENV, default=None,
        expose_value=False, callback=_use_token_file, is_eager=True,
        help="File holding the Ray cluster's authentication token (default: $RAY_AUTH_TOKEN_PATH, then $RAY_AUTH_TOKEN).",
    )(command)  # fmt: skip
    return click.option("--address", envvar="RAY_ADDRESS", default=None, help="Ray cluster address (default: $RAY_ADDRESS or auto).")(command)


def connect(address: str | None) -> None:
    if ray.is_initialized():
        return
    if address and address != "auto":
        _check_reachable(address)
    token_given = bool(os.environ.get(TOKEN_ENV) or os.environ.get(TOKEN_PATH_ENV))
    if token_given and AUTH_MODE_ENV not in os.environ:
        os.environ[AUTH_MODE_ENV] = "token"  # a token was given: send it
        # Ray read its config (the auth mode among it) when it was imported: read it again.
        from ray._raylet import Config  # noqa: PLC0415

        Config.initialize("")
    _keep_stdout_for_output()
    try:
        ray.init(address=address or "auto", namespace=RAY_NAMESPACE, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.AuthenticationError) as exc:
        hint = (
            "check that the token is this cluster's" if token_given
            else "if it uses token authentication, pass --token-file or set $RAY_AUTH_TOKEN"
        )  # fmt: skip
        raise click.ClickException(
            f"cannot reach a Ray cluster at {address or 'auto'}: {exc}; start one or pass --address / $RAY_ADDRESS; {hint}"
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
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=OPERATOR_PORT, show_default=True,
              help="The operator's /metrics port on the control node (0: off).")
@click.option("--allocator-metrics-port", type=click.IntRange(0, 65535), default=ALLOCATOR_PORT, show_default=True,
              help="The allocator's /metrics port on the control node (0: off).")
@click.option("--speaker-metrics-port", type=click.IntRange(0, 65535), default=SPEAKER_PORT, show_default=True,
              help="Each speaker's /metrics port on its node address (0: off).")
@click.option("--speaker-group", metavar="RAYCLUSTER/GROUP", default=None,
              help="In-cluster on KubeRay: the RayCluster (in the operator namespace) and worker group the "
                   "speakers run in; the operator sizes it to the Nodes matching the MetalLB resource.")
def run_command(
    address: str | None, kubeconfig: str | None, memory: bool, operator_namespace: str,
    metrics_port: int, allocator_metrics_port: int, speaker_metrics_port: int, speaker_group: str | None,
) -> None:  # fmt: skip
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
    key_file = _memberlist_key_file() if memory else None
    connect(address)
    settings = OperatorSettings(
        operator_namespace=operator_namespace, source="memory" if memory else "kube", kubeconfig=kubeconfig,
        memberlist_key_file=key_file,
        metrics_port=metrics_port, allocator_metrics_port=allocator_metrics_port, speaker_metrics_port=speaker_metrics_port,
        speaker_group=speaker_group,
    )  # fmt: skip
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


def _memberlist_key_file() -> str | None:
    """$RAYLB_MEMBERLIST_KEY_FILE, checked here and passed to the operator as an absolute path
    (the operator runs on the control node, where the file must be)."""
    from raylb.keyring import ENV_KEY_FILE, MembershipKeyError, key_from_environment  # noqa: PLC0415

    path = os.environ.get(ENV_KEY_FILE)
    if not path:
        return None
    try:
        key_from_environment({ENV_KEY_FILE: path}, read_file=lambda p: Path(p).read_bytes())
    except MembershipKeyError as exc:
        raise click.ClickException(str(exc)) from None
    return str(Path(path).resolve())


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
    out["services"] += pending_services(out["operator"], {s["service"] for s in out["services"]})
    for node, handle in find_speakers(RAY_NAMESPACE).items():
        try:
            status = ray.get(handle.status.remote(), timeout=5)
            out["speakers"].append({"node": node, "alive": True, "owned": sorted(status.get("owned", {})),
                                    "peers_alive": status.get("alive", []), "why": status.get("why", {}),
                                    "drops": status.get("drops", {}), "keys": status.get("keys", {})})  # fmt: skip
        except Exception:  # noqa: BLE001 - a dead node's speaker just shows as not alive
            out["speakers"].append({"node": node, "alive": False, "owned": []})
    return out


def pending_services(operator: dict[str, Any] | None, assigned: set[str]) -> list[dict[str, Any]]:
    """Services without an IP, with the operator's reason (`<pending>` in the table)."""
    pending = (operator or {}).get("pending") or {}
    return [
        {"service": key, "ips": [], "pool": None, "node": None, "pending": reason}
        for key, reason in sorted(pending.items())
        if key not in assigned
    ]


def explain_service(service: str) -> list[dict[str, Any]]:
    """Why each node does (not) announce each IP of `service`, as a live speaker sees it, with
    every live speaker's report of IPs it has no usable interface for."""
    handles = find_speakers(RAY_NAMESPACE)
    unplaced: dict[str, list[str]] = {}
    live = []
    for node, handle in handles.items():
        try:
            unplaced[node] = ray.get(handle.status.remote(), timeout=5).get("unplaced", [])
            live.append(handle)
        except Exception:  # noqa: BLE001 - a dead node's speaker cannot report
            continue
    if not live:
        raise click.ClickException("no speaker is running: raylb is not deployed (is there a MetalLB resource?)")
    return ray.get(live[0].explain.remote(service, unplaced), timeout=CALL_TIMEOUT_S)


def why_table(service: str, explanations: list[dict[str, Any]]) -> str:
    """`raylb status --service`: per IP, the nodes in the IP's order with rank and reason."""
    if not explanations:
        return f"{service} holds no announced IP (see `raylb status` for why it is pending)"
    parts = []
    for e in explanations:
        rows = [["NODE", "RANK", "REASON"]] + [[n["node"], str(n["rank"]), n["text"]] for n in e["nodes"]]
        head = f"{e['ip']} (announced by {e['announcer'] or 'nobody'})"
        parts.append(head + "\n" + _table(rows))
    return "\n\n".join(parts)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def status_text(status: dict[str, Any]) -> str:
    """The tables of `raylb status`: pools, services (`<pending>` with the reason), speakers."""
    pools = [["POOL", "FAMILY", "SIZE", "USED", "FREE"]]
    for name, stats in sorted(status["pools"].items()):
        for family in ("ipv4", "ipv6"):
            fam = stats[family]
            if fam["total"]:
                pools.append([name, family, str(fam["total"]), str(fam["in_use"]), str(fam["free"])])
    services = [["SERVICE", "IPS", "POOL", "ANNOUNCED FROM"]]
    for s in status["services"]:
        if s["ips"]:
            services.append([s["service"], ",".join(s["ips"]), s["pool"], s["node"] or "-"])
        else:
            services.append([s["service"], "<pending>", "-", f"- ({s.get('pending') or 'waiting'})"])
    speakers = [["SPEAKER NODE", "ALIVE", "IPS OWNED"]]
    speakers += [[s["node"], "yes" if s["alive"] else "no", ",".join(s["owned"]) or "-"] for s in status["speakers"]]
    return "\n\n".join(_table(t) for t in (pools, services, speakers))


@click.command("status")
@address_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--service", default=None, metavar="NS/NAME", help="Why each node does (not) announce this Service's IPs.")
def status_command(address: str | None, as_json: bool, service: str | None) -> None:
    """Pools, services and speakers of the running raylb."""
    if service is not None and (service.count("/") != 1 or not all(service.split("/"))):
        raise click.ClickException(f"--service {service!r}: expected NAMESPACE/NAME, e.g. default/web")
    connect(address)
    if service is not None:
        explanations = explain_service(service)
        if as_json:
            click.echo(json.dumps(explanations, indent=2, sort_keys=True))
        else:
            click.echo(why_table(service, explanations))
        return
    status = gather_status()
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True, default=str))
        return
    if status["operator"] is None:
        click.echo("raylb is not running on this Ray cluster (start it with `raylb run`)")
        sys.exit(1)
    click.echo(status_text(status))


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
