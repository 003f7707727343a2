"""`raylb bench alloc` runs and prints one JSON object with the promised keys (not the timing)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from raylb.cli import main

HEADLINE_KEYS = {"allocs_per_s_v4_16", "allocs_per_s_v6_64", "allocs_per_s_many_pools", "restore_s_100k"}


def test_bench_alloc_prints_one_json_object_with_the_headline_figures() -> None:
    result = CliRunner().invoke(main, ["bench", "alloc", "--json", "--services", "1000", "--pools", "10", "--repeat", "2"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert HEADLINE_KEYS <= set(figures)
    for key in HEADLINE_KEYS:
        assert figures[key] > 0
        run = figures["runs"][key]
        assert run["min"] <= run["median"] <= run["max"]
    assert figures["params"]["services"] == 1000
    assert figures["params"]["repeat"] == 2


def test_bench_alloc_refuses_more_pools_than_fit() -> None:
    result = CliRunner().invoke(main, ["bench", "alloc", "--pools", "1025"])
    assert result.exit_code != 0
    assert "at most 1024" in result.output
