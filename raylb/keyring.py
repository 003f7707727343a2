"""The membership key: which keys a speaker signs and accepts with, and how a key is rotated.

Every membership datagram carries an HMAC (raylb.wire). The key is one shared secret per
cluster: with Kubernetes the Secret `raylb-memberlist` (data key `secretkey`) in the
operator namespace, which the operator creates with random bytes when it is absent, as
MetalLB's controller does for its memberlist Secret `metallb-memberlist`; without
Kubernetes the file named by `$RAYLB_MEMBERLIST_KEY_FILE` or the value of
`$RAYLB_MEMBERLIST_KEY` (raylb.actors.memberlist_key). The operator hands the key to every
speaker it starts and to running ones (`KeySet`); speakers never read it themselves.

Rotation without a failover. A speaker that signs with a key its peers do not accept yet is
dead to them, so a new key goes out in two steps, decided by `plan_keys` from what the
speakers report (fingerprints only, never keys):

1. while any speaker does not accept the new key: `KeySet(accept=(new,), sign=None)`: accept
   the new key as well, keep signing with the current one;
2. once every speaker accepts it: `KeySet(accept=(new,), sign=new)`: sign with the new key.
   The key signed with before stays accepted for `KEY_GRACE_S` (`KeyRing`), which covers
   speakers that get step 2 a little later than others, and datagrams in flight.

A speaker the operator cannot reach for longer than the grace period keeps signing with the
old key after its peers stopped accepting it, and they see it die: rotate while the speakers
are reachable (status shows each speaker's key fingerprints).

Everything here is pure: the caller passes `now_s` (monotonic seconds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raylb.errors import RaylbError

# 128 bits, the strength of the truncated tag (raylb.wire.TAG_LEN); MetalLB's generated
# memberlist keys are 128 random bytes, which qualify.
MIN_KEY_BYTES = 16
# How long a key stays accepted after a speaker stopped signing with it. The operator pushes
# step 2 to all speakers in one round (0.25 s) and waits at most 5 s for each
# (raylb.actors.ray_ops.CALL_TIMEOUT_S); 60 s covers a few slow rounds with a wide margin
# while keeping a retired (perhaps leaked) key useful to nobody for long.
KEY_GRACE_S = 60.0
FINGERPRINT_LEN = 8  # bytes of SHA-256 shown: enough to tell keys apart, useless to guess one


class MembershipKeyError(RaylbError, ValueError):
    """A membership key that cannot be used (too short, not bytes)."""


def check_key(key: object, *, where: str) -> bytes:
    """The key as bytes, or a KeyError_ naming `where` it came from."""
    if not isinstance(key, (bytes, bytearray)):
        raise MembershipKeyError(f"membership key from {where}: expected bytes, got {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise MembershipKeyError(
            f"membership key from {where}: {len(key)} bytes, at least {MIN_KEY_BYTES} needed "
            "(e.g. `openssl rand -base64 32`)"
        )
    return bytes(key)


def fingerprint(key: bytes) -> str:
    """A short public name of a key, for status and the operator's rotation plan."""
    return hashlib.sha256(b"raylb-memberlist-key\0" + key).digest()[:FINGERPRINT_LEN].hex()


@dataclass(frozen=True)
class KeySet:
    """What the operator tells a speaker: the keys to accept, and the key to sign with
    (None: keep signing with the key you sign with now, and keep accepting it)."""

    accept: tuple[bytes, ...]
    sign: bytes | None = None

    def __post_init__(self) -> None:
        if not self.accept:
            raise MembershipKeyError("membership key set: at least one key to accept is needed")
        for key in self.accept:
            check_key(key, where="the key set")
        if self.sign is not None and self.sign not in self.accept:
            raise MembershipKeyError("membership key set: the signing key must be one of the accepted keys")

    def __repr__(self) -> str:  # never print a key
        sign = fingerprint(self.sign) if self.sign is not None else None
        return f"KeySet(accept={[fingerprint(k) for k in self.accept]}, sign={sign})"


