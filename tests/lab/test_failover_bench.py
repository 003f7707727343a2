"""`raylb lab failover` runs end to end (one kill trial, one graceful trial) and prints its JSON.

Only the shape and completeness of the result are checked; the figures are the benchmark's
business, not a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.lab.conftest import unique_lab_name


def test_one_trial_of_each_kind_measures_both_families() -> None:
    name = unique_lab_name()
    raylb = str(Path(sys.executable).parent / "raylb")
    result = subprocess.run(
        [raylb, "lab", "failover", "--trials", "1", "--graceful-trials", "1", "--name", name, "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["no_takeover"] == []
    assert out["ipv4"]["n"] == out["ipv6"]["n"] == 1
    assert out["ipv4"]["p50_s"] > 0 and out["ipv6"]["p50_s"] > 0
    assert len(out["graceful_samples_s"]) == 2
    assert not list(Path("/var/run/netns").glob(f"rlb-{name}-*"))  # the lab is gone
