"""The operator's logic against the in-memory store, the real allocator and a fake Ray."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from raylb.actors.operator import SOURCE_ERROR_GRACE_S, OperatorCore, OperatorSettings, settings_conflict
from raylb.cluster.kube.client import ForbiddenError
from raylb.cluster.memory import MemoryCluster
from raylb.desired import Change, Ref, World
from raylb.errors import TemporaryError
from raylb.reconcile import ServiceViews, read_services
from tests.unit.fakes import NS, FakeKeys, FakeRay, LocalDesired, endpoint_slice, ip_pool, l2adv, metallb, node, service

NODES = {"node1": "198.18.0.11", "node2": "198.18.0.12", "node3": "198.18.0.13"}


@dataclass
class System:
    cluster: MemoryCluster
    ray: FakeRay
    core: OperatorCore

    def settle(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            self.core.step(timeout_s=0)

    def ingress(self, name: str, namespace: str = "default") -> list[str]:
        obj = self.cluster.get(Ref("Service", namespace, name)) or {}
        return [i["ip"] for i in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress", [])]

    def annotations(self, name: str, namespace: str = "default") -> dict[str, str]:
        return (self.cluster.get(Ref("Service", namespace, name)) or {})["metadata"].get("annotations") or {}

    def events(self, reason: str) -> list[Any]:
        return [e for e in self.cluster.recorded_events() if e.reason == reason]

    def conditions(self, kind: str, name: str) -> dict[str, dict[str, str]]:
        obj = self.cluster.get(Ref(kind, NS, name)) or {}
        return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}

    def restart_operator(self) -> None:
        self.core = OperatorCore(desired=LocalDesired(self.cluster, reader="restarted"), results=self.cluster, ray=self.ray, key_source=FakeKeys())


def seed(cluster: MemoryCluster) -> None:
    """The seed's pools: doc-example auto-assigned, doc-example-reserved by annotation only, doc-example-ipv6."""
    cluster.apply("MetalLB", metallb())
    cluster.apply("IPAddressPool", ip_pool("doc-example", ["198.18.0.128-198.18.0.131"]))
    cluster.apply("IPAddressPool", ip_pool("doc-example-reserved", ["198.18.0.192/30"], autoAssign=False))
    cluster.apply("IPAddressPool", ip_pool("doc-example-ipv6", ["2001:db8:18::1:0/120"]))
    cluster.apply("L2Advertisement", l2adv())
    for name in NODES:
        cluster.apply("Node", node(name))


@pytest.fixture
def system() -> Iterator[System]:
    cluster = MemoryCluster()
    ray = FakeRay(NODES)
    yield System(cluster, ray, OperatorCore(desired=LocalDesired(cluster), results=cluster, ray=ray, key_source=FakeKeys()))


def test_without_metallb_nothing_is_deployed(system: System) -> None:
    system.cluster.apply("IPAddressPool", ip_pool("doc-example", ["198.18.0.128/30"]))
    system.cluster.apply("Service", service("web"))
    system.settle()
    assert system.ray.speakers == {}
    assert system.ray.allocator is None
    assert system.ingress("web") == []


