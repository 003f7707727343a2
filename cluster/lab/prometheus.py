"""A real Prometheus in the lab, scraping every raylb metrics endpoint.

Debian's `prometheus` package (installed by the provisioning, see packages.py) runs in the
control namespace and listens on the control address; it scrapes the operator and the
allocator on the control host and each node's speaker on the node address, at the ports
raylb.actors.metrics_http defines. Its HTTP API is queried from the client namespace, the way
a dashboard would (`query`).

Scrapes every `SCRAPE_INTERVAL_S`: short, so a failover shows up within a second or two.
Prometheus marks every series of a target stale when a scrape of it fails, so a killed node's
speaker drops out of `metallb_speaker_announced` at the next scrape.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from raylb.actors.metrics_http import ALLOCATOR_PORT, OPERATOR_PORT, SPEAKER_PORT
from raylb.cluster.lab import hosts
from raylb.cluster.lab.topology import Host

if TYPE_CHECKING:
    from raylb.cluster.lab.lab import Lab

BINARY = "/usr/bin/prometheus"
PORT = 9090  # Prometheus's own default
SCRAPE_INTERVAL_S = 1
READY_TIMEOUT_S = 60.0


def config_text(*, control: Host, nodes: Sequence[Host]) -> str:
    """prometheus.yml: one job per kind of raylb process, every target a lab address."""

    def job(name: str, targets: list[tuple[str, str]]) -> str:
        lines = [f"  - job_name: {name}", "    static_configs:"]
        for address, instance in targets:
            lines += [f"      - targets: ['{address}']", f"        labels: {{host: {instance}}}"]
        return "\n".join(lines)

    return "\n".join(
        [
            "global:",
            f"  scrape_interval: {SCRAPE_INTERVAL_S}s",
            f"  scrape_timeout: {SCRAPE_INTERVAL_S}s",
            "scrape_configs:",
            job("raylb-operator", [(f"{control.ipv4}:{OPERATOR_PORT}", control.name)]),
            job("raylb-allocator", [(f"{control.ipv4}:{ALLOCATOR_PORT}", control.name)]),
            job("raylb-speaker", [(f"{n.ipv4}:{SPEAKER_PORT}", n.name) for n in nodes]),
        ]
    ) + "\n"


def start(lab: Lab) -> subprocess.Popen[Any]:
    """Start Prometheus in the control namespace and wait until it answers /-/ready."""
    directory = lab.state_dir / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(config_text(control=lab.control, nodes=lab.nodes))
    log = (lab.state_dir / "prometheus.log").open("ab")
    with log:
        proc = lab.popen(
            lab.control,
            [BINARY, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address={lab.control.ipv4}:{PORT}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    hosts.wait_until(
        lambda: proc.poll() is None and _ready(lab), timeout_s=READY_TIMEOUT_S, interval_s=0.2,
        what=f"Prometheus ready on {lab.control.ipv4}:{PORT} (log: {lab.state_dir / 'prometheus.log'})",
    )  # fmt: skip
    if proc.poll() is not None:
        raise RuntimeError(f"Prometheus exited with {proc.returncode}; see {lab.state_dir / 'prometheus.log'}")
    return proc


def _ready(lab: Lab) -> bool:
    try:
        status, _ = lab.http_get(lab.client, lab.control.ipv4, port=PORT, path="/-/ready")
    except OSError:
        return False
    return status == 200


def query(lab: Lab, expr: str) -> list[dict[str, Any]]:
    """An instant query through Prometheus's HTTP API, from the client namespace: the result
    vector as [{"metric": {labels}, "value": [time, "text"]}]."""
    path = "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = lab.http_get(lab.client, lab.control.ipv4, port=PORT, path=path, timeout_s=5.0)
    reply = json.loads(body)
    if status != 200 or reply.get("status") != "success":
        raise RuntimeError(f"Prometheus query {expr!r} failed ({status}): {body[:500]}")
    return list(reply["data"]["result"])


def targets_up(lab: Lab) -> dict[str, bool]:
    """Scrape target (host label) -> whether its last scrape worked."""
    return {r["metric"].get("host", "?") + "/" + r["metric"]["job"]: r["value"][1] == "1" for r in query(lab, "up")}
