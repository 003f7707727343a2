"""A bounded set of prefixes that covers a set of addresses: what the kernel filter matches.

The responder's kernel filter (raylb.bpf) must fit in 4 096 classic BPF instructions, however
many IPs a node owns. So it does not test the owned IPs one by one; it tests a list of
prefixes that covers them:

- `collapse` turns the owned addresses into the fewest aligned blocks that hold exactly them
  (198.18.0.128..191 is one /26). VIPs come from pools, which are ranges, so a node that owns
  a whole pool costs a handful of prefixes.
- `coarsen` caps the count: while there are more than `max_prefixes`, it merges the two
  neighbouring blocks whose smallest common supernet is smallest (and swallows whatever else
  lies inside it). The cover then holds some addresses the node does not own; those are
  always next to owned ones (inside the same pool, in practice), and Python checks exact
  ownership. Traffic for addresses far from every owned one - an unrelated flood - is still
  dropped in the kernel.

Everything here works on integers (`int(ip)`) and a width in bits (32 or 128), so the same
code serves IPv4 and IPv6 and stays cheap: a cover of 10 000 addresses takes milliseconds.
A prefix is `(network, length)`: the addresses whose top `length` bits equal `network`'s.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

Prefix = tuple[int, int]  # (network as an integer, prefix length)


def size(prefix: Prefix, *, bits: int) -> int:
    return 1 << (bits - prefix[1])


def last(prefix: Prefix, *, bits: int) -> int:
    return prefix[0] + size(prefix, bits=bits) - 1


def contains(prefix: Prefix, address: int, *, bits: int) -> bool:
    return prefix[0] <= address <= last(prefix, bits=bits)


def collapse(addresses: Iterable[int], *, bits: int) -> list[Prefix]:
    """The fewest aligned blocks holding exactly `addresses`, sorted by network."""
    out: list[Prefix] = []
    ordered = sorted(set(addresses))
    i = 0
    while i < len(ordered):
        start = end = ordered[i]
        while i + 1 < len(ordered) and ordered[i + 1] == end + 1:
            i += 1
            end = ordered[i]
        i += 1
        while start <= end:  # largest aligned block at `start` that stays inside the run
            span = (start & -start).bit_length() - 1 if start else bits
            while span and start + (1 << span) - 1 > end:
                span -= 1
            out.append((start, bits - span))
            start += 1 << span
    return out


def supernet(a: Prefix, b: Prefix, *, bits: int) -> Prefix:
    """The smallest prefix holding both `a` and `b`."""
    length = min(a[1], b[1], bits - (a[0] ^ b[0]).bit_length())
    mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
    return (a[0] & mask, length)


def coarsen(prefixes: list[Prefix], *, bits: int, max_prefixes: int) -> list[Prefix]:
    """At most `max_prefixes` (>= 1) disjoint prefixes covering every prefix given.

    `prefixes` must be sorted and disjoint (as `collapse` returns them). Greedy: always merge
    the neighbouring pair with the smallest common supernet, so the extra addresses covered
    stay as few as the merges allow and isolated addresses keep their own /32 or /128.
    """
    if max_prefixes < 1:
        raise ValueError(f"max_prefixes={max_prefixes}: must be at least 1")
    if len(prefixes) <= max_prefixes:
        return list(prefixes)
    blocks: dict[int, Prefix] = dict(enumerate(prefixes))  # id -> prefix, ids in address order
    left = {i: i - 1 for i in blocks}
    right = {i: i + 1 for i in blocks}
    right[len(prefixes) - 1] = -1
    # (supernet size, left id, left prefix, right prefix): entries whose sides changed are stale
    heap: list[tuple[int, int, Prefix, Prefix]] = []

    def push(i: int) -> None:
        j = right[i] if i >= 0 else -1
        if j >= 0:
            merged = supernet(blocks[i], blocks[j], bits=bits)
            heapq.heappush(heap, (size(merged, bits=bits), i, blocks[i], blocks[j]))

    for i in range(len(prefixes) - 1):
        push(i)
    while len(blocks) > max_prefixes and heap:
        _, i, was_i, was_j = heapq.heappop(heap)
        j = right.get(i, -1)
        if i not in blocks or j < 0 or (blocks[i], blocks[j]) != (was_i, was_j):
            continue  # stale: one side changed since this pair was pushed
        merged = supernet(blocks[i], blocks[j], bits=bits)
        blocks[i] = merged
        # swallow j and every further neighbour inside the supernet (aligned blocks never straddle it)
        for step in (right, left):
            k = step[i]
            while k >= 0 and contains(merged, blocks[k][0], bits=bits):
                nxt = step[k]
                del blocks[k]
                step[i] = nxt
                if nxt >= 0:
                    (left if step is right else right)[nxt] = i
                k = nxt
        push(left[i])
        push(i)
    return [blocks[i] for i in sorted(blocks, key=lambda i: blocks[i][0])]


def cover(addresses: Iterable[int], *, bits: int, max_prefixes: int) -> list[Prefix]:
    """`collapse`, then `coarsen` to at most `max_prefixes`."""
    return coarsen(collapse(addresses, bits=bits), bits=bits, max_prefixes=max_prefixes)
