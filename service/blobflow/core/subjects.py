"""NATS names: every stream, subject and consumer blobflow uses; ids as subject tokens.

An id from an event can hold anything, including `.`, `*`, `>` and whitespace, which
would split the subject or turn it into a wildcard. Every byte of its UTF-8 encoding
outside `A-Z a-z 0-9 _ - :` becomes `%XX`, so a token is plain ASCII, never empty, and
maps back to exactly one id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# Control subjects, core NATS request/reply (not streams).
REGISTER_SUBJECT: Final = "blobflow.registry.register"
CHANGED_SUBJECT: Final = "blobflow.registry.changed"
CANCEL_PREFIX: Final = "blobflow.cancel"

_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-:")
# Precomputed per byte: the hot path (one subject per delta) is a join of lookups.
_ENCODED: Final = tuple(chr(b) if b in _SAFE else f"%{b:02X}" for b in range(256))
_ESCAPE: Final = re.compile(r"%([0-9A-F]{2})")


def encode_token(value: str) -> str:
    """`"a.b"` -> `"a%2Eb"`; raises ValueError for the empty string.

    Lone surrogates (a JSON `"\\ud800"` escape can produce one) are encoded as their
    surrogate-pass bytes rather than refused, so every id has a subject.
    """
    if not value:
        raise ValueError("an empty id cannot be a subject token")
    return "".join(_ENCODED[b] for b in value.encode("utf-8", "surrogatepass"))


def decode_token(token: str) -> str:
    """The id `encode_token` turned into `token`; ValueError for anything it cannot produce.

    Only canonical tokens are accepted (uppercase hex, escapes only where needed), so a
    token and an id correspond one to one.
    """
    if not token:
        raise ValueError("an empty subject token encodes no id")
    raw = bytearray()
    position = 0
    while position < len(token):
        char = token[position]
        if char == "%":
            escape = _ESCAPE.match(token, position)
            if escape is None:
                raise ValueError(f"invalid escape at position {position} in {token!r}")
            raw.append(int(escape.group(1), 16))
            position += 3
        else:
            raw.extend(char.encode("utf-8", "surrogatepass"))
            position += 1
    value = bytes(raw).decode("utf-8", "surrogatepass")  # UnicodeDecodeError is a ValueError
    if encode_token(value) != token:
        raise ValueError(f"{token!r} is not a canonical token (expected {encode_token(value)!r})")
    return value


def delta_subject(provider_id: str, blob_id: str, prefix: str = "deltas") -> str:
    """`deltas.<provider>.<blob>` with both ids encoded."""
    return f"{prefix}.{encode_token(provider_id)}.{encode_token(blob_id)}"


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether every message `subject` can match is also matched by `pattern`.

    Both may hold wildcards: `*` is one token, `>` one or more trailing tokens. Used to
    decide whether a stream that already exists captures the subjects we need.
    """
    have = pattern.split(".")
    want = subject.split(".")
    for index, token in enumerate(have):
        if token == ">":
            return len(want) > index
        if index >= len(want):
            return False
        if token == "*":
            if want[index] == ">":  # `>` can span more tokens than `*` covers
                return False
        elif token != want[index]:
            return False
    return len(have) == len(want)


@dataclass(frozen=True, slots=True)
class StreamNames:
    """Every stream, subject and consumer name in one place, so tests can prefix them."""

    blobs: str = "BLOBS"
    deltas: str = "DELTAS"
    dlq: str = "BLOBFLOW_DLQ"
    created_subject: str = "blobs.created"
    updated_subject: str = "blobs.updated"
    deltas_prefix: str = "deltas"
    dlq_subject: str = "blobflow.dlq.blobs"
    consumer: str = "blobflow"

    @classmethod
    def prefixed(cls, prefix: str) -> StreamNames:
        """Names no other user of the server shares: `<prefix>_BLOBS`, `<prefix>.blobs.…`."""
        d = cls()
        return cls(
            blobs=f"{prefix}_{d.blobs}",
            deltas=f"{prefix}_{d.deltas}",
            dlq=f"{prefix}_{d.dlq}",
            created_subject=f"{prefix}.{d.created_subject}",
            updated_subject=f"{prefix}.{d.updated_subject}",
            deltas_prefix=f"{prefix}.{d.deltas_prefix}",
            dlq_subject=f"{prefix}.{d.dlq_subject}",
            consumer=f"{prefix}_{d.consumer}",
        )


def cancel_subject(worker_id: str) -> str:
    """Where the replica `worker_id` takes requests to cancel what it runs."""
    return f"{CANCEL_PREFIX}.{encode_token(worker_id)}"
