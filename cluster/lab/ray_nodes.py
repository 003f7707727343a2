"""Ray in the lab: the head in the control namespace, one raylet per node namespace.

Each namespace is a machine with its own port space, so every Ray node uses Ray's default ports
without colliding; what they would share is the filesystem, so each gets its own --temp-dir
(sessions, sockets, logs) under the lab's state directory. Nodes carry the label
`raylb.io/node=<name>` (and a custom resource `raylb-node-<name>: 1`) so actors can be pinned.

Ray is stopped by namespace (SIGTERM/SIGKILL of the processes in it), never with `ray stop`,
which kills by process-name pattern across the whole machine, other people's clusters included.

Only token holders get in (RAY_AUTH_MODE=token): every Ray process of the lab, and every
client the lab starts, finds the lab's token through RAY_AUTH_TOKEN_PATH (a 0600 file in the
state directory); a host on the node network without it is refused by the GCS, the job server
and the dashboard. The head keeps its tables in the lab's Redis (redis.py) under a storage
namespace named after the lab, so a head that dies and comes back is the same cluster: the
raylets reconnect, and detached actors that lived on the head are restarted.

`python -m raylb.cluster.lab.ray_nodes wait --address A --count N` (run inside the control
namespace) polls the GCS node table until N nodes are alive; lab.py uses it for readiness.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylb.cluster.lab import hosts
from raylb.cluster.lab.topology import CONTROL_HOST_BYTE, SUBNET_V4, Host

#: GCS port of the head. Every lab has its own control namespace, so the default port is free.
GCS_PORT = 6379
DASHBOARD_PORT = 8265
#: Object store per Ray node: small, the box is shared (Ray's minimum is 75 MiB).
OBJECT_STORE_BYTES = 100 * 1024 * 1024
NUM_CPUS = 1
#: Where `ray start` records the address of the cluster it started, in its --temp-dir.
CURRENT_CLUSTER_FILE = "ray_current_cluster"
NODE_LABEL = "raylb.io/node"
ROLE_LABEL = "raylb.io/role"
#: `ray start` itself returns once the node's processes run; registration follows shortly.
RAY_START_TIMEOUT_S = 120.0
NODES_ALIVE_TIMEOUT_S = 60.0

HEAD_IPV4 = SUBNET_V4.network_address + CONTROL_HOST_BYTE
RAY_ADDRESS = f"{HEAD_IPV4}:{GCS_PORT}"
DASHBOARD_URL = f"http://{HEAD_IPV4}:{DASHBOARD_PORT}"


def node_resource(host_name: str) -> str:
    """Custom resource that only node `host_name` has (pinning without label selectors)."""
    return f"raylb-node-{host_name}"


def ray_binary() -> str:
    return str(Path(sys.executable).parent / "ray")


@dataclass(frozen=True)
class RayOptions:
    """What can be tuned per lab: extra environment and GCS/raylet system config."""

    env: Mapping[str, str] = field(default_factory=dict)
    system_config: Mapping[str, object] = field(default_factory=dict)
    object_store_bytes: int = OBJECT_STORE_BYTES




@dataclass(frozen=True)
class RayAccess:
    """What a Ray process of the lab needs besides its address: the token it proves itself with
    and, for the head, the Redis holding the GCS tables."""

    token_path: Path
    redis_address: str
    redis_password_path: Path
    storage_namespace: str

    def client_env(self) -> dict[str, str]:
        """The variables a client (driver, `ray job submit`, `raylb`) needs to be let in."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def head_env(self) -> dict[str, str]:
        return {
            **self.client_env(),
            "RAY_REDIS_ADDRESS": self.redis_address,
            # The head's tables live under this key prefix in Redis; a head started again with
            # the same namespace is the same cluster (same cluster ID, same detached actors).
            "RAY_external_storage_namespace": self.storage_namespace,
        }


#: Without GCS fault tolerance a raylet exits this long after it lost the head (Ray's default
#: is 60 s), and its workers - the speakers - with it. raylb's data plane must outlive the
#: control plane, so lab raylets wait an hour for the head to come back.
GCS_RECONNECT_TIMEOUT_S = 3600


#: Variables of the caller's environment that must not leak into the lab's Ray processes: an
#: address or token of some other cluster, or a Redis the caller uses for something else.
FOREIGN_PREFIXES = ("RAY_ADDRESS", "RAY_AUTH_", "RAY_REDIS_", "RAY_external_storage_namespace")


