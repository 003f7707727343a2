"""Debian packages the lab runs, installed by `make test`'s provisioning (never by hand).

The in-cluster lab runs real container runtimes, CNI plugins, Redis (Ray's GCS fault
tolerance) and Prometheus, and builds images from a Debian rootfs. Debian ships the real
thing for each, so the provisioning installs them with apt-get: once, on a fresh machine;
a machine that has them all costs one `dpkg-query`.

    python -m raylb.cluster.lab.packages     # exits 0 when every package is installed
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable

# Why each is here, in the order a node needs them.
DEBIAN_PACKAGES = (
    "containerd",                   # each lab node's container runtime (CRI for the kubelet)
    "runc",                         # the OCI runtime containerd starts pods with
    "containernetworking-plugins",  # bridge + host-local + loopback + portmap in /usr/lib/cni
    "iptables",                     # kube-proxy's iptables mode, the CNI bridge's masquerade
    "conntrack",                    # kube-proxy clears stale UDP flows with it
    "mmdebstrap",                   # the lab's base image: a Debian rootfs with Python
    "buildah",                      # builds deploy/kuberay/Dockerfile without a Docker engine
    "redis-server",                 # Ray GCS fault tolerance in the lab's control namespace
    "prometheus",                   # scrapes raylb's metrics endpoints in the lab
)

Progress = Callable[[str], None]


def missing(packages: Iterable[str] = DEBIAN_PACKAGES) -> list[str]:
    """The packages dpkg does not report as installed."""
    wanted = list(packages)
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *wanted],
        capture_output=True, text=True, check=False,
    )
    installed = {
        line.split()[0] for line in out.stdout.splitlines() if line.endswith(" installed")
    }
    return [name for name in wanted if name not in installed]


def ensure_packages(progress: Progress = print) -> list[str]:
    """Install what is missing; returns what was installed. Needs root (CI is root)."""
    todo = missing()
    if not todo:
        return []
    if os.geteuid() != 0:
        raise SystemExit(f"as root, install: apt-get install {' '.join(todo)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    progress(f"apt-get install {' '.join(todo)}")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *todo], check=True, env=env
    )
    still = missing(todo)
    if still:
        raise SystemExit(f"apt-get finished but these are still not installed: {' '.join(still)}")
    return todo


def main() -> int:
    installed = ensure_packages(lambda line: print(f"[packages] {line}", flush=True))
    print(f"[packages] ready ({'installed ' + ' '.join(installed) if installed else 'cached'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
