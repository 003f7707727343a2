"""The membership over real UDP (issue 13): bare endpoints as processes in lab namespaces, no
Ray, the benchmark's own code at a size CI holds (`raylb bench membership --real` takes 50)."""

from __future__ import annotations

import pytest

from raylb.cluster.lab import membership_real
from raylb.cluster.lab.lab import lab_namespaces
from tests.lab.conftest import unique_lab_name

pytestmark = [pytest.mark.root]


def test_endpoints_over_real_udp_detect_every_kill_and_remove_nobody_alive_under_loss() -> None:
    name = unique_lab_name()
    out = membership_real.run(name=name, endpoints=12, namespaces=4, idle_s=3.0, soak_s=5.0, kills=2,
                              losses=(0.0, 0.05), log=print)  # fmt: skip
    print(out)
    assert lab_namespaces(name) == []
    # O(k) datagrams per endpoint: 4 observers at 20/s plus the liveness broadcast (n/5 s here)
    assert 0 < out["idle"]["sent_per_s"]["max"] <= 200
    assert 0 < out["idle"]["received_per_s"]["max"] <= 200
    clean, lossy = out["loss_phases"]
    assert clean["datagrams_dropped"] == 0 and lossy["datagrams_dropped"] > 0, "the loss rule dropped datagrams"
    for phase in (clean, lossy):
        # run() times every survivor's report of each death (it raises if one never comes)
        assert phase["kills"] == 2 and phase["detection_s"]["max"] is not None
        # Steady state. Around a kill and the restart that follows, observers change and at 5 % loss
        # a live endpoint was once removed by two of them (issue 13, open): counted, not asserted.
        assert phase["false_removals_in_soak"] == 0
