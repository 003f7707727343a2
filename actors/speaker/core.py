"""One speaker's brain: membership + election + announcing, with every side effect injected.

The speaker actor (actors/speaker/actor.py) is a thin shell around `SpeakerCore`. The core is
plain Python without Ray, sockets or clocks of its own: the caller passes the time (`now_s`,
monotonic seconds), a heartbeat `Transport` (real: actors/speaker/heartbeat.py) and an
`Announcer` (real: the ARP/NDP responder behind `interfaces.Announcements`), so the whole
failover logic runs in unit tests against fakes, with time advanced by hand.

One `step(now_s)` does, in this order:

1. take the newest pushed snapshot (if any) and give its node addresses to `Membership`;
2. read every queued datagram (heartbeats and goodbyes of the peers);
3. `Membership.tick`: peers silent for longer than `dead_after_s` die;
4. once `Membership.ready` (start quiet, see raylb.membership), send a heartbeat to every peer
   when one is due;
5. if anything changed (a death, a join, a new snapshot, readiness, an earlier failure to
   apply), re-run the election (`raylb.election.owned_ips`) and apply the `Handover` to the
   announcer: withdraw what is no longer ours, announce what is newly ours;
6. if a peer joined (came back), announce again every IP we keep. A peer cut off from us
   (link down, one-way loss) believed us dead and claimed our IPs; when its link returns it
   announces them all before it hears us and withdraws. It then stops answering, but the
   neighbours' caches keep its MAC, and since the node still accepts traffic for every VIP
   nothing ever corrects them: the next failover of that IP is invisible to the client, or
   lost. Our own announcements, sent when we hear the peer again (and repeated in the
   responder's burst), are the last word. The same covers a peer's takeover burst that was
   still running when we came back ourselves;
7. the owner may see no change at all: its heartbeats were lost one way only, or it was
   frozen (its own stall does not count against its peers), while its peers had it dead and
   announced its IPs. So a peer we had declared dead and hear again (`Changes.revived`) gets
   a welcome datagram ("I had you dead"), and a speaker welcomed back announces again every
   IP it keeps, exactly as in step 6.

The announcer may fail (a link vanished, a socket error): the failure is logged and counted,
the IP stays "not applied", and the next step after `RETRY_S` tries again. Nothing a peer
sends and nothing the announcer raises escapes `step`.

`leave(now_s)` is the clean handover: stop heartbeating, tell every peer goodbye (twice: UDP
may drop one), then withdraw every IP. Peers re-elect as soon as the goodbye arrives, so the
next owner announces within one datagram flight plus one loop iteration.

Thread safety: one lock guards the core, so an actor may call `push`/`status`/`leave` from
its method thread while its loop thread calls `step`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from raylb import wire
from raylb.election import Handover, Interfaces, diff, elect, owned_ips
from raylb.explain import IPExplanation, explain
from raylb.keyring import KeyRing, KeySet
from raylb.membership import NO_CHANGE, Changes, Membership
from raylb.metrics import Metric, speaker_families
from raylb.peerstats import PeerStats
from raylb.pools import IPAddress
from raylb.snapshot import EMPTY, Snapshot

log = logging.getLogger(__name__)

# After the announcer failed to apply a handover, try again this much later: soon enough that
# a transient error (an interface being re-created) costs little, rare enough that a permanent
# one does not flood the log 40 times a second.
RETRY_S = 0.5
# Goodbyes and welcomes are sent this many times in a row (the copies are idempotent): a lost
# goodbye would cost a full dead_after_s, a lost welcome a stale neighbour entry.
COPIES = 2
# K-observer mode: every speaker tells everyone it is alive every max(MIN_BROADCAST_PERIOD_S,
# n / BROADCASTS_PER_S) seconds, so a lost join is made good; at 1 000 nodes every 20 s, 50
# datagrams/s sent and received per node, on top of 80 heartbeats each way.
MIN_BROADCAST_PERIOD_S = 5.0
BROADCASTS_PER_S = 50.0
# K-observer mode: an accusation goes to everyone this many times, a heartbeat interval apart,
# while this speaker still holds the subject silent. Nobody acknowledges alerts and a node hears
# heartbeats only from its own subjects, so a node that lost the alerts would keep a dead node
# alive for ever; with 3 spaced copies from each of K observers, one lost at 5 % loss costs nothing.
ALERT_COPIES = 3
# Drop reasons counted here, before a datagram reaches Membership (which counts the others).
MALFORMED = "malformed"
UNAUTHENTICATED = "unauthenticated"


class Transport(Protocol):
    """Datagrams to and from the peers' speakers (one fixed port on every node)."""

    def send(self, data: bytes, address: str) -> None: ...

    def receive(self, wait_s: float = 0.0) -> list[tuple[bytes, str]]:
        """Queued datagrams as (payload, source address); waits at most `wait_s` for the first."""
        ...


