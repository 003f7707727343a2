"""IP allocation as a MetalLB (v0.14/0.15, layer 2) user expects it, at the edges.

Mostly from the outside, through the operator harness of test_operator_core (Services in,
status, annotations, events and ServiceL2Status out); through the allocator's public API
where the rule is clearer there. Each test names, in a comment, the MetalLB fact it relies on
(metallb/metallb: controller/service.go, internal/allocator/allocator.go,
internal/config/config.go, website/content/usage/_index.md). Rules already pinned by
test_allocator, test_services and test_operator_* are not repeated here.
"""

from __future__ import annotations

from typing import Any

import pytest

from raylb.desired import Ref
from raylb.errors import AllocationError
from raylb.ipam.allocator import Allocator
from raylb.ipam.request import ServiceRequest
from raylb.pools import ServiceAllocation
from raylb.reconcile import POOL_ANNOTATION
from tests.unit.fakes import NS, endpoint_slice, ip_pool, service
from tests.unit.test_allocator import DOC, IP, SEED, by_name, pool, ports, sharing, svc
from tests.unit.test_operator_core import System, seed, system  # noqa: F401 - `system` is the fixture

REQUESTED = "metallb.io/loadBalancerIPs"
SHARED = "metallb.io/allow-shared-ip"


def failures(system: System, name: str, namespace: str = "default") -> list[str]:
    """The AllocationFailed messages recorded on one Service."""
    ref = Ref("Service", namespace, name)
    return [e.message for e in system.events("AllocationFailed") if e.ref == ref]


def in_use(system: System, pool_name: str) -> object:
    """Addresses of the pool in use, as the allocator counts them (a shared one counts once)."""
    allocator = system.ray.allocator
    assert allocator is not None, "the allocator was never started"
    return allocator.stats()[pool_name]["in_use"]


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def created(manifest: dict[str, Any], when: str) -> dict[str, Any]:
    """The manifest with metadata.creationTimestamp, as the API server stamps it."""
    return {**manifest, "metadata": {**manifest["metadata"], "creationTimestamp": when}}


def port(number: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"port": number, "protocol": protocol}


# --- requesting specific IPs ------------------------------------------------------------------


def test_a_requested_ip_in_a_reserved_pool_is_granted_without_naming_the_pool(system: System) -> None:
    # MetalLB: allocateIPs hands requested IPs to Allocator.Assign, which checks that one pool
    # holds them and admits the Service (serviceAllocation), never the pool's autoAssign.
    seed(system.cluster)
    system.cluster.apply("Service", service("web", annotations={REQUESTED: "198.18.0.193"}))
    system.settle()
    assert system.ingress("web") == ["198.18.0.193"]
    assert system.annotations("web")[POOL_ANNOTATION] == "doc-example-reserved"


def test_a_requested_ip_outside_every_pool_is_refused_with_a_warning_naming_it(system: System) -> None:
    # MetalLB usage docs: "If MetalLB does not own the requested address ... assignment will
    # fail and MetalLB will log a warning event visible in kubectl describe service".
    seed(system.cluster)
    system.cluster.apply("Service", service("web", loadBalancerIP="198.18.0.50"))
    system.settle()
    assert system.ingress("web") == []
    [message] = failures(system, "web")
    assert message.startswith("ip-not-in-pool") and "198.18.0.50" in message


def test_a_requested_ip_in_use_is_refused_naming_the_holder_then_granted_once_the_holder_goes(system: System) -> None:
    # MetalLB usage docs: a requested address "already in use by another service" fails with a
    # warning; SetBalancer answers a deletion with SyncStateReprocessAll, so the waiting
    # Service is served as soon as the address is free.
    seed(system.cluster)
    system.cluster.apply("Service", service("first"))
    system.settle()
    system.cluster.apply("Service", service("second", loadBalancerIP="198.18.0.128"))
    system.settle()
    assert system.ingress("second") == []
    [message] = failures(system, "second")
    assert message.startswith("ip-in-use") and "default/first" in message
    system.cluster.delete(Ref("Service", "default", "first"))
    system.settle()
    assert system.ingress("second") == ["198.18.0.128"]


