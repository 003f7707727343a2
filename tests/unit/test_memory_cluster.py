"""The in-memory desired-state store behaves like a small API server for one reader."""

from __future__ import annotations

import threading

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