class KeyRing:
    """One speaker's keys: the one it signs with, the ones it accepts, the retired ones in grace."""

    def __init__(self, keys: KeySet, *, now_s: float, grace_s: float = KEY_GRACE_S) -> None:
        self.grace_s = grace_s
        self._sign = keys.sign if keys.sign is not None else keys.accept[0]
        self._accept: tuple[bytes, ...] = tuple(dict.fromkeys((self._sign, *keys.accept)))
        self._retired: dict[bytes, float] = {}  # key -> accepted until (monotonic s)

    @property
    def signing(self) -> bytes:
        return self._sign

    def update(self, keys: KeySet, *, now_s: float) -> bool:
        """Take a new key set; returns True if anything changed. Keys dropped from the set
        stay accepted for grace_s."""
        sign = keys.sign if keys.sign is not None else self._sign
        accept = tuple(dict.fromkeys((sign, *keys.accept)))
        if sign == self._sign and accept == self._accept:
            return False
        for key in self._accept:
            if key not in accept:
                self._retired[key] = now_s + self.grace_s
        for key in accept:
            self._retired.pop(key, None)
        self._sign, self._accept = sign, accept
        return True

    def verifying(self, now_s: float) -> tuple[bytes, ...]:
        """Keys a datagram may be signed with now: the signing key first (the common case),
        then the other accepted ones, then retired ones still in grace."""
        for key, until in list(self._retired.items()):
            if now_s >= until:
                del self._retired[key]
        return (*self._accept, *self._retired)

    def report(self, now_s: float) -> dict[str, Any]:
        """Fingerprints for status (and for `plan_keys`)."""
        self.verifying(now_s)
        return {
            "sign": fingerprint(self._sign),
            "accept": [fingerprint(k) for k in self._accept],
            "retiring": {fingerprint(k): round(until - now_s, 1) for k, until in self._retired.items()},
        }


def plan_keys(current: bytes, *, previous: Iterable[bytes] = (), reports: Mapping[str, Mapping[str, Any]]) -> KeySet:
    """The key set every speaker should hold, from the current key and what each speaker
    reported (`KeyRing.report`, or nothing yet for a speaker being started).

    `previous`: keys the operator knows were in use before `current` (this operator life); a
    speaker started during a rotation gets them so it accepts peers that still sign with one.
    """
    fp = fingerprint(current)
    if all(fp in (r.get("accept") or ()) for r in reports.values()):
        return KeySet(accept=(current,), sign=current)
    return accept_first(current, previous=previous)


def accept_first(current: bytes, *, previous: Iterable[bytes] = ()) -> KeySet:
    """Step 1 of a rotation: accept `current` (and the keys before it), keep signing as before."""
    older = tuple(k for k in dict.fromkeys(previous) if k != current)[:2]
    return KeySet(accept=(current, *older), sign=None)


def for_new_speaker(keys: KeySet) -> KeySet:
    """A speaker that is only being started has no key of its own to keep signing with: during
    step 1 it signs with the key before the current one (the one its peers still sign with)."""
    if keys.sign is not None:
        return keys
    return KeySet(accept=keys.accept, sign=keys.accept[1] if len(keys.accept) > 1 else keys.accept[0])


# --------------------------------------------------------------------------- where keys live

SECRET_NAME = "raylb-memberlist"  # in the operator namespace; MetalLB's is "metallb-memberlist"
SECRET_DATA_KEY = "secretkey"  # the data key MetalLB uses in its memberlist Secret
# Without Kubernetes: the key itself, or a file holding it (whitespace at the ends is ignored).
ENV_KEY = "RAYLB_MEMBERLIST_KEY"
ENV_KEY_FILE = "RAYLB_MEMBERLIST_KEY_FILE"
# A generated key: 64 random bytes, the HMAC-SHA256 block size (longer keys are hashed first).
GENERATED_KEY_BYTES = 64


def new_secret(namespace: str) -> dict[str, Any]:
    """The Secret the operator creates when none exists: a fresh random key."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": namespace, "labels": {"app.kubernetes.io/name": "raylb"}},
        "type": "Opaque",
        "data": {SECRET_DATA_KEY: base64.b64encode(secrets.token_bytes(GENERATED_KEY_BYTES)).decode("ascii")},
    }


def key_from_secret(obj: Mapping[str, Any], *, namespace: str) -> bytes:
    """The key in a Secret object (wire form: `data` base64, as the API server returns it)."""
    where = f"Secret {namespace}/{SECRET_NAME}"
    data = obj.get("data") or {}
    value = data.get(SECRET_DATA_KEY) if isinstance(data, Mapping) else None
    if not isinstance(value, str):
        raise MembershipKeyError(f"{where}: field data.{SECRET_DATA_KEY} is missing; delete the Secret to have a new one made")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MembershipKeyError(f"{where}: data.{SECRET_DATA_KEY} is not base64") from None
    return check_key(key, where=f"{where} data.{SECRET_DATA_KEY}")


def key_from_environment(environ: Mapping[str, str], *, read_file: Callable[[str], bytes]) -> bytes | None:
    """The key named by $RAYLB_MEMBERLIST_KEY_FILE (read with `read_file`) or given in
    $RAYLB_MEMBERLIST_KEY; None when neither is set."""
    path = environ.get(ENV_KEY_FILE)
    if path:
        try:
            raw = read_file(path)
        except OSError as err:
            raise MembershipKeyError(f"${ENV_KEY_FILE}={path}: cannot read it: {err.strerror or err}") from None
        return check_key(raw.strip(), where=f"${ENV_KEY_FILE}={path}")
    value = environ.get(ENV_KEY)
    if value:
        return check_key(value.strip().encode(), where=f"${ENV_KEY}")
    return None
