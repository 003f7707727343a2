"""raylb.bpf: the kernel filters pass exactly what the responder must answer.

A small interpreter for the classic BPF subset the programs use runs them against sample
frames, so the filters are tested without root; the lab tests run them in the kernel.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb import bpf, packets

PACKET_HOST, PACKET_BROADCAST, PACKET_OUTGOING = 0, 1, 4
MAC = packets.mac_bytes("02:00:00:00:00:60")
NODE_MAC = packets.mac_bytes("02:00:00:00:00:11")
CLIENT_V4 = IPv4Address("198.18.0.60")
CLIENT_V6 = IPv6Address("2001:db8:18::60")
OWNED_V4 = [IPv4Address("198.18.0.130"), IPv4Address("198.18.0.131")]
OWNED_V6 = [IPv6Address("2001:db8:18::1:10"), IPv6Address("2001:db8:18::1:11")]


def run(program: list[bpf.Instruction], frame: bytes, *, pkttype: int = PACKET_BROADCAST) -> int:
    """Evaluate a classic BPF program; returns the number of bytes accepted (0 = dropped)."""
    accumulator = 0
    pc = 0
    for _ in range(len(program) + 1):  # no backward jumps exist, so this bounds any run
        code, jt, jf, k = program[pc]
        if code in (bpf.LD_W_ABS, bpf.LD_H_ABS, bpf.LD_B_ABS):
            if code == bpf.LD_W_ABS and k == (bpf.SKF_AD_OFF + bpf.SKF_AD_PKTTYPE) & 0xFFFFFFFF:
                accumulator = pkttype
            else:
                size = {bpf.LD_W_ABS: 4, bpf.LD_H_ABS: 2, bpf.LD_B_ABS: 1}[code]
                if k + size > len(frame):
                    return 0  # the kernel drops a frame when a load runs past its end
                accumulator = int.from_bytes(frame[k : k + size], "big")
            pc += 1
        elif code == bpf.JEQ_K:
            pc += 1 + (jt if accumulator == k else jf)
        elif code == bpf.RET_K:
            return min(k, len(frame))
        else:
            raise AssertionError(f"instruction 0x{code:02x} not understood by the test interpreter")
    raise AssertionError("program ran off its end")


def well_formed(program: list[bpf.Instruction]) -> None:
    assert 0 < len(program) <= bpf.MAX_INSTRUCTIONS
    for pc, (code, jt, jf, k) in enumerate(program):
        assert 0 <= jt <= 255 and 0 <= jf <= 255 and 0 <= k <= 0xFFFFFFFF
        if code == bpf.JEQ_K:
            assert pc + 1 + max(jt, jf) < len(program), f"jump at {pc} leaves the program"
    assert program[-1][0] == bpf.RET_K, "the last instruction must return"
    assert len(bpf.pack(program)) == 8 * len(program)


def arp_request(target: IPv4Address) -> bytes:
    return packets.build_arp_request(src_mac=MAC, src_ip=CLIENT_V4, target_ip=target)


def ns(target: IPv6Address, **kwargs: object) -> bytes:
    return packets.build_neighbor_solicitation(src_mac=MAC, src_ip=CLIENT_V6, target=target, **kwargs)  # type: ignore[arg-type]


def arp_reply(target: IPv4Address) -> bytes:
    request = packets.parse_arp(arp_request(target))
    return packets.build_arp_reply(request=request, mac=NODE_MAC)


def ipv4_udp() -> bytes:
    return packets.BROADCAST_MAC + MAC + b"\x08\x00" + bytes(46)


PROGRAMS = {
    "arp-any": bpf.arp_request_filter(),
    "arp-none": bpf.arp_request_filter(()),
    "arp-owned": bpf.arp_request_filter(OWNED_V4),
    "ns-any": bpf.neighbor_solicitation_filter(),
    "ns-none": bpf.neighbor_solicitation_filter(()),
    "ns-owned": bpf.neighbor_solicitation_filter(OWNED_V6),
}


@pytest.mark.parametrize("name", PROGRAMS)
def test_programs_are_well_formed(name: str) -> None:
    well_formed(PROGRAMS[name])


@pytest.mark.parametrize(
    ("program", "frame", "passes"),
    [
        ("arp-any", arp_request(IPv4Address("198.18.0.77")), True),
        ("arp-any", packets.build_gratuitous_arp(mac=MAC, ip=OWNED_V4[0]), True),
        ("arp-any", arp_reply(OWNED_V4[0]), False),
        ("arp-any", ipv4_udp(), False),
        ("arp-any", ns(OWNED_V6[0]), False),
        ("arp-any", arp_request(OWNED_V4[0])[:20], False),  # truncated before the opcode
        ("arp-none", arp_request(OWNED_V4[0]), False),
        ("arp-owned", arp_request(OWNED_V4[0]), True),
        ("arp-owned", arp_request(OWNED_V4[1]), True),
        ("arp-owned", arp_request(IPv4Address("198.18.0.64")), False),  # the flood's targets
        ("arp-owned", arp_request(IPv4Address("198.18.0.132")), False),
        ("arp-owned", arp_reply(OWNED_V4[0]), False),
        ("ns-any", ns(IPv6Address("2001:db8:18::99")), True),
        ("ns-any", ns(OWNED_V6[0], with_source_lladdr=False), True),
        ("ns-any", packets.build_unsolicited_advertisement(mac=NODE_MAC, ip=OWNED_V6[0]), False),
        ("ns-any", arp_request(OWNED_V4[0]), False),
        ("ns-any", ipv4_udp(), False),
        ("ns-none", ns(OWNED_V6[0]), False),
        ("ns-owned", ns(OWNED_V6[0]), True),
        ("ns-owned", ns(OWNED_V6[1], with_source_lladdr=False), True),
        ("ns-owned", ns(OWNED_V6[0], dst_ip=OWNED_V6[0], eth_dst=NODE_MAC), True),  # unicast NUD probe
        ("ns-owned", ns(IPv6Address("2001:db8:18::1:12")), False),
        ("ns-owned", ns(IPv6Address("2001:db8:18::2:10")), False),  # differs only in word 3
        ("ns-owned", ns(IPv6Address("2001:db9:18::1:10")), False),  # differs only in word 0
    ],
)
def test_filter_decisions(program: str, frame: bytes, passes: bool) -> None:
    assert (run(PROGRAMS[program], frame) > 0) is passes


def test_hop_limit_below_255_is_dropped_in_the_kernel() -> None:
    frame = bytearray(ns(OWNED_V6[0]))
    frame[21] = 254
    assert run(PROGRAMS["ns-owned"], bytes(frame)) == 0


@pytest.mark.parametrize("name", PROGRAMS)
def test_outgoing_frames_are_dropped(name: str) -> None:
    frames = [arp_request(OWNED_V4[0]), ns(OWNED_V6[0])]
    assert all(run(PROGRAMS[name], f, pkttype=PACKET_OUTGOING) == 0 for f in frames)
    assert any(run(PROGRAMS[name], f, pkttype=PACKET_HOST) for f in frames) is not name.endswith("none")


def test_accepted_frames_are_kept_whole() -> None:
    frame = ns(OWNED_V6[0])
    assert run(PROGRAMS["ns-owned"], frame) == len(frame)


def test_past_the_instruction_limit_the_target_test_is_left_to_python() -> None:
    many_v4 = [IPv4Address(int(IPv4Address("10.0.0.0")) + n) for n in range(bpf.MAX_TARGETS_ARP + 1)]
    many_v6 = [IPv6Address(int(IPv6Address("2001:db8:18::1:0")) + n) for n in range(bpf.MAX_TARGETS_NS + 1)]
    for program in (bpf.arp_request_filter(many_v4), bpf.neighbor_solicitation_filter(many_v6)):
        well_formed(program)
        assert run(program, arp_request(IPv4Address("198.18.0.64"))) or run(program, ns(IPv6Address("2001:db8:18::5")))


def test_largest_target_lists_fit_the_kernel_limit() -> None:
    v4 = [IPv4Address(int(IPv4Address("10.0.0.0")) + n) for n in range(bpf.MAX_TARGETS_ARP)]
    v6 = [IPv6Address(int(IPv6Address("2001:db8:18::1:0")) + n) for n in range(bpf.MAX_TARGETS_NS)]
    arp, nd = bpf.arp_request_filter(v4), bpf.neighbor_solicitation_filter(v6)
    well_formed(arp)
    well_formed(nd)
    assert run(arp, arp_request(v4[-1])) and not run(arp, arp_request(IPv4Address("10.255.0.0")))
    assert run(nd, ns(v6[-1])) and not run(nd, ns(IPv6Address("2001:db8:18::2:0")))


@settings(max_examples=100, deadline=None)
@given(
    owned=st.sets(st.integers(0, 0xFFFF), min_size=1, max_size=20),
    asked=st.integers(0, 0xFFFF),
)
def test_ns_filter_passes_exactly_the_owned_targets(owned: set[int], asked: int) -> None:
    base = int(IPv6Address("2001:db8:18::1:0"))
    program = bpf.neighbor_solicitation_filter(IPv6Address(base + n) for n in owned)
    assert (run(program, ns(IPv6Address(base + asked))) > 0) is (asked in owned)


@settings(max_examples=100, deadline=None)
@given(owned=st.sets(st.integers(0, 255), min_size=1, max_size=30), asked=st.integers(0, 255))
def test_arp_filter_passes_exactly_the_owned_targets(owned: set[int], asked: int) -> None:
    program = bpf.arp_request_filter(IPv4Address(f"198.18.0.{n}") for n in owned)
    assert (run(program, arp_request(IPv4Address(f"198.18.0.{asked}"))) > 0) is (asked in owned)


def test_pack_layout_is_struct_sock_filter() -> None:
    assert bpf.pack([(bpf.RET_K, 1, 2, 0x40000)]) == struct.pack("HBBI", 0x06, 1, 2, 0x40000)
    with pytest.raises(ValueError, match="instructions"):
        bpf.pack([])
