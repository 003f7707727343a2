"""Network-namespace primitives for the lab: create, enter, wire, empty and delete namespaces.

The lab's only side effects on the host live here and in hosts.py. Rules kept by this module:
the root namespace is never configured (every netlink socket is opened inside a lab namespace,
every sysctl is written from a thread that has entered one), and processes are ended only by
the namespace they run in, never by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

NETNS_RUN_DIR = Path("/var/run/netns")
_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

#: After SIGTERM, how long processes get to exit before SIGKILL.
TERM_GRACE_S = 3.0
#: How long SIGKILLed processes get to disappear (the kernel reaps them in milliseconds; ours
#: are reaped by their parent, so allow for a slow parent).
KILL_WAIT_S = 10.0
POLL_S = 0.05


def list_netns() -> list[str]:
    return sorted(pr_netns.listnetns())


def exists(netns: str) -> bool:
    return (NETNS_RUN_DIR / netns).exists()


def create(netns: str) -> None:
    if exists(netns):
        raise FileExistsError(errno.EEXIST, f"network namespace {netns} already exists")
    pr_netns.create(netns)


def _setns(fd: int) -> None:
    if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(netns: str) -> Iterator[None]:
    """Run the body with the CURRENT THREAD inside `netns`; other threads are unaffected.

    Sockets opened in the body stay in that namespace after the body ends, so a test can open a
    raw socket inside the client namespace and keep using it from the test process.
    """
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_RUN_DIR / netns, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(saved)


def write_sysctls(netns: str, values: dict[str, str | int]) -> None:
    """Write sysctls of one namespace: /proc/sys/net resolves to the writing thread's netns."""
    with in_netns(netns):
        for key, value in values.items():
            Path("/proc/sys", *key.split(".")).write_text(f"{value}\n")


def read_sysctl(netns: str, key: str) -> str:
    with in_netns(netns):
        return Path("/proc/sys", *key.split(".")).read_text().strip()


def iproute(netns: str) -> IPRoute:
    """A netlink socket inside an existing namespace (never creates one, never the root one)."""
    if not exists(netns):
        raise FileNotFoundError(errno.ENOENT, f"network namespace {netns} does not exist")
    return IPRoute(netns=netns, flags=0)


def netns_inode(netns: str) -> tuple[int, int]:
    st = os.stat(NETNS_RUN_DIR / netns)
    return st.st_dev, st.st_ino


def pids(netns: str) -> list[int]:
    """PIDs of every live process whose network namespace is `netns` (like `ip netns pids`)."""
    try:
        target = netns_inode(netns)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:  # gone, or a zombie (its namespaces are already released)
            continue
        if (st.st_dev, st.st_ino) == target:
            found.append(int(entry.name))
    return sorted(found)


def session_id(pid: int) -> int | None:
    """The session a process belongs to (field 6 of /proc/PID/stat), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return int(stat.rpartition(")")[2].split()[3])


def session_pids(netns: str, session: int) -> list[int]:
    """PIDs in `netns` that belong to session `session` (what one `setsid` started)."""
    return [pid for pid in pids(netns) if session_id(pid) == session]


def kill_session(netns: str, session: int) -> list[int]:
    """SIGKILL every process of one session in `netns` (a machine's daemon losing power while
    the rest of the machine runs). Returns survivors."""
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        left = [p for p in session_pids(netns, session) if p != os.getpid()]
        if not left or time.monotonic() >= deadline:
            return left
        _signal_all(left, signal.SIGKILL)
        time.sleep(POLL_S)


def _signal_all(pid_list: list[int], sig: int) -> None:
    me = os.getpid()
    for pid in pid_list:
        if pid == me:  # the test process can have a thread inside; never signal ourselves
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _alive(namespaces: Sequence[str]) -> list[int]:
    me = os.getpid()
    return [p for n in namespaces for p in pids(n) if p != me]


def _wait_empty(namespaces: Sequence[str], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = _alive(namespaces)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_S)


def kill_all(namespaces: Sequence[str], *, graceful: bool = True) -> list[int]:
    """End every process in the namespaces: SIGTERM, a grace period, SIGKILL. Returns survivors.

    With graceful=False it is SIGKILL at once: the lab's model of a machine losing power.
    """
    if graceful:
        _signal_all(_alive(namespaces), signal.SIGTERM)
        if not _wait_empty(namespaces, TERM_GRACE_S):
            return []
    # Loop: a dying process may have forked a child we did not see yet.
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        left = _alive(namespaces)
        if not left or time.monotonic() >= deadline:
            return left
        _signal_all(left, signal.SIGKILL)
        if not _wait_empty(namespaces, 1.0):
            return []


def remove(netns: str) -> None:
    """Delete a namespace (its veths go with it once no process holds it). Idempotent."""
    if not exists(netns):
        return
    with contextlib.suppress(FileNotFoundError):
        pr_netns.remove(netns)
