"""Finding and reading definition files: folders and files to source documents.

A definitions folder holds `schemas/`, `workflows/` and `providers/`; a
folder named after one kind holds that kind; a lone file takes its kind from
its folder's name, else from its content.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blobflow.core.definitions import Kind
from blobflow.core.yamlsafe import MAX_BYTES, load_yaml, nearest_line
from blobflow.errors import PathPart, Problem, YamlLoadError

KIND_FOLDERS: dict[str, Kind] = {
    "schemas": "schema",
    "workflows": "workflow",
    "providers": "provider",
}
SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One definition document as read, before validation."""

    kind: Kind
    source: str  # a file path, or a bundle item such as `workflows[1]`
    data: Any
    lines: dict[tuple[PathPart, ...], int] = field(default_factory=dict)

    def line_of(self, path: tuple[PathPart, ...]) -> int | None:
        return nearest_line(self.lines, path)

    @property
    def item_id(self) -> str | None:
        """The document's id as written (a provider's under `provider`), if it is text."""
        data = self.data
        if self.kind == "provider":
            data = data.get("provider") if isinstance(data, dict) else None
        item_id = data.get("id") if isinstance(data, dict) else None
        return item_id if isinstance(item_id, str) else None


def read_paths(paths: Iterable[Path]) -> tuple[list[SourceDocument], list[Problem]]:
    """Read every definition file under `paths`; unreadable files become problems."""
    documents: list[SourceDocument] = []
    problems: list[Problem] = []
    for file, kind in _discover(paths):
        try:
            documents.append(read_file(file, kind))
        except _FileProblem as exc:
            problems.append(exc.problem)
    return documents, problems


def read_file(file: Path, kind: Kind | None = None) -> SourceDocument:
    source = str(file)
    try:
        if file.stat().st_size > MAX_BYTES:
            raise _FileProblem(Problem(source, (), f"file is larger than {MAX_BYTES} bytes"))
        raw = file.read_bytes()
    except OSError as exc:
        raise _FileProblem(Problem(source, (), f"cannot read: {exc.strerror}")) from None
    try:
        loaded = load_yaml(raw)
    except YamlLoadError as exc:
        raise _FileProblem(Problem(source, (), exc.message, exc.line)) from None
    kind = kind or guess_kind(loaded.data)
    if kind is None:
        message = "cannot tell the kind: put it in schemas/, workflows/ or providers/"
        raise _FileProblem(Problem(source, (), message, 1))
    return SourceDocument(kind, source, loaded.data, loaded.lines)


def guess_kind(data: Any) -> Kind | None:
    if not isinstance(data, dict):
        return None
    if "steps" in data:
        return "workflow"
    if "provider" in data:
        return "provider"
    if "definition" in data:
        return "schema"
    return None


def _discover(paths: Iterable[Path]) -> Iterator[tuple[Path, Kind | None]]:
    for path in paths:
        if not path.is_dir():
            yield path, KIND_FOLDERS.get(path.parent.name)
        elif path.name in KIND_FOLDERS:
            yield from ((f, KIND_FOLDERS[path.name]) for f in _files(path))
        elif any((path / name).is_dir() for name in KIND_FOLDERS):
            for name, kind in KIND_FOLDERS.items():
                if (path / name).is_dir():
                    yield from ((f, kind) for f in _files(path / name))
        else:
            yield from ((f, None) for f in _files(path))


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in SUFFIXES)


class _FileProblem(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
