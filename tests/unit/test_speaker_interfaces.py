"""choose_interfaces: on which interfaces a service IP is announced (pure rule, no root)."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface

import pytest

from raylb.actors.speaker.interfaces import Announcements, Link, choose_interfaces


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


class RecordingResponder:
    """The part of Responder that Announcements drives, in memory."""

    def __init__(self) -> None:
        self.opened: dict[str, frozenset[object]] = {}
        self.held: set[tuple[object, str]] = set()

    def open_interface(self, name: str, *, local_addresses: object = ()) -> None:
        self.opened[name] = frozenset(local_addresses)  # type: ignore[arg-type]

    def close_interface(self, name: str) -> None:
        self.opened.pop(name, None)
        self.held = {(ip, n) for ip, n in self.held if n != name}

    def interfaces(self) -> dict[str, str]:
        return {name: "02:18:00:00:00:0b" for name in self.opened}

    def gain(self, ip: object, name: str) -> bool:
        self.held.add((ip, name))
        return True

    def lose(self, ip: object, name: str) -> None:
        self.held.discard((ip, name))

    def reannounce(self, ip: object, name: str) -> bool:
        return (ip, name) in self.held

    def where(self, ip: object) -> tuple[str, ...]:
        return tuple(sorted(n for i, n in self.held if i == ip))

    def owned(self) -> set[tuple[object, str]]:
        return set(self.held)


def test_links_are_read_on_change_not_per_announced_ip() -> None:
    reads: list[int] = []
    current = [LINKS]

    def read() -> list[Link]:
        reads.append(1)
        return current[0]

    responder = RecordingResponder()
    announcements = Announcements(responder, links=read)  # type: ignore[arg-type]
    vips = [ip_address(int(ip_address("198.18.0.0")) + n) for n in range(128, 256)]
    v6 = [ip_address(int(ip_address("2001:db8:18::1:0")) + n) for n in range(3000)]
    for vip in [*vips, *v6]:
        announcements.announce(vip)
    assert len(reads) == 1, "links were read again for an announced IP"
    assert announcements.placement()[v6[-1]] == ("eth0",)
    assert announcements.placement()[ip_address("198.18.0.201")] == ("eth0", "eth1")
    announcements.withdraw(v6[0])
    assert v6[0] not in announcements.placement() and len(reads) == 1
    # eth0 goes down: one read (what the netlink watcher does on the event) moves everything
    current[0] = [link("eth0", "198.18.0.11/24", up=False), LINKS[2]]
    announcements.reconcile()
    assert len(reads) == 2
    moved = {ip_address(f"198.18.0.{n}"): ("eth1",) for n in range(192, 256) if n != 200}  # .200 is eth1's own
    assert announcements.placement() == moved
