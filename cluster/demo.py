"""`raylb demo` (what `make demo` runs): the whole system, built and shown on this machine.

A newcomer's first contact with raylb, so it runs the real thing the way a user would and
says briefly what happens: a lab of network namespaces (control host, three nodes, a client)
with a multi-node Ray cluster and a Kubernetes control plane; raylb started with
`ray job submit`; the seed's MetalLB manifests applied to the API server; then each
Service's IP and pool as Kubernetes records them, the node announcing it, an HTTP request
from the client answered by that node, and a live failover (the announcing node killed, the
outage a client saw, the node that took over). The lab stays up to look around.

Everything noisy (Ray, etcd, kube-apiserver) writes to files under /tmp/rlb-NAME/. A failure
stops the demo with the step that failed and where the logs are; nothing is removed behind
the user's back (except a lab that failed while being built, which Lab.up removes itself).

`raylb demo --local` keeps the old, root-free variant: the operator's allocation logic run
in this process on the in-memory store (the last part of this module).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml
from kubernetes import client

from raylb.actors.local import InProcessRay, NoKeys
from raylb.actors.operator import OperatorCore
from raylb.cluster.lab.failover_probe import Outage, ProbeRun, Sample, takeover
from raylb.cluster.localkube.provision import ensure_binaries, find_binaries
from raylb.cluster.lab import hosts, in_netns, system
from raylb.cluster.lab import kube as lab_kube
from raylb.cluster.lab.failover import detected_at
from raylb.cluster.lab.failover_plot import Timeline, plot_png
from raylb.cluster.lab.lab import RAY_TOKEN_FILE, Lab, down, lab_namespaces, state_dir
from raylb.cluster.lab.ray_nodes import RAY_ADDRESS
from raylb.cluster.lab.topology import CLIENT, CONTROL, DEFAULT_LAB_NAME, check_lab_name, netns_name
from raylb.cluster.memory import MemoryCluster
from raylb.desired import Change, Ref
from raylb.reconcile import POOL_ANNOTATION
from raylb.reconcile import OPERATOR_NAMESPACE

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "deploy" / "examples"
DEMO_MANIFESTS = EXAMPLES / "demo.yaml"
LAB_NODES = EXAMPLES / "lab-nodes.yaml"
VENV_BIN = Path(sys.executable).parent
#: The Service whose announcing node is killed (port 80, endpoints on every node).
FAILOVER_SERVICE = "default/web"
#: Services answered over HTTP from the client: the ones that expose port 80.
HTTP_PORT = 80

# Bounds on waits, each far above what this 2-core machine needs, so a stuck step fails with
# a message instead of hanging: starting the job's driver and the operator actor (~10 s),
# speakers on three Ray nodes plus the first announcements (~10-20 s), the client-observed
# takeover (< 1 s by design), Kubernetes catching up with the new announcer (a few s).
JOB_TIMEOUT_S = 180.0
ANNOUNCE_TIMEOUT_S = 180.0
TAKEOVER_TIMEOUT_S = 30.0
L2_STATUS_TIMEOUT_S = 60.0
POLL_S = 0.5
EXISTING_STEP = "checking for an earlier demo"
KUBERAY_LAB_NAME = "kuberay"


class DemoError(Exception):
    """A step of the demo failed; says which, why, and where to look."""

    def __init__(self, step: str, cause: BaseException | str, *, logs: list[str] | None = None) -> None:
        self.step, self.cause, self.logs = step, cause, list(logs or [])
        super().__init__(f"{step}: {cause}")


@dataclass
class Failover:
    service: str
    vip: str
    before: str
    after: str | None
    outage_s: float
    failed_requests: int
    kubernetes_node: str | None  # what ServiceL2Status names after the failover
    picture: str | None = None  # the client's timeline, drawn (PNG)


@dataclass
class DemoResult:
    lab: str
    services: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> ips, pool, node, error
    http: dict[str, str] = field(default_factory=dict)  # key -> body of the answer (node name)
    failover: Failover | None = None
    look_around: str = ""  # the closing words: how to look at the running lab, how to remove it


# --- talking to the lab's Kubernetes and Ray job server ------------------------------------------


def _kube_services(lab: Lab) -> dict[str, dict[str, Any]]:
    """Every LoadBalancer Service as Kubernetes has it: IPs (status), pool (annotation),
    announcing node (ServiceL2Status) and the last AllocationFailed event, if any."""
    assert lab.kube is not None
    with lab_kube.admin_api(lab.control, lab.kube) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        services = [s for s in core.list_service_for_all_namespaces().items if s.spec.type == "LoadBalancer"]
        l2 = custom.list_namespaced_custom_object("metallb.io", "v1beta1", OPERATOR_NAMESPACE, "servicel2statuses")
        failures = {
            f"{e.involved_object.namespace}/{e.involved_object.name}": e.message
            for e in sorted(
                core.list_event_for_all_namespaces(field_selector="reason=AllocationFailed").items,
                key=lambda e: e.last_timestamp or e.metadata.creation_timestamp,
            )
        }
    announcers = {
        f"{(i.get('status') or {}).get('serviceNamespace')}/{(i.get('status') or {}).get('serviceName')}": (
            i.get("status") or {}
        ).get("node")
        for i in l2.get("items", [])
    }
    out = {}
    for svc in services:
        key = f"{svc.metadata.namespace}/{svc.metadata.name}"
        ingress = (svc.status.load_balancer.ingress if svc.status and svc.status.load_balancer else None) or []
        out[key] = {
            "ips": [i.ip for i in ingress if i.ip],
            "pool": (svc.metadata.annotations or {}).get(POOL_ANNOTATION),
            "node": announcers.get(key),
            "error": failures.get(key),
            "ports": [p.port for p in svc.spec.ports or []],
        }
    return out


def _settled(services: dict[str, dict[str, Any]], expected: set[str]) -> bool:
    """Every expected Service is decided: an IP and an announcing node, or a failure reported."""
    return bool(services) and expected <= set(services) and all(
        (s["ips"] and s["node"]) or (not s["ips"] and s["error"]) for s in services.values()
    )


def _converged(lab: Lab, services: dict[str, dict[str, Any]]) -> bool:
    """The speakers agree with Kubernetes: one alive on every node, each seeing all the others
    (until then the first speaker up announces everything and hands IPs over as peers
    arrive), and each Service's IP held by the node its ServiceL2Status names."""
    nodes = {n.name for n in lab.nodes}
    speakers = {s["node"]: s for s in system.status(lab)["speakers"] if s["alive"]}
    if set(speakers) != nodes or any(not nodes <= {name, *s.get("peers_alive", ())} for name, s in speakers.items()):
        return False
    owner = {ip: name for name, s in speakers.items() for ip in s["owned"]}
    return all(owner.get(s["ips"][0]) == s["node"] for s in services.values() if s["ips"])


