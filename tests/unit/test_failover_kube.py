"""The in-cluster failover benchmark's manifest and command line (the run itself needs a lab)."""

from __future__ import annotations

from click.testing import CliRunner

from raylb.cluster.lab import failover, failover_kube
from raylb.cluster.lab.failover_plot import Timeline
from raylb.cluster.lab.failover_probe import Outage, Sample


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
    for extra in (["--vips", "10"], ["--mode", "link"]):
        result = CliRunner().invoke(failover.command, ["--kubernetes", *extra])
        assert result.exit_code == 2, result.output
        assert "--kubernetes measures kill and graceful trials only" in result.output


def test_detection_is_asked_of_the_node_that_took_over_for_that_trial_only() -> None:
    results = failover.Results()
    outage = Outage(start_s=10.0, end_s=10.4, failed=40, before="node2", after="node3")
    for trial, outcome in ((1, outage), (2, outage), (2, None)):
        results.timelines.append(Timeline(trial=trial, family="ipv4", mode="kill", victim="node2", vip="198.18.0.225",
                                          event_s=10.05, samples=(Sample(t=10.0, ok=True, node="node2"),),
                                          outage=outcome))  # fmt: skip
    asked: list[tuple[str, str, float]] = []

    def detected(node: str, victim: str, after_s: float) -> float | None:
        asked.append((node, victim, after_s))
        return 10.3

    failover.add_detection(results, trial=2, detected=detected)
    assert asked == [("node3", "node2", 10.05)]  # trial 2's timeline with a takeover, nothing else
    assert [t.detected_s for t in results.timelines] == [None, 10.3, None]
