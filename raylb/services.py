"""Service -> ServiceRequest: the one place that reads a Service's annotations and spec.

The allocator works on `ServiceRequest`s and never sees annotations. Everything a user can
get wrong on a Service (a malformed IP, two IPs of one family, a requested IP of a family
the Service does not have) is refused here with an AllocationError that names the Service,
the field or annotation, and the value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import MappingProxyType

from raylb import annotations as ann
from raylb.errors import AllocationError
from raylb.ipam.request import (
    PREFER_DUAL_STACK,
    REQUIRE_DUAL_STACK,
    SINGLE_STACK,
    PortSpec,
    ServiceRequest,
)
from raylb.models.service import CLUSTER, LOAD_BALANCER, LOCAL, Service
from raylb.pools import IPAddress

# AllocationError.reason values raised here.
INVALID_ANNOTATION = "InvalidAnnotation"
INVALID_LOAD_BALANCER_IP = "InvalidLoadBalancerIP"
CONFLICTING_REQUEST = "ConflictingRequest"
INVALID_IP_FAMILY = "InvalidIPFamily"

_FAMILIES = {"IPv4": 4, "IPv6": 6}
_POLICIES = (SINGLE_STACK, PREFER_DUAL_STACK, REQUIRE_DUAL_STACK)


def is_managed(service: Service, *, load_balancer_class: str | None) -> bool:
    """raylb handles the Service: type LoadBalancer and the configured class.

    With no class configured raylb handles only Services without spec.loadBalancerClass;
    with one, only Services naming exactly that class (as MetalLB does).
    """
    return service.spec.type == LOAD_BALANCER and service.spec.load_balancer_class == load_balancer_class


def deprecated_annotations(service: Service) -> tuple[str, ...]:
    """Deprecated `metallb.universe.tf/` annotations the Service uses, for a deprecation event."""
    return ann.deprecated_in_use(service.metadata.annotations)


def _parse_ip(text: str, *, service: str, what: str, reason: str) -> IPAddress:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise AllocationError(service, reason, f"{what}: {text.strip()!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise AllocationError(service, reason, f"{what}: {text.strip()!r} has a zone; give a plain IP")
    return ip


def _requested_ips(service: Service) -> tuple[IPAddress, ...]:
    key = service.key
    spec_ip = (service.spec.load_balancer_ip or "").strip()
    found = ann.lookup(service.metadata.annotations, ann.LOAD_BALANCER_IPS)
    annotated = found.value.strip() if found else ""
    if spec_ip and found and annotated:
        raise AllocationError(
            key,
            CONFLICTING_REQUEST,
            f"spec.loadBalancerIP={spec_ip!r} and annotation {found.key}={annotated!r} are both set; "
            "keep only the annotation",
        )
    if spec_ip:
        return (_parse_ip(spec_ip, service=key, what="spec.loadBalancerIP", reason=INVALID_LOAD_BALANCER_IP),)
    if not found or not annotated:
        return ()
    what = f"annotation {found.key}={annotated!r}"
    ips: list[IPAddress] = []
    for part in annotated.split(","):
        if not part.strip():
            raise AllocationError(key, INVALID_ANNOTATION, f"{what}: empty entry; separate IPs with one comma")
        ip = _parse_ip(part, service=key, what=what, reason=INVALID_ANNOTATION)
        if any(other.version == ip.version for other in ips):
            raise AllocationError(
                key, INVALID_ANNOTATION, f"{what}: more than one IPv{ip.version} address; give at most one per family"
            )
        ips.append(ip)
    return tuple(ips)


def _families(service: Service, requested: tuple[IPAddress, ...]) -> tuple[tuple[int, ...], str]:
    key = service.key
    families: list[int] = []
    for name in service.spec.ip_families:
        if name not in _FAMILIES:
            raise AllocationError(key, INVALID_IP_FAMILY, f"spec.ipFamilies: {name!r} is not IPv4 or IPv6")
        families.append(_FAMILIES[name])
    policy = service.spec.ip_family_policy or SINGLE_STACK
    if policy not in _POLICIES:
        message = f"spec.ipFamilyPolicy: {policy!r} is not one of {', '.join(_POLICIES)}"
        raise AllocationError(key, INVALID_IP_FAMILY, message)
    if not families:
        # The API server always fills ipFamilies; a hand-written Service may not. Use the
        # families of the requested IPs, else what a dual-stack API server would write: IPv4,
        # plus IPv6 when the policy asks for dual stack.
        families = list(dict.fromkeys(ip.version for ip in requested)) or ([4] if policy == SINGLE_STACK else [4, 6])
    for ip in requested:
        if ip.version not in families:
            raise AllocationError(
                key,
                INVALID_IP_FAMILY,
                f"requested IP {ip} is IPv{ip.version} but spec.ipFamilies is "
                f"{['IPv%d' % f for f in families]}; request an IP of the Service's families",
            )
    return tuple(families), policy


def _value(service: Service, name: str) -> str | None:
    found = ann.lookup(service.metadata.annotations, name)
    if found is None or not found.value.strip():
        return None
    return found.value.strip()


def to_request(service: Service, *, namespace_labels: Mapping[str, str]) -> ServiceRequest:
    """The allocator's view of a Service; AllocationError naming field and value if malformed."""
    requested = _requested_ips(service)
    families, policy = _families(service, requested)
    policy_local = service.spec.external_traffic_policy == LOCAL
    return ServiceRequest(
        key=service.key,
        namespace=service.metadata.namespace,
        labels=MappingProxyType(dict(service.metadata.labels)),
        namespace_labels=MappingProxyType(dict(namespace_labels)),
        requested_ips=requested,
        pool=_value(service, ann.ADDRESS_POOL),
        sharing_key=_value(service, ann.ALLOW_SHARED_IP),
        ports=tuple(PortSpec(protocol=p.protocol or "TCP", port=p.port) for p in service.spec.ports),
        selector=tuple(sorted(service.spec.selector.items())),
        external_traffic_policy=LOCAL if policy_local else CLUSTER,
        ip_families=families,
        ip_family_policy=policy,
    )
