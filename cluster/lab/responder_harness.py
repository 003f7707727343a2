"""A responder in its own process, driven over stdin/stdout: for lab tests and the benchmark.

The responder must run inside a node's network namespace; tests and benchmarks start this
module there (`ip netns exec NODE python -m raylb.cluster.lab.responder_harness`) and talk to it one
line per command, one JSON object per answer:

    announce IP [IFACE,...]   announce IP (on the named interfaces, else by subnet)
    withdraw IP               stop announcing IP
    announce-range IP COUNT STEP [IFACE,...]
                              announce COUNT IPs: IP, IP+STEP, ... (one answer for all)
    gain IP / lose IP         the same as announce / withdraw (with --iface as the named list)
    placement                 {"placement": {ip: [iface, ...]}}
    counters                  {"counters": {"ip@iface": {...}}}
    filters                   {"pending": N}: filters loosened by a batch of gains, not yet tight
    pid                       {"pid": N}
    quit                      stop everything and exit

Every answer has "ok": true/false; a bad command answers an error and the harness goes on.
The first line printed is {"ok": true, "ready": true} once the link watcher runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from raylb.actors.speaker.interfaces import Announcements
from raylb.actors.speaker.responder import Responder


class HarnessClient:
    """Drives a harness process started with `spawn(argv) -> Popen` (e.g. `lab.popen` in a node)."""

    def __init__(self, spawn: Callable[..., subprocess.Popen], *, iface: Sequence[str] = (), ready_timeout_s: float = 20.0) -> None:  # type: ignore[type-arg]
        argv = [sys.executable, "-m", "raylb.cluster.lab.responder_harness"]
        for name in iface:
            argv += ["--iface", name]
        self.process = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._next(ready_timeout_s)
        if not ready.get("ready"):
            raise RuntimeError(f"harness did not start: {ready}")
        self.pid = int(ready["pid"])  # type: ignore[arg-type]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def _next(self, timeout_s: float) -> dict[str, object]:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"harness pid {self.process.pid} gave no answer within {timeout_s} s") from None
        return json.loads(line)  # type: ignore[no-any-return]

    def command(self, line: str, *, timeout_s: float = 10.0) -> dict[str, object]:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._next(timeout_s)

    def counters(self) -> dict[str, dict[str, object]]:
        return self.command("counters")["counters"]  # type: ignore[return-value]

    def close(self, timeout_s: float = 5.0) -> None:
        """Ask it to quit; kill it (this one process, by its handle) if it does not."""
        if self.process.poll() is None:
            try:
                self.command("quit", timeout_s=timeout_s)
                self.process.wait(timeout_s)
            except (OSError, ValueError, TimeoutError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout_s)

    def __enter__(self) -> HarnessClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reply(payload: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
    sys.stdout.flush()


def _handle(line: str, *, announcements: Announcements, responder: Responder, named: list[str] | None) -> bool:
    """Run one command; False means quit."""
    words = line.split()
    if not words:
        return True
    command, args = words[0], words[1:]
    if command == "quit":
        _reply({"ok": True, "bye": True})
        return False
    if command in ("announce", "gain") and args:
        interfaces = args[1].split(",") if len(args) > 1 else named
        placed = announcements.announce(ipaddress.ip_address(args[0]), interfaces=interfaces)
        _reply({"ok": bool(placed), "interfaces": list(placed)})
    elif command == "announce-range" and len(args) >= 3:
        first, count, step = ipaddress.ip_address(args[0]), int(args[1]), int(args[2])
        interfaces = args[3].split(",") if len(args) > 3 else named
        placed = [announcements.announce(first + step * n, interfaces=interfaces) for n in range(count)]
        _reply({"ok": all(placed), "placed": sum(1 for p in placed if p)})
    elif command == "reannounce" and args:
        placed = announcements.reannounce(ipaddress.ip_address(args[0]))
        _reply({"ok": bool(placed), "interfaces": list(placed)})
    elif command in ("withdraw", "lose") and args:
        announcements.withdraw(ipaddress.ip_address(args[0]))
        _reply({"ok": True})
    elif command == "placement":
        placement = {str(ip): list(names) for ip, names in announcements.placement().items()}
        _reply({"ok": True, "placement": placement})
    elif command == "counters":
        counters = {f"{ip}@{name}": c.as_dict() for (ip, name), c in responder.counters().items()}
        _reply({"ok": True, "counters": counters})
    elif command == "filters":
        _reply({"ok": True, "pending": responder.filters_pending()})
    elif command == "pid":
        _reply({"ok": True, "pid": os.getpid()})
    else:
        _reply({"ok": False, "error": f"unknown command {line.strip()!r}"})
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raylb.cluster.lab.responder_harness", description=__doc__)
    parser.add_argument("--iface", action="append", help="announce on these interfaces (default: by subnet)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    responder = Responder()
    announcements = Announcements(responder)
    responder.start()
    announcements.start()
    _reply({"ok": True, "ready": True, "pid": os.getpid()})
    try:
        for line in sys.stdin:
            try:
                if not _handle(line, announcements=announcements, responder=responder, named=args.iface):
                    break
            except Exception as err:  # a bad command must not end the harness
                _reply({"ok": False, "error": f"{type(err).__name__}: {err}"})
    finally:
        announcements.stop()
        responder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
