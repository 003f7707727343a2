"""What one speaker observed of its peers, for metrics: heartbeat loss and delay, how long each
death took to detect, and how many IPs it took over from each peer.

Membership (raylb.membership) decides who is alive; this only watches the same datagrams and
deaths and counts, so the decision logic stays free of bookkeeping. Pure, fed by SpeakerCore
with the times it is given.

- Loss: every datagram a speaker sends carries the next number of its sequence (heartbeats
  are nearly all of them), so a gap between two accepted numbers of one incarnation is that
  many datagrams that never arrived.
- Delay: the largest gap between two datagrams of a peer since the last scrape (`take_delays`);
  the heartbeat interval when all is well, approaching `dead_after_s` before a death.
- Detection: from the peer's last datagram to the step that declared it dead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class _Seen:
    incarnation: int
    seq: int | None
    at_s: float


@dataclass
class PeerStats:
    """Counters per peer name; read by raylb.metrics.speaker_families."""

    lost: Counter[str] = field(default_factory=Counter)
    handovers: Counter[str] = field(default_factory=Counter)
    detection_s: dict[str, float] = field(default_factory=dict)  # the last death of each peer
    detected_at_s: dict[str, float] = field(default_factory=dict)  # when it was declared (caller's clock)
    deaths: Counter[str] = field(default_factory=Counter)
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _max_gap_s: dict[str, float] = field(default_factory=dict)

    def on_datagram(self, peer: str, *, incarnation: int, seq: int | None, now_s: float) -> None:
        last = self._seen.get(peer)
        if last is not None and last.incarnation == incarnation:
            if seq is not None and last.seq is not None and seq > last.seq + 1:
                self.lost[peer] += seq - last.seq - 1
            self._max_gap_s[peer] = max(self._max_gap_s.get(peer, 0.0), now_s - last.at_s)
        if last is None or last.incarnation != incarnation or seq is None or last.seq is None or seq > last.seq:
            self._seen[peer] = _Seen(incarnation=incarnation, seq=seq, at_s=now_s)

    def on_death(self, peer: str, *, silent_for_s: float | None, now_s: float) -> None:
        self.deaths[peer] += 1
        self.detected_at_s[peer] = now_s
        if silent_for_s is not None:
            self.detection_s[peer] = silent_for_s
        self._seen.pop(peer, None)  # its next incarnation starts a new sequence

    def on_handover(self, peer: str, ips: int) -> None:
        self.handovers[peer] += ips

    def take_delays(self) -> dict[str, float]:
        """The largest gap per peer since the last call (then forgotten)."""
        out, self._max_gap_s = self._max_gap_s, {}
        return out
