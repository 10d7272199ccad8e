"""Loopback ports and unique names for servers shared by a whole test session."""

from __future__ import annotations

import socket
import uuid

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it, so parallel sessions do not collide; the small race until the
    server binds it is covered by `ManagedProcess`, which retries a first start on new
    ports.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_connections(port: int, host: str = LOOPBACK, timeout_s: float = 0.2) -> bool:
    """Whether something accepts a TCP connection on the port now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def unique_name(prefix: str = "t") -> str:
    """`<prefix>_<8 hex>`: valid as a MongoDB database name, a NATS stream name and a
    subject token alike (no `.`, `*`, `>`, `/`, spaces)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
