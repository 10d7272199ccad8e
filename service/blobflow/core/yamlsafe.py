"""Loading YAML documents safely, remembering the line of every value.

`yaml.safe_load` cannot run code, but it happily builds a billion-laughs
document whose aliases expand to gigabytes once serialised, and it forgets
where each value came from. This loader composes the node graph with the safe
loader, then builds plain JSON-like data itself under limits on bytes, depth
and expanded size, and records the line of each value so that a validation
error can say `workflows/book.yaml:23`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from blobflow.errors import PathPart, YamlLoadError

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = frozenset(
    "tag:yaml.org,2002:" + name for name in ("null", "bool", "int", "float", "str")
)
_TEXT_TAGS = frozenset(("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"))
_NUMBER_TAGS = frozenset(("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"))
_KEY_TAGS = _PLAIN_TAGS | _TEXT_TAGS | {_MERGE_TAG}


@dataclass(slots=True)
class LoadedDocument:
    """The data of one YAML document and the line each value starts on."""

    data: Any
    lines: dict[tuple[PathPart, ...], int] = field(default_factory=dict)


def nearest_line(lines: dict[tuple[PathPart, ...], int], path: tuple[PathPart, ...]) -> int | None:
    """The line of the deepest known value along `path`."""
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def load_yaml(text: str | bytes) -> LoadedDocument:
    """Load exactly one YAML document into JSON-like data with line numbers."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "replace"))
    if size > MAX_BYTES:
        raise YamlLoadError(f"file is larger than {MAX_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlLoadError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise YamlLoadError(f"invalid YAML: {exc.problem or exc.context}", line) from None
    except yaml.YAMLError as exc:
        raise YamlLoadError(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlLoadError(f"nesting deeper than {MAX_DEPTH} levels") from None
    if len(nodes) != 1:
        raise YamlLoadError(f"expected one YAML document, found {len(nodes)}")
    builder = _Builder()
    data = builder.build(nodes[0], (), 0)
    return LoadedDocument(data, builder.lines)


class _Builder:
    """Turns a composed node graph into data, enforcing the limits."""

    def __init__(self) -> None:
        self.lines: dict[tuple[PathPart, ...], int] = {}
        self.nodes = 0
        self._constructor = yaml.SafeLoader("")

    def build(self, node: Node, path: tuple[PathPart, ...], depth: int) -> Any:
        # Aliases are shared nodes in the graph; counting every visit counts
        # the expanded document, which is what an alias bomb inflates.
        self.nodes += 1
        line = node.start_mark.line + 1
        if self.nodes > MAX_NODES:
            raise YamlLoadError(f"document expands to more than {MAX_NODES} values", line)
        if depth > MAX_DEPTH:
            raise YamlLoadError(f"nesting deeper than {MAX_DEPTH} levels", line)
        self.lines.setdefault(path, line)
        if isinstance(node, ScalarNode):
            return self._scalar(node, line)
        if isinstance(node, SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise YamlLoadError(f"unsupported YAML tag {node.tag!r}", line)
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth, line)
        raise YamlLoadError(f"unsupported YAML node {type(node).__name__}", line)

    def _scalar(self, node: ScalarNode, line: int) -> Any:
        if node.tag in _TEXT_TAGS or (node.tag in _NUMBER_TAGS and ":" in node.value):
            # Dates, YAML 1.1 sexagesimal numbers (`1:30` is 90) and `=` stay
            # text: JSON has no such types, and base 60 makes huge integers cheap.
            return node.value
        if node.tag not in _PLAIN_TAGS:
            raise YamlLoadError(f"unsupported YAML tag {node.tag!r}", line)
        try:
            value = self._constructor.construct_object(node)
        except Exception as exc:  # PyYAML's constructors raise many types on odd input
            raise YamlLoadError(f"invalid value {node.value!r}: {exc}", line) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise YamlLoadError(f"{node.value!r} is not a JSON number", line)
        return value

    def _mapping(
        self, node: MappingNode, path: tuple[PathPart, ...], depth: int, line: int
    ) -> dict[str, Any]:
        if node.tag != "tag:yaml.org,2002:map":
            raise YamlLoadError(f"unsupported YAML tag {node.tag!r}", line)
        merged: dict[str, Any] = {}
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise YamlLoadError("mapping keys must be plain text", key_line)
            if key_node.tag not in _KEY_TAGS:
                raise YamlLoadError(f"unsupported YAML tag {key_node.tag!r}", key_line)
            if key_node.tag == _MERGE_TAG:
                merged.update(self._merge_sources(value_node, path, depth))
                continue
            # The key's own text: `on:` or `200:` stay strings, as JSON needs.
            key = key_node.value
            if key in out:
                raise YamlLoadError(f"duplicate key {key!r}", key_line)
            out[key] = self.build(value_node, (*path, key), depth + 1)
            self.lines[(*path, key)] = key_line
        # Explicit keys override merged ones.
        return {**merged, **out} if merged else out

    def _merge_sources(self, node: Node, path: tuple[PathPart, ...], depth: int) -> dict[str, Any]:
        """The pairs a `<<` key merges in; in a list, earlier mappings win."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, MappingNode):
                line = source.start_mark.line + 1
                raise YamlLoadError("a merge key takes a mapping or a list of mappings", line)
            merged.update(self.build(source, path, depth + 1))
        return merged
