"""Registration (§6): bundles of definitions over NATS request/reply.

A bundle `{"schemas": [...], "workflows": [...], "providers": [...]}` becomes
source documents named after their place in it (`workflows[1]`), so problems
point at the item; `DefinitionStore.register` applies it all or nothing. The
reply is `{"ok": true, "results": [...]}` or `{"ok": false, "errors": [...]}`.

After a registration that changed something the local replica reloads at
once (`on_change`) and an empty message on `CHANGED_SUBJECT` tells the others.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, cast

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from blobflow.core.definitions import Kind
from blobflow.core.jsonvalues import compact_json, loads
from blobflow.core.sources import KIND_FOLDERS, SourceDocument
from blobflow.core.yamlsafe import YamlLoadError, load_yaml
from blobflow.errors import DefinitionError, PathPart, Problem, did_you_mean, format_path
from blobflow.store.definitions import DefinitionStore, RegistrationConflict

logger = logging.getLogger(__name__)

REGISTER_SUBJECT: Final = "blobflow.registry.register"
CHANGED_SUBJECT: Final = "blobflow.registry.changed"
QUEUE_GROUP: Final = "blobflow"
BUNDLE: Final = "bundle"  # the source of problems with the bundle as a whole
# Enough to fix a bundle by; thousands more would only risk the reply exceeding
# the server's max_payload, and then the requester would see a bare timeout.
MAX_ERRORS: Final = 200
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
_ITEM: Final = re.compile(r"(schemas|workflows|providers)\[[0-9]+\]\Z")
_REGISTERED: Final = re.compile(r"registered:(schema|workflow|provider):(.+):v([0-9]+)\Z", re.S)

Lines = dict[tuple[PathPart, ...], int]


def bundle_documents(bundle: Any) -> list[SourceDocument]:
    """The items of a bundle as source documents, schemas first; DefinitionError if malformed."""
    return _documents(bundle, {})


def parse_bundle(payload: bytes, content_type: str | None = None) -> list[SourceDocument]:
    """A JSON (default) or YAML (`content_type` mentions yaml) bundle as source documents."""
    lines: Lines = {}
    if content_type and "yaml" in content_type.lower():
        try:
            loaded = load_yaml(payload)
        except YamlLoadError as exc:
            raise DefinitionError([Problem(BUNDLE, (), exc.message, exc.line)]) from None
        data, lines = loaded.data, loaded.lines
    else:
        try:
            data = loads(payload)
        except ValueError as exc:  # orjson's JSONDecodeError and UnicodeDecodeError too
            raise DefinitionError([Problem(BUNDLE, (), f"invalid JSON: {exc}")]) from None
    return _documents(data, lines)


async def register_bundle(
    store: DefinitionStore, documents: Sequence[SourceDocument]
) -> dict[str, Any]:
    """Register the documents; the §6 reply either way (other failures propagate)."""
    if not documents:
        return {"ok": True, "results": []}
    try:
        results = await store.register(documents)
    except DefinitionError as exc:
        return error_reply(exc, documents)
    except RegistrationConflict as exc:
        # Not the bundle's fault and not a bug: the requester may simply try again.
        return {**_failure(str(exc)), "retryable": True}
    return {
        "ok": True,
        "results": [
            {"kind": r.kind, "id": r.id, "version": r.version, "changed": r.changed}
            for r in results
        ],
    }


async def registration_reply(
    store: DefinitionStore, payload: bytes, content_type: str | None = None
) -> dict[str, Any]:
    """Parse and register one request's payload: what NATS and HTTP both answer."""
    try:
        documents = parse_bundle(payload, content_type)
    except DefinitionError as exc:
        return error_reply(exc)
    return await register_bundle(store, documents)


def error_reply(error: DefinitionError, documents: Sequence[SourceDocument] = ()) -> dict[str, Any]:
    """`{"ok": false, "errors": [...]}` naming kind, id, path and message of each problem."""
    by_source = {document.source: document for document in documents}
    errors = [_error(problem, by_source) for problem in error.problems[:MAX_ERRORS]]
    if len(error.problems) > MAX_ERRORS:
        more = f"... and {len(error.problems) - MAX_ERRORS} more problems"
        errors.append({"kind": None, "id": None, "path": "", "message": more})
    return {"ok": False, "errors": errors}


def internal_error_reply(exc: BaseException) -> dict[str, Any]:
    text = str(exc)[:300] or "no details"
    return _failure(f"internal error: {type(exc).__name__}: {text}")


