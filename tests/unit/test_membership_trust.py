"""Who may change a speaker's view of who is alive: only holders of the membership key,
from their own address, with fresh datagrams. Whole SpeakerCores on the fake network of
tests/unit/test_speaker_edges.py; an attacker writes into a speaker's inbox directly, as a
host on the node network can (spoofing any source address it likes)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raylb import keyring, wire
from raylb.keyring import KeySet, plan_keys
from raylb.admission import MAX_CLOCK_SKEW_S
from raylb.membership import DEAD_AFTER_S
from tests.unit.test_speaker_core import ADDRESSES, KEY, LOOP_S, NODES, VIPS, converged, expected, make_snapshot
from tests.unit.test_speaker_edges import FORGER_KEY, SETTLE_S, Lan

ATTACKER = "198.18.0.99"  # a host on the node network that is not a node
NEW_KEY = b"the key after the rotation, 32b"
VICTIM = expected(VIPS[0], NODES)  # announces VIPS[0]
OBSERVER = next(n for n in NODES if n != VICTIM)
SECOND_S = 1_000_000_000


def settled() -> Lan:
    lan = Lan()
    lan.push(make_snapshot())
    lan.run(SETTLE_S)
    converged(lan)
    return lan


def incarnation_of(lan: Lan, node: str) -> int:
    return lan.speakers[node].membership.incarnation


def datagram(
    lan: Lan, *, kind: int = wire.LEAVE, node: str = VICTIM, key: bytes = KEY, incarnation: int | None = None,
    seq: int = 2**40, sent_ns: int | None = None,
) -> bytes:  # fmt: skip
    """A datagram as `node`'s current process would send it (with `key`), fields overridable."""
    return wire.encode(
        wire.Datagram(
            kind=kind, node=node, incarnation=incarnation_of(lan, node) if incarnation is None else incarnation,
            seq=seq, sent_ns=time.time_ns() if sent_ns is None else sent_ns,
        ),
        key=key,
    )


def replay(lan: Lan) -> bytes:
    """A heartbeat the victim really sent, some time ago."""
    return lan.transports[VICTIM].sent[0][0]


# (what arrives, from which address) -> the one drop reason the observer counts.
DROPS: dict[str, tuple[Callable[[Lan], bytes], str, str]] = {
    "junk": (lambda lan: b"GET / HTTP/1.1\r\n\r\n", ATTACKER, "malformed"),
    "an old-format (version 1) goodbye": (lambda lan: b"RLBm\x01\x02\x00\x05" + b"\0" * 24 + b"node1", ATTACKER, "malformed"),
    "a goodbye signed with another key": (lambda lan: datagram(lan, key=FORGER_KEY), VICTIM, "unauthenticated"),
    "a goodbye with its tag cut off": (lambda lan: datagram(lan)[:-16], VICTIM, "malformed"),
    "a genuine heartbeat replayed": (replay, VICTIM, "replayed"),
    "a goodbye sent 10 s ago": (
        lambda lan: datagram(lan, sent_ns=time.time_ns() - int(2 * MAX_CLOCK_SKEW_S * SECOND_S)), VICTIM, "stale"),
    "a goodbye from 10 s in the future": (
        lambda lan: datagram(lan, sent_ns=time.time_ns() + int(2 * MAX_CLOCK_SKEW_S * SECOND_S)), VICTIM, "stale"),
    "a goodbye of incarnation 2**64-1": (lambda lan: datagram(lan, incarnation=wire.U64_MAX), VICTIM, "stale"),
    "a goodbye of an older process": (lambda lan: datagram(lan, incarnation=0), VICTIM, "stale"),
    "a goodbye from another node's address": (lambda lan: datagram(lan), "198.18.0.13" if VICTIM != "node3" else "198.18.0.12", "wrong_source"),
    "a goodbye from a non-node address": (lambda lan: datagram(lan), ATTACKER, "wrong_source"),
    "a heartbeat of an unknown node": (lambda lan: datagram(lan, kind=wire.HEARTBEAT, node="ghost", incarnation=1), ATTACKER, "unknown_node"),
    "a goodbye in the observer's own name": (lambda lan: datagram(lan, node=OBSERVER), VICTIM, "own_name"),
}  # fmt: skip


