"""raylb.admission: the trust rules on their own, one refusal reason per case."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from raylb import admission, wire

NOW_NS = 1_800_000_000 * 10**9
SKEW_NS = int(admission.MAX_CLOCK_SKEW_S * 1e9)


@dataclass
class Peer:
    incarnation: int | None = 100
    seq: int | None = 7
    alive: bool = True
    dead_since_s: float | None = None
    fenced_at_s: float | None = None


def datagram(node: str = "b", *, sent_ns: int = NOW_NS, incarnation: int = 100) -> wire.Datagram:
    return wire.Datagram(kind=wire.HEARTBEAT, node=node, incarnation=incarnation, seq=8, sent_ns=sent_ns)


@pytest.mark.parametrize(
    ("sent", "listed", "listed_address", "address", "reason"),
    [
        (datagram(), True, "198.18.0.12", "198.18.0.12", None),
        (datagram("a"), False, None, "198.18.0.11", admission.OWN_NAME),  # checked before the node list
        (datagram("z"), False, None, "198.18.0.12", admission.UNKNOWN_NODE),
        (datagram(), True, "198.18.0.12", "198.18.0.99", admission.WRONG_SOURCE),
        (datagram(), True, None, "198.18.0.12", admission.WRONG_SOURCE),  # listed without an address yet
        (datagram(sent_ns=NOW_NS - SKEW_NS - 1), True, "198.18.0.12", "198.18.0.12", admission.STALE),
        (datagram(sent_ns=NOW_NS + SKEW_NS + 1), True, "198.18.0.12", "198.18.0.12", admission.STALE),
        (datagram(incarnation=wire.U64_MAX), True, "198.18.0.12", "198.18.0.12", admission.STALE),
        (datagram(incarnation=NOW_NS + SKEW_NS), True, "198.18.0.12", "198.18.0.12", None),
    ],
)
def test_screen(sent: wire.Datagram, listed: bool, listed_address: str | None, address: str, reason: str | None) -> None:
    got = admission.screen(sent, self_name="a", listed=listed, listed_address=listed_address, wall_ns=NOW_NS,
                           address=address)  # fmt: skip
    assert got == reason


@pytest.mark.parametrize(
    ("peer", "incarnation", "seq", "leave", "reason"),
    [
        (Peer(incarnation=None, seq=None), 5, 1, False, None),  # first contact
        (Peer(), 101, 1, False, None),  # a newer process, whatever its sequence number
        (Peer(), 99, 50, False, admission.STALE),  # an older process while the newer one lives
        (Peer(alive=False, dead_since_s=10.0 - admission.FENCE_S), 99, 50, False, None),  # dead for long enough
        (Peer(alive=False, dead_since_s=9.5), 99, 50, False, admission.STALE),
        (Peer(), 100, 7, False, admission.REPLAYED),
        (Peer(), 100, 6, False, admission.REPLAYED),
        (Peer(), 100, 8, False, None),
        (Peer(fenced_at_s=9.0), 100, 8, False, admission.STALE),  # a heartbeat sent before the goodbye
        (Peer(fenced_at_s=9.0), 100, 8, True, None),  # the goodbye repeated
        (Peer(fenced_at_s=10.0 - admission.FENCE_S), 100, 8, False, None),  # kept running long after it
    ],
)
def test_refusal(peer: Peer, incarnation: int, seq: int, leave: bool, reason: str | None) -> None:
    assert admission.refusal(peer, incarnation=incarnation, seq=seq, now_s=10.0, leave=leave) == reason