def test_changing_the_requested_ip_moves_the_service_and_frees_the_old_address(system: System) -> None:
    # MetalLB convergeBalancer: "User set or changed the desired LB IP(s), nuke the state" -
    # the old address is unassigned, then the new one is assigned.
    seed(system.cluster)
    system.cluster.apply("Service", service("web", loadBalancerIP="198.18.0.131"))
    system.settle()
    system.cluster.apply("Service", service("web", loadBalancerIP="198.18.0.130"))
    for name in ("x", "y", "z"):
        system.cluster.apply("Service", service(name))
    system.settle()
    assert system.ingress("web") == ["198.18.0.130"]
    assert [system.ingress(n) for n in ("x", "y", "z")] == [["198.18.0.128"], ["198.18.0.129"], ["198.18.0.131"]]


def test_removing_the_requested_ip_keeps_the_address_even_in_a_reserved_pool(system: System) -> None:
    # MetalLB convergeBalancer re-checks a held address with Assign (autoAssign plays no part)
    # and clears it only when the requested IPs are set and differ; none requested keeps it.
    seed(system.cluster)
    system.cluster.apply("Service", service("web", annotations={REQUESTED: "198.18.0.193"}))
    system.settle()
    system.cluster.apply("Service", service("web", annotations={POOL_ANNOTATION: "doc-example-reserved"}))
    system.settle()
    assert system.ingress("web") == ["198.18.0.193"]
    assert len(system.events("IPAllocated")) == 1


@pytest.mark.parametrize(
    ("annotations", "spec"),
    [({REQUESTED: "198.18.0.12x"}, {}), ({REQUESTED: "198.18.0.128"}, {"loadBalancerIP": "198.18.0.128"})],
    ids=["malformed-annotation", "annotation-and-spec-both-set"],
)
def test_an_edit_that_makes_the_request_unreadable_keeps_the_running_ip(
    system: System, annotations: dict[str, str], spec: dict[str, Any]
) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.settle()
    system.cluster.apply("Service", service("web", annotations=annotations, **spec))
    system.cluster.apply("Service", service("next"))
    system.settle()
    assert len(failures(system, "web")) == 1, "the bad edit is still reported"
    assert system.ingress("web") == ["198.18.0.128"]
    assert system.ingress("next") == ["198.18.0.129"]


def test_a_service_kept_through_a_bad_edit_keeps_its_ip_across_an_allocator_restart(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("first"))  # takes .128, so web's address is not the lowest
    system.cluster.apply("Service", service("web"))
    system.settle()
    system.cluster.apply("Service", service("web", annotations={REQUESTED: "198.18.0.12x"}))
    system.cluster.delete(Ref("Service", "default", "first"))
    system.settle()
    system.ray.allocator = None  # the actor died; the new one restores from the recorded status
    system.cluster.apply("Service", service("x-late"))  # served after web: it would take .128 first
    system.settle()
    assert system.ingress("web") == ["198.18.0.129"]
    assert system.ingress("x-late") == ["198.18.0.128"]


# --- IP sharing -------------------------------------------------------------------------------


def test_the_metallb_dns_example_shares_one_ip_announced_from_one_node(system: System) -> None:
    # MetalLB usage docs, "IP address sharing": dns-service-tcp (TCP/53) and dns-service-udp
    # (UDP/53) with one sharing key and one loadBalancerIP both get that address; in layer 2 one
    # node answers ARP for it, so both are announced from the same node.
    seed(system.cluster)
    key = {SHARED: "key-to-share-198.18.0.130"}
    for name, protocol in (("dns-service-tcp", "TCP"), ("dns-service-udp", "UDP")):
        manifest = service(name, annotations=key, loadBalancerIP="198.18.0.130", ports=[port(53, protocol)], selector={"app": "dns"})
        system.cluster.apply("Service", manifest)
        system.cluster.apply("EndpointSlice", endpoint_slice(name, ["node1", "node2", "node3"]))
    system.settle()
    assert system.ingress("dns-service-tcp") == system.ingress("dns-service-udp") == ["198.18.0.130"]
    assert in_use(system, "doc-example") == 1
    l2 = system.cluster.l2_statuses()
    assert l2["default/dns-service-tcp"]["node"] == l2["default/dns-service-udp"]["node"]


