"""Test traffic is refused outside the lab: the root namespace (where tests run) never sends."""

from __future__ import annotations

import pytest

from raylb.cluster.lab import failover_probe, probe


def test_the_root_namespace_is_not_a_lab_namespace() -> None:
    with pytest.raises(probe.OutsideLabError, match="not inside a lab network namespace"):
        probe.require_lab_netns()


def test_a_flood_started_outside_the_lab_sends_nothing() -> None:
    with pytest.raises(probe.OutsideLabError):
        probe.flood(ifname="lo", rate_per_s=1, seconds=0.01, src_ip=probe.LAB_SUBNET.network_address + 60)


def test_the_failover_prober_refuses_to_start_outside_the_lab(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        failover_probe.main(["--vip", "198.18.0.130", "--duration-s", "1"])
    assert exit_info.value.code != 0
    assert "not inside a lab network namespace" in capsys.readouterr().err
