"""Heartbeat/leave datagrams: exact layout, round trips, and decode never raising anything but WireError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb import wire
from raylb.errors import RaylbError
from raylb.wire import HEARTBEAT, LEAVE, Datagram, WireError

KEY = b"shared-secret-of-the-node-network"
HB = Datagram(kind=HEARTBEAT, node="node-a", incarnation=1_700_000_000_000_000_000, seq=42, snapshot_version=7)


def test_layout_is_exactly_as_documented() -> None:
    data = wire.encode(HB)
    assert len(data) == 32 + len("node-a")
    assert data[:4] == b"RLBm"
    assert data[4:8] == bytes([1, HEARTBEAT, 0, 6])
    assert struct.unpack("!QQQ", data[8:32]) == (HB.incarnation, 42, 7)
    assert data[32:] == b"node-a"


def test_tagged_layout_appends_sixteen_bytes() -> None:
    data = wire.encode(HB, key=KEY)
    assert len(data) == 32 + 6 + 16
    assert data[6] == wire.FLAG_TAG
    assert wire.decode(data, key=KEY) == HB


@pytest.mark.parametrize(
    "datagram",
    [
        HB,
        Datagram(kind=LEAVE, node="n", incarnation=0),
        Datagram(kind=HEARTBEAT, node="a" * 253, incarnation=wire.U64_MAX, seq=wire.U64_MAX, snapshot_version=wire.U64_MAX),
        Datagram(kind=HEARTBEAT, node="Worker_1.lab-rlb", incarnation=3, seq=1),
    ],
    ids=["heartbeat", "leave", "largest", "mixed-name"],
)
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "tagged"])
def test_round_trip(datagram: Datagram, key: bytes | None) -> None:
    data = wire.encode(datagram, key=key)
    assert len(data) <= wire.MAX_DATAGRAM_LEN
    assert wire.decode(data, key=key) == datagram


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


PLAIN = wire.encode(HB)


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (b"", None, "0 bytes is shorter than the 32-byte header"),
        (PLAIN[:31], None, "31 bytes is shorter"),
        (_patched(PLAIN, 0, b"RLBx"), None, "magic=b'RLBx'"),
        (_patched(PLAIN, 4, b"\x02"), None, "version=2"),
        (_patched(PLAIN, 5, b"\x04"), None, "kind=4"),
        (_patched(PLAIN, 5, b"\x00"), None, "kind=0"),
        (_patched(PLAIN, 6, b"\x02"), None, "flags=0x02: unknown bits"),
        (_patched(PLAIN, 7, b"\x07"), None, "length=38: expected 39 for a 7-byte name"),
        (_patched(PLAIN, 7, b"\x00"), None, "length=38: expected 32 for a 0-byte name"),
        (PLAIN + b"\x00", None, "length=39: expected 38"),
        (_patched(PLAIN, 32, b"\xff"), None, "not ASCII"),
        (_patched(PLAIN, 32, b"-"), None, "node name='-ode-a'"),
        (_patched(PLAIN, 33, b" "), None, "node name='n de-a'"),
        (PLAIN, KEY, "tag missing"),
        (wire.encode(HB, key=KEY), None, "tag present but no key configured"),
        (wire.encode(HB, key=b"another key"), KEY, "tag does not match"),
        (_patched(wire.encode(HB, key=KEY), 23, b"\x2b"), KEY, "tag does not match"),  # seq 42 -> 43
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_decode_rejects_with_a_reason(data: bytes, key: bytes | None, message: str) -> None:
    with pytest.raises(WireError, match=message.replace("(", r"\(").replace("[", r"\[")):
        wire.decode(data, key=key)


def test_decode_rejects_a_non_bytes_value() -> None:
    with pytest.raises(WireError, match="expected bytes, got str"):
        wire.decode("RLBm")  # type: ignore[arg-type]


def test_wire_error_belongs_to_the_error_tree_and_is_a_value_error() -> None:
    assert issubclass(WireError, RaylbError) and issubclass(WireError, ValueError)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": 9}, "kind=9"),
        ({"node": ""}, "node name=''"),
        ({"node": "a" * 254}, "node name="),
        ({"node": "nöde"}, "node name='nöde'"),
        ({"node": "a/b"}, "node name='a/b'"),
        ({"incarnation": -1}, "incarnation=-1"),
        ({"seq": 2**64}, "seq=18446744073709551616"),
        ({"snapshot_version": True}, "snapshot_version=True"),
        ({"incarnation": 1.5}, "incarnation=1.5"),
    ],
)
def test_datagram_fields_are_checked(fields: dict, message: str) -> None:
    base = {"kind": HEARTBEAT, "node": "n", "incarnation": 1}
    with pytest.raises(WireError, match=message):
        Datagram(**{**base, **fields})


names = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,40}[A-Za-z0-9])?", fullmatch=True)
u64 = st.integers(0, wire.U64_MAX)
datagrams = st.builds(
    Datagram, kind=st.sampled_from(wire.KINDS), node=names, incarnation=u64, seq=u64, snapshot_version=u64
)


@settings(max_examples=300, deadline=None)
@given(datagrams, st.one_of(st.none(), st.binary(min_size=1, max_size=64)))
def test_any_datagram_round_trips(datagram: Datagram, key: bytes | None) -> None:
    assert wire.decode(wire.encode(datagram, key=key), key=key) == datagram


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=400), st.one_of(st.none(), st.just(KEY)))
def test_garbage_raises_only_wire_error(data: bytes, key: bytes | None) -> None:
    try:
        decoded = wire.decode(data, key=key)
    except WireError:
        return
    assert wire.encode(decoded, key=key) == data  # anything accepted is exactly canonical


@settings(max_examples=500, deadline=None)
@given(datagrams, st.data())
def test_mutated_datagrams_raise_only_wire_error(datagram: Datagram, data: st.DataObject) -> None:
    raw = bytearray(wire.encode(datagram))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["overwrite", "truncate", "append"]))
        if action == "overwrite" and raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        elif action == "truncate" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)) :]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = wire.decode(bytes(raw))
    except WireError:
        return
    assert wire.encode(decoded) == bytes(raw)


@settings(max_examples=500, deadline=None)
@given(datagrams, st.integers(0, 400), st.integers(0, 255))
def test_any_change_to_a_tagged_datagram_is_caught(datagram: Datagram, offset: int, value: int) -> None:
    raw = bytearray(wire.encode(datagram, key=KEY))
    offset %= len(raw)
    if raw[offset] == value:
        value ^= 0x01
    raw[offset] = value
    with pytest.raises(WireError):
        wire.decode(bytes(raw), key=KEY)
