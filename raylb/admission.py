"""Whether a membership datagram may change anything: the trust rules, as pure functions.

Anything on the node network can send to the speakers' heartbeat port, so nothing it sends
may change who is alive unless a speaker sent it:

- every datagram carries an HMAC with the cluster's membership key (raylb.wire,
  raylb.keyring); the speaker drops the rest as "malformed" or "unauthenticated";
- `screen` then refuses, before any peer's state is touched: a node not in the node list
  the speaker was given (the snapshot, built by the operator from Ray's node table) -
  "unknown_node", so unknown names cost a counter and nothing else; a datagram not from the
  address the node list gives that node - "wrong_source"; one sent more than
  MAX_CLOCK_SKEW_S from the receiver's wall clock, or whose incarnation (the sender's start
  time) lies beyond that clock plus the skew - "stale", so 2**64-1 is refused rather than
  winning for ever;
- `refusal` judges it against what that node's processes sent before: an older process
  while its newer one is heard, or a heartbeat of a process that said goodbye - "stale"; a
  sequence number not above the last accepted one of that process - "replayed".

raylb.membership counts each refusal in `Membership.drops` by reason; none changes who is
alive. A holder of the key (every speaker node) can still lie; the key keeps out everyone else.
"""

from __future__ import annotations

from typing import Protocol

from raylb import wire

# How long a goodbye (or a death) fences old incarnations. Datagrams do not linger on a LAN
# for seconds, so after this any incarnation is believed again; this only matters if a
# node's clock stepped back between two speaker starts (incarnations then go down).
FENCE_S = 2.0
# How far a sender's wall clock may be from the receiver's. A datagram sent (`sent_ns`) further
# in the past or future than this is stale, and so is an incarnation (a start time) later than
# the receiver's clock plus this: nobody can take the top of the number space, and a captured
# datagram is useless once this old. Nodes keep NTP time (skews of milliseconds); 5 s forgives
# a node whose clock is being corrected. A node whose clock is off by more is dead to its peers
# (counted as "stale" in every peer's status), never able to overrule them.
MAX_CLOCK_SKEW_S = 5.0
_SKEW_NS = int(MAX_CLOCK_SKEW_S * 1e9)

# Why a datagram was dropped (the speaker adds "malformed" and "unauthenticated" from raylb.wire).
UNKNOWN_NODE = "unknown_node"  # not in the node list this speaker was given
WRONG_SOURCE = "wrong_source"  # not from the address the node list gives for that node
STALE = "stale"  # sent too long ago, a start time in the future, or an older process
REPLAYED = "replayed"  # not newer than the last datagram accepted from that process
OWN_NAME = "own_name"  # claims to come from this speaker


class PeerRecord(Protocol):
    """What the receiver remembers of one node's processes (raylb.membership keeps it)."""

    incarnation: int | None
    seq: int | None
    alive: bool
    dead_since_s: float | None
    fenced_at_s: float | None  # when the current incarnation said goodbye


def screen(
    datagram: wire.Datagram, *, self_name: str, listed: bool, listed_address: str | None, wall_ns: int,
    address: str | None,
) -> str | None:  # fmt: skip
    """Why a datagram that arrived from `address` at the receiver's wall-clock time `wall_ns`
    must be refused before it touches any peer's state (None: it may). `listed`: its node is
    in the receiver's node list, at `listed_address`."""
    if datagram.node == self_name:
        return OWN_NAME
    if not listed:
        return UNKNOWN_NODE
    if listed_address is None or address != listed_address:
        return WRONG_SOURCE
    if abs(datagram.sent_ns - wall_ns) > _SKEW_NS or datagram.incarnation > wall_ns + _SKEW_NS:
        return STALE
    return None


def refusal(p: PeerRecord, *, incarnation: int, seq: int | None, now_s: float, leave: bool) -> str | None:
    """Why a datagram of process `incarnation` (sequence `seq`; a goodbye when `leave`) must
    not change what `p` says of its node (None: it may)."""
    if p.incarnation is None or incarnation > p.incarnation:
        return None  # first contact, or a newer process on that node
    if incarnation < p.incarnation:
        # An older process: only believed once the newer one has been dead for a while
        # (a clock that stepped back gives a restarted speaker a smaller incarnation).
        fenced_long = not p.alive and p.dead_since_s is not None and now_s - p.dead_since_s >= FENCE_S
        return None if fenced_long else STALE
    if seq is not None and p.seq is not None and seq <= p.seq:
        return REPLAYED  # a duplicate, reordered, or replayed datagram
    if p.fenced_at_s is not None and not leave and now_s - p.fenced_at_s < FENCE_S:
        # Said goodbye: a heartbeat of that incarnation is one sent before the goodbye,
        # unless the process evidently kept running long after it.
        return STALE
    return None
