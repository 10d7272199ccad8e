"""The demo services' answers: plausible, deterministic, derived from each request.

Each endpoint of `blobflow.devtools.demo` is a `Compute`: the state, the JSON
body and the path parameters in, the JSON answer out, `BadRequest` for a body
it cannot use. Answers are derived by hashing the request, never by chance.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")
Json = dict[str, Any]
Compute = Callable[["DemoState", Json, Mapping[str, str]], Json]

# Plenty for a first run; the oldest answers are forgotten past it.
_MAX_REMEMBERED = 10_000
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+")
_STYLE = re.compile(r"\ban? ([\w-]+) style\b", re.IGNORECASE)
_SENTENCES = {
    "noir": (
        "Neon bled into the puddles like a confession nobody wanted to hear.",
        "Somewhere a saxophone argued with the rain and lost.",
        "She lit a cigarette she had promised herself she would not smoke.",
        "The city kept its secrets the way a pawnshop keeps watches: ticking, unclaimed.",
        "Every footstep behind him sounded like a debt coming due.",
    ),
    "": (
        "The air smelled of wet stone and woodsmoke.",
        "A clock somewhere in the house counted the silence in patient ticks.",
        "She noticed how the light caught the dust, slow and golden.",
        "He remembered his father's hands, rough and careful at once.",
        "Far off, a dog barked twice and then thought better of it.",
    ),
}
_DEFAULT_PROVIDERS = ("memmie-studio",)


class BadRequest(Exception):
    """A request body the endpoint cannot use; answered 400."""


@dataclass
class DemoState:
    """What the demo services remember between requests."""

    blobs: dict[str, Json] = field(default_factory=dict)
    jobs: dict[str, list[str]] = field(default_factory=dict)  # blob id -> open job ids
    job_count: int = 0
    expansions: dict[str, str] = field(default_factory=dict)  # parent id -> latest blob id
    answers: dict[tuple[str, str, str], Json] = field(default_factory=dict)

    def remember(self, key: tuple[str, str, str], answer: Json) -> None:
        if len(self.answers) >= _MAX_REMEMBERED:
            del self.answers[next(iter(self.answers))]
        self.answers[key] = answer


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def _number(low: int, high: int, *parts: object) -> int:
    """A number in [low, high] that depends only on `parts`."""
    return low + int.from_bytes(_digest(*parts)[:8]) % (high - low + 1)


def _pick(bank: tuple[str, ...], count: int, *seed: object) -> list[str]:
    """`count` consecutive sentences of `bank`, from a start that depends only on `seed`."""
    start = _number(0, len(bank) - 1, *seed)
    return list((bank * 2)[start : start + count])


def _text(body: Json, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name}: a non-empty string is required")
    return value


def _optional(body: Json, name: str, kind: type[_T]) -> _T | None:
    value = body.get(name)
    # bool is an int to Python, never to a JSON author.
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise BadRequest(f"{name}: must be a {kind.__name__} or null")


# -- studio ---------------------------------------------------------------------------


def validate(state: DemoState, body: Json, _: Mapping[str, str]) -> Json:
    blob_id = _text(body, "blob_id")
    content_type = _optional(body, "content_type", str)
    problems = []
    if content_type is not None and not _MEDIA_TYPE.fullmatch(content_type):
        problems.append(f"content_type {content_type!r} is not a media type")
    return {
        "valid": not problems,
        "blob_id": blob_id,
        "content_type": content_type,
        "problems": problems,
    }


def metadata(state: DemoState, body: Json, _: Mapping[str, str]) -> Json:
    blob_id = _text(body, "blob_id")
    fields = _optional(body, "extract_fields", list)
    stored = state.blobs.get(blob_id)
    content = None
    if stored is not None:
        raw = stored["content"]
        content = raw if isinstance(raw, str) else json.dumps(raw)
    known = {
        "content_type": "text/markdown" if stored or "chapter" in blob_id else "text/plain",
        "size": len(content.encode()) if content else _number(512, 65_536, blob_id),
        "checksum": "sha256:" + hashlib.sha256((content or blob_id).encode()).hexdigest(),
    }
    wanted = known if fields is None else [f for f in fields if isinstance(f, str) and f in known]
    return {"blob_id": blob_id, **{name: known[name] for name in wanted}}


def trigger(state: DemoState, body: Json, _: Mapping[str, str]) -> Json:
    blob_id = _text(body, "blob_id")
    provider_ids = _optional(body, "provider_ids", list) or list(_DEFAULT_PROVIDERS)
    _optional(body, "metadata", dict)
    triggered = []
    for provider_id in provider_ids:
        state.job_count += 1
        job_id = f"job-{state.job_count}"
        state.jobs.setdefault(blob_id, []).append(job_id)
        triggered.append({"provider_id": str(provider_id), "job_id": job_id, "status": "queued"})
    return {"blob_id": blob_id, "triggered": triggered}


def rollback(state: DemoState, body: Json, _: Mapping[str, str]) -> Json:
    blob_id = _text(body, "blob_id")
    execution_id = _optional(body, "execution_id", str)
    return {
        "blob_id": blob_id,
        "execution_id": execution_id,
        "rolled_back": state.jobs.pop(blob_id, []),
    }


def generate_deltas(state: DemoState, body: Json, _: Mapping[str, str]) -> Json:
    blob_id = _text(body, "blob_id")
    outputs = _optional(body, "provider_outputs", dict) or {}
    triggered = outputs.get("triggered")
    providers = sorted(
        {str(t.get("provider_id")) for t in triggered if isinstance(t, dict)}
        if isinstance(triggered, list)
        else set()
    )
    rev = _number(2, 99, blob_id)
    return {
        "delta_operations": [
            {"op": "set", "path": "/metadata/processed_by", "value": providers},
            {"op": "set", "path": "/metadata/revision", "value": rev, "old_value": rev - 1},
        ],
        "created_blobs": [{"id": f"{blob_id}-summary", "type": "summary", "parent_id": blob_id}],
    }


def get_blob(state: DemoState, _: Json, params: Mapping[str, str]) -> Json:
    blob_id = params["blob_id"]
    if blob_id in state.blobs:
        return state.blobs[blob_id]
    numbers = re.findall(r"\d+", blob_id)
    chapter = int(numbers[-1]) if numbers else _number(1, 30, blob_id)
    content = " ".join(_pick(_SENTENCES[""], 3, blob_id))
    metadata = {
        "type": "chapter",
        "chapter_number": chapter,
        "title": f"Chapter {chapter}",
        "content_type": "text/markdown",
        "word_count": len(content.split()),
    }
    return {"id": blob_id, "content": content, "metadata": metadata}


def check_consistency(state: DemoState, body: Json, _: Mapping[str, str]) -> Json:
    content = _text(body, "chapter_content")
    book_id = _optional(body, "book_id", str)
    chapter = _optional(body, "chapter_number", int)
    score = _number(75, 99, book_id, content, chapter) / 100
    issues = [] if score >= 0.8 else ["the pacing slows noticeably in the middle"]
    return {"score": score, "issues": issues, "book_id": book_id, "chapter_number": chapter}


def save_blob(state: DemoState, body: Json, _: Mapping[str, str]) -> Json:
    if "content" not in body:
        raise BadRequest("content: required")
    parent_id = _optional(body, "parent_id", str)
    metadata = _optional(body, "metadata", dict) or {}
    number = len(state.blobs) + 1
    blob_id = f"{parent_id}-expanded-{number}" if parent_id else f"blob-{number}"
    state.blobs[blob_id] = {"id": blob_id, "content": body["content"], "metadata": metadata}
    deltas: list[Json] = [{"op": "add", "path": "/derived/-", "value": blob_id}]
    if parent_id is not None:
        old = state.expansions.get(parent_id)
        state.expansions[parent_id] = blob_id
        deltas.append(
            {"op": "set", "path": "/metadata/latest_expansion", "value": blob_id, "old_value": old}
        )
    return {"id": blob_id, "parent_id": parent_id, "deltas": deltas}


# -- core -----------------------------------------------------------------------------


def generate(state: DemoState, body: Json, _: Mapping[str, str]) -> Json:
    prompt = _text(body, "prompt")
    model = _optional(body, "model", str) or "demo-writer"
    max_tokens = _optional(body, "max_tokens", int)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", prompt) if p.strip()]
    last = " ".join(paragraphs[-1].split()) if paragraphs else ""
    style = _STYLE.search(prompt)
    bank = _SENTENCES.get(style.group(1).lower() if style else "", _SENTENCES[""])
    words = " ".join([last, *_pick(bank, 3, last)]).split()
    truncated = max_tokens is not None and len(words) > max_tokens
    if max_tokens is not None:
        words = words[: max(max_tokens, 0)]
    return {
        "text": " ".join(words),
        "word_count": len(words),
        "model": model,
        "finish_reason": "length" if truncated else "stop",
    }