@pytest.mark.parametrize(("make", "source", "reason"), DROPS.values(), ids=DROPS.keys())
def test_each_refused_datagram_is_counted_by_reason_and_moves_nothing(
    make: Callable[[Lan], bytes], source: str, reason: str
) -> None:
    lan = settled()
    before = lan.speakers[OBSERVER].status()
    lan.network.inboxes[ADDRESSES[OBSERVER]].append((make(lan), ADDRESSES.get(source, source)))
    lan.step()
    after = lan.speakers[OBSERVER].status()
    assert after["drops"] == {reason: 1}
    assert after["alive"] == list(NODES) and after["owned"] == before["owned"]
    lan.run(SETTLE_S)
    converged(lan)


def test_the_control_a_signed_fresh_goodbye_from_the_right_address_is_believed() -> None:
    """Proves the rows above are refused for their reason, not for something they share."""
    lan = settled()
    lan.network.inboxes[ADDRESSES[OBSERVER]].append((datagram(lan), ADDRESSES[VICTIM]))
    lan.step()
    status = lan.speakers[OBSERVER].status()
    assert status["drops"] == {} and status["peers"][VICTIM]["reason"] == "leave"


def test_20000_unknown_names_leave_the_peer_table_at_the_node_list_and_elect_nothing() -> None:
    lan = settled()
    speaker = lan.speakers[OBSERVER]
    elections = speaker.status()["counts"]["elections"]
    for i in range(20_000):
        name = f"forged-{i}"
        data = datagram(lan, kind=wire.HEARTBEAT, node=name, incarnation=1, seq=1)
        lan.network.inboxes[ADDRESSES[OBSERVER]].append((data, ATTACKER))
        if i % 500 == 499:
            lan.now_s += LOOP_S
            lan.step()
    lan.run(SETTLE_S)
    status = speaker.status()
    assert len(speaker.membership.view(lan.now_s)) == len(NODES) - 1
    assert status["drops"] == {"unknown_node": 20_000}
    assert status["counts"]["elections"] == elections
    converged(lan)


def test_forged_and_replayed_heartbeats_do_not_delay_the_death_of_a_dead_node() -> None:
    lan = settled()
    captured = [d for d, _ in lan.transports[VICTIM].sent]
    lan.stopped.add(VICTIM)  # killed
    died_at = None
    start = lan.now_s
    for i in range(round(2 * DEAD_AFTER_S / LOOP_S)):
        inbox = lan.network.inboxes[ADDRESSES[OBSERVER]]
        inbox.append((captured[i % len(captured)], ADDRESSES[VICTIM]))
        inbox.append((datagram(lan, kind=wire.HEARTBEAT, seq=2**41 + i, key=FORGER_KEY), ADDRESSES[VICTIM]))
        inbox.append((datagram(lan, kind=wire.HEARTBEAT, seq=2**41 + i, incarnation=wire.U64_MAX), ADDRESSES[VICTIM]))
        lan.now_s += LOOP_S
        lan.step()
        if died_at is None and VICTIM not in lan.speakers[OBSERVER].status()["alive"]:
            died_at = lan.now_s
    assert died_at is not None and died_at - start <= DEAD_AFTER_S + 3 * LOOP_S
    converged(lan, [n for n in NODES if n != VICTIM])


# ------------------------------------------------------------------------- key rotation


def reports(lan: Lan) -> dict[str, dict]:
    return {n: lan.speakers[n].status()["keys"] for n in NODES}


