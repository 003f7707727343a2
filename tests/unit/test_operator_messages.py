"""What the operator tells a user who looks (issue 11): Events and status for Services that
wait, lose their IP, name an invalid pool, or cannot be announced. Same harness as
test_operator_core."""

from __future__ import annotations

from raylb.desired import Ref
from raylb.election import EXCLUDE_LABEL
from tests.unit.fakes import NS, endpoint_slice, ip_pool, node, service
from tests.unit.test_operator_core import NODES, System, seed, system  # noqa: F401 - `system` is the fixture


def test_a_service_naming_a_rejected_pool_is_told_it_is_invalid_and_why(system: System) -> None:
    seed(system.cluster)
    # overlaps doc-example (198.18.0.128-131): rejected, but it exists
    system.cluster.apply("IPAddressPool", ip_pool("overlap", ["198.18.0.130/31"]))
    system.cluster.apply("Service", service("web", annotations={"metallb.io/address-pool": "overlap"}))
    system.settle()
    failed = system.events("AllocationFailed")
    assert len(failed) == 1
    message = failed[0].message
    assert "'overlap'" in message and "is invalid" in message and "does not exist" not in message
    assert "198.18.0.130/31" in message and "overlap" in message.split("is invalid: ", 1)[1]


def test_a_service_naming_a_pool_that_does_not_exist_is_still_told_so(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web", annotations={"metallb.io/address-pool": "nowhere"}))
    system.settle()
    [failed] = system.events("AllocationFailed")
    assert "'nowhere'" in failed.message and "does not exist" in failed.message


def test_after_metallb_is_deleted_no_speaker_is_listed_and_a_new_service_hears_why_it_waits(system: System) -> None:
    seed(system.cluster)
    system.settle()
    assert system.core.status()["speakers"] == sorted(NODES)
    system.cluster.delete(Ref("MetalLB", NS, "metallb"))
    system.cluster.apply("Service", service("late"))
    system.settle(rounds=5)
    assert system.core.status()["speakers"] == []
    [waiting] = system.events("NotDeployed")  # once, not every round
    assert waiting.ref == Ref("Service", "default", "late")
    assert "no MetalLB resource 'metallb' in namespace 'metallb-system'" in waiting.message
    assert "default/late" in system.core.status()["pending"]


def test_a_service_with_ips_no_node_may_announce_gets_one_warning_naming_each_node(system: System) -> None:
    seed(system.cluster)
    for name in NODES:
        system.cluster.apply("Node", node(name, **{EXCLUDE_LABEL: ""}))
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node2"]))
    system.settle(rounds=5)
    assert system.ingress("web") == ["198.18.0.128"]
    [warning] = system.events("NotAnnounced")
    assert warning.ref == Ref("Service", "default", "web")
    for name in NODES:
        assert f"{name}: not eligible: labelled {EXCLUDE_LABEL}" in warning.message
    system.cluster.apply("Node", node("node1"))  # fixed: no new warning
    system.settle(rounds=3)
    assert len(system.events("NotAnnounced")) == 1


def test_a_service_without_ready_endpoints_is_not_warned_about(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.settle(rounds=3)
    assert system.events("NotAnnounced") == []


def test_status_lists_a_refused_service_as_pending_with_the_reason(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web", annotations={"metallb.io/address-pool": "nowhere"}))
    system.settle()
    assert "does not exist" in system.core.status()["pending"]["default/web"]


def test_an_ip_whose_elected_node_has_no_usable_interface_gets_a_warning(system: System) -> None:
    seed(system.cluster)
    system.cluster.apply("Service", service("web"))
    system.cluster.apply("EndpointSlice", endpoint_slice("web", ["node2"]))
    system.settle()
    assert system.events("NotAnnounced") == []
    elected = system.core.status()["announcers"]["default/web"]
    system.ray.unplaced[elected] = ["198.18.0.128"]  # its speaker cannot place the IP
    system.settle()
    [warning] = system.events("NotAnnounced")
    assert f"{elected}: not eligible: no usable interface for the IP on this node" in warning.message
