"""Log lines: bound context, and nothing from an event can forge or break a line."""

from __future__ import annotations

import logging

import orjson
import pytest

from blobflow.logs import JsonFormatter, TextFormatter, bound, escaped


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("blobflow.test", logging.INFO, __file__, 1, message, args, None)


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("plain ünïcode ✓", "plain ünïcode ✓"),
        ("two\nlines", "two\\nlines"),
        ("cr\r\nlf", "cr\\r\\nlf"),
        ("nul\x00bell\x07", "nul\\x00bell\\x07"),
        ("c1\x85sep\u2028", "c1\\x85sep\\u2028"),
        ("lone \ud800", "lone \\ud800"),
    ],
)
def test_text_lines_escape_what_could_forge_or_break_them(text: str, written: str) -> None:
    assert escaped(text) == written
    with bound(event_id=text):
        line = TextFormatter().format(record("dead-lettered %s", text))
    assert "\n" not in line
    assert line.endswith(f"dead-lettered {written} event_id={written}")


def test_json_lines_keep_a_lone_surrogate_as_an_escape() -> None:
    with bound(event_id="e\n1"):
        line = JsonFormatter().format(record("note %s", "\ud800\n"))
    assert "\n" not in line
    entry = orjson.loads(line.replace("\\ud800", "\\ufffd"))
    assert entry["message"] == "note \ufffd\n"
    assert entry["event_id"] == "e\n1"
