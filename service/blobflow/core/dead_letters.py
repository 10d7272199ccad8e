"""Dead letters: a rejected blob event, as JSON, for the `BLOBFLOW_DLQ` stream.

`{reason, detail, subject, stream_sequence, headers, payload, received_at}`, where
`payload` is the original text, or base64 with `"payload_encoding": "base64"` when the
bytes are not UTF-8. A dead letter must itself be publishable: NATS refuses messages over
its max payload (1 MiB by default), and the rejected event may be that large already, so
the payload is cut when needed (`"payload_truncated": true` with the original
`payload_bytes`). Text can grow when escaped for JSON and base64 grows by a third, so
the cut is measured on the encoded letter, not only on the raw bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from blobflow.core.jsonvalues import compact_json, rfc3339

# NATS's default max payload counts headers too; leave room for the letter's own.
MAX_DEAD_LETTER_BYTES: Final = 1024 * 1024 - 8 * 1024
MAX_PAYLOAD_KEPT: Final = 900 * 1024  # of the original bytes
MAX_DETAIL_CHARS: Final = 4096
MAX_HEADERS_BYTES: Final = 64 * 1024  # of the headers' JSON


def dead_letter(
    reason: str,
    detail: str,
    *,
    subject: str,
    stream_sequence: int | None,
    headers: Mapping[str, str] | None,
    payload: bytes,
    received_at: datetime,
) -> bytes:
    """The dead letter's JSON bytes, at most `MAX_DEAD_LETTER_BYTES`."""
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS] + "…"
    letter: dict[str, Any] = {
        "reason": reason,
        "detail": detail,
        "subject": subject,
        "stream_sequence": stream_sequence,
    }
    letter["headers"], headers_cut = _kept_headers(headers or {})
    if headers_cut:
        letter["headers_truncated"] = True
    try:
        text: str | None = payload.decode("utf-8")  # strict: invalid bytes go to base64
    except UnicodeDecodeError:
        text = None
    letter["payload"] = ""
    if text is None:
        letter["payload_encoding"] = "base64"
    letter["received_at"] = rfc3339(received_at)
    # Room for the payload's JSON string, counting the truncation fields as if present.
    worst = {**letter, "payload_truncated": True, "payload_bytes": len(payload)}
    room = max(0, MAX_DEAD_LETTER_BYTES - len(_json(worst)))
    if text is None:
        kept, cut = _fit_base64(payload, room)
    else:
        kept, cut = _fit_text(text, payload, room)
    letter["payload"] = kept
    if cut:
        letter["payload_truncated"] = True
        letter["payload_bytes"] = len(payload)
    return _json(letter)


def dead_letter_msg_id(stream: str, stream_sequence: int) -> str:
    """`dlq:<stream>:<sequence>`: a redelivered poison message is dead-lettered once."""
    return f"dlq:{stream}:{stream_sequence}"


def _kept_headers(headers: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """The headers, up to `MAX_HEADERS_BYTES` of JSON; True when some were left out."""
    kept: dict[str, str] = {}
    size = 2
    for key, value in headers.items():
        size += len(_json(key)) + len(_json(value)) + 2  # `:` and `,`
        if size > MAX_HEADERS_BYTES:
            return kept, True
        kept[key] = value
    return kept, False


def _fit_base64(payload: bytes, room: int) -> tuple[str, bool]:
    """base64 of the longest prefix that fits: 3 bytes become 4 characters."""
    keep = min(len(payload), MAX_PAYLOAD_KEPT, room // 4 * 3)
    return base64.b64encode(payload[:keep]).decode("ascii"), keep < len(payload)


def _fit_text(text: str, payload: bytes, room: int) -> tuple[str, bool]:
    """The longest prefix of `text` whose JSON string fits in `room` bytes."""
    cut = len(payload) > MAX_PAYLOAD_KEPT
    if cut:
        # The whole payload is valid UTF-8, so only a character split at the cut can be
        # invalid here, and ignoring drops just that.
        text = payload[:MAX_PAYLOAD_KEPT].decode("utf-8", "ignore")
    if _string_bytes(text) <= room:
        return text, cut
    # Escapes (`\"`, `\\`, `\u0001`) outgrew the room: search the longest prefix that fits.
    fits, too_long = 0, len(text)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if _string_bytes(text[:middle]) <= room:
            fits = middle
        else:
            too_long = middle
    return text[:fits], True


def _string_bytes(text: str) -> int:
    """Bytes `text` takes in the letter, without its quotes."""
    return len(_json(text)) - 2


def _json(value: Any) -> bytes:
    try:
        return compact_json(value).encode()
    except UnicodeEncodeError:
        # A lone surrogate (from a JSON `\ud800` escape in a detail or header) cannot be
        # UTF-8; ASCII-only JSON writes it as an escape, so the letter still goes out.
        return json.dumps(value, separators=(",", ":")).encode()
