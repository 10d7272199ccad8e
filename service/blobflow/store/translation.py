"""Driver errors become blobflow's at the edge of the store package.

Callers above it (the runtime, the API) know `StoreUnavailable` and
`WriteRejected` (`blobflow.errors`), never PyMongo's classes, so they can be
tested against in-memory stores and the driver can change under them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from bson.errors import InvalidDocument
from pymongo.errors import BulkWriteError, PyMongoError

from blobflow.errors import StoreUnavailable, UnstorableError, WriteRejected

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)
# What encoding a document to BSON raises, before anything is sent: an integer beyond
# 64 bits, a NUL in a key, a lone surrogate. `blobflow.core.storable` keeps such values
# out at the entries; these are caught all the same, so one never fails a batch.
UNENCODABLE = (OverflowError, InvalidDocument, UnicodeEncodeError)


def translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(method)
    async def translating(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                # Applied, perhaps not durably: nothing to count on, try again.
                raise StoreUnavailable(f"write concern not met: {exc}") from exc
            raise WriteRejected(f"the database refused writes: {_first_error(exc)}") from exc
        except PyMongoError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except UNENCODABLE as exc:
            raise UnstorableError(str(exc)) from exc

    return translating


def translate_errors(cls: C) -> C:
    """Wrap every public coroutine method of `cls` with `translated`."""
    for name, attribute in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(attribute):
            setattr(cls, name, translated(attribute))
    return cls


def _first_error(exc: BulkWriteError) -> Any:
    errors = exc.details.get("writeErrors") or [{}]
    return errors[0].get("errmsg", exc)
