"""Desired state from a real API server: raylb.desired.Desired over list + watch.

One thread per kind lists, then watches from the list's resourceVersion, and resumes from the
last resourceVersion it saw (events and bookmarks) whenever a stream ends: a server-side
timeout, a dropped connection, an API server restart. When the server no longer remembers
that resourceVersion (410 Gone) the thread relists and reports the *difference* between the
new list and what it already handed out (`relist_diff`), so the operator sees every change
exactly once, never a gap and never a duplicate. Errors back off exponentially with jitter;
a stream that ends at once without events counts as an error, so nothing ever busy-loops.

The operator gets nothing until every kind has completed its first list: an operator that
saw Services but not yet their pools could take their IPs away. Until then, and whenever a
kind keeps failing (e.g. RBAC forbids it), `errors()` names the kind and the error, for the
operator's Degraded condition, and the error is logged.

Objects are handed over as the API serves them (camelCase dicts, kind and apiVersion filled
in for list items), minus metadata.managedFields, which raylb never reads and which is often
half of an object's bytes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from raylb.cluster.kube.client import Api, GoneError, KindInfo, clone_api_client, kind_info
from raylb.desired import NAMESPACED, Change, Key, WireObject, key_of, meta_field, relist_diff
from raylb.errors import RaylbError, TemporaryError
from raylb.reconcile import OPERATOR_NAMESPACE

log = logging.getLogger(__name__)

# Server-side watch timeout. Short, so a watch that silently lost its server is replaced
# within seconds; each renewal costs one request and resumes without losing anything.
WATCH_TIMEOUT_S = 10.0
# Items per list page: bounds one response's size on a large cluster.
LIST_PAGE_SIZE = 500
# A watch that ends sooner than this without a single event is treated like an error.
MIN_HEALTHY_WATCH_S = 1.0
# How long stop() waits for each thread after shutting its stream.
STOP_JOIN_S = 5.0



@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with +-jitter: 0.2 s doubling to 5 s by default.

    Jitter keeps many watchers that failed together (an API server restart) from all coming
    back in the same instant.
    """

    initial_s: float = 0.2
    max_s: float = 5.0
    jitter: float = 0.2  # fraction of the delay, either way

    def delay_s(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        base = min(self.max_s, self.initial_s * 2 ** min(attempt, 32))
        return base * (1.0 + self.jitter * (2.0 * rand() - 1.0))


# ---- pure parts ----------------------------------------------------------------------------


def normalize(obj: dict[str, Any], info: KindInfo) -> dict[str, Any]:
    """Fill in kind/apiVersion (list items lack them) and drop metadata.managedFields."""
    obj.setdefault("kind", info.kind)
    obj.setdefault("apiVersion", info.api_version)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def watch_error(event: Mapping[str, Any], *, what: str) -> RaylbError:
    """The error an ERROR watch event stands for (410 -> GoneError, so the caller relists)."""
    status = event.get("object") or {}
    code = status.get("code")
    message = f"watch {what}: {status.get('reason', 'error')} (HTTP {code}): {status.get('message', '')}"
    return GoneError(message, delay_s=0.0) if code == 410 else TemporaryError(message)


# ---- one kind ------------------------------------------------------------------------------


class KindWatcher:
    """List + watch of one kind; `state` is exactly what it has emitted so far."""

    def __init__(
        self,
        api: Api,
        info: KindInfo,
        *,
        namespace: str | None,
        emit: Callable[[list[Change]], None],
        watch_timeout_s: float = WATCH_TIMEOUT_S,
    ) -> None:
        self.api = api
        self.info = info
        self.namespace = namespace
        self.path = info.collection_path(namespace)
        self.what = info.describe(namespace)
        self.emit = emit
        self.watch_timeout_s = watch_timeout_s
        self.state: dict[Key, WireObject] = {}
        self.resource_version: str | None = None  # None: the next step lists
        self.synced = False  # the first list has been emitted
        self.relists = 0  # lists done after the first (410 Gone)

    def step(self) -> None:
        """One list (when there is no resourceVersion to resume from) or one watch stream."""
        if self.resource_version is None:
            self.relist()
        else:
            self.watch_once()

    def relist(self) -> None:
        items: list[dict[str, Any]] = []
        query: list[tuple[str, str]] = [("limit", str(LIST_PAGE_SIZE))]
        while True:
            page = self.api.request("GET", self.path, what=self.what, query=query)
            items.extend(normalize(item, self.info) for item in page.get("items") or [])
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            query = [("limit", str(LIST_PAGE_SIZE)), ("continue", meta["continue"])]
        changes = relist_diff(self.info.kind, self.state, items)
        if self.synced:
            self.relists += 1
        self.state = {key_of(obj): obj for obj in items}
        self.resource_version = meta.get("resourceVersion")
        if changes or not self.synced:
            self.synced = True
            self.emit(changes)

    def watch_once(self, *, on_open: Callable[[], None] | None = None) -> int:
        """Follow one watch stream until it ends; returns how many lines it carried."""
        assert self.resource_version is not None
        # Spread renewals so the watchers of one process do not all reconnect together.
        timeout_s = int(self.watch_timeout_s * random.uniform(1.0, 1.5))
        query = [
            ("watch", "true"),
            ("resourceVersion", self.resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(max(1, timeout_s))),
        ]
        lines = 0
        events = self.api.stream(self.path, what=self.what, query=query, read_timeout_s=timeout_s + 10.0)
        if on_open is not None:
            on_open()
        for event in events:
            lines += 1
            self._apply(event)
        return lines

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            error = watch_error(event, what=self.what)
            if isinstance(error, GoneError):
                self.resource_version = None
            raise error
        rv = meta_field(obj, "resourceVersion")
        if kind == "BOOKMARK":
            self.resource_version = rv or self.resource_version
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise TemporaryError(f"watch {self.what}: unknown event type {kind!r}")
        obj = normalize(dict(obj), self.info)
        key = key_of(obj)
        if kind == "DELETED":
            self.state.pop(key, None)
        else:
            self.state[key] = obj
        self.resource_version = rv or self.resource_version
        self.emit([Change(kind, self.info.kind, obj)])

    def run(
        self,
        stop: threading.Event,
        *,
        on_error: Callable[[str, RaylbError | None], None],
        backoff: Backoff,
    ) -> None:
        """step() until `stop` is set; errors are reported, then waited out with backoff."""
        attempt = 0
        while not stop.is_set():
            started = time.monotonic()
            listing = self.resource_version is None
            try:
                if listing:
                    self.relist()
                    lines = 1
                else:
                    lines = self.watch_once(on_open=lambda: on_error(self.info.kind, None))
            except RaylbError as exc:
                if stop.is_set():
                    return
                if isinstance(exc, GoneError) and not listing:
                    # Routine (compaction, a restarted API server): relist at once, not an error.
                    log.info("%s; relisting", exc)
                    self.resource_version = None
                    continue
                on_error(self.info.kind, exc)
                stop.wait(backoff.delay_s(attempt))
                attempt += 1
                continue
            except Exception as exc:  # noqa: BLE001 - a watcher never dies; report and retry
                if stop.is_set():
                    return
                log.exception("watch %s: unexpected error", self.what)
                on_error(self.info.kind, TemporaryError(f"watch {self.what}: {type(exc).__name__}: {exc}"))
                stop.wait(backoff.delay_s(attempt))
                attempt += 1
                continue
            on_error(self.info.kind, None)
            if lines == 0 and time.monotonic() - started < MIN_HEALTHY_WATCH_S:
                stop.wait(backoff.delay_s(attempt))  # an empty, instant stream: never spin
                attempt += 1
            else:
                attempt = 0


# ---- all kinds -----------------------------------------------------------------------------


class KubeDesired:
    """raylb.desired.Desired over the real API server; threads start at construction."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        operator_namespace: str = OPERATOR_NAMESPACE,
        kinds: Sequence[str] = tuple(NAMESPACED),
        watch_timeout_s: float = WATCH_TIMEOUT_S,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.operator_namespace = operator_namespace
        self.api = Api(clone_api_client(api_client, pool_maxsize=len(kinds) + 2))
        self.backoff = backoff
        self._cond = threading.Condition()
        self._queue: deque[Change] = deque()
        self._errors: dict[str, RaylbError] = {}
        self._stop = threading.Event()
        self.watchers: dict[str, KindWatcher] = {}
        for kind in kinds:
            info = kind_info(kind)
            namespace = operator_namespace if info.operator_namespace_only else None
            self.watchers[kind] = KindWatcher(
                self.api, info, namespace=namespace, emit=self._emit, watch_timeout_s=watch_timeout_s
            )
        self._threads = [
            threading.Thread(
                target=watcher.run, args=(self._stop,), kwargs={"on_error": self._on_error, "backoff": backoff},
                name=f"raylb-watch-{kind}", daemon=True,
            )
            for kind, watcher in self.watchers.items()
        ]
        for thread in self._threads:
            thread.start()

    # ---- raylb.desired.Desired -------------------------------------------------------------

    def wait_changes(self, *, timeout_s: float) -> list[Change]:
        """Changes since the last call; the first non-empty answer holds every object as ADDED.

        Nothing is returned before every kind has been listed once (see the module docstring).
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not (self._queue and self._all_synced()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return []
                self._cond.wait(remaining)
            changes = list(self._queue)
            self._queue.clear()
            return changes

    # ---- health ----------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Every kind has been listed at least once."""
        with self._cond:
            return self._all_synced()

    def errors(self) -> dict[str, RaylbError]:
        """kind -> the error its watcher is currently stuck on (empty when all are healthy)."""
        with self._cond:
            return dict(self._errors)

    def stop(self) -> None:
        """End every watch thread (promptly: open streams are shut) and close the connections."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.api.shutdown()
        for thread in self._threads:
            thread.join(STOP_JOIN_S)
        self.api.close()

    def __enter__(self) -> KubeDesired:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- internals -------------------------------------------------------------------------

    def _all_synced(self) -> bool:
        return all(w.synced for w in self.watchers.values())

    def _emit(self, changes: list[Change]) -> None:
        with self._cond:
            self._queue.extend(changes)
            self._cond.notify_all()

    def _on_error(self, kind: str, error: RaylbError | None) -> None:
        with self._cond:
            previous = self._errors.get(kind)
            if error is None:
                if previous is not None:
                    log.info("watch of %s recovered", kind)
                    del self._errors[kind]
                return
            self._errors[kind] = error
        if previous is None or str(previous) != str(error):
            level = logging.WARNING if isinstance(error, TemporaryError) else logging.ERROR
            log.log(level, "watch of %s: %s", kind, error)
