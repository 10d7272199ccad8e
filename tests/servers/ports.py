"""Loopback ports and unique names for servers shared by a whole test session."""

from __future__ import annotations

import uuid

# The product's own helpers: tests and `blobflow dev` pick ports the same way.
from blobflow.devtools.managed_process import LOOPBACK, accepts_connections, free_port

__all__ = ["LOOPBACK", "accepts_connections", "free_port", "unique_name"]


def unique_name(prefix: str = "t") -> str:
    """`<prefix>_<8 hex>`: valid as a MongoDB database name, a NATS stream name and a
    subject token alike (no `.`, `*`, `>`, `/`, spaces)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
