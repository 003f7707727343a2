"""raylb running in a lab, driven from outside it.

The lab's Ray cluster is reachable only inside its namespaces, so every interaction goes
through the `raylb` command run in the control namespace (exactly what a user would type
there): start the operator, apply manifests, read `raylb status --json`, and kill actors to
simulate crashes. Used by the end-to-end tests, `raylb lab failover` and the demo.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from raylb.cluster.lab.lab import Lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "deploy" / "examples"
RAYLB = str(Path(sys.executable).parent / "raylb")
POLL_S = 0.2


def raylb(lab: Lab, *args: str, check: bool = True, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run `raylb ARGS` in the lab's control namespace against the lab's Ray cluster."""
    return lab.run(lab.control, ["env", *_client_vars(lab), RAYLB, *args], check=check, timeout_s=timeout_s)


def _client_vars(lab: Lab) -> list[str]:
    """`env` arguments that make a command a client of the lab's Ray: its address and token."""
    wanted = {"RAY_ADDRESS": lab.ray_address, "RAY_USAGE_STATS_ENABLED": "0", **lab.ray_access.client_env()}
    return [f"{k}={v}" for k, v in wanted.items()]


def python(lab: Lab, code: str, *, timeout_s: float = 60.0) -> str:
    """Run a Ray driver snippet in the control namespace (connected, namespace raylb); its stdout."""
    prelude = f"import ray; ray.init(address={lab.ray_address!r}, namespace='raylb', logging_level='ERROR', log_to_driver=False)\n"
    result = lab.run(lab.control, ["env", *_client_vars(lab), sys.executable, "-c", prelude + code], timeout_s=timeout_s)
    return result.stdout


def start(lab: Lab, *, manifests: Iterable[Path]) -> None:
    """Start raylb on the in-memory store and apply the manifests."""
    raylb(lab, "run", "--memory")
    files = [arg for path in manifests for arg in ("-f", str(path))]
    if files:
        raylb(lab, "apply", *files)


def apply(lab: Lab, *paths: Path) -> None:
    raylb(lab, "apply", *[arg for p in paths for arg in ("-f", str(p))])


def status(lab: Lab) -> dict[str, Any]:
    result = raylb(lab, "status", "--json")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"`raylb status --json` printed no JSON ({exc}); stdout {result.stdout[-500:]!r}, stderr {result.stderr[-1500:]!r}"
        ) from exc


def services(lab: Lab) -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in status(lab)["services"]}


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str, interval_s: float = POLL_S) -> Any:
    """Poll `predicate` until truthy (errors count as not yet); TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - e.g. the Ray head still starting
            last, value = exc, None
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not reached within {timeout_s} s" + (f" (last error: {last})" if last else ""))


def wait_announced(lab: Lab, keys: Iterable[str], *, timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    """Until each service has IPs and an announcing node; returns the services by key."""
    wanted = set(keys)

    def ready() -> dict[str, dict[str, Any]] | None:
        found = services(lab)
        return found if all(k in found and found[k]["ips"] and found[k]["node"] for k in wanted) else None

    return wait_for(ready, timeout_s=timeout_s, what=f"services {sorted(wanted)} announced")


def kill_actor(lab: Lab, name: str, *, restart: bool = True) -> None:
    """Crash an actor as a failure would (Ray restarts it when it may)."""
    python(lab, f"ray.kill(ray.get_actor({name!r}), no_restart={not restart})")


def speakers_alive(lab: Lab) -> set[str]:
    return {s["node"] for s in status(lab)["speakers"] if s["alive"]}
