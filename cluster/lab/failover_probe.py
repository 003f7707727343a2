"""What a client sees during a failover: an HTTP GET to a VIP every 10 ms, and the outage.

Failover is judged from the client, because that is where it matters: the time between the
client's last successful request before a node dies and its first successful request after,
served by the node that took over, includes everything (detection, election, gratuitous
ARP / unsolicited NA, the client's neighbour cache, TCP). Each request opens a new TCP
connection with a short timeout, so a request to the dead node fails fast instead of hiding
the takeover behind TCP retransmissions.

Two halves:
- the prober, run INSIDE the client's network namespace:
      python -m raylb.cluster.lab.failover_probe --vip 198.18.0.130 --interval-ms 10 --duration-s 20
  prints one JSON line per request {"t": monotonic s, "ok": bool, "node": str|null} and a last
  line {"summary": {...}}; SIGTERM/SIGINT end it early (the summary is still printed). The
  lab's HTTP servers answer with the node's name, which is how a sample knows who served it.
- pure functions over the samples (`outages`, `takeover`), and `ProbeRun`, which starts the
  prober through any spawn function (e.g. `partial(lab.popen, lab.client)`) and collects its
  samples in a thread, for tests and the `raylb lab failover` benchmark.

`t` is CLOCK_MONOTONIC, which every process on the machine shares (namespaces do not change
it), so the moment the test kills a node can be compared with the samples directly.
Every loop is bounded: at most duration/interval requests, only to lab addresses.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from raylb.cluster.lab.probe import OutsideLabError, require_lab_netns
from raylb.cluster.lab.topology import SUBNET_V4, SUBNET_V6

# The only addresses a lab prober may send to (DESIGN.md, "The lab").
LAB_SUBNETS = (SUBNET_V4, SUBNET_V6)
# A lab request takes ~1 ms; 80 ms means "no answer" while still fitting a few tries into the
# 0.5 s failover target, so the measured outage is not rounded up by the timeout.
DEFAULT_TIMEOUT_S = 0.08
DEFAULT_INTERVAL_S = 0.01
MAX_DURATION_S = 600.0
HTTP_PORT = 80


@dataclass(frozen=True)
class Sample:
    t: float  # CLOCK_MONOTONIC seconds at the start of the request
    ok: bool
    node: str | None = None  # who answered (the lab's HTTP body), None on failure


@dataclass(frozen=True)
class Outage:
    """A stretch without successful requests: from the last success to the next one."""

    start_s: float  # time of the last successful request before
    end_s: float  # time of the first successful request after
    failed: int  # requests that failed in between
    before: str | None  # who served before
    after: str | None  # who served after

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "duration_s": round(self.duration_s, 4)}


# ----------------------------------------------------------------------------- pure functions


def outages(samples: Iterable[Sample]) -> list[Outage]:
    """Every run of failed requests between two successes (runs at the edges are not outages
    yet: they have no success on one side)."""
    found: list[Outage] = []
    last_ok: Sample | None = None
    failed = 0
    for sample in sorted(samples, key=lambda s: s.t):
        if not sample.ok:
            failed += 1
            continue
        if last_ok is not None and failed:
            found.append(Outage(last_ok.t, sample.t, failed, last_ok.node, sample.node))
        last_ok, failed = sample, 0
    return found


def takeover(samples: Iterable[Sample], *, event_s: float) -> Outage | None:
    """The outage a failover caused, for an event (kill, link down, leave) at `event_s`.

    From the last success at or before the event to the first success after it served by
    another node; the duration is the longest gap between successes in that window (after a
    clean handover the old node may serve on until the client switches, which is no outage).
    None when no other node served after the event (no takeover seen yet).
    """
    ordered = sorted(samples, key=lambda s: s.t)
    before = next((s for s in reversed(ordered) if s.ok and s.t <= event_s), None)
    if before is None:
        return None
    after = next((s for s in ordered if s.ok and s.t > event_s and s.node != before.node), None)
    if after is None:
        return None
    window = [s for s in ordered if before.t <= s.t <= after.t]
    successes = [s for s in window if s.ok]
    # Longest gap; equal gaps (to the microsecond) go to the latest, the one ending the switch.
    start, end = max(zip(successes, successes[1:]), key=lambda pair: (round(pair[1].t - pair[0].t, 6), pair[1].t))
    return Outage(
        start_s=start.t,
        end_s=end.t,
        failed=sum(1 for s in window if not s.ok),
        before=before.node,
        after=after.node,
    )


# ----------------------------------------------------------------------------- the prober


def check_lab_vip(vip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(vip)
    if not any(address in net for net in LAB_SUBNETS):
        raise ValueError(f"--vip {vip}: outside the lab subnets {[str(n) for n in LAB_SUBNETS]}")
    return address


def get_once(vip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, timeout_s: float, port: int = HTTP_PORT) -> Sample:
    """One HTTP/1.0 GET over a new connection; ok only for status 200 within `timeout_s`."""
    started = time.monotonic()
    deadline = started + timeout_s
    family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    host = str(vip) if vip.version == 4 else f"[{vip}]"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect((str(vip), port))
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            chunks = []
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return Sample(t=started, ok=False)
    node = served_by(b"".join(chunks))
    return Sample(t=started, ok=node is not None, node=node)


def served_by(response: bytes) -> str | None:
    """The node named by a complete `200` response; None for anything else.

    Complete means the body is exactly Content-Length bytes and not empty: a server killed
    between its headers and its body closes the connection with the headers alone, and that
    half answer is a failure, not a success from an unknown node.
    """
    head, separator, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if not separator or len(parts) < 2 or parts[1] != b"200":
        return None
    headers = dict(line.partition(b":")[::2] for line in header_lines)
    length = {k.strip().lower(): v.strip() for k, v in headers.items()}.get(b"content-length")
    if not body or (length is not None and length != str(len(body)).encode()):
        return None
    text = body.decode(errors="replace").strip()
    if text.startswith("{"):  # the in-cluster backend image: {"pod": ..., "node": ..., "client": ...}
        try:
            return str(json.loads(text)["node"])
        except (ValueError, KeyError, TypeError):
            return None
    return text or None


def probe(
    vip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, interval_s: float, duration_s: float,
    timeout_s: float = DEFAULT_TIMEOUT_S, emit: Callable[[Sample], None] = lambda s: None,
    stop: threading.Event | None = None,
) -> list[Sample]:  # fmt: skip
    """Request every `interval_s` for `duration_s` (ticks missed while a request hangs are
    skipped, never made up in a burst)."""
    stop = stop or threading.Event()
    samples: list[Sample] = []
    start = time.monotonic()
    end = start + duration_s
    limit = int(duration_s / interval_s) + 1
    next_t = start
    while len(samples) < limit and not stop.is_set():
        now = time.monotonic()
        if now >= end:
            break
        if now < next_t:
            stop.wait(next_t - now)
            continue
        sample = get_once(vip, timeout_s=timeout_s)
        samples.append(sample)
        emit(sample)
        next_t += interval_s
        if next_t < time.monotonic():  # late: realign to the grid instead of bursting
            next_t = time.monotonic() + interval_s - (time.monotonic() - start) % interval_s
    return samples


def summary(samples: Sequence[Sample]) -> dict[str, object]:
    return {
        "samples": len(samples),
        "ok": sum(s.ok for s in samples),
        "failed": sum(not s.ok for s in samples),
        "nodes": sorted({s.node for s in samples if s.node}),
        "outages": [o.as_dict() for o in outages(samples)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raylb.cluster.lab.failover_probe", description=__doc__)
    parser.add_argument("--vip", required=True, help="a VIP inside the lab subnets")
    parser.add_argument("--interval-ms", type=float, default=DEFAULT_INTERVAL_S * 1000)
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--timeout-ms", type=float, default=DEFAULT_TIMEOUT_S * 1000)
    args = parser.parse_args(argv)
    try:
        vip = check_lab_vip(args.vip)
        require_lab_netns()
    except (ValueError, OutsideLabError) as err:
        parser.error(str(err))
    if not 0 < args.duration_s <= MAX_DURATION_S:
        parser.error(f"--duration-s must be in (0, {MAX_DURATION_S:g}]")
    if not 1 <= args.interval_ms <= 10_000 or not 1 <= args.timeout_ms <= 10_000:
        parser.error("--interval-ms and --timeout-ms must be in [1, 10000]")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def emit(sample: Sample) -> None:
        sys.stdout.write(json.dumps({"t": round(sample.t, 6), "ok": sample.ok, "node": sample.node}) + "\n")
        sys.stdout.flush()

    print(json.dumps({"ready": True, "vip": str(vip)}), flush=True)
    samples = probe(
        vip, interval_s=args.interval_ms / 1000, duration_s=args.duration_s,
        timeout_s=args.timeout_ms / 1000, emit=emit, stop=stop,
    )  # fmt: skip
    print(json.dumps({"summary": summary(samples)}), flush=True)
    return 0


# ----------------------------------------------------------------------------- the caller's side


class ProbeRun:
    """A prober process started with `spawn(argv, **popen_kwargs)`, its samples collected live."""

    def __init__(
        self, spawn: Callable[..., subprocess.Popen], *, vip: str, duration_s: float,  # type: ignore[type-arg]
        interval_ms: float = DEFAULT_INTERVAL_S * 1000, timeout_ms: float = DEFAULT_TIMEOUT_S * 1000,
        ready_timeout_s: float = 20.0,
    ) -> None:  # fmt: skip
        self.vip = str(check_lab_vip(vip))
        argv = [
            sys.executable, "-m", "raylb.cluster.lab.failover_probe", "--vip", self.vip,
            "--interval-ms", str(interval_ms), "--duration-s", str(duration_s), "--timeout-ms", str(timeout_ms),
        ]  # fmt: skip
        self.process = spawn(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._events: queue.Queue[dict[str, object]] = queue.Queue()
        self.summary: dict[str, object] | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            first = self._events.get(timeout=ready_timeout_s)
        except queue.Empty:
            self.stop()
            raise TimeoutError(f"failover prober for {self.vip} did not start within {ready_timeout_s} s") from None
        if not first.get("ready"):
            self.stop()
            raise RuntimeError(f"failover prober for {self.vip} failed to start: {first}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            data = json.loads(line)
            if "t" in data:
                with self._lock:
                    self._samples.append(Sample(t=data["t"], ok=data["ok"], node=data["node"]))
            elif "summary" in data:
                self.summary = data["summary"]
            else:
                self._events.put(data)
        self._events.put({"exited": True})

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def wait_for(self, predicate: Callable[[list[Sample]], object], *, timeout_s: float, what: str) -> object:
        """Poll the samples until `predicate(samples)` is truthy; TimeoutError naming `what`."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate(self.samples())
            if value:
                return value
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise TimeoutError(f"prober for {self.vip}: no {what} within {timeout_s} s")
            time.sleep(0.02)

    def stop(self, timeout_s: float = 5.0) -> list[Sample]:
        """End the prober (SIGTERM, then SIGKILL of this one process) and return every sample."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self._reader.join(timeout_s)
        return self.samples()

    def __enter__(self) -> ProbeRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
