"""Nothing a peer sends makes the parsers raise anything but FrameError (or return garbage).

The responder counts FrameError by reason and drops the frame; any other exception would be a
crash path. Random bytes, truncations and single-byte corruptions of valid frames are thrown at
every parser.
"""

from __future__ import annotations

import re

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raylb import packets
from raylb.packets import FrameError

MAC = packets.mac_bytes("02:00:00:00:00:60")
VALID_FRAMES = [
    packets.build_arp_request(src_mac=MAC, src_ip=IPv4Address("198.18.0.60"), target_ip=IPv4Address("198.18.0.130")),
    packets.build_gratuitous_arp(mac=MAC, ip=IPv4Address("198.18.0.130")),
    packets.build_neighbor_solicitation(src_mac=MAC, src_ip=IPv6Address("2001:db8:18::60"), target=IPv6Address("2001:db8:18::1:10")),
    packets.build_neighbor_solicitation(
        src_mac=MAC, src_ip=IPv6Address("2001:db8:18::60"), target=IPv6Address("2001:db8:18::1:10"), with_source_lladdr=False
    ),
    packets.build_unsolicited_advertisement(mac=MAC, ip=IPv6Address("2001:db8:18::1:10")),
]
PARSERS: list[Callable[[bytes], object]] = [
    packets.parse_arp,
    packets.parse_arp_request,
    packets.parse_neighbor_solicitation,
    packets.parse_neighbor_advertisement,
]
REASON = re.compile(r"[a-z][a-z0-9_]*")  # usable as a metrics label value
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_frame_errors(parser: Callable[[bytes], object], frame: bytes) -> None:
    try:
        parser(frame)
    except FrameError as err:
        assert REASON.fullmatch(err.reason), err.reason


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
@FUZZ
@given(frame=st.binary(max_size=200))
def test_random_bytes(parser: Callable[[bytes], object], frame: bytes) -> None:
    _only_frame_errors(parser, frame)


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
@FUZZ
@given(base=st.sampled_from(VALID_FRAMES), data=st.data())
def test_truncated_and_corrupted_valid_frames(parser: Callable[[bytes], object], base: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(base)))
    _only_frame_errors(parser, base[:cut])
    frame = bytearray(base)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
        frame[position] = data.draw(st.integers(min_value=0, max_value=255))
    tail = data.draw(st.binary(max_size=40))
    _only_frame_errors(parser, bytes(frame) + tail)


@FUZZ
@given(base=st.sampled_from(VALID_FRAMES[2:4]), position=st.integers(min_value=54, max_value=85), value=st.integers(0, 255))
def test_a_corrupted_solicitation_never_parses_with_a_wrong_checksum(base: bytes, position: int, value: int) -> None:
    """Any change to the ICMPv6 message either keeps it valid (same byte) or is rejected."""
    if position >= len(base):
        return
    frame = bytearray(base)
    changed = frame[position] != value
    frame[position] = value
    if changed:
        with pytest.raises(FrameError):
            packets.parse_neighbor_solicitation(bytes(frame))
    else:
        packets.parse_neighbor_solicitation(bytes(frame))
