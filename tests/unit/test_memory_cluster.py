"""The in-memory desired-state store behaves like a small API server for one reader."""

from __future__ import annotations

import threading
import time

from raylb.actors.memory import Known
from raylb.cluster.memory import MemoryCluster
from raylb.desired import Change, Ref, World


def service(name: str, namespace: str = "default", **spec: object) -> dict:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"type": "LoadBalancer", **spec}}


def test_first_read_lists_everything_then_only_changes() -> None:
    cluster = MemoryCluster()
    cluster.apply("Service", service("a"))
    cluster.apply("Node", {"metadata": {"name": "node1"}})
    first = cluster.wait_changes(reader="op", timeout_s=0)
    assert [(c.type, c.ref) for c in first] == [
        ("ADDED", Ref("Node", "", "node1")),
        ("ADDED", Ref("Service", "default", "a")),
    ]
    assert cluster.wait_changes(reader="op", timeout_s=0) == []
    cluster.apply("Service", service("a", ports=[]))
    assert [c.type for c in cluster.wait_changes(reader="op", timeout_s=0)] == ["MODIFIED"]


def test_each_reader_has_its_own_cursor() -> None:
    cluster = MemoryCluster()
    cluster.apply("Service", service("a"))
    assert len(cluster.wait_changes(reader="old", timeout_s=0)) == 1
    cluster.delete(Ref("Service", "default", "a"))
    assert [c.type for c in cluster.wait_changes(reader="old", timeout_s=0)] == ["DELETED"]
    assert cluster.wait_changes(reader="new", timeout_s=0) == []


def test_wait_returns_as_soon_as_a_change_arrives() -> None:
    cluster = MemoryCluster()
    cluster.wait_changes(reader="op", timeout_s=0)
    timer = threading.Timer(0.05, cluster.apply, args=("Service", service("late")))
    timer.start()
    changes = cluster.wait_changes(reader="op", timeout_s=10)
    timer.join()
    assert [c.ref.name for c in changes] == ["late"]


def test_results_land_on_objects_and_count_writes_only_when_something_changes() -> None:
    cluster = MemoryCluster()
    ref = cluster.apply("Service", service("a"))
    cluster.set_ingress(ref, ["198.18.0.128"])
    cluster.set_ingress(ref, ["198.18.0.128"])
    cluster.set_annotations(ref, {"metallb.io/ip-allocated-from-pool": "doc-example"})
    obj = cluster.get(ref)
    assert obj is not None
    assert obj["status"]["loadBalancer"]["ingress"] == [{"ip": "198.18.0.128"}]
    assert obj["metadata"]["annotations"] == {"metallb.io/ip-allocated-from-pool": "doc-example"}
    assert cluster.writes == 2
    cluster.set_annotations(ref, {"metallb.io/ip-allocated-from-pool": None})
    assert cluster.get(ref)["metadata"]["annotations"] == {}


def test_reapplying_a_spec_keeps_the_written_status() -> None:
    cluster = MemoryCluster()
    ref = cluster.apply("Service", service("a"))
    cluster.set_ingress(ref, ["198.18.0.128"])
    cluster.apply("Service", service("a", ports=[{"port": 80}]))
    assert cluster.get(ref)["status"]["loadBalancer"]["ingress"] == [{"ip": "198.18.0.128"}]


def test_world_follows_changes() -> None:
    world = World()
    obj = service("a")
    world.apply(Change("ADDED", "Service", obj))
    assert world.get(Ref("Service", "default", "a")) == obj
    assert [r.key for r, _ in world.of_kind("Service")] == ["default/a"]
    world.apply(Change("DELETED", "Service", obj))
    assert len(world) == 0


def test_cluster_scoped_refs_have_no_namespace() -> None:
    assert Ref.of("Node", {"metadata": {"name": "n", "namespace": "x"}}) == Ref("Node", "", "n")
    assert Ref("Service", "ns", "a").key == "ns/a"


