"""Why a node does (not) announce a service IP: the election rule, told node by node.

`raylb.election.elect` answers "who announces"; this module answers the question people ask
when that answer surprises them: for each IP and each node of the snapshot, why this node is
not the announcer. The checks are the rule of `raylb.election`, in the order a user fixes
them (configuration first, then liveness, then the order):

1. `EXCLUDED`: the node carries node.kubernetes.io/exclude-from-external-load-balancers;
2. `NO_ADVERTISEMENT`: no L2Advertisement covering the pool selects the node (or none covers
   the pool at all);
3. `NO_LOCAL_ENDPOINT` (externalTrafficPolicy Local): no ready endpoint on the node;
   `NO_READY_ENDPOINT` (Cluster): no ready endpoint anywhere;
4. `NO_INTERFACE`: the node's speaker reports it has no usable interface for the IP (only its
   own speaker knows its links, so this comes from outside the snapshot: `no_interface`);
5. `NOT_ALIVE`: the speaker of the node is not alive in the viewer's membership;
6. `OUTRANKED`: eligible and alive, but another node comes first in the IP's order;
7. `ANNOUNCER`: the node the election picks.

The election itself does not know about interfaces (speakers do not share their links), so a
node the election picks may still be told `NO_INTERFACE`: then nobody answers for the IP, and
this is where that shows. Without `no_interface`, the node told `ANNOUNCER` is exactly
`elect(...)[ip].announcer` (a property test holds the two together).

For a shared IP (allow-shared-ip), a node is eligible when it is eligible for any of the
services holding the IP, as in the election; otherwise the reason given is the first holder's.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Set
from dataclasses import dataclass

from raylb.election import EXCLUDE_LABEL, order
from raylb.pools import IPAddress
from raylb.snapshot import LOCAL, ServiceState, Snapshot


class Reason(enum.Enum):
    """Why a node is (not) the announcer of an IP; the value is the user's wording."""

    ANNOUNCER = "announcer"
    EXCLUDED = f"not eligible: labelled {EXCLUDE_LABEL}"
    NO_ADVERTISEMENT = "not eligible: not selected by any L2Advertisement of the pool"
    NO_LOCAL_ENDPOINT = "not eligible: no ready endpoint on this node (externalTrafficPolicy Local)"
    NO_READY_ENDPOINT = "not eligible: the service has no ready endpoint"
    NO_INTERFACE = "not eligible: no usable interface for the IP on this node"
    NOT_ALIVE = "not alive"
    OUTRANKED = "outranked"

    @property
    def eligible(self) -> bool:
        return self in (Reason.ANNOUNCER, Reason.OUTRANKED, Reason.NOT_ALIVE)


@dataclass(frozen=True)
class Verdict:
    """One node for one IP: its place in the IP's order and why it (does not) announce."""

    node: str
    rank: int  # 1 = first in the IP's order among all nodes of the snapshot
    reason: Reason
    by: str | None = None  # OUTRANKED: the node that announces instead

    @property
    def text(self) -> str:
        if self.reason is Reason.OUTRANKED:
            return f"outranked by node {self.by}"
        return self.reason.value

    def to_dict(self) -> dict[str, object]:
        return {"node": self.node, "rank": self.rank, "reason": self.reason.name, "text": self.text}


@dataclass(frozen=True)
class IPExplanation:
    """Every node of the snapshot, in the IP's order, with its verdict."""

    ip: IPAddress
    services: tuple[str, ...]
    verdicts: tuple[Verdict, ...]

    @property
    def announcer(self) -> str | None:
        """The node that answers for the IP (None: nobody may or can)."""
        return next((v.node for v in self.verdicts if v.reason is Reason.ANNOUNCER), None)

    def of(self, node: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.node == node), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "ip": str(self.ip),
            "services": list(self.services),
            "announcer": self.announcer,
            "nodes": [v.to_dict() for v in self.verdicts],
        }


def _static_reason(service: ServiceState, node: str, snapshot: Snapshot) -> Reason | None:
    """Checks 1-3 of the module docstring for one service (None: eligible by configuration)."""
    info = snapshot.node(node)
    assert info is not None
    labels = info.label_map
    if EXCLUDE_LABEL in labels:
        return Reason.EXCLUDED
    if not any(ad.matches_node(labels) for ad in snapshot.advertisements_for(service.pool)):
        return Reason.NO_ADVERTISEMENT
    if service.external_traffic_policy == LOCAL:
        return None if node in service.endpoint_nodes else Reason.NO_LOCAL_ENDPOINT
    return None if service.has_ready_endpoint else Reason.NO_READY_ENDPOINT


def explain(
    *,
    snapshot: Snapshot,
    alive: Set[str],
    no_interface: Mapping[str, Set[IPAddress]] | None = None,
) -> dict[IPAddress, IPExplanation]:
    """Every IP of every service in the snapshot, every node's verdict (see the module docstring).

    `no_interface`: node -> IPs its speaker cannot place on any usable interface.
    """
    no_interface = no_interface or {}
    holders: dict[IPAddress, list[ServiceState]] = {}
    for service in snapshot.services:
        for ip in service.ips:
            holders.setdefault(ip, []).append(service)
    out: dict[IPAddress, IPExplanation] = {}
    for ip, services in holders.items():
        services.sort(key=lambda s: s.key)
        ranked = order(ip=ip, candidates=snapshot.node_names)
        reasons: dict[str, Reason | None] = {}
        for node in ranked:
            static = [_static_reason(s, node, snapshot) for s in services]
            reason = None if None in static else static[0]
            if reason is None and node not in alive:
                reason = Reason.NOT_ALIVE
            reasons[node] = reason
        winner = next((n for n in ranked if reasons[n] is None), None)
        verdicts = []
        for rank, node in enumerate(ranked, start=1):
            reason = reasons[node]
            if ip in no_interface.get(node, ()) and reason in (None, Reason.NOT_ALIVE):
                reason = Reason.NO_INTERFACE
            if reason is None:
                reason = Reason.ANNOUNCER if node == winner else Reason.OUTRANKED
            by = winner if reason is Reason.OUTRANKED else None
            verdicts.append(Verdict(node=node, rank=rank, reason=reason, by=by))
        out[ip] = IPExplanation(ip=ip, services=tuple(s.key for s in services), verdicts=tuple(verdicts))
    return out


def for_service(explanations: Mapping[IPAddress, IPExplanation], key: str) -> list[IPExplanation]:
    """The explanations of the IPs `key` ("namespace/name") holds, IPv4 first."""
    found = [e for e in explanations.values() if key in e.services]
    return sorted(found, key=lambda e: (e.ip.version, int(e.ip)))


def unannounceable(explanations: Mapping[IPAddress, IPExplanation]) -> dict[str, dict[IPAddress, IPExplanation]]:
    """Service key -> its IPs that nobody answers for: no node is eligible, or the one elected
    has no usable interface for it. Judged with every speaker alive (`explain(alive=every
    node)`), this is what the operator warns about."""
    out: dict[str, dict[IPAddress, IPExplanation]] = {}
    for ip, e in explanations.items():
        if e.announcer is not None or any(v.reason is Reason.NOT_ALIVE for v in e.verdicts):
            continue
        for key in e.services:
            out.setdefault(key, {})[ip] = e
    return out


def summary(e: IPExplanation) -> str:
    """One line: why nobody announces `e.ip`, node by node ("a: not alive; b: ...")."""
    if not e.verdicts:
        return f"{e.ip}: no speaker node"
    return f"{e.ip}: " + "; ".join(f"{v.node}: {v.text}" for v in e.verdicts)
