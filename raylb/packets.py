"""ARP and IPv6 Neighbor Discovery frames as pure functions: bytes in, bytes out.

The speaker's responders answer "who has this service IP?" on raw sockets. Everything they
read or write on the wire is built and checked here, without I/O, so every rule about the
format is unit-tested without root and the responder stays a thin loop around a socket.

Frames are Ethernet II (14-byte header, no VLAN tag: AF_PACKET hands frames over untagged).

- ARP for IPv4 over Ethernet, RFC 826; announcements in the RFC 5227 form (a request whose
  sender and target IP are both the announced address).
- Neighbor Solicitation / Advertisement, RFC 4861 section 4.3/4.4, with the validity checks of
  section 7.1.1 (hop limit 255, code 0, checksum, length, option lengths, no source link-layer
  option from the unspecified address). A solicitation without a source link-layer option is
  valid (unicast reachability probes omit it) and is parsed, not rejected.

Parse errors raise `FrameError`, a `ValueError` whose `reason` is one short word the responder
uses as the label of its drop counter.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address

ETH_HEADER_LEN = 14
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

# RFC 826 / IANA ARP parameters: hardware type 1 = Ethernet, protocol 0x0800 = IPv4.
ARP_HTYPE_ETHERNET = 1
ARP_PTYPE_IPV4 = 0x0800
ARP_OP_REQUEST = 1
ARP_OP_REPLY = 2
ARP_LEN = 28  # 8 fixed bytes + 2 * (6-byte MAC + 4-byte IPv4)

IPV6_HEADER_LEN = 40
IPPROTO_ICMPV6 = 58
ND_HOP_LIMIT = 255  # RFC 4861 7.1.1: anything else may have crossed a router
ICMPV6_NS = 135
ICMPV6_NA = 136
ND_MSG_LEN = 24  # type, code, checksum, 4 bytes flags/reserved, 16-byte target
ND_OPT_SOURCE_LLADDR = 1
ND_OPT_TARGET_LLADDR = 2
NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20

UNSPECIFIED_V6 = IPv6("::")
ALL_NODES_V6 = IPv6("ff02::1")  # RFC 4291 2.7.1
SOLICITED_NODE_PREFIX = IPv6("ff02::1:ff00:0")  # RFC 4291 2.7.1, low 24 bits from the unicast


class FrameError(ValueError):
    """A frame that is not a valid ARP request / Neighbor Solicitation; `reason` labels the drop."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


# ---------------------------------------------------------------------------------------------
# Small helpers


def mac_bytes(mac: str | bytes) -> bytes:
    """'02:00:00:00:00:01' or 6 raw bytes -> 6 raw bytes."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError(f"MAC address must be 6 bytes, got {len(mac)}: {mac.hex()}")
        return mac
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"MAC address {mac!r} is not six colon-separated hex pairs")
    return bytes(int(p, 16) for p in parts)


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def solicited_node_address(ip: IPv6) -> IPv6:
    """ff02::1:ffXX:XXXX for a unicast address (RFC 4291 2.7.1)."""
    return IPv6(int(SOLICITED_NODE_PREFIX) | (int(ip) & 0xFFFFFF))


def multicast_mac(group: IPv6) -> bytes:
    """33:33 followed by the group's low 32 bits (RFC 2464 section 7)."""
    return b"\x33\x33" + group.packed[-4:]


def solicited_node_mac(ip: IPv6) -> bytes:
    """33:33:ff:XX:XX:XX, where NS for `ip` arrive."""
    return multicast_mac(solicited_node_address(ip))


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def icmpv6_checksum(*, src: IPv6, dst: IPv6, icmp: bytes) -> int:
    """RFC 4443 2.3 checksum over the IPv6 pseudo-header and the ICMPv6 message.

    `icmp` must hold zero in its checksum field when computing, or its own checksum when
    verifying (then the result is 0).
    """
    pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(icmp), IPPROTO_ICMPV6)
    return ~_ones_complement_sum(pseudo + icmp) & 0xFFFF


def _ethernet(*, dst: bytes, src: bytes, ethertype: int) -> bytes:
    return dst + src + struct.pack("!H", ethertype)


# ---------------------------------------------------------------------------------------------
# ARP


@dataclass(frozen=True)
class ArpPacket:
    """One Ethernet + ARP (IPv4 over Ethernet) frame."""

    eth_dst: bytes
    eth_src: bytes
    op: int
    sender_mac: bytes
    sender_ip: IPv4
    target_mac: bytes
    target_ip: IPv4

    @property
    def is_announcement(self) -> bool:
        """Gratuitous ARP / RFC 5227 announcement: sender and target IP are the same."""
        return self.sender_ip == self.target_ip


