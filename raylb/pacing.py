"""A token bucket: how fast a node may send its gratuitous ARP / unsolicited NA frames.

A node that takes over 3 000 VIPs at once must tell the segment about each of them, and
repeat it (raylb.actors.speaker.responder). Unpaced, that is 12 000 broadcast or all-nodes
multicast frames in a few milliseconds: every host and switch CPU on the segment sees a
storm, send queues overflow (ENOBUFS) and frames are lost. The bucket lets a single takeover
out at once and spreads a mass takeover over a fraction of a second.

The rate: `ANNOUNCE_RATE_PER_S` = 10 000 frames/s per interface.
- Fast enough: the first announcement of each of 3 000 VIPs leaves within 0.3 s, which with
  0.3 s to detect a death keeps the last VIP inside the 1 s failover target (DESIGN.md).
- Not a flood: 10 000 frames of 60 bytes are 6.7 Mbit/s on the wire (under 1 % of a 1 Gbit/s
  link); a host's kernel handles an ARP or NA in microseconds, so this costs each neighbour
  a few percent of a core for the 0.3 s it lasts. It is half the unrelated flood (20 000
  frames/s) raylb's own responder is specified to take without losing a reply.
`ANNOUNCE_BURST` = 100: a handful of VIPs moving (the usual case) leave at once; a mass
takeover never puts more than 100 frames (10 ms worth) back to back on the link.

Pure: the caller passes the time (monotonic seconds), so tests drive it with a fake clock.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

ANNOUNCE_RATE_PER_S = 10_000.0
ANNOUNCE_BURST = 100
# Refills add rate x elapsed in floating point; a token that is 1 - 1e-12 is a token (without
# this, ten refills of 0.1 leave 0.9999999999999999 and the rate drifts 10 % low).
_EPSILON = 1e-9


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` stored; one token per frame."""

    def __init__(self, *, rate_per_s: float, burst: int, now_s: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"token bucket: rate_per_s={rate_per_s} must be > 0 and burst={burst} >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at_s = now_s

    def _refill(self, now_s: float) -> None:
        if now_s > self._at_s:  # a clock that stands still or steps back adds nothing
            self._tokens = min(float(self.burst), self._tokens + (now_s - self._at_s) * self.rate_per_s)
            self._at_s = now_s

    def take(self, now_s: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now_s)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def wait_s(self, now_s: float) -> float:
        """How long until a token is there (0 if one is now)."""
        self._refill(now_s)
        return 0.0 if self._tokens >= 1.0 - _EPSILON else (1.0 - self._tokens) / self.rate_per_s


class AnnouncementSchedule:
    """Which gratuitous announcements to send when: per interface, paced by a `TokenBucket`.

    `announce(ip, interface)` queues one announcement now and `repeats` more, each
    `repeat_interval_s` after the previous one *was sent* (so pacing never squeezes them
    together); announcing again, or `cancel`, drops whatever was pending for that pair.
    First announcements go before any repeat: under a mass takeover every VIP is told once
    before any is told twice. `due(now_s)` returns what to send now, in order; `next_s(now_s)`
    when to ask again. Keys are opaque: the responder uses (IP, interface name).
    """

    def __init__(
        self, *, repeats: int, repeat_interval_s: float, rate_per_s: float = ANNOUNCE_RATE_PER_S,
        burst: int = ANNOUNCE_BURST,
    ) -> None:  # fmt: skip
        self._repeats = repeats
        self._repeat_interval_s = repeat_interval_s
        self._rate_per_s = rate_per_s
        self._burst = burst
        self._generation: dict[tuple[object, str], int] = {}
        self._lanes: dict[str, _Lane] = {}
        self._seq = 0

    def announce(self, ip: object, interface: str, *, now_s: float) -> None:
        key = (ip, interface)
        generation = self._generation.get(key, 0) + 1
        self._generation[key] = generation
        self._lane(interface, now_s).first.append((ip, generation, self._repeats))

    def cancel(self, ip: object, interface: str) -> None:
        key = (ip, interface)
        if key in self._generation:
            self._generation[key] += 1

    def drop_interface(self, interface: str) -> None:
        """The interface closed: forget its queue (its pairs are cancelled by the caller)."""
        self._lanes.pop(interface, None)

    def pending(self) -> int:
        return sum(len(lane.first) + len(lane.later) for lane in self._lanes.values())

    def due(self, now_s: float) -> list[tuple[object, str]]:
        out: list[tuple[object, str]] = []
        for name, lane in self._lanes.items():
            while True:
                self._skip_stale(lane)
                ready = lane.first or (lane.later and lane.later[0][0] <= now_s)
                if not ready or not lane.bucket.take(now_s):
                    break
                if lane.first:
                    ip, generation, left = lane.first.popleft()
                else:
                    _, _, ip, generation, left = heapq.heappop(lane.later)
                out.append((ip, name))
                if left > 0:
                    self._seq += 1
                    heapq.heappush(lane.later, (now_s + self._repeat_interval_s, self._seq, ip, generation, left - 1))
        return out

    def next_s(self, now_s: float) -> float | None:
        """Seconds until `due` may have something (None: nothing pending)."""
        waits: list[float] = []
        for lane in self._lanes.values():
            self._skip_stale(lane)
            if lane.first:
                waits.append(lane.bucket.wait_s(now_s))
            elif lane.later:
                waits.append(max(lane.later[0][0] - now_s, lane.bucket.wait_s(now_s)))
        return max(0.0, min(waits)) if waits else None

    def _lane(self, interface: str, now_s: float) -> _Lane:
        lane = self._lanes.get(interface)
        if lane is None:
            lane = self._lanes[interface] = _Lane(
                name=interface, bucket=TokenBucket(rate_per_s=self._rate_per_s, burst=self._burst, now_s=now_s)
            )
        return lane

    def _live(self, lane: _Lane, ip: object, generation: int) -> bool:
        return self._generation.get((ip, lane.name)) == generation

    def _skip_stale(self, lane: _Lane) -> None:
        while lane.first and not self._live(lane, lane.first[0][0], lane.first[0][1]):
            lane.first.popleft()
        while lane.later and not self._live(lane, lane.later[0][2], lane.later[0][3]):
            heapq.heappop(lane.later)


@dataclass
class _Lane:
    """One interface's queue: first announcements in order, repeats by due time."""

    name: str
    bucket: TokenBucket
    first: deque[tuple[object, int, int]] = field(default_factory=deque)  # (ip, generation, repeats left)
    later: list[tuple[float, int, object, int, int]] = field(default_factory=list)  # (due, seq, ip, generation, left)

