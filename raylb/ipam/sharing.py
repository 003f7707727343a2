"""IP sharing (the `allow-shared-ip` annotation): who may hold an address together.

Rules (the facts come from MetalLB's allocator; the code is ours):

- Only services that all carry the same, non-empty sharing key may share an address. A service
  without a key never shares, and nobody may join an address it holds.
- Backends must be compatible. With externalTrafficPolicy Local, traffic goes only to nodes
  running the service's own endpoints, so two Local services on one address would be announced
  from different nodes; they may share only when they select the same pods: the same selector
  in the same namespace (a selector only picks pods of its own namespace, so `app=web` in two
  namespaces is two sets of pods). MetalLB encodes this as a "backend key" (the selector for
  Local, empty for Cluster) and compares the selector alone. raylb also keeps Local and Cluster
  apart outright (a Local service never shares with a Cluster one, even with an empty
  selector), because the two announce from different node sets.
- No two services on one address may use the same (protocol, port).
- A service that is the only holder of an address may change its key or ports freely; it is
  checked against the *other* holders only.

An address in use is recorded as an `Entry`: just the service key when a single service holds
it without a sharing key, else a `Holders` (the services on it, their common sharing profile,
and which service owns each (protocol, port)).
"""

from __future__ import annotations

from dataclasses import dataclass

from raylb.ipam.request import PortSpec, ServiceRequest

LOCAL = "Local"


@dataclass(frozen=True)
class SharingProfile:
    """What must be equal for two services to share an address: key and backend."""

    key: str
    local_selector: tuple[tuple[str, str], ...] | None  # None under externalTrafficPolicy Cluster
    local_namespace: str | None = None  # the selector's namespace, under Local only

    def describe(self) -> str:
        if self.local_selector is None:
            return f"sharing key {self.key!r} with externalTrafficPolicy Cluster"
        selector = ",".join(f"{k}={v}" for k, v in self.local_selector) or "<empty>"
        return f"sharing key {self.key!r} with externalTrafficPolicy Local and selector {selector} in namespace {self.local_namespace}"


def profile_of(req: ServiceRequest) -> SharingProfile | None:
    """The sharing profile of a request, or None when it does not allow sharing."""
    if not req.sharing_key:
        return None
    if req.external_traffic_policy != LOCAL:
        return SharingProfile(key=req.sharing_key, local_selector=None)
    return SharingProfile(key=req.sharing_key, local_selector=tuple(sorted(req.selector)), local_namespace=req.namespace)


class Holders:
    """The services holding one address that allows sharing (or did, for its sole holder)."""

    __slots__ = ("services", "profile", "ports")

    def __init__(self) -> None:
        self.services: dict[str, tuple[PortSpec, ...]] = {}
        self.profile: SharingProfile | None = None
        self.ports: dict[PortSpec, str] = {}

    def others(self, service: str) -> list[str]:
        return sorted(s for s in self.services if s != service)

    def conflict(self, service: str, profile: SharingProfile | None, ports: tuple[PortSpec, ...]) -> tuple[str, str] | None:
        """Why `service` may not hold this address as well: (reason, message), or None if it may."""
        if len(self.services) == (service in self.services):  # nobody else holds it
            return None
        if self.profile is None or profile is None:
            return "ip-in-use", f"in use by {', '.join(self.others(service))}; sharing needs allow-shared-ip on both"
        if profile != self.profile:
            return (
                "sharing-incompatible",
                f"held by {', '.join(self.others(service))} with {self.profile.describe()}, "
                f"this service has {profile.describe()}",
            )
        for port in ports:
            owner = self.ports.get(port)
            if owner is not None and owner != service:
                return "sharing-incompatible", f"port {port.protocol}/{port.port} is already used by {owner}"
        return None

    def add(self, service: str, profile: SharingProfile | None, ports: tuple[PortSpec, ...]) -> None:
        """Record `service` on this address; the caller has checked `conflict` first."""
        if service in self.services:
            self.remove(service)
        self.services[service] = ports
        self.profile = profile
        for port in ports:
            self.ports[port] = service

    def remove(self, service: str) -> None:
        ports = self.services.pop(service, None)
        if ports is None:
            return
        for port in ports:
            if self.ports.get(port) == service:
                del self.ports[port]

    def __bool__(self) -> bool:
        return bool(self.services)


# What an address in use maps to: the service key alone when one service holds it without a
# sharing key (the common case, and the cheapest record), else a `Holders`.
Entry = str | Holders


def conflict(entry: Entry, service: str, profile: SharingProfile | None, ports: tuple[PortSpec, ...]) -> tuple[str, str] | None:
    """Why `service` may not hold an address recorded as `entry`: (reason, message), or None."""
    if type(entry) is str:
        if entry == service:
            return None
        return "ip-in-use", f"in use by {entry}, which does not allow sharing (allow-shared-ip)"
    return entry.conflict(service, profile, ports)  # type: ignore[union-attr]
