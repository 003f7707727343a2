"""raylb.packets: the exact bytes of ARP and ND frames, cross-checked against scapy."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    in6_chksum,
)
from scapy.layers.l2 import ARP, Ether

from raylb import packets
from raylb.packets import FrameError

CLIENT_MAC = packets.mac_bytes("02:00:00:00:00:60")
NODE_MAC = packets.mac_bytes("02:00:00:00:00:11")
CLIENT_V4 = IPv4Address("198.18.0.60")
VIP_V4 = IPv4Address("198.18.0.130")
CLIENT_V6 = IPv6Address("2001:db8:18::60")
VIP_V6 = IPv6Address("2001:db8:18::1:10")


# ----- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "group", "mac"),
    [
        ("2001:db8:18::1:10", "ff02::1:ff01:10", "33:33:ff:01:00:10"),
        ("2001:db8:18::60", "ff02::1:ff00:60", "33:33:ff:00:00:60"),
        ("fe80::1234:5678:9abc", "ff02::1:ff78:9abc", "33:33:ff:78:9a:bc"),
    ],
)
def test_solicited_node_address_and_mac(ip: str, group: str, mac: str) -> None:
    assert packets.solicited_node_address(IPv6Address(ip)) == IPv6Address(group)
    assert packets.solicited_node_mac(IPv6Address(ip)) == packets.mac_bytes(mac)


def test_all_nodes_multicast_mac() -> None:
    assert packets.multicast_mac(packets.ALL_NODES_V6) == packets.mac_bytes("33:33:00:00:00:01")


@pytest.mark.parametrize("bad", ["02:00:00:00:00", "02-00-00-00-00-01", "0200:00:00:00:01:02", b"\x00" * 5])
def test_mac_bytes_rejects_malformed(bad: str | bytes) -> None:
    with pytest.raises(ValueError, match="MAC"):
        packets.mac_bytes(bad)


def test_mac_round_trip() -> None:
    assert packets.mac_str(packets.mac_bytes("aa:bb:cc:dd:ee:0f")) == "aa:bb:cc:dd:ee:0f"


# ----- ARP --------------------------------------------------------------------------------------


def test_arp_request_bytes_match_scapy() -> None:
    ours = packets.build_arp_request(src_mac=CLIENT_MAC, src_ip=CLIENT_V4, target_ip=VIP_V4)
    theirs = bytes(
        Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:60")
        / ARP(op=1, hwsrc="02:00:00:00:00:60", psrc=str(CLIENT_V4), hwdst="00:00:00:00:00:00", pdst=str(VIP_V4))
    )
    assert ours == theirs


def test_arp_reply_answers_the_asker_from_the_owner() -> None:
    request = packets.parse_arp_request(packets.build_arp_request(src_mac=CLIENT_MAC, src_ip=CLIENT_V4, target_ip=VIP_V4))
    reply = packets.build_arp_reply(request=request, mac=NODE_MAC)
    theirs = bytes(
        Ether(dst="02:00:00:00:00:60", src="02:00:00:00:00:11")
        / ARP(op=2, hwsrc="02:00:00:00:00:11", psrc=str(VIP_V4), hwdst="02:00:00:00:00:60", pdst=str(CLIENT_V4))
    )
    assert reply == theirs
    parsed = packets.parse_arp(reply)
    assert (parsed.op, parsed.sender_ip, parsed.sender_mac) == (packets.ARP_OP_REPLY, VIP_V4, NODE_MAC)


def test_gratuitous_arp_is_a_broadcast_request_with_spa_equal_tpa() -> None:
    frame = packets.build_gratuitous_arp(mac=NODE_MAC, ip=VIP_V4)
    parsed = packets.parse_arp_request(frame)
    assert parsed.eth_dst == packets.BROADCAST_MAC
    assert parsed.sender_ip == parsed.target_ip == VIP_V4
    assert parsed.sender_mac == NODE_MAC and parsed.is_announcement
    scapy_view = ARP(frame[14:])
    assert (scapy_view.op, scapy_view.psrc, scapy_view.pdst) == (1, str(VIP_V4), str(VIP_V4))


def test_arp_parse_ignores_ethernet_padding() -> None:
    frame = packets.build_arp_request(src_mac=CLIENT_MAC, src_ip=CLIENT_V4, target_ip=VIP_V4)
    assert packets.parse_arp_request(frame + b"\x00" * 18).target_ip == VIP_V4


def _arp_request() -> bytes:
    return packets.build_arp_request(src_mac=CLIENT_MAC, src_ip=CLIENT_V4, target_ip=VIP_V4)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "truncated"),
        (_arp_request()[:41], "truncated"),
        (_arp_request()[:12] + b"\x08\x00" + _arp_request()[14:], "not_arp"),
        (_arp_request()[:14] + b"\x00\x06" + _arp_request()[16:], "bad_arp_header"),  # htype 6 (IEEE 802)
        (_arp_request()[:16] + b"\x86\xdd" + _arp_request()[18:], "bad_arp_header"),  # ptype IPv6
        (_arp_request()[:18] + b"\x06\x10" + _arp_request()[20:], "bad_arp_header"),  # plen 16
        (_arp_request()[:20] + b"\x00\x02" + _arp_request()[22:], "not_request"),  # a reply
        (_arp_request()[:20] + b"\x00\x08" + _arp_request()[22:], "not_request"),  # InARP
    ],
)
def test_arp_request_parse_errors_name_their_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        packets.parse_arp_request(frame)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)


# ----- ICMPv6 checksum --------------------------------------------------------------------------


def _scapy_ns(*, sllao: bool, src: str = str(CLIENT_V6), dst: str | None = None) -> bytes:
    dst = dst or str(packets.solicited_node_address(VIP_V6))
    pkt = Ether(dst="33:33:ff:01:00:10", src="02:00:00:00:00:60") / IPv6(src=src, dst=dst, hlim=255) / ICMPv6ND_NS(tgt=str(VIP_V6))
    if sllao:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:60")
    return bytes(pkt)


@pytest.mark.parametrize("sllao", [True, False])
def test_neighbor_solicitation_bytes_match_scapy(sllao: bool) -> None:
    ours = packets.build_neighbor_solicitation(src_mac=CLIENT_MAC, src_ip=CLIENT_V6, target=VIP_V6, with_source_lladdr=sllao)
    assert ours == _scapy_ns(sllao=sllao)


def test_checksum_matches_scapy_for_an_advertisement() -> None:
    ours = packets.build_neighbor_advertisement(
        src_mac=NODE_MAC, eth_dst=CLIENT_MAC, src_ip=VIP_V6, dst_ip=CLIENT_V6, target=VIP_V6, solicited=True
    )
    theirs = bytes(
        Ether(dst="02:00:00:00:00:60", src="02:00:00:00:00:11")
        / IPv6(src=str(VIP_V6), dst=str(CLIENT_V6), hlim=255)
        / ICMPv6ND_NA(tgt=str(VIP_V6), R=0, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:11")
    )
    assert ours == theirs
    (checksum,) = struct.unpack_from("!H", ours, 56)
    assert checksum == IPv6(theirs[14:])[ICMPv6ND_NA].cksum


def test_checksum_of_a_message_with_its_checksum_is_zero() -> None:
    frame = packets.build_unsolicited_advertisement(mac=NODE_MAC, ip=VIP_V6)
    src, dst = IPv6Address(frame[22:38]), IPv6Address(frame[38:54])
    assert packets.icmpv6_checksum(src=src, dst=dst, icmp=frame[54:]) == 0


def test_checksum_of_odd_length_message_pads_with_zero() -> None:
    icmp = b"\x80\x00\x00\x00\x00\x01\x00\x01\xab"  # echo request with one data byte
    header = IPv6(src=str(CLIENT_V6), dst=str(VIP_V6), nh=58)
    assert packets.icmpv6_checksum(src=CLIENT_V6, dst=VIP_V6, icmp=icmp) == in6_chksum(58, header, icmp)


# ----- Neighbor Solicitation parsing ------------------------------------------------------------


@pytest.mark.parametrize("sllao", [True, False])
def test_parse_scapy_solicitation(sllao: bool) -> None:
    ns = packets.parse_neighbor_solicitation(_scapy_ns(sllao=sllao))
    assert ns.target == VIP_V6
    assert ns.ip_src == CLIENT_V6
    assert ns.source_lladdr == (CLIENT_MAC if sllao else None)
    assert not ns.is_dad


def test_parse_dad_probe() -> None:
    ns = packets.parse_neighbor_solicitation(_scapy_ns(sllao=False, src="::"))
    assert ns.is_dad and ns.source_lladdr is None


def _ns_with(**changes: int) -> bytes:
    """A valid NS with single bytes replaced (offset -> value), checksum recomputed."""
    frame = bytearray(_scapy_ns(sllao=True))
    for offset, value in ((int(k[1:]), v) for k, v in changes.items()):
        frame[offset] = value
    frame[56:58] = b"\x00\x00"
    src, dst = IPv6Address(bytes(frame[22:38])), IPv6Address(bytes(frame[38:54]))
    frame[56:58] = struct.pack("!H", packets.icmpv6_checksum(src=src, dst=dst, icmp=bytes(frame[54:])))
    return bytes(frame)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "truncated"),
        (_scapy_ns(sllao=True)[:77], "truncated"),
        (_scapy_ns(sllao=True)[:-1], "truncated"),  # payload length says more than the frame has
        (_ns_with(o12=0x08, o13=0x00), "not_ipv6"),
        (_ns_with(o14=0x45), "not_ipv6"),
        (_ns_with(o20=17), "not_icmpv6"),
        (_ns_with(o54=136), "wrong_icmpv6_type"),
        (_ns_with(o21=64), "bad_hop_limit"),
        (_ns_with(o55=1), "bad_code"),
        (_scapy_ns(sllao=True)[:56] + b"\xde\xad" + _scapy_ns(sllao=True)[58:], "bad_checksum"),
        (_ns_with(o79=0), "bad_option"),  # option length 0
        (_ns_with(o79=2), "bad_option"),  # option runs past the end
        (_ns_with(o62=0xFF), "bad_target"),  # multicast target
        (_scapy_ns(sllao=True, src="::"), "bad_option"),  # SLLAO from the unspecified address
        (_scapy_ns(sllao=False, src="::", dst="ff02::1"), "bad_destination"),
    ],
)
def test_solicitation_parse_errors_name_their_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        packets.parse_neighbor_solicitation(frame)
    assert caught.value.reason == reason


# ----- Neighbor Advertisement -------------------------------------------------------------------


@pytest.mark.parametrize("sllao", [True, False])
def test_solicited_advertisement_goes_to_sllao_else_ethernet_source(sllao: bool) -> None:
    frame = bytearray(_scapy_ns(sllao=sllao))
    if sllao:  # make the option differ from the Ethernet source to see which one is used
        frame[6:12] = b"\x02\xee\xee\xee\xee\xee"
    ns = packets.parse_neighbor_solicitation(bytes(frame))
    reply = packets.build_solicited_advertisement(solicitation=ns, mac=NODE_MAC)
    na = packets.parse_neighbor_advertisement(reply)
    assert na.eth_dst == CLIENT_MAC if sllao else na.eth_dst == bytes(frame[6:12])
    assert (na.solicited, na.override, na.router) == (True, True, False)
    assert na.hop_limit == 255
    assert na.target == VIP_V6 and na.ip_src == VIP_V6 and na.ip_dst == CLIENT_V6
    assert na.target_lladdr == NODE_MAC and na.eth_src == NODE_MAC
    scapy_na = Ether(reply)
    assert scapy_na[IPv6].hlim == 255
    assert scapy_na[ICMPv6ND_NA].S == 1 and scapy_na[ICMPv6ND_NA].O == 1
    assert scapy_na[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:00:11"


def test_dad_probe_is_answered_to_all_nodes_unsolicited() -> None:
    ns = packets.parse_neighbor_solicitation(_scapy_ns(sllao=False, src="::"))
    na = packets.parse_neighbor_advertisement(packets.build_solicited_advertisement(solicitation=ns, mac=NODE_MAC))
    assert na.ip_dst == packets.ALL_NODES_V6 and na.eth_dst == packets.multicast_mac(packets.ALL_NODES_V6)
    assert (na.solicited, na.override) == (False, True)


def test_unsolicited_advertisement_overrides_to_all_nodes() -> None:
    frame = packets.build_unsolicited_advertisement(mac=NODE_MAC, ip=VIP_V6)
    na = packets.parse_neighbor_advertisement(frame)
    assert na.eth_dst == packets.mac_bytes("33:33:00:00:00:01")
    assert (na.ip_src, na.ip_dst, na.target) == (VIP_V6, packets.ALL_NODES_V6, VIP_V6)
    assert (na.solicited, na.override, na.hop_limit, na.target_lladdr) == (False, True, 255, NODE_MAC)
    # scapy agrees on the checksum: rebuilding without it gives the same bytes
    parsed = Ether(frame)
    del parsed[ICMPv6ND_NA].cksum
    assert bytes(parsed) == frame


def test_solicited_advertisement_to_multicast_is_invalid() -> None:
    frame = packets.build_neighbor_advertisement(
        src_mac=NODE_MAC, eth_dst=CLIENT_MAC, src_ip=VIP_V6, dst_ip=packets.ALL_NODES_V6, target=VIP_V6, solicited=True
    )
    with pytest.raises(FrameError) as caught:
        packets.parse_neighbor_advertisement(frame)
    assert caught.value.reason == "bad_flags"


def test_ns_round_trip_unicast_probe() -> None:
    frame = packets.build_neighbor_solicitation(
        src_mac=CLIENT_MAC, src_ip=CLIENT_V6, target=VIP_V6, with_source_lladdr=False, dst_ip=VIP_V6, eth_dst=NODE_MAC
    )
    ns = packets.parse_neighbor_solicitation(frame)
    assert (ns.eth_dst, ns.ip_dst, ns.target, ns.source_lladdr) == (NODE_MAC, VIP_V6, VIP_V6, None)
