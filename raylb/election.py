"""Who announces which service IP: one deterministic rule, evaluated alone by every speaker.

There is no leader and no vote. Every speaker holds the same snapshot (`raylb.snapshot`) and
its own view of which speakers are alive (`raylb.membership`), and applies this rule; when the
views agree, exactly one node announces each IP, without any message being exchanged.

The rule, for one service IP:

1. Candidates are the nodes listed in the snapshot whose speaker is alive.
2. A candidate is eligible for a service when all of these hold:
   - traffic: with externalTrafficPolicy Local the node hosts a READY endpoint of the
     service; with Cluster the service has a ready endpoint anywhere (no endpoint at all:
     nobody announces, so clients fail fast instead of being black-holed);
   - advertisement: at least one L2Advertisement covers the service's pool and its
     nodeSelectors match the node (an advertisement without nodeSelectors matches every
     node; several selectors are OR-ed; no advertisement for the pool: nobody announces);
   - the node is not labelled node.kubernetes.io/exclude-from-external-load-balancers
     (any value, as Kubernetes' service controller treats it).
3. The eligible nodes are ordered by SHA-256 of the text "<node name>#<ip>" (ties, which
   need a hash collision, broken by name) and the first one announces. SHA-256 is stable
   across processes, machines and Python versions, unlike `hash()`, which is salted.

Consequences, each tested in tests/unit/test_election.py:

- Each IP of a dual-stack service is elected on its own (the IP is in the hash), so the two
  families of one service usually land on different nodes and load spreads across nodes.
- Minimal disruption: taking away a node that does not announce an IP never moves that IP
  (the order of the others is unchanged); taking away the announcer moves only its IPs,
  each to the next node in that IP's own order.
- Shared IPs (allow-shared-ip): when several services hold the same IP, the IP's eligible
  set is the union over those services, so the IP still has exactly one announcer.

When two speakers' membership views differ for a moment (one has noticed a death, the other
not yet), both may announce an IP for up to one detection delay. That is accepted: the
client's neighbour cache simply follows the latest gratuitous ARP / unsolicited NA, and the
views converge within `raylb.membership.DEAD_AFTER_S`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from raylb.pools import IPAddress
from raylb.snapshot import LOCAL, ServiceState, Snapshot

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
# Ranks memoised: 1 000 dual-stack services on 20 nodes need 40 000; re-hashing them on
# every membership change would put ~100 ms of SHA-256 on the failover path.
RANK_CACHE_SIZE = 1 << 17

# Interfaces to announce on: an empty tuple means "every suitable interface" (auto-select).
Interfaces = tuple[str, ...]


def rank(node: str, ip: IPAddress) -> bytes:
    """The sort key of `node` for `ip`: lower announces first."""
    return _rank(node, _text(ip))


# The text of an IP, memoised: formatting an IPv6 address costs ~3 us, two thirds of an
# election of 10 000 IPv6 VIPs; an ipaddress object hashes cheaply (its integer).
_text = functools.lru_cache(maxsize=RANK_CACHE_SIZE)(str)


@functools.lru_cache(maxsize=RANK_CACHE_SIZE)
def _rank(node: str, ip_text: str) -> bytes:
    # Memoised on strings: they hash in C, ipaddress objects hash in Python.
    return hashlib.sha256(f"{node}#{ip_text}".encode()).digest()


def pick(*, ip: IPAddress, candidates: Iterable[str]) -> str | None:
    """The first of `candidates` in `ip`'s order, or None when there is none."""
    text = _text(ip)
    return min(candidates, key=lambda node: (_rank(node, text), node), default=None)


def order(*, ip: IPAddress, candidates: Iterable[str]) -> list[str]:
    """All candidates in `ip`'s order (first = announcer, second = next in line, ...)."""
    return sorted(set(candidates), key=lambda n: (rank(n, ip), n))


def _advertised_nodes(*, pool: str, snapshot: Snapshot, alive: Set[str]) -> dict[str, Interfaces]:
    """Live snapshot nodes some advertisement of `pool` lets announce -> their interfaces
    (rule steps 1, advertisement and exclusion); the same for every service of the pool."""
    ads = snapshot.advertisements_for(pool)
    out: dict[str, Interfaces] = {}
    if not ads:
        return out
    for node in snapshot.node_names & alive:
        info = snapshot.node(node)
        assert info is not None
        labels = dict(info.labels)
        if EXCLUDE_LABEL in labels:
            continue
        matching = [ad for ad in ads if ad.matches_node(labels)]
        if not matching:
            continue
        if any(not ad.interfaces for ad in matching):
            out[node] = ()  # one advertisement without an interface list opens every interface
        else:
            out[node] = tuple(sorted({i for ad in matching for i in ad.interfaces}))
    return out


