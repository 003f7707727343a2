"""The pure parts of `raylb lab failover`: percentiles and the benchmark's manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raylb.cluster.lab.failover import SERVICES_PER_FAMILY, bench_manifest, percentile, summarize


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, None), ([0.3], 99, 0.3), ([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 99, 4), (list(range(1, 101)), 99, 99)],
)
def test_nearest_rank_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_summary_reports_every_sample() -> None:
    assert summarize([0.31, 0.29, 0.5]) == {"n": 3, "p50_s": 0.31, "p99_s": 0.5, "max_s": 0.5, "samples_s": [0.31, 0.29, 0.5]}


def test_bench_manifest_gives_every_node_an_endpoint_of_every_service(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(bench_manifest(tmp_path / "m.yaml").read_text()))
    services = [d for d in docs if d["kind"] == "Service"]
    slices = [d for d in docs if d["kind"] == "EndpointSlice"]
    assert len(services) == len(slices) == 2 * SERVICES_PER_FAMILY
    assert all({e["nodeName"] for e in s["endpoints"]} == {"node1", "node2", "node3"} for s in slices)
    pools = {d["metadata"]["name"]: d["spec"]["addresses"] for d in docs if d["kind"] == "IPAddressPool"}
    assert pools == {"bench-v4": ["198.18.0.224/28"], "bench-v6": ["2001:db8:18::1:100/124"]}
