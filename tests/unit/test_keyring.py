"""The membership key: checks, where it comes from, the speaker's key ring, and the operator's
two-step rotation (raylb.keyring, raylb.actors.memberlist_key, the operator's use of both)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from raylb.actors.memberlist_key import REFRESH_S, SecretKeySource
from raylb.actors.operator import OperatorCore
from raylb.cluster.memory import MemoryCluster
from raylb.keyring import (
    ENV_KEY,
    ENV_KEY_FILE,
    KEY_GRACE_S,
    SECRET_DATA_KEY,
    SECRET_NAME,
    KeyRing,
    KeySet,
    MembershipKeyError,
    accept_first,
    check_key,
    fingerprint,
    for_new_speaker,
    key_from_environment,
    key_from_secret,
    new_secret,
    plan_keys,
)
from tests.unit.fakes import FakeKeys, FakeRay, LocalDesired
from tests.unit.test_operator_core import NODES, seed

K1, K2, K3 = (bytes([n]) * 32 for n in (1, 2, 3))
NS = "metallb-system"


def accepting(*keys: bytes) -> dict[str, Any]:
    return {"accept": [fingerprint(k) for k in keys]}


# ------------------------------------------------------------------------------ checks


@pytest.mark.parametrize(
    ("key", "message"),
    [(b"short", "5 bytes, at least 16 needed"), ("text", "expected bytes, got str"), (b"", "0 bytes")],
)
def test_unusable_keys_are_refused_naming_where_they_came_from(key: object, message: str) -> None:
    with pytest.raises(MembershipKeyError, match=f"membership key from here: {message}"):
        check_key(key, where="here")


def test_a_key_set_never_prints_a_key_and_signs_with_an_accepted_one() -> None:
    assert K1.hex() not in repr(KeySet(accept=(K1,), sign=K1)) and fingerprint(K1) in repr(KeySet(accept=(K1,)))
    with pytest.raises(MembershipKeyError, match="signing key must be one of the accepted"):
        KeySet(accept=(K1,), sign=K2)
    with pytest.raises(MembershipKeyError, match="at least one key"):
        KeySet(accept=())


# ------------------------------------------------------------------------- where from


def secret_with(value: object) -> dict[str, Any]:
    return {"data": {SECRET_DATA_KEY: value}}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({}, "field data.secretkey is missing"),
        (secret_with(5), "field data.secretkey is missing"),
        (secret_with("not base64!"), "data.secretkey is not base64"),
        (secret_with(base64.b64encode(b"short").decode()), "5 bytes, at least 16"),
    ],
)
def test_a_bad_secret_is_refused_naming_secret_and_field(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(MembershipKeyError, match=f"Secret {NS}/{SECRET_NAME}.*{message}"):
        key_from_secret(obj, namespace=NS)


def test_a_new_secret_holds_a_fresh_random_key_under_metallbs_data_key() -> None:
    one, two = new_secret(NS), new_secret(NS)
    assert one["metadata"] == {"name": "raylb-memberlist", "namespace": NS, "labels": {"app.kubernetes.io/name": "raylb"}}
    assert len(key_from_secret(one, namespace=NS)) == 64
    assert key_from_secret(one, namespace=NS) != key_from_secret(two, namespace=NS)


def test_environment_file_first_then_value_then_nothing(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"  from-the-file-0123456789\n")
    read = lambda p: Path(p).read_bytes()  # noqa: E731
    assert key_from_environment({ENV_KEY_FILE: str(path), ENV_KEY: "x" * 20}, read_file=read) == b"from-the-file-0123456789"
    assert key_from_environment({ENV_KEY: "from-the-variable-0123"}, read_file=read) == b"from-the-variable-0123"
    assert key_from_environment({}, read_file=read) is None
    with pytest.raises(MembershipKeyError, match=f"\\${ENV_KEY_FILE}={tmp_path}/missing: cannot read it"):
        key_from_environment({ENV_KEY_FILE: str(tmp_path / "missing")}, read_file=read)
    with pytest.raises(MembershipKeyError, match=f"\\${ENV_KEY}: 3 bytes"):
        key_from_environment({ENV_KEY: "abc"}, read_file=read)


class StoreSecrets:
    """SecretStore over a MemoryCluster in this process (as MemorySecrets does over the actor)."""

    def __init__(self, cluster: MemoryCluster) -> None:
        self.cluster, self.creates = cluster, 0

    def get(self) -> dict[str, Any] | None:
        from raylb.desired import Ref  # noqa: PLC0415

        return self.cluster.get(Ref("Secret", NS, SECRET_NAME))

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.creates += 1
        self.cluster.apply("Secret", obj)
        return self.get() or obj


def test_the_secret_is_created_once_and_then_read_and_the_environment_wins() -> None:
    store = StoreSecrets(MemoryCluster())
    source = SecretKeySource(store, namespace=NS, environ={})
    first = source.read()
    assert source.read() == first and store.creates == 1
    assert SecretKeySource(store, namespace=NS, environ={ENV_KEY: "k" * 16}).read() == b"k" * 16


# ------------------------------------------------------------------------- key ring


def test_a_ring_signs_with_its_key_accepts_the_new_one_and_keeps_a_retired_one_for_the_grace() -> None:
    ring = KeyRing(KeySet(accept=(K1,)), now_s=0.0)
    assert ring.signing == K1 and ring.verifying(0.0) == (K1,)
    assert ring.update(KeySet(accept=(K2,), sign=None), now_s=1.0)  # step 1
    assert ring.signing == K1 and ring.verifying(1.0) == (K1, K2)
    assert not ring.update(KeySet(accept=(K2,), sign=None), now_s=1.5)  # the same again: no change
    assert ring.update(KeySet(accept=(K2,), sign=K2), now_s=2.0)  # step 2
    assert ring.signing == K2 and ring.verifying(2.0) == (K2, K1)
    assert ring.report(2.0)["retiring"] == {fingerprint(K1): KEY_GRACE_S}
    assert ring.verifying(2.0 + KEY_GRACE_S) == (K2,)


# (current key, previous keys, what the speakers report) -> the key set to push
PLANS = {
    "steady: everyone accepts it": (K2, [K1], {"a": accepting(K2), "b": accepting(K2, K1)}, KeySet((K2,), K2)),
    "no speaker yet": (K1, [], {}, KeySet((K1,), K1)),
    "one speaker lags": (K2, [K1], {"a": accepting(K2, K1), "b": accepting(K1)}, KeySet((K2, K1), None)),
    "a speaker reports nothing yet": (K2, [K1], {"a": accepting(K2), "b": {}}, KeySet((K2, K1), None)),
    "two rotations quickly": (K3, [K2, K1], {"a": accepting(K2)}, KeySet((K3, K2, K1), None)),
}


@pytest.mark.parametrize(("current", "previous", "reports", "want"), PLANS.values(), ids=PLANS.keys())
def test_plan_signs_with_the_new_key_only_once_every_speaker_accepts_it(
    current: bytes, previous: list[bytes], reports: dict[str, Any], want: KeySet
) -> None:
    assert plan_keys(current, previous=previous, reports=reports) == want


def test_a_speaker_started_during_a_rotation_signs_with_the_key_its_peers_accept() -> None:
    assert for_new_speaker(accept_first(K2, previous=[K1])) == KeySet(accept=(K2, K1), sign=K1)
    assert for_new_speaker(KeySet((K2,), K2)) == KeySet((K2,), K2)
    assert for_new_speaker(accept_first(K1)) == KeySet((K1,), K1)


# ------------------------------------------------------------------------- the operator


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def operator() -> Iterator[tuple[OperatorCore, FakeRay, FakeKeys, Clock]]:
    cluster = MemoryCluster()
    seed(cluster)
    ray, keys, clock = FakeRay(NODES), FakeKeys(K1), Clock()
    yield OperatorCore(desired=LocalDesired(cluster), results=cluster, ray=ray, key_source=keys, clock=clock), ray, keys, clock


def rounds(core: OperatorCore, clock: Clock, n: int = 3, *, advance_s: float = 0.25) -> None:
    for _ in range(n):
        clock.now += timedelta(seconds=advance_s)
        core.step(timeout_s=0)


def test_the_operator_starts_every_speaker_with_the_key_and_reads_it_only_every_refresh(operator: Any) -> None:
    core, ray, keys, clock = operator
    rounds(core, clock, 8)
    assert set(ray.started_with) == set(NODES)
    assert all(k == KeySet((K1,), K1) for k in ray.started_with.values())
    assert keys.reads == 1
    assert core.status()["membership_key"] == fingerprint(K1)
    rounds(core, clock, 1, advance_s=REFRESH_S)
    assert keys.reads == 2


def test_a_changed_secret_is_rolled_out_in_two_steps_and_no_speaker_ever_signs_unaccepted(operator: Any) -> None:
    core, ray, keys, clock = operator
    rounds(core, clock)
    keys.key = K2
    seen: list[dict[str, tuple[str, tuple[str, ...]]]] = []
    for _ in range(4):
        rounds(core, clock, 1, advance_s=REFRESH_S)
        views = {n: r.report(0.0) for n, r in ray.keyrings.items()}
        seen.append({n: (v["sign"], tuple(v["accept"])) for n, v in views.items()})
        accepted_by_all = set.intersection(*(set(v["accept"]) | set(v["retiring"]) for v in views.values()))
        assert all(v["sign"] in accepted_by_all for v in views.values())
    new, old = fingerprint(K2), fingerprint(K1)
    assert seen[0] == dict.fromkeys(NODES, (old, (old, new)))  # step 1: accept, sign as before
    assert seen[-1] == dict.fromkeys(NODES, (new, (new,)))  # step 2: sign with the new key


def test_without_a_key_no_speaker_starts_and_a_later_read_failure_keeps_the_key(operator: Any) -> None:
    core, ray, keys, clock = operator
    keys.error = MembershipKeyError("membership key from Secret metallb-system/raylb-memberlist: 3 bytes")
    rounds(core, clock)
    assert ray.speakers == {} and "3 bytes" in core.counters.last_error
    keys.error = None
    rounds(core, clock, 1, advance_s=REFRESH_S)
    assert set(ray.speakers) == set(NODES)
    keys.error = OSError("API server unreachable")
    rounds(core, clock, 2, advance_s=REFRESH_S)
    assert core.status()["membership_key"] == fingerprint(K1) and set(ray.speakers) == set(NODES)
