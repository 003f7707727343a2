"""The speaker as a Ray actor: one per node, hard-pinned, holding the node's raw sockets.

The actor is a thin shell: `SpeakerCore` (actors/speaker/core.py) decides, this module wires
the real pieces into it and runs it. Ray starts the actor's worker process from the node's
raylet, so the process lives in the node's network namespace (in the lab) or on the node
(on real machines); everything it opens (ARP/NDP packet sockets, the heartbeat socket bound
to the node address) belongs to that node.

Threads in the actor process:
- the speaker loop (`raylb-speaker`): `core.step` whenever a datagram arrives or timed work is
  due, at least every `loop.LOOP_INTERVAL_S`; it never dies: an exception is logged, counted and
  the loop goes on;
- the responder and link-watcher threads of actors/speaker/responder.py and interfaces.py.

Ray's method calls (`push`, `set_keys`, `status`, `leave`, `node_dead`, `ping`) run on Ray's own thread
and only take the core's lock briefly. Nothing in this process calls Ray: Ray's node table
(the slow second signal of a peer's death) is read by the operator, which relays deaths with
`node_dead`; a blocking GCS call here, while the head is down, could hold the GIL and starve
the heartbeats. Keep heavy work out of this process for the same reason.

The data plane survives the control plane: nothing in the loop calls Ray, the operator or
Kubernetes, so the speaker keeps answering for what it owns while they are gone (as long as
the node's raylet keeps the worker alive; see RAY_gcs_rpc_server_reconnect_timeout_s).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from raylb.actors.metrics_http import SPEAKER_PORT, serve
from raylb.actors.names import RAY_NAMESPACE, SPEAKER_PREFIX
from raylb.actors.speaker.core import SpeakerCore
from raylb.actors.speaker import loop
from raylb.actors.speaker.heartbeat import DEFAULT_PORT, UdpTransport
from raylb.actors.speaker.interfaces import Announcements
from raylb.actors.speaker.responder import Responder
from raylb.election import Interfaces
from raylb.keyring import KeySet
from raylb.membership import DEAD_AFTER_S, HEARTBEAT_INTERVAL_S, Membership
from raylb.observers import OBSERVERS
from raylb.pools import IPAddress
from raylb.snapshot import Snapshot

log = logging.getLogger(__name__)

NAME_PREFIX = SPEAKER_PREFIX
DEFAULT_NAMESPACE = RAY_NAMESPACE
STOP_TIMEOUT_S = 2.0


def speaker_name(node_name: str) -> str:
    return f"{NAME_PREFIX}{node_name}"


class NodeAnnouncer:
    """The core's `Announcer` on real sockets: `Announcements` over a `Responder`.

    The core calls it from the speaker loop, which also sends the heartbeats. A takeover of
    thousands of VIPs costs ~50-100 us of Python per IP (placement, filter bookkeeping, MLD
    join); done in the loop, 3 000 VIPs would stall heartbeats past `dead_after_s` and the
    peers would declare this node dead because it was busy taking over. So calls only queue
    the change, in order, and the `raylb-announce` thread applies them. Nothing is lost on a
    failure: `Announcements` keeps what is wanted and its watcher re-applies it on the next
    link event or resync.
    """

    def __init__(self) -> None:
        self.responder = Responder()
        self.announcements = Announcements(self.responder)
        self._held: set[IPAddress] = set()
        self.responder.start()
        self.announcements.start()
        self.errors: Counter[str] = Counter()
        self._queue: queue.SimpleQueue[tuple[str, IPAddress, Interfaces] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._apply, name="raylb-announce", daemon=True)
        self._worker.start()

    def announce(self, ip: IPAddress, interfaces: Interfaces) -> None:
        self._held.add(ip)
        self._queue.put(("announce", ip, interfaces))

    def withdraw(self, ip: IPAddress) -> None:
        self._held.discard(ip)
        self._queue.put(("withdraw", ip, ()))

    def unplaced(self) -> frozenset[IPAddress]:
        """IPs held but on no interface: this node has no usable interface for them (an IP
        still queued for the announcing thread counts too, for that moment)."""
        return frozenset(self._held - set(self.announcements.placement()))

    def reannounce(self, ip: IPAddress) -> None:
        self._queue.put(("reannounce", ip, ()))

    def _apply(self) -> None:
        while (item := self._queue.get()) is not None:
            action, ip, interfaces = item
            try:
                if action == "announce":
                    if not self.announcements.announce(ip, interfaces=interfaces or None):
                        # Kept as wanted: the link watcher places it once a suitable interface appears.
                        self.errors["no_interface"] += 1
                        if self.errors["no_interface"] % 1000 == 1:
                            log.warning("%s has no suitable interface on this node yet (asked for %s; %d so far)",
                                        ip, list(interfaces) or "auto", self.errors["no_interface"])  # fmt: skip
                elif action == "withdraw":
                    self.announcements.withdraw(ip)
                else:
                    self.announcements.reannounce(ip)
            except Exception:  # one IP's failure never stops the others; the resync retries
                self.errors[f"{action}_failed"] += 1
                log.exception("%s %s failed", action, ip)

    def counters(self) -> Mapping[str, Any]:
        return {f"{ip}@{name}": c.as_dict() for (ip, name), c in self.responder.counters().items()}

    def stop(self) -> None:
        """Apply what is queued (the withdrawals of a leave), then close everything."""
        self._queue.put(None)
        self._worker.join(STOP_TIMEOUT_S)
        self.announcements.stop()
        self.responder.stop()


class Speaker:
    """The actor class (wrapped by `ray.remote` in `start_speaker`)."""

    def __init__(
        self,
        *,
        node_name: str,
        node_address: str,
        keys: KeySet,
        port: int = DEFAULT_PORT,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        dead_after_s: float = DEAD_AFTER_S,
        metrics_port: int = SPEAKER_PORT,
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.node_name = node_name
        self.node_address = node_address
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._transport = UdpTransport(node_address, port=port)
        try:
            self._announcer = NodeAnnouncer()
        except BaseException:
            self._transport.close()
            raise
        membership = Membership(
            node_name,
            now_s=time.monotonic(),
            incarnation=time.time_ns(),
            heartbeat_interval_s=heartbeat_interval_s,
            dead_after_s=dead_after_s,
            observers=OBSERVERS,
        )
        self.core = SpeakerCore(membership=membership, transport=self._transport, announcer=self._announcer, keys=keys)
        self._loop_thread = threading.Thread(target=self._loop, name="raylb-speaker", daemon=True)
        self._loop_thread.start()
        self._metrics = serve(self.core.metrics, host=node_address, port=metrics_port)  # on the node, as MetalLB's
        log.info("speaker %s started on %s:%d (pid %d)", node_name, node_address, port, os.getpid())

    # ------------------------------------------------------------------ Ray methods

    def push(self, snapshot: Snapshot) -> int:
        """Offer a snapshot; returns the version now held (older ones are ignored)."""
        return self.core.push(snapshot)

    def status(self) -> dict[str, Any]:
        status = self.core.status(no_interface=self._announcer.unplaced())
        status["unplaced"] = sorted(str(ip) for ip in self._announcer.unplaced())
        status.update(pid=os.getpid(), address=self.node_address, loop_errors=dict(self.errors),
                      loop_running=self._loop_thread.is_alive())  # fmt: skip
        return status

    def leave(self) -> dict[str, Any]:
        """Graceful stop: stop heartbeating, say goodbye, release every IP, close the sockets.
        Idempotent; the actor stays up (answering `status`) until it is killed."""
        if not self._stop.is_set():
            self._stop.set()
            self._loop_thread.join(STOP_TIMEOUT_S)
            try:
                self.core.leave(time.monotonic())
            finally:
                self._announcer.stop()
                self._transport.close()
        return self.status()

    def set_keys(self, keys: KeySet) -> dict[str, Any]:
        """New membership keys (raylb.keyring); returns the fingerprints now held."""
        self.core.set_keys(keys, now_s=time.monotonic())
        return self.core.status()["keys"]
    def explain(self, service: str, no_interface: Mapping[str, list[str]] | None = None) -> list[dict[str, Any]]:
        """Why each node does (not) announce each IP of `service` ("namespace/name"), as this
        speaker sees it; `no_interface`: what other speakers reported unplaced (node -> IPs)."""
        from raylb.explain import for_service  # noqa: PLC0415

        unplaced = {n: frozenset(ipaddress.ip_address(i) for i in ips) for n, ips in (no_interface or {}).items()}
        unplaced[self.node_name] = self._announcer.unplaced()
        return [e.to_dict() for e in for_service(self.core.explain(no_interface=unplaced), service)]

    def node_dead(self, node_name: str) -> None:
        """Ray's node table says `node_name` died: the second, slower signal, relayed by the
        operator (which watches the table anyway). A newer heartbeat still revives the peer."""
        self.core.on_ray_node_dead(node_name, now_s=time.monotonic())

    def ping(self) -> dict[str, Any]:
        return {"node": self.node_name, "pid": os.getpid(), "running": not self._stop.is_set()}

    # ------------------------------------------------------------------ threads

    def _loop(self) -> None:
        loop.run(self.core, self._transport, stop=self._stop, errors=self.errors)


# ---------------------------------------------------------------------- driver side


def start_speaker(
    *, node_name: str, node_id: str, node_address: str, keys: KeySet, namespace: str = DEFAULT_NAMESPACE,
    metrics_port: int = SPEAKER_PORT,
) -> Any:
    """Create (or return the running) speaker of one Ray node: named `raylb-speaker-<node>`,
    detached, pinned to `node_id` for good (soft=False), never restarted elsewhere by Ray
    (max_restarts=0: the operator decides), and using no CPU slot. `keys`: the membership
    keys (raylb.keyring), mandatory: a speaker never sends or accepts an unauthenticated datagram."""
    import ray  # noqa: PLC0415
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    ipaddress.ip_address(node_address)  # fail here, not in the actor, on a malformed address
    if not isinstance(keys, KeySet):
        raise TypeError(f"start_speaker: keys must be a raylb.keyring.KeySet, got {type(keys).__name__}")
    actor_class = ray.remote(Speaker)
    return actor_class.options(  # type: ignore[attr-defined]
        name=speaker_name(node_name),
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=0,
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(node_name=node_name, node_address=node_address, keys=keys, metrics_port=metrics_port)


def find_speakers(namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """Node name -> handle of every live speaker actor in `namespace`."""
    import ray  # noqa: PLC0415

    found: dict[str, Any] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if entry.get("namespace") != namespace or not name.startswith(NAME_PREFIX):
            continue
        try:
            found[name[len(NAME_PREFIX) :]] = ray.get_actor(name, namespace=namespace)
        except ValueError:  # died between the listing and the lookup
            continue
    return dict(sorted(found.items()))
