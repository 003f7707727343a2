"""Which speakers are alive, as seen by one speaker: a pure failure-detector state machine.

Failover can only be as fast as the moment the surviving speakers learn that the announcer is
gone. Neither Kubernetes (node leases: ~40 s) nor Ray (GCS health checks: ~14 s on this
machine with defaults) is fast enough, and both disappear with the control plane. So the
speakers watch each other directly: each sends a small UDP heartbeat (`raylb.wire`) to every
peer every `heartbeat_interval_s` over the node network, and declares a peer dead after
`dead_after_s` without one. Because heartbeats travel the same network as the ARP/NDP
replies, a dead link is caught like a dead node. Ray's node table is a second signal
(`on_ray_node_dead`), never the only one.

This class only keeps state; the speaker actor owns the socket and the clock and calls:

    m = Membership("node-a", incarnation=time.time_ns(), now_s=time.monotonic())
    m.set_peers({"node-b": "198.18.0.12", ...}, now_s=...)   # from snapshot / Ray table
    m.on_datagram(wire.decode(data, keys=...), now_s=..., wall_ns=..., address=src)
    m.tick(now_s)                                              # every interval/2 or so
    m.alive()                                                  # -> raylb.election
    m.make_heartbeat(...) / m.make_leave()                     # what to send

Every event method returns `Changes` (who died, who joined), so the speaker re-runs the
election at once on a change instead of waiting for a timer: a graceful leave hands over
within one datagram's flight.

Protocol rules the speaker must follow:

- Start quiet. A fresh speaker knows nobody is alive; announcing at once would steal every
  IP for one heartbeat interval. Until `ready(now_s)` (heard from every listed peer, or
  listened for `dead_after_s`) it neither sends heartbeats nor announces. Peers hand IPs to
  a node at its first heartbeat, so by then it already knows whom it outranks.
- Incarnation: a number chosen once per speaker process, larger for a newer process on the
  same node (`time.time_ns()` at start). A newer incarnation is believed at once, even
  right after a leave, so a restarted speaker is back on its first heartbeat. Datagrams of
  an older incarnation are ignored while the newer one is heard; a leave fences its
  incarnation, so reordered heartbeats sent before the goodbye cannot revive it.
- Sequence numbers increase per incarnation; a datagram not newer than the last one seen is
  a duplicate or reordered and is ignored.
- Say goodbye: before stopping on purpose, stop heartbeating, then send `make_leave()` to
  every peer (twice is fine: it is idempotent).

Views may differ for a moment: each speaker decides alone, so after a death one survivor may
take over an IP up to one tick before another stops claiming it, and a one-way link failure
(A hears B, B does not hear A) makes both announce A's IPs for as long as it lasts. Clients
follow the most recent gratuitous ARP / unsolicited NA, and a speaker announces everything
it keeps again when a peer joins or welcomes it back (`make_welcome`, sent to a peer that was
declared dead here; actors/speaker/core.py), so the owner's word comes last:
the cost is a short double announcement, never a lost IP; the views converge within
`dead_after_s` of the network healing. Evidence beats hearsay: a fresh heartbeat revives a
peer that Ray called dead.

Trust. Anything on the node network can send to the heartbeat port: `on_datagram` lets a
datagram change nothing until raylb.admission has accepted it, and counts every refusal in
`drops` by reason. The peer table holds the listed nodes, plus unlisted ones only until they die.

Scaling (K-observer mode, `observers=k`; the speaker actor uses raylb.observers.OBSERVERS=4).
Every speaker heartbeating every other one costs 20 x (n-1) datagrams a second each way per
node. What was taken, and from where:

- from Rapid (Suresh et al., ATC 2018): the monitoring topology - each node is watched by K
  observers, its successors on K pseudo-random rings over the node list (raylb.observers), an
  expander, so per-node heartbeat traffic is 20 x K each way whatever n - and multi-observer
  agreement: a silent subject is accused by its observer (an ALERT to every listed node) and
  removed only once QUORUM (2) of its observers, as the receiver computes them, accuse the
  same process. Not taken: Rapid's consensus on view changes; views here converge
  (eventually-consistent, as before), which suffices because each speaker only decides for
  itself and clients follow the last announcement (see above).
- from SWIM / HashiCorp memberlist (what MetalLB uses): incarnations and refutation - a
  speaker that hears an accusation of itself, or a welcome ("I had you dead"), tells every
  node it is alive, and a fresh heartbeat from a node outweighs any accusation of it
  ("evidence beats hearsay"); periodic anti-entropy (memberlist's push/pull sync, here a
  liveness broadcast every max(5 s, n/50 s), actors/speaker/core.py) so a lost join is made
  good. Lifeguard's local health is the stall guard above. Not taken: random probing with
  indirect pings (a death would be found only when someone happens to probe it; detection
  here stays deterministic: dead_after_s after the last heartbeat plus one loop slot).
- joins: a starting speaker asks every node who is alive (HELLO; they answer with a
  heartbeat), and once ready tells everyone it is alive; a goodbye still goes to everyone.

Under one-way loss (X -> O lost, O -> X fine) O accuses X alone: one accusation is below the
quorum, nobody removes X, no VIP moves; X hears the alert and tells everyone it is alive.
When QUORUM observers cannot hear X but the rest can, X is removed, then revived by its
refutation everywhere except at the blind observers, which keep it dead (and may announce
its VIPs too) until they hear it again - the same double announcement as a one-way link in
the all-to-all protocol, never a lost IP. A partition: each side removes the nodes of the
other whose observers it holds (a node alone accuses its subjects, but one accuser is not a
quorum, so it keeps its view and announces only what it owns); on healing, observers hear
their subjects again and welcome them back, the welcomed refute to everyone, and the views
are one again within a heartbeat interval and a broadcast (0.15 s for 10 % of 60 nodes in the
simulation). Per-node cost is O(K) for heartbeats plus the anti-entropy's 50 datagrams/s
and, per death, K alerts received (cluster/membership_bench.py measures it).

Timing (the defaults, measured for a loaded 2-core machine shared by several test runs):
failover = detection (`dead_after_s` minus the age of the last heartbeat) + tick delay
(<= interval/2) + announcing; with 0.05 s / 0.3 s detection is 0.25-0.3 s, which leaves
room under the 0.5 s p50 and 1 s p99 targets for gratuitous ARP and the client. A false
death needs 6 consecutive heartbeats lost or late (silence > 0.25 s beyond the schedule).
On this machine a thread sleeping 50 ms woke at most 4 ms late over 30 s (load ~3 on 2
cores), and at most 45 ms late over 15 s with a CPU-bound thread holding the GIL in the same
process (load ~7): a margin of 5x in the worst case seen, which is why the speaker must send
heartbeats from a thread of their own and keep heavy work out of its process. Against the
remaining risk, the receiver's own stalls (GC, descheduling; Lifeguard's "local health"
idea) do not count against peers: after a gap between two calls longer than half of
`dead_after_s`, no peer is declared dead until two heartbeat intervals have passed, giving
queued datagrams time to be read first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from raylb import admission, wire
from raylb.observers import QUORUM, Topology

# 20 heartbeats/s per peer: ~40-byte payloads, ~1 kB/s per peer pair, negligible CPU; fine
# enough that detection time is dominated by dead_after_s, not by the heartbeat phase.
HEARTBEAT_INTERVAL_S = 0.05
# 6 missed heartbeats. 0.3 s keeps the p50 failover target (0.5 s) reachable; see the
# module docstring for the false-positive margin.
DEAD_AFTER_S = 0.3
# dead_after_s must cover at least this many heartbeat intervals, so that one or two lost
# datagrams never kill a peer.
MIN_INTERVALS_PER_DEATH = 3
# A gap between two calls longer than this fraction of dead_after_s is our own stall.
STALL_FRACTION = 0.5
STALL_GRACE_INTERVALS = 2

TIMEOUT = "timeout"
LEAVE = "leave"
RAY = "ray"

@dataclass(frozen=True)
class Changes:
    """Who became dead and who became alive in one step; of those alive again, who had been
    declared dead here (`revived`: tell them, see `make_welcome`); and who told us they had
    declared us dead (`welcomed_by`)."""

    died: frozenset[str] = frozenset()
    joined: frozenset[str] = frozenset()
    revived: frozenset[str] = frozenset()
    welcomed_by: frozenset[str] = frozenset()
    # K-observer mode only; none of these changes who is alive by itself:
    accused: frozenset[str] = frozenset()  # subjects this speaker now accuses: alert everyone
    refute: bool = False  # someone accuses this speaker: tell everyone it is alive
    asked_by: frozenset[str] = frozenset()  # starting speakers asking who is alive (hello)

    def __bool__(self) -> bool:
        return bool(self.died or self.joined or self.welcomed_by)

    def __or__(self, other: Changes) -> Changes:
        died = (self.died - other.joined) | other.died
        joined = (self.joined - other.died) | other.joined
        revived = (self.revived - other.died) | other.revived
        return Changes(
            died=frozenset(died), joined=frozenset(joined), revived=frozenset(revived),
            welcomed_by=self.welcomed_by | other.welcomed_by, accused=self.accused | other.accused,
            refute=self.refute or other.refute, asked_by=self.asked_by | other.asked_by,
        )  # fmt: skip


NO_CHANGE = Changes()


@dataclass(frozen=True)
class PeerView:
    """One peer, for logs and status."""

    name: str
    alive: bool
    address: str | None
    incarnation: int | None
    silent_for_s: float | None  # since the last accepted heartbeat; None if never heard
    reason: str | None  # why dead: "timeout", "leave", "ray"; None while alive / unheard


@dataclass(slots=True)  # one per listed node in every speaker: 1 000 x 1 000 in the simulation
class _Peer:
    address: str | None = None
    incarnation: int | None = None
    seq: int | None = None
    last_heard_s: float | None = None
    alive: bool = False
    reason: str | None = None
    dead_since_s: float | None = None
    fenced_at_s: float | None = None  # when the current incarnation said goodbye


class Membership:
    """One speaker's view of which speakers (itself included) are alive."""

    def __init__(
        self,
        self_name: str,
        *,
        now_s: float,
        incarnation: int = 0,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        dead_after_s: float = DEAD_AFTER_S,
        observers: int | None = None,
    ) -> None:
        """`observers`: None, every speaker heartbeats every other one; k, K-observer mode
        (see "Scaling" in the module docstring)."""
        if heartbeat_interval_s <= 0:
            raise ValueError(f"heartbeat_interval_s={heartbeat_interval_s}: must be > 0")
        if dead_after_s < MIN_INTERVALS_PER_DEATH * heartbeat_interval_s:
            raise ValueError(
                f"dead_after_s={dead_after_s}: must be at least {MIN_INTERVALS_PER_DEATH} heartbeat "
                f"intervals ({MIN_INTERVALS_PER_DEATH * heartbeat_interval_s:g} s) so a lost datagram "
                "never kills a peer"
            )
        self.self_name = self_name
        self.incarnation = incarnation
        self.heartbeat_interval_s = heartbeat_interval_s
        self.dead_after_s = dead_after_s
        self._started_s = now_s
        self._last_call_s = now_s
        self._quiet_until_s = now_s
        self._peers: dict[str, _Peer] = {}  # listed peers, and unlisted ones until they die
        self._listed: frozenset[str] = frozenset()
        self.drops: Counter[str] = Counter()  # datagrams refused, by reason
        self._seq = 0
        self._left = False
        self._ready = False
        self.newest_snapshot_version = 0  # highest snapshot version a peer said it holds
        self.observers_k = observers
        self._topology: Topology | None = None
        self._alive_cache: frozenset[str] | None = None
        self._accusations: dict[str, set[str]] = {}  # subject -> accusers (its observers only)

    # ------------------------------------------------------------------ queries

    def alive(self) -> frozenset[str]:
        """Alive speakers, this one included (until it has said goodbye)."""
        if self._alive_cache is None:
            names = {n for n, p in self._peers.items() if p.alive}
            if not self._left:
                names.add(self.self_name)
            self._alive_cache = frozenset(names)
        return self._alive_cache

    def ready(self, now_s: float) -> bool:
        """May this speaker start heartbeating and announcing? (see "Start quiet").

        True once it has listened for dead_after_s, or earlier once it has heard from every
        listed peer (an empty list waits the full window: the peer list may simply not have
        arrived yet). Once true, it stays true.
        """
        if not self._ready:
            heard_all = bool(self._listed) and all(
                (p := self._peers.get(n)) is not None and p.last_heard_s is not None for n in self._listed
            )
            self._ready = heard_all or now_s >= self._started_s + self.dead_after_s
        return self._ready

    @property
    def grace_until_s(self) -> float:
        """No death is declared before this time (set after our own stall)."""
        return self._quiet_until_s

    def targets(self) -> dict[str, str]:
        """Peer name -> address to send heartbeats to: every listed peer, dead or alive (a
        dead peer must hear us when it comes back); in K-observer mode our observers only."""
        if self._topology is None:
            return self.everyone()
        return self._addresses(self._topology.observers(self.self_name, self.alive()))

    def everyone(self) -> dict[str, str]:
        """Every listed peer with an address: where goodbyes, alerts and joins go."""
        return self._addresses(self._listed)

    def _addresses(self, names: Iterable[str]) -> dict[str, str]:
        return {n: p.address for n in sorted(names) if (p := self._peers.get(n)) and p.address is not None}

    def _watched(self) -> Iterable[tuple[str, _Peer]]:
        """The peers whose silence this speaker judges: all, or in K-observer mode its subjects."""
        if self._topology is None:
            return self._peers.items()
        return ((n, self._peers[n]) for n in self._topology.subjects(self.self_name, self.alive()) if n in self._peers)

    def next_deadline_s(self) -> float | None:
        """The earliest time at which `tick` could declare a death (None: nobody to watch)."""
        deadlines = [
            p.last_heard_s + self.dead_after_s
            for name, p in self._watched()
            if p.alive and p.last_heard_s is not None and self.self_name not in self._accusations.get(name, ())
        ]
        if not deadlines:
            return None
        return max(min(deadlines), self._quiet_until_s)

    def view(self, now_s: float) -> dict[str, PeerView]:
        return {
            n: PeerView(
                name=n,
                alive=p.alive,
                address=p.address,
                incarnation=p.incarnation,
                silent_for_s=None if p.last_heard_s is None else max(0.0, now_s - p.last_heard_s),
                reason=p.reason,
            )
            for n, p in sorted(self._peers.items())
        }

    # ------------------------------------------------------------------ outgoing

    def make_heartbeat(self, *, snapshot_version: int = 0, sent_ns: int = 0) -> wire.Datagram:
        if self._left:
            raise RuntimeError(f"speaker {self.self_name} has said goodbye; it must not heartbeat again")
        return self._make(wire.HEARTBEAT, snapshot_version=snapshot_version, sent_ns=sent_ns)

    def make_welcome(self, *, sent_ns: int = 0) -> wire.Datagram:
        """For a peer in `Changes.revived`: "I had you dead". The peer then announces again
        what it keeps, because while we had it dead we announced its IPs, and clients must
        hear the owner last (the owner itself may have seen no change at all: its datagrams
        were lost one way, or it was frozen)."""
        return self._make(wire.WELCOME, sent_ns=sent_ns)

    def make_leave(self, *, sent_ns: int = 0) -> wire.Datagram:
        """The goodbye; after it this speaker is no longer in its own `alive()`."""
        self._left = True
        self._alive_cache = None
        return self._make(wire.LEAVE, sent_ns=sent_ns)

    def _make(self, kind: int, *, snapshot_version: int = 0, sent_ns: int) -> wire.Datagram:
        self._seq += 1
        return wire.Datagram(
            kind=kind, node=self.self_name, incarnation=self.incarnation, seq=self._seq,
            snapshot_version=snapshot_version, sent_ns=sent_ns,
        )  # fmt: skip

    # ------------------------------------------------------------------ events

    def set_peers(self, peers: Mapping[str, str | None] | Iterable[str], *, now_s: float) -> Changes:
        """The node list (name -> address, from the snapshot, which the operator builds from
        Ray's node table): whom to heartbeat to, and whom to accept datagrams from.

        Listing a peer makes nobody alive (only its heartbeat does) and unlisting kills
        nobody (silence does, within dead_after_s: its datagrams are no longer accepted); it
        sets where datagrams go, whom `ready` waits for, and bounds the peer table: an
        unlisted peer's entry is dropped once it is dead.
        """
        self._observe(now_s)
        addresses = dict(peers) if isinstance(peers, Mapping) else dict.fromkeys(peers)
        addresses.pop(self.self_name, None)
        for name, address in addresses.items():
            peer = self._peers.setdefault(name, _Peer())
            if address is not None:
                peer.address = address
        self._listed = frozenset(addresses)
        if self.observers_k is not None:
            self._topology = Topology((*addresses, self.self_name), k=self.observers_k)
        self._forget_unlisted()
        return NO_CHANGE

    def on_datagram(self, datagram: wire.Datagram, *, now_s: float, wall_ns: int, address: str | None) -> Changes:
        """A datagram that arrived from `address` (already authenticated by raylb.wire), at
        receiver wall-clock time `wall_ns`. Refused (and counted in `drops`) unless it comes
        from a listed node, from that node's listed address, within MAX_CLOCK_SKEW_S of our
        clock, and is newer than what that node's process sent before."""
        listed = datagram.node in self._listed
        reason = admission.screen(
            datagram, self_name=self.self_name, listed=listed, wall_ns=wall_ns, address=address,
            listed_address=self._peers[datagram.node].address if listed else None,
        )  # fmt: skip
        if reason is not None:
            self._observe(now_s)
            self.drops[reason] += 1
            return NO_CHANGE
        if datagram.kind == wire.LEAVE:
            return self.on_leave(datagram.node, incarnation=datagram.incarnation, now_s=now_s, seq=datagram.seq)
        if datagram.kind == wire.WELCOME:
            return self.on_welcome(datagram.node, incarnation=datagram.incarnation, now_s=now_s, seq=datagram.seq)
        if datagram.kind == wire.ALERT:
            assert datagram.subject is not None
            return self.on_alert(
                datagram.node, incarnation=datagram.incarnation, seq=datagram.seq, now_s=now_s,
                subject=datagram.subject, subject_incarnation=datagram.subject_incarnation,
            )  # fmt: skip
        if datagram.kind == wire.HELLO:
            p = self._listed_peer(datagram.node)
            if p is None or not self._accepts(p, incarnation=datagram.incarnation, seq=datagram.seq, now_s=now_s, leave=False):
                return NO_CHANGE
            p.seq = datagram.seq if p.incarnation == datagram.incarnation else p.seq
            return Changes(asked_by=frozenset({datagram.node}))
        return self.on_heartbeat(
            datagram.node, incarnation=datagram.incarnation, now_s=now_s, seq=datagram.seq,
            snapshot_version=datagram.snapshot_version,
        )  # fmt: skip

    def on_heartbeat(
        self, peer: str, *, incarnation: int, now_s: float, seq: int | None = None, snapshot_version: int | None = None
    ) -> Changes:
        """A heartbeat of a listed peer arrived. A peer is alive from its first accepted heartbeat."""
        self._observe(now_s)
        p = self._listed_peer(peer)
        if p is None or not self._accepts(p, incarnation=incarnation, seq=seq, now_s=now_s, leave=False):
            return NO_CHANGE
        return self._heard(peer, p, incarnation=incarnation, seq=seq, now_s=now_s, snapshot_version=snapshot_version)

    def on_welcome(self, peer: str, *, incarnation: int, now_s: float, seq: int | None = None) -> Changes:
        """A peer had us dead and hears us again (see `make_welcome`). It is alive, too."""
        self._observe(now_s)
        p = self._listed_peer(peer)
        if p is None or self._left or not self._accepts(p, incarnation=incarnation, seq=seq, now_s=now_s, leave=False):
            return NO_CHANGE
        heard = self._heard(peer, p, incarnation=incarnation, seq=seq, now_s=now_s, snapshot_version=None)
        return heard | Changes(welcomed_by=frozenset({peer}))

    def on_leave(self, peer: str, *, incarnation: int, now_s: float, seq: int | None = None) -> Changes:
        """A listed peer said goodbye: dead at once, and its incarnation is fenced."""
        self._observe(now_s)
        p = self._listed_peer(peer)
        if p is None or not self._accepts(p, incarnation=incarnation, seq=seq, now_s=now_s, leave=True):
            return NO_CHANGE
        p.incarnation, p.fenced_at_s = incarnation, now_s
        if seq is not None:
            p.seq = seq
        return self._kill(peer, p, reason=LEAVE, now_s=now_s)

    def on_alert(
        self, accuser: str, *, incarnation: int, seq: int, now_s: float, subject: str, subject_incarnation: int
    ) -> Changes:
        """K-observer mode: `accuser` finds `subject` silent. The subject is removed once
        QUORUM of its observers (in our view) accuse the same process of it; an accusation
        of ourselves is answered by telling everyone we are alive."""
        self._observe(now_s)
        p = self._listed_peer(accuser)
        if p is None or not self._accepts(p, incarnation=incarnation, seq=seq, now_s=now_s, leave=False):
            return NO_CHANGE
        if p.incarnation == incarnation:
            p.seq = seq
        if subject == self.self_name:
            return Changes(refute=not self._left)
        target = self._peers.get(subject)
        if self._topology is None or subject not in self._listed or target is None:
            self.drops[admission.UNKNOWN_NODE] += 1
            return NO_CHANGE
        if target.incarnation != subject_incarnation or accuser not in self._topology.observers(subject, self.alive()):
            self.drops[admission.STALE] += 1  # about another process of it, or from someone who does not watch it
            return NO_CHANGE
        self._accusations.setdefault(subject, set()).add(accuser)
        return self._judge(subject, now_s)

    def _judge(self, subject: str, now_s: float) -> Changes:
        """Remove `subject` if enough of its living observers accuse it."""
        assert self._topology is not None
        observers = self._topology.observers(subject, self.alive())
        accusers = self._accusations.get(subject, set()) & observers
        needed = max(1, min(QUORUM, len(observers)))
        if len(accusers) < needed:
            return NO_CHANGE
        changes = self._kill(subject, self._peers[subject], reason=TIMEOUT, now_s=now_s)
        self._accusations.pop(subject, None)
        return changes | self._rejudge(now_s) if changes.died else changes

    def _rejudge(self, now_s: float) -> Changes:
        """A removal changes who observes whom: accusations pending elsewhere may now suffice."""
        changes = NO_CHANGE
        for subject in list(self._accusations):
            p = self._peers.get(subject)
            if p is not None and p.alive:
                changes |= self._judge(subject, now_s)
        return changes

    def on_ray_node_dead(self, peer: str, *, now_s: float) -> Changes:
        """Ray's node table says the node is dead: believe it now, but a later, newer
        heartbeat still revives the peer (the speaker is demonstrably alive)."""
        self._observe(now_s)
        p = self._peers.get(peer)
        if peer == self.self_name or p is None:
            return NO_CHANGE
        changes = self._kill(peer, p, reason=RAY, now_s=now_s)
        self._forget_unlisted()
        return changes

    def tick(self, now_s: float) -> Changes:
        """Declare dead every peer silent for more than dead_after_s."""
        self._observe(now_s)
        if now_s < self._quiet_until_s:
            return NO_CHANGE
        silent = [
            name for name, p in self._watched()
            if p.alive and p.last_heard_s is not None and now_s - p.last_heard_s > self.dead_after_s
        ]  # fmt: skip
        if self._topology is not None:  # K-observer mode: accuse, and remove on agreement
            changes = NO_CHANGE
            for name in silent:
                if self.self_name not in self._accusations.get(name, ()):
                    self._accusations.setdefault(name, set()).add(self.self_name)
                    changes |= Changes(accused=frozenset({name})) | self._judge(name, now_s)
            return changes
        died: set[str] = set()
        for name in silent:
            died |= self._kill(name, self._peers[name], reason=TIMEOUT, now_s=now_s).died
        if died:
            self._forget_unlisted()
        return Changes(died=frozenset(died)) if died else NO_CHANGE

    def accusing(self, subject: str) -> bool:
        """Does this speaker still hold `subject` silent (K-observer mode): its accusation is
        pending, or the subject was removed for its silence and has not been heard since?"""
        p = self._peers.get(subject)
        if p is None:
            return False
        if self.self_name in self._accusations.get(subject, ()):
            return True
        return not p.alive and p.reason == TIMEOUT

    def make_alert(self, subject: str, *, sent_ns: int = 0) -> wire.Datagram:
        """The accusation of `subject` (K-observer mode), for every listed peer."""
        self._seq += 1
        p = self._peers[subject]
        return wire.Datagram(
            kind=wire.ALERT, node=self.self_name, incarnation=self.incarnation, seq=self._seq, sent_ns=sent_ns,
            subject=subject, subject_incarnation=p.incarnation or 0,
        )  # fmt: skip

    def make_hello(self, *, sent_ns: int = 0) -> wire.Datagram:
        """A starting speaker's question to everyone: who is alive? (K-observer mode)."""
        return self._make(wire.HELLO, sent_ns=sent_ns)

    # ------------------------------------------------------------------ internals

    def _observe(self, now_s: float) -> None:
        """Notice our own stalls (Lifeguard's local health): silence we slept through is
        not the peers' fault, so deaths wait until we have had time to read the backlog."""
        if now_s - self._last_call_s > STALL_FRACTION * self.dead_after_s:
            self._quiet_until_s = max(self._quiet_until_s, now_s + STALL_GRACE_INTERVALS * self.heartbeat_interval_s)
        self._last_call_s = max(self._last_call_s, now_s)

    def _listed_peer(self, peer: str) -> _Peer | None:
        if peer == self.self_name:
            self.drops[admission.OWN_NAME] += 1
            return None
        if peer not in self._listed:
            self.drops[admission.UNKNOWN_NODE] += 1
            return None
        return self._peers[peer]

    def _heard(
        self, peer: str, p: _Peer, *, incarnation: int, seq: int | None, now_s: float, snapshot_version: int | None
    ) -> Changes:
        if p.incarnation != incarnation:
            p.fenced_at_s = None
        p.incarnation, p.seq, p.last_heard_s = incarnation, seq, now_s
        self._accusations.pop(peer, None)  # evidence beats accusations
        if snapshot_version is not None:
            self.newest_snapshot_version = max(self.newest_snapshot_version, snapshot_version)
        if p.alive:
            return NO_CHANGE
        revived = frozenset({peer}) if p.dead_since_s is not None else frozenset()
        p.alive, p.reason, p.dead_since_s = True, None, None
        self._alive_cache = None
        return Changes(joined=frozenset({peer}), revived=revived)

    def _accepts(self, p: _Peer, *, incarnation: int, seq: int | None, now_s: float, leave: bool) -> bool:
        reason = admission.refusal(p, incarnation=incarnation, seq=seq, now_s=now_s, leave=leave)
        if reason is not None:
            self.drops[reason] += 1
        return reason is None

    def _forget_unlisted(self) -> None:
        """Drop the entries of unlisted peers that are dead: the table never outgrows the node list."""
        for name in [n for n, p in self._peers.items() if n not in self._listed and not p.alive]:
            del self._peers[name]
            self._accusations.pop(name, None)

    def _kill(self, name: str, p: _Peer, *, reason: str, now_s: float) -> Changes:
        if not p.alive:
            # Already dead (or never heard): a goodbye still explains it best.
            if p.reason is None or reason == LEAVE:
                p.reason = reason
            if p.dead_since_s is None:
                p.dead_since_s = now_s
            return NO_CHANGE
        p.alive, p.reason, p.dead_since_s = False, reason, now_s
        self._alive_cache = None
        return Changes(died=frozenset({name}))