def test_ingress_and_annotations_are_one_write() -> None:
    cluster = MemoryCluster()
    ref = cluster.apply("Service", service("a"))
    cluster.set_ingress(ref, ["198.18.0.128"], annotations={"metallb.io/ip-allocated-from-pool": "doc-example"})
    obj = cluster.get(ref)
    assert obj is not None and cluster.write_count() == 1
    assert obj["metadata"]["annotations"] == {"metallb.io/ip-allocated-from-pool": "doc-example"}
    cluster.set_ingress(ref, [], annotations={"metallb.io/ip-allocated-from-pool": None})
    assert cluster.get(ref)["metadata"]["annotations"] == {} and cluster.write_count() == 2


def test_the_change_log_keeps_only_what_a_reader_has_yet_to_read() -> None:
    cluster = MemoryCluster()
    for i in range(50):  # nobody reads yet: nothing is kept, a first reader gets the full list
        cluster.apply("Service", service("a", ports=[{"port": i}]))
    assert cluster.log_length() == 0
    changes, full_list = cluster.watch(reader="op", timeout_s=0)
    assert full_list and [c.ref.name for c in changes] == ["a"]
    for i in range(50):
        cluster.apply("Service", service(f"s{i}"))
    assert cluster.log_length() == 50
    changes, full_list = cluster.watch(reader="op", timeout_s=0)
    assert not full_list and len(changes) == 50
    assert cluster.log_length() == 0


def test_a_silent_reader_is_forgotten_and_listed_in_full_when_it_returns() -> None:
    cluster = MemoryCluster(reader_idle_s=0.05)
    cluster.apply("Service", service("a"))
    cluster.watch(reader="dead", timeout_s=0)
    cluster.watch(reader="live", timeout_s=0)
    cluster.delete(Ref("Service", "default", "a"))
    cluster.apply("Service", service("b"))
    time.sleep(0.1)
    assert [c.type for c in cluster.wait_changes(reader="live", timeout_s=0)] == ["DELETED", "ADDED"]
    assert cluster.log_length() == 0, "the silent reader still pins the log"
    changes, full_list = cluster.watch(reader="dead", timeout_s=0)
    assert full_list and [(c.type, c.ref.name) for c in changes] == [("ADDED", "b")]


def test_a_reader_told_a_full_list_again_sees_the_difference_deletions_included() -> None:
    cluster = MemoryCluster(reader_idle_s=0.05)
    known = Known()
    cluster.apply("Service", service("kept"))
    cluster.apply("Service", service("changed"))
    cluster.apply("Service", service("deleted"))
    cluster.apply("Node", {"metadata": {"name": "node1"}})
    world = World()
    for change in known.relist(cluster.watch(reader="op", timeout_s=0)[0]):
        world.apply(change)
    cluster.apply("Service", service("changed", ports=[{"port": 80}]))
    cluster.delete(Ref("Service", "default", "deleted"))
    cluster.delete(Ref("Node", "", "node1"))
    time.sleep(0.1)
    cluster.watch(reader="other", timeout_s=0)  # "op" is forgotten here
    changes, full_list = cluster.watch(reader="op", timeout_s=0)
    assert full_list
    told = known.relist(changes)
    assert [(c.type, c.ref.key) for c in told] == [
        ("DELETED", "node1"),
        ("MODIFIED", "default/changed"),
        ("DELETED", "default/deleted"),
    ]
    for change in told:
        world.apply(change)
    assert sorted(ref.key for ref, _ in world.of_kind("Service")) == ["default/changed", "default/kept"]
    assert [ref.key for ref, _ in world.of_kind("Node")] == []


def test_only_the_newest_events_are_kept() -> None:
    cluster = MemoryCluster(events_kept=3)
    ref = cluster.apply("Service", service("a"))
    for i in range(5):
        cluster.record_event(ref, type="Normal", reason="Test", message=str(i))
    assert [e.message for e in cluster.recorded_events()] == ["2", "3", "4"]
