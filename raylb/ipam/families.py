"""IP family policy: which address families a Service gets, and in what order of preference.

Why a module: Kubernetes' ipFamilyPolicy / ipFamilies decide how many addresses a
LoadBalancer gets and of which family; the allocator asks this module instead of spreading
the policy over its search.

- SingleStack: one address of the primary family (`ip_families[0]`, IPv4 when empty).
- RequireDualStack: one IPv4 and one IPv6 address from the same pool, or nothing.
- PreferDualStack: both from one pool if some candidate pool has both; else one of the
  primary family; else one of the other. (MetalLB's order, with the pool that has both
  preferred wherever it sits in the pool order.)

The policy decides dual or single, with one exception: PreferDualStack with exactly one family
in `ip_families` is single-stack. That is what the API server writes for PreferDualStack on a
single-stack cluster, where kube-proxy forwards that family only, so an address of the other
family would not work (MetalLB follows the Service's families the same way). Without
`ip_families` (a store that does not default them) the policy alone decides. An unknown
policy is read as SingleStack. Addresses are always listed primary family first.
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


def _policy(req: ServiceRequest) -> str:
    """The policy in effect (see the module docstring for PreferDualStack with one family)."""
    if req.ip_family_policy == PREFER_DUAL_STACK and len(req.ip_families) == 1:
        return SINGLE_STACK
    return req.ip_family_policy


def tiers_for(req: ServiceRequest) -> tuple[Tier, ...]:
    """The family combinations to try for `req`, best first."""
    return _TIERS.get((_policy(req), primary_family(req))) or _TIERS[(SINGLE_STACK, primary_family(req))]


def show(ips: tuple[IPAddress, ...]) -> str:
    return ", ".join(str(ip) for ip in ips) or "<none>"


def family_problem(req: ServiceRequest, ips: tuple[IPAddress, ...]) -> str | None:
    """Why the addresses `ips` cannot serve `req`'s family policy, or None when they fit."""
    policy = _policy(req)
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
