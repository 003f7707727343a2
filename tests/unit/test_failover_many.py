"""raylb lab failover --vips: the VIPs chosen, the manifest written, bad input refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raylb.cli import main
from raylb.cluster.lab import lab as lab_module
from raylb.cluster.lab.failover_many import NODES, VICTIM, choose_vips, manifest
from raylb.cluster.lab.topology import VIP_RANGE_V6
from raylb.election import pick


@pytest.mark.parametrize(("owned", "total"), [(1, 1), (3, 10), (300, 1000)])
def test_exactly_the_asked_share_is_elected_to_the_victim(owned: int, total: int) -> None:
    mine, others = choose_vips(owned=owned, total=total)
    assert (len(mine), len(others)) == (owned, total - owned)
    assert len(set(mine) | set(others)) == total
    assert all(pick(ip=ip, candidates=NODES) == VICTIM for ip in mine)
    assert all(pick(ip=ip, candidates=NODES) != VICTIM for ip in others)
    assert all(ip in VIP_RANGE_V6 for ip in [*mine, *others])


@pytest.mark.parametrize(("owned", "total"), [(0, 10), (11, 10), (1, VIP_RANGE_V6.num_addresses)])
def test_impossible_sizes_are_refused(owned: int, total: int) -> None:
    with pytest.raises(ValueError, match="--vips"):
        choose_vips(owned=owned, total=total)


def test_manifest_pins_one_service_per_vip_with_endpoints_on_every_node(tmp_path: Path) -> None:
    mine, others = choose_vips(owned=2, total=5)
    docs = list(yaml.safe_load_all(manifest(tmp_path / "m.yaml", [*mine, *others]).read_text()))
    services = [d for d in docs if d["kind"] == "Service"]
    pinned = sorted(d["metadata"]["annotations"]["metallb.io/loadBalancerIPs"] for d in services)
    assert pinned == sorted(str(ip) for ip in [*mine, *others])
    slices = [d for d in docs if d["kind"] == "EndpointSlice"]
    assert len(slices) == 5 and all({e["nodeName"] for e in s["endpoints"]} == set(NODES) for s in slices)


def test_more_vips_than_the_cluster_has_is_refused_before_any_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_module.Lab, "up", lambda **_: pytest.fail("a lab was built"))
    result = CliRunner().invoke(main, ["lab", "failover", "--vips", "5", "--total-vips", "3"])
    assert result.exit_code == 2 and "5 is more than --total-vips 3" in result.output
