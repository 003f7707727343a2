"""The control plane also runs inside a network namespace, as `raylb lab up` needs.

An ad-hoc namespace (prefix rlbt) gets its loopback up, holding also 198.18.0.1 (the lab's
control address); nothing is connected to it and nothing is sent anywhere.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from raylb.cluster.localkube.controlplane import ControlPlane

pytestmark = [pytest.mark.kube, pytest.mark.root]

CONTROL_ADDRESS = "198.18.0.1"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"rlbt-cp-{uuid.uuid4().hex[:6]}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "addr", "add", f"{CONTROL_ADDRESS}/32", "dev", "lo")
        yield name
    finally:
        _ip("netns", "del", name)


def _netns_pids(name: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", name], check=True, capture_output=True, text=True, timeout=30)
    return {int(p) for p in out.stdout.split()}


def test_control_plane_serves_on_the_given_address_inside_the_namespace(
    control_plane: ControlPlane, netns: str
) -> None:
    plane = ControlPlane.start(bind_address=CONTROL_ADDRESS, netns=netns, binaries=control_plane.binaries)
    try:
        # start() returned, so /readyz answered over TLS at 198.18.0.1 inside the namespace,
        # verified against the serving certificate's SANs.
        assert plane.url.startswith(f"https://{CONTROL_ADDRESS}:")
        assert plane.url in plane.admin_kubeconfig.read_text()
        assert set(plane.pids) <= _netns_pids(netns)  # the PIDs we hold are the servers themselves
        assert plane._probe("/readyz")
    finally:
        plane.stop()
    assert _netns_pids(netns) == set()
