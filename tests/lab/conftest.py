"""Fixtures that build labs with unique names and always remove them.

Several people run labs on this machine at once, so every fixture lab gets its own short random
name ("t" + 4 hex digits) and teardown only ever touches the namespaces of that name. If a test
run is killed before its finalizers run, `raylb lab down --name tXXXX` removes what is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator

import pytest

from raylb.cluster.lab.probe import Prober
from raylb.cluster.lab import Lab, down, in_netns, lab_namespaces
from raylb.cluster.lab.lab import state_dir
from raylb.cluster.lab.netns import list_netns
from raylb.cluster.lab.topology import parse_netns_name

#: File in a fixture lab's state directory holding the PID of the test process that owns it.
OWNER_FILE = "pytest-owner"
FIXTURE_NAME_RE = re.compile(r"^t[0-9a-f]{4}$")


def unique_lab_name(*, reserve: bool = True) -> str:
    """A fresh fixture lab name, recorded as owned by this process (see sweep_orphaned_labs)."""
    while True:
        name = f"t{secrets.token_hex(2)}"
        if not lab_namespaces(name) and not state_dir(name).exists():
            if not reserve:
                return name
            directory = state_dir(name)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / OWNER_FILE).write_text(f"{os.getpid()}\n")
            return name


def _owner_alive(name: str) -> bool:
    try:
        pid = int((state_dir(name) / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return True  # not provably ours: leave it alone
    return os.path.exists(f"/proc/{pid}")


@pytest.fixture(scope="session", autouse=True)
def sweep_orphaned_labs() -> None:
    """Remove fixture labs whose test process died before its finalizers ran (kill -9, OOM).

    Only labs with a fixture name AND an owner file naming a process that no longer exists are
    touched, so labs of test runs still going on (anyone's) and `raylb lab up` labs are safe.
    """
    labs = {parsed[0] for n in list_netns() if (parsed := parse_netns_name(n))}
    for name in sorted(labs):
        if FIXTURE_NAME_RE.fullmatch(name) and not _owner_alive(name):
            down(name)


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Factory: make_lab(nodes=3, ray=False, http=True, ...) -> a running Lab, removed after."""
    names: list[str] = []

    def _make(**kwargs: object) -> Lab:
        name = unique_lab_name()
        names.append(name)  # before up(): even a half-built lab is removed
        return Lab.up(name=name, **kwargs)  # type: ignore[arg-type]

    try:
        yield _make
    finally:
        for name in names:
            down(name)


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """A fresh lab: 3 nodes with HTTP servers, a client, no Ray."""
    return make_lab(nodes=3)


@contextlib.contextmanager
def fixture_lab(**kwargs: object) -> Iterator[Lab]:
    """A lab with a fresh fixture name, removed afterwards (also when building it failed half way)."""
    name = unique_lab_name()
    try:
        with Lab.up(name=name, **kwargs) as built:  # type: ignore[arg-type]
            yield built
    finally:
        down(name)


@pytest.fixture(scope="module")
def shared_lab() -> Iterator[Lab]:
    """One lab for a whole module, for tests that only observe (do not kill or reconfigure)."""
    with fixture_lab(nodes=3) as built:
        yield built


@pytest.fixture
def prober(lab: Lab) -> Iterator[Prober]:
    """Raw ARP/NDP questions from the client namespace of the module's `lab`."""
    with in_netns(lab.client.netns):
        probe = Prober(lab.client.ifname, ipv4=lab.client.ipv4, ipv6=lab.client.ipv6)
    with probe:
        yield probe