def _job_api(lab: Lab, path: str) -> Any:
    """GET the Ray job server's REST API from the control namespace (never through a proxy),
    with the lab's token: the job server refuses anyone without it."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    token = lab.ray_access.token_path.read_text().strip()
    request = urllib.request.Request(f"{lab.dashboard_url}{path}", headers={"Authorization": f"Bearer {token}"})
    with in_netns(lab.control.netns), opener.open(request, timeout=10) as response:
        return json.loads(response.read())


def submit_argv(*, dashboard_url: str, kubeconfig: str, token_path: Path, submission_id: str | None = None) -> list[str]:
    """The `ray job submit` command line that starts raylb (as shown to the user): the cluster
    lets in only holders of its token, which Ray reads from RAY_AUTH_TOKEN_PATH."""
    named = ["--submission-id", submission_id] if submission_id else []
    return [
        "env", "RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={token_path}",
        "ray", "job", "submit", "--address", dashboard_url, *named, "--no-wait",
        "--", "python", "-m", "raylb", "run", "--kubeconfig", kubeconfig,
    ]  # fmt: skip


def _submit(lab: Lab, *, submission_id: str) -> list[str]:
    """`ray job submit ... -- python -m raylb run --kubeconfig K` from the control namespace.

    The job's `python` is found on the PATH of the Ray daemons, which the lab starts with this
    venv's bin first (ray_nodes.ray_env); the same PATH is given to the `ray` CLI here."""
    assert lab.kube is not None
    argv = submit_argv(
        dashboard_url=lab.dashboard_url, kubeconfig=lab.kube.operator_kubeconfig,
        token_path=lab.ray_access.token_path, submission_id=submission_id,
    )  # fmt: skip
    argv[argv.index("ray")] = str(VENV_BIN / "ray")
    result = subprocess.run(
        hosts.netns_argv(lab.control.netns, argv), capture_output=True, text=True,
        env=lab.driver_env(), timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"`ray job submit` exited with {result.returncode}:\n{(result.stdout + result.stderr)[-2000:]}")
    return argv


