"""`ray job submit -- python -m raylb run` against the lab's Ray cluster (issue 6).

A user with nothing but the `ray` command and the head's job server address starts raylb as a
Ray job, from the client namespace (another machine on the node network): the job starts the
detached operator and exits; submitting again attaches instead of duplicating anything;
stopping a job leaves the system running; `raylb uninstall` removes every raylb actor.
Desired state comes from raylb's in-memory store (`--memory`) so the lab needs no API server;
the Kubernetes source is the same code path once the operator runs.

One lab (2 nodes) for the module; the tests run in file order, uninstall last.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from raylb.cluster.lab import Lab, system
from raylb.cluster.lab.ray_nodes import ray_binary
from tests.lab.conftest import fixture_lab

pytestmark = [pytest.mark.root, pytest.mark.ray]

NODES = 2
#: Ray's client server on the head (`ray start --head` starts it on this port).
RAY_CLIENT_PORT = 10001
#: A job's life here: the runtime-env agent prepares, the driver connects, the operator starts
#: (and creates the store), `ray.get(ping)` returns. ~10 s on an idle machine; the box is shared.
JOB_TIMEOUT_S = 180.0
SERVICES = ["default/web", "default/billing", "default/web6"]
#: Ray actor classes that make up raylb; the count of each is the "nothing duplicated" check.
RAYLB_CLASSES = ("OperatorActor", "AllocatorService", "Speaker", "DurableMemoryCluster")
STATUS_SNIPPET = (
    "import sys; from ray.job_submission import JobSubmissionClient; "
    "print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)"
)

COUNT_ACTORS = """
import json
from ray.util.state import list_actors
alive = list_actors(filters=[("state", "=", "ALIVE")], limit=10000, raise_on_missing_output=False)
named = [e["name"] for e in ray.util.list_named_actors(all_namespaces=True) if e.get("namespace") == "raylb"]
print(json.dumps({"alive": [[a.class_name, a.name, a.actor_id] for a in alive], "named": sorted(named)}))
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with fixture_lab(nodes=NODES, ray=True) as built:
        yield built


def credentials(lab: Lab, token: str | None = "lab") -> list[str]:
    """`env` arguments for a client on the node network: the lab's token, another token, or none.

    HOME points at an empty directory, so no ~/.ray/auth_token of this machine is found."""
    home = lab.state_dir / "client-home"
    home.mkdir(exist_ok=True)
    plain = ["-u", "RAY_AUTH_MODE", "-u", "RAY_AUTH_TOKEN", "-u", "RAY_AUTH_TOKEN_PATH", f"HOME={home}", "RAY_USAGE_STATS_ENABLED=0"]
    if token is None:
        return plain
    if token == "lab":
        return [*plain, *(f"{k}={v}" for k, v in lab.ray_access.client_env().items())]
    return [*plain, "RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN={token}"]


def ray_job(
    lab: Lab, verb: str, *args: str, timeout_s: float = 120.0, token: str | None = "lab"
) -> subprocess.CompletedProcess[str]:
    """`ray job VERB --address http://<head>:8265 ARGS`, typed in the client namespace."""
    argv = ["env", *credentials(lab, token), ray_binary(), "job", verb, "--address", lab.dashboard_url, *args]
    return lab.run(lab.client, argv, check=False, timeout_s=timeout_s)


def submit(lab: Lab, *entrypoint: str) -> str:
    job_id = f"raylb-run-{secrets.token_hex(3)}"
    result = ray_job(lab, "submit", "--no-wait", "--submission-id", job_id, "--", *entrypoint)
    assert result.returncode == 0, f"ray job submit failed:\n{result.stdout}\n{result.stderr}"
    return job_id


def job_status(lab: Lab, job_id: str) -> str | None:
    """The job's status as the job server reports it (the SDK: `ray job status` prints prose)."""
    argv = ["env", *credentials(lab), sys.executable, "-c", STATUS_SNIPPET, lab.dashboard_url, job_id]
    result = lab.run(lab.client, argv, check=False, timeout_s=60.0)
    return result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else None


def job_logs(lab: Lab, job_id: str) -> str:
    return ray_job(lab, "logs", job_id, timeout_s=60.0).stdout


def wait_status(lab: Lab, job_id: str, wanted: set[str]) -> str:
    """Poll until the job reaches one of `wanted`; a terminal status that is not wanted fails at once."""
    terminal = {"STOPPED", "SUCCEEDED", "FAILED"}

    def reached() -> str | None:
        status = job_status(lab, job_id)
        if status in terminal - wanted:
            pytest.fail(f"job {job_id} ended {status}; logs:\n{job_logs(lab, job_id)}")
        return status if status in wanted else None

    return system.wait_for(reached, timeout_s=JOB_TIMEOUT_S, what=f"job {job_id} {sorted(wanted)}")


def raylb_actors(lab: Lab) -> dict[str, Any]:
    """Alive raylb actors by class (name, id) and the named actors in Ray namespace `raylb`."""
    data = json.loads(system.python(lab, COUNT_ACTORS).strip().splitlines()[-1])
    by_class: dict[str, list[tuple[str, str]]] = {c: [] for c in RAYLB_CLASSES}
    for class_name, name, actor_id in data["alive"]:
        short = class_name.rsplit(".", 1)[-1]
        if short in by_class:
            by_class[short].append((name, actor_id))
    return {"by_class": by_class, "named": data["named"]}


