"""API tokens: who a bearer token authenticates, and whether as an admin.

HTTP (`blobflow.api.access`) and the NATS control subjects (`blobflow.messaging`)
identify callers with the same `TokenTable`, so a token means the same everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
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


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request, as a token identified them."""

    user_id: str | None
    admin: bool

    def sees(self, owner: str) -> bool:
        """Whether it may see, and act on, what belongs to the user `owner`."""
        return self.admin or self.user_id == owner


# Authentication off: every caller may do everything (a warning at start says so).
ANONYMOUS = Principal(None, admin=True)
# Authentication on, no valid token, where none is needed (HTTP probes).
NOBODY = Principal(None, admin=False)


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Bearer <token>` (the scheme in any case); None for anything else."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    return presented.strip()


def bearer(token: str) -> str:
    """The `Authorization` header value that presents `token`."""
    return f"Bearer {token}"


class TokenTable:
    """The configured tokens, and who a presented `Authorization` value authenticates.

    The one implementation for every way in (HTTP, NATS control subjects). Tokens
    are compared as SHA-256 digests with `hmac.compare_digest` against every entry,
    so the time taken does not depend on which entry matched or how much of a token
    was right. Never log a token: log the `key` of `identify` if anything.
    """

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = [(_digest(entry.token), entry) for entry in tokens]

    @property
    def enabled(self) -> bool:
        """False without tokens: authentication is off and everyone is ANONYMOUS."""
        return bool(self._tokens)

    def identify(self, authorization: str | None) -> tuple[ApiToken | None, str | None]:
        """The token entry presented, and its digest (a rate-limit key that is no secret)."""
        presented = bearer_token(authorization)
        if presented is None:
            return None, None
        digest = _digest(presented)
        found = None
        for known, entry in self._tokens:
            # No early exit: every entry is compared, whichever matches.
            if hmac.compare_digest(known, digest):
                found = entry
        return found, digest.hex()[:24] if found else None

    def principal(self, authorization: str | None) -> Principal | None:
        """The caller; ANONYMOUS without tokens configured, None when no valid token is given."""
        if not self.enabled:
            return ANONYMOUS
        entry, _ = self.identify(authorization)
        return None if entry is None else Principal(entry.user_id, entry.admin)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
