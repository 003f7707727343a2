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
    return execute(program, frame, pkttype=pkttype)[0]


def execute(program: list[bpf.Instruction], frame: bytes, *, pkttype: int = PACKET_BROADCAST) -> tuple[int, int]:
    """(bytes accepted, instructions executed) for one frame."""
    accumulator = 0
    pc = 0
    for steps in range(1, len(program) + 2):  # no backward jumps exist, so this bounds any run
        assert 0 <= pc < len(program), f"jumped to {pc}, outside the program"
        code, jt, jf, k = program[pc]
        if code in (bpf.LD_W_ABS, bpf.LD_H_ABS, bpf.LD_B_ABS):
            if code == bpf.LD_W_ABS and k == (bpf.SKF_AD_OFF + bpf.SKF_AD_PKTTYPE) & 0xFFFFFFFF:
                accumulator = pkttype
            else:
                size = {bpf.LD_W_ABS: 4, bpf.LD_H_ABS: 2, bpf.LD_B_ABS: 1}[code]
                if k + size > len(frame):
                    return 0, steps  # the kernel drops a frame when a load runs past its end
                accumulator = int.from_bytes(frame[k : k + size], "big")
            pc += 1
        elif code == bpf.AND_K:
            accumulator &= k
            pc += 1
        elif code == bpf.JEQ_K:
            pc += 1 + (jt if accumulator == k else jf)
        elif code == bpf.JGE_K:
            pc += 1 + (jt if accumulator >= k else jf)
        elif code == bpf.JA:
            pc += 1 + k
        elif code == bpf.RET_K:
            return min(k, len(frame)), steps
        else:
            raise AssertionError(f"instruction 0x{code:02x} not understood by the test interpreter")
    raise AssertionError("program ran off its end")


def well_formed(program: list[bpf.Instruction]) -> None:
    assert 0 < len(program) <= bpf.MAX_INSTRUCTIONS
    for pc, (code, jt, jf, k) in enumerate(program):
        assert 0 <= jt <= 255 and 0 <= jf <= 255 and 0 <= k <= 0xFFFFFFFF
        if code in (bpf.JEQ_K, bpf.JGE_K):
            assert pc + 1 + max(jt, jf) < len(program), f"jump at {pc} leaves the program"
        if code == bpf.JA:
            assert pc + 1 + k < len(program), f"ja at {pc} leaves the program"
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


def spread_v4(count: int, *, step: int = 3) -> list[IPv4Address]:
    """`count` IPv4 targets, every `step`-th address from 198.18.64.0: no two collapse."""
    return [IPv4Address(int(IPv4Address("198.18.64.0")) + step * n) for n in range(count)]


def spread_v6(count: int, *, step: int = 3) -> list[IPv6Address]:
    return [IPv6Address(int(IPv6Address("2001:db8:18::1:0")) + step * n) for n in range(count)]


@pytest.mark.parametrize("count", [2_000, 3_000, 10_000, 65_536])
def test_any_number_of_targets_fits_and_every_owned_target_passes(count: int) -> None:
    v4, v6 = spread_v4(count), spread_v6(count)
    arp, nd = bpf.arp_request_filter(v4), bpf.neighbor_solicitation_filter(v6)
    well_formed(arp)
    well_formed(nd)
    for i in (0, 1, count // 2, count - 1):
        assert run(arp, arp_request(v4[i])) and run(nd, ns(v6[i]))


@pytest.mark.parametrize("count", [3_000, 10_000])
def test_past_exact_fit_an_unrelated_flood_is_still_dropped(count: int) -> None:
    """The flood of the lab tests (198.18.0.64-127) and NS for another /112 stay in the kernel."""
    arp, nd = bpf.arp_request_filter(spread_v4(count)), bpf.neighbor_solicitation_filter(spread_v6(count))
    assert not any(run(arp, arp_request(IPv4Address(f"198.18.0.{n}"))) for n in range(64, 128))
    assert not run(nd, ns(IPv6Address("2001:db8:18::2:0"))) and not run(nd, ns(IPv6Address("2001:db8:18::5")))


@pytest.mark.parametrize(
    ("targets", "budget", "exact"),
    [
        # (targets as offsets from 198.18.64.0, instruction budget, does the cover hold only them?)
        (range(0, 256), bpf.MAX_INSTRUCTIONS, True),  # one /24: one prefix
        (range(0, 3000), bpf.MAX_INSTRUCTIONS, True),  # a range: a handful of aligned blocks
        (range(0, 6000, 3), bpf.MAX_INSTRUCTIONS, True),  # 2 000 scattered: fits exactly
        (range(0, 9000, 3), bpf.MAX_INSTRUCTIONS, False),  # 3 000 scattered: merged
        (range(0, 150, 3), 64, False),  # 50 scattered in a 64-instruction budget: merged
    ],
)
def test_cover_is_exact_while_it_fits_and_merged_beyond(targets: range, budget: int, exact: bool) -> None:
    base = int(IPv4Address("198.18.64.0"))
    owned = {base + n for n in targets}
    program = bpf.arp_request_filter((IPv4Address(a) for a in owned), budget=budget)
    assert len(program) <= budget
    well_formed(program)
    probe = range(base - 8, base + max(targets) + 8)
    passed = {a for a in probe if run(program, arp_request(IPv4Address(a)))}
    assert owned <= passed
    assert (passed == owned) is exact


@pytest.mark.parametrize("target", ["198.18.0.64", "198.18.64.0", "198.18.100.1", "198.18.255.255"])
def test_a_frame_runs_a_few_dozen_instructions_not_one_per_target(target: str) -> None:
    """The search is a tree: hits and misses with 10 000 targets cost O(log n) instructions."""
    _, steps = execute(bpf.arp_request_filter(spread_v4(10_000)), arp_request(IPv4Address(target)))
    assert steps < 60, steps


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
