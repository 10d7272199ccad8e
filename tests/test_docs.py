"""The user documentation links only to what a clone of the repository holds.

Every relative markdown link `[text](target#anchor)` in README.md, docs/**/*.md
and deploy/README.md must name an existing file or folder inside the
repository, and an anchor into a markdown file must name one of its headings,
slugged as GitHub does. Links inside code blocks and code spans are examples,
not links, and are skipped; so are links with a scheme (`https:`, `mailto:`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    {ROOT / "README.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").rglob("*.md")}
)

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")
# `[text](target)` or `![alt](target)`, the text holding at most one level of brackets,
# the target optionally in `<…>` and followed by a title.
_LINK = re.compile(
    r"(?<!\\)!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"
    r"\(\s*(?:<([^<>]*)>|([^\s()]*(?:\([^\s()]*\)[^\s()]*)*))(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:\s+(.*?))?(?:\s+#+)?\s*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_INLINE_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HTML_TAG = re.compile(r"<[^>]*>")
_NOT_IN_SLUG = re.compile(r"[^\w\- ]")


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, code spans blanked out."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            continue
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        yield number, _CODE_SPAN.sub(lambda m: "`" * len(m.group(0)), line)


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link in the prose of a markdown text."""
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(text):
        for match in _LINK.finditer(line):
            found.append((number, match.group(1) if match.group(1) is not None else match.group(2)))
    return found


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: `POST /v1/registry` -> `post-v1registry`."""
    text = _INLINE_LINK.sub(r"\1", heading)
    text = _HTML_TAG.sub("", text).replace("`", "")
    return _NOT_IN_SLUG.sub("", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a markdown text; repeats get `-1`, `-2` … as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    previous: str | None = None
    fence: str | None = None
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence, previous = opening.group(1), None
            continue
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        heading: str | None = None
        atx = _ATX_HEADING.match(line)
        if atx:
            heading = atx.group(1) or ""
        elif previous and _SETEXT_UNDERLINE.match(line) and not previous.lstrip().startswith("|"):
            heading = previous.strip()
        if heading is not None:
            base = slug(heading)
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
            previous = None
        else:
            previous = line if line.strip() else None
    return found


def link_problems(document: Path, root: Path) -> list[str]:
    """One line per link of `document` that does not resolve inside `root`."""
    text = document.read_text(encoding="utf-8")
    shown = document.relative_to(root).as_posix()
    problems: list[str] = []
    for number, target in links(text):
        if not target or _SCHEME.match(target) or target.startswith("//"):
            continue
        path_part, _, anchor = target.partition("#")
        where = f"{shown}:{number}: {target}"
        if path_part.startswith("/"):
            problems.append(f"{where}: use a path relative to the document")
            continue
        resolved = (document.parent / unquote(path_part)).resolve() if path_part else document
        if not resolved.is_relative_to(root):
            problems.append(f"{where}: leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file or folder")
        elif anchor and not _has_anchor(resolved, unquote(anchor)):
            problems.append(f"{where}: no heading with that anchor")
    return problems


def _has_anchor(target: Path, anchor: str) -> bool:
    """Whether `anchor` names a heading of `target`; only markdown files are checked."""
    if not target.is_file() or target.suffix.lower() != ".md":
        return True
    return anchor.lower() in anchors(target.read_text(encoding="utf-8"))


def _name(document: Path) -> str:
    return document.relative_to(ROOT).as_posix()


def test_the_documents_are_found() -> None:
    names = {_name(document) for document in DOCUMENTS}
    assert {"README.md", "deploy/README.md", "docs/README.md"} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    problems = link_problems(document, ROOT)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Configuration", "configuration"),
        ("`POST /v1/workflows/{id}/execute`", "post-v1workflowsidexecute"),
        ("`GET /v1/blobs/{blob_id}/deltas`", "get-v1blobsblob_iddeltas"),
        ("A blob's history", "a-blobs-history"),
        ("NATS: a cluster of three", "nats-a-cluster-of-three"),
        ("`retry` and `timeout_seconds`", "retry-and-timeout_seconds"),
        ("Health, readiness, metrics", "health-readiness-metrics"),
        ("See [the API](api.md) now", "see-the-api-now"),
        ("Überblick & Teile", "überblick--teile"),
    ],
)
def test_headings_are_slugged_as_on_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_repeated_headings_are_numbered_and_code_is_not_a_heading() -> None:
    text = "# Top\n\n## Steps\n\n```yaml\n# not a heading\n```\n\n## Steps\n\nSetext\n---\n"
    assert anchors(text) == {"top", "steps", "steps-1", "setext"}


def test_links_in_code_are_not_links() -> None:
    text = (
        "See [a](a.md) and [`b`](b.md#x 'title').\n"
        "`[c](c.md)` is code.\n"
        "```\n[d](d.md)\n```\n"
        "![e](img/e.png) and [f](<f g.md>) and [h](https://example.com)\n"
    )
    assert links(text) == [
        (1, "a.md"),
        (1, "b.md#x"),
        (6, "img/e.png"),
        (6, "f g.md"),
        (6, "https://example.com"),
    ]


def test_broken_links_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "other.md").write_text("# Other\n\n## A part\n", encoding="utf-8")
    (tmp_path / "outside.md").write_text("# Outside\n", encoding="utf-8")
    page = root / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#a-part) [self](#page) [folder](../docs) [web](https://x.org/y)\n"
        "[missing](gone.md) [anchor](other.md#no-part) [out](../../outside.md)\n"
        "[absolute](/docs/other.md) [own anchor](#nowhere)\n",
        encoding="utf-8",
    )
    assert link_problems(page, root) == [
        "docs/page.md:4: gone.md: no such file or folder",
        "docs/page.md:4: other.md#no-part: no heading with that anchor",
        "docs/page.md:4: ../../outside.md: leaves the repository",
        "docs/page.md:5: /docs/other.md: use a path relative to the document",
        "docs/page.md:5: #nowhere: no heading with that anchor",
    ]
