"""The in-cluster failover benchmark's manifest and command line (the run itself needs a lab)."""

from __future__ import annotations

from click.testing import CliRunner

from raylb.cluster.lab import failover, failover_kube


def test_the_bench_services_are_local_so_the_answering_node_is_the_announcer() -> None:
    docs = failover_kube.manifest()
    services = [d for d in docs if d["kind"] == "Service"]
    assert len(services) == 2 * failover.SERVICES_PER_FAMILY
    assert {s["spec"]["externalTrafficPolicy"] for s in services} == {"Local"}
    assert {s["spec"]["ipFamilies"][0] for s in services} == {"IPv4", "IPv6"}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"
    pools = {d["metadata"]["name"] for d in docs if d["kind"] == "IPAddressPool"}
    assert {s["metadata"]["annotations"]["metallb.io/address-pool"] for s in services} == pools


def test_kubernetes_mode_refuses_what_it_does_not_measure() -> None:
    for extra in (["--vips", "10"], ["--mode", "link"], ["--plot", "/tmp/x.png"]):
        result = CliRunner().invoke(failover.command, ["--kubernetes", *extra])
        assert result.exit_code == 2, result.output
        assert "--kubernetes measures kill and graceful trials only" in result.output
