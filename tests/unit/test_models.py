"""The wire models: metallb.io shapes, strict CRs, lenient views, the honoured MetalLB."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from raylb.errors import ConfigError
from raylb.models import RESOURCE_KINDS, parse, to_wire
from raylb.models.kube import EndpointSlice, Node
from raylb.models.meta import ViewModel, WireModel
from raylb.models.metallb import DEGRADED, MetalLB, select_honoured
from raylb.models.pools import AddressPool, IPAddressPool, L2Advertisement
from raylb.models.service import Service
from raylb.models.status import ServiceL2Status

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def meta(name: str = "p", namespace: str = "metallb-system") -> dict[str, Any]:
    return {"name": name, "namespace": namespace}


FULL: dict[str, dict[str, Any]] = {
    "MetalLB": {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "MetalLB",
        "metadata": meta("metallb"),
        "spec": {
            "nodeSelector": {"role": "lb"},
            "speakerTolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}],
            "logLevel": "debug",
            "loadBalancerClass": "raylb.io/lb",
            "controllerNodeSelector": {"role": "ctl"},
            "controllerTolerations": [{"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
        },
        "status": {
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "AllReady",
                    "message": "3 speakers",
                    "lastTransitionTime": "2024-05-01T12:00:00Z",
                    "observedGeneration": 2,
                }
            ]
        },
    },
    "AddressPool": {
        "apiVersion": "metallb.io/v1alpha1",
        "kind": "AddressPool",
        "metadata": meta(),
        "spec": {
            "protocol": "layer2",
            "addresses": ["198.18.0.0/28"],
            "autoAssign": False,
            "avoidBuggyIPs": True,
            "bgpAdvertisements": [{"aggregationLength": 32, "aggregationLengthV6": 128, "localPref": 100, "communities": ["65535:65282"]}],
        },
    },
    "IPAddressPool": {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {**meta(), "labels": {"tier": "gold"}, "creationTimestamp": "2024-05-01T12:00:00Z"},
        "spec": {
            "addresses": ["198.18.0.10-198.18.0.20", "2001:db8:18::/120"],
            "autoAssign": True,
            "avoidBuggyIPs": False,
            "serviceAllocation": {
                "priority": 10,
                "namespaces": ["a"],
                "namespaceSelectors": [{"matchLabels": {"team": "x"}}],
                "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}],
            },
        },
        "status": {"assignedIPv4": 1, "assignedIPv6": 0, "availableIPv4": 10, "availableIPv6": 256},
    },
    "L2Advertisement": {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": meta("adv"),
        "spec": {
            "ipAddressPools": ["p"],
            "ipAddressPoolSelectors": [{"matchLabels": {"tier": "gold"}}],
            "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "n1"}}],
            "interfaces": ["eth0"],
        },
    },
    "ServiceL2Status": {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "ServiceL2Status",
        "metadata": meta("l2-abc"),
        "spec": {},
        "status": {"node": "n1", "serviceName": "web", "serviceNamespace": "default", "interfaces": [{"name": "eth0"}]},
    },
}


@pytest.mark.parametrize("kind", sorted(FULL))
def test_every_field_round_trips_through_the_wire_form(kind: str) -> None:
    model = parse(FULL[kind])
    assert type(model) is RESOURCE_KINDS[kind]
    wire = to_wire(model)
    assert parse(wire) == model
    assert type(model).model_validate(model.model_dump(by_alias=True)) == model
    # Nothing the user wrote is lost: every key of the input survives, with its value.
    def contains(big: Any, small: Any) -> bool:
        if isinstance(small, dict):
            return all(k in big and contains(big[k], v) for k, v in small.items())
        if isinstance(small, list):
            return len(big) == len(small) and all(contains(b, s) for b, s in zip(big, small))
        return big == small
    assert contains(wire, FULL[kind])


@pytest.mark.parametrize(
    ("kind", "path", "field"),
    [
        ("MetalLB", ("spec",), "bgpBackend"),  # real operator field raylb does not implement: refused
        ("MetalLB", ("spec", "speakerTolerations", 0), "tolerationSecs"),
        ("AddressPool", ("spec",), "addressess"),
        ("IPAddressPool", ("spec",), "autoassign"),
        ("IPAddressPool", ("spec", "serviceAllocation"), "prio"),
        ("IPAddressPool", ("spec", "serviceAllocation", "namespaceSelectors", 0), "matchLabel"),
        ("IPAddressPool", ("status",), "usage"),
        ("L2Advertisement", ("spec",), "interface"),
        ("ServiceL2Status", ("spec",), "node"),
        ("ServiceL2Status", ("status",), "nodeName"),
        ("MetalLB", (), "extra"),
    ],
)
def test_unknown_fields_are_refused_naming_resource_field_and_value(kind: str, path: tuple[Any, ...], field: str) -> None:
    doc = _copy(FULL[kind])
    target = doc
    for part in path:
        target = target[part]
    target[field] = "oops"
    with pytest.raises(ConfigError) as info:
        parse(doc)
    (problem,) = info.value.problems
    expected = ".".join(str(p) for p in (*path, field)).replace(".0", "[0]")
    assert (problem.kind, problem.name, problem.field, problem.value) == (kind, doc["metadata"]["name"], expected, "oops")
    assert "unknown field" in problem.message


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        ("MetalLB", {"logLevel": "verbose"}, "spec.logLevel"),
        ("AddressPool", {"protocol": "ospf"}, "spec.protocol"),
        ("IPAddressPool", {"autoAssign": "sometimes"}, "spec.autoAssign"),
        ("IPAddressPool", {"addresses": "198.18.0.1"}, "spec.addresses"),
    ],
)
def test_bad_values_are_refused_naming_the_field(kind: str, change: dict[str, Any], field: str) -> None:
    doc = _copy(FULL[kind])
    doc["spec"].update(change)
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert [p.field for p in info.value.problems] == [field]


def test_missing_required_fields_are_named() -> None:
    doc = _copy(FULL["AddressPool"])
    del doc["spec"]["protocol"]
    del doc["spec"]["addresses"]
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert sorted(p.field for p in info.value.problems) == ["spec.addresses", "spec.protocol"]
    assert all(p.message == "required field is missing" for p in info.value.problems)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"apiVersion": "metallb.io/v1beta1", "kind": "BGPPeer", "metadata": {"name": "x"}}, "kind"),
        ({"apiVersion": "metallb.io/v2", "kind": "IPAddressPool", "metadata": {"name": "x"}, "spec": {"addresses": []}}, "apiVersion"),
        ({"apiVersion": "metallb.io/v1alpha1", "kind": "IPAddressPool", "metadata": {"name": "x"}, "spec": {"addresses": []}}, "apiVersion"),
    ],
)
def test_unknown_kinds_and_versions_are_refused(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert info.value.problems[0].field == field


def test_defaults_match_metallb() -> None:
    pool = IPAddressPool.model_validate({"metadata": {"name": "p"}, "spec": {"addresses": ["198.18.0.1"]}})
    assert (pool.spec.auto_assign, pool.spec.avoid_buggy_ips, pool.spec.service_allocation) == (True, False, None)
    legacy = AddressPool.model_validate({"metadata": {"name": "p"}, "spec": {"protocol": "bgp", "addresses": ["198.18.0.1"]}})
    assert (legacy.api_version, legacy.spec.auto_assign, legacy.spec.protocol) == ("metallb.io/v1beta1", True, "bgp")
    assert L2Advertisement.model_validate({"metadata": {"name": "empty"}}).spec.ip_address_pools == []
    assert MetalLB.model_validate({"metadata": {"name": "metallb"}}).spec.load_balancer_class is None


def test_python_names_and_wire_names_both_load() -> None:
    by_name = IPAddressPool(metadata={"name": "p"}, spec={"addresses": ["198.18.0.1"], "avoid_buggy_ips": True})
    by_alias = IPAddressPool.model_validate({"metadata": {"name": "p"}, "spec": {"addresses": ["198.18.0.1"], "avoidBuggyIPs": True}})
    assert by_name == by_alias
    assert to_wire(by_name)["spec"]["avoidBuggyIPs"] is True


def test_metadata_fields_the_api_server_adds_are_ignored() -> None:
    doc = _copy(FULL["IPAddressPool"])
    doc["metadata"].update({"managedFields": [{"manager": "kubectl"}], "selfLink": "/x", "uid": "u1", "generation": 3})
    pool = parse(doc)
    assert (pool.metadata.uid, pool.metadata.generation) == ("u1", 3)


def _all_models(root: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if root in seen:
        return seen
    seen.add(root)
    for info in root.model_fields.values():
        for arg in _type_args(info.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                _all_models(arg, seen)
    return seen


def _type_args(annotation: Any) -> list[Any]:
    args = list(getattr(annotation, "__args__", ()) or ())
    out = [annotation]
    for a in args:
        out.extend(_type_args(a))
    return out


ALL_MODELS = sorted(
    set().union(*(_all_models(m, set()) for m in [*RESOURCE_KINDS.values(), Service, EndpointSlice, Node])),
    key=lambda m: m.__name__,
)


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_every_field_is_described(model: type[BaseModel]) -> None:
    assert model.__doc__, f"{model.__name__} has no docstring"
    missing = [name for name, info in model.model_fields.items() if not info.description]
    assert not missing, f"{model.__name__}: fields without description: {missing}"


def test_cr_parts_are_strict_and_views_are_lenient() -> None:
    strict = [m for m in ALL_MODELS if issubclass(m, WireModel)]
    lenient = [m for m in ALL_MODELS if issubclass(m, ViewModel)]
    assert {m.__name__ for m in strict} >= {"MetalLBSpec", "IPAddressPoolSpec", "L2AdvertisementSpec", "ServiceL2StatusStatus", "Condition"}
    assert {m.__name__ for m in lenient} >= {"Service", "ServiceSpec", "ObjectMeta", "EndpointSlice", "Node"}
    assert all(m.model_config["extra"] == "forbid" for m in strict)
    assert all(m.model_config["extra"] == "ignore" for m in lenient)


# A Service as the API server returns it: far more than raylb reads.
REAL_SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "uid": "1234",
        "resourceVersion": "77",
        "labels": {"app": "web"},
        "annotations": {"metallb.io/address-pool": "doc-example"},
        "creationTimestamp": "2024-05-01T12:00:00Z",
        "managedFields": [{"manager": "kubectl", "operation": "Update"}],
    },
    "spec": {
        "type": "LoadBalancer",
        "clusterIP": "198.19.0.10",
        "clusterIPs": ["198.19.0.10"],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 31000,
        "internalTrafficPolicy": "Cluster",
        "allocateLoadBalancerNodePorts": True,
        "sessionAffinity": "None",
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}],
        "selector": {"app": "web"},
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.10", "ipMode": "VIP"}]}},
}


def test_service_view_reads_a_real_service_and_ignores_the_rest() -> None:
    service = Service.model_validate(REAL_SERVICE)
    assert service.key == "shop/web"
    assert service.spec.type == "LoadBalancer"
    assert service.spec.external_traffic_policy == "Local"
    assert [(p.name, p.protocol, p.port) for p in service.spec.ports] == [("http", "TCP", 80)]
    assert service.ingress_ips == ("198.18.0.10",)
    assert service.metadata.resource_version == "77"
    assert "clusterIP" not in to_wire(service)["spec"]


def test_service_view_reads_the_kubernetes_clients_to_dict_form() -> None:
    # kubernetes.client.V1Service(...).to_dict(): snake_case keys, None for every absent field.
    service = Service.model_validate(
        {
            "api_version": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "labels": None, "annotations": None, "resource_version": "5"},
            "spec": {"type": "LoadBalancer", "load_balancer_ip": None, "ip_families": ["IPv6"], "ports": None, "selector": None},
            "status": {"load_balancer": {"ingress": None}},
        }
    )
    assert (service.metadata.labels, service.spec.ports, service.ingress_ips) == ({}, [], ())
    assert (service.spec.ip_families, service.metadata.resource_version) == (["IPv6"], "5")


def test_endpoint_slice_and_node_views() -> None:
    eps = EndpointSlice.model_validate(
        {
            "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "nodeName": "n1"},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False}, "nodeName": "n2"},
                {"addresses": ["10.0.0.3"], "conditions": {}, "nodeName": "n3"},  # unknown counts as ready
                {"addresses": ["10.0.0.4"], "conditions": {"ready": True}},
            ],
            "ports": [{"port": 8080}],
        }
    )
    assert eps.service_key == "shop/web"
    assert eps.ready_nodes() == {"n1", "n3"}
    ready = Node.model_validate({"metadata": {"name": "n1", "labels": {"a": "b"}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    not_ready = Node.model_validate({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})
    assert (ready.is_ready, not_ready.is_ready, Node.model_validate({"metadata": {"name": "n3"}}).is_ready) == (True, False, False)


def _metallb(name: str, namespace: str) -> MetalLB:
    return MetalLB.model_validate({"metadata": {"name": name, "namespace": namespace, "generation": 4}})


@pytest.mark.parametrize(
    ("objects", "honoured", "ignored"),
    [
        ([], None, []),
        ([("metallb", "ops")], "ops/metallb", []),
        ([("metallb", "default")], None, ["default/metallb"]),
        ([("metallb-test", "ops"), ("metallb", "ops")], "ops/metallb", ["ops/metallb-test"]),
        ([("other", "x"), ("metallb", "y"), ("metallb", "ops")], "ops/metallb", ["x/other", "y/metallb"]),
    ],
)
def test_only_the_metallb_named_metallb_in_the_operator_namespace_is_honoured(
    objects: list[tuple[str, str]], honoured: str | None, ignored: list[str]
) -> None:
    result = select_honoured([_metallb(n, ns) for n, ns in objects], operator_namespace="ops", now=NOW)
    assert (result.metallb.key if result.metallb else None) == honoured
    assert sorted(obj.key for obj, _ in result.ignored) == ignored
    for obj, condition in result.ignored:
        assert (condition.type, condition.status, condition.reason) == (DEGRADED, "True", "NotHonoured")
        assert obj.key in condition.message and "'ops'" in condition.message and "'metallb'" in condition.message
        assert condition.last_transition_time == NOW and condition.observed_generation == 4


def test_condition_reason_must_be_one_camel_case_word() -> None:
    base = {"type": "Available", "status": "True", "lastTransitionTime": "2024-05-01T12:00:00Z"}
    from raylb.models.meta import Condition

    assert Condition.model_validate({**base, "reason": "AllReady"}).reason == "AllReady"
    with pytest.raises(ValidationError):
        Condition.model_validate({**base, "reason": "all ready"})
    with pytest.raises(ValidationError):
        Condition.model_validate({**base, "reason": "AllReady", "status": "Yes"})


def test_service_l2_status_spec_is_empty_and_status_optional() -> None:
    obj = ServiceL2Status.model_validate({"metadata": {"name": "x", "namespace": "ns"}})
    assert obj.status is None and to_wire(obj)["spec"] == {}


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    return doc
