"""The allocator actor: one named actor owning pool state.

Kubernetes is the source of truth for who holds which IP. A freshly started (or restarted)
allocator therefore refuses to allocate until it has been given the recorded assignments:
`sync` raises `NotRestored`, the operator reads the IPs written in Service status and calls
`restore`, and only then does allocation continue - so no service ever changes IP because
the allocator restarted. `AllocatorService` is the whole logic without Ray; the actor class
is a Ray wrapper around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from raylb.errors import AllocationError, TemporaryError
from raylb.metrics import Metric, allocator_families
from raylb.ipam.allocator import Allocator, Assignment
from raylb.ipam.request import ServiceRequest
from raylb.pools import Pool

ALLOCATOR_NAME = "raylb-allocator"

Outcome = Assignment | AllocationError


class NotRestored(TemporaryError):
    """The allocator (re)started and has not been given the recorded assignments yet."""


class AllocatorService:
    """Pool state behind a restore gate; every method is idempotent."""

    def __init__(self, metrics_port: int = 0) -> None:
        self._allocator = Allocator()
        self._restored = False
        self.restores = 0
        self._metrics: Any = None
        if metrics_port:
            self.serve_metrics(metrics_port)

    def restored(self) -> bool:
        return self._restored

    def restore(self, *, pools: Mapping[str, Pool], assignments: Iterable[Assignment]) -> tuple[str, ...]:
        """Rebuild state from what Kubernetes records; returns the services that must move."""
        allocator = Allocator(dict(pools))
        moved = allocator.restore(assignments)
        self._allocator, self._restored = allocator, True
        self.restores += 1
        return moved

    def sync(self, *, pools: Mapping[str, Pool], requests: Mapping[str, ServiceRequest]) -> dict[str, Outcome]:
        """Make state match: these pools, exactly these services. Returns each service's outcome.

        Services that already hold addresses are served first, so a newcomer can never take
        an address a known service still needs; then the rest in key order (deterministic).
        """
        if not self._restored:
            raise NotRestored("allocator has not restored the recorded assignments yet", delay_s=0.0)
        if dict(pools) != dict(self._allocator.pools):
            self._allocator.set_pools(dict(pools))
        for assignment in self._allocator.snapshot():
            if assignment.service not in requests:
                self._allocator.release(assignment.service)
        holders = sorted(k for k in requests if k in self._allocator)
        newcomers = sorted(k for k in requests if k not in self._allocator)
        outcomes: dict[str, Outcome] = {}
        for key in (*holders, *newcomers):
            try:
                outcomes[key] = self._allocator.allocate(requests[key])
            except AllocationError as exc:
                outcomes[key] = exc
        return outcomes

    def assignments(self) -> tuple[Assignment, ...]:
        return self._allocator.snapshot()

    def stats(self) -> dict[str, dict[str, object]]:
        return {name: stats.as_dict() for name, stats in self._allocator.stats().items()}

    def metrics(self) -> list[Metric]:
        """MetalLB's allocator families, exact at any pool size."""
        services: dict[str, int] = {}
        for assignment in self._allocator.snapshot():
            services[assignment.pool] = services.get(assignment.pool, 0) + 1
        return allocator_families(self.stats(), services)

    def serve_metrics(self, port: int) -> int:
        """Start this process's /metrics endpoint (idempotent); returns the port (0: off)."""
        if self._metrics is None:
            from raylb.actors.metrics_http import serve  # noqa: PLC0415

            self._metrics = serve(self.metrics, host="", port=port)
        return 0 if self._metrics is None else self._metrics.port

    def ping(self) -> bool:
        return True
