"""Redis for Ray's GCS fault tolerance, on the lab's control host.

Without it the GCS keeps the cluster's tables (nodes, actors, jobs, the cluster ID) in memory:
a new head is a new cluster, every raylet exits on the cluster-ID mismatch and takes its
speaker with it. With the tables in Redis a restarted head reads them back, the raylets
reconnect to the same cluster, and the detached operator and allocator are restarted.

Redis runs in the control namespace on the control host's address (like a Redis next to the
head in a real deployment), in its own session so that killing the Ray head spares it. It
keeps an append-only file in the lab's state directory, so a Redis restart keeps the tables.
Anyone who can write to it can rewrite the cluster's tables, so it asks for a password, kept
in a file next to Ray's token (both mode 0600).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

from raylb.cluster.lab import hosts
from raylb.cluster.lab.topology import Host

REDIS_SERVER = "/usr/bin/redis-server"
#: The GCS has 6379 on the same address; Redis takes the next port.
REDIS_PORT = 6380
READY_TIMEOUT_S = 20.0
#: Files in the Redis work directory (the lab's state dir/redis), all readable by root only.
PASSWORD_FILE, CONFIG_FILE, LOG_FILE = "password", "redis.conf", "redis.log"


def write_secret(path: Path, *, nbytes: int = 32) -> str:
    """A fresh random secret in a file only its owner can read (kept if it already exists)."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_hex(nbytes)
    write_private(path, value + "\n")
    return value


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file created readable and writable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


class Redis:
    """Where a lab's Redis answers (`address`, on `host`) and where it keeps its files."""

    def __init__(self, *, host: Host, workdir: Path) -> None:
        self.host, self.workdir = host, workdir
        self.address = f"{host.ipv4}:{REDIS_PORT}"
        self.password_path = workdir / PASSWORD_FILE
        self.config_path, self.log_path = workdir / CONFIG_FILE, workdir / LOG_FILE

    def write_config(self) -> None:
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        password = write_secret(self.password_path)
        lines = [
            f"bind {self.host.ipv4}",
            f"port {REDIS_PORT}",
            "daemonize no",
            f"dir {self.workdir}",
            f"logfile {self.log_path}",
            # Every write is logged and replayed at start: a restarted Redis has the tables.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            f"requirepass {password}",
        ]
        write_private(self.config_path, "\n".join(lines) + "\n")

    def start(self) -> subprocess.Popen[Any]:
        """redis-server in the control namespace, in a session of its own."""
        if not self.config_path.exists():
            self.write_config()
        proc = hosts.popen(
            self.host.netns, [REDIS_SERVER, str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        hosts.wait_until(
            lambda: proc.poll() is None and hosts.tcp_open(self.host.netns, self.host.ipv4, REDIS_PORT),
            timeout_s=READY_TIMEOUT_S,
            what=f"Redis on {self.address} (log {self.log_path})",
        )
        return proc
