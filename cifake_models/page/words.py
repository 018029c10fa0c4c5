"""Words for the page: an English list of phrases."""

from __future__ import annotations

from collections.abc import Sequence


def join_words(words: Sequence[str], conjunction: str = "and") -> str:
    """``a, b and c`` (``conjunction`` in place of "and"); empty for no words."""
    return ", ".join(words) if len(words) < 2 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"