def test_a_shared_ip_stays_with_the_partner_when_one_sharer_is_deleted(system: System) -> None:
    # MetalLB Unassign removes only the deleted Service's ports from the address; the sharing
    # key stays with the address while any holder is left, so a Service without a key cannot
    # take it.
    seed(system.cluster)
    system.cluster.apply("Service", service("http", annotations={SHARED: "web"}, ports=[port(80)]))
    system.cluster.apply("Service", service("https", annotations={SHARED: "web"}, ports=[port(443)]))
    system.cluster.apply("EndpointSlice", endpoint_slice("https", ["node2"]))
    system.settle()
    assert system.ingress("http") == system.ingress("https") == ["198.18.0.128"]
    system.cluster.delete(Ref("Service", "default", "http"))
    system.cluster.apply("Service", service("plain"))
    system.settle()
    assert system.ingress("https") == ["198.18.0.128"]
    assert system.ingress("plain") == ["198.18.0.129"]
    assert len(system.events("IPAllocated")) == 3  # http, https, plain: nothing written again for https
    assert system.cluster.l2_statuses()["default/https"]["node"] == "node2"


def test_local_services_with_the_same_selector_share_and_are_announced_where_their_pods_run(system: System) -> None:
    # MetalLB usage docs: sharing needs the same key, different ports, and with the Local
    # policy "the exact same set of pods (i.e. the pod selectors are identical)"; MetalLB's
    # BackendKey is the selector under Local.
    seed(system.cluster)
    for name, number in (("web-http", 80), ("web-https", 443)):
        manifest = service(name, annotations={SHARED: "web"}, ports=[port(number)], selector={"app": "web"}, externalTrafficPolicy="Local")
        system.cluster.apply("Service", manifest)
        system.cluster.apply("EndpointSlice", endpoint_slice(name, ["node2"]))
    system.settle()
    assert system.ingress("web-http") == system.ingress("web-https") == ["198.18.0.128"]
    assert {s["node"] for s in system.cluster.l2_statuses().values()} == {"node2"}


def test_local_services_in_different_namespaces_are_never_announced_away_from_their_pods(system: System) -> None:
    # MetalLB usage docs: Local services may share only when they point to "the exact same set
    # of pods"; the README: with Local, the announcing node runs a ready endpoint.
    seed(system.cluster)
    pods_on = {"team-a": "node1", "team-b": "node3"}
    for (ns, node), number in zip(pods_on.items(), (80, 443)):
        manifest = service("web", ns, annotations={SHARED: "web"}, ports=[port(number)], externalTrafficPolicy="Local")
        system.cluster.apply("Service", manifest)
        system.cluster.apply("EndpointSlice", endpoint_slice("web", [node], namespace=ns))
    system.settle()
    announced = {key.partition("/")[0]: status["node"] for key, status in system.cluster.l2_statuses().items()}
    assert announced == pods_on


def test_a_sharing_key_is_cluster_wide_under_the_cluster_policy() -> None:
    # MetalLB's allocator keys sharing by the annotation's value alone (sharingOK), with no
    # namespace; under Cluster policy any node forwards to any pod, so this is safe.
    allocator = Allocator(by_name(*SEED))
    first = allocator.allocate(sharing("dns-tcp", "dns", "TCP/53"))
    second = allocator.allocate(sharing("dns-udp", "dns", "UDP/53", namespace="other"))
    assert second.ips == first.ips == (IP("198.18.0.10"),)


@pytest.mark.parametrize(
    "changed",
    [
        sharing("b", "other", "TCP/443"),
        sharing("b", "k", "TCP/443", external_traffic_policy="Local"),
        svc("b", ports=ports("TCP/443")),
    ],
    ids=["key-changed", "policy-changed-to-local", "key-removed"],
)
def test_a_sharer_whose_sharing_terms_change_moves_and_its_partner_stays(changed: ServiceRequest) -> None:
    # MetalLB checkSharing: a changed sharing or backend key is refused while other Services
    # hold the address ("can't change sharing key ..., address also in use by"), so Assign
    # fails, the Service's state is cleared and it gets a fresh address.
    allocator = Allocator(by_name(*SEED))
    allocator.allocate(sharing("a", "k", "TCP/80"))
    allocator.allocate(sharing("b", "k", "TCP/443"))
    assert allocator.allocate(changed).ips == (IP("198.18.0.11"),)
    assert allocator.assignment("default/a").ips == (IP("198.18.0.10"),)  # type: ignore[union-attr]
    assert allocator.stats()["doc-example"].in_use == 2


