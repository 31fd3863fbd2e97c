"""The one exception type users see.

Every refusal (bad config value, missing data set, damaged checkpoint) is a
``CifarnetError`` whose text is a complete, single-line explanation. The CLI
prints it and exits non-zero; the dashboard shows it inline. Anything else
escaping is a bug, not a user error.
"""


class CifarnetError(ValueError):
    """A problem the user can fix; the message says what was wrong and what is allowed."""


class DataError(CifarnetError):
    """The CIFAR-10 files are missing, damaged or cannot be fetched."""


class CheckpointError(CifarnetError):
    """A checkpoint file is missing, damaged, unsafe or of another architecture."""
