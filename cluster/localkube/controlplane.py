"""A real, throwaway Kubernetes control plane: one etcd and one kube-apiserver.

raylb is tested against the real API server (CRD validation, status subresources, RBAC,
watches, 409 conflicts). This module starts both processes with a fresh PKI, random free
ports and a temporary data directory, hands out kubeconfigs (admin, and raylb's operator
ServiceAccount with exactly the RBAC in deploy/rbac/), and stops everything by PID.

By default there is no kubelet, scheduler or controller-manager: callers create Nodes,
Services and EndpointSlices themselves, and the ServiceAccount admission plugin is disabled
because nothing would create the `default` ServiceAccount it requires for Pods. With
`cluster=True` (the in-cluster lab, cluster/lab/kubecluster.py) the API server is configured
for a cluster that has them: ServiceAccount admission, the `kubernetes` Service's endpoint,
Node authorization for kubelets.

By default both listen on loopback of the current network namespace; `raylb lab up` passes
`netns=` and `bind_address=` to run them inside the lab's control namespace instead (etcd
stays on that namespace's loopback, the API server binds the given address).

The servers die with the process that started them, even when it is SIGKILLed and no exit
hook runs (the kernel's parent-death signal), unless it asks them to outlive it
(`outlive_caller=True`, as `raylb lab up` does: the lab's namespace owns them then).

    with ControlPlane.start() as cp:
        api = cp.admin_client()
        ...
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml
from kubernetes import client, config

from raylb.cluster.kube import manifests
from raylb.cluster.localkube import pki
from raylb.cluster.localkube.provision import Binaries, ensure_binaries
from raylb.errors import PermanentError
from raylb.reconcile import OPERATOR_NAMESPACE

REPO = Path(__file__).resolve().parents[2]
RBAC_DIR = REPO / "deploy" / "rbac"

SERVICE_CLUSTER_IP_RANGES = "198.19.0.0/16,2001:db8:19::/108"  # never put on an interface
OPERATOR_SERVICE_ACCOUNT = "raylb-operator"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# A cold kube-apiserver needs ~5-15 s on two busy cores (it installs ~60 API groups and its
# bootstrap RBAC before /readyz turns green); 180 s bounds a machine under heavy load.
READY_TIMEOUT_S = 180.0
POLL_INTERVAL_S = 0.2
# kube-apiserver drains in-flight requests on SIGTERM; a few seconds is plenty here.
STOP_TIMEOUT_S = 20.0
# Lifetime of the operator's ServiceAccount token (longest test session or lab run).
TOKEN_EXPIRATION_S = 24 * 3600


def https_ok(url: str, ca: str, cert: str, key: str) -> bool:
    """True when GET `url` answers 200 over TLS verified against `ca`, as the client `cert`."""
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):  # refused, reset, TLS, HTTP status errors
        return False


# The same check run inside another network namespace (a fresh interpreter there).
_PROBE_IN_NETNS = (
    "import sys; from raylb.cluster.localkube.controlplane import https_ok; "
    "sys.exit(0 if https_ok(*sys.argv[1:5]) else 1)"
)



def free_ports(address: str, count: int) -> list[int]:
    """`count` distinct TCP ports that are free on `address` right now (all held while picking)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    held = [socket.socket(family, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in held:
            sock.bind((address, 0))
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


_FREE_PORTS_IN_NETNS = (
    "import sys; from raylb.cluster.localkube.controlplane import free_ports; "
    "print(*free_ports(sys.argv[1], int(sys.argv[2])))"
)


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@dataclass(frozen=True)
class Endpoints:
    """Addresses and ports chosen for one control plane."""

    bind_address: str
    apiserver_port: int
    etcd_client_port: int
    etcd_peer_port: int

    @property
    def url(self) -> str:
        return f"https://{_url_host(self.bind_address)}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_client_port}"


class ControlPlane:
    """etcd + kube-apiserver processes and everything they need on disk."""

    def __init__(
        self, *, binaries: Binaries, workdir: Path, endpoints: Endpoints, netns: str | None,
        outlive_caller: bool = False, cluster: bool = False,
    ) -> None:  # fmt: skip
        self.binaries = binaries
        self.cluster = cluster
        self.outlive_caller = outlive_caller
        self.workdir = workdir
        self.endpoints = endpoints
        self.netns = netns
        self.pki = pki.write_pki(workdir / "pki", bind_address=endpoints.bind_address)
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self._write_kubeconfig(
            self.admin_kubeconfig, user={
                "client-certificate-data": _b64(self.pki.admin_cert.read_bytes()),
                "client-key-data": _b64(self.pki.admin_key.read_bytes()),
            },
        )
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._operator_kubeconfig: Path | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        bind_address: str = "127.0.0.1",
        netns: str | None = None,
        binaries: Binaries | None = None,
        workdir: Path | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        outlive_caller: bool = False,
        cluster: bool = False,
    ) -> ControlPlane:
        """Start etcd and kube-apiserver and return once /readyz answers 200."""
        binaries = binaries or ensure_binaries(lambda line: print(f"[provision] {line}", flush=True))
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="raylb-controlplane-"))
        else:
            workdir.mkdir(parents=True, exist_ok=True)
        # One call holds all three sockets at once, so the ports are distinct; the API server's
        # port must also be free on the bind address (a wildcard one covers loopback too).
        ports = _free_ports("127.0.0.1", 3, netns)
        if bind_address != "127.0.0.1":
            ports[0] = next(p for p in _free_ports(bind_address, 3, netns) if p not in ports[1:])
        endpoints = Endpoints(bind_address, ports[0], ports[1], ports[2])
        plane = cls(
            binaries=binaries, workdir=workdir, endpoints=endpoints, netns=netns,
            outlive_caller=outlive_caller, cluster=cluster,
        )  # fmt: skip
        if not outlive_caller:
            atexit.register(plane.stop)
        try:
            plane._start_etcd()
            plane._start_apiserver()
            plane.wait_ready(timeout_s=ready_timeout_s)
        except BaseException:
            plane.stop()
            raise
        return plane

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.endpoints.url

    def _argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            # `ip netns exec` execs the command, so the PID we hold is the server itself.
            # A new session keeps a Ctrl-C in the test terminal from reaching the servers
            # before stop() runs.
            return subprocess.Popen(
                self._argv(argv), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir,
                preexec_fn=None if self.outlive_caller else _die_with_parent(os.getpid()),
            )
        finally:
            log.close()

    def _start_etcd(self) -> None:
        e = self.endpoints
        peer = f"http://127.0.0.1:{e.etcd_peer_port}"
        self._etcd = self._spawn("etcd", [
            str(self.binaries.etcd),
            "--name=raylb",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={e.etcd_url}",
            f"--advertise-client-urls={e.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=raylb={peer}",
            "--log-level=warn",
            # Throwaway data: skipping fsync makes every write ~10x cheaper on a shared disk.
            "--unsafe-no-fsync",
        ])

    def _apiserver_argv(self) -> list[str]:
        e, p = self.endpoints, self.pki
        if self.cluster:
            differences = [
                "--authorization-mode=Node,RBAC",
                # kubectl logs/exec reach kubelets as the admin (kubelets trust the cluster CA).
                f"--kubelet-client-certificate={p.admin_cert}",
                f"--kubelet-client-key={p.admin_key}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            differences = [
                "--authorization-mode=RBAC",
                # The `kubernetes` Service's endpoint would be the loopback advertise address,
                # which Endpoints validation rejects (an error every 10 s); nothing dials it.
                "--endpoint-reconciler-type=none",
                "--disable-admission-plugins=ServiceAccount",
            ]
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={e.etcd_url}",
            f"--bind-address={e.bind_address}",
            f"--advertise-address={e.bind_address if e.bind_address not in ('0.0.0.0', '::') else '127.0.0.1'}",
            f"--secure-port={e.apiserver_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={p.serving_cert}",
            f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_cert}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGES}",
            "--allow-privileged=true",
            *differences,
            "--profiling=false",
            "--v=1",
        ]

    def _start_apiserver(self) -> None:
        self._apiserver = self._spawn("kube-apiserver", self._apiserver_argv())

    def _probe(self, path: str) -> bool:
        args = [f"{self.url}{path}", str(self.pki.ca_cert), str(self.pki.admin_cert), str(self.pki.admin_key)]
        if not self.netns:
            return https_ok(*args)
        try:
            return subprocess.run(
                self._argv([sys.executable, "-c", _PROBE_IN_NETNS, *args]), timeout=30, check=False,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def wait_ready(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll /readyz until 200; fail early, with the log tail, if a process exits."""
        deadline = time.monotonic() + timeout_s
        while not self._probe("/readyz"):
            for name, proc in (("etcd", self._etcd), ("kube-apiserver", self._apiserver)):
                if proc is None or proc.poll() is not None:
                    raise PermanentError(f"{name} exited (code {proc and proc.returncode}):\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise PermanentError(
                    f"kube-apiserver at {self.url} not ready after {timeout_s:.0f} s:\n{self.log_tail('kube-apiserver')}"
                )
            time.sleep(POLL_INTERVAL_S)

    def log_tail(self, name: str, lines: int = 30) -> str:
        log = self.workdir / f"{name}.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def restart_apiserver(self, *, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        """Stop and start kube-apiserver on the same port, etcd and certificates."""
        _terminate(self._apiserver)
        self._start_apiserver()
        self.wait_ready(timeout_s=ready_timeout_s)

    def stop(self) -> None:
        """Terminate both processes (SIGTERM, then SIGKILL) and remove the work directory."""
        _terminate(self._apiserver)
        _terminate(self._etcd)
        self._apiserver = self._etcd = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.stop)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self._etcd, self._apiserver) if p is not None and p.poll() is None]

    # ---- credentials -----------------------------------------------------------------------

    def _write_kubeconfig(self, path: Path, *, user: dict[str, str]) -> None:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "raylb", "cluster": {
                "server": self.url, "certificate-authority-data": _b64(self.pki.ca_cert.read_bytes()),
            }}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "raylb", "context": {"cluster": "raylb", "user": "user"}}],
            "current-context": "raylb",
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)

    def client_kubeconfig(self, path: Path, *, common_name: str, organization: str | None) -> Path:
        """Write a kubeconfig for a client certificate (a kubelet's, kube-proxy's, ...)."""
        cert, key = pki.client_certificate(pki=self.pki, common_name=common_name, organization=organization)
        self._write_kubeconfig(path, user={"client-certificate-data": _b64(cert), "client-key-data": _b64(key)})
        return path

    def admin_client(self) -> client.ApiClient:
        """An ApiClient with cluster-admin rights (O=system:masters)."""
        return config.new_client_from_config(config_file=str(self.admin_kubeconfig))

    def operator_kubeconfig(self) -> Path:
        """Kubeconfig of the metallb-system/raylb-operator ServiceAccount, RBAC from deploy/rbac/.

        Applies deploy/rbac/ (idempotent) and asks the TokenRequest API for a token.
        """
        if self._operator_kubeconfig is None:
            with self.admin_client() as admin:
                manifests.apply_paths(admin, [RBAC_DIR])
                token = client.CoreV1Api(admin).create_namespaced_service_account_token(
                    OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE,
                    client.AuthenticationV1TokenRequest(
                        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_EXPIRATION_S)
                    ),
                ).status.token
            path = self.workdir / "operator.kubeconfig"
            self._write_kubeconfig(path, user={"token": token})
            self._operator_kubeconfig = path
        return self._operator_kubeconfig

    def operator_client(self) -> client.ApiClient:
        """An ApiClient acting as the operator's ServiceAccount."""
        return config.new_client_from_config(config_file=str(self.operator_kubeconfig()))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _free_ports(address: str, count: int, netns: str | None) -> list[int]:
    """free_ports() in the current namespace, or in `netns` through a short-lived interpreter."""
    if not netns:
        return free_ports(address, count)
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", _FREE_PORTS_IN_NETNS, address, str(count)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
    return [int(p) for p in out.stdout.split()]


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG), also
    when the parent is gone already. Tied to the forking thread: spawn from a long-lived one."""

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
            os._exit(1)

    return arm


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL; by PID only."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