@pytest.mark.parametrize(("token", "refusal"), [(None, "Unauthorized"), ("0" * 64, "Forbidden")])
def test_a_job_without_the_clusters_token_is_refused_and_never_runs(lab: Lab, token: str | None, refusal: str) -> None:
    marker = lab.state_dir / f"ran-{secrets.token_hex(3)}"
    job_id = f"intruder-{secrets.token_hex(3)}"
    result = ray_job(lab, "submit", "--no-wait", "--submission-id", job_id, "--", "touch", str(marker), token=token)
    assert result.returncode != 0 and refusal in result.stdout + result.stderr, result.stdout + result.stderr
    assert job_status(lab, job_id) is None, "the job server knows the refused job"
    assert not marker.exists()


JOIN_SNIPPET = """
import sys, ray
try:
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    print("JOINED", ray.get(ray.remote(lambda: "ran").remote(), timeout=30))
except Exception as exc:
    print("REFUSED", type(exc).__name__)
"""


@pytest.mark.parametrize("port", ["gcs", "ray-client"])
def test_a_driver_without_the_token_cannot_join_through_the_gcs_or_the_ray_client_port(lab: Lab, port: str) -> None:
    address = lab.ray_address if port == "gcs" else f"ray://{lab.ray_address.rsplit(':', 1)[0]}:{RAY_CLIENT_PORT}"
    argv = ["env", *credentials(lab, None), sys.executable, "-c", JOIN_SNIPPET, address]
    result = lab.run(lab.client, argv, check=False, timeout_s=120.0)
    assert "REFUSED" in result.stdout and "JOINED" not in result.stdout, result.stdout + result.stderr[-2000:]


def test_submitted_job_starts_raylb_and_exits(lab: Lab) -> None:
    job_id = submit(lab, "python", "-m", "raylb", "run", "--memory")
    wait_status(lab, job_id, {"SUCCEEDED"})
    assert "started the raylb operator (memory)" in job_logs(lab, job_id)
    # The job is over; what it started keeps working: give it pools and services.
    system.apply(lab, system.EXAMPLES / "demo.yaml", system.EXAMPLES / "lab-nodes.yaml")
    services = system.wait_announced(lab, SERVICES, timeout_s=90)
    web = services["default/web"]
    assert web["pool"] == "doc-example" and services["default/billing"]["pool"] == "doc-example-reserved"
    assert lab.http_get(lab.client, web["ips"][0]) == (200, web["node"])
    assert system.status(lab)["operator"]["deployed"] is True


def test_resubmitting_attaches_and_duplicates_nothing(lab: Lab) -> None:
    before = raylb_actors(lab)
    job_id = submit(lab, "python", "-m", "raylb", "run", "--memory")
    wait_status(lab, job_id, {"SUCCEEDED"})
    assert "attached to the running raylb operator" in job_logs(lab, job_id)
    after = raylb_actors(lab)
    counts = {c: len(v) for c, v in after["by_class"].items()}
    assert counts == {"OperatorActor": 1, "AllocatorService": 1, "Speaker": NODES, "DurableMemoryCluster": 1}, after
    assert sorted(name for name, _ in after["by_class"]["Speaker"]) == [f"raylb-speaker-node{i}" for i in range(1, NODES + 1)]
    assert after == before, "re-submitting replaced or added actors"


def test_a_run_asking_for_other_settings_is_refused_and_changes_nothing(lab: Lab) -> None:
    before = raylb_actors(lab)
    refused = system.raylb(lab, "run", "--operator-namespace", "elsewhere", "--memory", check=False)
    assert refused.returncode != 0
    assert "operator_namespace: running 'metallb-system', asked 'elsewhere'" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert raylb_actors(lab) == before


def test_stopping_a_job_leaves_the_system_running(lab: Lab) -> None:
    before = raylb_actors(lab)
    web = system.services(lab)["default/web"]
    # A job that stays around after starting raylb, so there is something to stop.
    job_id = submit(lab, "sh", "-c", "python -m raylb run --memory && sleep 600")
    wait_status(lab, job_id, {"RUNNING"})
    system.wait_for(lambda: "attached to the running" in job_logs(lab, job_id), timeout_s=JOB_TIMEOUT_S, what="job attached")
    stopped = ray_job(lab, "stop", job_id, timeout_s=120.0)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_status(lab, job_id, {"STOPPED"})
    assert raylb_actors(lab) == before
    assert system.wait_announced(lab, ["default/web"], timeout_s=30)["default/web"]["ips"] == web["ips"]
    assert lab.http_get(lab.client, web["ips"][0]) == (200, web["node"])


def test_raylb_status_from_another_host_needs_the_token_file(lab: Lab) -> None:
    base = ["env", *credentials(lab, None), system.RAYLB, "status", "--address", lab.ray_address]
    refused = lab.run(lab.client, base, check=False, timeout_s=180.0)
    assert refused.returncode == 1 and "pass --token-file" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    allowed = lab.run(lab.client, [*base, "--token-file", str(lab.ray_access.token_path)], check=False, timeout_s=180.0)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "default/web " in allowed.stdout and "SPEAKER NODE" in allowed.stdout


def test_uninstall_removes_every_raylb_actor(lab: Lab) -> None:
    result = system.raylb(lab, "uninstall")
    assert "raylb-operator" in result.stdout and "raylb-allocator" in result.stdout
    system.wait_for(
        lambda: (a := raylb_actors(lab))["named"] == [] and not any(a["by_class"].values()),
        timeout_s=60,
        what="every raylb actor gone",
    )
    assert system.status(lab)["operator"] is None
