"""Ids as subject tokens (§2): percent-encoding, its inverse, and wildcard coverage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobflow.core.subjects import decode_token, delta_subject, encode_token, subject_covers

FAST = settings(max_examples=500, deadline=None)


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("blob-1", "blob-1"),
        ("A_z:0-9", "A_z:0-9"),  # the kept characters
        ("a.b", "a%2Eb"),
        ("*", "%2A"),
        (">", "%3E"),
        ("a b", "a%20b"),
        ("tab\there", "tab%09here"),
        ("%", "%25"),
        ("%2E", "%252E"),  # an id that looks encoded is encoded again
        ("é", "%C3%A9"),
        ("😀", "%F0%9F%98%80"),
        ("nul\x00byte", "nul%00byte"),
        ("a/b\\c", "a%2Fb%5Cc"),
        ("$where", "%24where"),
        ("\ud800", "%ED%A0%80"),  # a lone surrogate still gets a token
    ],
)
def test_encode_and_decode(value: str, token: str) -> None:
    assert encode_token(value) == token
    assert decode_token(token) == value


@pytest.mark.parametrize(
    "token",
    [
        "",  # encodes no id
        "%",  # truncated escapes
        "%4",
        "a%zz",
        "%2e",  # lowercase hex is not what encode_token writes
        "%41",  # `A` needs no escape
        "a.b",  # characters encode_token never leaves as they are
        "a b",
        "é",
        "%C3",  # an incomplete UTF-8 sequence
        "%FF",
    ],
)
def test_decode_refuses_what_encode_cannot_produce(token: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by problem
        decode_token(token)


def test_empty_id_has_no_token() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_token("")


def test_delta_subject() -> None:
    assert delta_subject("studio", "chapter.1 *") == "deltas.studio.chapter%2E1%20%2A"
    assert delta_subject("p.x", ">", prefix="t_1.deltas") == "t_1.deltas.p%2Ex.%3E"


@FAST
@given(st.text(min_size=1))
def test_round_trip_and_token_is_a_single_literal_token(value: str) -> None:
    token = encode_token(value)
    assert decode_token(token) == value
    assert token.isascii()
    assert not any(char in token for char in ".*> \t\r\n\x00")
    assert all(char.isalnum() or char in "_-:%" for char in token)


@FAST
@given(st.text(min_size=1), st.text(min_size=1))
def test_different_ids_give_different_tokens(a: str, b: str) -> None:
    assert (encode_token(a) == encode_token(b)) == (a == b)


@pytest.mark.parametrize(
    ("pattern", "subject", "covered"),
    [
        ("blobs.created", "blobs.created", True),
        ("blobs.created", "blobs.updated", False),
        ("blobs.*", "blobs.created", True),
        ("blobs.>", "blobs.created", True),
        ("blobs.>", "blobs", False),  # `>` needs at least one token
        (">", "deltas.>", True),
        ("deltas.>", "deltas.>", True),
        ("deltas.*", "deltas.>", False),  # `>` spans more tokens than `*`
        ("deltas.*.*", "deltas.>", False),
        ("deltas.>", "deltas.*", True),
        ("*.*", "blobs.*", True),
        ("blobs.created", "blobs.*", False),
        ("blobs.created.x", "blobs.created", False),
        ("blobs", "blobs.created", False),
    ],
)
def test_subject_covers(pattern: str, subject: str, covered: bool) -> None:
    assert subject_covers(pattern, subject) is covered