def build_arp(packet: ArpPacket) -> bytes:
    return (
        _ethernet(dst=packet.eth_dst, src=packet.eth_src, ethertype=ETH_P_ARP)
        + struct.pack("!HHBBH", ARP_HTYPE_ETHERNET, ARP_PTYPE_IPV4, 6, 4, packet.op)
        + packet.sender_mac
        + packet.sender_ip.packed
        + packet.target_mac
        + packet.target_ip.packed
    )


def parse_arp(frame: bytes) -> ArpPacket:
    """Parse any Ethernet + IPv4 ARP frame (request or reply); trailing padding is ignored."""
    if len(frame) < ETH_HEADER_LEN + ARP_LEN:
        raise FrameError("truncated", f"ARP frame has {len(frame)} bytes, needs {ETH_HEADER_LEN + ARP_LEN}")
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype != ETH_P_ARP:
        raise FrameError("not_arp", f"ethertype 0x{ethertype:04x}")
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, ETH_HEADER_LEN)
    if (htype, ptype, hlen, plen) != (ARP_HTYPE_ETHERNET, ARP_PTYPE_IPV4, 6, 4):
        raise FrameError("bad_arp_header", f"htype={htype} ptype=0x{ptype:04x} hlen={hlen} plen={plen}")
    body = ETH_HEADER_LEN + 8
    return ArpPacket(
        eth_dst=frame[0:6],
        eth_src=frame[6:12],
        op=op,
        sender_mac=frame[body : body + 6],
        sender_ip=IPv4(frame[body + 6 : body + 10]),
        target_mac=frame[body + 10 : body + 16],
        target_ip=IPv4(frame[body + 16 : body + 20]),
    )


def parse_arp_request(frame: bytes) -> ArpPacket:
    """Parse an ARP request; replies and other opcodes raise FrameError('not_request')."""
    packet = parse_arp(frame)
    if packet.op != ARP_OP_REQUEST:
        raise FrameError("not_request", f"ARP opcode {packet.op}")
    return packet


def build_arp_request(*, src_mac: bytes, src_ip: IPv4, target_ip: IPv4, eth_dst: bytes = BROADCAST_MAC) -> bytes:
    return build_arp(
        ArpPacket(
            eth_dst=eth_dst,
            eth_src=src_mac,
            op=ARP_OP_REQUEST,
            sender_mac=src_mac,
            sender_ip=src_ip,
            target_mac=ZERO_MAC,
            target_ip=target_ip,
        )
    )


def build_arp_reply(*, request: ArpPacket, mac: bytes) -> bytes:
    """The answer to `request` saying `request.target_ip` is at `mac`, unicast to the asker."""
    return build_arp(
        ArpPacket(
            eth_dst=request.sender_mac,
            eth_src=mac,
            op=ARP_OP_REPLY,
            sender_mac=mac,
            sender_ip=request.target_ip,
            target_mac=request.sender_mac,
            target_ip=request.sender_ip,
        )
    )


def build_gratuitous_arp(*, mac: bytes, ip: IPv4) -> bytes:
    """Broadcast announcement that `ip` is at `mac` (RFC 5227 2.3: a request, SPA = TPA)."""
    return build_arp(
        ArpPacket(
            eth_dst=BROADCAST_MAC,
            eth_src=mac,
            op=ARP_OP_REQUEST,
            sender_mac=mac,
            sender_ip=ip,
            target_mac=ZERO_MAC,
            target_ip=ip,
        )
    )


# ---------------------------------------------------------------------------------------------
# IPv6 Neighbor Discovery


@dataclass(frozen=True)
class NeighborSolicitation:
    """A parsed, validated Ethernet + IPv6 + ICMPv6 Neighbor Solicitation."""

    eth_dst: bytes
    eth_src: bytes
    ip_src: IPv6
    ip_dst: IPv6
    target: IPv6
    source_lladdr: bytes | None  # None when the NS carries no source link-layer option

    @property
    def is_dad(self) -> bool:
        """Duplicate Address Detection probe: sent from the unspecified address."""
        return self.ip_src == UNSPECIFIED_V6


@dataclass(frozen=True)
class NeighborAdvertisement:
    """A parsed Ethernet + IPv6 + ICMPv6 Neighbor Advertisement (used by tests and probes)."""

    eth_dst: bytes
    eth_src: bytes
    ip_src: IPv6
    ip_dst: IPv6
    hop_limit: int
    router: bool
    solicited: bool
    override: bool
    target: IPv6
    target_lladdr: bytes | None


