"""A Ray cluster's address: parsed, refused when public (Ray has no authentication) unless the
user allows it, and checked to answer before anything runs. No Ray import: the CLI checks an
address before it loads anything heavy."""

from __future__ import annotations

import ipaddress
import os
import socket

from edgekit.errors import InputError

# Ray keeps a loopback address as loopback only with this set (it otherwise swaps 127.0.0.1 for
# the machine's outward address, where a loopback-bound cluster does not listen).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterError(InputError):
    """The Ray cluster cannot be used: unreachable, public, or its nodes disagree."""


# ------------------------------------------------------------------------------ the address
def parse_address(address: str) -> tuple[str | None, int | None]:
    """(host, port) of `ray://host:port` or `host:port`; (None, None) for auto/local."""
    if address in ("auto", "local"):
        return None, None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClusterError(f"cluster address {address!r} is not ray://HOST:PORT, HOST:PORT or "
                           "auto", hint="e.g. --cluster ray://10.0.0.5:10001 (Ray Client) or "
                           "--cluster 10.0.0.5:6379 from a node of the cluster")
    return host.strip("[]"), int(port)


def is_private_host(host: str) -> bool:
    """True when every address `host` resolves to is loopback, private or link-local."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos}
    return bool(addrs) and all(a.is_loopback or a.is_private or a.is_link_local for a in addrs)


def is_loopback_host(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def check_address(address: str, *, allow_public: bool = False, timeout_s: float = 5.0) -> None:
    """Refuse a public address (Ray has no authentication) unless allowed, and an address that
    does not answer (before anything runs)."""
    host, port = parse_address(address)
    if host is None:
        return
    if not allow_public and not is_private_host(host):
        raise ClusterError(f"cluster address {host} is not on a private network; Ray has no "
                           "authentication, so anyone who reaches it runs code on its nodes",
                           hint="reach the cluster over a VPN or SSH tunnel, or pass "
                           "--allow-public-cluster if you really mean it")
    from edgekit.net import http2_answer

    assert port is not None
    try:
        # Ray's ports speak gRPC (HTTP/2); handed anything else, ray.init waits for minutes.
        # With TLS (RAY_USE_TLS) they do not answer cleartext HTTP/2, so only the connection
        # is checked.
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            with socket.create_connection((host, port), timeout=timeout_s):
                answer = None
        else:
            answer = http2_answer(host, port, timeout=timeout_s)
    except OSError as exc:
        raise ClusterError(f"the Ray cluster at {address} does not answer ({exc}); nothing was "
                           "run", hint="start it (`ray start --head ...`), check the address "
                           "and port (Ray Client: 10001, GCS: 6379), or drop --cluster") from None
    if answer is not None:
        raise ClusterError(f"{host}:{port} is not a Ray port: asked in HTTP/2 (gRPC, which "
                           f"Ray's ports speak), it {answer}; nothing was run",
                           hint="give the port Ray prints: `ray start --head --port 6379` on "
                           "the head prints the GCS address (--cluster HEAD:6379 from a node "
                           "of the cluster) and the Ray Client server listens on 10001 "
                           "(--cluster ray://HEAD:10001)")
