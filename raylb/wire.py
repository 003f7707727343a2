"""The speakers' heartbeat and leave datagrams, as bytes.

Speakers tell each other they are alive over the node network in one small UDP datagram
(see `raylb.membership`). This module turns a `Datagram` into bytes and back, and nothing
else: no sockets, no clock. Decoding is strict, because anything on the node network can
reach the port: every malformed input raises `WireError` and nothing else.

Layout (network byte order), 32 bytes of header, then the node name, then an optional tag:

    offset size field
    0      4    magic b"RLBm"
    4      1    version (1)
    5      1    kind: 1 heartbeat, 2 leave, 3 welcome ("I had you dead; you are back")
    6      1    flags: bit 0 = an HMAC tag follows the name; other bits must be 0
    7      1    name length n (1..253)
    8      8    incarnation (u64): larger = newer speaker process on that node
    16     8    sequence number (u64): per incarnation, increasing
    24     8    snapshot version the sender holds (u64)
    32     n    sender node name, ASCII
    32+n   16   HMAC-SHA256 over bytes 0..32+n, truncated to 16 bytes (only with flag bit 0)

253 is the longest Kubernetes node name (an RFC 1123 DNS subdomain), so a datagram is at
most 301 bytes and never fragments. With a shared key, forged or corrupted datagrams are
dropped; without one the format still rejects anything that is not exactly a datagram.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

from raylb.errors import RaylbError

MAGIC = b"RLBm"
VERSION = 1
HEARTBEAT = 1
LEAVE = 2
WELCOME = 3
KINDS = (HEARTBEAT, LEAVE, WELCOME)
FLAG_TAG = 0x01
MAX_NAME_LEN = 253  # RFC 1123 subdomain, the limit Kubernetes puts on node names
TAG_LEN = 16  # 128-bit truncated HMAC-SHA256, as RFC 4868 uses for HMAC-SHA-256-128
U64_MAX = 2**64 - 1

_HEADER = struct.Struct("!4sBBBBQQQ")
HEADER_LEN = _HEADER.size  # 32
MAX_DATAGRAM_LEN = HEADER_LEN + MAX_NAME_LEN + TAG_LEN
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


class WireError(RaylbError, ValueError):
    """A datagram (or the fields to build one) is not valid."""


@dataclass(frozen=True)
class Datagram:
    kind: int  # HEARTBEAT, LEAVE or WELCOME
    node: str
    incarnation: int
    seq: int = 0
    snapshot_version: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise WireError(f"datagram kind={self.kind!r}: expected one of {KINDS}")
        _check_name(self.node)
        for field_name in ("incarnation", "seq", "snapshot_version"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
                raise WireError(f"datagram {field_name}={value!r}: expected an integer in 0..2**64-1")


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LEN or not _NAME.fullmatch(name):
        raise WireError(
            f"node name={name!r}: expected 1..{MAX_NAME_LEN} ASCII letters, digits, '.', '-', '_',"
            " starting and ending with a letter or digit"
        )


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:TAG_LEN]


def encode(datagram: Datagram, *, key: bytes | None = None) -> bytes:
    """The bytes of `datagram`; with `key`, authenticated by a truncated HMAC-SHA256 tag."""
    name = datagram.node.encode("ascii")
    flags = FLAG_TAG if key else 0
    body = _HEADER.pack(
        MAGIC,
        VERSION,
        datagram.kind,
        flags,
        len(name),
        datagram.incarnation,
        datagram.seq,
        datagram.snapshot_version,
    ) + name
    return body + _tag(key, body) if key else body


def decode(data: bytes, *, key: bytes | None = None) -> Datagram:
    """Parse one datagram; raise `WireError` (and only that) when it is not valid.

    With `key`, the datagram must carry a tag made with that key. Without `key`, tagged
    datagrams are rejected too: a speaker configured without a key does not half-trust.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"datagram: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise WireError(f"datagram of {len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    magic, version, kind, flags, name_len, incarnation, seq, snap = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"datagram magic={magic!r}: expected {MAGIC!r}")
    if version != VERSION:
        raise WireError(f"datagram version={version}: this speaker speaks version {VERSION}")
    if kind not in KINDS:
        raise WireError(f"datagram kind={kind}: expected one of {KINDS}")
    if flags & ~FLAG_TAG:
        raise WireError(f"datagram flags=0x{flags:02x}: unknown bits set")
    tagged = bool(flags & FLAG_TAG)
    if tagged != bool(key):
        raise WireError("datagram authentication tag " + ("present but no key configured" if tagged else "missing"))
    expected = HEADER_LEN + name_len + (TAG_LEN if tagged else 0)
    if len(data) != expected:
        raise WireError(f"datagram length={len(data)}: expected {expected} for a {name_len}-byte name")
    body = data[: HEADER_LEN + name_len]
    if tagged:
        assert key is not None
        if not hmac.compare_digest(data[HEADER_LEN + name_len :], _tag(key, body)):
            raise WireError("datagram authentication tag does not match")
    try:
        name = body[HEADER_LEN:].decode("ascii")
    except UnicodeDecodeError:
        raise WireError(f"datagram node name={body[HEADER_LEN:]!r}: not ASCII") from None
    return Datagram(kind=kind, node=name, incarnation=incarnation, seq=seq, snapshot_version=snap)
