"""edgekit.net: a free loopback port, and waiting for a server that starts listening late."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from edgekit.net import free_port, wait_for_port


def test_wait_for_port_returns_once_a_late_server_listens():
    port = free_port()
    server = socket.socket()
    listening = threading.Event()

    def listen_late() -> None:
        time.sleep(0.3)  # nothing listens during the first attempts
        server.bind(("127.0.0.1", port))
        server.listen()
        listening.set()

    thread = threading.Thread(target=listen_late)
    thread.start()
    try:
        wait_for_port(port, timeout=30.0, interval=0.05)
        assert listening.is_set()  # it did not return before the server listened
    finally:
        thread.join()
        server.close()


def test_wait_for_port_raises_the_connection_error_after_the_timeout():
    with pytest.raises(ConnectionRefusedError):
        wait_for_port(free_port(), timeout=0.2, interval=0.05)


# ---------------------------------------------------------------- not a Ray port (issue 25, item 7)
class _PlainServer:
    """A TCP listener on 127.0.0.1 that is not Ray: it accepts and then sends `greeting`
    (nothing when None), reads whatever comes and keeps the connection open until closed."""

    def __init__(self, greeting: bytes | None) -> None:
        self.greeting = greeting
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            if self.greeting is not None:
                conn.sendall(self.greeting)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.fixture(params=[None, b"SSH-2.0-OpenSSH_9.6\r\n",
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"],
                ids=["silent", "ssh", "http1"])
def plain_server(request):
    server = _PlainServer(request.param)
    yield server
    server.close()


def test_http2_answer_says_what_a_plain_tcp_server_did(plain_server):
    from edgekit.net import http2_answer

    answer = http2_answer("127.0.0.1", plain_server.port, timeout=1.0)
    expected = {None: "sent nothing within 1 s",
                b"SSH-2.0-OpenSSH_9.6\r\n": "answered 'SSH-2.0-OpenSSH_9.6', which is not HTTP/2",
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n":
                    "answered 'HTTP/1.1 400 Bad Request', which is not HTTP/2"}
    assert answer == expected[plain_server.greeting]


def test_http2_answer_accepts_a_settings_frame():
    """What every gRPC server (Ray's GCS, the Ray Client server) sends first: SETTINGS, stream 0
    (a real Ray port is checked in tests/e2e/test_fleet_ray.py)."""
    from edgekit.net import http2_answer

    server = _PlainServer(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64")
    try:
        assert http2_answer("127.0.0.1", server.port, timeout=1.0) is None
    finally:
        server.close()


@pytest.mark.parametrize("form", ["{}", "ray://{}"])
def test_cluster_on_a_port_that_is_not_ray_exits_2_naming_it(form, tiny_folder):
    """`--cluster HOST:PORT` on a plain TCP listener that sends nothing hung for minutes inside
    ray.init (the ray:// form failed after 32 s); now the port is asked in HTTP/2 first and the
    command exits 2 naming HOST:PORT and Ray's ports. (The subprocess's timeout only stops a
    hang from hanging the suite.)"""
    from tests.helpers import edgekit

    server = _PlainServer(None)
    try:
        out, eval_path = tiny_folder()
        address = form.format(f"127.0.0.1:{server.port}")
        proc = edgekit("validate", out, "--device", "local-cpu", "--cluster", address,
                       "--eval", eval_path, timeout=120)
    finally:
        server.close()
    assert proc.returncode == 2, proc.stderr
    assert f"127.0.0.1:{server.port} is not a Ray port" in proc.stderr
    assert "sent nothing within 5 s" in proc.stderr
    assert "ray start --head" in proc.stderr and "ray://HEAD:10001" in proc.stderr
