"""Who answers ARP/NDP for each VIP, asked from the client over and over while something breaks.

A thread asks for every VIP in turn (ARP for IPv4, a neighbour solicitation for IPv6, each
asked up to three times while nobody answers, see Prober.answering) and records who answered.
Bounded: one round per `interval_s` at most, `max_rounds` rounds, only lab addresses.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from raylb.cluster.lab.probe import Prober
from raylb.cluster.lab import Lab, in_netns

INTERVAL_S = 0.2
#: 20 minutes of rounds at most, whatever the caller forgets.
MAX_ROUNDS = 6000


@dataclass(frozen=True)
class Asked:
    t: float  # time.monotonic() when asked
    vip: str
    macs: tuple[str, ...]


@dataclass
class AnswerWatch:
    lab: Lab
    vips: Iterable[str]
    interval_s: float = INTERVAL_S
    max_rounds: int = MAX_ROUNDS
    samples: list[Asked] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._targets = [ipaddress.ip_address(v) for v in self.vips]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="answer-watch", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> AnswerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Asked]:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise RuntimeError(f"the ARP/NDP watch failed: {self.error!r}") from self.error
        return list(self.samples)

    def _run(self) -> None:
        client = self.lab.client
        try:
            with in_netns(client.netns):
                prober = Prober(client.ifname, ipv4=client.ipv4, ipv6=client.ipv6)
            with prober:
                for _ in range(self.max_rounds):
                    started = time.monotonic()
                    for target in self._targets:
                        macs = prober.answering(target)
                        self.samples.append(Asked(time.monotonic(), str(target), macs))
                    if self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started))):
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def unanswered(self) -> list[Asked]:
        return [s for s in self.samples if not s.macs]

    def answerers(self, vip: str) -> set[tuple[str, ...]]:
        return {s.macs for s in self.samples if s.vip == vip}

    def longest_gap_s(self, vip: str) -> float:
        """Longest time between two answered questions for `vip` (the worst silence seen)."""
        times = [s.t for s in self.samples if s.vip == vip and s.macs]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def timeline(self, vip: str) -> list[tuple[float, tuple[str, ...]]]:
        """When the answer for `vip` changed: (seconds since the first question, who answered)."""
        asked = [s for s in self.samples if s.vip == vip]
        changes = [s for i, s in enumerate(asked) if i == 0 or s.macs != asked[i - 1].macs]
        return [(round(s.t - asked[0].t, 2), s.macs) for s in changes]
