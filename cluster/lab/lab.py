"""The lab: a bridge, a control host, N nodes and a client, each in its own network namespace.

`Lab.up()` builds it (and optionally Ray, the per-node HTTP servers and the Kubernetes control
plane on the control host, see kube.py), `Lab.down()` or the module-level `down(name)` removes
it. Teardown works from namespace names alone: every namespace of lab NAME is called
rlb-NAME-<host>, so a lab left behind by a crashed test run is removed by
`raylb lab down --name NAME` without any state file. The state file the lab writes
(flags such as whether Ray runs, where the API server answers) is a convenience for
`Lab.attach()` and `raylb lab status` only.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylb.cluster.kube import manifests
from raylb.cluster.localkube.provision import kuberay_crds
from raylb.cluster.lab import build, hosts, images, ray_nodes
from raylb.cluster.lab.redis import Redis, write_secret
from raylb.cluster.lab import kube as lab_kube
from raylb.cluster.lab import kubecluster
from raylb.cluster.lab import netns as ns
from raylb.cluster.lab.topology import (
    BRIDGE_HOST,
    CLIENT,
    CONTROL,
    DEFAULT_LAB_NAME,
    NETNS_PREFIX,
    Host,
    bridge_netns,
    check_lab_name,
    lab_netns_prefix,
    make_host,
    node_index,
    parse_netns_name,
    plan_hosts,
)
from raylb.errors import RaylbError

if TYPE_CHECKING:
    from raylb.cluster.localkube.controlplane import ControlPlane

#: Per-lab directory for logs, Ray temp dirs and the optional state file. Short on purpose:
#: Ray puts Unix sockets below it and socket paths are limited to 107 bytes.
STATE_ROOT = Path("/tmp")
STATE_FILE = "lab.json"
#: The lab's Ray token (0600): RAY_AUTH_TOKEN_PATH of every Ray process and client of the lab.
RAY_TOKEN_FILE = "ray-auth-token"
REDIS_DIR = "redis"
HTTP_READY_TIMEOUT_S = 20.0


class LabError(RaylbError):
    """The lab cannot be built or found as asked."""


def state_dir(name: str) -> Path:
    return STATE_ROOT / f"{NETNS_PREFIX}{check_lab_name(name)}"


def lab_namespaces(name: str) -> list[str]:
    """Existing namespaces of lab `name`, found by name alone."""
    prefix = lab_netns_prefix(name)
    return [n for n in ns.list_netns() if n.startswith(prefix) and parse_netns_name(n)]


def _teardown(namespaces: Sequence[str], *, lab: str | None = None) -> list[str]:
    """Kill every process in the namespaces (TERM, grace, KILL), then delete them (bridge last).
    With `lab`, its kubelet nodes' pods go first: they live in namespaces the CNI plugin made,
    found through the nodes' cgroup subtrees."""
    for cgroup in kubecluster.lab_cgroups(lab) if lab else []:
        kubecluster.kill_pods(cgroup)
    ordered = sorted(namespaces, key=lambda n: n.endswith(f"-{BRIDGE_HOST}"))
    survivors = ns.kill_all(ordered)
    for name in ordered:
        ns.remove(name)
    return survivors


def down(name: str = DEFAULT_LAB_NAME) -> list[str]:
    """Remove lab `name` (idempotent). Returns the namespaces it removed."""
    namespaces = lab_namespaces(name)
    _teardown(namespaces, lab=name)
    _remove_cgroups(name)
    shutil.rmtree(state_dir(name), ignore_errors=True)
    return namespaces


def _remove_cgroups(name: str) -> None:
    """After the nodes' daemons are gone: the pods' cgroups (and a pod the kubelet had just
    started as the node died)."""
    for cgroup in kubecluster.lab_cgroups(name):
        kubecluster.kill_pods(cgroup)


def down_all() -> list[str]:
    """Remove every namespace named rlb-*: all labs on this machine, whoever started them."""
    namespaces = [n for n in ns.list_netns() if n.startswith(NETNS_PREFIX)]
    labs = sorted({parsed[0] for n in namespaces if (parsed := parse_netns_name(n))})
    for lab in labs:
        for cgroup in kubecluster.lab_cgroups(lab):
            kubecluster.kill_pods(cgroup)
    _teardown(namespaces)
    for lab in labs:
        _remove_cgroups(lab)
        shutil.rmtree(state_dir(lab), ignore_errors=True)
    return namespaces