def _ipv6_frame(*, eth_dst: bytes, eth_src: bytes, src: IPv6, dst: IPv6, icmp: bytes) -> bytes:
    checksum = icmpv6_checksum(src=src, dst=dst, icmp=icmp)
    icmp = icmp[:2] + struct.pack("!H", checksum) + icmp[4:]
    # version 6, traffic class 0, flow label 0
    header = struct.pack("!IHBB", 6 << 28, len(icmp), IPPROTO_ICMPV6, ND_HOP_LIMIT)
    return _ethernet(dst=eth_dst, src=eth_src, ethertype=ETH_P_IPV6) + header + src.packed + dst.packed + icmp


def _lladdr_option(kind: int, mac: bytes) -> bytes:
    return struct.pack("!BB", kind, 1) + mac  # length in units of 8 bytes


def build_neighbor_solicitation(
    *,
    src_mac: bytes,
    src_ip: IPv6,
    target: IPv6,
    with_source_lladdr: bool = True,
    dst_ip: IPv6 | None = None,
    eth_dst: bytes | None = None,
) -> bytes:
    """An NS for `target`; by default multicast to its solicited-node group (address resolution).

    Pass `dst_ip=target, eth_dst=<its MAC>` for a unicast reachability probe.
    """
    dst_ip = dst_ip if dst_ip is not None else solicited_node_address(target)
    eth_dst = eth_dst if eth_dst is not None else multicast_mac(dst_ip) if dst_ip.is_multicast else BROADCAST_MAC
    icmp = struct.pack("!BBHI", ICMPV6_NS, 0, 0, 0) + target.packed
    if with_source_lladdr:
        icmp += _lladdr_option(ND_OPT_SOURCE_LLADDR, src_mac)
    return _ipv6_frame(eth_dst=eth_dst, eth_src=src_mac, src=src_ip, dst=dst_ip, icmp=icmp)


def build_neighbor_advertisement(
    *,
    src_mac: bytes,
    eth_dst: bytes,
    src_ip: IPv6,
    dst_ip: IPv6,
    target: IPv6,
    solicited: bool,
    override: bool = True,
) -> bytes:
    """An NA saying `target` is at `src_mac`, with the target link-layer option (RFC 4861 4.4)."""
    flags = (NA_FLAG_SOLICITED if solicited else 0) | (NA_FLAG_OVERRIDE if override else 0)
    icmp = struct.pack("!BBHB3x", ICMPV6_NA, 0, 0, flags) + target.packed
    icmp += _lladdr_option(ND_OPT_TARGET_LLADDR, src_mac)
    return _ipv6_frame(eth_dst=eth_dst, eth_src=src_mac, src=src_ip, dst=dst_ip, icmp=icmp)


def build_unsolicited_advertisement(*, mac: bytes, ip: IPv6) -> bytes:
    """Unsolicited NA with Override to all-nodes (RFC 4861 7.2.6): neighbours update at once."""
    return build_neighbor_advertisement(
        src_mac=mac,
        eth_dst=multicast_mac(ALL_NODES_V6),
        src_ip=ip,
        dst_ip=ALL_NODES_V6,
        target=ip,
        solicited=False,
        override=True,
    )


def build_solicited_advertisement(*, solicitation: NeighborSolicitation, mac: bytes) -> bytes:
    """The answer to `solicitation` (RFC 4861 7.2.4).

    Sent unicast to the solicitor's link-layer address from its source link-layer option, or,
    when the NS has none (a unicast reachability probe), to the frame's Ethernet source. A DAD
    probe (source ::) is answered to all-nodes with S=0 so the prober learns the address is taken.
    """
    if solicitation.is_dad:
        return build_neighbor_advertisement(
            src_mac=mac,
            eth_dst=multicast_mac(ALL_NODES_V6),
            src_ip=solicitation.target,
            dst_ip=ALL_NODES_V6,
            target=solicitation.target,
            solicited=False,
            override=True,
        )
    eth_dst = solicitation.source_lladdr if solicitation.source_lladdr is not None else solicitation.eth_src
    return build_neighbor_advertisement(
        src_mac=mac,
        eth_dst=eth_dst,
        src_ip=solicitation.target,
        dst_ip=solicitation.ip_src,
        target=solicitation.target,
        solicited=True,
        override=True,
    )


