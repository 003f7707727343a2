"""The client-side outage arithmetic of cluster/lab/failover_probe.py (pure, no network)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raylb.cluster.lab.failover_probe import Outage, Sample, check_lab_vip, outages, served_by, summary, takeover


def series(spec: str, *, start_s: float = 10.0, interval_s: float = 0.01) -> list[Sample]:
    """'aa..bb' -> samples every interval: a letter = success served by node<letter>, '.' = failure."""
    return [
        Sample(t=round(start_s + i * interval_s, 6), ok=c != ".", node=None if c == "." else f"node{c}")
        for i, c in enumerate(spec)
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("aaaa", []),
        ("aa...bb", [(10.01, 10.05, 3, "nodea", "nodeb")]),
        ("a.a..b", [(10.0, 10.02, 1, "nodea", "nodea"), (10.02, 10.05, 2, "nodea", "nodeb")]),
        ("...aa..", []),  # failures at the edges have no success on one side: not (yet) outages
    ],
)
def test_outages_are_runs_of_failures_between_two_successes(spec: str, expected: list[tuple]) -> None:  # type: ignore[type-arg]
    found = [(round(o.start_s, 6), round(o.end_s, 6), o.failed, o.before, o.after) for o in outages(series(spec))]
    assert found == expected


@pytest.mark.parametrize(
    ("spec", "event_index", "expected"),
    [
        # kill at sample 2: last success before is #2, first success of another node is #7
        ("aaa....bbb", 2, (10.02, 10.07, 4, "nodea", "nodeb")),
        # clean handover: the old node serves on, then the new one; the gap is one interval
        ("aaaaaabbbb", 2, (10.05, 10.06, 0, "nodea", "nodeb")),
        # the longest gap in the window counts, wherever it is
        ("aa..a...ab", 1, (10.04, 10.08, 5, "nodea", "nodeb")),
    ],
)
def test_takeover_measures_from_the_last_success_before_to_the_new_node(
    spec: str, event_index: int, expected: tuple  # type: ignore[type-arg]
) -> None:
    samples = series(spec)
    outage = takeover(samples, event_s=samples[event_index].t)
    assert outage is not None
    assert (round(outage.start_s, 6), round(outage.end_s, 6), outage.failed, outage.before, outage.after) == expected


@pytest.mark.parametrize("spec", ["aaa....", "aaa..aa", "....bbb"])
def test_no_takeover_without_another_node_serving_after_the_event(spec: str) -> None:
    samples = series(spec)
    event = samples[2].t if spec[0] != "." else samples[0].t - 1
    assert takeover(samples, event_s=event) is None


@given(st.text(alphabet="ab.", min_size=2, max_size=60), st.integers(min_value=0, max_value=59))
def test_takeover_never_exceeds_the_window_and_is_never_negative(spec: str, index: int) -> None:
    samples = series(spec)
    event = samples[min(index, len(samples) - 1)].t
    outage = takeover(samples, event_s=event)
    if outage is None:
        return
    assert 0 < outage.duration_s
    assert outage.start_s >= max(s.t for s in samples if s.ok and s.t <= event)
    assert outage.after is not None and outage.before is not None


def test_summary_counts_and_lists_outages() -> None:
    out = summary(series("aa..b"))
    assert out["samples"] == 5 and out["ok"] == 3 and out["failed"] == 2
    assert out["nodes"] == ["nodea", "nodeb"]
    assert out["outages"] == [Outage(10.01, 10.04, 2, "nodea", "nodeb").as_dict()]


@pytest.mark.parametrize("vip", ["10.0.0.1", "198.19.0.1", "2001:db8:19::1", "8.8.8.8"])
def test_the_prober_refuses_addresses_outside_the_lab(vip: str) -> None:
    with pytest.raises(ValueError, match="outside the lab"):
        check_lab_vip(vip)


@pytest.mark.parametrize("vip", ["198.18.0.130", "2001:db8:18::1:10"])
def test_the_prober_accepts_lab_vips(vip: str) -> None:
    assert str(check_lab_vip(vip)) == vip


@pytest.mark.parametrize(
    ("response", "node"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nX-Raylb-Node: node1\r\n\r\nnode1", "node1"),
        (b"HTTP/1.0 200 OK\r\n\r\nnode2", "node2"),  # no length given: the body up to EOF
        # the server died between its headers and its body: a failure, not "served by nobody"
        (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", None),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nnod", None),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n", None),  # headers cut short
        (b"HTTP/1.0 503 Unavailable\r\nContent-Length: 5\r\n\r\nnode1", None),
        (b"", None),
        (b"garbage", None),
        # the in-cluster backend says which pod and node served (the node is the announcer with
        # externalTrafficPolicy Local)
        (b'HTTP/1.1 200 OK\r\nContent-Length: 55\r\n\r\n{"client":"198.18.0.4","node":"node3","pod":"bench-x"}\n', "node3"),
        (b'HTTP/1.1 200 OK\r\n\r\n{"pod":"bench-x"}', None),
        (b'HTTP/1.1 200 OK\r\n\r\n{"node": "node1"', None),
    ],
)
def test_only_a_complete_200_response_names_the_serving_node(response: bytes, node: str | None) -> None:
    assert served_by(response) == node
