"""Address entries and pools: the checked, frozen form the allocator works on.

A pool's `addresses` field mixes three spellings (as MetalLB accepts them):

- a single IP:        ``198.18.0.10`` or ``2001:db8:18::10``
- a CIDR:             ``198.18.0.64/26``; host bits may be set (``172.20.0.100/24`` means
                      172.20.0.0/24), as MetalLB parses it with Go's net.ParseCIDR
- an inclusive range: ``198.18.0.10-198.18.0.20`` (spaces around the dash allowed)

Each becomes one `AddressRange`: first and last address, both inclusive, one family.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from raylb.selectors import LabelSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, order=True)
class AddressRange:
    """An inclusive run of addresses of one family."""

    first: IPAddress
    last: IPAddress

    def __post_init__(self) -> None:
        if self.first.version != self.last.version:
            raise ValueError(f"range {self.first}-{self.last} mixes IPv4 and IPv6")
        if int(self.first) > int(self.last):
            raise ValueError(f"range start {self.first} is after its end {self.last}")

    @property
    def version(self) -> int:
        return self.first.version

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        return ip.version == self.version and int(self.first) <= int(ip) <= int(self.last)

    def overlaps(self, other: AddressRange) -> bool:
        return (
            self.version == other.version
            and int(self.first) <= int(other.last)
            and int(other.first) <= int(self.last)
        )

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def parse_address_entry(text: str) -> AddressRange:
    """Parse one entry of a pool's `addresses`; raise ValueError saying what is wrong."""
    entry = text.strip()
    if not entry:
        raise ValueError("empty address entry")
    if "/" in entry:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ValueError(f"invalid CIDR {entry!r}: {exc}") from None
        _check_plain(network.network_address, entry)
        return AddressRange(network.network_address, network.broadcast_address)
    if "-" in entry:
        start_text, _, end_text = entry.partition("-")
        try:
            start = ipaddress.ip_address(start_text.strip())
        except ValueError:  # "not-an-ip": a dash does not make a range
            raise ValueError(f"invalid address {entry!r}: not an IP address, a CIDR or a FIRST-LAST range") from None
        try:
            end = ipaddress.ip_address(end_text.strip())
        except ValueError:
            raise ValueError(f"invalid range {entry!r}: the end {end_text.strip()!r} is not an IP address") from None
        if start.version != end.version:
            raise ValueError(f"invalid range {entry!r}: start and end are of different IP families")
        _check_plain(start, entry)
        _check_plain(end, entry)
        if int(start) > int(end):
            raise ValueError(f"invalid range {entry!r}: start {start} is after end {end}")
        return AddressRange(start, end)
    try:
        ip = ipaddress.ip_address(entry)
    except ValueError:
        raise ValueError(f"invalid address {entry!r}: not an IP address, a CIDR or a FIRST-LAST range") from None
    _check_plain(ip, entry)
    return AddressRange(ip, ip)


def _check_plain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, entry: str) -> None:
    """Refuse what Python parses but no Service can hold (Go's parser, and so MetalLB, refuses
    the scope; it reads a mapped address as the IPv4 address it is, which would be counted twice)."""
    if ip.version == 6 and ip.scope_id:  # type: ignore[union-attr]
        raise ValueError(f"invalid address {entry!r}: a scoped IPv6 address (%{ip.scope_id}) cannot be a Service IP")  # type: ignore[union-attr]
    if ip.version == 6 and ip.ipv4_mapped is not None:  # type: ignore[union-attr]
        raise ValueError(f"invalid address {entry!r}: an IPv4-mapped IPv6 address; write the IPv4 address {ip.ipv4_mapped}")  # type: ignore[union-attr]


@dataclass(frozen=True)
class ServiceAllocation:
    """Which services a pool prefers (IPAddressPool spec.serviceAllocation)."""

    priority: int = 0  # lower number = tried first, as in MetalLB; 0 means "no priority"
    namespaces: frozenset[str] = frozenset()
    namespace_selectors: tuple[LabelSelector, ...] = ()
    service_selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True)
class Pool:
    """A checked pool: a name, its address ranges, and how it may be used."""

    name: str
    ranges: tuple[AddressRange, ...]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    allocation: ServiceAllocation | None = None
    kind: str = field(default="IPAddressPool", compare=False)  # which CR it came from

    def __contains__(self, ip: object) -> bool:
        return any(ip in r for r in self.ranges)