def test_rotating_the_key_in_two_steps_causes_no_failover_and_retires_the_old_key() -> None:
    lan = settled()
    lan.checks.append(lambda: converged(lan))  # after every step: nobody died, nothing moved
    step1 = plan_keys(NEW_KEY, previous=[KEY], reports=reports(lan))
    assert step1.sign is None  # nobody accepts the new key yet: keep signing with the old one
    for name in NODES[:2]:  # the operator reaches two speakers in this round, the third later
        lan.speakers[name].set_keys(step1, now_s=lan.now_s)
    lan.run(SETTLE_S)
    lan.speakers[NODES[2]].set_keys(step1, now_s=lan.now_s)
    step2 = plan_keys(NEW_KEY, previous=[KEY], reports=reports(lan))
    assert step2 == KeySet(accept=(NEW_KEY,), sign=NEW_KEY)
    lan.speakers[NODES[0]].set_keys(step2, now_s=lan.now_s)  # one signs with the new key first
    lan.run(SETTLE_S)
    for name in NODES[1:]:
        lan.speakers[name].set_keys(step2, now_s=lan.now_s)
    lan.run(keyring.KEY_GRACE_S + SETTLE_S)  # past the grace period: the old key is gone
    assert all(r == {"sign": keyring.fingerprint(NEW_KEY), "accept": [keyring.fingerprint(NEW_KEY)], "retiring": {}}
               for r in reports(lan).values())  # fmt: skip
    lan.network.inboxes[ADDRESSES[OBSERVER]].append((datagram(lan, key=KEY), ADDRESSES[VICTIM]))
    lan.step()
    assert lan.speakers[OBSERVER].status()["drops"] == {"unauthenticated": 1}


def test_the_control_signing_with_a_key_the_peers_do_not_accept_is_a_failover() -> None:
    """What the two steps prevent: a speaker switched alone to a new key is dead to its peers."""
    lan = settled()
    lan.speakers[VICTIM].set_keys(KeySet(accept=(NEW_KEY,), sign=NEW_KEY), now_s=lan.now_s)
    lan.run(SETTLE_S)
    assert VICTIM not in lan.speakers[OBSERVER].status()["alive"]


# ------------------------------------------------------------------------- the invariant

NAMES = st.sampled_from([*NODES, "ghost", "a" * 253])
SOURCES = st.sampled_from([*ADDRESSES.values(), ATTACKER])


@st.composite
def forgeries(draw: st.DrawFn) -> tuple[str, object]:
    """What an attacker without the key can send: junk, datagrams under its own key (any
    fields, any claimed sender), genuine datagrams cut short, or genuine ones replayed."""
    kind = draw(st.sampled_from(["junk", "forged", "truncated", "replayed"]))
    if kind == "junk":
        return kind, draw(st.binary(max_size=320))
    if kind == "forged":
        kind_number = draw(st.sampled_from(wire.KINDS))
        fields = wire.Datagram(
            kind=kind_number, node=draw(NAMES),
            subject=draw(NAMES) if kind_number == wire.ALERT else None,
            incarnation=draw(st.integers(0, 3) | st.just(wire.U64_MAX) | st.just(time.time_ns())),
            seq=draw(st.integers(0, 5) | st.just(wire.U64_MAX)), snapshot_version=draw(st.integers(0, wire.U64_MAX)),
            sent_ns=time.time_ns() + draw(st.integers(-10 * SECOND_S, 10 * SECOND_S)),
        )  # fmt: skip
        return kind, wire.encode(fields, key=draw(st.sampled_from([FORGER_KEY, KEY[:-1], KEY + b"x"])))
    return kind, draw(st.integers(0, 10_000))  # which captured datagram to cut or replay


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(forgeries(), SOURCES, st.sampled_from(NODES)), min_size=1, max_size=40))
def test_no_sequence_of_datagrams_sent_without_the_key_changes_who_is_alive(attack: list) -> None:
    lan = settled()
    lan.checks.append(lambda: converged(lan))
    for (kind, payload), source, target in attack:
        captured = [d for t in lan.transports.values() for d, _ in t.sent]
        if kind == "truncated":
            data = captured[payload % len(captured)][: -1 - payload % 20]
        elif kind == "replayed":
            data = captured[payload % len(captured)]
        else:
            data = payload
        lan.network.inboxes[ADDRESSES[target]].append((data, source))
        lan.now_s += LOOP_S
        lan.step()
        for name in NODES:
            assert lan.speakers[name].status()["alive"] == list(NODES)
    assert sum(sum(lan.speakers[n].status()["drops"].values()) for n in NODES) == len(attack)
