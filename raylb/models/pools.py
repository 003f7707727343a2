"""Address pools and layer-2 advertisements as they are written (metallb.io wire format).

These models only check shape. Whether the addresses parse, overlap or name real pools is
decided in one place, raylb.config.build_config, which reports every problem instead of
stopping at the first one; so `addresses` is a list of plain strings here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raylb.models.meta import CONDITIONS_SCHEMA, Condition, ConditionsStatus, LabelSelector, Resource, WireModel

LAYER2 = "layer2"
BGP = "bgp"

_ADDRESSES_DESCRIPTION = (
    "Addresses the pool hands out: each entry a single IP, a CIDR (host bits may be set) "
    "or an inclusive FIRST-LAST range; IPv4 and IPv6 may be mixed."
)
_ADDRESSES_SCHEMA = {"minItems": 1}  # the API server refuses an empty pool up front


class BGPAdvertisement(WireModel):
    """How a legacy AddressPool is announced over BGP (parsed; raylb speaks layer 2 only)."""

    aggregation_length: int | None = Field(
        default=None, ge=1, description="IPv4 prefix length announced for each IP."
    )
    aggregation_length_v6: int | None = Field(
        default=None, description="IPv6 prefix length announced for each IP."
    )
    local_pref: int | None = Field(default=None, description="BGP LOCAL_PREF attribute.")
    communities: list[str] = Field(default_factory=list, description="BGP communities.")


class AddressPoolSpec(WireModel):
    """The legacy pool: addresses plus the protocol that announces them."""

    protocol: Literal["layer2", "bgp"] = Field(
        description="How the addresses are announced; raylb supports layer2 only."
    )
    addresses: list[str] = Field(description=_ADDRESSES_DESCRIPTION, json_schema_extra=_ADDRESSES_SCHEMA)
    auto_assign: bool = Field(
        default=True, description="Hand out addresses to services that did not ask for this pool."
    )
    avoid_buggy_ips: bool = Field(
        default=False,
        alias="avoidBuggyIPs",
        description="Never hand out IPv4 addresses ending in .0 or .255.",
    )
    bgp_advertisements: list[BGPAdvertisement] = Field(
        default_factory=list, description="BGP announcement settings (unsupported by raylb)."
    )


class AddressPool(Resource):
    """The legacy pool kind (metallb.io v1alpha1 and v1beta1); prefer IPAddressPool."""

    api_version: Literal["metallb.io/v1beta1", "metallb.io/v1alpha1"] = Field(
        default="metallb.io/v1beta1", description="API group and version of the object."
    )
    kind: Literal["AddressPool"] = Field(default="AddressPool", description="Kind of the object.")
    spec: AddressPoolSpec = Field(description="The pool.")
    status: ConditionsStatus | None = Field(default=None, description="Problems raylb found.")


class ServiceAllocation(WireModel):
    """Which services prefer this pool, and how strongly."""

    priority: int | None = Field(
        default=None, description="Lower numbers are tried first among matching pools."
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces whose services use this pool."
    )
    namespace_selectors: list[LabelSelector] = Field(
        default_factory=list, description="Labels of namespaces whose services use this pool."
    )
    service_selectors: list[LabelSelector] = Field(
        default_factory=list, description="Labels of services that use this pool."
    )


class IPAddressPoolSpec(WireModel):
    """A pool of addresses for LoadBalancer services."""

    addresses: list[str] = Field(description=_ADDRESSES_DESCRIPTION, json_schema_extra=_ADDRESSES_SCHEMA)
    auto_assign: bool = Field(
        default=True, description="Hand out addresses to services that did not ask for this pool."
    )
    avoid_buggy_ips: bool = Field(
        default=False,
        alias="avoidBuggyIPs",
        description="Never hand out IPv4 addresses ending in .0 or .255.",
    )
    service_allocation: ServiceAllocation | None = Field(
        default=None, description="Restrict or prioritise the pool for some services."
    )


class IPAddressPoolStatus(WireModel):
    """Usage counters (as MetalLB reports them) and the problems raylb found."""

    assigned_ipv4: int | None = Field(
        default=None, alias="assignedIPv4", description="IPv4 addresses in use."
    )
    assigned_ipv6: int | None = Field(
        default=None, alias="assignedIPv6", description="IPv6 addresses in use."
    )
    available_ipv4: int | None = Field(
        default=None, alias="availableIPv4", description="IPv4 addresses still free."
    )
    available_ipv6: int | None = Field(
        default=None, alias="availableIPv6", description="IPv6 addresses still free."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Conditions raylb reports for this resource.",
        json_schema_extra=CONDITIONS_SCHEMA,
    )


class IPAddressPool(Resource):
    """A pool of addresses raylb hands to LoadBalancer services."""

    api_version: Literal["metallb.io/v1beta1"] = Field(
        default="metallb.io/v1beta1", description="API group and version of the object."
    )
    kind: Literal["IPAddressPool"] = Field(default="IPAddressPool", description="Kind of the object.")
    spec: IPAddressPoolSpec = Field(description="The pool.")
    status: IPAddressPoolStatus | None = Field(default=None, description="Usage and problems.")


class L2AdvertisementSpec(WireModel):
    """Which pools are announced over ARP/NDP, from which nodes and interfaces."""

    ip_address_pools: list[str] = Field(
        default_factory=list, description="Names of the pools announced; with no selectors either: all pools."
    )
    ip_address_pool_selectors: list[LabelSelector] = Field(
        default_factory=list, description="Labels of the pools announced."
    )
    node_selectors: list[LabelSelector] = Field(
        default_factory=list, description="Labels of the nodes that may announce; empty: all nodes."
    )
    interfaces: list[str] = Field(
        default_factory=list, description="Interfaces to announce on; empty: all interfaces."
    )


class L2Advertisement(Resource):
    """Announce some pools' addresses at layer 2 (ARP for IPv4, NDP for IPv6)."""

    api_version: Literal["metallb.io/v1beta1"] = Field(
        default="metallb.io/v1beta1", description="API group and version of the object."
    )
    kind: Literal["L2Advertisement"] = Field(default="L2Advertisement", description="Kind of the object.")
    spec: L2AdvertisementSpec = Field(
        default_factory=L2AdvertisementSpec, description="What is announced where."
    )
    status: ConditionsStatus | None = Field(default=None, description="Problems raylb found.")
