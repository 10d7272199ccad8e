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


class YamlLoadError(BlobflowError, ValueError):
    """A document that cannot be loaded; `line` is 1-based where known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message = message
        self.line = line
        super().__init__(message if line is None else f"line {line}: {message}")


class EventError(BlobflowError, ValueError):
    """A blob event that cannot be processed; `reason` is a stable code (the dead letter's)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


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


class StepInputError(BlobflowError, ValueError):
    """A step's resolved input cannot become an HTTP request; nothing is sent."""


class DeltaError(BlobflowError, ValueError):
    """A workflow output whose delta fields are malformed; carries every problem found."""

    MAX_LISTED = 20  # the message ends up in the execution record; `problems` keeps them all

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        lines = list(self.problems[: self.MAX_LISTED])
        if len(self.problems) > self.MAX_LISTED:
            lines.append(f"... and {len(self.problems) - self.MAX_LISTED} more problems")
        super().__init__("\n".join(lines) or "invalid deltas")


# A lost connection or a slow answer may be fine next time; the others will not change.
_RETRYABLE_HTTP_REASONS = frozenset({"connect", "timeout"})


class HttpCallError(BlobflowError):
    """A downstream call that produced no usable HTTP answer; `reason` says why.

    `reason` is one of unknown_service, connect, timeout, too_large, not_json, redirect.
    An HTTP error status is not this error: the caller gets the response and decides.
    """

    def __init__(self, reason: str, message: str, *, retryable: bool | None = None) -> None:
        self.reason = reason
        self.retryable = reason in _RETRYABLE_HTTP_REASONS if retryable is None else retryable
        super().__init__(message)


class StreamSetupError(BlobflowError):
    """A JetStream stream or consumer that blobflow cannot create or adopt as it is.

    The message names the stream or consumer, what differs, and what the operator can do.
    """


class EmbeddedServerError(BlobflowError, RuntimeError):
    """An embedded server (`blobflow dev`, tests) is not installed or did not become ready.

    The message says which server and why; for a failed start it ends with its log's tail.
    """


class UnstorableError(BlobflowError, ValueError):
    """Data the database cannot hold, such as an integer beyond 64 bits."""


class ApiError(BlobflowError):
    """A request the HTTP API refuses: the status, a stable code and a message for people.

    `details` carries what a client can act on, such as each schema violation.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Sequence[object] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = tuple(details)
        self.headers = headers or {}
        super().__init__(message)


def not_found(what: str) -> ApiError:
    # Also the answer for what exists but is not the caller's: existence does not leak.
    return ApiError(404, "not_found", f"{what} not found")


def bad_parameter(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name}: {message}")


# -- Unavailable dependencies: translated from driver errors at the adapter's edge.


class StoreUnavailable(BlobflowError, ConnectionError):
    """The database did not answer, or failed a command; trying again later may work."""


class WriteRejected(StoreUnavailable):
    """The database refused some documents of a batch; the others may have been written."""


class RegistrationConflict(BlobflowError):
    """Other registrars kept taking the same versions; trying again later will do."""


class BusUnavailable(BlobflowError, ConnectionError):
    """NATS did not confirm a publish or a request; trying again later may work."""


class NatsGone(BusUnavailable):
    """The NATS connection closed for good; the process must exit, not stay deaf."""


# -- Control-flow signals: not failures, but how one part tells another to stop.


class Signal(BlobflowError):
    """Root of the control-flow signals."""


class ExecutionCancelled(Signal):
    """The execution was cancelled on request; compensations run, the status is cancelled."""


class LeaseLost(Signal):
    """Another worker owns this execution now; this one must stop working on it."""


class ServiceStopping(Signal):
    """The process is shutting down and takes no new work; another replica will."""
