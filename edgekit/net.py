"""Small socket helpers: a free loopback port, waiting for a server to listen on one (the
Ray Client server of a freshly started head, an sshd started for a test), and asking a port
whether it speaks HTTP/2 (gRPC, as Ray's GCS and Ray Client server do). Standard library only."""

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


# An HTTP/2 client connection starts with this preface and a SETTINGS frame (RFC 9113 3.4); a
# server (every gRPC server: Ray's GCS, the Ray Client server) answers with its own SETTINGS
# frame: 9-byte header, type 0x4, stream 0.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def http2_answer(host: str, port: int, timeout: float = 3.0) -> str | None:
    """None when host:port answers an HTTP/2 client preface with a SETTINGS frame within
    `timeout` seconds; otherwise what it did instead, in words ("sent nothing within 3 s",
    "answered 'SSH-2.0-OpenSSH_9.6'"). A port that refuses the connection raises OSError."""
    deadline = time.monotonic() + timeout
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        try:
            conn.sendall(HTTP2_PREFACE + _EMPTY_SETTINGS)
            while len(data) < 9:
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = conn.recv(256)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
        except OSError as exc:  # reset or broken pipe: not a server that speaks HTTP/2
            if not data:
                return f"closed the connection ({exc.strerror or exc})"
    if len(data) >= 9 and data[3] == 0x4 and data[5:9] == b"\x00\x00\x00\x00":
        return None
    if not data:
        return (f"sent nothing within {timeout:g} s" if time.monotonic() >= deadline
                else "closed the connection without answering")
    first = data.split(b"\n", 1)[0].strip()[:60].decode("ascii", "replace")
    printable = "".join(c if c.isprintable() else "?" for c in first)
    return f"answered {printable!r}, which is not HTTP/2"