# --- dual stack -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ingress", "refusal"),
    [
        ({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}, [], "family-unavailable"),
        ({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"}, ["198.18.0.128"], None),
        ({"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}, ["2001:db8:18::1:0"], None),
    ],
    ids=["require-dual-stack-refused", "prefer-dual-stack-gets-ipv4", "single-stack-ipv6-auto-assigned"],
)
def test_ip_family_policies_with_single_family_pools(
    system: System, spec: dict[str, Any], ingress: list[str], refusal: str | None
) -> None:
    # MetalLB usage docs: a dual stack Service needs "at least one address pool having both
    # addresses of version v4 and v6"; findBestPoolForService takes the first pool with the
    # primary family for PreferDualStack, and a single-stack Service any pool of its family.
    seed(system.cluster)  # doc-example (IPv4), doc-example-ipv6 (IPv6): no dual pool
    system.cluster.apply("Service", service("web", **spec))
    system.settle()
    assert system.ingress("web") == ingress
    assert [m.partition(":")[0] for m in failures(system, "web")] == ([refusal] if refusal else [])


def test_a_dual_stack_pair_requested_by_annotation_is_granted_from_a_dual_pool(system: System) -> None:
    # MetalLB usage docs: for dual stack use metallb.io/loadBalancerIPs with one IP per family
    # (spec.loadBalancerIP holds only one); Assign wants both in one pool.
    seed(system.cluster)
    system.cluster.apply("IPAddressPool", ip_pool("doc-example-dual", ["198.18.0.160/30", "2001:db8:18::2:0/126"]))
    requested = {REQUESTED: "2001:db8:18::2:1, 198.18.0.161"}
    system.cluster.apply("Service", service("web", annotations=requested, ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack"))
    system.settle()
    assert sorted(system.ingress("web")) == ["198.18.0.161", "2001:db8:18::2:1"]
    assert system.annotations("web")[POOL_ANNOTATION] == "doc-example-dual"


# --- pool selection ---------------------------------------------------------------------------


def test_namespace_selectors_steer_services_and_follow_namespace_label_changes(system: System) -> None:
    # MetalLB: serviceAllocation.namespaceSelectors are matched against Namespace labels, the
    # config controller watches Namespaces and reloads; Assign then finds the held address's
    # pool incompatible (isPoolCompatibleWithService), clears it and allocates again.
    seed(system.cluster)
    selected = {"priority": 1, "namespaceSelectors": [{"matchLabels": {"team": "a"}}]}
    system.cluster.apply("IPAddressPool", ip_pool("team-a", ["198.18.0.160/30"], serviceAllocation=selected))
    system.cluster.apply("Namespace", namespace("shop", team="a"))
    system.cluster.apply("Service", service("web", "shop"))
    system.cluster.apply("Service", service("web"))
    system.settle()
    assert (system.ingress("web", "shop"), system.ingress("web")) == (["198.18.0.160"], ["198.18.0.128"])
    system.cluster.apply("Namespace", namespace("shop"))
    system.settle()
    assert system.ingress("web", "shop") == ["198.18.0.129"]
    assert system.annotations("web", "shop")[POOL_ANNOTATION] == "doc-example"
    assert in_use(system, "team-a") == 0


def test_a_service_allocation_pool_without_auto_assign_serves_only_requests() -> None:
    # MetalLB pinnedPoolsForService skips pools with autoAssign false; AllocateFromPool (the
    # address-pool annotation) and Assign (requested IPs) only check serviceAllocation.
    team = pool("team", "198.18.0.60/30", auto_assign=False, allocation=ServiceAllocation(namespaces=frozenset({"default"})))
    allocator = Allocator(by_name(DOC, team))
    assert allocator.allocate(svc("auto")).pool == "doc-example"
    assert allocator.allocate(svc("asked", requested_ips=["198.18.0.61"])).ips == (IP("198.18.0.61"),)
    assert allocator.allocate(svc("named", pool="team")).ips == (IP("198.18.0.60"),)


def test_naming_the_pool_a_service_already_uses_keeps_its_address() -> None:
    # MetalLB convergeBalancer clears a held address only when the address-pool annotation
    # names a pool other than the one it came from.
    allocator = Allocator(by_name(*SEED))
    allocator.allocate(svc("other"))
    held = allocator.allocate(svc("web"))
    allocator.release("default/other")  # a lower address is free now
    assert allocator.allocate(svc("web", pool="doc-example")).ips == held.ips == (IP("198.18.0.11"),)


def test_avoid_buggy_ips_skips_the_inner_boundary_of_a_slash_23() -> None:
    # MetalLB ipConfusesBuggyFirmwares: any IPv4 address whose last octet is 0 or 255, so a /23
    # loses four (.2.0, .2.255, .3.0, .3.255), also when requested (poolFor skips them).
    allocator = Allocator(by_name(pool("edge", "198.18.2.0/23", avoid_buggy_ips=True)))
    handed = [allocator.allocate(svc(f"s{i}")).ips[0] for i in range(255)]
    assert (handed[0], handed[253], handed[254]) == (IP("198.18.2.1"), IP("198.18.2.254"), IP("198.18.3.1"))
    assert allocator.stats()["edge"].total == 512 - 4
    for buggy in ("198.18.2.255", "198.18.3.0"):
        with pytest.raises(AllocationError) as refused:
            allocator.allocate(svc("asked", requested_ips=[buggy]))
        assert refused.value.reason == "ip-not-in-pool" and "avoidBuggyIPs" in refused.value.message


# --- pool changes -----------------------------------------------------------------------------


def test_a_pool_shrinking_under_a_service_moves_only_that_service(system: System) -> None:
    # MetalLB SetPools unassigns a Service whose address is in no pool any more and reprocesses
    # every Service: that one gets a fresh address, the others keep theirs.
    seed(system.cluster)
    for name in ("a", "b", "c"):
        system.cluster.apply("Service", service(name))
    system.settle()
    system.cluster.apply("IPAddressPool", ip_pool("doc-example", ["198.18.0.129-198.18.0.132"]))
    system.settle()
    assert [system.ingress(n) for n in ("a", "b", "c")] == [["198.18.0.131"], ["198.18.0.129"], ["198.18.0.130"]]
    assert len(system.events("IPAllocated")) == 4


def test_a_new_pool_that_sorts_first_moves_no_running_service(system: System) -> None:
    # MetalLB keeps every address Assign still accepts after a config change; a new pool only
    # serves new allocations (which pool first is raylb's documented order: by name).
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.settle()
    system.cluster.apply("IPAddressPool", ip_pool("a-first", ["198.18.0.64/30"]))
    system.cluster.apply("Service", service("next"))
    system.settle()
    assert (system.ingress("web"), system.annotations("web")[POOL_ANNOTATION]) == (["198.18.0.128"], "doc-example")
    assert system.ingress("next") == ["198.18.0.64"]


@pytest.mark.parametrize("stamped", [True, False], ids=["api-server", "memory-store"])
def test_a_newer_overlapping_pool_takes_no_address_from_the_pool_in_use(system: System, stamped: bool) -> None:
    # MetalLB refuses a configuration with overlapping pools and keeps running on the last good
    # one; raylb refuses the newer pool (config.py), so nothing moves either way.
    seed(system.cluster)
    doc_example = ip_pool("doc-example", ["198.18.0.128-198.18.0.131"])
    late = ip_pool("a-late", ["198.18.0.128/30"])
    if stamped:
        system.cluster.apply("IPAddressPool", created(doc_example, "2025-01-01T00:00:00Z"))
        late = created(late, "2025-06-01T00:00:00Z")
    system.cluster.apply("Service", service("web"))
    system.settle()
    system.cluster.apply("IPAddressPool", late)
    system.settle()
    assert system.conditions("IPAddressPool", "a-late")["Valid"]["status"] == "False"
    assert system.conditions("IPAddressPool", "doc-example")["Valid"]["status"] == "True"
    assert (system.ingress("web"), system.annotations("web")[POOL_ANNOTATION]) == (["198.18.0.128"], "doc-example")
