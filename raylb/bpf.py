"""Classic BPF socket filters for the responders, as data: lists of (code, jt, jf, k).

An AF_PACKET socket sees every frame of its ethertype on the link. Under an ARP flood that is
tens of thousands of frames a second; waking Python for each would cost a core. The kernel runs
these filters before the frame is queued, so only what the responder must answer reaches it:

- `arp_request_filter`: ARP requests (IPv4 over Ethernet), optionally only those whose target
  IP is in a given set (the IPs this node owns on the interface).
- `neighbor_solicitation_filter`: IPv6 Neighbor Solicitations (no extension headers, hop limit
  255), optionally only those whose target is in a given set.

Both drop frames the socket's own host sent (packet type OUTGOING). With no targets they accept
every request, so the responder can listen before it owns anything; the responder re-attaches a
new program whenever the owned set changes. Past `MAX_TARGETS_*` the target test is left out
(classic BPF programs are limited to 4096 instructions, BPF_MAXINSNS) and Python filters.

The layout is that of linux/filter.h; offsets are from the start of the Ethernet header.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable

Instruction = tuple[int, int, int, int]

# instruction classes and modes (linux/bpf_common.h)
BPF_LD, BPF_JMP, BPF_RET = 0x00, 0x05, 0x06
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_ABS = 0x20
BPF_JEQ = 0x10
BPF_K = 0x00

LD_W_ABS = BPF_LD | BPF_W | BPF_ABS
LD_H_ABS = BPF_LD | BPF_H | BPF_ABS
LD_B_ABS = BPF_LD | BPF_B | BPF_ABS
JEQ_K = BPF_JMP | BPF_JEQ | BPF_K
RET_K = BPF_RET | BPF_K

# Ancillary load: skb->pkt_type (linux/filter.h SKF_AD_OFF + SKF_AD_PKTTYPE)
SKF_AD_OFF = -0x1000 & 0xFFFFFFFF
SKF_AD_PKTTYPE = 4
PACKET_OUTGOING = 4  # linux/if_packet.h

ACCEPT_BYTES = 0x40000  # "keep the whole frame"; the kernel caps it at the frame length
MAX_INSTRUCTIONS = 4096  # BPF_MAXINSNS

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

ARP_TARGET_INSNS = 2
NS_TARGET_INSNS = 9
_PREFIX_MAX = 20  # instructions before the target tests, upper bound for both programs
MAX_TARGETS_ARP = (MAX_INSTRUCTIONS - _PREFIX_MAX) // ARP_TARGET_INSNS
MAX_TARGETS_NS = (MAX_INSTRUCTIONS - _PREFIX_MAX) // NS_TARGET_INSNS


def _require(program: list[Instruction], *, code: int, k: int, value: int) -> None:
    """Load with `code` at `k`, and drop unless it equals `value` (jumps stay local)."""
    program.append((code, 0, 0, k))
    program.append((JEQ_K, 1, 0, value))
    program.append((RET_K, 0, 0, 0))


def _not_outgoing(program: list[Instruction]) -> None:
    program.append((LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_PKTTYPE) & 0xFFFFFFFF))
    program.append((JEQ_K, 0, 1, PACKET_OUTGOING))
    program.append((RET_K, 0, 0, 0))


def arp_request_filter(targets: Iterable[ipaddress.IPv4Address] | None = None) -> list[Instruction]:
    """Accept inbound ARP requests (IPv4 over Ethernet), only for `targets` when given."""
    program: list[Instruction] = []
    _not_outgoing(program)
    _require(program, code=LD_H_ABS, k=OFF_ETHERTYPE, value=0x0806)
    _require(program, code=LD_W_ABS, k=OFF_ARP_FIXED, value=ARP_FIXED_IPV4_ETHERNET)
    _require(program, code=LD_H_ABS, k=OFF_ARP_HLEN_PLEN, value=ARP_HLEN_PLEN)
    _require(program, code=LD_H_ABS, k=OFF_ARP_OP, value=1)
    wanted = sorted(set(targets)) if targets is not None else None
    if wanted is None or len(wanted) > MAX_TARGETS_ARP:
        program.append((RET_K, 0, 0, ACCEPT_BYTES))
        return program
    program.append((LD_W_ABS, 0, 0, OFF_ARP_TPA))
    for ip in wanted:
        program.append((JEQ_K, 0, 1, int(ip)))
        program.append((RET_K, 0, 0, ACCEPT_BYTES))
    program.append((RET_K, 0, 0, 0))
    return program


def neighbor_solicitation_filter(targets: Iterable[ipaddress.IPv6Address] | None = None) -> list[Instruction]:
    """Accept inbound ICMPv6 Neighbor Solicitations, only for `targets` when given."""
    program: list[Instruction] = []
    _not_outgoing(program)
    _require(program, code=LD_H_ABS, k=OFF_ETHERTYPE, value=0x86DD)
    _require(program, code=LD_B_ABS, k=OFF_IPV6_NEXT_HEADER, value=58)
    _require(program, code=LD_B_ABS, k=OFF_IPV6_HOP_LIMIT, value=255)
    _require(program, code=LD_B_ABS, k=OFF_ICMPV6_TYPE, value=ICMPV6_NS)
    wanted = sorted(set(targets)) if targets is not None else None
    if wanted is None or len(wanted) > MAX_TARGETS_NS:
        program.append((RET_K, 0, 0, ACCEPT_BYTES))
        return program
    for ip in wanted:
        words = struct.unpack("!4I", ip.packed)
        block_end = NS_TARGET_INSNS - 1  # index of this block's accept
        for i, word in enumerate(words):
            program.append((LD_W_ABS, 0, 0, OFF_NS_TARGET + 4 * i))
            here = 2 * i + 1  # index of the jeq inside the block
            program.append((JEQ_K, 0, block_end - here, word))
        program.append((RET_K, 0, 0, ACCEPT_BYTES))
    program.append((RET_K, 0, 0, 0))
    return program


def pack(program: list[Instruction]) -> bytes:
    """The program as the array of struct sock_filter the kernel expects."""
    if not 0 < len(program) <= MAX_INSTRUCTIONS:
        raise ValueError(f"BPF program of {len(program)} instructions; allowed 1..{MAX_INSTRUCTIONS}")
    return b"".join(struct.pack("HBBI", code, jt, jf, k) for code, jt, jf, k in program)
