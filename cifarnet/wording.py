"""Counts and names in English sentences: "1 epoch", "2 epochs", "an airplane", "a bird".

One spelling for every page and message, so no text says "1 epochs" or "a airplane".
"""

from __future__ import annotations


def plural(count: float, word: str) -> str:
    """``count`` and ``word``, with an "s" unless the count is exactly one (``1 epoch``, ``0.5 epochs``)."""
    return f"{count:g} {word}{'' if count == 1 else 's'}"


def with_article(word: object) -> str:
    """``word`` after "a" or "an", by its first letter (a vowel takes "an": "an airplane", "a truck")."""
    text = str(word)
    return f"{'an' if text[:1].lower() in 'aeiou' and text[:1] else 'a'} {text}"