class Lab:
    """A running lab. Build one with `Lab.up()`, find a running one with `Lab.attach()`."""

    def __init__(
        self, name: str, *, nodes: int, ray: bool, http: bool,
        ray_options: ray_nodes.RayOptions | None = None, kube: bool = False,
        kubelets: bool = False,
    ) -> None:  # fmt: skip
        self.name = check_lab_name(name)
        #: The lab is a real Kubernetes cluster: every node a kubelet worker (kubecluster.py).
        self.kubelets = kubelets
        self.hosts: list[Host] = plan_hosts(name, nodes=nodes)
        self.nodes: list[Host] = [h for h in self.hosts if h.is_node]
        self.control: Host = self.host(CONTROL)
        self.client: Host = self.host(CLIENT)
        self.bridge_netns = bridge_netns(name)
        self.ray = ray
        self.http = http
        self.ray_options = ray_options or ray_nodes.RayOptions()
        self.state_dir = state_dir(name)
        self.redis = Redis(host=self.control, workdir=self.state_dir / REDIS_DIR)
        self.ray_access = ray_nodes.RayAccess(
            token_path=self.state_dir / RAY_TOKEN_FILE, redis_address=self.redis.address,
            redis_password_path=self.redis.password_path, storage_namespace=f"{NETNS_PREFIX}{self.name}",
        )  # fmt: skip
        #: Session IDs of the head's `ray start` and of redis-server (see ray_nodes.start).
        self.sessions: dict[str, int] = {}
        self.want_kube = kube
        #: Where the lab's API server answers and its kubeconfigs (None without kube).
        self.kube: lab_kube.LabKube | None = None
        self._kube_plane: ControlPlane | None = None  # whose processes this object spawned
        self._children: list[subprocess.Popen[Any]] = []
        #: Imported into every kubelet node's containerd when it starts (nothing can be pulled).
        self.node_images: list[images.ImageArchive] = []
        self._state_lock = threading.Lock()  # Ray and the API server start on two threads

    # --- life cycle ------------------------------------------------------------------------------

    @classmethod
    def up(
        cls, *, name: str = DEFAULT_LAB_NAME, nodes: int = 3, ray: bool = False, http: bool = True,
        ray_options: ray_nodes.RayOptions | None = None, kube: bool = False,
        kubelets: bool = False,
    ) -> Lab:  # fmt: skip
        """Build the lab; on any failure remove whatever was built and re-raise.

        kube=True also starts etcd + kube-apiserver in the control namespace on the control
        address, installs the CRDs and RBAC and writes `admin.kubeconfig` and
        `operator.kubeconfig` into the state directory (see `lab.kube`). kubelets=True makes
        the lab a real cluster (implies kube, replaces the per-node HTTP servers with pods
        behind kube-proxy): see kubecluster.py."""
        if kubelets:
            kube, http = True, False
        lab = cls(
            name, nodes=nodes, ray=ray, http=http, ray_options=ray_options, kube=kube,
            kubelets=kubelets,
        )  # fmt: skip
        existing = lab_namespaces(name)
        if existing:
            raise LabError(
                f"lab {name!r} already exists (namespaces {', '.join(existing)}); "
                f"remove it with `raylb lab down --name {name}`"
            )
        try:
            lab._build()
        except BaseException:
            lab.down()
            raise
        return lab

    @classmethod
    def attach(cls, name: str = DEFAULT_LAB_NAME) -> Lab:
        """The object for a running lab, from its namespaces (and its state file if present)."""
        present = {parse_netns_name(n)[1] for n in lab_namespaces(name)}  # type: ignore[index]
        node_names = sorted((h for h in present if h.startswith("node")), key=node_index)
        if not node_names or not {CONTROL, CLIENT, BRIDGE_HOST} <= present:
            raise LabError(f"lab {name!r} is not running (found namespaces: {sorted(present)})")
        state: dict[str, object] = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads((state_dir(name) / STATE_FILE).read_text())
        ray_running = bool(ns.pids(make_host(name, CONTROL).netns))
        lab = cls(
            name, nodes=len(node_names), ray=bool(state.get("ray", ray_running)),
            http=bool(state.get("http", True)),
        )  # fmt: skip
        if isinstance(state.get("kube"), dict):
            lab.kube = lab_kube.LabKube.from_dict(state["kube"])  # type: ignore[arg-type]
            lab.want_kube = True
        lab.kubelets = bool(state.get("kubelets", False))
        if isinstance(state.get("sessions"), dict):
            lab.sessions = {str(k): int(v) for k, v in state["sessions"].items()}  # type: ignore[union-attr]
        return lab

    def _build(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for netns_name in [self.bridge_netns, *(h.netns for h in self.hosts)]:
            ns.create(netns_name)
        build.build_bridge(self.bridge_netns)
        for host in self.hosts:
            build.plug_host(self.bridge_netns, host)
            build.configure_host(host)
        self._write_state()
        # The API server's cold start (~10-20 s) overlaps Ray's; `with` waits for both, also
        # when Ray fails, so no server starts after a teardown.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab-kube") as pool:
            kube_started = pool.submit(self.start_kube) if self.want_kube else None
            if self.http:
                for node in self.nodes:
                    self.start_http(node)
                for node in self.nodes:
                    self._wait_http(node)
            if self.ray:
                self.start_ray()
        if kube_started is not None:
            kube_started.result()
            self._write_state()
        if self.kubelets:
            self.start_kubelets()

    def down(self) -> None:
        _teardown(lab_namespaces(self.name), lab=self.name)
        _remove_cgroups(self.name)
        self._reap()
        if self._kube_plane is not None:
            lab_kube.reap(self._kube_plane)
            self._kube_plane = None
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _write_state(self) -> None:
        state: dict[str, object] = {
            "nodes": len(self.nodes), "ray": self.ray, "http": self.http, "kubelets": self.kubelets,
            "sessions": self.sessions,
        }  # fmt: skip
        if self.kube is not None:
            state["kube"] = self.kube.as_dict()
        with self._state_lock:
            (self.state_dir / STATE_FILE).write_text(json.dumps(state) + "\n")

    def _reap(self) -> None:
        for child in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1.0)
        self._children = [c for c in self._children if c.poll() is None]

    # --- hosts -----------------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"lab {self.name!r} has no host {name!r}")

    def _resolve(self, host: Host | str) -> Host:
        return self.host(host) if isinstance(host, str) else host

    def run(
        self, host: Host | str, argv: Sequence[str], *, check: bool = True,
        timeout_s: float = hosts.DEFAULT_RUN_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return hosts.run(self._resolve(host).netns, argv, check=check, timeout_s=timeout_s)

    def popen(
        self, host: Host | str, argv: Sequence[str], **kwargs: object
    ) -> subprocess.Popen[Any]:
        child = hosts.popen(self._resolve(host).netns, argv, **kwargs)
        self._children.append(child)
        return child

    def pids(self, host: Host | str) -> list[int]:
        return ns.pids(self._resolve(host).netns)

    def kill_host(self, host: Host | str) -> None:
        """Node failure: SIGKILL every process in the host's namespace at once."""
        survivors = ns.kill_all([self._resolve(host).netns], graceful=False)
        self._reap()
        if survivors:
            raise LabError(f"processes {survivors} in {self._resolve(host).netns} survived SIGKILL")

    def kill_node(self, node: Host | str) -> None:
        """A kubelet node fails: its port on the lab bridge goes down, then every process in its
        namespace dies (kubelet, containerd, shims, hostNetwork pods, raylet), then its pods,
        which live in namespaces of their own but in the node's cgroup subtree. The port goes
        first because a dead machine's kernel stops forwarding, and a namespace's does not:
        kube-proxy's rules would go on sending the VIP's traffic to the pods (here and on other
        nodes) for the second the killing takes, hiding the outage. `start_worker` brings the
        node back."""
        node = self._resolve(node)
        self.link_down(node)
        self.kill_host(node)
        if self.kubelets and (left := kubecluster.kill_pods(kubecluster.cgroup_name(self.name, node.name))):
            raise LabError(f"pods of {node.name} survived SIGKILL: {sorted(left)}")

    def link_down(self, host: Host | str, *, side: str = "bridge") -> None:
        """Cable pulled: the host's port on the bridge (default) or its own eth0 goes down."""
        self._set_link(self._resolve(host), up=False, side=side)

    def link_up(self, host: Host | str, *, side: str = "bridge") -> None:
        self._set_link(self._resolve(host), up=True, side=side)

    def _set_link(self, host: Host, *, up: bool, side: str) -> None:
        if side == "bridge":
            build.set_link(self.bridge_netns, host.bridge_port, up=up)
        elif side == "host":
            build.set_link(host.netns, host.ifname, up=up)
        else:
            raise ValueError(f"side={side!r}: use 'bridge' or 'host'")

    def ping(self, src: Host | str, address: object, *, timeout_s: float = 1.0) -> bool:
        netns = self._resolve(src).netns
        return hosts.ping(netns, address, timeout_s=timeout_s)  # type: ignore[arg-type]

    def http_get(self, src: Host | str, address: object, **kwargs: object) -> tuple[int, str]:
        return hosts.http_get(self._resolve(src).netns, address, **kwargs)  # type: ignore[arg-type]

    # --- per-node HTTP server --------------------------------------------------------------------

    def start_http(self, node: Host | str) -> subprocess.Popen[Any]:
        node = self._resolve(node)
        log = (self.state_dir / f"{node.name}-http.log").open("ab")
        with log:
            return self.popen(
                node, [sys.executable, "-m", "raylb.cluster.lab.http", "--name", node.name],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _wait_http(self, node: Host) -> None:
        hosts.wait_until(
            lambda: hosts.tcp_open(self.client.netns, node.ipv4, 80),
            timeout_s=HTTP_READY_TIMEOUT_S,
            what=f"HTTP on {node.name} ({node.ipv4}:80) from the client",
        )

    # --- Ray -------------------------------------------------------------------------------------

    @property
    def ray_address(self) -> str:
        return ray_nodes.RAY_ADDRESS

    @property
    def dashboard_url(self) -> str:
        return ray_nodes.DASHBOARD_URL

    def _ray_temp_dir(self, host: Host) -> Path:
        return self.state_dir / f"ray-{host.name}"

    def _ray_log(self, host: Host) -> Path:
        return self.state_dir / f"{host.name}-ray-start.log"

    def start_ray(self) -> None:
        """The token and Redis, the head in the control namespace, then one raylet per node
        (started in parallel)."""
        write_secret(self.ray_access.token_path)
        self.redis.write_config()
        self.start_redis()
        self.start_ray_head(wait_nodes=False)
        started = [(node, self._start_raylet(node)) for node in self.nodes]
        for node, proc in started:
            ray_nodes.wait_started(proc, host=node, log_path=self._ray_log(node))
        self.ray = True
        self._write_state()
        self.wait_ray_nodes()

    def start_ray_head(self, *, wait_nodes: bool = True) -> None:
        """`ray start --head` on the control host with the lab's Redis: a head started again
        after a crash reads the cluster back from Redis and the raylets reconnect to it."""
        opts, head = self.ray_options, self.control
        # What a rebooted machine forgets: `ray start --head` refuses to start where its last
        # start recorded a cluster that some raylet (in any namespace: it greps `ps`) still
        # names. That cluster is the one this head resumes from Redis.
        (self._ray_temp_dir(head) / ray_nodes.CURRENT_CLUSTER_FILE).unlink(missing_ok=True)
        argv = ray_nodes.head_argv(head, temp_dir=self._ray_temp_dir(head), options=opts, access=self.ray_access)
        env = {**ray_nodes.ray_env(opts, self.ray_access), **self.ray_access.head_env()}
        proc = ray_nodes.start(head, argv, log_path=self._ray_log(head), env=env)
        self.sessions["ray-head"] = proc.pid
        self._write_state()
        ray_nodes.wait_started(proc, host=head, log_path=self._ray_log(head))
        if wait_nodes:
            self.wait_ray_nodes()

    def wait_ray_nodes(self) -> None:
        """Until the head and every node's raylet are alive in the GCS."""
        env = ray_nodes.ray_env(self.ray_options, self.ray_access)
        ray_nodes.wait_alive(self.control, count=1 + len(self.nodes), env=env)

    def kill_ray_head(self) -> None:
        """The Ray head's machine loses power, but Redis (and an API server) on other machines
        keep running: SIGKILL every process of the head's session, nothing else."""
        self._kill_session("ray-head")

    def start_redis(self) -> None:
        proc = self.redis.start()
        self._children.append(proc)
        self.sessions["redis"] = proc.pid
        self._write_state()

    def kill_redis(self) -> None:
        """Redis crashes (SIGKILL); its append-only file stays for the next start."""
        self._kill_session("redis")

    def _kill_session(self, what: str) -> None:
        session = self.sessions.get(what)
        if session is None:
            raise LabError(f"lab {self.name!r} has no {what} running (not started by this lab)")
        survivors = ns.kill_session(self.control.netns, session)
        self._reap()
        if survivors:
            raise LabError(f"{what} processes {survivors} in {self.control.netns} survived SIGKILL")

    def _start_raylet(self, node: Host) -> subprocess.Popen[Any]:
        opts = self.ray_options
        argv = ray_nodes.node_argv(node, temp_dir=self._ray_temp_dir(node), options=opts)
        env = ray_nodes.ray_env(opts, self.ray_access)
        return ray_nodes.start(node, argv, log_path=self._ray_log(node), env=env)

    def restart_node(self, node: Host | str) -> None:
        """The machine comes back: whatever still runs is killed, then HTTP and the raylet start
        again (same address, same Ray label)."""
        node = self._resolve(node)
        if not node.is_node:
            raise LabError(f"{node.name} is not a node")
        self.kill_host(node)
        if self.http:
            self.start_http(node)
            self._wait_http(node)
        if self.ray:
            ray_nodes.wait_started(
                self._start_raylet(node), host=node, log_path=self._ray_log(node)
            )

    # --- Kubernetes ------------------------------------------------------------------------------

    def start_kube(self, progress: Callable[[str], None] = lambda line: None) -> lab_kube.LabKube:
        """etcd + kube-apiserver on the control host, CRDs and RBAC installed, kubeconfigs
        written; recorded in the state file."""
        plane, info = lab_kube.start(
            self.control, state_dir=self.state_dir, progress=progress, cluster=self.kubelets
        )
        self._kube_plane, self.kube = plane, info
        self.want_kube = True
        self._write_state()
        return info

    def _worker_dirs(self, node: Host) -> kubecluster.WorkerDirs:
        return kubecluster.WorkerDirs(self.state_dir / "nodes" / node.name)

    def containerd_socket(self, node: Host | str) -> Path:
        """Where a kubelet node's containerd listens."""
        return self._worker_dirs(self._resolve(node)).containerd_socket

    def kube_binary(self, name: str) -> Path:
        """One of the lab's Kubernetes binaries (kubectl, ...), as its control plane was built."""
        if self._kube_plane is None:
            raise LabError("this process did not start the lab's API server")
        return self._kube_plane.binaries[name]

    def start_kubelets(self) -> None:
        """Controller-manager, scheduler and CoreDNS on the control host; containerd, a kubelet
        and kube-proxy on every node; pod routes everywhere; returns once every Node is Ready."""
        plane = self._kube_plane
        if plane is None:
            raise LabError("start the API server first (kube=True)")
        binaries = plane.binaries
        built = images.ensure_images()
        self.node_images = [built["pause"], built["backend"], *self.node_images]
        workdir = self.state_dir / "control"
        workdir.mkdir(parents=True, exist_ok=True)
        with lab_kube.admin_api(self.control, self.kube) as api:  # type: ignore[arg-type]
            manifests.apply_paths(api, kuberay_crds())  # the operator's own version's CRDs
        addons = kubecluster.control_addons_argv(
            binaries=binaries, plane=plane, workdir=workdir, bind=str(self.control.ipv4)
        )
        for daemon, argv in addons.items():
            kubecluster.spawn_in(self.control.netns, argv, log=workdir / f"{daemon}.log", cwd=workdir)
        build.add_cluster_routes(self.hosts, self.nodes, control=self.control)
        for node in self.nodes:
            self.start_worker(node)
        names = [n.name for n in self.nodes]
        with lab_kube.admin_api(self.control, self.kube) as api:  # type: ignore[arg-type]
            kubecluster.wait_until(
                lambda: kubecluster.nodes_ready(api, names) == sorted(names),
                timeout_s=kubecluster.NODE_READY_TIMEOUT_S,
                what=lambda: "nodes not Ready: "
                + ", ".join(sorted(set(names) - set(kubecluster.nodes_ready(api, names))))
                + "".join(kubecluster.tail(self._worker_dirs(n).log("kubelet")) for n in self.nodes),
            )

    def start_worker(self, node: Host | str) -> None:
        """containerd, kubelet and kube-proxy of one node (again, after `kill_host`)."""
        node = self._resolve(node)
        plane = self._kube_plane
        if plane is None:
            raise LabError("this process did not start the lab's API server")
        self.link_up(node)  # after kill_node
        dirs = self._worker_dirs(node)
        script = kubecluster.write_worker(
            dirs, lab=self.name, node=node, node_index=node_index(node.name), plane=plane,
            binaries=plane.binaries, dns=str(self.control.ipv4),
        )  # fmt: skip
        holder = kubecluster.start_worker(dirs, node=node, lab=self.name, script=script)
        kubecluster.wait_socket(dirs, holder)
        for image in self.node_images:
            images.import_into(image, containerd_socket=dirs.containerd_socket)

    def start_prometheus(self) -> subprocess.Popen[Any]:
        """A real Prometheus on the control address scraping every raylb endpoint (prometheus.py)."""
        from raylb.cluster.lab import prometheus  # noqa: PLC0415

        return prometheus.start(self)

    def driver_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a Ray driver run with `lab.popen(lab.control, [...])`: the lab's
        address and token."""
        env = ray_nodes.ray_env(self.ray_options, self.ray_access)
        env["RAY_ADDRESS"] = self.ray_address
        env.update(extra or {})
        return env