def _traffic_filter(service: ServiceState, advertised: Mapping[str, Interfaces]) -> Mapping[str, Interfaces]:
    """Rule step 2, traffic: which of the advertised nodes may carry the service's traffic."""
    if service.external_traffic_policy == LOCAL:
        return {n: advertised[n] for n in service.endpoint_nodes if n in advertised}
    return advertised if service.has_ready_endpoint else {}


def eligible_nodes(*, service: ServiceState, snapshot: Snapshot, alive: Set[str]) -> dict[str, Interfaces]:
    """Eligible node -> interfaces, for every IP of `service` (rule steps 1 and 2)."""
    advertised = _advertised_nodes(pool=service.pool, snapshot=snapshot, alive=alive)
    return dict(sorted(_traffic_filter(service, advertised).items()))


@dataclass(frozen=True)
class Election:
    """The outcome for one IP: who announces, on which interfaces, and who could."""

    ip: IPAddress
    announcer: str | None
    interfaces: Interfaces  # the announcer's; empty = auto-select
    eligible: frozenset[str]
    services: tuple[str, ...]  # keys of the services holding this IP


def elect(*, snapshot: Snapshot, alive: Set[str]) -> dict[IPAddress, Election]:
    """Every IP of every service in the snapshot, elected (rule step 3)."""
    holders: dict[IPAddress, list[ServiceState]] = {}
    for service in snapshot.services:
        for ip in service.ips:
            holders.setdefault(ip, []).append(service)
    per_pool: dict[str, dict[str, Interfaces]] = {}
    out: dict[IPAddress, Election] = {}
    for ip, services in holders.items():
        maps = []
        for service in services:
            if service.pool not in per_pool:
                per_pool[service.pool] = _advertised_nodes(pool=service.pool, snapshot=snapshot, alive=alive)
            maps.append(_traffic_filter(service, per_pool[service.pool]))
        eligible = frozenset(maps[0]) if len(maps) == 1 else frozenset().union(*maps)
        winner = pick(ip=ip, candidates=eligible)
        out[ip] = Election(
            ip=ip,
            announcer=winner,
            interfaces=() if winner is None else _merge_interfaces([m[winner] for m in maps if winner in m]),
            eligible=eligible,
            services=tuple(sorted(s.key for s in services)),
        )
    return out


def _merge_interfaces(lists: list[Interfaces]) -> Interfaces:
    """A shared IP: the union of the interface lists, and "all" (empty) if any says all."""
    if any(not interfaces for interfaces in lists):
        return ()
    return tuple(sorted({i for interfaces in lists for i in interfaces}))


def announcer(*, service: ServiceState, ip: IPAddress, snapshot: Snapshot, alive: Set[str]) -> str | None:
    """Who announces `ip` of `service` (other services sharing the IP are taken into account)."""
    if ip not in service.ips:
        raise ValueError(f"service {service.key} does not hold IP {ip} (it holds {[str(i) for i in service.ips]})")
    result = elect(snapshot=snapshot, alive=alive).get(ip)
    return None if result is None else result.announcer


def owned_ips(*, node: str, snapshot: Snapshot, alive: Set[str]) -> dict[IPAddress, Interfaces]:
    """What `node` must announce now: IP -> interface names (empty tuple = auto-select)."""
    return {
        ip: result.interfaces
        for ip, result in elect(snapshot=snapshot, alive=alive).items()
        if result.announcer == node
    }


@dataclass(frozen=True)
class Handover:
    """What a speaker must change to go from one owned set to the next."""

    start: Mapping[IPAddress, Interfaces]  # newly owned, or owned on other interfaces
    stop: frozenset[IPAddress]  # no longer owned

    @property
    def empty(self) -> bool:
        return not self.start and not self.stop


def diff(before: Mapping[IPAddress, Interfaces], after: Mapping[IPAddress, Interfaces]) -> Handover:
    """Plan the transition between two `owned_ips` results (decide here, act in the speaker)."""
    start = {ip: ifaces for ip, ifaces in after.items() if before.get(ip) != ifaces}
    stop = frozenset(ip for ip in before if ip not in after)
    return Handover(start=start, stop=stop)