def test_a_service_gets_an_ip_status_annotation_events_and_an_announcer(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node2"]))
    system.settle()
    assert system.ingress("web") == ["198.18.0.128"]
    assert system.annotations("web")["metallb.io/ip-allocated-from-pool"] == "doc-example"
    assert [e.message for e in system.events("IPAllocated")] == ["Assigned IP ['198.18.0.128'] from pool doc-example"]
    assert set(system.ray.speakers) == set(NODES)
    assert all(snap.services and snap.services[0].key == "default/web" for snap in system.ray.speakers.values())
    l2 = system.cluster.l2_statuses()
    assert set(l2) == {"default/web"} and l2["default/web"]["node"] in NODES
    assert len(system.events("nodeAssigned")) == 1
    assert system.conditions("MetalLB", "metallb")["Available"]["status"] == "True"


def test_the_steady_state_writes_nothing(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node1"]))
    system.settle()
    before = system.cluster.write_count()
    system.settle(rounds=5)
    assert system.cluster.write_count() == before


def test_the_reserved_pool_is_used_only_when_named(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("auto"))
    system.cluster.apply("Service", service("pinned", annotations={"metallb.io/address-pool": "doc-example-reserved"}))
    system.settle()
    assert system.ingress("auto") == ["198.18.0.128"]
    assert system.ingress("pinned") == ["198.18.0.192"]
    assert system.annotations("pinned")["metallb.io/ip-allocated-from-pool"] == "doc-example-reserved"


def test_an_ipv6_single_stack_service_gets_an_ipv6_address(system: System) -> None:
    seed(system.cluster)
    annotations = {"metallb.io/address-pool": "doc-example-ipv6"}
    system.cluster.apply("Service", service("six", annotations=annotations, ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack"))
    system.settle()
    assert system.ingress("six") == ["2001:db8:18::1:0"]


def test_an_allocator_restart_changes_no_ip_and_writes_nothing(system: System) -> None:
    seed(system.cluster)
    for name in ("a", "b", "c"):
        system.cluster.apply("Service", service(name))
    system.settle()
    ips = {n: system.ingress(n) for n in "abc"}
    writes = system.cluster.write_count()
    system.ray.allocator = None  # the actor died; Ray starts a fresh one
    system.cluster.delete(Ref("Service", "default", "a"))
    system.cluster.apply("Service", service("d"))
    system.settle()
    assert system.ray.allocator_starts == 2 and system.core.counters.restores == 2  # one per allocator life
    assert {n: system.ingress(n) for n in "bc"} == {n: ips[n] for n in "bc"}
    assert system.ingress("d") == ips["a"]  # a's address was freed before d was served
    assert system.cluster.write_count() > writes  # d was written ...
    assert len(system.events("IPAllocated")) == 4  # ... and only d got a new event


def test_an_operator_restart_repeats_no_write(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.settle()
    writes = system.cluster.write_count()
    system.restart_operator()
    system.settle()
    assert system.ingress("web") == ["198.18.0.128"]
    # Only the announcement (ServiceL2Status + event) is re-asserted by the new operator instance.
    assert system.cluster.write_count() - writes <= 2
    assert len(system.events("IPAllocated")) == 1


def test_a_bad_pool_is_reported_on_itself_and_does_not_take_good_ones_down(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("IPAddressPool", ip_pool("broken", ["198.18.0.300"]))
    system.cluster.apply("Service", service("web"))
    system.settle()
    valid = system.conditions("IPAddressPool", "broken")["Valid"]
    assert valid["status"] == "False" and "spec.addresses[0]" in valid["message"] and "198.18.0.300" in valid["message"]
    assert system.conditions("IPAddressPool", "doc-example")["Valid"]["status"] == "True"
    assert system.ingress("web") == ["198.18.0.128"]
    warnings = system.events("InvalidConfiguration")
    assert len(warnings) == 1 and warnings[0].ref == Ref("IPAddressPool", NS, "broken")
    assert system.conditions("MetalLB", "metallb")["Degraded"]["status"] == "True"


def test_an_exhausted_pool_is_reported_once_not_every_round(system: System) -> None:
    seed(system.cluster)
    for i in range(5):  # doc-example holds 4 addresses
        system.cluster.apply("Service", service(f"s{i}"))
    system.settle(rounds=6)
    failed = system.events("AllocationFailed")
    assert len(failed) == 1 and failed[0].ref.name == "s4" and "pool" in failed[0].message
    assert system.ingress("s4") == []


def test_deleting_a_service_frees_its_ip_for_the_next(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("first"))
    system.settle()
    system.cluster.delete(Ref("Service", "default", "first"))
    system.cluster.apply("Service", service("second"))
    system.settle()
    assert system.ingress("second") == ["198.18.0.128"]


def test_a_service_that_stops_being_a_load_balancer_is_cleared(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.settle()
    changed = service("web", annotations=system.annotations("web"), type="ClusterIP")
    changed["status"] = {"loadBalancer": {"ingress": [{"ip": "198.18.0.128"}]}}
    system.cluster.apply("Service", changed)
    system.settle(rounds=5)
    assert system.ingress("web") == []
    assert "metallb.io/ip-allocated-from-pool" not in system.annotations("web")
    [released] = system.events("IPReleased")  # once: the user hears why the IP went
    assert released.ref == Ref("Service", "default", "web")
    assert "198.18.0.128" in released.message and "ClusterIP" in released.message


def test_the_deprecated_annotation_prefix_works_and_is_warned_about_once(system: System) -> None:
    seed(system.cluster)
    old = {"metallb.universe.tf/address-pool": "doc-example-reserved"}
    system.cluster.apply("Service", service("legacy", annotations=old))
    system.settle(rounds=4)
    assert system.ingress("legacy") == ["198.18.0.192"]
    assert len(system.events("DeprecatedAnnotation")) == 1


def test_a_malformed_annotation_is_an_event_not_a_crash(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("bad", annotations={"metallb.io/loadBalancerIPs": "not-an-ip"}))
    system.cluster.apply("Service", service("good"))
    system.settle()
    assert system.ingress("good") == ["198.18.0.128"]
    failed = system.events("AllocationFailed")
    assert len(failed) == 1 and "not-an-ip" in failed[0].message
    assert system.core.counters.failures == 0


def test_only_nodes_matching_the_node_selector_get_speakers(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("MetalLB", metallb(nodeSelector={"raylb.io/speaker": "yes"}))
    system.cluster.apply("Node", node("node2", **{"raylb.io/speaker": "yes"}))
    system.settle()
    assert set(system.ray.speakers) == {"node2"}


def test_a_metallb_with_another_name_is_not_honoured_and_says_so(system: System) -> None:
    system.cluster.apply("MetalLB", metallb(name="other"))
    system.settle()
    degraded = system.conditions("MetalLB", "other")["Degraded"]
    assert degraded["status"] == "True" and "metallb" in degraded["message"]
    assert system.ray.speakers == {}


def test_deleting_metallb_removes_speakers_gracefully_and_the_allocator(system: System) -> None:
    seed(system.cluster)
    system.settle()
    assert set(system.ray.speakers) == set(NODES)
    system.cluster.delete(Ref("MetalLB", NS, "metallb"))
    system.settle()
    assert system.ray.speakers == {} and system.ray.allocator is None
    assert sorted(system.ray.removed) == [(n, True) for n in sorted(NODES)]


def test_a_dead_node_loses_its_speaker_and_a_new_node_gets_one(system: System) -> None:
    seed(system.cluster)
    system.settle()
    del system.ray.node_table["node3"]
    system.settle()
    assert ("node3", False) in system.ray.removed and "node3" not in system.ray.speakers
    assert system.ray.told_dead == ["node3"]
    system.ray.node_table["node4"] = system.ray.node_table["node1"].__class__("node4", "id-node4", "198.18.0.14")
    system.settle()
    assert "node4" in system.ray.speakers


def test_local_policy_announces_from_a_node_with_an_endpoint(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("local", externalTrafficPolicy="Local"))
    system.cluster.apply("EndpointSlice", endpoint_slice("local", ["node3"]))
    system.settle()
    assert system.cluster.l2_statuses()["default/local"]["node"] == "node3"


def test_a_failing_write_does_not_stop_the_round(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("a"))
    system.cluster.apply("Service", service("b"))
    original = system.cluster.set_ingress

    def flaky(ref: Ref, ips: Any, **kwargs: Any) -> None:
        if ref.name == "a":
            raise RuntimeError("API server said no")
        original(ref, ips, **kwargs)

    system.cluster.set_ingress = flaky  # type: ignore[method-assign]
    system.settle()
    assert system.ingress("b") == ["198.18.0.129"]
    assert system.core.counters.write_failures >= 1
    system.cluster.set_ingress = original  # type: ignore[method-assign]
    system.settle()
    assert system.ingress("a") == ["198.18.0.128"]


def failing_once(system: System, method: str, *, when: Any = lambda *a, **k: True) -> list[tuple[Any, ...]]:
    """Make `system.cluster.<method>` raise the first time `when(args, kwargs)` holds; returns the
    calls that failed."""
    original = getattr(system.cluster, method)
    failed: list[tuple[Any, ...]] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not failed and when(*args, **kwargs):
            failed.append(args)
            raise TemporaryError(f"{method}: API server unreachable")
        return original(*args, **kwargs)

    setattr(system.cluster, method, flaky)
    return failed


def test_a_failed_service_l2_status_write_is_retried_with_its_event(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node2"]))
    failed = failing_once(system, "put_l2_status")
    system.settle()
    assert failed, "the fault was never hit"
    assert system.cluster.l2_statuses()["default/web"]["node"] in NODES
    assert len(system.events("nodeAssigned")) >= 1


def test_a_failed_service_l2_status_removal_is_retried(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node2"]))
    system.settle()
    failed = failing_once(system, "delete_l2_status")
    system.cluster.delete(Ref("Service", "default", "web"))
    system.settle()
    assert failed, "the fault was never hit"
    assert system.cluster.l2_statuses() == {}


@pytest.mark.parametrize(
    ("kind", "manifest", "reason", "told_about"),
    [
        ("Service", service("nowhere", annotations={"metallb.io/address-pool": "no-such-pool"}), "AllocationFailed", "nowhere"),
        ("IPAddressPool", ip_pool("broken", ["not-an-ip"]), "InvalidConfiguration", "broken"),
        ("Service", service("old", annotations={"metallb.universe.tf/address-pool": "doc-example"}), "DeprecatedAnnotation", "old"),
    ],
    ids=["allocation-failed", "invalid-pool", "deprecated-annotation"],
)
def test_a_failed_warning_event_is_recorded_on_a_later_round(
    system: System, kind: str, manifest: dict[str, Any], reason: str, told_about: str
) -> None:
    seed(system.cluster)
    system.cluster.apply(kind, manifest)
    failed = failing_once(system, "record_event", when=lambda ref, **kw: kw.get("reason") == reason)
    system.settle()
    assert failed, "the fault was never hit"
    assert [e.ref.name for e in system.events(reason)] == [told_about]


def test_a_round_that_blows_up_is_counted_and_the_next_round_runs(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))

    def broken(method: str, **kwargs: Any) -> Any:
        raise ConnectionError("allocator unreachable")

    real = system.ray.call_allocator
    system.ray.call_allocator = broken  # type: ignore[method-assign]
    system.settle(rounds=2)
    assert system.core.counters.failures == 2 and "allocator unreachable" in system.core.counters.last_error
    system.ray.call_allocator = real  # type: ignore[method-assign]
    system.settle()
    assert system.ingress("web") == ["198.18.0.128"]


# --- desired state the operator cannot read ---------------------------------------------------


class ErringDesired(LocalDesired):
    """LocalDesired with KubeDesired's `errors()`: kind -> the error its watcher is stuck on.
    With `withhold`, no change is handed out (a source that has not listed every kind yet)."""

    def __init__(self, cluster: MemoryCluster, *, withhold: bool = False) -> None:
        super().__init__(cluster)
        self.current: dict[str, Exception] = {}
        self.withhold = withhold

    def wait_changes(self, *, timeout_s: float) -> list[Any]:
        return [] if self.withhold else super().wait_changes(timeout_s=timeout_s)

    def errors(self) -> dict[str, Exception]:
        return dict(self.current)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


NODES_DENIED = ForbiddenError(
    'get nodes: forbidden (HTTP 403): nodes is forbidden: User "system:serviceaccount:metallb-system:raylb-operator" '
    'cannot list resource "nodes" in API group "" at the cluster scope'
)


def erring_system(*, withhold: bool = False) -> tuple[System, ErringDesired, Clock]:
    cluster, clock = MemoryCluster(), Clock()
    desired = ErringDesired(cluster, withhold=withhold)
    ray = FakeRay(NODES)
    return System(cluster, ray, OperatorCore(desired=desired, results=cluster, ray=ray, clock=clock, key_source=FakeKeys())), desired, clock


def operator_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "raylb.actors.operator" and r.levelno >= logging.ERROR]


def test_a_persistent_denial_is_reported_in_degraded_status_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    system, desired, clock = erring_system()
    seed(system.cluster)
    system.settle()
    desired.current = {"Node": NODES_DENIED}
    system.settle(rounds=2)
    assert system.conditions("MetalLB", "metallb")["Degraded"]["status"] == "False", "not yet: it may be transient"
    assert system.core.status()["source_errors_transient"] == ["Node"] and system.core.status()["source_errors"] == {}
    clock.advance(SOURCE_ERROR_GRACE_S)
    system.settle(rounds=3)
    degraded = system.conditions("MetalLB", "metallb")["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "APIAccessDenied")
    assert degraded["message"].startswith("cannot read Node: ") and 'cannot list resource "nodes"' in degraded["message"]
    assert system.core.status()["source_errors"] == {"Node": f"APIAccessDenied: {NODES_DENIED}"}
    assert len(operator_errors(caplog)) == 1 and "Node" in operator_errors(caplog)[0]
    desired.current = {}
    system.settle()
    degraded = system.conditions("MetalLB", "metallb")["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("False", "NoProblems")
    assert system.core.status()["source_errors"] == {} and len(operator_errors(caplog)) == 1


def test_a_denial_right_after_an_api_server_restart_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    system, desired, clock = erring_system()
    seed(system.cluster)
    system.settle()
    writes = system.cluster.write_count()
    desired.current = {"Node": NODES_DENIED}  # the restarted authorizer's cache is still empty
    for _ in range(4):
        clock.advance(SOURCE_ERROR_GRACE_S / 5)
        system.settle(rounds=1)
    desired.current = {}
    system.settle()
    assert system.cluster.write_count() == writes and operator_errors(caplog) == []
    assert system.conditions("MetalLB", "metallb")["Degraded"]["status"] == "False"


def test_one_old_error_seen_in_a_single_round_is_not_yet_persistent() -> None:
    system, desired, clock = erring_system()
    seed(system.cluster)
    system.settle()
    desired.current = {"Node": NODES_DENIED}
    clock.advance(3 * SOURCE_ERROR_GRACE_S)  # a long round, e.g. blocked on a slow API server
    system.settle(rounds=1)
    assert system.core.status()["source_errors"] == {}


def test_errors_other_than_a_denial_are_reported_as_api_unavailable() -> None:
    system, desired, clock = erring_system()
    seed(system.cluster)
    system.settle()
    desired.current = {"EndpointSlice": TemporaryError("watch endpointslices: API server unreachable: refused")}
    system.settle()
    clock.advance(SOURCE_ERROR_GRACE_S)
    system.settle()
    degraded = system.conditions("MetalLB", "metallb")["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "APIUnavailable")
    assert "cannot read EndpointSlice" in degraded["message"] and "unreachable" in degraded["message"]


def test_a_denial_and_a_bad_pool_are_both_in_the_degraded_message() -> None:
    system, desired, clock = erring_system()
    seed(system.cluster)
    system.cluster.apply("IPAddressPool", ip_pool("broken", ["198.18.0.300"]))
    desired.current = {"Node": NODES_DENIED}
    system.settle()
    clock.advance(SOURCE_ERROR_GRACE_S)
    system.settle()
    degraded = system.conditions("MetalLB", "metallb")["Degraded"]
    assert degraded["reason"] == "APIAccessDenied"
    assert "cannot read Node" in degraded["message"] and "1 pool or advertisement problem" in degraded["message"]


def test_a_source_that_never_synced_reports_on_the_metallb_resource(caplog: pytest.LogCaptureFixture) -> None:
    system, desired, clock = erring_system(withhold=True)
    seed(system.cluster)  # in the cluster, but the source hands out nothing: it cannot list Nodes
    desired.current = {"Node": NODES_DENIED}
    system.settle()
    assert system.conditions("MetalLB", "metallb") == {}
    clock.advance(SOURCE_ERROR_GRACE_S)
    system.settle()
    found = system.conditions("MetalLB", "metallb")
    assert (found["Degraded"]["status"], found["Degraded"]["reason"]) == ("True", "APIAccessDenied")
    assert 'cannot list resource "nodes"' in found["Degraded"]["message"]
    assert found["Available"]["status"] == "False" and "Node" in found["Available"]["message"]
    assert system.ray.speakers == {} and system.ray.allocator is None
    writes = system.cluster.write_count()
    clock.advance(SOURCE_ERROR_GRACE_S / 2)
    system.settle(rounds=5)
    assert system.cluster.write_count() == writes, "re-asserted at most once per grace period"
    assert len(operator_errors(caplog)) == 1


def test_remembered_service_views_equal_fresh_ones_through_changes() -> None:
    """ServiceViews re-parses only what changed, and always answers what read_services would."""
    world, views = World(), ServiceViews()
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("ADDED", "Service", service("a")),
        ("ADDED", "Service", service("b", annotations={"metallb.io/address-pool": "doc-example-reserved"})),
        ("ADDED", "Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": {"t": "1"}}}),
        ("ADDED", "EndpointSlice", endpoint_slice("a", ["node1"])),
        ("MODIFIED", "Service", {**service("b"), "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.128"}]}}}),
        ("MODIFIED", "EndpointSlice", endpoint_slice("a", ["node2"], ready=False)),
        ("MODIFIED", "Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": {"t": "2"}}}),
        ("MODIFIED", "Service", service("a", type="ClusterIP")),
        ("DELETED", "Service", service("b")),
        ("ADDED", "Service", service("c")),
    ]
    for change_type, kind, obj in steps:
        world.apply(Change(change_type, kind, obj))  # type: ignore[arg-type]
        assert views.read(world, load_balancer_class=None) == read_services(world, load_balancer_class=None)
    before = views.read(world, load_balancer_class=None)
    assert list(before) == ["default/c"]
    assert all(a is b for a, b in zip(before.values(), views.read(world, load_balancer_class=None).values()))


def test_a_new_service_costs_two_writes_its_status_with_the_pool_and_one_event() -> None:
    cluster = MemoryCluster()
    core = OperatorCore(desired=LocalDesired(cluster), results=cluster, ray=FakeRay({}), key_source=FakeKeys())  # no speakers: no announcements
    seed(cluster)
    for _ in range(3):
        core.step(timeout_s=0)
    before = cluster.write_count()
    cluster.apply("Service", service("web"))
    for _ in range(3):
        core.step(timeout_s=0)
    assert cluster.write_count() - before == 2
    obj = cluster.get(Ref("Service", "default", "web")) or {}
    assert obj["metadata"]["annotations"]["metallb.io/ip-allocated-from-pool"] == "doc-example"


def test_a_restarted_operator_publishes_above_the_version_the_speakers_hold(system: System) -> None:
    seed(system.cluster)
    for name in ("a", "b", "c"):
        system.cluster.apply("Service", service(name))
        system.settle()  # several snapshot versions go out
    held = max(s.version for s in system.ray.speakers.values())
    assert held > 1
    system.restart_operator()
    system.cluster.apply("Service", service("after-restart"))
    system.settle()
    assert all(
        "default/after-restart" in {s.key for s in snap.services} for snap in system.ray.speakers.values()
    ), "the speakers must accept the restarted operator's snapshots"
    assert min(s.version for s in system.ray.speakers.values()) > held


def test_an_operator_whose_source_is_still_listing_tears_nothing_down(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.settle()
    writes = system.cluster.write_count()
    listing = LocalDesired(system.cluster, reader="restarted", synced=False)
    system.core = OperatorCore(desired=listing, results=system.cluster, ray=system.ray, key_source=FakeKeys())
    system.settle()
    assert set(system.ray.speakers) == set(NODES) and system.ray.allocator is not None
    assert system.cluster.write_count() == writes
    listing.synced = True
    system.settle()
    assert system.ingress("web") == ["198.18.0.128"] and set(system.ray.speakers) == set(NODES)


def test_a_deleted_service_loses_its_l2_status(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node1", "node2", "node3"]))
    system.settle()
    assert "default/web" in system.cluster.l2_statuses()
    system.cluster.delete(Ref("Service", "default", "web"))
    system.settle()
    assert system.cluster.l2_statuses() == {}


def test_deleting_metallb_deletes_the_l2_statuses_too(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node1"]))
    system.settle()
    assert system.cluster.l2_statuses()
    system.cluster.delete(Ref("MetalLB", NS, "metallb"))
    system.settle()
    assert system.cluster.l2_statuses() == {}


def test_a_run_with_the_same_settings_attaches_and_one_with_others_is_told_what_differs() -> None:
    running = asdict(OperatorSettings(source="kube", kubeconfig="/etc/raylb/kubeconfig"))
    assert settings_conflict(running, OperatorSettings(source="kube", kubeconfig="/etc/raylb/kubeconfig")) is None
    told = settings_conflict(running, OperatorSettings(source="memory"))
    assert told is not None
    assert "source: running 'kube', asked 'memory'" in told
    assert "kubeconfig: running '/etc/raylb/kubeconfig', asked None" in told
    assert "raylb uninstall" in told and "operator_namespace" not in told
