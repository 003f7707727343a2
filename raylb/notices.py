"""What the operator tells a user about a Service that has no IP, or an IP nobody answers for.

The decisions of raylb.reconcile say what to write; these say why, in Events a user reads with
`kubectl describe service` (issue 11: each found by trying raylb as a user would):

- a Service naming a pool that exists but was rejected hears that the pool is invalid and why
  (the allocator only sees valid pools and would say it does not exist);
- while no MetalLB resource is honoured, a Service waiting for an IP hears that raylb is not
  deployed;
- a Service with ready endpoints whose IPs no node may announce (or whose elected node has no
  usable interface) hears each node's reason, from raylb.explain.

Pure: Writes out, nothing executed here.
"""

from __future__ import annotations

from collections.abc import Mapping

from raylb.config import Config
from raylb.desired import Ref
from raylb.errors import AllocationError
from raylb.explain import explain, summary, unannounceable
from raylb.ipam.request import ServiceRequest
from raylb.models.metallb import HONOURED_NAME
from raylb.pools import IPAddress
from raylb.reconcile import Outcome, RecordEvent, ServiceView, Write
from raylb.snapshot import Snapshot

UNKNOWN_POOL, INVALID_POOL = "unknown-pool", "invalid-pool"  # AllocationError reasons
NOT_DEPLOYED, NOT_ANNOUNCED = "NotDeployed", "NotAnnounced"  # Event reasons


def name_invalid_pools(
    outcomes: Mapping[str, Outcome], *, requests: Mapping[str, ServiceRequest], config: Config
) -> dict[str, Outcome]:
    """A Service naming a pool that exists but was rejected is told why the pool is invalid,
    not that it does not exist (the allocator only ever sees the valid pools)."""
    out = dict(outcomes)
    for key, outcome in outcomes.items():
        if not isinstance(outcome, AllocationError) or outcome.reason != UNKNOWN_POOL:
            continue
        pool = requests[key].pool if key in requests else None
        if pool is None:
            continue
        problems = [p for kind in ("IPAddressPool", "AddressPool") for p in config.problems_of(kind, pool)]
        if problems:
            why = "; ".join(f"{p.field}={p.value!r}: {p.message}" for p in problems)
            out[key] = AllocationError(key, INVALID_POOL, f"address pool {pool!r} (address-pool annotation) is invalid: {why}")
    return out


def not_deployed_events(
    views: Mapping[str, ServiceView], *, operator_namespace: str, told: frozenset[str]
) -> list[Write]:
    """While no MetalLB resource is honoured, each LoadBalancer Service (`views`, as
    `ServiceViews.read` gives them) waiting for an IP hears why, once (`told`: keys told)."""
    message = (f"raylb is not deployed: no MetalLB resource {HONOURED_NAME!r} in namespace "
               f"{operator_namespace!r}; the Service gets an IP once it exists")  # fmt: skip
    return [
        RecordEvent(view.ref, "Warning", NOT_DEPLOYED, message)
        for key, view in sorted(views.items())
        if key not in told and not view.recorded_ips
    ]


def unannounced_events(
    snapshot: Snapshot, *, told: Mapping[str, str], no_interface: Mapping[str, frozenset[IPAddress]] | None = None
) -> tuple[list[Write], dict[str, str]]:
    """A Warning for each Service that has IPs no node may announce, even with every speaker
    alive (see raylb.explain), naming each node's reason; told again only when the reason
    changes. `no_interface`: what each speaker reports it cannot place (node -> IPs). Returns
    the writes and the new memory (key -> message).

    A Service without any ready endpoint is not warned about: its pods are not ready yet, which
    is the application's state (Kubernetes does not warn either), not something to fix in raylb's
    configuration; `raylb status --service` still shows it."""
    ready = {s.key for s in snapshot.services if s.has_ready_endpoint}
    why = explain(snapshot=snapshot, alive=snapshot.node_names, no_interface=no_interface)
    bad = {k: v for k, v in unannounceable(why).items() if k in ready}
    writes: list[Write] = []
    now: dict[str, str] = {}
    for key, ips in sorted(bad.items()):
        message = "no node may announce " + " | ".join(summary(e) for _, e in sorted(ips.items(), key=lambda i: (i[0].version, int(i[0]))))
        now[key] = message
        if told.get(key) != message:
            namespace, _, name = key.partition("/")
            writes.append(RecordEvent(Ref("Service", namespace, name), "Warning", NOT_ANNOUNCED, message))
    return writes, now
