"""What the database can store: one check for every value that enters blobflow.

Events, manual input, step responses and registrations are JSON, and JSON can
hold what MongoDB cannot: a lone UTF-16 surrogate (a `"\\ud800"` escape),
which has no UTF-8 form; a key with a NUL byte, which BSON keys cannot hold;
nesting deeper than MongoDB's 100 levels. Found at the entry, such a value is
bad input (a dead letter, a failed step, a 400), never a write that fails
later and is retried forever, and never a batch that fails with it. Keys
starting with `$` or holding `.` are legitimate data, and so are integers
beyond 64 bits (the store refuses those for now, each document on its own:
`UnstorableError`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import orjson

from blobflow.errors import PathPart, format_path

# MongoDB refuses documents nested deeper than 100 levels; a value sits a few levels
# down in the records that hold it (an execution's steps[i].request.json_body, say).
MAX_DEPTH: Final = 90
# What is kept of orjson's output to measure the depth: the brackets, objects'
# written as arrays'.
_SQUARE: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def unstorable_reason(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why `value` (parsed JSON) cannot be stored, naming where; None when it can.

    Serializing with orjson (C, about 2 ms a MiB) settles the common case: it
    refuses lone surrogates, and its output shows NUL bytes and the nesting
    depth. Only a value that looks suspect there (or holds an integer beyond 64
    bits, which orjson refuses) is walked in Python (up to a few hundred ms for a
    hostile MiB), which also says where the problem is.
    """
    try:
        dumped = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return _first_problem(value, max_depth)
    if b"\\u0000" in dumped or _too_deep(dumped, max_depth):
        return _first_problem(value, max_depth)
    return None


def storable_text(text: str) -> str:
    """`text` with any lone surrogate replaced, for messages built from what was sent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _too_deep(dumped: bytes, max_depth: int) -> bool:
    """Whether orjson's text nests deeper than `max_depth`, at C speed.

    Fewer brackets than levels cannot be too deep. Otherwise the strings go (escapes
    first, then every other piece between quotes) and each pass drops the innermost
    pairs of brackets: what is left after `max_depth` passes nests deeper.
    """
    if dumped.count(b"[") + dumped.count(b"{") <= max_depth:
        return False
    unescaped = dumped.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    structure = outside.translate(_SQUARE, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not structure:
            return False
        structure = structure.replace(b"[]", b"")
    return bool(structure)


def _first_problem(value: Any, max_depth: int) -> str | None:
    for path, problem in _problems(value, (), 0, max_depth):
        where = format_path(path)
        return f"{problem} at {'$.' + where if where else '$'}"
    return None


def _problems(
    value: Any, path: tuple[PathPart, ...], depth: int, max_depth: int
) -> Iterator[tuple[tuple[PathPart, ...], str]]:
    """The walk in Python, for a value that looked suspect: each problem and its path."""
    stack: list[tuple[Any, tuple[PathPart, ...], int]] = [(value, path, depth)]
    while stack:
        current, at, level = stack.pop()
        if isinstance(current, dict | list) and level >= max_depth:
            yield at, f"nested deeper than {max_depth} levels"
            return
        if isinstance(current, dict):
            for key, item in current.items():
                if not _key_ok(key):
                    yield at, f"a key ({_shown(key)}) holds a NUL byte or a lone surrogate"
                    return
                stack.append((item, (*at, key), level + 1))
        elif isinstance(current, list):
            stack.extend((item, (*at, index), level + 1) for index, item in enumerate(current))
        elif isinstance(current, str) and not _text_ok(current):
            yield at, "a string holds a lone surrogate (a \\ud800-\\udfff escape without its pair)"
            return


def _key_ok(key: Any) -> bool:
    return isinstance(key, str) and "\x00" not in key and _text_ok(key)


def _text_ok(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(key: Any) -> str:
    return repr(storable_text(str(key)))[:60]
