"""`raylb lab failover` runs end to end (one kill trial, one graceful trial), prints its JSON
and draws its picture (--plot).

Only the shape and completeness of the result are checked; the figures are the benchmark's
business, not a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from raylb.cluster.lab.failover_plot import read_trials
from tests.lab.conftest import unique_lab_name


def test_one_trial_of_each_kind_measures_both_families_and_is_drawn(tmp_path: Path) -> None:
    name = unique_lab_name()
    raylb = str(Path(sys.executable).parent / "raylb")
    picture = tmp_path / "failover.png"
    result = subprocess.run(
        [raylb, "lab", "failover", "--trials", "1", "--graceful-trials", "1", "--name", name, "--json",
         "--plot", str(picture)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["no_takeover"] == []
    assert out["ipv4"]["n"] == out["ipv6"]["n"] == 1
    assert out["ipv4"]["p50_s"] > 0 and out["ipv6"]["p50_s"] > 0
    assert len(out["graceful_samples_s"]) == 2
    assert not list(Path("/var/run/netns").glob(f"rlb-{name}-*"))  # the lab is gone
    assert out["plot"] == str(picture) and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trials = read_trials(picture)
    assert [(t["trial"], t["mode"], t["family"]) for t in trials] == [
        (1, "kill", "ipv4"), (1, "kill", "ipv6"), (2, "graceful", "ipv4"), (2, "graceful", "ipv6"),
    ]  # fmt: skip
    kill = [t for t in trials if t["mode"] == "kill"]
    assert [t["outage_s"] for t in kill] == [out["ipv4"]["samples_s"][0], out["ipv6"]["samples_s"][0]]
    # the node that took over said when it declared the killed node dead: after the kill
    assert all(t["detected_after_s"] is not None and t["detected_after_s"] > 0 for t in kill), kill
