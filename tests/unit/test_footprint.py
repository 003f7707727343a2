"""raylb bench footprint: which process of a speaker node is which (table of real argv)."""

from __future__ import annotations

import pytest

from raylb.cluster.lab.footprint import kind_of

RAY = "/v/lib/python3.11/site-packages/ray"


@pytest.mark.parametrize(
    ("cmdline", "kind"),
    [
        (f"{RAY}/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/s --dashboard_agent_command=python "
         f"{RAY}/dashboard/agent.py --runtime_env_agent_command=python {RAY}/_private/runtime_env/agent/main.py "
         f"--python_worker_command=python {RAY}/_private/workers/default_worker.py", "raylet"),
        ("ray::DashboardAgent", "dashboard_agent"),
        (f"/v/bin/python3 -u {RAY}/dashboard/agent.py --node-ip-address=198.18.0.11", "dashboard_agent"),
        ("ray::RuntimeEnvAgent", "runtime_env_agent"),
        (f"/v/bin/python3 -u {RAY}/_private/log_monitor.py --session-dir=/tmp/x", "log_monitor"),
        ("ray::Speaker", "speaker"),
        ("ray::Speaker.push", "speaker"),
        ("ray::IDLE", "idle_worker"),
        ("ray::BareActor.ping", "bare_actor"),
        ("/v/bin/python3 -m raylb.cluster.lab.http --name node1", "lab_http"),
        ("/usr/sbin/something", "other"),
    ],
)
def test_kind_of(cmdline: str, kind: str) -> None:
    assert kind_of(cmdline) == kind
