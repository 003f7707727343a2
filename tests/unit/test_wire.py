"""Membership datagrams: exact layout, round trips, mandatory tags, and decode never raising
anything but MalformedError / UnauthenticatedError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylb import wire
from raylb.errors import RaylbError
from raylb.wire import HEARTBEAT, LEAVE, Datagram, MalformedError, UnauthenticatedError, WireError

KEY = b"shared-secret-of-the-node-network"
OLD_KEY = b"the key before the last rotation"
KEYS = (KEY,)
HB = Datagram(
    kind=HEARTBEAT, node="node-a", incarnation=1_700_000_000_000_000_000, seq=42, snapshot_version=7,
    sent_ns=1_700_000_000_500_000_000,
)  # fmt: skip
SIGNED = wire.encode(HB, key=KEY)


def test_layout_is_exactly_as_documented() -> None:
    assert len(SIGNED) == 49 + len("node-a") + 16
    assert SIGNED[:4] == b"RLBm"
    assert SIGNED[4:8] == bytes([2, HEARTBEAT, 0, 6])
    assert struct.unpack("!QQQQQB", SIGNED[8:49]) == (HB.incarnation, 42, 7, HB.sent_ns, 0, 0)
    assert SIGNED[49:55] == b"node-a"
    assert wire.decode(SIGNED, keys=KEYS) == HB


def test_an_alert_carries_its_subject_after_the_name() -> None:
    alert = Datagram(kind=wire.ALERT, node="node-a", incarnation=5, seq=6, subject="node-b", subject_incarnation=9)
    data = wire.encode(alert, key=KEY)
    assert len(data) == 49 + 6 + 6 + 16
    assert struct.unpack("!QB", data[40:49]) == (9, 6)
    assert data[49:61] == b"node-anode-b"
    assert wire.decode(data, keys=KEYS) == alert


@pytest.mark.parametrize(
    "datagram",
    [
        HB,
        Datagram(kind=LEAVE, node="n", incarnation=0),
        Datagram(kind=HEARTBEAT, node="a" * 253, incarnation=wire.U64_MAX, seq=wire.U64_MAX,
                 snapshot_version=wire.U64_MAX, sent_ns=wire.U64_MAX),
        Datagram(kind=HEARTBEAT, node="Worker_1.lab-rlb", incarnation=3, seq=1),
        Datagram(kind=wire.ALERT, node="a" * 253, incarnation=1, subject="b" * 253, subject_incarnation=wire.U64_MAX),
        Datagram(kind=wire.HELLO, node="n", incarnation=1),
    ],
    ids=["heartbeat", "leave", "largest", "mixed-name", "largest-alert", "hello"],
)
def test_round_trip(datagram: Datagram) -> None:
    data = wire.encode(datagram, key=KEY)
    assert len(data) <= wire.MAX_DATAGRAM_LEN == 571
    assert wire.decode(data, keys=KEYS) == datagram


def test_any_of_the_held_keys_is_accepted() -> None:
    assert wire.decode(wire.encode(HB, key=OLD_KEY), keys=(KEY, OLD_KEY)) == HB


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", MalformedError, "0 bytes is shorter than the 49-byte header"),
        (SIGNED[:48], MalformedError, "48 bytes is shorter"),
        (_patched(SIGNED, 0, b"RLBx"), MalformedError, "magic=b'RLBx'"),
        (_patched(SIGNED, 4, b"\x01"), MalformedError, "version=1: this speaker speaks version 2"),
        (_patched(SIGNED, 5, b"\x06"), MalformedError, "kind=6"),
        (_patched(SIGNED, 5, bytes([wire.ALERT])), MalformedError, "an alert, and only an alert, names a subject"),
        (_patched(SIGNED, 5, b"\x00"), MalformedError, "kind=0"),
        (_patched(SIGNED, 6, b"\x01"), MalformedError, "flags=0x01: unknown bits"),
        (_patched(SIGNED, 7, b"\x07"), MalformedError, "length=71: expected 72 for a 7-byte name"),
        (SIGNED + b"\x00", MalformedError, "length=72: expected 71"),
        (SIGNED[:-16], MalformedError, "length=55: expected 71"),  # the tag cut off
        (_patched(SIGNED, 49, b"\xff"), MalformedError, "not ASCII"),
        (_patched(SIGNED, 49, b"-"), MalformedError, "node name='-ode-a'"),
        (wire.encode(HB, key=b"another key"), UnauthenticatedError, "matches no membership key"),
        (_patched(SIGNED, 31, b"\x2b"), UnauthenticatedError, "matches no membership key"),  # seq 42 -> 43
        (_patched(SIGNED, 54, b"b"), UnauthenticatedError, "node='node-b'"),  # another name
        (_patched(SIGNED, 15, b"\xff"), UnauthenticatedError, "matches no"),  # a pushed incarnation
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_decode_rejects_with_a_reason(data: bytes, error: type[WireError], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")):
        wire.decode(data, keys=KEYS)


def test_a_version_1_datagram_is_refused_even_with_its_old_tag() -> None:
    v1 = struct.pack("!4sBBBBQQQ", b"RLBm", 1, HEARTBEAT, 1, 6, 1, 2, 3) + b"node-a" + b"\0" * 16
    with pytest.raises(MalformedError, match="version=1"):
        wire.decode(v1, keys=KEYS)


@pytest.mark.parametrize("keys", [(), (b"",)], ids=["none", "empty"])
def test_decoding_or_encoding_without_a_key_is_a_programming_error(keys: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError, match="key is required"):
        wire.decode(SIGNED, keys=keys)
    with pytest.raises(ValueError, match="key is required"):
        wire.encode(HB, key=b"")


def test_decode_rejects_a_non_bytes_value() -> None:
    with pytest.raises(MalformedError, match="expected bytes, got str"):
        wire.decode("RLBm", keys=KEYS)  # type: ignore[arg-type]


def test_wire_errors_belong_to_the_error_tree_and_are_value_errors() -> None:
    for cls in (WireError, MalformedError, UnauthenticatedError):
        assert issubclass(cls, RaylbError) and issubclass(cls, ValueError)
    assert issubclass(MalformedError, WireError) and issubclass(UnauthenticatedError, WireError)


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
        ({"sent_ns": -5}, "sent_ns=-5"),
        ({"subject": "b"}, "an alert, and only an alert, names a subject"),
        ({"kind": wire.ALERT}, "an alert, and only an alert, names a subject"),
        ({"kind": wire.ALERT, "subject": "b/c"}, "node name='b/c'"),
    ],
)
def test_datagram_fields_are_checked(fields: dict, message: str) -> None:
    base = {"kind": HEARTBEAT, "node": "n", "incarnation": 1}
    with pytest.raises(MalformedError, match=message):
        Datagram(**{**base, **fields})


names = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,40}[A-Za-z0-9])?", fullmatch=True)
u64 = st.integers(0, wire.U64_MAX)
plain = st.builds(
    Datagram, kind=st.sampled_from([k for k in wire.KINDS if k != wire.ALERT]), node=names, incarnation=u64,
    seq=u64, snapshot_version=u64, sent_ns=u64,
)  # fmt: skip
alerts = st.builds(
    Datagram, kind=st.just(wire.ALERT), node=names, incarnation=u64, seq=u64, sent_ns=u64, subject=names,
    subject_incarnation=u64,
)  # fmt: skip
datagrams = plain | alerts


@settings(max_examples=300, deadline=None)
@given(datagrams, st.binary(min_size=1, max_size=64))
def test_any_datagram_round_trips(datagram: Datagram, key: bytes) -> None:
    assert wire.decode(wire.encode(datagram, key=key), keys=(key,)) == datagram


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_raises_only_wire_error(data: bytes) -> None:
    try:
        decoded = wire.decode(data, keys=KEYS)
    except WireError:
        return
    assert wire.encode(decoded, key=KEY) == data  # anything accepted is exactly canonical


@settings(max_examples=500, deadline=None)
@given(datagrams, st.integers(0, 400), st.integers(0, 255))
def test_any_change_to_a_datagram_is_caught(datagram: Datagram, offset: int, value: int) -> None:
    raw = bytearray(wire.encode(datagram, key=KEY))
    offset %= len(raw)
    if raw[offset] == value:
        value ^= 0x01
    raw[offset] = value
    with pytest.raises(WireError):
        wire.decode(bytes(raw), keys=KEYS)
