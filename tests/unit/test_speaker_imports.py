"""The speaker's process loads only what it uses (footprint: issue 13).

Ray imports the actor's module in a fresh worker process on every node. Whatever that import
pulls in costs memory on every node, for as long as the node runs: the Kubernetes client,
scapy, pyroute2 (two netlink dumps do), pydantic and the operator's side (allocator, models, the lab) are never used there.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = (
    "kubernetes",
    "scapy",
    "pyroute2",
    "pydantic",
    "click",
    "raylb.models",
    "raylb.config",
    "raylb.ipam",
    "raylb.cluster",
    "raylb.actors.operator",
    "raylb.actors.allocator",
    "raylb.actors.ray_ops",
)


def loaded_by(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def speaker_modules() -> set[str]:
    return loaded_by("raylb.actors.speaker.actor")


@pytest.mark.parametrize("forbidden", FORBIDDEN)
def test_the_speaker_module_does_not_load(speaker_modules: set[str], forbidden: str) -> None:
    hits = sorted(m for m in speaker_modules if m == forbidden or m.startswith(forbidden + "."))
    assert not hits, f"importing the speaker loads {hits}"


def test_the_check_sees_what_the_operator_loads() -> None:
    """The same check on the operator's module finds what it uses (the test can fail)."""
    operator = loaded_by("raylb.actors.operator")
    assert "raylb.ipam" in operator and "raylb.actors.allocator" in operator
