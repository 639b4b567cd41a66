"""Small socket helpers: a free loopback port, and waiting for a server to listen on one (the
Ray Client server of a freshly started head, an sshd started for a test). Standard library only."""

from __future__ import annotations

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing listens on now (bound, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 60.0,
                  interval: float = 0.2) -> None:
    """Return once a connection to host:port succeeds; after `timeout` seconds re-raise the last
    connection error (a server that starts listening a moment after its process: the Ray Client
    server after the head)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)
