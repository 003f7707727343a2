"""The speakers' membership datagrams, as bytes, always authenticated.

Speakers tell each other they are alive over the node network in one small UDP datagram
(see `raylb.membership`). This module turns a `Datagram` into bytes and back, and nothing
else: no sockets, no clock. Anything on the node network can reach the port, so decoding is
strict and every datagram carries an HMAC over its whole content: a datagram is either
exactly what a holder of the membership key sent, or it raises one of

    WireError
    ├── MalformedError        not a version-2 datagram (length, magic, version, kind, flags, name)
    └── UnauthenticatedError  well formed, but no key the receiver holds made its tag

and nothing else. The receiver may hold several keys while a key is rotated (raylb.keyring);
the tag is checked against each, newest first.

Layout (network byte order), 49 bytes of header, the node name, the subject, the tag:

    offset  size field
    0       4    magic b"RLBm"
    4       1    version (2)
    5       1    kind: 1 heartbeat, 2 leave, 3 welcome ("I had you dead; you are back"),
                 4 alert ("I, an observer of the subject, find it silent"),
                 5 hello ("I am starting: tell me you are alive")
    6       1    flags: must be 0
    7       1    name length n (1..253)
    8       8    incarnation (u64): larger = newer speaker process on that node
    16      8    sequence number (u64): per incarnation, increasing
    24      8    snapshot version the sender holds (u64)
    32      8    sent_ns (u64): the sender's wall clock when it sent, ns since the Unix epoch
    40      8    subject incarnation (u64; alerts only, else 0)
    48      1    subject length m (alerts: 1..253, else 0)
    49      n    sender node name, ASCII
    49+n    m    subject node name, ASCII
    49+n+m  16   HMAC-SHA256 over everything before it, truncated to 16 bytes

253 is the longest Kubernetes node name (an RFC 1123 DNS subdomain), so a datagram is at
most 571 bytes and never fragments. `sent_ns` lets a receiver refuse a replay older than
the clock skew it tolerates (raylb.admission.MAX_CLOCK_SKEW_S); the sequence number refuses
one within it. Version 1 (optional tag, no timestamp) is refused: a mixed cluster would
have to trust unauthenticated datagrams, which is exactly what version 2 ends.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from raylb.errors import RaylbError

MAGIC = b"RLBm"
VERSION = 2
HEARTBEAT = 1
LEAVE = 2
WELCOME = 3
ALERT = 4
HELLO = 5
KINDS = (HEARTBEAT, LEAVE, WELCOME, ALERT, HELLO)
MAX_NAME_LEN = 253  # RFC 1123 subdomain, the limit Kubernetes puts on node names
TAG_LEN = 16  # 128-bit truncated HMAC-SHA256, as RFC 4868 uses for HMAC-SHA-256-128
U64_MAX = 2**64 - 1

_HEADER = struct.Struct("!4sBBBBQQQQQB")
HEADER_LEN = _HEADER.size  # 49
MAX_DATAGRAM_LEN = HEADER_LEN + 2 * MAX_NAME_LEN + TAG_LEN
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


class WireError(RaylbError, ValueError):
    """A datagram (or the fields to build one) is not valid."""


class MalformedError(WireError):
    """The bytes are not a datagram of this version."""


class UnauthenticatedError(WireError):
    """A well-formed datagram whose tag no key held by the receiver made."""


@dataclass(frozen=True)
class Datagram:
    kind: int  # HEARTBEAT, LEAVE, WELCOME, ALERT or HELLO
    node: str
    incarnation: int
    seq: int = 0
    snapshot_version: int = 0
    sent_ns: int = 0
    subject: str | None = None  # ALERT only: the node found silent ...
    subject_incarnation: int = 0  # ... and the process of it that was

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MalformedError(f"datagram kind={self.kind!r}: expected one of {KINDS}")
        _check_name(self.node)
        if (self.kind == ALERT) != (self.subject is not None):
            raise MalformedError(f"datagram kind={self.kind} subject={self.subject!r}: an alert, and only an alert, names a subject")
        if self.subject is not None:
            _check_name(self.subject)
        for field_name in ("incarnation", "seq", "snapshot_version", "sent_ns", "subject_incarnation"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
                raise MalformedError(f"datagram {field_name}={value!r}: expected an integer in 0..2**64-1")


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LEN or not _NAME.fullmatch(name):
        raise MalformedError(
            f"node name={name!r}: expected 1..{MAX_NAME_LEN} ASCII letters, digits, '.', '-', '_',"
            " starting and ending with a letter or digit"
        )


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:TAG_LEN]


def encode(datagram: Datagram, *, key: bytes) -> bytes:
    """The bytes of `datagram`, authenticated with `key`."""
    if not key:
        raise ValueError("encode: a membership key is required (raylb.keyring)")
    name = datagram.node.encode("ascii")
    subject = (datagram.subject or "").encode("ascii")
    body = _HEADER.pack(
        MAGIC, VERSION, datagram.kind, 0, len(name),
        datagram.incarnation, datagram.seq, datagram.snapshot_version, datagram.sent_ns,
        datagram.subject_incarnation, len(subject),
    ) + name + subject  # fmt: skip
    return body + _tag(key, body)


def decode(data: bytes, *, keys: Sequence[bytes]) -> Datagram:
    """Parse one datagram whose tag one of `keys` made; raise `MalformedError` or
    `UnauthenticatedError` (and only those) otherwise. The tag is checked only once the
    datagram is well formed, so junk costs no HMAC."""
    if not keys or not all(keys):
        raise ValueError("decode: at least one non-empty membership key is required (raylb.keyring)")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedError(f"datagram: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise MalformedError(f"datagram of {len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    magic, version, kind, flags, name_len, incarnation, seq, snap, sent_ns, subject_inc, subject_len = (
        _HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        raise MalformedError(f"datagram magic={magic!r}: expected {MAGIC!r}")
    if version != VERSION:
        raise MalformedError(f"datagram version={version}: this speaker speaks version {VERSION}")
    if kind not in KINDS:
        raise MalformedError(f"datagram kind={kind}: expected one of {KINDS}")
    if flags:
        raise MalformedError(f"datagram flags=0x{flags:02x}: unknown bits set")
    expected = HEADER_LEN + name_len + subject_len + TAG_LEN
    if len(data) != expected:
        raise MalformedError(
            f"datagram length={len(data)}: expected {expected} for a {name_len}-byte name and a {subject_len}-byte subject"
        )
    body_len = HEADER_LEN + name_len + subject_len
    body, tag = data[:body_len], data[body_len:]
    name = _ascii(body[HEADER_LEN : HEADER_LEN + name_len], "node name")
    subject = _ascii(body[HEADER_LEN + name_len :], "subject") if subject_len else None
    # Checks every field before the tag: a malformed datagram costs no HMAC.
    datagram = Datagram(
        kind=kind, node=name, incarnation=incarnation, seq=seq, snapshot_version=snap, sent_ns=sent_ns,
        subject=subject, subject_incarnation=subject_inc,
    )  # fmt: skip
    if not any(hmac.compare_digest(tag, _tag(key, body)) for key in keys):
        raise UnauthenticatedError(f"datagram from node={name!r}: authentication tag matches no membership key")
    return datagram


def _ascii(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedError(f"datagram {what}={raw!r}: not ASCII") from None
