"""What the allocator needs to know about a Service, already parsed from the wire.

`raylb.services.to_request` builds a `ServiceRequest` from a Service (annotations with
either prefix, spec.loadBalancerIP, ipFamilies/ipFamilyPolicy); the allocator never looks
at annotations itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from raylb.pools import IPAddress

SINGLE_STACK = "SingleStack"
PREFER_DUAL_STACK = "PreferDualStack"
REQUIRE_DUAL_STACK = "RequireDualStack"

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, order=True)
class PortSpec:
    """One service port as it matters for IP sharing: a protocol and a port number."""

    protocol: str  # "TCP", "UDP" or "SCTP"
    port: int


@dataclass(frozen=True)
class ServiceRequest:
    """A LoadBalancer Service, reduced to what allocation depends on."""

    key: str  # "namespace/name"
    namespace: str
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)  # read-only, shared
    namespace_labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)  # read-only, shared
    # IPs the user asked for (spec.loadBalancerIP or the loadBalancerIPs annotation); at most one per family.
    requested_ips: tuple[IPAddress, ...] = ()
    # The address-pool annotation: allocate from this pool only, even if it is not auto-assign.
    pool: str | None = None
    # The allow-shared-ip annotation: services with the same key may share an IP.
    sharing_key: str | None = None
    ports: tuple[PortSpec, ...] = ()
    # spec.selector as sorted (key, value) pairs; "compatible backends" for sharing under Local policy.
    selector: tuple[tuple[str, str], ...] = ()
    external_traffic_policy: str = "Cluster"  # or "Local"
    ip_families: tuple[int, ...] = (4,)  # spec.ipFamilies as 4/6, primary first
    ip_family_policy: str = SINGLE_STACK
