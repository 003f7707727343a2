"""The Kubernetes adapter's pure parts: relist diff, backoff, error translation, the watch loop
driven by a scripted fake API, and the small functions behind KubeResults.

The real API server exercises the same code in tests/kube; here every branch is reachable on
purpose, including the ones a real server produces only rarely (410 mid-stream, an empty
stream that ends at once, a server error on relist).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from raylb.cluster.kube.client import (
    KINDS,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    build_api_client,
    translate,
)
from raylb.cluster.kube.results import ingress_for, l2_status_name, merge_conditions
from raylb.cluster.kube.source import Backoff, KindWatcher, normalize, watch_error
from raylb.desired import relist_diff
from raylb.desired import Change, Ref, World
from raylb.errors import PermanentError, TemporaryError


def svc(name: str, rv: str, *, ns: str = "a", uid: str | None = None) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"namespace": ns, "name": name, "resourceVersion": rv,
                                            "uid": uid or f"uid-{ns}-{name}"}}


def keyed(*objs: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs}


def summary(changes: list[Change]) -> list[tuple[str, str, str]]:
    return [(c.type, c.ref.key, c.obj["metadata"]["resourceVersion"]) for c in changes]


# ---- relist_diff ---------------------------------------------------------------------------

RELIST_CASES = {
    "first list: everything ADDED, sorted": (
        [], [svc("b", "2"), svc("a", "1")], [("ADDED", "a/a", "1"), ("ADDED", "a/b", "2")]),
    "nothing changed: nothing emitted": ([svc("a", "1")], [svc("a", "1")], []),
    "new resourceVersion: MODIFIED": ([svc("a", "1")], [svc("a", "5")], [("MODIFIED", "a/a", "5")]),
    "vanished: DELETED with the last known object": ([svc("a", "1"), svc("b", "2")], [svc("b", "2")],
                                                     [("DELETED", "a/a", "1")]),
    "recreated under the same name: DELETED then ADDED": (
        [svc("a", "1", uid="old")], [svc("a", "7", uid="new")], [("DELETED", "a/a", "1"), ("ADDED", "a/a", "7")]),
    "same name in two namespaces are two objects": (
        [svc("x", "1", ns="n1")], [svc("x", "1", ns="n1"), svc("x", "3", ns="n2")], [("ADDED", "n2/x", "3")]),
    "everything vanished": ([svc("a", "1"), svc("b", "2")], [], [("DELETED", "a/a", "1"), ("DELETED", "a/b", "2")]),
}


@pytest.mark.parametrize("name", sorted(RELIST_CASES))
def test_relist_diff(name: str) -> None:
    known, listed, expected = RELIST_CASES[name]
    assert summary(relist_diff("Service", keyed(*known), listed)) == expected


objects = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.tuples(st.sampled_from(["1", "2", "3"]), st.sampled_from(["u1", "u2"])),
    max_size=5,
)


@given(before=objects, after=objects)
def test_relist_diff_turns_what_readers_have_into_the_fresh_list(before: dict, after: dict) -> None:
    """Invariant: a reader that applies the diff ends with exactly the list, and every change
    is needed (no duplicate: an unchanged object never appears)."""
    known = [svc(n, rv, uid=uid) for n, (rv, uid) in before.items()]
    listed = [svc(n, rv, uid=uid) for n, (rv, uid) in after.items()]
    world = World()
    for obj in known:
        world.apply(Change("ADDED", "Service", obj))
    changes = relist_diff("Service", keyed(*known), listed)
    for change in changes:
        world.apply(change)
    assert dict(world.of_kind("Service")) == {Ref.of("Service", o): o for o in listed}
    unchanged = {n for n in before.keys() & after.keys() if before[n] == after[n]}
    assert not {c.ref.name for c in changes} & unchanged


# ---- small pure helpers --------------------------------------------------------------------


def test_normalize_fills_kind_and_drops_managed_fields() -> None:
    obj = {"metadata": {"name": "p", "managedFields": [{"manager": "x"}]}, "spec": {}}
    assert normalize(obj, KINDS["IPAddressPool"]) == {
        "metadata": {"name": "p"}, "spec": {}, "kind": "IPAddressPool", "apiVersion": "metallb.io/v1beta1"}
    assert normalize({"kind": "Keep", "apiVersion": "v9"}, KINDS["Node"])["kind"] == "Keep"


def test_watch_error_410_means_relist() -> None:
    gone = watch_error({"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}},
                       what="services")
    assert isinstance(gone, GoneError) and "too old" in str(gone)
    other = watch_error({"type": "ERROR", "object": {"code": 500, "message": "boom"}}, what="services")
    assert isinstance(other, TemporaryError) and not isinstance(other, GoneError)


@given(attempt=st.integers(0, 100), rand=st.floats(0.0, 0.999999))
def test_backoff_doubles_is_capped_and_jittered(attempt: int, rand: float) -> None:
    backoff = Backoff(initial_s=0.2, max_s=5.0, jitter=0.2)
    base = min(5.0, 0.2 * 2**attempt)
    delay = backoff.delay_s(attempt, rand=lambda: rand)
    assert base * 0.8 - 1e-9 <= delay <= base * 1.2 + 1e-9
    assert delay >= 0.16  # never a busy loop


def test_backoff_sequence() -> None:
    backoff = Backoff()
    assert [round(backoff.delay_s(a, rand=lambda: 0.5), 3) for a in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


PATHS = [
    ("Service", None, "/api/v1/services"),
    ("Service", "ns", "/api/v1/namespaces/ns/services"),
    ("EndpointSlice", None, "/apis/discovery.k8s.io/v1/endpointslices"),
    ("Node", "ignored", "/api/v1/nodes"),
    ("Namespace", None, "/api/v1/namespaces"),
    ("IPAddressPool", "metallb-system", "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools"),
    ("AddressPool", "metallb-system", "/apis/metallb.io/v1beta1/namespaces/metallb-system/addresspools"),
    ("ServiceL2Status", "m", "/apis/metallb.io/v1beta1/namespaces/m/servicel2statuses"),
]


@pytest.mark.parametrize(("kind", "namespace", "path"), PATHS)
def test_collection_paths(kind: str, namespace: str | None, path: str) -> None:
    assert KINDS[kind].collection_path(namespace) == path


def test_object_and_status_paths() -> None:
    assert KINDS["Service"].object_path("a", "web", subresource="status") == "/api/v1/namespaces/a/services/web/status"
    assert KINDS["Node"].object_path("", "n1") == "/api/v1/nodes/n1"
    assert KINDS["Service"].describe("a", "web", subresource="status") == "services/status a/web"
    assert KINDS["IPAddressPool"].describe("m", "p") == "ipaddresspools.metallb.io m/p"


def test_the_kinds_table_covers_every_watched_kind() -> None:
    from raylb.desired import NAMESPACED

    for kind, namespaced in NAMESPACED.items():
        assert KINDS[kind].namespaced is namespaced, kind


def _api_exception(status: int, message: str, headers: dict[str, str] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="reason")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    exc.headers = headers or {}
    return exc


TRANSLATE_CASES = [
    (403, ForbiddenError, PermanentError, "forbidden"),
    (422, InvalidError, PermanentError, "invalid"),
    (404, NotFoundError, PermanentError, "not found"),
    (401, PermanentError, PermanentError, "unauthorized"),
    (400, PermanentError, PermanentError, "rejected"),
    (409, ConflictError, TemporaryError, "conflict"),
    (410, GoneError, TemporaryError, "gone"),
    (429, TemporaryError, TemporaryError, "too many requests"),
    (500, TemporaryError, TemporaryError, "server error"),
    (503, TemporaryError, TemporaryError, "server error"),
]


@pytest.mark.parametrize(("status", "cls", "family", "words"), TRANSLATE_CASES)
def test_translate_by_status(status: int, cls: type, family: type, words: str) -> None:
    error = translate(_api_exception(status, "the server's words"), verb="update", what="services/status a/web")
    assert type(error) is cls and isinstance(error, family)
    assert str(error).startswith(f"update services/status a/web: {words} (HTTP {status})")
    assert "the server's words" in str(error)


def test_translate_429_waits_as_told() -> None:
    error = translate(_api_exception(429, "slow down", {"Retry-After": "3"}), verb="list", what="services")
    assert isinstance(error, TemporaryError) and error.delay_s == 3.0


def test_translate_connection_errors_are_temporary() -> None:
    error = translate(ConnectionRefusedError(111, "Connection refused"), verb="watch", what="nodes")
    assert isinstance(error, TemporaryError) and "watch nodes" in str(error) and "unreachable" in str(error)


# ---- the watch loop against a scripted API -------------------------------------------------


class ScriptedApi:
    """Answers list requests and watch streams from scripts; records what was asked."""

    def __init__(self, lists: list[Any], streams: list[Any]) -> None:
        self.lists, self.streams = list(lists), list(streams)
        self.watched_from: list[str] = []

    def request(self, method: str, path: str, *, what: str, query: Any = None, **_: Any) -> dict[str, Any]:
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def stream(self, path: str, *, what: str, query: list[tuple[str, str]], read_timeout_s: float) -> Iterator[Any]:
        self.watched_from.append(dict(query)["resourceVersion"])
        script = self.streams.pop(0)
        if isinstance(script, Exception):
            raise script

        def lines() -> Iterator[Any]:
            for item in script:
                if isinstance(item, Exception):
                    raise item
                yield item

        return lines()


def page(*objs: dict[str, Any], rv: str) -> dict[str, Any]:
    return {"items": [dict(o) for o in objs], "metadata": {"resourceVersion": rv}}


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


def test_watcher_resumes_from_the_last_seen_version_and_relists_on_410() -> None:
    api = ScriptedApi(
        lists=[page(svc("a", "1"), svc("b", "2"), rv="10"),
               page(svc("a", "1"), svc("c", "14"), rv="15")],  # after 410: b gone, c new
        streams=[
            [event("MODIFIED", svc("a", "11")), {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}],
            [TemporaryError("connection reset")],
            [event("ERROR", {"code": 410, "message": "too old resource version"})],
        ],
    )
    emitted: list[Change] = []
    watcher = KindWatcher(api, KINDS["Service"], namespace=None, emit=emitted.extend)  # type: ignore[arg-type]
    watcher.step()  # list
    assert watcher.synced and summary(emitted) == [("ADDED", "a/a", "1"), ("ADDED", "a/b", "2")]
    watcher.step()  # watch from the list's version
    with pytest.raises(TemporaryError):
        watcher.step()  # dropped: resumes from the bookmark
    with pytest.raises(GoneError):
        watcher.step()
    assert watcher.resource_version is None
    watcher.step()  # relist: the difference only
    assert api.watched_from == ["10", "12", "12"]
    assert summary(emitted[2:]) == [("MODIFIED", "a/a", "11"), ("MODIFIED", "a/a", "1"), ("DELETED", "a/b", "2"),
                                    ("ADDED", "a/c", "14")]
    assert watcher.relists == 1 and watcher.resource_version == "15"


def test_run_backs_off_on_errors_and_on_instant_empty_streams() -> None:
    """Errors and empty, instant streams wait with growing delays; a working stream resets them."""
    api = ScriptedApi(
        lists=[TemporaryError("503"), TemporaryError("503"), page(rv="5")],
        streams=[[], [], [event("ADDED", svc("a", "6"))], TemporaryError("reset")],
    )
    emitted: list[Change] = []
    errors: list[tuple[str, Any]] = []
    waits: list[float] = []
    stop = threading.Event()

    class RecordingStop:
        def is_set(self) -> bool:
            return stop.is_set()

        def wait(self, seconds: float) -> bool:
            waits.append(round(seconds, 3))
            if len(waits) >= 5:
                stop.set()
            return stop.is_set()

    watcher = KindWatcher(api, KINDS["Service"], namespace=None, emit=emitted.extend)  # type: ignore[arg-type]
    watcher.run(RecordingStop(), on_error=lambda kind, e: errors.append((kind, e)),  # type: ignore[arg-type]
                backoff=Backoff(initial_s=1.0, max_s=8.0, jitter=0.0))
    # list fails twice (1, 2), lists, two empty instant streams (1, 2: reset by the good list
    # first), one stream with an event (no wait, resets), then the reset error (1).
    assert waits == [1.0, 2.0, 1.0, 2.0, 1.0]
    assert summary(emitted) == [("ADDED", "a/a", "6")]
    reported = [e for _, e in errors if e is not None]
    assert [str(e) for e in reported] == ["503", "503", "reset"]
    assert errors[-1][1] is not None  # still failing when stopped: errors() would show it


# ---- KubeResults' pure helpers -------------------------------------------------------------


def test_l2_status_name_is_deterministic_valid_and_distinct() -> None:
    names = {l2_status_name(Ref("Service", ns, n)) for ns in ("a", "b", "a-b") for n in ("x", "y", "b-x")}
    assert len(names) == 9
    assert l2_status_name(Ref("Service", "a", "x")) == l2_status_name(Ref("Service", "a", "x"))
    assert all(n.startswith("l2-") and len(n) == 19 and n == n.lower() for n in names)
    assert l2_status_name(Ref("Service", "a-b", "c")) != l2_status_name(Ref("Service", "a", "b-c"))


def test_merge_conditions_keeps_transition_time_while_status_stays() -> None:
    current = [{"type": "Available", "status": "True", "reason": "Ok", "message": "",
                "lastTransitionTime": "2024-01-01T00:00:00Z"},
               {"type": "Degraded", "status": "False", "reason": "Ok", "message": "",
                "lastTransitionTime": "2024-01-01T00:00:00Z"}]
    wanted = [{"type": "Available", "status": "True", "reason": "Ok"},
              {"type": "Degraded", "status": "True", "reason": "Forbidden", "message": "403"}]
    merged = merge_conditions(current, wanted, now="2025-02-02T00:00:00Z")
    assert merged[0] == current[0]
    assert merged[1]["lastTransitionTime"] == "2025-02-02T00:00:00Z" and merged[1]["message"] == "403"
    assert merge_conditions(merged, wanted, now="2030-01-01T00:00:00Z") == merged  # idempotent
    assert merge_conditions([], [{"type": "A", "status": "True", "reason": "R", "observedGeneration": "3"}],
                            now="t")[0]["observedGeneration"] == 3


def test_ingress_keeps_server_fields_of_known_ips() -> None:
    current = [{"ip": "198.18.0.1", "ipMode": "VIP"}]
    assert ingress_for(current, ["198.18.0.1", "2001:db8:18::1"]) == [
        {"ip": "198.18.0.1", "ipMode": "VIP"}, {"ip": "2001:db8:18::1"}]
    assert ingress_for(current, []) == []


def test_run_relists_at_once_on_410_without_reporting_an_error() -> None:
    api = ScriptedApi(
        lists=[page(svc("a", "1"), rv="5"), page(svc("a", "7"), rv="8")],
        streams=[[event("ERROR", {"code": 410, "message": "too old resource version: 5 (6)"})],
                 [event("ADDED", svc("b", "9"))]],
    )
    emitted: list[Change] = []
    errors: list[Any] = []
    waits: list[float] = []

    class StopAfterTwoStreams:
        def is_set(self) -> bool:
            return not api.streams

        def wait(self, seconds: float) -> bool:
            waits.append(seconds)
            return False

    watcher = KindWatcher(api, KINDS["Service"], namespace=None, emit=emitted.extend)  # type: ignore[arg-type]
    watcher.run(StopAfterTwoStreams(), on_error=lambda kind, e: errors.append(e),  # type: ignore[arg-type]
                backoff=Backoff())
    assert waits == []
    assert all(e is None for e in errors)
    assert summary(emitted) == [("ADDED", "a/a", "1"), ("MODIFIED", "a/a", "7"), ("ADDED", "a/b", "9")]
    assert api.watched_from == ["5", "8"] and watcher.relists == 1


def test_build_api_client_without_any_credentials_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(PermanentError, match=r"no Kubernetes credentials: .*\$KUBECONFIG.*in-cluster.*\.kube/config"):
        build_api_client()
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    with pytest.raises(PermanentError, match=r"cannot load Kubernetes credentials from .*broken.kubeconfig"):
        build_api_client(broken)