def _wait_job(lab: Lab, submission_id: str) -> float:
    """Until the job (which exits once the operator answers) succeeded; its run time."""
    started = time.monotonic()
    deadline = started + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            job = _job_api(lab, f"/api/jobs/{submission_id}")
            if job.get("status") == "SUCCEEDED":
                return time.monotonic() - started
            if job.get("status") in ("FAILED", "STOPPED"):
                logs = _job_api(lab, f"/api/jobs/{submission_id}/logs").get("logs", "")
                raise RuntimeError(f"job {submission_id} {job['status']}: {job.get('message')}\n{logs[-2000:]}")
        time.sleep(POLL_S)
    raise TimeoutError(f"job {submission_id} did not finish within {JOB_TIMEOUT_S:.0f} s")


def _wait(predicate: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - e.g. the API server busy for a moment
            last, value = exc, None
        if value:
            return value
        time.sleep(POLL_S)
    raise TimeoutError(f"{what}: not reached within {timeout_s:.0f} s" + (f" (last error: {last})" if last else ""))


# --- the steps ------------------------------------------------------------------------------------


class Steps:
    """Prints one line per step; a failing step becomes a DemoError naming it and its logs."""

    def __init__(self, echo: Callable[[str], None], logs: Callable[[], list[str]]) -> None:
        self.echo, self._logs = echo, logs

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.echo(f"==> {what}")
        try:
            yield
        except DemoError:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            raise DemoError(what, exc, logs=self._logs()) from exc


def _log_places(lab_name: str) -> list[str]:
    root = state_dir(lab_name)
    return [
        f"{root}/kube/kube-apiserver.log and etcd.log (Kubernetes)",
        f"{root}/control-ray-start.log, {root}/ray-control/session_latest/logs/ (Ray head, job, operator)",
        f"{root}/ray-nodeN/session_latest/logs/ (raylets and speakers)",
    ]


def check_existing(name: str, *, fresh: bool, steps: Steps, kuberay: bool = False) -> None:
    """Refuse to build over an existing lab, unless `fresh`: then remove it first."""
    existing = lab_namespaces(name)
    if existing and not fresh:
        again = f"raylb demo{' --kuberay' if kuberay else ''} --name {name} --fresh"
        raise DemoError(
            EXISTING_STEP,
            f"a lab named {name!r} already exists ({len(existing)} namespaces rlb-{name}-*). Look around in it, "
            f"remove it with `{VENV_BIN}/raylb lab down --name {name}`, or recreate it with "
            + ("`make demo DEMO_ARGS=--fresh`" if name == DEFAULT_LAB_NAME and not kuberay else f"`{again}`"),
        )
    if existing:
        with steps.step(f"removing the existing lab {name!r} (--fresh)"):
            down(name)


def run_demo(*, name: str, fresh: bool = False, echo: Callable[[str], None] = click.echo) -> DemoResult:
    """The full demo on lab `name`; leaves the lab running. Raises DemoError on any failure."""
    steps = Steps(echo, lambda: _log_places(name))
    result = DemoResult(lab=name)
    check_existing(name, fresh=fresh, steps=steps)

    if find_binaries() is None:  # `make demo` provisions first; a bare `raylb demo` may not have
        with steps.step("building etcd and kube-apiserver once (minutes; cached in ~/.cache/raylb)"):
            ensure_binaries(lambda line: echo(f"    {line}"))

    with steps.step(f"building lab {name!r}: control, node1-3, client in namespaces rlb-{name}-*; Ray; Kubernetes"):
        started = time.monotonic()
        lab = Lab.up(name=name, nodes=3, ray=True, http=True, kube=True)
        assert lab.kube is not None
        echo(f"    up in {time.monotonic() - started:.0f} s: Ray head {lab.ray_address} + 3 raylets, API server {lab.kube.url}")

    submission_id = f"raylb-{int(time.time())}"
    with steps.step("starting raylb as a Ray job, from the control host:"):
        echo(f"    Ray lets in only holders of its token ({lab.ray_access.token_path}) and keeps its tables in Redis "
             f"({lab.redis.address}), so a Ray head that dies and comes back is the same cluster")  # fmt: skip
        shown = submit_argv(
            dashboard_url=lab.dashboard_url, kubeconfig=lab.kube.operator_kubeconfig, token_path=lab.ray_access.token_path
        )
        echo(f"    {shlex.join(shown)}")
        _submit(lab, submission_id=submission_id)
        took_s = _wait_job(lab, submission_id)
        echo(f"    job {submission_id} succeeded in {took_s:.0f} s: the operator actor runs on the Ray head")

    with steps.step(f"applying {DEMO_MANIFESTS.relative_to(REPO)} and {LAB_NODES.name} to Kubernetes (server-side apply)"):
        applied = lab_kube.apply(lab.control, lab.kube, [DEMO_MANIFESTS, LAB_NODES])
        kinds: dict[str, int] = {}
        for obj in applied:
            kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
        echo("    " + ", ".join(f"{n} {k}" for k, n in kinds.items() if k != "Namespace"))
        expected = {f"{d['metadata'].get('namespace', 'default')}/{d['metadata']['name']}" for d in applied if d["kind"] == "Service"}

    with steps.step("waiting until every Service has an IP and an announcing node"):
        started = time.monotonic()
        services = _wait(
            lambda: (s := _kube_services(lab)) and _settled(s, expected) and _converged(lab, s) and s,
            timeout_s=ANNOUNCE_TIMEOUT_S, what="every Service allocated and announced, speakers in agreement",
        )  # fmt: skip
        result.services = services
        echo(f"    done in {time.monotonic() - started:.0f} s (from Service status, its pool annotation and ServiceL2Status)")
        echo("")
        echo(_services_table(services))
        echo("")

    with steps.step(f"requests from the client ({lab.client.netns}) reach the announcing node"):
        for key, svc in sorted(services.items()):
            if svc["ips"] and HTTP_PORT in svc["ports"]:
                vip = svc["ips"][0]
                status, body = lab.http_get(lab.client, vip)
                if status != 200 or body != svc["node"]:
                    raise RuntimeError(f"GET {url(vip)} answered {status} {body!r}; {svc['node']} announces {key}")
                result.http[key] = body
                echo(f"    GET {url(vip):<26} -> {body}   ({key})")

    web = services[FAILOVER_SERVICE]
    vip, victim = web["ips"][0], web["node"]
    with steps.step(f"failover: killing {victim}, which announces {FAILOVER_SERVICE} {vip} (every process in {lab.host(victim).netns})"):
        with ProbeRun(functools.partial(lab.popen, lab.client), vip=vip, duration_s=TAKEOVER_TIMEOUT_S + 30) as run:
            run.wait_for(lambda s: any(x.ok and x.node == victim for x in s), timeout_s=10, what=f"an answer from {victim}")
            killed_at = time.monotonic()
            lab.kill_host(victim)
            run.wait_for(lambda s: takeover(s, event_s=killed_at), timeout_s=TAKEOVER_TIMEOUT_S, what=f"another node answering for {vip}")
            samples = tuple(run.stop())
            outage = takeover(samples, event_s=killed_at)
        assert outage is not None
        echo(
            f"    {victim} -> {outage.after}: the client (a request every 10 ms) got no answer for "
            f"{outage.duration_s:.3f} s ({outage.failed} failed requests)"
        )
        picture = _draw_failover(lab, vip=vip, victim=victim, killed_at=killed_at, samples=samples, outage=outage)
        echo(f"    the failover as the client saw it, drawn: {picture}")
        try:
            moved = _wait(
                lambda: (n := _kube_services(lab)[FAILOVER_SERVICE]["node"]) not in (None, victim) and n,
                timeout_s=L2_STATUS_TIMEOUT_S, what="ServiceL2Status naming the new node",
            )  # fmt: skip
            echo(f"    Kubernetes: the ServiceL2Status of {FAILOVER_SERVICE} now names {moved}")
        except TimeoutError:
            moved = None
            echo(f"    Kubernetes: the ServiceL2Status of {FAILOVER_SERVICE} still names {victim} after {L2_STATUS_TIMEOUT_S:.0f} s")
        result.failover = Failover(
            service=FAILOVER_SERVICE, vip=vip, before=victim, after=outage.after,
            outage_s=outage.duration_s, failed_requests=outage.failed, kubernetes_node=moved, picture=str(picture),
        )  # fmt: skip

    with steps.step(f"bringing {victim} back: its HTTP server and raylet restart"):
        lab.restart_node(victim)
        echo(f"    raylb starts a speaker there again; the same election may hand {vip} back to {victim}")
    result.look_around = look_around(name, vip=vip)
    return result


def _draw_failover(lab: Lab, *, vip: str, victim: str, killed_at: float, samples: tuple[Sample, ...], outage: Outage) -> Path:
    """The demo's failover as `raylb lab failover --plot` draws a trial, into the lab's folder."""
    detected = detected_at(lab, node=outage.after, peer=victim, after_s=killed_at) if outage.after else None
    family = "ipv6" if ":" in vip else "ipv4"
    timeline = Timeline(trial=1, family=family, mode="kill", victim=victim, vip=vip, event_s=killed_at,
                        samples=samples, outage=outage, detected_s=detected)  # fmt: skip
    return plot_png([timeline], lab.state_dir / "failover.png", title=f"raylb demo: {victim} killed while announcing {vip}")


def url(vip: str) -> str:
    return f"http://[{vip}]/" if ":" in vip else f"http://{vip}/"


def _services_table(services: dict[str, dict[str, Any]]) -> str:
    rows = [["SERVICE", "EXTERNAL-IP", "POOL", "ANNOUNCED BY"]]
    for key, svc in sorted(services.items()):
        if svc["ips"]:
            rows.append([key, ",".join(svc["ips"]), svc["pool"] or "-", svc["node"] or "-"])
        else:
            rows.append([key, "<pending>", "-", f"- ({svc['error']})"])
    return table(rows, indent="    ")


def look_around(name: str, *, vip: str | None) -> str:
    """The closing words: how to look at the running lab and how to remove it."""
    control, client = netns_name(name, CONTROL), netns_name(name, CLIENT)
    admin = state_dir(name) / "admin.kubeconfig"
    token = state_dir(name) / RAY_TOKEN_FILE
    snippet = (
        "from kubernetes import client, config; "
        f'api = client.CoreV1Api(config.new_client_from_config("{admin}")); '
        '[print(s.metadata.name, [i.ip for i in s.status.load_balancer.ingress or []]) for s in api.list_namespaced_service("default").items]'
    )
    remove = f"{VENV_BIN}/raylb lab down" + ("" if name == DEFAULT_LAB_NAME else f" --name {name}")
    lines = [
        "The lab keeps running. Look around (the lab is reachable only inside its namespaces):",
        f"  raylb status:   ip netns exec {control} {VENV_BIN}/raylb status --address {RAY_ADDRESS} --token-file {token}",
        *([f"  a request:      ip netns exec {client} curl -s {url(vip)}"] if vip else []),
        f"  kubectl:        ip netns exec {control} kubectl --kubeconfig {admin} get svc,servicel2statuses -A",
        f"  no kubectl:     ip netns exec {control} {VENV_BIN}/python -c {shlex.quote(snippet)}",
        f"  logs:           {state_dir(name)}/",
        f"Remove it:        {remove}",
    ]
    return "\n".join(lines)


# --- the in-process variant (--local) -------------------------------------------------------------


def load(cluster: MemoryCluster, path: Path) -> int:
    count = 0
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            cluster.apply(str(doc["kind"]), doc)
            count += 1
    return count


MAX_ROUNDS = 20


def settle(core: OperatorCore, cluster: MemoryCluster) -> int:
    """Run rounds until one writes nothing; returns the number of rounds."""
    for rounds in range(1, MAX_ROUNDS + 1):
        before = cluster.write_count()
        core.step(timeout_s=0)
        if cluster.write_count() == before and rounds > 1:
            return rounds
    return MAX_ROUNDS


def table(rows: list[list[str]], *, indent: str = "") -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def report(cluster: MemoryCluster, ray: InProcessRay) -> str:
    failures: dict[Ref, list[str]] = {}
    for event in cluster.recorded_events():
        if event.reason == "AllocationFailed":
            failures.setdefault(event.ref, []).append(event.message)
        elif event.reason == "DeprecatedAnnotation":
            failures.setdefault(event.ref, []).append("uses the deprecated metallb.universe.tf/ prefix")
    rows = [["SERVICE", "EXTERNAL-IP", "POOL", "NOTE"]]
    for svc in cluster.list("Service"):
        meta: dict[str, Any] = svc["metadata"]
        ref = Ref("Service", meta["namespace"], meta["name"])
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ips = ",".join(i["ip"] for i in ingress) or "<pending>"
        pool = (meta.get("annotations") or {}).get(POOL_ANNOTATION, "-")
        rows.append([ref.key, ips, pool, "; ".join(failures.get(ref, []))])
    pools = [["POOL", "FAMILY", "TOTAL", "IN USE", "FREE"]]
    for pool_name, stats in ray.allocator.stats().items():
        for family in ("ipv4", "ipv6"):
            fam: dict[str, int] = stats[family]
            if fam["total"]:
                pools.append([pool_name, family, str(fam["total"]), str(fam["in_use"]), str(fam["free"])])
    return f"{table(rows)}\n\n{table(pools)}"


def local_demo(manifests: Path) -> None:
    """The operator's allocation logic on the manifests, in this process (no root, no Ray)."""
    class _Reader:
        def wait_changes(self, *, timeout_s: float) -> list[Change]:
            return cluster.wait_changes(reader="demo", timeout_s=timeout_s)

    cluster = MemoryCluster()
    ray = InProcessRay()
    core = OperatorCore(desired=_Reader(), results=cluster, ray=ray, key_source=NoKeys())
    click.echo(f"==> loaded {load(cluster, manifests)} objects from {manifests}")
    rounds = settle(core, cluster)
    click.echo(f"==> the operator settled after {rounds} rounds and {cluster.write_count()} writes\n")
    click.echo(report(cluster, ray))


# --- the command ----------------------------------------------------------------------------------


@click.command()
@click.option("--name", help=f"lab name (namespaces rlb-NAME-*)  [default: {DEFAULT_LAB_NAME}, with --kuberay {KUBERAY_LAB_NAME}]")
@click.option("--fresh", is_flag=True, help="remove an existing lab of that name first")
@click.option("--kuberay", is_flag=True, help="raylb in-cluster: real kubelets, deployed by the KubeRay operator")
@click.option("--local", is_flag=True, help="only the allocation, in this process: no root, no lab, no Ray")
@click.option(
    "--manifests", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEMO_MANIFESTS,
    show_default=True, help="with --local: the manifests to allocate for",
)  # fmt: skip
def command(name: str | None, fresh: bool, kuberay: bool, local: bool, manifests: Path) -> None:
    """Run raylb on a local lab (network namespaces, Ray, Kubernetes) and show it working.

    Needs root. Leaves the lab running; `raylb lab down` removes it."""
    if local:
        local_demo(manifests)
        return
    name = name or (KUBERAY_LAB_NAME if kuberay else DEFAULT_LAB_NAME)
    if os.geteuid() != 0:
        raise click.ClickException("the demo builds network namespaces and needs root (or try `raylb demo --local`)")
    try:
        check_lab_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from exc
    started = time.monotonic()
    try:
        if kuberay:
            from raylb.cluster.demo_kuberay import run_kuberay_demo  # noqa: PLC0415 - it builds on this module

            result = run_kuberay_demo(name=name, fresh=fresh, echo=click.echo)
        else:
            result = run_demo(name=name, fresh=fresh)
    except DemoError as exc:
        cause = str(exc.cause) or type(exc.cause).__name__  # e.g. KeyboardInterrupt
        click.echo(f"\nFAILED while {exc.step.rstrip(':')}:\n  {cause}", err=True)
        if exc.step == EXISTING_STEP:
            sys.exit(1)
        if lab_namespaces(name):
            click.echo("Logs:\n" + "\n".join(f"  {line}" for line in exc.logs), err=True)
            click.echo(f"The lab is left as it is for a look; remove it with: {VENV_BIN}/raylb lab down --name {name}", err=True)
        else:
            click.echo("The half-built lab was removed again (with its logs); the error above carries their tail.", err=True)
        sys.exit(1)
    click.echo(f"\nraylb demo done in {time.monotonic() - started:.0f} s.")
    click.echo(result.look_around)
