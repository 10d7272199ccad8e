"""API tokens: who a bearer token authenticates, and whether as an admin."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One `BLOBFLOW_API_TOKENS` entry: a bearer token and the user it authenticates."""

    token: str = field(repr=False)
    user_id: str
    admin: bool = False


def parse_api_tokens(text: str) -> tuple[ApiToken, ...]:
    """`"t1=alice:admin, t2=bob"` -> ApiTokens; ValueError with one line per bad entry."""
    tokens: list[ApiToken] = []
    problems: list[str] = []
    first_entry: dict[str, int] = {}
    for number, entry in enumerate(text.split(","), start=1):
        # rpartition: base64 tokens may end in `=` padding; user ids hold no `=`.
        token, equals, rest = (part.strip() for part in entry.rpartition("="))
        user_id, colon, role = (part.strip() for part in rest.partition(":"))
        if not entry.strip():
            problems.append(f"entry {number} is empty")
        elif not equals:  # the entry may be a bare token: never quote it
            problems.append(f"entry {number}: expected token=user_id or token=user_id:admin")
        elif not token:
            problems.append(f"entry {number}: the token is empty")
        elif not user_id:
            problems.append(f"entry {number}: the user id is empty")
        elif colon and role != "admin":
            problems.append(f"entry {number}: unknown role {role!r} (only :admin is allowed)")
        elif token in first_entry:
            problems.append(f"entry {number}: the same token as entry {first_entry[token]}")
        else:
            first_entry[token] = number
            tokens.append(ApiToken(token, user_id, admin=bool(colon)))
    if problems:
        raise ValueError("\n".join(problems))
    return tuple(tokens)