class RegistrationResponder:
    """Answers registration requests; one replica of queue group `blobflow` takes each.

    nats-py runs one callback at a time per subscription, so this replica handles
    its registrations one after another: they are rare, and it keeps them simple.
    """

    def __init__(
        self,
        nc: NatsClient,
        store: DefinitionStore,
        *,
        subject: str = REGISTER_SUBJECT,
        changed_subject: str = CHANGED_SUBJECT,
        on_change: Callable[[], Awaitable[None]] | None = None,
        drain_timeout_s: float = 10,
    ) -> None:
        self.nc = nc
        self.store = store
        self.subject = subject
        self.changed_subject = changed_subject
        self.on_change = on_change
        self.drain_timeout_s = drain_timeout_s
        self._sub: Subscription | None = None

    async def __aenter__(self) -> RegistrationResponder:
        self._sub = await self.nc.subscribe(self.subject, queue=QUEUE_GROUP, cb=self._handle)
        # Subscribed once the server knows: a request sent right after entering is answered.
        await self.nc.flush()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sub, self._sub = self._sub, None
        if sub is None or self.nc.is_closed:
            return
        try:
            # Drain, not unsubscribe: unsubscribing cancels a registration in progress
            # and its requester would get no reply.
            async with asyncio.timeout(self.drain_timeout_s):
                await sub.drain()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
        except (NatsError, TimeoutError) as exc:
            # The server was told first thing, so no new request arrives; one in
            # progress still finishes and replies on its own.
            logger.warning("registration subscription not drained cleanly: %r", exc)

    async def _handle(self, msg: Msg) -> None:
        if not msg.reply:
            logger.warning("registration request on %s has no reply subject; ignored", msg.subject)
            return
        try:
            reply = await registration_reply(self.store, msg.data, _content_type(msg.headers))
            if reply["ok"] and any(result["changed"] for result in reply["results"]):
                await self._announce()
        except Exception as exc:
            logger.exception("registration request failed")
            reply = internal_error_reply(exc)
        try:
            # Not msg.respond(): nats-py would echo the request's headers in the reply.
            await self.nc.publish(msg.reply, compact_json(reply).encode(), headers=_JSON_HEADERS)
        except Exception:
            logger.exception("cannot send the registration reply")

    async def _announce(self) -> None:
        """Reload here, then tell the other replicas; failures are logged, as it is stored."""
        if self.on_change is not None:
            try:
                await self.on_change()
            except Exception:
                logger.exception("reloading definitions after a registration failed")
        try:
            await self.nc.publish(self.changed_subject, b"")
        except Exception:
            logger.exception("cannot announce changed definitions on %s", self.changed_subject)


def _documents(bundle: Any, lines: Lines) -> list[SourceDocument]:
    if not isinstance(bundle, dict):
        message = "a bundle must be an object with lists schemas, workflows and providers"
        raise DefinitionError([Problem(BUNDLE, (), message, lines.get(()))])
    problems: list[Problem] = []
    for key in bundle:
        if key not in KIND_FOLDERS:
            hint = did_you_mean(key, KIND_FOLDERS)
            message = f"unknown key{hint}; a bundle holds schemas, workflows and providers"
            problems.append(Problem(BUNDLE, (key,), message, lines.get((key,))))
    documents: list[SourceDocument] = []
    for key, kind in KIND_FOLDERS.items():
        items = bundle.get(key, [])
        if not isinstance(items, list):
            problems.append(Problem(BUNDLE, (key,), "must be a list", lines.get((key,))))
            continue
        for index, item in enumerate(items):
            source = f"{key}[{index}]"
            if not isinstance(item, dict):
                message = f"a {kind} must be an object"
                problems.append(Problem(source, (), message, lines.get((key, index))))
                continue
            documents.append(SourceDocument(kind, source, item, _item_lines(lines, key, index)))
    if problems:
        raise DefinitionError(problems)
    return documents


def _item_lines(lines: Lines, key: str, index: int) -> Lines:
    """The lines of one item, keyed by paths inside it, as if it were its own file."""
    return {path[2:]: line for path, line in lines.items() if path[:2] == (key, index)}


def _error(problem: Problem, by_source: Mapping[str, SourceDocument]) -> dict[str, Any]:
    kind: Kind | None = None
    item_id: str | None = None
    where = problem.source
    document = by_source.get(problem.source)
    if document is not None:
        kind, item_id = document.kind, document.item_id
    elif registered := _REGISTERED.match(problem.source):
        # An item registered earlier that this bundle breaks (e.g. a schema it uses).
        kind, item_id = cast(Kind, registered.group(1)), registered.group(2)
        where = f"registered version {registered.group(3)}"
    elif item := _ITEM.match(problem.source):
        kind = KIND_FOLDERS[item.group(1)]
    notes = [where] if where != BUNDLE else []
    if problem.line is not None:
        notes.append(f"line {problem.line}")
    message = f"{problem.message} ({', '.join(notes)})" if notes else problem.message
    return {"kind": kind, "id": item_id, "path": format_path(problem.path), "message": message}


def _content_type(headers: Mapping[str, str] | None) -> str | None:
    # Header names are case-insensitive in HTTP; NATS clients spell them as they like.
    return next((v for k, v in (headers or {}).items() if k.lower() == "content-type"), None)


def _failure(message: str) -> dict[str, Any]:
    return {"ok": False, "errors": [{"kind": None, "id": None, "path": "", "message": message}]}
