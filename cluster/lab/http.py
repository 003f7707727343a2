"""The tiny HTTP server each lab node runs on port 80, standing in for kube-proxy plus pods.

It answers every GET with status 200 and the node's name as the whole body (no newline), so a
client that reaches a VIP learns which node took the traffic. One dual-stack socket serves IPv4
and IPv6, and because the lab routes the VIP ranges as local on every node, it also serves any
VIP the node's speaker wins.

Run it inside a node namespace: python -m raylb.cluster.lab.http --name node1
"""

from __future__ import annotations

import argparse
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_PORT = 80
#: Header that repeats the node name, for clients that only look at headers.
NODE_HEADER = "X-Raylb-Node"


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        # IPv4 clients arrive as v4-mapped addresses on the same socket (RFC 3493 section 3.7).
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def make_handler(node_name: str) -> type[BaseHTTPRequestHandler]:
    body = node_name.encode()

    class NodeNameHandler(BaseHTTPRequestHandler):
        server_version = "raylb-lab"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header(NODE_HEADER, node_name)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one line per request would flood the log during failover probing

    return NodeNameHandler


def serve(node_name: str, *, port: int = DEFAULT_PORT) -> None:
    with DualStackServer(("::", port), make_handler(node_name)) as server:
        server.serve_forever(poll_interval=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="node name to answer with")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    serve(args.name, port=args.port)


if __name__ == "__main__":
    main()
