"""One Prometheus endpoint per process that owns numbers: `GET /metrics` on a small thread.

The families come from raylb.metrics (pure), built at scrape time by the `collect` callable the
owner passes in; this module only serves them. Ports follow MetalLB's conventions, shifted by
one where raylb may run next to MetalLB during a migration (as the heartbeat port is):

- speaker: `SPEAKER_PORT` on the node address (MetalLB's speaker serves 7472 on the node,
  hostNetwork; raylb's speaker takes 7473 so both fit on one node);
- operator (MetalLB's controller: Kubernetes client figures): `OPERATOR_PORT`;
- allocator (pool figures; in MetalLB also the controller): `ALLOCATOR_PORT`.
The in-cluster ports are listed in deploy/kuberay/raycluster.yaml next to the others.
Port 0 turns an endpoint off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.metrics_core import Metric

from raylb.metrics import CONTENT_TYPE, expose

log = logging.getLogger(__name__)

SPEAKER_PORT = 7473
OPERATOR_PORT = 7474
ALLOCATOR_PORT = 7475


class MetricsServer:
    """Serves `expose(collect())` at /metrics on (host, port) until `stop`."""

    def __init__(self, collect: Callable[[], Iterable[Metric]], *, host: str, port: int) -> None:
        self._collect = collect
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                try:
                    body = expose(outer._collect())
                except Exception as exc:  # noqa: BLE001 - a broken collector is a 500, never a dead server
                    log.exception("metrics collection failed")
                    self.send_error(500, f"collecting metrics failed: {type(exc).__name__}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: not logged
                return

        family = 10 if ":" in host else 2  # AF_INET6 / AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
        self._server = server_class((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="raylb-metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(collect: Callable[[], Iterable[Metric]], *, host: str, port: int) -> MetricsServer | None:
    """A started server, or None when `port` is 0 or the port is taken (logged: metrics are
    never a reason for the process itself to fail)."""
    if not port:
        return None
    try:
        return MetricsServer(collect, host=host, port=port)
    except OSError as err:
        log.error("metrics endpoint %s:%d not started: %s", host, port, err)
        return None
