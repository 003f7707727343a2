"""The operator core against the real API server, with the operator ServiceAccount's rights.

Everything a user sees with kubectl, produced by the real operator logic over real watches and
writes: KubeDesired + KubeResults + OperatorCore, with an in-process allocator (InProcessRay)
standing in for the allocator actor - Ray only carries calls between the two, so this is the
operator's whole behaviour towards Kubernetes.

The control plane is shared by the session, and the operator reads the whole cluster, so every
test starts from a clean slate (`clean`): no metallb.io objects in the operator namespace and
no LoadBalancer Service anywhere. Pool addresses written into Kubernetes objects here are
never put on an interface or sent a packet, so besides the seed's own pools (the lab's VIP
space, as deploy/examples/demo.yaml writes them) they come from the documentation ranges
(RFC 5737, RFC 3849).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from raylb.actors.allocator import AllocatorService
from raylb.cluster.kube.results import COMPONENT
from raylb.cluster.kube import manifests
from raylb.cluster.kube.bench import (
    IngressWatch,
    RunningOperator,
    create_services,
    delete_services,
    ingress_ips,
    lb_service,
    metallb_documents,
)
from raylb.cluster.kube.client import KINDS, Api, ConflictError
from raylb.cluster.localkube.controlplane import OPERATOR_NAMESPACE, RBAC_DIR, ControlPlane
from raylb.cluster.kube.install import REPO, install
from raylb.errors import RaylbError
from raylb.reconcile import POOL_ANNOTATION
from tests.kube.accounts import service_account_client

pytestmark = pytest.mark.kube

POLL_S = 0.1
CONVERGE_S = 60.0  # generous: two busy cores, and an API server restart alone takes ~15 s
DEMO = REPO / "deploy" / "examples" / "demo.yaml"
CONFIG_KINDS = ("MetalLB", "AddressPool", "IPAddressPool", "L2Advertisement", "ServiceL2Status")


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def crds(admin_api: client.ApiClient) -> None:
    install(admin_api)


def _wipe(admin_api: client.ApiClient) -> None:
    """No raylb configuration, no LoadBalancer Service: what other tests left is not ours."""
    api = Api(admin_api)
    for kind in CONFIG_KINDS:
        info = KINDS[kind]
        for obj in api.request("GET", info.collection_path(OPERATOR_NAMESPACE), what=kind).get("items") or []:
            api.request("DELETE", info.object_path(OPERATOR_NAMESPACE, obj["metadata"]["name"]), what=kind)
    listed = api.request("GET", KINDS["Service"].collection_path(None), what="services").get("items") or []
    by_namespace: dict[str, list[str]] = {}
    for svc in listed:
        if (svc.get("spec") or {}).get("type") == "LoadBalancer":
            by_namespace.setdefault(svc["metadata"]["namespace"], []).append(svc["metadata"]["name"])
    for namespace, names in by_namespace.items():
        delete_services(admin_api, namespace, names)


@pytest.fixture
def clean(admin_api: client.ApiClient, crds: None) -> Iterator[None]:
    _wipe(admin_api)
    yield
    _wipe(admin_api)


@pytest.fixture
def start_operator(operator_api: client.ApiClient, clean: None) -> Iterator[Callable[..., RunningOperator]]:
    """Starts operators (the operator ServiceAccount's unless told otherwise); stops them all."""
    started: list[RunningOperator] = []

    def start(api_client: client.ApiClient = operator_api, **core_options: Any) -> RunningOperator:
        running = RunningOperator(api_client, **core_options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def wait_for(check: Callable[[], Any], *, what: str, timeout_s: float = CONVERGE_S) -> Any:
    """Poll check() until it returns something truthy (bounded); returns that."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except RaylbError:  # e.g. the API server is restarting
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(POLL_S)


def apply(admin_api: client.ApiClient, docs: list[dict[str, Any]]) -> None:
    manifests.apply_documents(admin_api, docs)


def configure(admin_api: client.ApiClient, pools: dict[str, list[str]], **metallb_spec: Any) -> None:
    docs = metallb_documents(pools=pools)
    docs[0]["spec"] = metallb_spec
    apply(admin_api, docs)


def create(admin_api: client.ApiClient, namespace: str, name: str, *, annotations: dict[str, str] | None = None,
           **spec: Any) -> None:
    Api(admin_api).request("POST", KINDS["Service"].collection_path(namespace), what=f"service {name}",
                           body=lb_service(name, annotations=annotations, **spec))


def get(admin_api: client.ApiClient, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return Api(admin_api).request("GET", KINDS[kind].object_path(namespace, name), what=f"{kind} {name}")


def services(admin_api: client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    listed = Api(admin_api).request("GET", KINDS["Service"].collection_path(namespace), what="services")
    return {obj["metadata"]["name"]: obj for obj in listed.get("items") or []}


def wait_ips(admin_api: client.ApiClient, namespace: str, names: list[str], *,
             timeout_s: float = CONVERGE_S) -> dict[str, list[str]]:
    """Until every named Service shows an IP in status; name -> its IPs."""
    def check() -> dict[str, list[str]] | None:
        ips = {name: ingress_ips(obj) for name, obj in services(admin_api, namespace).items()}
        return ips if all(ips.get(n) for n in names) else None
    return wait_for(check, what=f"IPs for {len(names)} services in {namespace}", timeout_s=timeout_s)


def events(admin_api: client.ApiClient, namespace: str, name: str, reason: str | None = None) -> list[Any]:
    selector = f"involvedObject.name={name}" + (f",reason={reason}" if reason else "")
    return client.CoreV1Api(admin_api).list_namespaced_event(namespace, field_selector=selector).items


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def in_range(ip: str, first: str, last: str) -> bool:
    return ipaddress.ip_address(first) <= ipaddress.ip_address(ip) <= ipaddress.ip_address(last)


def seed_documents(namespace: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """deploy/examples/demo.yaml: (MetalLB, pools, advertisement), (its Services, moved to `namespace`)."""
    docs = manifests.load_documents([DEMO])
    config = [d for d in docs if d["kind"] != "Service"]
    seed_services = [d for d in docs if d["kind"] == "Service"]
    for svc in seed_services:
        svc["metadata"]["namespace"] = namespace
        svc["spec"]["allocateLoadBalancerNodePorts"] = False
    return config, seed_services


# ---- the seed, as documented ---------------------------------------------------------------


def test_the_seeds_pools_and_services_behave_as_documented(
    admin_api: client.ApiClient, namespace: str, start_operator: Callable[..., RunningOperator]
) -> None:
    config, seed_services = seed_documents(namespace)
    apply(admin_api, config)
    start_operator()
    for svc in seed_services:
        Api(admin_api).request("POST", KINDS["Service"].collection_path(namespace), what="service", body=svc)
    ips = wait_ips(admin_api, namespace, ["web", "billing", "web6", "dns-tcp", "dns-udp"])
    now = services(admin_api, namespace)
    notes = {name: (obj["metadata"].get("annotations") or {}) for name, obj in now.items()}

    # doc-example hands out to whoever does not ask for a pool
    (web,) = ips["web"]
    assert in_range(web, "198.18.0.128", "198.18.0.191") and notes["web"][POOL_ANNOTATION] == "doc-example"
    # doc-example-reserved only to a Service that names it
    (billing,) = ips["billing"]
    assert ipaddress.ip_address(billing) in ipaddress.ip_network("198.18.0.192/27")
    assert notes["billing"][POOL_ANNOTATION] == "doc-example-reserved"
    # doc-example-ipv6 to an IPv6 single-stack Service; its ClusterIP comes from the API server's IPv6 range
    (web6,) = ips["web6"]
    assert ipaddress.ip_address(web6) in ipaddress.ip_network("2001:db8:18::1:0/120")
    assert ipaddress.ip_address(now["web6"]["spec"]["clusterIP"]) in ipaddress.ip_network("2001:db8:19::/108")
    assert notes["web6"][POOL_ANNOTATION] == "doc-example-ipv6"
    # two Services sharing one IP by allow-shared-ip, with different ports
    assert ips["dns-tcp"] == ips["dns-udp"] == ["198.18.0.140"]

    for name, pool in (("web", "doc-example"), ("billing", "doc-example-reserved"), ("web6", "doc-example-ipv6")):
        allocated = wait_for(lambda n=name: events(admin_api, namespace, n, "IPAllocated"), what=f"{name} event")
        assert len(allocated) == 1 and allocated[0].type == "Normal"
        assert ips[name][0] in allocated[0].message and pool in allocated[0].message
        assert allocated[0].involved_object.kind == "Service" and allocated[0].involved_object.uid

    # legacy: the old prefix still works (it names a pool that does not exist, so it fails, saying why)
    failed = wait_for(lambda: events(admin_api, namespace, "legacy", "AllocationFailed"), what="AllocationFailed")
    assert failed[0].type == "Warning" and "no-such-pool" in failed[0].message
    deprecated = wait_for(lambda: events(admin_api, namespace, "legacy", "DeprecatedAnnotation"), what="deprecation")
    assert len(deprecated) == 1 and "metallb.universe.tf/address-pool" in deprecated[0].message
    assert ingress_ips(get(admin_api, "Service", namespace, "legacy")) == []
    assert POOL_ANNOTATION not in (get(admin_api, "Service", namespace, "legacy")["metadata"].get("annotations") or {})


def test_the_reserved_pool_is_never_auto_assigned_even_when_the_auto_pool_is_full(
    admin_api: client.ApiClient, namespace: str, start_operator: Callable[..., RunningOperator]
) -> None:
    apply(admin_api, seed_documents(namespace)[0])
    start_operator()
    names = [f"auto-{i:02d}" for i in range(64)]  # doc-example holds 198.18.0.128-191: 64 addresses
    create_services(admin_api, namespace, [lb_service(n) for n in names])
    ips = wait_ips(admin_api, namespace, names)
    assert len({ips[n][0] for n in names}) == 64
    assert all(in_range(ips[n][0], "198.18.0.128", "198.18.0.191") for n in names)
    create(admin_api, namespace, "one-too-many")
    failed = wait_for(lambda: events(admin_api, namespace, "one-too-many", "AllocationFailed"), what="AllocationFailed")
    assert failed[0].type == "Warning" and "doc-example" in failed[0].message
    assert ingress_ips(get(admin_api, "Service", namespace, "one-too-many")) == []
    create(admin_api, namespace, "asks", annotations={"metallb.io/address-pool": "doc-example-reserved"})
    (asked,) = wait_ips(admin_api, namespace, ["asks"])["asks"]
    assert ipaddress.ip_address(asked) in ipaddress.ip_network("198.18.0.192/27")


# ---- annotations and classes ---------------------------------------------------------------


def test_both_annotation_prefixes_work_and_the_old_one_is_warned_about_once(
    admin_api: client.ApiClient, namespace: str, start_operator: Callable[..., RunningOperator]
) -> None:
    configure(admin_api, {"auto": ["203.0.113.0/28"], "asked": ["198.51.100.0/28"]})
    start_operator()
    create(admin_api, namespace, "new-prefix", annotations={"metallb.io/address-pool": "asked"})
    create(admin_api, namespace, "old-prefix", annotations={"metallb.universe.tf/address-pool": "asked",
                                                            "metallb.universe.tf/loadBalancerIPs": "198.51.100.7"})
    ips = wait_ips(admin_api, namespace, ["new-prefix", "old-prefix"])
    assert ipaddress.ip_address(ips["new-prefix"][0]) in ipaddress.ip_network("198.51.100.0/28")
    assert ips["old-prefix"] == ["198.51.100.7"]
    warned = wait_for(lambda: events(admin_api, namespace, "old-prefix", "DeprecatedAnnotation"), what="deprecation")
    assert len(warned) == 1 and warned[0].type == "Warning"
    assert "metallb.universe.tf/address-pool" in warned[0].message and "metallb.io/" in warned[0].message
    # more rounds (another Service) do not repeat it; the current prefix is never warned about
    create(admin_api, namespace, "later")
    wait_ips(admin_api, namespace, ["later"])
    wait_for(lambda: events(admin_api, namespace, "later", "IPAllocated"), what="later's event")
    assert len(events(admin_api, namespace, "old-prefix", "DeprecatedAnnotation")) == 1
    assert events(admin_api, namespace, "new-prefix", "DeprecatedAnnotation") == []


@pytest.mark.parametrize(
    ("configured", "managed_class", "foreign_class"),
    [
        (None, None, "example.com/other-lb"),  # no class configured: only Services without one
        ("raylb.io/lb", "raylb.io/lb", None),  # a class configured: only Services naming it
    ],
)
def test_services_of_another_load_balancer_class_are_left_alone(
    admin_api: client.ApiClient, namespace: str, start_operator: Callable[..., RunningOperator],
    configured: str | None, managed_class: str | None, foreign_class: str | None,
) -> None:
    configure(admin_api, {"auto": ["203.0.113.0/28"]}, **({"loadBalancerClass": configured} if configured else {}))
    running = start_operator()
    create(admin_api, namespace, "foreign", **({"loadBalancerClass": foreign_class} if foreign_class else {}))
    create(admin_api, namespace, "ours", **({"loadBalancerClass": managed_class} if managed_class else {}))
    wait_ips(admin_api, namespace, ["ours"])
    ours = wait_for(lambda: events(admin_api, namespace, "ours", "IPAllocated"), what="ours' event")
    assert {e.source.component for e in ours} == {COMPONENT}
    assert running.wait_quiet()
    foreign = get(admin_api, "Service", namespace, "foreign")
    assert ingress_ips(foreign) == []
    assert POOL_ANNOTATION not in (foreign["metadata"].get("annotations") or {})
    # raylb says nothing about it (the API server's ClusterIP repair controller may, now and then)
    assert [e for e in events(admin_api, namespace, "foreign") if e.source.component == COMPONENT] == []


# ---- scale, pool changes, restarts ---------------------------------------------------------


def test_500_services_created_at_once_all_get_distinct_valid_ips(
    admin_api: client.ApiClient, namespace: str, start_operator: Callable[..., RunningOperator]
) -> None:
    configure(admin_api, {"doc-a": ["203.0.113.0/24"], "doc-b": ["198.51.100.0/24"]})  # 512 addresses
    running = start_operator()
    names = [f"s{i:03d}" for i in range(500)]
    create_services(admin_api, namespace, [lb_service(n) for n in names])
    ips = wait_ips(admin_api, namespace, names, timeout_s=120.0)
    flat = [ip for n in names for ip in ips[n]]
    assert len(flat) == 500 and len(set(flat)) == 500, "every Service one IP, none given twice"
    now = services(admin_api, namespace)
    networks = {"doc-a": ipaddress.ip_network("203.0.113.0/24"), "doc-b": ipaddress.ip_network("198.51.100.0/24")}
    for name in names:
        pool = now[name]["metadata"]["annotations"][POOL_ANNOTATION]
        assert ipaddress.ip_address(ips[name][0]) in networks[pool], (name, ips[name], pool)
    def all_allocated() -> list[Any] | None:
        found = client.CoreV1Api(admin_api).list_namespaced_event(namespace, field_selector="reason=IPAllocated").items
        return found if len(found) >= 500 else None

    allocated = wait_for(all_allocated, what="500 IPAllocated events")
    assert sorted(e.involved_object.name for e in allocated) == names, "exactly one IPAllocated per Service"
    assert running.core.counters.failures == 0


def test_a_pool_shrink_moves_exactly_the_services_whose_ips_left_it(
    admin_api: client.ApiClient, namespace: str, start_operator: Callable[..., RunningOperator]
) -> None:
    configure(admin_api, {"shrinking": ["198.51.100.0/27"]})
    start_operator()
    names = [f"s{i}" for i in range(8)]
    create_services(admin_api, namespace, [lb_service(n) for n in names])
    before = {n: ips[0] for n, ips in wait_ips(admin_api, namespace, names).items() if n in names}
    ordered = sorted(before.values(), key=ipaddress.ip_address)
    keep_last = ordered[3]  # the pool keeps the four lowest assigned IPs and gains another range
    configure(admin_api, {"shrinking": [f"198.51.100.0-{keep_last}", "203.0.113.0/28"]})
    leaving = {n for n, ip in before.items() if ipaddress.ip_address(ip) > ipaddress.ip_address(keep_last)}
    assert len(leaving) == 4

    def moved() -> dict[str, str] | None:
        now = {n: ingress_ips(obj) for n, obj in services(admin_api, namespace).items()}
        return {n: ips[0] for n, ips in now.items() if n in names} if all(
            now[n] and now[n][0] != before[n] for n in leaving) else None

    after = wait_for(moved, what="the services outside the shrunk pool moved")
    assert {n for n in names if after[n] != before[n]} == leaving, "exactly those whose IPs left the pool moved"
    assert len(set(after.values())) == 8
    for name in leaving:
        ip = ipaddress.ip_address(after[name])
        assert in_range(after[name], "198.51.100.0", keep_last) or ip in ipaddress.ip_network("203.0.113.0/28")


def _create_through_a_restart(admin_api: client.ApiClient, namespace: str, name: str, *, timeout_s: float) -> None:
    """Create one Service, retrying while the API server restarts (a lost answer may hide a success)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            create(admin_api, namespace, name)
            return
        except ConflictError:  # 409 AlreadyExists: an earlier attempt went through
            return
        except RaylbError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)


def test_an_api_server_restart_mid_run_loses_no_assignment(
    admin_api: client.ApiClient, namespace: str, control_plane: ControlPlane,
    start_operator: Callable[..., RunningOperator],
) -> None:
    configure(admin_api, {"doc": ["203.0.113.0/24"]})
    running = start_operator()
    watch = IngressWatch(admin_api, namespace)
    names = [f"s{i:03d}" for i in range(200)]
    failures: list[BaseException] = []

    def creator() -> None:
        try:
            for name in names:
                _create_through_a_restart(admin_api, namespace, name, timeout_s=120.0)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    thread = threading.Thread(target=creator, name="test-creator")
    try:
        thread.start()
        wait_for(lambda: len(watch.seen_at) >= 30, what="30 services with IPs before the restart")
        early = sorted(watch.seen_at)
        for name in early:  # their writes are complete: status, annotation, event
            wait_for(lambda n=name: events(admin_api, namespace, n, "IPAllocated"), what=f"{name} event")
        control_plane.restart_apiserver()
        thread.join(timeout=180)
        assert not thread.is_alive() and not failures, failures
        assert watch.wait_all(names, timeout_s=CONVERGE_S), sorted(set(names) - set(watch.seen_at))
        final = wait_ips(admin_api, namespace, names)
    finally:
        watch.stop()
    flat = [final[n][0] for n in names]
    assert len(set(flat)) == len(names), "an IP was given twice"
    changed = {n: h for n, h in watch.history.items() if len(h) > 1}
    assert not changed, f"IPs changed: {changed}"
    assert all(final[n] == watch.history[n][0] for n in names)
    for name in early:  # no assignment made before the restart was redone after it
        assert len(events(admin_api, namespace, name, "IPAllocated")) == 1, name
    # the operator is healthy again: nothing it cannot read, MetalLB not degraded
    wait_for(lambda: not running.desired.errors() and running.core.status()["source_errors"] == {},
             what="watches recovered")
    wait_for(lambda: conditions(get(admin_api, "MetalLB", OPERATOR_NAMESPACE, "metallb"))["Degraded"]["status"]
             == "False", what="MetalLB not degraded")


def test_a_restarted_allocator_and_operator_restore_before_allocating(
    admin_api: client.ApiClient, namespace: str, start_operator: Callable[..., RunningOperator]
) -> None:
    configure(admin_api, {"doc": ["203.0.113.0/28"]})  # 16 addresses: a newcomer could easily take a used one
    first = start_operator()
    names = [f"s{i}" for i in range(10)]
    create_services(admin_api, namespace, [lb_service(n) for n in names])
    before = wait_ips(admin_api, namespace, names)
    for name in names:
        wait_for(lambda n=name: events(admin_api, namespace, n, "IPAllocated"), what=f"{name} event")

    # the allocator dies and comes back empty (as Ray restarts the actor); the operator keeps running
    first.core.ray.allocator = AllocatorService()
    create(admin_api, namespace, "after-allocator")
    after_allocator = wait_ips(admin_api, namespace, ["after-allocator"])["after-allocator"]
    assert first.core.counters.restores == 2  # its first start, and this one

    # the operator dies (its allocator with it); a new one starts while another Service is created
    first.stop()
    create(admin_api, namespace, "after-operator")
    second = start_operator()
    now = wait_ips(admin_api, namespace, [*names, "after-allocator", "after-operator"])
    assert second.core.counters.restores == 1
    assert {n: now[n] for n in names} == {n: before[n] for n in names}, "no Service changed IP"
    assert now["after-allocator"] == after_allocator
    everyone = [now[n][0] for n in (*names, "after-allocator", "after-operator")]
    assert len(set(everyone)) == len(everyone), "a newcomer took an address that was in use"
    wait_for(lambda: events(admin_api, namespace, "after-operator", "IPAllocated"), what="the newcomer's event")
    for name in (*names, "after-allocator"):
        assert len(events(admin_api, namespace, name, "IPAllocated")) == 1, f"{name} was allocated again"
    # what the new operator wrote: the newcomer's status (carrying its pool annotation) and event
    assert second.wait_quiet()
    assert {k: v for k, v in second.requests.counts.items() if k != "read"} == {"status": 1, "event": 1}
    assert POOL_ANNOTATION in services(admin_api, namespace)["after-operator"]["metadata"]["annotations"]


# ---- what a user is told when something is wrong -------------------------------------------


@pytest.mark.parametrize(
    ("kind", "addresses", "extra", "field", "value"),
    [
        ("AddressPool", ["198.51.100.20-198.51.100.10"], {"protocol": "layer2"}, "spec.addresses[0]",
         "198.51.100.20-198.51.100.10"),
        ("IPAddressPool", ["203.0.113.8/29"], {}, "spec.addresses[0]", "203.0.113.8/29"),  # overlaps "first"
    ],
    ids=["start-after-end", "overlaps-another-pool"],
)
def test_an_invalid_pool_says_what_is_wrong_where_kubectl_describe_shows_it(
    admin_api: client.ApiClient, start_operator: Callable[..., RunningOperator],
    kind: str, addresses: list[str], extra: dict[str, Any], field: str, value: str,
) -> None:
    configure(admin_api, {"first": ["203.0.113.0/28"]})
    # Overlaps are settled by creationTimestamp, which has 1 s resolution, then by name: a name
    # after "first" keeps the outcome independent of how fast this test runs.
    name = f"later-{uuid.uuid4().hex[:6]}"
    start_operator()
    wait_for(lambda: conditions(get(admin_api, "IPAddressPool", OPERATOR_NAMESPACE, "first")).get("Valid"),
             what="the good pool's condition")  # "first" is older than the bad pool
    apply(admin_api, [{"apiVersion": "metallb.io/v1beta1", "kind": kind,
                       "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
                       "spec": {"addresses": addresses, **extra}}])
    valid = wait_for(lambda: conditions(get(admin_api, kind, OPERATOR_NAMESPACE, name)).get("Valid"),
                     what=f"{kind} {name} Valid condition")
    assert valid["status"] == "False" and valid["reason"] == "InvalidConfiguration"
    assert field in valid["message"] and value in valid["message"], valid["message"]
    warnings = wait_for(lambda: events(admin_api, OPERATOR_NAMESPACE, name, "InvalidConfiguration"),
                        what="a Warning event on the pool")
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert warnings[0].involved_object.kind == kind and value in warnings[0].message
    assert conditions(get(admin_api, "IPAddressPool", OPERATOR_NAMESPACE, "first"))["Valid"]["status"] == "True"
    degraded = wait_for(lambda: conditions(get(admin_api, "MetalLB", OPERATOR_NAMESPACE, "metallb")).get("Degraded"),
                        what="MetalLB Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ConfigurationProblems"


def _operator_rules_without(resource: str) -> list[dict[str, Any]]:
    """deploy/rbac's rules (cluster-wide and namespaced), minus every rule on `resource`."""
    docs = manifests.load_documents([RBAC_DIR])
    rules = [rule for d in docs if d["kind"] in ("ClusterRole", "Role") for rule in d["rules"]]
    return [rule for rule in rules if resource not in rule["resources"]]


def test_an_rbac_denial_is_reported_in_metallb_status_and_logs_not_swallowed(
    admin_api: client.ApiClient, namespace: str, control_plane: ControlPlane,
    start_operator: Callable[..., RunningOperator], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    configure(admin_api, {"doc": ["203.0.113.0/28"]})
    reduced = service_account_client(control_plane, admin_api, namespace=namespace,
                                     cluster_rules=_operator_rules_without("nodes"))
    running = start_operator(reduced)
    degraded = wait_for(
        lambda: (c := conditions(get(admin_api, "MetalLB", OPERATOR_NAMESPACE, "metallb")).get("Degraded"))
        and c["status"] == "True" and c,
        what="MetalLB Degraded=True",
    )
    assert degraded["reason"] == "APIAccessDenied"
    assert "Node" in degraded["message"] and "nodes" in degraded["message"] and "list" in degraded["message"]
    available = conditions(get(admin_api, "MetalLB", OPERATOR_NAMESPACE, "metallb"))["Available"]
    assert available["status"] == "False"
    status = running.core.status()
    assert set(status["source_errors"]) == {"Node"} and status["source_errors"]["Node"].startswith("APIAccessDenied")
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "raylb.actors.operator"]
    assert len(logged) == 1 and "Node" in logged[0].getMessage() and "nodes" in logged[0].getMessage()
    reduced.close()