def ray_env(options: RayOptions, access: RayAccess | None = None) -> dict[str, str]:
    """Environment of a Ray process of the lab (or a client of it, with `access`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(GCS_RECONNECT_TIMEOUT_S)
    if access is None:
        # Ray turns token auth on for a head when ~/.ray/auth_token exists (any local
        # ray.init() on the machine writes one) but not for the raylets joining it, which then
        # fail with InvalidAuthToken: say which mode, always.
        env["RAY_AUTH_MODE"] = "disabled"
    else:
        env.update(access.client_env())
    # Job entrypoints (`ray job submit -- python x.py`) find the venv's python and raylb.
    venv_bin = str(Path(sys.executable).parent)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env["PATH"] = os.pathsep.join([venv_bin, *rest])
    env.update(options.env)
    return env


def head_argv(
    host: Host, *, temp_dir: Path, options: RayOptions, access: RayAccess | None = None
) -> list[str]:
    argv = [
        ray_binary(), "start", "--head",
        "--node-ip-address", str(host.ipv4),
        "--port", str(GCS_PORT),
        "--include-dashboard", "true",
        "--dashboard-host", str(host.ipv4),
        "--dashboard-port", str(DASHBOARD_PORT),
        "--num-cpus", str(NUM_CPUS),
        "--object-store-memory", str(options.object_store_bytes),
        "--temp-dir", str(temp_dir),
        "--labels", f"{NODE_LABEL}={host.name},{ROLE_LABEL}=control",
        "--disable-usage-stats",
    ]  # fmt: skip
    if options.system_config:
        argv += ["--system-config", json.dumps(dict(options.system_config))]
    if access is not None:
        argv += ["--redis-password", access.redis_password_path.read_text().strip()]
    return argv


#: What a speaker node leaves out (issue 13, `raylb bench footprint`). The log monitor only
#: streams the workers' log files to drivers; the speakers' logs stay in the node's files.
#: The dashboard agent and the runtime-env agent cannot go: Ray 2.60's raylet starts both
#: itself, with no `ray start` option to skip them, and exits when either dies (measured by
#: `raylb bench footprint --agents`).
SPEAKER_NODE_TRIM = ("--include-log-monitor", "false")


def node_argv(host: Host, *, temp_dir: Path, options: RayOptions) -> list[str]:
    return [
        ray_binary(), "start",
        "--address", RAY_ADDRESS,
        "--node-ip-address", str(host.ipv4),
        "--num-cpus", str(NUM_CPUS),
        "--object-store-memory", str(options.object_store_bytes),
        "--temp-dir", str(temp_dir),
        "--labels", f"{NODE_LABEL}={host.name},{ROLE_LABEL}=node",
        "--resources", json.dumps({node_resource(host.name): 1}),
        "--disable-usage-stats",
        *SPEAKER_NODE_TRIM,
    ]  # fmt: skip


def start(
    host: Host, argv: list[str], *, log_path: Path, env: Mapping[str, str]
) -> subprocess.Popen[Any]:
    """Run `ray start` inside the host's namespace; its daemons stay there when it returns.

    It starts a session of its own, which every daemon and worker it starts stays in: the
    session ID tells the head's processes apart from others in the namespace (Redis, etcd)."""
    log = log_path.open("ab")
    try:
        # Output goes to a file, not a pipe: Ray's daemons inherit it and outlive `ray start`.
        return hosts.popen(
            host.netns, argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(env), start_new_session=True,
        )
    finally:
        log.close()


def wait_started(proc: subprocess.Popen[Any], *, host: Host, log_path: Path) -> None:
    try:
        code = proc.wait(timeout=RAY_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise TimeoutError(f"`ray start` on {host.name} did not finish; see {log_path}") from None
    if code != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"`ray start` on {host.name} exited with {code}; {log_path}:\n{tail}")


def wait_alive(
    control: Host, *, count: int, env: Mapping[str, str], timeout_s: float = NODES_ALIVE_TIMEOUT_S
) -> None:
    """Block until `count` Ray nodes are alive, asking the GCS from inside the control namespace."""
    argv = [
        sys.executable, "-m", "raylb.cluster.lab.ray_nodes", "wait",
        "--address", RAY_ADDRESS, "--count", str(count), "--timeout-s", str(timeout_s),
    ]  # fmt: skip
    result = subprocess.run(
        hosts.netns_argv(control.netns, argv), capture_output=True, text=True,
        env=dict(env), timeout=timeout_s + 30, check=False,
    )
    if result.returncode != 0:
        raise TimeoutError(f"Ray nodes not alive ({count} expected): {result.stderr[-2000:]}")


# --- runs inside the control namespace ----------------------------------------------------------


def alive_nodes(address: str) -> list[dict[str, object]]:
    import ray._private.state as ray_state  # noqa: PLC0415 (only this subcommand needs Ray)
    from ray._raylet import GcsClientOptions  # noqa: PLC0415

    state = ray_state.GlobalState()
    state._initialize_global_state(
        GcsClientOptions.create(
            address, None, allow_cluster_id_nil=True, fetch_cluster_id_if_nil=False
        )
    )
    return [n for n in state.node_table() if n["Alive"]]


def _wait_main(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout_s
    seen = -1
    while time.monotonic() < deadline:
        try:
            seen = len(alive_nodes(args.address))
        except Exception as exc:  # the GCS may still be starting
            print(f"waiting for GCS: {exc}", file=sys.stderr)
        if seen >= args.count:
            print(seen)
            return 0
        time.sleep(0.2)
    print(f"{seen} of {args.count} Ray nodes alive after {args.timeout_s} s", file=sys.stderr)
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description="Ray helpers run inside a lab namespace")
    sub = parser.add_subparsers(dest="command", required=True)
    wait = sub.add_parser("wait", help="wait until COUNT Ray nodes are alive")
    wait.add_argument("--address", required=True)
    wait.add_argument("--count", type=int, required=True)
    wait.add_argument("--timeout-s", type=float, default=NODES_ALIVE_TIMEOUT_S)
    args = parser.parse_args()
    sys.exit(_wait_main(args))


if __name__ == "__main__":
    main()
