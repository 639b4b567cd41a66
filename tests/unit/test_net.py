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
