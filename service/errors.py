"""Every error blobflow raises on purpose derives from `BlobflowError`.

A builtin second base lets callers that do not know blobflow still catch the
right family (`except ValueError` catches bad definitions and expressions).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PathPart = str | int


def format_path(path: Sequence[PathPart]) -> str:
    """`("steps", 2, "input_map", "prompt")` -> `steps[2].input_map.prompt`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a definition: where it is and what is wrong."""

    source: str  # file name, or bundle item such as `workflows[1]`
    path: tuple[PathPart, ...]
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        dotted = format_path(self.path)
        return f"{where}: {dotted}: {self.message}" if dotted else f"{where}: {self.message}"


class BlobflowError(Exception):
    """Root of blobflow's own errors."""


class DefinitionError(BlobflowError, ValueError):
    """One or more definitions are invalid; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid definition")


class ExpressionError(BlobflowError, ValueError):
    """An expression that cannot be parsed; `position` is a 0-based offset into `text`."""

    def __init__(self, message: str, text: str, position: int) -> None:
        self.reason = message
        self.text = text
        self.position = position
        super().__init__(f"{message} at position {position} in {text!r}")


class ConfigError(BlobflowError, ValueError):
    """Invalid configuration; each line of the message is one problem."""


class TriggerError(BlobflowError, ValueError):
    """A trigger condition that cannot be compiled; `part` names the offending key."""

    def __init__(self, message: str, part: str) -> None:
        self.part = part  # "field", "operator" or "value"
        super().__init__(message)


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest choice, or nothing."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