class Announcer(Protocol):
    """What answers ARP/NDP for the IPs this node owns."""

    def announce(self, ip: IPAddress, interfaces: Interfaces) -> None:
        """Answer for `ip` on `interfaces` (empty: every interface whose subnet holds it)."""
        ...

    def withdraw(self, ip: IPAddress) -> None: ...

    def reannounce(self, ip: IPAddress) -> None:
        """Announce an `ip` already held once more (gratuitous ARP / unsolicited NA burst)."""
        ...

    def counters(self) -> Mapping[str, Any]:
        """Per "ip@interface" counters, for status()."""
        ...


class SpeakerCore:
    """Membership, election and announcements of one node; see the module docstring."""

    def __init__(
        self,
        *,
        membership: Membership,
        transport: Transport,
        announcer: Announcer,
        keys: KeySet,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.membership = membership
        self.node = membership.self_name
        self._transport = transport
        self._announcer = announcer
        self._wall_ns = wall_ns
        self._lock = threading.RLock()
        self._now_s = 0.0
        self._keys = KeyRing(keys, now_s=self._now_s)
        self._snapshot: Snapshot = EMPTY
        self._pending: Snapshot | None = None
        self._applied: dict[IPAddress, Interfaces] = {}  # what the announcer holds now
        self._wanted: dict[IPAddress, Interfaces] = {}  # what the election gave us
        self._next_heartbeat_s: float | None = None
        self._retry_at_s: float | None = None
        self._was_ready = False
        self._hello_sent = False
        self._alerts: dict[str, tuple[int, float]] = {}  # subject -> (copies still to send, when the next is due)
        self._next_broadcast_s: float | None = None
        self._left = False
        self.counts: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()  # malformed / unauthenticated; the rest: membership.drops
        self.peer_stats = PeerStats()  # for metrics (raylb.metrics.speaker_families)
        self._explained: tuple[tuple[Any, ...], dict[IPAddress, IPExplanation]] | None = None

    # ------------------------------------------------------------------ inputs

    def push(self, snapshot: Snapshot) -> int:
        """Offer a snapshot; it is taken if newer than the one held. Returns the version held."""
        with self._lock:
            newest = self._pending or self._snapshot
            if snapshot.version > newest.version:
                self._pending = snapshot
                return snapshot.version
            if snapshot.version < newest.version:
                self.counts["snapshots_ignored"] += 1
            return newest.version

    def set_keys(self, keys: KeySet, *, now_s: float) -> bool:
        """New membership keys from the operator (raylb.keyring: rotation in two steps)."""
        with self._lock:
            changed = self._keys.update(keys, now_s=now_s)
            if changed:
                self.counts["key_updates"] += 1
                log.info("speaker %s: membership keys now %s", self.node, self._keys.report(now_s))
            return changed

    @property
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._pending or self._snapshot

    def on_ray_node_dead(self, node: str, *, now_s: float) -> None:
        """Ray's node table says `node` died (the second, slower signal)."""
        with self._lock:
            changes = self.membership.on_ray_node_dead(node, now_s=now_s)
            if changes:
                log.info("speaker %s: Ray reports %s dead", self.node, node)
                self._reelect(now_s, changes)

    # ------------------------------------------------------------------ the loop

    def step(self, now_s: float) -> Handover:
        """One iteration of the speaker loop; returns what it changed in the announcer."""
        with self._lock:
            self._now_s = now_s
            if self._left:
                return Handover(start={}, stop=frozenset())
            changes = NO_CHANGE
            snapshot_changed = self._take_snapshot(now_s)
            changes |= self._receive(now_s)
            changes |= self.membership.tick(now_s)
            ready = self.membership.ready(now_s)
            became_ready = ready and not self._was_ready
            self._was_ready = ready
            if ready:
                self._heartbeat(now_s)
            if self.membership.observers_k is not None:
                self._observer_duties(changes, ready=ready, became_ready=became_ready)
            retry = self._retry_at_s is not None and now_s >= self._retry_at_s
            if changes or snapshot_changed or became_ready or retry:
                return self._reelect(now_s, changes)
            return Handover(start={}, stop=frozenset())

    def next_wakeup_s(self) -> float | None:
        """When `step` next has timed work to do (heartbeat, death deadline, retry)."""
        with self._lock:
            candidates = (self._next_heartbeat_s, self.membership.next_deadline_s(), self._retry_at_s)
            times = [t for t in candidates if t is not None]
            return min(times) if times else None

    def leave(self, now_s: float) -> None:
        """Say goodbye to every peer, then stop announcing; idempotent."""
        with self._lock:
            if self._left:
                return
            self._left = True
            self._next_heartbeat_s = None
            goodbye = self._encode(self.membership.make_leave(sent_ns=self._wall_ns()))
            targets = self.membership.everyone()
            for _ in range(COPIES):
                for peer, address in targets.items():
                    self._send(peer, address, goodbye)
            self.counts["leaves_sent"] += 1
            self._wanted = {}
            self._apply(diff(self._applied, {}), now_s)
            log.info("speaker %s left; told %s", self.node, sorted(targets))

    # ------------------------------------------------------------------ status

    def owned(self) -> dict[IPAddress, Interfaces]:
        """What the announcer holds now."""
        with self._lock:
            return dict(self._applied)

    def explain(self, *, no_interface: Mapping[str, frozenset[IPAddress]]) -> dict[IPAddress, IPExplanation]:
        """Every snapshot IP, every node's verdict, as this speaker sees it (`raylb.explain`);
        `no_interface`: node -> IPs it holds but cannot place on a usable interface."""
        with self._lock:
            inputs = (self._snapshot, self.membership.alive(), tuple(sorted(no_interface.items())))
            if self._explained is None or self._explained[0] != inputs:  # status is polled; elections are rare
                why = explain(snapshot=inputs[0], alive=inputs[1], no_interface=no_interface)
                self._explained = (inputs, why)
            return self._explained[1]

    def metrics(self) -> list[Metric]:
        """This speaker's Prometheus families (raylb.metrics.speaker_families)."""
        try:
            responder = {k: dict(v) for k, v in self._announcer.counters().items()}
        except Exception:  # noqa: BLE001 - a broken responder still leaves the rest to report
            responder = {}
        with self._lock:
            announced: dict[str, list[str]] = {}
            for service in self._snapshot.services:
                for ip in service.ips:
                    if ip in self._applied:
                        announced.setdefault(str(ip), []).append(service.key)
            lag = max(0, self.membership.newest_snapshot_version - self.snapshot.version)
            return speaker_families(node=self.node, announced=announced, responder=responder, peers=self.peer_stats,
                                    delays_s=self.peer_stats.take_delays(), snapshot_lag=lag)  # fmt: skip

    def status(self, *, no_interface: frozenset[IPAddress] = frozenset()) -> dict[str, Any]:
        why = self.explain(no_interface={self.node: no_interface})
        with self._lock:
            now_s = self._now_s
            try:
                counters = dict(self._announcer.counters())
            except Exception as err:  # status must answer even when the responder is broken
                counters = {"error": f"{type(err).__name__}: {err}"}
            return {
                "node": self.node,
                "incarnation": self.membership.incarnation,
                "snapshot_version": self.snapshot.version,
                "newest_peer_snapshot_version": self.membership.newest_snapshot_version,
                "ready": self._was_ready,
                "left": self._left,
                "alive": sorted(self.membership.alive()),
                "peers": {
                    name: {
                        "alive": v.alive,
                        "address": v.address,
                        "silent_for_s": None if v.silent_for_s is None else round(v.silent_for_s, 3),
                        "reason": v.reason,
                    }
                    for name, v in self.membership.view(now_s).items()
                },
                "owned": {str(ip): list(ifaces) for ip, ifaces in sorted(self._applied.items(), key=_ip_key)},
                "wanted": {str(ip): list(ifaces) for ip, ifaces in sorted(self._wanted.items(), key=_ip_key)},
                "counts": dict(self.counts),
                "drops": dict(self.drops + self.membership.drops),
                "keys": self._keys.report(now_s),
                "responder": counters,
                # the last death of each peer: when this speaker declared it (its now_s clock,
                # CLOCK_MONOTONIC in the actor) and how long the peer had been silent
                "peer_deaths": {
                    peer: {"detected_at_s": at, "silent_for_s": self.peer_stats.detection_s.get(peer)}
                    for peer, at in sorted(self.peer_stats.detected_at_s.items())
                },
                # why this node does (not) announce each IP of the snapshot
                "why": {str(ip): v.text for ip, e in sorted(why.items(), key=_ip_key) if (v := e.of(self.node))},
            }

    # ------------------------------------------------------------------ internals

    def _take_snapshot(self, now_s: float) -> bool:
        if self._pending is None:
            return False
        self._snapshot, self._pending = self._pending, None
        self.membership.set_peers(self._snapshot.peer_addresses(), now_s=now_s)
        self.counts["snapshots"] += 1
        return True

    def _receive(self, now_s: float) -> Changes:
        changes = NO_CHANGE
        keys = self._keys.verifying(now_s)
        wall_ns = self._wall_ns()
        for data, source in self._transport.receive(0.0):
            try:
                datagram = wire.decode(data, keys=keys)
            except wire.WireError as err:
                self.drops[UNAUTHENTICATED if isinstance(err, wire.UnauthenticatedError) else MALFORMED] += 1
                log.debug("speaker %s: dropped datagram from %s: %s", self.node, source, err)
                continue
            self.counts["datagrams"] += 1
            if datagram.node != self.node:
                self.peer_stats.on_datagram(datagram.node, incarnation=datagram.incarnation, seq=datagram.seq, now_s=now_s)
            changes |= self.membership.on_datagram(datagram, now_s=now_s, wall_ns=wall_ns, address=source)
        return changes

    def _encode(self, datagram: wire.Datagram) -> bytes:
        return wire.encode(datagram, key=self._keys.signing)

    def _heartbeat(self, now_s: float) -> None:
        if self._next_heartbeat_s is not None and now_s < self._next_heartbeat_s:
            return
        interval = self.membership.heartbeat_interval_s
        # Keep the phase, but never send a backlog of heartbeats after a stall.
        base = self._next_heartbeat_s if self._next_heartbeat_s is not None else now_s
        self._next_heartbeat_s = max(base + interval, now_s + interval / 2)
        self._broadcast(self._heartbeat_bytes(), self.membership.targets())
        self.counts["heartbeats_sent"] += 1

    def _observer_duties(self, changes: Changes, *, ready: bool, became_ready: bool) -> None:
        """K-observer mode (raylb.membership, "Scaling"): what goes beyond heartbeats to the
        observers. A starting speaker asks everyone who is alive (hello) and answers come back
        as heartbeats; a speaker that becomes ready, or learns it is accused or was had dead,
        tells everyone it is alive; an accusation goes to everyone; a peer that joins hears
        from us directly (it does not watch us)."""
        everyone = self.membership.everyone()
        if not ready and not self._hello_sent and everyone:
            self._hello_sent = True
            self._broadcast(self._encode(self.membership.make_hello(sent_ns=self._wall_ns())), everyone)
        now_s = self._now_s
        for subject in sorted(changes.accused):
            self._alerts[subject] = (ALERT_COPIES, now_s)
        for subject, (left, due_s) in sorted(self._alerts.items()):
            if not self.membership.accusing(subject):
                del self._alerts[subject]  # heard again: evidence beats our accusation
            elif now_s >= due_s:
                self.counts["alerts_sent"] += 1
                self._broadcast(self._encode(self.membership.make_alert(subject, sent_ns=self._wall_ns())), everyone)
                if left > 1:
                    self._alerts[subject] = (left - 1, now_s + self.membership.heartbeat_interval_s)
                else:
                    del self._alerts[subject]
        if not ready:
            return
        due = self._next_broadcast_s is not None and now_s >= self._next_broadcast_s
        if became_ready or changes.refute or changes.welcomed_by or due:
            self.counts["joins_sent"] += 1
            self._broadcast(self._heartbeat_bytes(), everyone)
            # Anti-entropy: a peer that missed our join (a lost datagram) hears us within one
            # period; the period grows with the cluster so this costs BROADCASTS_PER_S at most.
            period_s = max(MIN_BROADCAST_PERIOD_S, len(everyone) / BROADCASTS_PER_S)
            phase = int.from_bytes(hashlib.sha256(self.node.encode()).digest()[:4], "big") / 2**32
            self._next_broadcast_s = now_s + period_s * (1.0 + phase if self._next_broadcast_s is None else 1.0)
        direct = (changes.asked_by | changes.joined) - set(self.membership.targets())
        if direct:
            self._broadcast(self._heartbeat_bytes(), {n: everyone[n] for n in direct if n in everyone})

    def _heartbeat_bytes(self) -> bytes:
        datagram = self.membership.make_heartbeat(snapshot_version=self.snapshot.version, sent_ns=self._wall_ns())
        return self._encode(datagram)

    def _broadcast(self, data: bytes, targets: Mapping[str, str]) -> None:
        for peer, address in targets.items():
            self._send(peer, address, data)

    def _send(self, peer: str, address: str, data: bytes) -> None:
        try:
            self._transport.send(data, address)
        except OSError as err:  # unreachable peer, full queue: a lost datagram, nothing more
            self.counts["send_failed"] += 1
            log.debug("speaker %s: send to %s (%s) failed: %s", self.node, peer, address, err)

    def _reelect(self, now_s: float, changes: Changes) -> Handover:
        if changes:
            log.info(
                "speaker %s: membership changed (died %s, joined %s)",
                self.node, sorted(changes.died), sorted(changes.joined),
            )  # fmt: skip
        if self._left:
            return Handover(start={}, stop=frozenset())
        if self.membership.ready(now_s):
            self._wanted = owned_ips(node=self.node, snapshot=self._snapshot, alive=self.membership.alive())
        else:
            self._wanted = {}  # start quiet: own nothing until we know who else is alive
        self.counts["elections"] += 1
        handover = diff(self._applied, self._wanted)
        self._apply(handover, now_s)
        if changes.died:
            self._count_deaths(changes.died, handover, now_s)
        if changes.revived and self.membership.ready(now_s):
            self._welcome(changes.revived)
        if changes.joined or changes.welcomed_by:
            self._reannounce(kept=set(self._applied) - set(handover.start), joined=changes.joined | changes.welcomed_by)
        return handover

    def _count_deaths(self, died: frozenset[str], handover: Handover, now_s: float) -> None:
        """Metrics only, after the handover is applied (off the failover path): how long each
        death took to notice, and which dead peer each newly announced IP came from."""
        view = self.membership.view(now_s)
        for peer in sorted(died):
            self.peer_stats.on_death(peer, silent_for_s=view[peer].silent_for_s if peer in view else None, now_s=now_s)
        if handover.start:
            before = elect(snapshot=self._snapshot, alive=self.membership.alive() | died)
            for ip in handover.start:
                owner = before[ip].announcer if ip in before else None
                if owner in died:
                    self.peer_stats.on_handover(owner, 1)

    def _welcome(self, peers: frozenset[str]) -> None:
        """Step 7 of the module docstring: tell peers we had dead that they are back."""
        data = self._encode(self.membership.make_welcome(sent_ns=self._wall_ns()))
        targets = self.membership.everyone()
        for _ in range(COPIES):
            for peer in sorted(peers & targets.keys()):
                self._send(peer, targets[peer], data)
        self.counts["welcomes_sent"] += len(peers & targets.keys())

    def _reannounce(self, *, kept: set[IPAddress], joined: frozenset[str]) -> None:
        """Step 6 of the module docstring: a peer came back, so say again what is ours."""
        for ip in sorted(kept, key=_sort_key):
            try:
                self._announcer.reannounce(ip)
            except Exception:  # the next join, or the IP's next handover, announces it again
                self.counts["reannounce_failed"] += 1
                log.exception("speaker %s: announcing %s again failed", self.node, ip)
                continue
            self.counts["reannounced"] += 1
        if kept:
            log.info("speaker %s: %s came back; announced %d IPs again", self.node, sorted(joined), len(kept))

    def _apply(self, handover: Handover, now_s: float) -> None:
        failed = False
        for ip in sorted(handover.stop, key=_sort_key):
            try:
                self._announcer.withdraw(ip)
            except Exception:
                failed = True
                self.counts["withdraw_failed"] += 1
                log.exception("speaker %s: withdrawing %s failed", self.node, ip)
                continue
            self._applied.pop(ip, None)
            log.debug("speaker %s: stopped announcing %s", self.node, ip)
        for ip, interfaces in sorted(handover.start.items(), key=_ip_key):
            try:
                self._announcer.announce(ip, interfaces)
            except Exception:
                failed = True
                self.counts["announce_failed"] += 1
                log.exception("speaker %s: announcing %s failed", self.node, ip)
                continue
            self._applied[ip] = interfaces
            log.debug("speaker %s: announcing %s on %s", self.node, ip, list(interfaces) or "auto")
        if handover.start or handover.stop:  # one line per handover: a takeover may move thousands
            shown = sorted(handover.start, key=_sort_key)[:3]
            log.info(
                "speaker %s: announcing %d more (%s%s), stopped %d",
                self.node, len(handover.start), ", ".join(map(str, shown)),
                ", ..." if len(handover.start) > 3 else "", len(handover.stop),
            )  # fmt: skip
        self._retry_at_s = now_s + RETRY_S if failed else None


def _sort_key(ip: IPAddress) -> tuple[int, int]:
    return (ip.version, int(ip))


def _ip_key(item: tuple[IPAddress, Interfaces]) -> tuple[int, int]:
    return _sort_key(item[0])
