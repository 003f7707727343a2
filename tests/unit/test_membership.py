"""The speakers' failure detector, driven with explicit time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb import admission
from raylb import membership as mb
from raylb import wire
from raylb.membership import Changes, Membership

INTERVAL = mb.HEARTBEAT_INTERVAL_S
DEAD = mb.DEAD_AFTER_S
STEP = INTERVAL / 2  # how often the speaker ticks
KEY = b"membership-key-of-the-unit-tests"
WALL_NS = 1_800_000_000_000_000_000  # the receiver's wall clock in these tests


def fresh(now_s: float = 0.0, **kwargs) -> Membership:
    m = Membership("a", now_s=now_s, incarnation=100, **kwargs)
    m.set_peers({"b": "198.18.0.12", "c": "198.18.0.13"}, now_s=now_s)
    return m


def run(m: Membership, *, start_s: float, end_s: float, beating: set[str], incarnation: int = 1) -> tuple[Changes, float]:
    """Tick every STEP from start to end while `beating` peers heartbeat every INTERVAL."""
    changes = Changes()
    t = start_s
    seq = int(start_s * 1000)
    next_beat = start_s
    while t <= end_s + 1e-9:
        if t >= next_beat:
            for peer in sorted(beating):
                seq += 1
                changes |= m.on_heartbeat(peer, incarnation=incarnation, seq=seq, now_s=t)
            next_beat += INTERVAL
        changes |= m.tick(t)
        t = round(t + STEP, 6)
    return changes, t


def test_defaults_meet_the_failover_budget() -> None:
    # detection (<= DEAD) + one tick must leave room under the 0.5 s p50 target
    assert DEAD + STEP <= 0.35
    assert round(DEAD / INTERVAL) >= 6  # a false death needs six lost or late heartbeats


def test_alone_only_self_is_alive() -> None:
    assert fresh().alive() == {"a"}


def test_a_peer_is_alive_from_its_first_heartbeat() -> None:
    m = fresh()
    assert m.on_heartbeat("b", incarnation=1, now_s=0.01) == Changes(joined=frozenset({"b"}))
    assert m.alive() == {"a", "b"}
    assert not m.on_heartbeat("b", incarnation=1, now_s=0.06)  # nothing new


def test_an_unlisted_peer_that_heartbeats_costs_a_counter_and_nothing_else() -> None:
    m = fresh()
    for i in range(1000):
        assert not m.on_heartbeat(f"z{i}", incarnation=1, now_s=0.01)
        assert not m.on_leave(f"z{i}", incarnation=1, now_s=0.01)
    assert m.alive() == {"a"}
    assert set(m.view(0.01)) == {"b", "c"}  # the peer table holds the node list only
    assert m.drops == {admission.UNKNOWN_NODE: 2000}


def test_silence_kills_after_dead_after_s_and_not_before() -> None:
    m = fresh()
    _, t0 = run(m, start_s=0.0, end_s=1.0, beating={"b", "c"})
    m.on_heartbeat("b", incarnation=1, seq=10**6, now_s=t0)  # b's last heartbeat
    t, died_at = t0, None
    while died_at is None:
        t = round(t + STEP, 6)
        m.on_heartbeat("c", incarnation=1, seq=10**6 + int(t * 1000), now_s=t)  # c keeps going
        if m.tick(t).died:
            died_at = t
    assert DEAD < died_at - t0 <= DEAD + STEP
    assert m.alive() == {"a", "c"}
    assert m.view(t)["b"].reason == mb.TIMEOUT
    assert m.view(t)["b"].silent_for_s == pytest.approx(died_at - t0)


def test_a_peer_heartbeating_with_jitter_never_dies() -> None:
    m = fresh()
    changes, _ = run(m, start_s=0.0, end_s=5.0, beating={"b", "c"})
    assert not changes.died


def test_leave_kills_at_once_and_fences_the_incarnation() -> None:
    m = fresh()
    m.on_heartbeat("b", incarnation=1, seq=5, now_s=0.0)
    assert m.on_leave("b", incarnation=1, seq=6, now_s=0.02) == Changes(died=frozenset({"b"}))
    assert m.view(0.02)["b"].reason == mb.LEAVE
    # a heartbeat sent before the goodbye but delivered after it
    assert not m.on_heartbeat("b", incarnation=1, seq=4, now_s=0.03)
    # even one with a higher sequence number: that process said it is going away
    assert not m.on_heartbeat("b", incarnation=1, seq=7, now_s=0.05)
    assert "b" not in m.alive()
    # the restarted speaker (newer incarnation) is believed on its first heartbeat
    assert m.on_heartbeat("b", incarnation=2, seq=1, now_s=0.5) == Changes(joined=frozenset({"b"}), revived=frozenset({"b"}))


def test_a_leave_of_an_older_incarnation_is_ignored() -> None:
    m = fresh()
    m.on_heartbeat("b", incarnation=2, seq=1, now_s=0.0)
    assert not m.on_leave("b", incarnation=1, now_s=0.01)
    assert "b" in m.alive()


def test_a_restart_is_accepted_at_once_and_the_old_process_is_ignored() -> None:
    m = fresh()
    m.on_heartbeat("b", incarnation=1, seq=50, now_s=0.0)
    assert not m.on_heartbeat("b", incarnation=2, seq=1, now_s=0.05)  # still alive, now incarnation 2
    assert m.view(0.05)["b"].incarnation == 2
    assert not m.on_heartbeat("b", incarnation=1, seq=51, now_s=0.06)
    assert m.view(0.06)["b"].incarnation == 2


@pytest.mark.parametrize(
    ("dead_for_s", "accepted"),
    [(admission.FENCE_S / 2, False), (admission.FENCE_S, True)],
)
def test_an_older_incarnation_is_believed_only_after_the_fence(dead_for_s: float, accepted: bool) -> None:
    # A node whose clock stepped back gives its restarted speaker a smaller incarnation.
    m = fresh()
    m.on_heartbeat("b", incarnation=10, seq=1, now_s=0.0)
    m.on_leave("b", incarnation=10, seq=2, now_s=0.1)
    t = 0.1
    while t < 0.1 + dead_for_s:
        t = round(t + STEP, 6)
        m.tick(t)
    assert bool(m.on_heartbeat("b", incarnation=3, seq=1, now_s=t)) is accepted


def test_duplicates_and_reordered_heartbeats_do_not_keep_a_peer_alive() -> None:
    m = fresh()
    m.on_heartbeat("b", incarnation=1, seq=10, now_s=0.0)
    t, died = 0.0, Changes()
    while t < 1.0:
        t = round(t + STEP, 6)
        m.on_heartbeat("b", incarnation=1, seq=10, now_s=t)  # the same datagram replayed
        m.on_heartbeat("b", incarnation=1, seq=3, now_s=t)  # an old one
        died |= m.tick(t)
    assert died.died == {"b"}


def test_ray_signal_kills_at_once_but_a_newer_heartbeat_revives() -> None:
    m = fresh()
    m.on_heartbeat("b", incarnation=1, seq=1, now_s=0.0)
    assert m.on_ray_node_dead("b", now_s=0.01) == Changes(died=frozenset({"b"}))
    assert m.view(0.01)["b"].reason == mb.RAY
    assert not m.on_heartbeat("b", incarnation=1, seq=1, now_s=0.02)  # a duplicate proves nothing
    assert m.on_heartbeat("b", incarnation=1, seq=2, now_s=0.05) == Changes(joined=frozenset({"b"}), revived=frozenset({"b"}))
    assert not m.on_ray_node_dead("zz", now_s=0.06)  # unknown: nothing to do
    assert not m.on_ray_node_dead("a", now_s=0.06)  # never ourselves


def test_a_peer_dead_by_timeout_comes_back_with_its_next_heartbeat() -> None:
    m = fresh()
    _, t = run(m, start_s=0.0, end_s=0.2, beating={"b"})
    changes, t = run(m, start_s=t, end_s=t + 1.0, beating=set())
    assert changes.died == {"b"}
    # link back up: the same process keeps heartbeating with higher sequence numbers
    assert m.on_heartbeat("b", incarnation=1, seq=10**6, now_s=t) == Changes(joined=frozenset({"b"}), revived=frozenset({"b"}))


def test_own_stall_does_not_kill_peers() -> None:
    m = fresh()
    m.on_heartbeat("b", incarnation=1, seq=1, now_s=0.0)
    m.tick(0.02)
    # we were descheduled for a second; b's heartbeats queued up unread
    assert not m.tick(1.02)
    assert m.on_heartbeat("b", incarnation=1, seq=2, now_s=1.03) == Changes()
    assert not m.tick(1.05)
    assert "b" in m.alive()


def test_own_stall_delays_a_real_death_by_two_intervals_only() -> None:
    m = fresh()
    m.on_heartbeat("b", incarnation=1, seq=1, now_s=0.0)
    m.tick(0.02)
    assert not m.tick(1.02)
    t = 1.02
    while not m.tick(t):
        t = round(t + STEP / 5, 6)
    assert t == pytest.approx(1.02 + mb.STALL_GRACE_INTERVALS * INTERVAL, abs=STEP / 5 + 1e-9)


def test_self_heartbeats_are_ignored_and_goodbye_removes_self() -> None:
    m = fresh()
    assert not m.on_heartbeat("a", incarnation=999, now_s=0.0)
    assert not m.on_leave("a", incarnation=999, now_s=0.0)
    assert "a" in m.alive()
    hb = m.make_heartbeat(snapshot_version=4)
    assert (hb.kind, hb.node, hb.incarnation, hb.seq, hb.snapshot_version) == (wire.HEARTBEAT, "a", 100, 1, 4)
    assert m.make_heartbeat().seq == 2
    leave = m.make_leave()
    assert (leave.kind, leave.seq) == (wire.LEAVE, 3)
    assert "a" not in m.alive()
    with pytest.raises(RuntimeError, match="said goodbye"):
        m.make_heartbeat()


def test_datagrams_drive_the_same_machine() -> None:
    sender = Membership("b", now_s=0.0, incarnation=7)
    m = fresh()
    hb = wire.decode(wire.encode(sender.make_heartbeat(snapshot_version=12, sent_ns=WALL_NS), key=KEY), keys=(KEY,))
    assert m.on_datagram(hb, now_s=0.01, wall_ns=WALL_NS, address="198.18.0.12") == Changes(joined=frozenset({"b"}))
    assert m.newest_snapshot_version == 12
    bye = wire.decode(wire.encode(sender.make_leave(sent_ns=WALL_NS), key=KEY), keys=(KEY,))
    assert m.on_datagram(bye, now_s=0.02, wall_ns=WALL_NS, address="198.18.0.12") == Changes(died=frozenset({"b"}))


def test_targets_are_listed_peers_with_an_address_dead_or_alive() -> None:
    m = Membership("a", now_s=0.0)
    m.set_peers({"a": "198.18.0.11", "b": "198.18.0.12", "c": None}, now_s=0.0)
    assert m.targets() == {"b": "198.18.0.12"}
    m.on_heartbeat("b", incarnation=1, now_s=0.01)
    m.set_peers({"c": "198.18.0.13"}, now_s=0.02)  # b unlisted: no longer a target, not killed by that
    assert m.targets() == {"c": "198.18.0.13"}
    assert "b" in m.alive()
    died = Changes()
    for i in range(1, 20):  # its datagrams are refused now: it falls silent
        died |= m.tick(0.02 + i * STEP)
    assert died == Changes(died=frozenset({"b"}))
    assert set(m.view(1.0)) == {"c"}  # and once dead it is forgotten


def test_ready_after_hearing_every_listed_peer() -> None:
    m = fresh()
    assert not m.ready(0.0)
    m.on_heartbeat("b", incarnation=1, now_s=0.01)
    assert not m.ready(0.01)
    m.on_heartbeat("c", incarnation=1, now_s=0.02)
    assert m.ready(0.02)


def test_ready_after_listening_for_dead_after_s() -> None:
    m = fresh()
    m.on_heartbeat("b", incarnation=1, now_s=0.01)  # c never speaks
    assert not m.ready(DEAD - 0.01)
    assert m.ready(DEAD)


def test_ready_with_no_peer_list_waits_the_whole_window_and_then_stays_ready() -> None:
    m = Membership("a", now_s=5.0)
    assert not m.ready(5.0)
    assert m.ready(5.0 + DEAD)
    m.set_peers({"b": "198.18.0.12"}, now_s=6.0)
    assert m.ready(6.0)


def test_next_deadline() -> None:
    m = fresh()
    assert m.next_deadline_s() is None
    m.on_heartbeat("b", incarnation=1, now_s=0.1)
    m.on_heartbeat("c", incarnation=1, now_s=0.2)
    assert m.next_deadline_s() == pytest.approx(0.1 + DEAD)


@pytest.mark.parametrize(
    ("interval", "dead", "message"),
    [(0.0, 0.3, "heartbeat_interval_s=0.0"), (0.1, 0.2, "dead_after_s=0.2: must be at least 3")],
)
def test_timings_are_checked(interval: float, dead: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Membership("a", now_s=0.0, heartbeat_interval_s=interval, dead_after_s=dead)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (Changes(died=frozenset({"b"})), Changes(joined=frozenset({"b"})), Changes(joined=frozenset({"b"}))),
        (Changes(joined=frozenset({"b"})), Changes(died=frozenset({"b"})), Changes(died=frozenset({"b"}))),
        (Changes(died=frozenset({"b"})), Changes(died=frozenset({"c"})), Changes(died=frozenset({"b", "c"}))),
        (Changes(), Changes(), Changes()),
    ],
)
def test_changes_combine_in_order(first: Changes, second: Changes, expected: Changes) -> None:
    assert first | second == expected
    assert bool(expected) == bool(expected.died or expected.joined)


# ------------------------------------------------------------------ state-machine properties

PEERS = ["b", "c", "d"]
events = st.lists(
    st.tuples(
        st.floats(0.0, 0.4),  # time advance before the event
        st.sampled_from(["heartbeat", "leave", "ray", "tick", "set_peers"]),
        st.sampled_from(PEERS + ["a"]),
        st.integers(1, 3),  # incarnation
        st.integers(0, 20),  # seq
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_changes_always_describe_the_alive_set(evs: list) -> None:
    m = Membership("a", now_s=0.0, incarnation=1)
    m.set_peers(PEERS, now_s=0.0)
    now = 0.0
    alive = m.alive()
    for advance, kind, peer, inc, seq in evs:
        now += advance
        if kind == "heartbeat":
            ch = m.on_heartbeat(peer, incarnation=inc, seq=seq, now_s=now)
        elif kind == "leave":
            ch = m.on_leave(peer, incarnation=inc, seq=seq, now_s=now)
        elif kind == "ray":
            ch = m.on_ray_node_dead(peer, now_s=now)
        elif kind == "tick":
            ch = m.tick(now)
        else:
            ch = m.set_peers([p for p in PEERS if p != peer], now_s=now)
        new = m.alive()
        assert "a" in new
        assert new == (alive - ch.died) | ch.joined
        assert not (ch.died & ch.joined)
        assert ch.died <= alive and not (ch.joined & alive)
        alive = new
        if kind == "tick":
            # after a tick, nobody alive has been silent longer than allowed (bar our own stall grace)
            for name, view in m.view(now).items():
                if view.alive and now >= m.grace_until_s:
                    assert view.silent_for_s is not None and view.silent_for_s <= DEAD


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, DEAD - INTERVAL), min_size=1, max_size=80), st.floats(0.0, 1.0))
def test_a_peer_with_gaps_shorter_than_dead_after_never_dies(gaps: list[float], start: float) -> None:
    m = Membership("a", now_s=start)
    m.set_peers(["b"], now_s=start)
    t = start
    m.on_heartbeat("b", incarnation=1, seq=0, now_s=t)
    for seq, gap in enumerate(gaps, start=1):
        target = t + gap
        while t + STEP < target:  # the speaker ticks regularly in between
            t += STEP
            assert not m.tick(t).died
        t = target
        m.on_heartbeat("b", incarnation=1, seq=seq, now_s=t)
        assert not m.tick(t).died
    assert "b" in m.alive()


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 100.0), st.floats(0.0, 0.2))
def test_a_silent_peer_dies_within_dead_after_plus_one_tick(start: float, alive_for: float) -> None:
    m = Membership("a", now_s=start)
    m.set_peers(["b"], now_s=start)
    t = start
    m.on_heartbeat("b", incarnation=1, seq=1, now_s=t)
    last = t
    while t < start + alive_for:
        t += INTERVAL
        m.on_heartbeat("b", incarnation=1, seq=int((t - start) * 1000) + 2, now_s=t)
        m.tick(t)
        last = t
    died_at = None
    while died_at is None:
        t += STEP
        if m.tick(t).died:
            died_at = t
    assert DEAD < died_at - last <= DEAD + STEP + 1e-9


def test_a_welcome_says_the_peer_had_us_dead_and_proves_it_alive() -> None:
    m = fresh()

    def arrive(incarnation: int, seq: int, now_s: float) -> Changes:
        welcome = wire.Datagram(kind=wire.WELCOME, node="b", incarnation=incarnation, seq=seq, sent_ns=WALL_NS)
        return m.on_datagram(welcome, now_s=now_s, wall_ns=WALL_NS, address="198.18.0.12")

    assert arrive(1, 3, 0.0) == Changes(joined=frozenset({"b"}), welcomed_by=frozenset({"b"}))
    assert arrive(1, 3, 0.01) == Changes(), "a second copy is a duplicate"
    assert arrive(1, 4, 0.02) == Changes(welcomed_by=frozenset({"b"}))
    assert arrive(0, 9, 0.03) == Changes(), "an older process of b is not believed"
    assert m.drops == {admission.REPLAYED: 1, admission.STALE: 1}


def test_only_a_peer_declared_dead_here_is_revived_when_heard_again() -> None:
    m = fresh()
    assert m.on_heartbeat("b", incarnation=1, seq=1, now_s=0.0).revived == frozenset()  # first contact
    m.on_ray_node_dead("b", now_s=0.01)
    assert m.on_heartbeat("b", incarnation=1, seq=2, now_s=0.02).revived == {"b"}
    assert m.make_welcome().kind == wire.WELCOME
