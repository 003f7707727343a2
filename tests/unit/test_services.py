"""Service -> ServiceRequest: every annotation and spec rule, table-driven."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from raylb import annotations as ann
from raylb.errors import AllocationError
from raylb.ipam.request import PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, SINGLE_STACK, PortSpec
from raylb.models.service import Service
from raylb.services import (
    CONFLICTING_REQUEST,
    INVALID_ANNOTATION,
    INVALID_IP_FAMILY,
    INVALID_LOAD_BALANCER_IP,
    deprecated_annotations,
    is_managed,
    to_request,
)

V4, V6 = ipaddress.ip_address("198.18.0.10"), ipaddress.ip_address("2001:db8:18::10")


def svc(annotations: dict[str, str] | None = None, **spec: Any) -> Service:
    return Service.model_validate(
        {
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "annotations": annotations or {}},
            "spec": {"type": "LoadBalancer", **spec},
        }
    )


def new(name: str) -> str:
    return ann.current(name)


def old(name: str) -> str:
    return ann.deprecated(name)


def test_a_plain_service() -> None:
    request = to_request(
        svc(
            ports=[{"name": "http", "port": 80}, {"protocol": "UDP", "port": 53}],
            selector={"b": "2", "a": "1"},
            ipFamilies=["IPv4"],
            ipFamilyPolicy="SingleStack",
        ),
        namespace_labels={"team": "x"},
    )
    assert request.key == "shop/web" and request.namespace == "shop"
    assert dict(request.labels) == {"app": "web"} and dict(request.namespace_labels) == {"team": "x"}
    assert request.requested_ips == () and request.pool is None and request.sharing_key is None
    assert request.ports == (PortSpec("TCP", 80), PortSpec("UDP", 53))
    assert request.selector == (("a", "1"), ("b", "2"))
    assert (request.external_traffic_policy, request.ip_families, request.ip_family_policy) == ("Cluster", (4,), SINGLE_STACK)


@pytest.mark.parametrize(
    ("annotations", "spec", "expected"),
    [
        ({}, {"loadBalancerIP": "198.18.0.10"}, (V4,)),
        ({}, {"loadBalancerIP": " 198.18.0.10 "}, (V4,)),
        ({}, {"loadBalancerIP": ""}, ()),
        ({new("loadBalancerIPs"): "198.18.0.10"}, {}, (V4,)),
        ({old("loadBalancerIPs"): "198.18.0.10"}, {}, (V4,)),
        ({new("loadBalancerIPs"): "198.18.0.10,2001:db8:18::10"}, {"ipFamilies": ["IPv4", "IPv6"]}, (V4, V6)),
        ({new("loadBalancerIPs"): "2001:db8:18::10, 198.18.0.10"}, {"ipFamilies": ["IPv6", "IPv4"]}, (V6, V4)),
        ({new("loadBalancerIPs"): "2001:db8:18::10"}, {"ipFamilies": ["IPv6"]}, (V6,)),
        ({new("loadBalancerIPs"): "  "}, {}, ()),
        # the current prefix wins over the deprecated one
        ({new("loadBalancerIPs"): "198.18.0.10", old("loadBalancerIPs"): "198.18.0.99"}, {}, (V4,)),
        # ... even when it is empty (empty means "not set")
        ({new("loadBalancerIPs"): "", old("loadBalancerIPs"): "198.18.0.99"}, {}, ()),
    ],
)
def test_requested_ips(annotations: dict[str, str], spec: dict[str, Any], expected: tuple[Any, ...]) -> None:
    assert to_request(svc(annotations, **spec), namespace_labels={}).requested_ips == expected


@pytest.mark.parametrize(
    ("annotations", "spec", "reason", "words"),
    [
        ({new("loadBalancerIPs"): "banana"}, {}, INVALID_ANNOTATION, "annotation metallb.io/loadBalancerIPs='banana': 'banana' is not an IP"),
        ({old("loadBalancerIPs"): "198.18.0.300"}, {}, INVALID_ANNOTATION, "metallb.universe.tf/loadBalancerIPs='198.18.0.300'"),
        ({new("loadBalancerIPs"): "198.18.0.10,198.18.0.11"}, {}, INVALID_ANNOTATION, "more than one IPv4"),
        ({new("loadBalancerIPs"): "2001:db8:18::1,2001:db8:18::2"}, {"ipFamilies": ["IPv6"]}, INVALID_ANNOTATION, "more than one IPv6"),
        ({new("loadBalancerIPs"): "198.18.0.10,"}, {}, INVALID_ANNOTATION, "empty entry"),
        ({new("loadBalancerIPs"): "198.18.0.0/24"}, {}, INVALID_ANNOTATION, "not an IP"),
        ({new("loadBalancerIPs"): "fe80::1%eth0"}, {"ipFamilies": ["IPv6"]}, INVALID_ANNOTATION, "zone"),
        ({}, {"loadBalancerIP": "nope"}, INVALID_LOAD_BALANCER_IP, "spec.loadBalancerIP: 'nope' is not an IP"),
        ({new("loadBalancerIPs"): "198.18.0.10"}, {"loadBalancerIP": "198.18.0.10"}, CONFLICTING_REQUEST, "both set"),
        ({new("loadBalancerIPs"): "2001:db8:18::10"}, {"ipFamilies": ["IPv4"]}, INVALID_IP_FAMILY, "is IPv6 but spec.ipFamilies"),
        ({new("loadBalancerIPs"): "198.18.0.10,2001:db8:18::10"}, {"ipFamilies": ["IPv4"]}, INVALID_IP_FAMILY, "2001:db8:18::10 is IPv6"),
        ({}, {"ipFamilies": ["IPv5"]}, INVALID_IP_FAMILY, "spec.ipFamilies: 'IPv5'"),
        ({}, {"ipFamilyPolicy": "DualStack"}, INVALID_IP_FAMILY, "spec.ipFamilyPolicy: 'DualStack'"),
    ],
)
def test_malformed_requests_name_service_field_and_value(annotations: dict[str, str], spec: dict[str, Any], reason: str, words: str) -> None:
    with pytest.raises(AllocationError) as info:
        to_request(svc(annotations, **spec), namespace_labels={})
    assert info.value.service == "shop/web"
    assert info.value.reason == reason
    assert words in info.value.message
    assert str(info.value).startswith("shop/web: ")


@pytest.mark.parametrize(
    ("annotations", "pool", "sharing_key"),
    [
        ({new("address-pool"): "doc-example-reserved"}, "doc-example-reserved", None),
        ({old("address-pool"): "doc-example"}, "doc-example", None),
        ({new("address-pool"): "new", old("address-pool"): "old"}, "new", None),
        ({new("address-pool"): " "}, None, None),
        ({new("allow-shared-ip"): "dns"}, None, "dns"),
        ({old("allow-shared-ip"): "dns"}, None, "dns"),
        ({new("allow-shared-ip"): "a", old("allow-shared-ip"): "b"}, None, "a"),
        ({new("allow-shared-ip"): ""}, None, None),
        ({"example.com/address-pool": "x", "address-pool": "y"}, None, None),  # other prefixes are not ours
    ],
)
def test_pool_and_sharing_annotations(annotations: dict[str, str], pool: str | None, sharing_key: str | None) -> None:
    request = to_request(svc(annotations), namespace_labels={})
    assert (request.pool, request.sharing_key) == (pool, sharing_key)


@pytest.mark.parametrize(
    ("annotations", "deprecated"),
    [
        ({}, ()),
        ({new("address-pool"): "p", new("allow-shared-ip"): "k"}, ()),
        ({old("address-pool"): "p"}, ("metallb.universe.tf/address-pool",)),
        # reported even where the current key wins, so the user removes the stale one
        (
            {new("loadBalancerIPs"): "198.18.0.10", old("loadBalancerIPs"): "198.18.0.10", old("allow-shared-ip"): "k"},
            ("metallb.universe.tf/allow-shared-ip", "metallb.universe.tf/loadBalancerIPs"),
        ),
        ({old("ip-allocated-from-pool"): "p"}, ()),  # written by the controller, not read from users
    ],
)
def test_deprecated_annotations_are_reported(annotations: dict[str, str], deprecated: tuple[str, ...]) -> None:
    assert deprecated_annotations(svc(annotations)) == deprecated


@pytest.mark.parametrize(
    ("spec", "families", "policy"),
    [
        ({}, (4,), SINGLE_STACK),
        ({"ipFamilies": ["IPv6"]}, (6,), SINGLE_STACK),
        ({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"}, (4, 6), PREFER_DUAL_STACK),
        ({"ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack"}, (6, 4), REQUIRE_DUAL_STACK),
        ({"ipFamilies": ["IPv4"], "ipFamilyPolicy": "PreferDualStack"}, (4,), PREFER_DUAL_STACK),
        # no ipFamilies (a hand-written Service): the requested IP decides, else the policy
        ({"loadBalancerIP": "2001:db8:18::10"}, (6,), SINGLE_STACK),
        ({"ipFamilyPolicy": "PreferDualStack"}, (4, 6), PREFER_DUAL_STACK),
        ({"ipFamilyPolicy": "RequireDualStack"}, (4, 6), REQUIRE_DUAL_STACK),
    ],
)
def test_ip_families(spec: dict[str, Any], families: tuple[int, ...], policy: str) -> None:
    request = to_request(svc(**spec), namespace_labels={})
    assert (request.ip_families, request.ip_family_policy) == (families, policy)


@pytest.mark.parametrize(("value", "expected"), [(None, "Cluster"), ("Cluster", "Cluster"), ("Local", "Local")])
def test_external_traffic_policy(value: str | None, expected: str) -> None:
    spec = {"externalTrafficPolicy": value} if value else {}
    assert to_request(svc(**spec), namespace_labels={}).external_traffic_policy == expected


@pytest.mark.parametrize(
    ("spec", "configured", "managed"),
    [
        ({}, None, True),
        ({"type": "ClusterIP"}, None, False),
        ({"type": "NodePort"}, None, False),
        ({"loadBalancerClass": "other.io/lb"}, None, False),
        ({"loadBalancerClass": "raylb.io/lb"}, "raylb.io/lb", True),
        ({}, "raylb.io/lb", False),
        ({"loadBalancerClass": "other.io/lb"}, "raylb.io/lb", False),
        ({"type": "ClusterIP", "loadBalancerClass": "raylb.io/lb"}, "raylb.io/lb", False),
    ],
)
def test_is_managed(spec: dict[str, Any], configured: str | None, managed: bool) -> None:
    assert is_managed(svc(**spec), load_balancer_class=configured) is managed


def test_request_is_immutable_and_does_not_alias_the_service() -> None:
    service = svc()
    labels = {"team": "x"}
    request = to_request(service, namespace_labels=labels)
    labels["team"] = "y"
    service.metadata.labels["app"] = "changed"
    assert dict(request.namespace_labels) == {"team": "x"} and dict(request.labels) == {"app": "web"}
    with pytest.raises(TypeError):
        request.labels["x"] = "y"  # type: ignore[index]