def _parse_nd(frame: bytes, *, icmp_type: int) -> tuple[IPv6, IPv6, int, bytes, dict[int, bytes]]:
    """Common ND checks; returns (src, dst, hop_limit, icmp message, first option of each kind)."""
    if len(frame) < ETH_HEADER_LEN + IPV6_HEADER_LEN + ND_MSG_LEN:
        raise FrameError("truncated", f"ND frame has {len(frame)} bytes")
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype != ETH_P_IPV6:
        raise FrameError("not_ipv6", f"ethertype 0x{ethertype:04x}")
    ip = ETH_HEADER_LEN
    version_word, payload_len, next_header, hop_limit = struct.unpack_from("!IHBB", frame, ip)
    if version_word >> 28 != 6:
        raise FrameError("not_ipv6", f"IP version {version_word >> 28}")
    if next_header != IPPROTO_ICMPV6:
        raise FrameError("not_icmpv6", f"next header {next_header}")
    end = ip + IPV6_HEADER_LEN + payload_len
    if end > len(frame):
        raise FrameError("truncated", f"IPv6 payload length {payload_len} exceeds the {len(frame)}-byte frame")
    if payload_len < ND_MSG_LEN:
        raise FrameError("truncated", f"ICMPv6 message of {payload_len} bytes is shorter than {ND_MSG_LEN}")
    src = IPv6(frame[ip + 8 : ip + 24])
    dst = IPv6(frame[ip + 24 : ip + 40])
    icmp = frame[ip + IPV6_HEADER_LEN : end]
    kind, code = icmp[0], icmp[1]
    if kind != icmp_type:
        raise FrameError("wrong_icmpv6_type", f"ICMPv6 type {kind}, expected {icmp_type}")
    if hop_limit != ND_HOP_LIMIT:
        raise FrameError("bad_hop_limit", f"hop limit {hop_limit}, ND requires 255")
    if code != 0:
        raise FrameError("bad_code", f"ICMPv6 code {code}")
    if icmpv6_checksum(src=src, dst=dst, icmp=icmp) != 0:
        raise FrameError("bad_checksum", f"ICMPv6 checksum 0x{struct.unpack_from('!H', icmp, 2)[0]:04x} is wrong")
    options: dict[int, bytes] = {}
    offset = ND_MSG_LEN
    while offset < len(icmp):
        if offset + 2 > len(icmp):
            raise FrameError("bad_option", f"option header cut at byte {offset}")
        opt_kind, opt_units = icmp[offset], icmp[offset + 1]
        if opt_units == 0:
            raise FrameError("bad_option", f"option {opt_kind} has length 0")
        opt_end = offset + 8 * opt_units
        if opt_end > len(icmp):
            raise FrameError("bad_option", f"option {opt_kind} runs past the message end")
        options.setdefault(opt_kind, icmp[offset + 2 : opt_end])
        offset = opt_end
    return src, dst, hop_limit, icmp, options


def _lladdr(options: dict[int, bytes], kind: int) -> bytes | None:
    value = options.get(kind)
    if value is None:
        return None
    if len(value) < 6:  # an 8-byte option holds 6 bytes of value: exactly one MAC
        raise FrameError("bad_option", f"link-layer option {kind} of {len(value)} bytes")
    return value[:6]


def parse_neighbor_solicitation(frame: bytes) -> NeighborSolicitation:
    """Parse and validate (RFC 4861 7.1.1) an NS; raises FrameError with a reason otherwise."""
    src, dst, _, icmp, options = _parse_nd(frame, icmp_type=ICMPV6_NS)
    target = IPv6(icmp[8:24])
    if target.is_multicast:
        raise FrameError("bad_target", f"multicast target {target}")
    source_lladdr = _lladdr(options, ND_OPT_SOURCE_LLADDR)
    if src == UNSPECIFIED_V6:
        if source_lladdr is not None:
            raise FrameError("bad_option", "source link-layer option from the unspecified address")
        if dst != solicited_node_address(target):
            raise FrameError("bad_destination", f"DAD probe to {dst}, not the solicited-node group")
    return NeighborSolicitation(
        eth_dst=frame[0:6],
        eth_src=frame[6:12],
        ip_src=src,
        ip_dst=dst,
        target=target,
        source_lladdr=source_lladdr,
    )


def parse_neighbor_advertisement(frame: bytes) -> NeighborAdvertisement:
    """Parse and validate (RFC 4861 7.1.2) an NA."""
    src, dst, hop_limit, icmp, options = _parse_nd(frame, icmp_type=ICMPV6_NA)
    target = IPv6(icmp[8:24])
    if target.is_multicast:
        raise FrameError("bad_target", f"multicast target {target}")
    flags = icmp[4]
    if dst.is_multicast and flags & NA_FLAG_SOLICITED:
        raise FrameError("bad_flags", "solicited NA sent to a multicast address")
    return NeighborAdvertisement(
        eth_dst=frame[0:6],
        eth_src=frame[6:12],
        ip_src=src,
        ip_dst=dst,
        hop_limit=hop_limit,
        router=bool(flags & NA_FLAG_ROUTER),
        solicited=bool(flags & NA_FLAG_SOLICITED),
        override=bool(flags & NA_FLAG_OVERRIDE),
        target=target,
        target_lladdr=_lladdr(options, ND_OPT_TARGET_LLADDR),
    )
