"""The `blobflow` command: parses arguments and hands off to one function per subcommand.

Exit codes: 0 success, 1 the input was invalid or the command failed (a server out of
reach, a request refused), 2 the command was used wrongly (arguments, configuration, a
missing optional package). An expected failure is one line on stderr, `blobflow
COMMAND: ...` (invalid definitions: one line per problem); a traceback means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from blobflow.core.catalog import Catalog, build_catalog
from blobflow.core.events import check_event
from blobflow.core.sources import read_paths
from blobflow.errors import ConfigError, DefinitionError, EventError

if TYPE_CHECKING:
    from blobflow.config import Settings

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_FAILED = 1  # the command could not do its work


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except BrokenPipeError:
        # The reader went away (`blobflow deltas | head`): stop quietly, as other tools do,
        # and keep the interpreter's last flush of stdout from failing again on exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blobflow", description="Runs provider workflows on blob events."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check definition files or folders")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    validate.set_defaults(run=_validate)

    match = commands.add_parser("match", help="show the workflows an event triggers")
    match.add_argument("event", type=Path, metavar="EVENT.json")
    match.add_argument("--definitions", type=Path, help="definitions folder")
    match.add_argument("--json", action="store_true", help="print a JSON list")
    match.set_defaults(run=_match)

    serve = commands.add_parser("serve", help="run the service")
    serve.set_defaults(run=_serve)

    dev = commands.add_parser("dev", help="run everything on this machine with a demo")
    dev.add_argument("--once", action="store_true", help="exit after the demo event")
    dev.add_argument("--data", type=Path, default=Path(".blobflow"), help="data folder")
    dev.add_argument("--nats-url", help="use this NATS instead of starting one")
    dev.add_argument("--mongodb-url", help="use this MongoDB instead of starting one")
    dev.set_defaults(run=lambda a: _commands().dev(a.data, a.once, a.nats_url, a.mongodb_url))

    publish = commands.add_parser("publish", help="publish a blob event")
    publish.add_argument("kind", choices=["created", "updated"])
    publish.add_argument("--blob-id", required=True)
    publish.add_argument("--user-id", required=True)
    publish.add_argument("--event-id")
    publish.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    publish.add_argument("--content")
    publish.add_argument("--provider", action="append", default=[], metavar="ID")
    publish.set_defaults(
        run=lambda a: _commands().publish(
            a.kind, a.blob_id, a.user_id, a.metadata, a.content, a.event_id, a.provider
        )
    )

    deltas = commands.add_parser("deltas", help="tail delta events")
    deltas.add_argument("--provider")
    deltas.add_argument("--blob")
    deltas.add_argument("--json", action="store_true")
    deltas.add_argument("--all", action="store_true", help="from the start of the stream")
    deltas.set_defaults(run=lambda a: _commands().deltas(a.provider, a.blob, a.json, a.all))

    register = commands.add_parser(
        "register", help="register a definitions folder (sends BLOBFLOW_API_TOKEN)"
    )
    register.add_argument("folder", type=Path, metavar="DIR")
    register.set_defaults(run=lambda a: _commands().register(a.folder))
    return parser


def _commands() -> Any:
    # Imported on use: validate and match need no network libraries.
    from blobflow.cli import commands

    return commands


def load_catalog(paths: Sequence[Path]) -> Catalog:
    """Read and build the definitions under `paths`; DefinitionError lists every problem."""
    documents, problems = read_paths(paths)
    try:
        catalog = build_catalog(documents)
    except DefinitionError as exc:
        problems.extend(exc.problems)
    if problems:
        raise DefinitionError(problems)
    return catalog


def _validate(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"blobflow validate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        catalog = load_catalog(args.paths)
    except DefinitionError as exc:
        for problem in exc.problems:
            print(problem)
        return EXIT_INVALID
    counts = (len(catalog.schemas), len(catalog.workflows), len(catalog.providers))
    print("valid: {} schemas, {} workflows, {} providers".format(*counts), file=sys.stderr)
    return EXIT_OK


def _match(args: argparse.Namespace) -> int:
    folder = args.definitions or Path(os.environ.get("BLOBFLOW_DEFINITIONS") or ".")
    try:
        raw = args.event.read_bytes()
    except OSError as exc:
        print(f"blobflow match: cannot read {args.event}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        event = check_event(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        print(f"{args.event}: not JSON: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except EventError as exc:
        print(f"{args.event}: {exc.detail}", file=sys.stderr)
        return EXIT_INVALID
    try:
        catalog = load_catalog([folder])
    except DefinitionError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    bindings = catalog.match(event.data, event.kind)
    if args.json:
        rows = [
            {"priority": b.priority, "provider_id": b.provider_id, "workflow_id": b.workflow_id}
            for b in bindings
        ]
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        for b in bindings:
            print(f"{b.priority} {b.provider_id} {b.workflow_id}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    # Imported here: validate and match need no network libraries.
    from blobflow import logs
    from blobflow.config import load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"blobflow serve: {line}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_level, settings.log_format)
    try:
        return asyncio.run(_serve_until_signalled(settings))
    except DefinitionError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from blobflow.cli.commands import failure_line

        failure = failure_line(exc, nats_url=settings.nats_url, mongodb_url=settings.mongodb_url)
        if failure is None:
            raise
        print(f"blobflow serve: {failure}", file=sys.stderr)
        return EXIT_FAILED


async def _serve_until_signalled(settings: Settings) -> int:
    from blobflow import app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await app.run(settings, stop)


if __name__ == "__main__":
    sys.exit(main())
