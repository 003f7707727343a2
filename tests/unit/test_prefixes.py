"""raylb.prefixes: a bounded cover of prefixes over a set of addresses."""

from __future__ import annotations

from ipaddress import collapse_addresses, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb import prefixes as pfx


def net(prefix: pfx.Prefix) -> str:
    return str(ip_network(prefix))


def v4(text: str) -> int:
    return int(ip_address(text))


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        ([], []),
        (["198.18.0.1"], ["198.18.0.1/32"]),
        ([f"198.18.0.{n}" for n in range(128, 192)], ["198.18.0.128/26"]),
        ([f"198.18.0.{n}" for n in range(1, 9)], ["198.18.0.1/32", "198.18.0.2/31", "198.18.0.4/30", "198.18.0.8/32"]),
        (["198.18.0.7", "198.18.0.6", "198.18.0.7"], ["198.18.0.6/31"]),  # unordered, repeated
        (["0.0.0.0", "255.255.255.255"], ["0.0.0.0/32", "255.255.255.255/32"]),
    ],
)
def test_collapse(addresses: list[str], expected: list[str]) -> None:
    assert [net(p) for p in pfx.collapse([v4(a) for a in addresses], bits=32)] == expected


@pytest.mark.parametrize(
    ("addresses", "max_prefixes", "expected"),
    [
        # the closest pair merges first; the isolated address keeps its /32
        (["198.18.0.1", "198.18.0.3", "198.18.0.200"], 2, ["198.18.0.0/30", "198.18.0.200/32"]),
        (["198.18.0.1", "198.18.0.3", "198.18.0.200"], 1, ["198.18.0.0/24"]),
        # a supernet swallows the blocks between the pair it merges
        (["198.18.0.0", "198.18.0.2", "198.18.0.5", "198.18.0.7", "198.18.9.0"], 2, ["198.18.0.0/29", "198.18.9.0/32"]),
        (["198.18.0.1"], 1, ["198.18.0.1/32"]),
    ],
)
def test_coarsen_merges_the_closest_neighbours(addresses: list[str], max_prefixes: int, expected: list[str]) -> None:
    assert [net(p) for p in pfx.cover([v4(a) for a in addresses], bits=32, max_prefixes=max_prefixes)] == expected


def test_coarsen_refuses_a_zero_budget() -> None:
    with pytest.raises(ValueError, match="max_prefixes=0"):
        pfx.coarsen([(v4("198.18.0.1"), 32)], bits=32, max_prefixes=0)


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.sets(st.integers(0, 1 << 16), max_size=300),
    max_prefixes=st.integers(1, 64),
    bits=st.sampled_from([32, 128]),
)
def test_cover_holds_every_address_within_the_budget_and_disjoint(offsets: set[int], max_prefixes: int, bits: int) -> None:
    base = v4("198.18.0.0") if bits == 32 else int(ip_address("2001:db8:18::"))
    addresses = {base + o for o in offsets}
    cover = pfx.cover(addresses, bits=bits, max_prefixes=max_prefixes)
    assert len(cover) <= max_prefixes
    assert all(any(pfx.contains(p, a, bits=bits) for p in cover) for a in addresses)
    for a, b in zip(cover, cover[1:]):
        assert pfx.last(a, bits=bits) < b[0], "prefixes overlap or are out of order"
    for network, length in cover:
        assert network % pfx.size((network, length), bits=bits) == 0, "unaligned prefix"


@settings(max_examples=200, deadline=None)
@given(offsets=st.sets(st.integers(0, 1 << 12), max_size=200))
def test_collapse_is_exactly_the_set_as_the_standard_library_says(offsets: set[int]) -> None:
    addresses = [ip_address(v4("198.18.0.0") + o) for o in offsets]
    expected = [(int(n.network_address), n.prefixlen) for n in collapse_addresses(addresses)]
    assert pfx.collapse([int(a) for a in addresses], bits=32) == expected
