"""IP family policy: which address families a Service gets, and in what order of preference.

Why a module: Kubernetes' ipFamilyPolicy / ipFamilies decide how many addresses a
LoadBalancer gets and of which family; the allocator asks this module instead of spreading
the policy over its search.

- SingleStack: one address of the primary family (`ip_families[0]`, IPv4 when empty).
- RequireDualStack: one IPv4 and one IPv6 address from the same pool, or nothing.
- PreferDualStack: both from one pool if some candidate pool has both; else one of the
  primary family; else one of the other. (MetalLB's order, with the pool that has both
  preferred wherever it sits in the pool order.)

The policy decides dual or single, not the length of `ip_families`; an unknown policy is read
as SingleStack. Addresses are always listed primary family first.
"""

from __future__ import annotations

from raylb.ipam.request import PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, SINGLE_STACK, ServiceRequest
from raylb.pools import IPAddress

Tier = tuple[int, ...]  # the families one allocation must cover, primary first


def primary_family(req: ServiceRequest) -> int:
    return req.ip_families[0] if req.ip_families else 4


def _tier_table() -> dict[tuple[str, int], tuple[Tier, ...]]:
    table = {}
    for primary in (4, 6):
        secondary = 10 - primary  # 4 <-> 6
        table[(SINGLE_STACK, primary)] = ((primary,),)
        table[(REQUIRE_DUAL_STACK, primary)] = ((primary, secondary),)
        table[(PREFER_DUAL_STACK, primary)] = ((primary, secondary), (primary,), (secondary,))
    return table


_TIERS = _tier_table()


def tiers_for(req: ServiceRequest) -> tuple[Tier, ...]:
    """The family combinations to try for `req`, best first."""
    primary = req.ip_families[0] if req.ip_families else 4
    return _TIERS.get((req.ip_family_policy, primary)) or _TIERS[(SINGLE_STACK, primary)]


def show(ips: tuple[IPAddress, ...]) -> str:
    return ", ".join(str(ip) for ip in ips) or "<none>"


def family_problem(req: ServiceRequest, ips: tuple[IPAddress, ...]) -> str | None:
    """Why the addresses `ips` cannot serve `req`'s family policy, or None when they fit."""
    policy = req.ip_family_policy
    dual = policy in (REQUIRE_DUAL_STACK, PREFER_DUAL_STACK)
    if len(ips) == 1:
        if policy == REQUIRE_DUAL_STACK:
            return f"RequireDualStack needs an IPv4 and an IPv6 address, got {show(ips)}"
        if not dual and ips[0].version != primary_family(req):
            primary = primary_family(req)
            return f"SingleStack IPv{primary} needs one IPv{primary} address, got {show(ips)}"
        return None
    if len(ips) == 2 and ips[0].version != ips[1].version:
        return None if dual else f"SingleStack needs one address, got {show(ips)}"
    return f"expected one address per IP family (at most two), got {show(ips)}"
