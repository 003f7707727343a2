"""The failover picture: a PNG that shows exactly the trials it was given."""

from __future__ import annotations

from pathlib import Path

from raylb.cluster.lab.failover_probe import Sample, takeover
from raylb.cluster.lab.failover_plot import Timeline, plot_png, read_trials

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def client_view(*, event_s: float, gap_s: float, before: str, after: str) -> tuple[Sample, ...]:
    """Requests every 10 ms: `before` answers until the failure, nobody for `gap_s`, then `after`."""
    samples = []
    for i in range(200):
        t = event_s - 0.5 + i * 0.01
        if t <= event_s:
            samples.append(Sample(t, True, before))
        elif t < event_s + gap_s:
            samples.append(Sample(t, False))
        else:
            samples.append(Sample(t, True, after))
    return tuple(samples)


def test_the_plot_is_a_png_with_every_trial(tmp_path: Path) -> None:
    timelines = []
    for trial, (family, victim, after, gap_s) in enumerate(
        [("ipv4", "node1", "node2", 0.31), ("ipv6", "node1", "node3", 0.35), ("ipv4", "node2", "node1", 0.29)], start=1
    ):
        samples = client_view(event_s=100.0, gap_s=gap_s, before=victim, after=after)
        outage = takeover(samples, event_s=100.0)
        timelines.append(Timeline(trial=trial, family=family, mode="kill", victim=victim, vip="198.18.0.224",
                                  event_s=100.0, samples=samples, outage=outage, detected_s=100.3))  # fmt: skip
    path = plot_png(timelines, tmp_path / "failover.png", title="test")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    trials = read_trials(path)
    assert [(t["trial"], t["family"], t["victim"], t["after"]) for t in trials] == [
        (1, "ipv4", "node1", "node2"), (2, "ipv6", "node1", "node3"), (3, "ipv4", "node2", "node1"),
    ]  # fmt: skip
    assert all(t["detected_after_s"] == 0.3 for t in trials)
    assert [t["first_new_answer_after_s"] for t in trials] == [0.31, 0.35, 0.29]  # the first request after the gap
    assert 0.3 <= trials[0]["outage_s"] <= 0.33


def test_a_trial_without_takeover_is_drawn_too(tmp_path: Path) -> None:
    samples = tuple(Sample(100.0 - 0.2 + i * 0.01, i < 20, "node1" if i < 20 else None) for i in range(60))
    path = plot_png([Timeline(trial=1, family="ipv6", mode="link", victim="node1", vip="2001:db8:18::1:100",
                          event_s=100.0, samples=samples, outage=None)], tmp_path / "none.png", title="t")  # fmt: skip
    assert read_trials(path)[0]["outage_s"] is None
