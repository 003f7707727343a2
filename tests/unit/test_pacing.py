"""raylb.pacing: gratuitous announcements are fast but paced, driven with a fake clock."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb.pacing import ANNOUNCE_BURST, ANNOUNCE_RATE_PER_S, AnnouncementSchedule, TokenBucket

REPEATS, REPEAT_S = 3, 0.35
TICK_S = 0.001  # the fake clock's step: the responder loop wakes at least this often


def vips(count: int) -> list[IPv6Address]:
    return [IPv6Address(int(IPv6Address("2001:db8:18::1:0")) + n) for n in range(count)]


def drive(schedule: AnnouncementSchedule, *, until_s: float, start_s: float = 0.0) -> list[tuple[float, object, str]]:
    """Ask for due frames every tick from `start_s` to `until_s`; every frame with its time."""
    sent: list[tuple[float, object, str]] = []
    for step in range(round((until_s - start_s) / TICK_S) + 1):
        now_s = start_s + step * TICK_S
        sent.extend((now_s, ip, name) for ip, name in schedule.due(now_s))
    return sent


def takeover(count: int, *, interfaces: tuple[str, ...] = ("eth0",)) -> list[tuple[float, object, str]]:
    schedule = AnnouncementSchedule(repeats=REPEATS, repeat_interval_s=REPEAT_S)
    for ip in vips(count):
        for name in interfaces:
            schedule.announce(ip, name, now_s=0.0)
    return drive(schedule, until_s=3.0)


def test_token_bucket_lets_a_burst_out_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=1000, burst=10, now_s=0.0)
    assert sum(bucket.take(0.0) for _ in range(50)) == 10
    assert bucket.wait_s(0.0) == pytest.approx(0.001)
    assert sum(bucket.take(0.005) for _ in range(50)) == 5
    assert sum(bucket.take(10.0) for _ in range(50)) == 10  # never more than the burst stored
    assert not bucket.take(9.0)  # a clock stepping back adds nothing


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_token_bucket_refuses_nonsense(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="token bucket"):
        TokenBucket(rate_per_s=rate, burst=burst, now_s=0.0)


def test_a_takeover_of_3000_vips_tells_each_once_within_0_3_s() -> None:
    sent = takeover(3000)
    firsts: dict[object, float] = {}
    for t, ip, _ in sent:
        firsts.setdefault(ip, t)
    assert len(firsts) == 3000
    assert max(firsts.values()) <= 3000 / ANNOUNCE_RATE_PER_S + 0.001
    assert len(sent) == 3000 * (1 + REPEATS)  # and every repeat, later


@pytest.mark.parametrize("window_s", [0.001, 0.01, 0.1, 1.0])
def test_a_takeover_never_exceeds_the_rate_plus_one_burst_in_any_window(window_s: float) -> None:
    times = [t for t, _, _ in takeover(3000)]
    limit = ANNOUNCE_RATE_PER_S * window_s + ANNOUNCE_BURST
    for i, start in enumerate(times):
        j = i
        while j < len(times) and times[j] < start + window_s:
            j += 1
        assert j - i <= limit, f"{j - i} frames in {window_s} s from t={start}"


def test_every_vip_is_told_once_before_any_is_told_twice() -> None:
    sent = takeover(3000)
    seen: set[object] = set()
    for _, ip, _ in sent:
        if ip in seen:
            assert len(seen) == 3000, "a repeat went out before every first announcement"
            break
        seen.add(ip)


def test_repeats_keep_their_spacing_after_pacing() -> None:
    by_ip: dict[object, list[float]] = {}
    for t, ip, _ in takeover(3000):
        by_ip.setdefault(ip, []).append(t)
    for times in by_ip.values():
        assert len(times) == 1 + REPEATS
        assert all(b - a >= REPEAT_S - 1e-9 for a, b in zip(times, times[1:]))


def test_each_interface_has_its_own_bucket() -> None:
    sent = takeover(500, interfaces=("eth0", "eth1"))
    for name in ("eth0", "eth1"):
        firsts = [t for t, _, n in sent if n == name][:500]
        assert max(firsts) <= 500 / ANNOUNCE_RATE_PER_S + 0.001


def test_cancel_and_reannounce_drop_what_was_pending() -> None:
    schedule = AnnouncementSchedule(repeats=REPEATS, repeat_interval_s=REPEAT_S)
    a, b = vips(2)
    schedule.announce(a, "eth0", now_s=0.0)
    schedule.announce(b, "eth0", now_s=0.0)
    assert schedule.due(0.0) == [(a, "eth0"), (b, "eth0")]
    schedule.cancel(a, "eth0")
    schedule.announce(b, "eth0", now_s=0.1)  # b again: a fresh first, its old repeats dropped
    sent = drive(schedule, start_s=0.1, until_s=3.0)
    assert [(round(t, 3), ip) for t, ip, _ in sent] == [(0.1, b), (0.45, b), (0.8, b), (1.15, b)]
    assert schedule.next_s(3.0) is None and schedule.pending() == 0


def test_next_s_says_when_to_come_back() -> None:
    schedule = AnnouncementSchedule(repeats=1, repeat_interval_s=0.5, rate_per_s=100, burst=1)
    a, b = vips(2)
    assert schedule.next_s(0.0) is None
    schedule.announce(a, "eth0", now_s=0.0)
    schedule.announce(b, "eth0", now_s=0.0)
    assert schedule.due(0.0) == [(a, "eth0")]
    assert schedule.next_s(0.0) == pytest.approx(0.01)  # b waits for a token
    assert schedule.due(0.01) == [(b, "eth0")]
    assert schedule.next_s(0.01) == pytest.approx(0.49)  # a's repeat is due at 0.5


@settings(max_examples=30, deadline=None)
@given(
    count=st.integers(1, 200),
    rate=st.sampled_from([100.0, 1000.0, 10_000.0]),
    burst=st.integers(1, 50),
)
def test_pacing_invariant_for_any_takeover(count: int, rate: float, burst: int) -> None:
    """However many VIPs and whatever the rate: nothing lost, never above rate x t + burst."""
    schedule = AnnouncementSchedule(repeats=1, repeat_interval_s=0.05, rate_per_s=rate, burst=burst)
    for ip in vips(count):
        schedule.announce(ip, "eth0", now_s=0.0)
    # asked once per tick, a bucket smaller than a tick's worth lets out at most `burst` per tick
    effective_rate = min(rate, burst / TICK_S)
    sent = drive(schedule, until_s=2 * count / effective_rate + 0.2)
    assert len(sent) == 2 * count
    for k, (t, _, _) in enumerate(sent, start=1):
        assert k <= rate * t + burst + 1e-6
