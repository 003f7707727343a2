"""The core in raylb/ is pure: it imports no I/O library and none of the shells.

raylb/cli.py is the composition root; it reaches the shells only through dotted-path strings
resolved at run time, so it is held to the same rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

FORBIDDEN = {"ray", "kubernetes", "socket", "pyroute2", "scapy", "subprocess", "select", "asyncio"}
SHELLS = ("raylb.actors", "raylb.cluster")
CORE_FILES = sorted((REPO / "raylb").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # from raylb import actors
    return names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_core_imports_no_io_library_and_no_shell(path: Path) -> None:
    bad = sorted(
        name
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN or name.startswith(SHELLS)
    )
    assert not bad, f"{path.relative_to(REPO)} imports {bad}; the core must stay pure"


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import socket\nfrom ray import remote\nfrom raylb.actors.speaker import x\nfrom raylb import cluster\n")
    found = imported_modules(sample)
    assert found >= {"socket", "ray", "raylb.actors.speaker", "raylb.cluster"}
    assert any(name.startswith(SHELLS) for name in found)


def test_there_is_a_core_to_check() -> None:
    assert len(CORE_FILES) >= 5


ACTOR_FILES = sorted((REPO / "actors").rglob("*.py"))


@pytest.mark.parametrize("path", ACTOR_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_actors_never_import_the_lab_or_the_local_control_plane(path: Path) -> None:
    """Lab and benchmark tooling (probes, harnesses, benches) lives under cluster/lab, the local
    control plane under cluster/localkube; the shipped actors need neither: an actor importing
    them would drag the tools into every deployment."""
    tools = ("raylb.cluster.lab", "raylb.cluster.localkube", "raylb.cluster.membership_")
    bad = sorted(name for name in imported_modules(path) if name.startswith(tools))
    assert not bad, f"{path.relative_to(REPO)} imports {bad}; tools belong under cluster/"


def test_there_are_actors_to_check() -> None:
    assert any(p.name == "operator.py" for p in ACTOR_FILES)
