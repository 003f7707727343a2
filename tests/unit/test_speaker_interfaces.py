"""choose_interfaces: on which interfaces a service IP is announced (pure rule, no root)."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface

import pytest

from raylb.actors.speaker.interfaces import Link, choose_interfaces


def link(name: str, *addresses: str, **flags: bool) -> Link:
    return Link(
        name=name,
        index=abs(hash(name)) % 1000,
        mac="02:18:00:00:00:0b",
        up=flags.get("up", True),
        noarp=flags.get("noarp", False),
        loopback=flags.get("loopback", False),
        enslaved=flags.get("enslaved", False),
        addresses=tuple(ip_interface(a) for a in addresses),
    )


LINKS = [
    link("lo", "127.0.0.1/8", "::1/128", loopback=True),
    link("eth0", "198.18.0.11/24", "2001:db8:18::11/64", "fe80::1/64"),
    link("eth1", "198.18.0.200/26"),  # a second NIC whose subnet (.192-.255) holds only some VIPs
    link("eth2", "198.18.0.12/24", up=False),
    link("tun0", "198.18.0.13/24", noarp=True),
    link("veth-port", "198.18.0.14/24", enslaved=True),
]


@pytest.mark.parametrize(
    ("vip", "named", "expected"),
    [
        ("198.18.0.130", None, ("eth0",)),  # inside eth0's /24, outside eth1's /26
        ("198.18.0.201", None, ("eth0", "eth1")),
        ("2001:db8:18::1:10", None, ("eth0",)),
        ("2001:db8:19::10", None, ()),  # no interface's subnet holds it
        ("198.18.0.130", ["eth1"], ("eth1",)),  # named interfaces win over subnets
        ("198.18.0.130", ["eth2", "tun0", "veth-port", "lo"], ()),  # named but unusable
        ("198.18.0.130", ["eth9"], ()),  # named but absent
        ("198.18.0.11", None, ()),  # the node's own address is never announced
        ("198.18.0.11", ["eth0"], ()),
    ],
)
def test_choose_interfaces(vip: str, named: list[str] | None, expected: tuple[str, ...]) -> None:
    assert choose_interfaces(ip_address(vip), LINKS, named=named) == expected


def test_subnet_match_uses_the_prefix_length() -> None:
    wide = link("eth1", "198.18.0.200/25")  # .128-.255
    assert choose_interfaces(ip_address("198.18.0.130"), [wide]) == ("eth1",)
    assert choose_interfaces(ip_address("198.18.0.127"), [wide]) == ()


@pytest.mark.parametrize("flag", ["noarp", "loopback", "enslaved"])
def test_unusable_links_are_skipped(flag: str) -> None:
    bad = link("eth5", "198.18.0.11/24", **{flag: True})
    assert not bad.usable
    assert choose_interfaces(ip_address("198.18.0.130"), [bad]) == ()


def test_down_link_is_skipped_and_chosen_again_when_up() -> None:
    down = link("eth0", "198.18.0.11/24", up=False)
    up = link("eth0", "198.18.0.11/24")
    assert choose_interfaces(ip_address("198.18.0.130"), [down]) == ()
    assert choose_interfaces(ip_address("198.18.0.130"), [up]) == ("eth0",)
