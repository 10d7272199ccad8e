"""Regular expressions that run in linear time: RE2, for the `matches` trigger operator.

RE2 runs a pattern as an automaton and never backtracks, so the time to search
a text grows linearly with the text. It has no backreferences, lookaround,
possessive or atomic groups: a pattern that needs them is refused, never handed
to a backtracking engine.

Linear is not yet cheap: when RE2's cached automaton thrashes (counted
repetitions of classes, `a[ab]{100}c`), it simulates the automaton state by
state, about 8 ns per byte of text per unit of the pattern's size. So the size
is bounded too: `MAX_PATTERN_SIZE`, as RE2 counts it for single-byte text
(about one per character or class, repetitions written out, so that a Unicode
class such as `\\pL` counts once rather than as the 1,200 byte ranges of its
UTF-8 form).

This is the one module that touches `re2`, which ships no type hints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]  # no hints upstream; typed by this seam

MAX_PATTERN_SIZE = 200


class PatternRefused(ValueError):
    """RE2 does not run this pattern; the message says why."""


def _options(*, latin1: bool = False) -> Any:
    options = re2.Options()
    # The reason goes into the error we raise, not onto stderr.
    options.log_errors = False
    # Whether it matches is all a trigger asks: without groups to report,
    # RE2 answers with its DFA alone.
    options.never_capture = True
    if latin1:
        options.encoding = re2.Options.Encoding.LATIN1
    return options


_UTF8 = _options()
_LATIN1 = _options(latin1=True)


@dataclass(frozen=True, slots=True)
class LinearPattern:
    """A compiled pattern; build it with `compile_linear`. Equal when the texts are."""

    text: str
    _regexp: Any = field(repr=False, compare=False)

    def search(self, text: str) -> bool:
        """Whether the pattern is found anywhere in `text`."""
        # Searching the UTF-8 bytes spares the wrapper's offset bookkeeping; a lone
        # surrogate (JSON events cannot hold one) is passed through, not raised on.
        return self._regexp.search(text.encode("utf-8", "surrogatepass")) is not None


def compile_linear(pattern: str) -> LinearPattern:
    """`pattern` compiled by RE2; PatternRefused says why RE2 will not run it."""
    try:
        regexp = re2.compile(pattern, _UTF8)
    except re2.error as exc:
        raise PatternRefused(_reason(exc)) from None
    except UnicodeEncodeError:
        raise PatternRefused("it holds a lone surrogate, which is not text") from None
    size = _size(pattern, regexp)
    if size > MAX_PATTERN_SIZE:
        message = f"pattern too large: size {size}, at most {MAX_PATTERN_SIZE}"
        raise PatternRefused(f"{message} (each repeated character or class counts)")
    return LinearPattern(pattern, regexp)


def _size(pattern: str, regexp: Any) -> int:
    """RE2's program size for single-byte text, forward or reverse, whichever is larger."""
    try:
        single = re2.compile(pattern.encode("utf-8"), _LATIN1)
    except re2.error:  # a code point beyond Latin-1 written as \x{...}: count UTF-8's
        single = regexp
    return max(int(single.programsize), int(single.reverseprogramsize))


# What RE2 names in its message, and the feature behind it that it does not have.
_MISSING_FEATURES = {
    "(?=": "lookahead",
    "(?!": "lookahead",
    "(?<=": "lookbehind",
    "(?<!": "lookbehind",
    "(?>": "atomic groups",
    "(?P": "named backreferences",
    "(?(": "conditionals",
    **{f"\\{digit}": "backreferences" for digit in "123456789"},
}


def _reason(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else ""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    text = str(reason) or "not a valid RE2 pattern"
    feature = _MISSING_FEATURES.get(text.rpartition(": ")[2])
    return f"{text} (RE2 has no {feature})" if feature else text
