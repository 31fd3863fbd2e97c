"""The one exception type users see.

Every refusal (bad config value, missing data set, damaged checkpoint) is a
``CifarnetError`` whose text is a complete, single-line explanation. The CLI
prints it and exits non-zero; the dashboard shows it inline. Anything else
escaping is a bug, not a user error.

A message quotes what the user gave through :func:`shown`, so a pasted 100 KB value or
a crafted path cannot fill the terminal or the page (the dashboard also escapes the
whole message as literal text, see ``cifarnet.ui.common.literal``).
"""

from __future__ import annotations

import os

SHOWN_CHARS = 60  # a value in a message; enough for any real setting, run name or file name
SHOWN_PATH_CHARS = 120  # paths are longer by nature, and their end (the file) matters most


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` with its middle replaced by an ellipsis when it is longer than ``limit`` characters.

    The middle, not the end: the start says what the value is, the end is a file's name.
    """
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head) :]}"


def shown(value: object) -> str:
    """How a message quotes a value that came from outside: a path as it is, anything else as its
    ``repr`` (quotes make empty and blank strings visible), both shortened."""
    if isinstance(value, os.PathLike):
        return shorten(os.fspath(value), SHOWN_PATH_CHARS)
    return shorten(repr(value))


class CifarnetError(ValueError):
    """A problem the user can fix; the message says what was wrong and what is allowed."""


class DataError(CifarnetError):
    """The CIFAR-10 files are missing, damaged or cannot be fetched."""


class CheckpointError(CifarnetError):
    """A checkpoint file is missing, damaged, unsafe or of another architecture."""


class WriteError(CifarnetError):
    """A run's record could not be written (disk full, no permission); the message names the file and the reason."""

    @classmethod
    def of(cls, path: os.PathLike, exc: OSError) -> WriteError:
        """The error for ``exc`` raised while writing ``path``, in the system's words ("No space left on device")."""
        return cls(f"cannot write {shown(path)}: {exc.strerror or exc}")
