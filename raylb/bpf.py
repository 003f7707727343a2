"""Classic BPF socket filters for the responders, as data: lists of (code, jt, jf, k).

An AF_PACKET socket sees every frame of its ethertype on the link. Under an ARP flood that is
tens of thousands of frames a second; waking Python for each would cost a core. The kernel runs
these filters before the frame is queued, so only what the responder may have to answer
reaches it:

- `arp_request_filter`: ARP requests (IPv4 over Ethernet), optionally only those whose target
  IP lies in the prefixes covering a given set (the IPs this node owns on the interface).
- `neighbor_solicitation_filter`: IPv6 Neighbor Solicitations (no extension headers, hop limit
  255), likewise for IPv6 targets.

Both drop frames the socket's own host sent (packet type OUTGOING). With no target set they
accept every request, so the responder can listen before it owns anything; the responder
re-attaches a new program whenever the owned set changes.

Any number of targets, in the kernel. A classic program holds at most 4 096 instructions
(BPF_MAXINSNS), one test per target fits about 2 000 IPv4 or 450 IPv6 targets, and past that
the old filter let every request through to Python. Now the program tests a bounded cover of
prefixes (raylb.prefixes): the owned IPs collapsed into aligned blocks and, when there are too
many blocks for `budget` instructions, merged into the smallest supernets that fit. Python
then checks exact ownership (it always did). A node owning one pool costs a few prefixes; a
node owning 3 000 scattered IPs of a pool gets a cover slightly wider than what it owns, so
requests for its neighbours' VIPs in that pool reach Python and are dropped there, while a
flood for anything else is still dropped in the kernel.

The prefixes are matched as a search tree over 32-bit words: per word, the prefixes that end
in it are grouped by mask (`and`, then a binary search with `jge` over the sorted networks),
and the longer ones branch on the word's exact value into a subtree for the next word. A
frame costs about 2 log2(prefixes) instructions, not one per target. Jumps whose distance may
pass 255 (the 8-bit jt/jf) go through `ja`, whose offset is 32 bits.

Why not an eBPF hash map (exact match, any size)? It needs the bpf() syscall and CAP_BPF (or
CAP_SYS_ADMIN) on top of the CAP_NET_RAW the responder already has, a map to keep in sync
from Python, and a hand-assembled program the verifier accepts on every supported kernel.
Classic BPF needs nothing beyond the raw socket, and the cover keeps floods in the kernel.

The layout is that of linux/filter.h; offsets are from the start of the Ethernet header.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
from collections.abc import Iterable, Iterator

from raylb import prefixes as pfx

Instruction = tuple[int, int, int, int]

# instruction classes, sizes, modes and operations (linux/bpf_common.h)
BPF_LD, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x04, 0x05, 0x06
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_ABS = 0x20
BPF_AND = 0x50
BPF_JA, BPF_JEQ, BPF_JGE = 0x00, 0x10, 0x30
BPF_K = 0x00

LD_W_ABS = BPF_LD | BPF_W | BPF_ABS
LD_H_ABS = BPF_LD | BPF_H | BPF_ABS
LD_B_ABS = BPF_LD | BPF_B | BPF_ABS
AND_K = BPF_ALU | BPF_AND | BPF_K
JA = BPF_JMP | BPF_JA
JEQ_K = BPF_JMP | BPF_JEQ | BPF_K
JGE_K = BPF_JMP | BPF_JGE | BPF_K
RET_K = BPF_RET | BPF_K

# Ancillary load: skb->pkt_type (linux/filter.h SKF_AD_OFF + SKF_AD_PKTTYPE)
SKF_AD_OFF = -0x1000 & 0xFFFFFFFF
SKF_AD_PKTTYPE = 4
PACKET_OUTGOING = 4  # linux/if_packet.h

ACCEPT_BYTES = 0x40000  # "keep the whole frame"; the kernel caps it at the frame length
MAX_INSTRUCTIONS = 4096  # BPF_MAXINSNS
WORD_MASK = 0xFFFFFFFF
# Binary search down to this many values, then one jeq each: a leaf of 8 costs 10 instructions
# (8 jeq, the miss, the shared accept) and each tree level a jge and a ja, about 1.5 per value:
# 2 500 scattered IPv4 targets still fit exactly, and a frame runs about 2 log2(n / 8) + 8.
LEAF_VALUES = 8

# Offsets inside an untagged Ethernet frame
OFF_ETHERTYPE = 12
OFF_ARP_FIXED = 14  # htype(2) ptype(2) hlen(1) plen(1)
OFF_ARP_HLEN_PLEN = 18
OFF_ARP_OP = 20
OFF_ARP_TPA = 38
OFF_IPV6_NEXT_HEADER = 20
OFF_IPV6_HOP_LIMIT = 21
OFF_ICMPV6_TYPE = 54
OFF_NS_TARGET = 62

ARP_FIXED_IPV4_ETHERNET = 0x00010800  # htype 1, ptype 0x0800
ARP_HLEN_PLEN = 0x0604
ICMPV6_NS = 135
ICMPV6_NA = 136


def _require(program: list[Instruction], *, code: int, k: int, value: int) -> None:
    """Load with `code` at `k`, and drop unless it equals `value` (jumps stay local)."""
    program.append((code, 0, 0, k))
    program.append((JEQ_K, 1, 0, value))
    program.append((RET_K, 0, 0, 0))


def _not_outgoing(program: list[Instruction]) -> None:
    program.append((LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_PKTTYPE) & WORD_MASK))
    program.append((JEQ_K, 0, 1, PACKET_OUTGOING))
    program.append((RET_K, 0, 0, 0))


# ----------------------------------------------------------------------------- prefix matcher

_Code = list[object]  # Instruction, or ("ja", label), or ("label", label) before assembly


def _search(
    code: _Code, values: list[int], actions: list[object], fail: _Code, *, labels: Iterator[int]
) -> None:
    """Binary search of A over sorted `values`; on A == values[i] run actions[i] (one
    instruction: a return or a `ja`), else `fail` (one instruction)."""
    if len(values) <= LEAF_VALUES:
        if len(set(actions)) == 1:  # one action for all: every jeq jumps to it, past `fail`
            for i, value in enumerate(values):
                code.append((JEQ_K, len(values) - i, 0, value))
            code.extend(fail)
            code.append(actions[0])
            return
        for value, action in zip(values, actions):
            code.append((JEQ_K, 0, 1, value))
            code.append(action)
        code.extend(fail)
        return
    mid = len(values) // 2
    upper = next(labels)
    code.append((JGE_K, 0, 1, values[mid]))  # A >= middle: take the `ja` to the upper half
    code.append(("ja", upper))
    _search(code, values[:mid], actions[:mid], fail, labels=labels)
    code.append(("label", upper))
    _search(code, values[mid:], actions[mid:], fail, labels=labels)


def _level(
    code: _Code, prefixes: list[pfx.Prefix], *, offset: int, bits: int, depth: int, labels: Iterator[int]
) -> None:
    """Accept when the target (words at `offset`) lies in one of `prefixes`, else drop. All
    `prefixes` agree on the words before `depth` and are longer than 32 * depth bits."""
    word_shift = bits - 32 * (depth + 1)
    ending: dict[int, list[int]] = {}  # prefix length within this word -> networks' word values
    longer: dict[int, list[pfx.Prefix]] = {}  # this word's value -> the prefixes continuing
    for network, length in prefixes:
        word = (network >> word_shift) & WORD_MASK
        if length <= 32 * (depth + 1):
            ending.setdefault(length - 32 * depth, []).append(word)
        else:
            longer.setdefault(word, []).append((network, length))
    accept: Instruction = (RET_K, 0, 0, ACCEPT_BYTES)
    for within in sorted(ending, reverse=True):
        mask = (WORD_MASK << (32 - within)) & WORD_MASK
        next_group = next(labels)
        code.append((LD_W_ABS, 0, 0, offset + 4 * depth))
        if mask != WORD_MASK:
            code.append((AND_K, 0, 0, mask))
        values = sorted(set(ending[within]))
        _search(code, values, [accept] * len(values), [("ja", next_group)], labels=labels)
        code.append(("label", next_group))
    if not longer:
        code.append((RET_K, 0, 0, 0))
        return
    words = sorted(longer)
    subtrees = [next(labels) for _ in words]
    code.append((LD_W_ABS, 0, 0, offset + 4 * depth))
    _search(code, words, [("ja", label) for label in subtrees], [(RET_K, 0, 0, 0)], labels=labels)
    for word, label in zip(words, subtrees):
        code.append(("label", label))
        _level(code, longer[word], offset=offset, bits=bits, depth=depth + 1, labels=labels)


def _assemble(code: _Code, *, start: int) -> list[Instruction]:
    """Resolve labels: `ja` offsets count from the instruction after the jump."""
    where: dict[int, int] = {}
    pc = start
    for item in code:
        if isinstance(item, tuple) and item[0] == "label":
            where[item[1]] = pc  # type: ignore[index]
        else:
            pc += 1
    out: list[Instruction] = []
    pc = start
    for item in code:
        if isinstance(item, tuple) and item[0] == "label":
            continue
        if isinstance(item, tuple) and item[0] == "ja":
            out.append((JA, 0, 0, where[item[1]] - (pc + 1)))  # type: ignore[index]
        else:
            out.append(item)  # type: ignore[arg-type]
        pc += 1
    return out


def match_prefixes(prefixes: list[pfx.Prefix], *, offset: int, bits: int, start: int = 0) -> list[Instruction]:
    """Instructions that accept when the `bits`-bit target at `offset` lies in a prefix of the
    sorted, disjoint `prefixes` and drop otherwise; `start` is their index in the program."""
    if not prefixes:
        return [(RET_K, 0, 0, 0)]
    if prefixes[0][1] == 0:
        return [(RET_K, 0, 0, ACCEPT_BYTES)]
    code: _Code = []
    _level(code, prefixes, offset=offset, bits=bits, depth=0, labels=itertools.count())
    return _assemble(code, start=start)


def _with_targets(
    program: list[Instruction], targets: list[int] | None, *, offset: int, bits: int, budget: int
) -> list[Instruction]:
    """Append the target test to `program`: the cover of `targets` that fits `budget`."""
    if targets is None:
        return [*program, (RET_K, 0, 0, ACCEPT_BYTES)]
    cover = pfx.collapse(targets, bits=bits)
    while True:
        body = match_prefixes(cover, offset=offset, bits=bits, start=len(program))
        if len(program) + len(body) <= budget:
            return program + body
        if len(cover) == 1:  # cannot happen for budgets above ~50; never loop forever
            cover = [(0, 0)]
            continue
        # Shrink in proportion to the overshoot (and by at least one), then try again.
        wanted = max(1, min(len(cover) - 1, len(cover) * (budget - len(program)) // (len(body) + len(body) // 8)))
        cover = pfx.coarsen(cover, bits=bits, max_prefixes=wanted)


def arp_request_filter(
    targets: Iterable[ipaddress.IPv4Address] | None = None, *, budget: int = MAX_INSTRUCTIONS
) -> list[Instruction]:
    """Accept inbound ARP requests (IPv4 over Ethernet); with `targets`, only those whose
    target lies in a cover of them that fits in `budget` instructions."""
    program: list[Instruction] = []
    _not_outgoing(program)
    _require(program, code=LD_H_ABS, k=OFF_ETHERTYPE, value=0x0806)
    _require(program, code=LD_W_ABS, k=OFF_ARP_FIXED, value=ARP_FIXED_IPV4_ETHERNET)
    _require(program, code=LD_H_ABS, k=OFF_ARP_HLEN_PLEN, value=ARP_HLEN_PLEN)
    _require(program, code=LD_H_ABS, k=OFF_ARP_OP, value=1)
    wanted = None if targets is None else [int(ip) for ip in targets]
    return _with_targets(program, wanted, offset=OFF_ARP_TPA, bits=32, budget=budget)


def neighbor_solicitation_filter(
    targets: Iterable[ipaddress.IPv6Address] | None = None, *, budget: int = MAX_INSTRUCTIONS
) -> list[Instruction]:
    """Accept inbound ICMPv6 Neighbor Solicitations; with `targets`, only those whose target
    lies in a cover of them that fits in `budget` instructions."""
    program: list[Instruction] = []
    _not_outgoing(program)
    _require(program, code=LD_H_ABS, k=OFF_ETHERTYPE, value=0x86DD)
    _require(program, code=LD_B_ABS, k=OFF_IPV6_NEXT_HEADER, value=58)
    _require(program, code=LD_B_ABS, k=OFF_IPV6_HOP_LIMIT, value=255)
    _require(program, code=LD_B_ABS, k=OFF_ICMPV6_TYPE, value=ICMPV6_NS)
    wanted = None if targets is None else [int(ip) for ip in targets]
    return _with_targets(program, wanted, offset=OFF_NS_TARGET, bits=128, budget=budget)


def neighbor_advertisement_filter() -> list[Instruction]:
    """Accept inbound ICMPv6 Neighbor Advertisements (the lab client's side of resolution)."""
    program: list[Instruction] = []
    _not_outgoing(program)
    _require(program, code=LD_H_ABS, k=OFF_ETHERTYPE, value=0x86DD)
    _require(program, code=LD_B_ABS, k=OFF_IPV6_NEXT_HEADER, value=58)
    _require(program, code=LD_B_ABS, k=OFF_ICMPV6_TYPE, value=ICMPV6_NA)
    return [*program, (RET_K, 0, 0, ACCEPT_BYTES)]


def pack(program: list[Instruction]) -> bytes:
    """The program as the array of struct sock_filter the kernel expects."""
    if not 0 < len(program) <= MAX_INSTRUCTIONS:
        raise ValueError(f"BPF program of {len(program)} instructions; allowed 1..{MAX_INSTRUCTIONS}")
    return b"".join(struct.pack("HBBI", code, jt, jf, k) for code, jt, jf, k in program)
