"""The Service annotations raylb reads, under MetalLB's current and deprecated prefixes.

MetalLB moved its annotations from `metallb.universe.tf/` to `metallb.io/`; manifests in the
wild use both. raylb reads both: when a Service has the same annotation under both prefixes,
the current (`metallb.io/`) one wins, and every deprecated key found is reported so the
operator can emit a deprecation event asking the user to rename it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

CURRENT_PREFIX = "metallb.io/"
DEPRECATED_PREFIX = "metallb.universe.tf/"
PREFIXES = (CURRENT_PREFIX, DEPRECATED_PREFIX)  # in order of precedence

# Requested IPs, comma separated, at most one per IP family (dual stack: one v4, one v6).
LOAD_BALANCER_IPS = "loadBalancerIPs"
# Allocate from this pool only, even when its autoAssign is false.
ADDRESS_POOL = "address-pool"
# Services with the same value may share an IP (if their ports and backends allow it).
ALLOW_SHARED_IP = "allow-shared-ip"
# Written by raylb (as by MetalLB): the pool the Service's IP came from.
IP_ALLOCATED_FROM_POOL = "ip-allocated-from-pool"

# The annotations raylb reads from users.
READ = (LOAD_BALANCER_IPS, ADDRESS_POOL, ALLOW_SHARED_IP)


def current(name: str) -> str:
    """The full key under the current prefix, e.g. metallb.io/address-pool."""
    return CURRENT_PREFIX + name


def deprecated(name: str) -> str:
    """The full key under the deprecated prefix, e.g. metallb.universe.tf/address-pool."""
    return DEPRECATED_PREFIX + name


@dataclass(frozen=True)
class Found:
    """An annotation's value and the exact key it was read from (for error messages)."""

    key: str
    value: str


def lookup(annotations: Mapping[str, str], name: str) -> Found | None:
    """The annotation `name` under the first prefix that has it (current wins), or None.

    A key that is present wins even when its value is empty; callers treat an empty value
    as "not set", so an empty `metallb.io/` annotation masks a deprecated one.
    """
    for prefix in PREFIXES:
        key = prefix + name
        if key in annotations:
            return Found(key=key, value=annotations[key])
    return None


def deprecated_in_use(annotations: Mapping[str, str]) -> tuple[str, ...]:
    """The deprecated-prefix keys among the annotations raylb reads, sorted."""
    return tuple(sorted(deprecated(name) for name in READ if deprecated(name) in annotations))
