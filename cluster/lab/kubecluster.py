"""The lab as a real Kubernetes cluster: kubelets, containerd, kube-proxy, CNI, controllers.

`raylb lab up --kubernetes` makes every node namespace a worker of its own: containerd and
runc (Debian's), a kubelet registering a real Node, kube-proxy in iptables mode, and pods on a
CNI bridge with addresses from the node's pod CIDR. The control namespace adds the
controller-manager (EndpointSlices, garbage collection, ServiceAccount tokens, node
lifecycle), the scheduler and CoreDNS to etcd and the API server. Nothing the cluster writes
itself (Nodes, EndpointSlices, the service proxy's rules) is written by hand any more.

How a node runs inside a network namespace (facts from ../shared/notes/real-cluster.md):

- The node's daemons run under a holder script started with
  `nsenter --net=<node netns> unshare --mount --uts --propagation private`: a private mount
  namespace where the paths two nodes would share (/var/lib/kubelet, /run/containerd,
  /var/log/pods, /var/log/containers, /run/netns) are bind mounts of the node's own folders,
  and a UTS namespace whose hostname is the node name.
- The kubelet writes six global sysctls at start. Inside the node's mount namespace each of
  them is a bind-mounted regular file holding the value the kubelet wants, and the rest of
  /proc/sys is read-only except /proc/sys/net (per network namespace), so neither the kubelet
  nor kube-proxy changes anything outside the lab. A test checks the root namespace's values.
- Pods live in the cgroup subtree /rlb-<lab>-<node> of every hierarchy (the kubelet's
  cgroupRoot). Their processes are in network namespaces the CNI plugin made, not in the
  node's, so teardown ends them by that subtree (`kill_pods`), then the node by namespace.

Pod CIDRs (198.18.64.0/18, 2001:db8:18:1000::/52) are split per node in `topology`; every lab
host gets a route to each node's pod CIDRs through that node, so pods reach each other, the
control host (CoreDNS, the API server) and the client across the lab bridge without NAT.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raylb.cluster.localkube.controlplane import SERVICE_CLUSTER_IP_RANGES, ControlPlane
from raylb.cluster.localkube.provision import Binaries
from raylb.cluster.lab import images
from raylb.cluster.lab import netns as ns
from raylb.cluster.lab.topology import (
    CLUSTER_DOMAIN,
    POD_NETWORK_V4,
    POD_NETWORK_V6,
    Host,
    pod_cidrs,
)
from raylb.errors import RaylbError

CNI_BIN_DIR = Path("/usr/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The sysctls the kubelet sets at start (pkg/kubelet/cm setupKernelTunables) and the values it
#: wants; bind-mounted as files inside a node so it finds them right and writes nothing.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
#: Paths two nodes' daemons would share: each node binds its own folder over them.
PRIVATE_PATHS = (
    "/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/containerd", "/run/netns",
)
#: The sandbox ("pause") image every pod starts with; imported into each node's containerd.
PAUSE_IMAGE = images.PAUSE_REFERENCE
NODE_READY_TIMEOUT_S = 120.0
SOCKET_WAIT_S = 30.0
POLL_S = 0.2


class KubeClusterError(RaylbError):
    """A worker node or a cluster add-on did not start."""


@dataclass(frozen=True)
class WorkerDirs:
    """Where one worker node keeps everything (below the lab's state directory)."""

    root: Path

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    def private(self, path: str) -> Path:
        return self.root / "private" / path.strip("/").replace("/", "-")

    def log(self, daemon: str) -> Path:
        return self.root / f"{daemon}.log"


def cgroup_name(lab: str, node: str) -> str:
    """The kubelet's cgroupRoot for a node: unique per lab and node, found again by name."""
    return f"rlb-{lab}-{node}"


# --- pure configuration ---------------------------------------------------------------------------


def containerd_config(dirs: WorkerDirs, *, pause_image: str = PAUSE_IMAGE) -> str:
    """containerd 1.6 config: own root, state and socket; CRI with the node's CNI folder."""
    return f"""version = 2
root = "{dirs.root / 'containerd-root'}"
state = "{dirs.root / 'containerd-state'}"
[grpc]
  address = "{dirs.containerd_socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj (real-cluster.md).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{dirs.root / 'cni'}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
  # A runtime table without its type fails every sandbox ("container.Runtime.Name must be set").
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{dirs.root / 'runc'}"
    SystemdCgroup = false
"""


def cni_config(node_index: int) -> dict[str, Any]:
    """A bridge + host-local network with the node's two pod CIDRs; no NAT (routes instead)."""
    v4, v6 = pod_cidrs(node_index)
    return {
        "cniVersion": "0.4.0",
        "name": "raylb-lab",
        "plugins": [
            {
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(v4)}], [{"subnet": str(v6)}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(dirs: WorkerDirs, *, node: Host, cgroup_root: str, ca_file: Path, dns: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": str(node.ipv4),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "cgroupsPerQOS": True,
        "clusterDNS": [dns],
        "clusterDomain": CLUSTER_DOMAIN,
        "containerRuntimeEndpoint": f"unix://{dirs.containerd_socket}",
        "failSwapOn": False,
        "failCgroupV1": False,
        "oomScoreAdj": 0,  # see containerd_config: nobody here may lower an oom_score_adj
        "protectKernelDefaults": False,
        "resolvConf": str(dirs.root / "resolv.conf"),
        "volumePluginDir": str(dirs.root / "volume-plugins"),
        "podLogsDir": "/var/log/pods",
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "rotateCertificates": False,
        # Imported images cannot be pulled again: never collect them, never evict for disk.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "0%", "imagefs.available": "0%"},
        "maxPods": 30,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "2s",
    }


def kube_proxy_config(*, node: Host, kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node.name,
        "bindAddress": str(node.ipv4),
        "mode": "iptables",
        "clusterCIDR": f"{POD_NETWORK_V4},{POD_NETWORK_V6}",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zero: kube-proxy leaves nf_conntrack_max and the timeouts alone (they are global).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def holder_script(dirs: WorkerDirs, *, node: Host, binaries: Binaries) -> str:
    """The script a node's daemons run under (see the module docstring)."""
    lines = ["#!/bin/bash", "set -eu", f"hostname {node.name}"]
    for path in PRIVATE_PATHS:
        private = dirs.private(path)
        lines += [f"mkdir -p {path} {private}", f"mount --bind {private} {path}"]
    # /proc/sys read-only but for /proc/sys/net, which belongs to this network namespace; the
    # kubelet's sysctls are files bound on top (after the read-only mount, which would hide them).
    lines += ["mount --bind /proc/sys /proc/sys", "mount --bind /proc/sys/net /proc/sys/net"]
    for key, value in KUBELET_SYSCTLS.items():
        holder = dirs.root / "sysctl" / key.replace("/", ".")
        lines += [f"printf '%s\\n' {value} > {holder}", f"mount --bind {holder} /proc/sys/{key}"]
    lines += [
        "mount -o remount,bind,ro /proc/sys",
        # A killed node leaves its socket file behind: the wait below must see the new one.
        f"rm -f {dirs.containerd_socket}",
        f"containerd --config {dirs.root / 'containerd.toml'} >>{dirs.log('containerd')} 2>&1 &",
        f"for _ in $(seq 150); do [ -S {dirs.containerd_socket} ] && break; sleep 0.2; done",
        f"{binaries['kubelet']} --config={dirs.root / 'kubelet.yaml'}"
        f" --kubeconfig={dirs.root / 'kubelet.kubeconfig'} --hostname-override={node.name}"
        f" --node-ip={node.ipv4},{node.ipv6} --v=1 >>{dirs.log('kubelet')} 2>&1 &",
        f"{binaries['kube-proxy']} --config={dirs.root / 'kube-proxy.yaml'} --v=1"
        f" >>{dirs.log('kube-proxy')} 2>&1 &",
        "wait",
    ]
    return "\n".join(lines) + "\n"


# --- cgroups --------------------------------------------------------------------------------------


def _hierarchies() -> list[Path]:
    """Every mounted cgroup v1 hierarchy (and the unified one) under /sys/fs/cgroup."""
    if not CGROUP_ROOT.is_dir():
        return []
    return [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists()]


def make_cgroup_root(name: str) -> None:
    """Create /<name> in every hierarchy, as the kubelet requires (cpuset copied from the parent)."""
    for hierarchy in _hierarchies():
        child = hierarchy / name
        child.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / knob).exists() and not (child / knob).read_text().strip():
                (child / knob).write_text((hierarchy / knob).read_text())


def _cgroup_pids(name: str) -> set[int]:
    found: set[int] = set()
    for hierarchy in _hierarchies():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for folder, _dirs, _files in os.walk(top):
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (Path(folder) / "cgroup.procs").read_text().split())
    return found


def kill_pods(name: str, *, timeout_s: float = 10.0) -> set[int]:
    """SIGKILL every process in cgroup subtree `name` (a node's pods) until none is left, then
    remove the subtree. Returns the PIDs that would not die."""
    deadline = time.monotonic() + timeout_s
    me = os.getpid()
    while (left := _cgroup_pids(name) - {me}) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(POLL_S)
    for hierarchy in _hierarchies():
        top = hierarchy / name
        if top.is_dir():
            for folder, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
    return _cgroup_pids(name)


def lab_cgroups(lab: str) -> list[str]:
    """Names of this lab's node cgroup subtrees that exist (for teardown by name alone)."""
    prefix = f"rlb-{lab}-"
    return sorted({p.name for h in _hierarchies() for p in h.glob(f"{prefix}node*") if p.is_dir()})


# --- starting things ------------------------------------------------------------------------------


def write_worker(
    dirs: WorkerDirs, *, lab: str, node: Host, node_index: int, plane: ControlPlane, binaries: Binaries, dns: str,
) -> Path:  # fmt: skip
    """Everything a worker needs on disk; returns its holder script."""
    for sub in ("cni", "sysctl", "runc", "volume-plugins", "private"):
        (dirs.root / sub).mkdir(parents=True, exist_ok=True)
    (dirs.root / "containerd.toml").write_text(containerd_config(dirs))
    (dirs.root / "cni" / "10-raylb-lab.conflist").write_text(json.dumps(cni_config(node_index), indent=2))
    (dirs.root / "resolv.conf").write_text(f"nameserver {dns}\n")
    plane.client_kubeconfig(dirs.root / "kubelet.kubeconfig", common_name=f"system:node:{node.name}",
                            organization="system:nodes")
    proxy_kubeconfig = plane.client_kubeconfig(dirs.root / "kube-proxy.kubeconfig",
                                               common_name="system:kube-proxy", organization=None)
    cgroup = cgroup_name(lab, node.name)
    kubelet = kubelet_config(dirs, node=node, cgroup_root=cgroup, ca_file=plane.pki.ca_cert, dns=dns)
    (dirs.root / "kubelet.yaml").write_text(yaml.safe_dump(kubelet))
    (dirs.root / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(node=node, kubeconfig=proxy_kubeconfig)))
    script = dirs.root / "holder.sh"
    script.write_text(holder_script(dirs, node=node, binaries=binaries))
    script.chmod(0o755)
    return script


def start_worker(dirs: WorkerDirs, *, node: Host, lab: str, script: Path) -> subprocess.Popen[bytes]:
    """Start a worker's holder (containerd, kubelet, kube-proxy) inside the node namespace.
    The holder outlives this process, like the lab's other daemons; it ends with the node."""
    make_cgroup_root(cgroup_name(lab, node.name))
    log = open(dirs.log("holder"), "ab")  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            ["nsenter", f"--net={ns.NETNS_RUN_DIR / node.netns}", "unshare", "--mount", "--uts",
             "--propagation", "private", "--", str(script)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    finally:
        log.close()


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def wait_socket(dirs: WorkerDirs, holder: subprocess.Popen[bytes], *, timeout_s: float = SOCKET_WAIT_S) -> None:
    """Until the node's containerd accepts connections (a killed node leaves its old socket file)."""
    deadline = time.monotonic() + timeout_s
    while not _accepts(dirs.containerd_socket):
        if holder.poll() is not None or time.monotonic() > deadline:
            raise KubeClusterError(f"containerd did not start: {tail(dirs.log('containerd'))}{tail(dirs.log('holder'))}")
        time.sleep(POLL_S)


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"\n({path.name}: no log)"
    text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return f"\n--- {path} ---\n{text}"


def spawn_in(netns: str, argv: Sequence[str], *, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A control-host daemon in the control namespace that outlives this process."""
    out = open(log, "ab")  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd,
        )  # fmt: skip
    finally:
        out.close()


def corefile(*, bind: str, kubeconfig: Path) -> str:
    """CoreDNS serving cluster.local from the API server (and nothing else: no upstream)."""
    return f""".:53 {{
    bind {bind}
    errors
    health {bind}:8080
    ready {bind}:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loadbalance
}}
"""


def control_addons_argv(
    *, binaries: Binaries, plane: ControlPlane, workdir: Path, bind: str,
) -> dict[str, list[str]]:  # fmt: skip
    """argv of the controller-manager, the scheduler and CoreDNS (run as the cluster admin)."""
    admin = str(plane.admin_kubeconfig)
    (workdir / "Corefile").write_text(corefile(bind=bind, kubeconfig=plane.admin_kubeconfig))
    return {
        "kube-controller-manager": [
            str(binaries["kube-controller-manager"]), f"--kubeconfig={admin}",
            f"--authentication-kubeconfig={admin}", f"--authorization-kubeconfig={admin}",
            "--bind-address=127.0.0.1", "--leader-elect=false", "--controllers=*",
            f"--service-account-private-key-file={plane.pki.sa_key}",
            f"--root-ca-file={plane.pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGES}",
            # A killed lab node turns NotReady within seconds, not the default 50 s.
            "--node-monitor-period=1s", "--node-monitor-grace-period=8s",
            "--v=1",
        ],
        "kube-scheduler": [
            str(binaries["kube-scheduler"]), f"--kubeconfig={admin}",
            f"--authentication-kubeconfig={admin}", f"--authorization-kubeconfig={admin}",
            "--bind-address=127.0.0.1", "--leader-elect=false", "--v=1",
        ],
        "coredns": [str(binaries["coredns"]), "-conf", str(workdir / "Corefile")],
        # The KubeRay operator as its users install it, but as a process on the control host
        # (its Deployment would need its own image); controller-runtime reads KUBECONFIG.
        "kuberay-operator": [
            "env", f"KUBECONFIG={admin}", str(binaries["kuberay-operator"]),
            "--metrics-addr=127.0.0.1:8082", "--health-probe-bind-address=127.0.0.1:8083",
            "--enable-leader-election=false", "--log-stdout-encoder=console",
        ],
    }


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    with ns.in_netns(netns):
        yield


def nodes_ready(api: Any, names: Sequence[str]) -> list[str]:
    """The nodes among `names` whose Ready condition is True."""
    from kubernetes import client  # noqa: PLC0415 - only the lab side needs it

    ready = []
    for item in client.CoreV1Api(api).list_node().items:
        conditions = {c.type: c.status for c in (item.status.conditions or [])}
        if item.metadata.name in names and conditions.get("Ready") == "True":
            ready.append(item.metadata.name)
    return sorted(ready)


def wait_until(check: Callable[[], bool], *, timeout_s: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise KubeClusterError(what())
        time.sleep(POLL_S)
