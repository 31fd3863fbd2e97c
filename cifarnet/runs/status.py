"""A run's status: each one spelt once, and the groups of them that readers ask about.

A trainer, its launcher or the queue writes one of :data:`STATUSES` into the run's ``status.json``
(:mod:`cifarnet.runs.records`); a reader also says :attr:`Status.MISSING` of a run an experiment names whose folder
is gone. Every page, command and module compares against these names, never a literal, so a status cannot be
misspelt in one place and silently never match.

The values are plain strings, not an ``Enum``: a record written with them is byte for byte what older code wrote
and older run folders hold, and ``json.dumps`` needs no ``.value`` (``enum.StrEnum`` would need Python 3.11).
"""

from __future__ import annotations


class Status:
    """The statuses of a run, as class attributes (``Status.FAILED == "failed"``)."""

    QUEUED = "queued"  # waiting for a slot under the run limit (cifarnet.runs.queue); no trainer yet
    STARTING = "starting"  # a trainer process is being born, or loads its data
    RUNNING = "running"
    FINISHED = "finished"  # trained to its last step, with its results written
    STOPPED = "stopped"  # on request (or interrupted); its checkpoint is kept and it can be resumed
    STOPPED_EARLY = "stopped early"  # by a sweep's rule (cifarnet.runs.early_stop), its reason recorded
    FAILED = "failed"  # an error, or a trainer that vanished without saying how it ended
    DIVERGED = "diverged"  # the loss stopped being finite
    CANCELLED = "cancelled"  # cancelled while queued, before it started
    MISSING = "missing"  # a reader's, never written: an experiment's run whose folder is gone


# What a run's status.json may say; a reader takes anything else as damage (the run ``failed``).
STATUSES = (
    Status.QUEUED,
    Status.STARTING,
    Status.RUNNING,
    Status.FINISHED,
    Status.STOPPED,
    Status.STOPPED_EARLY,
    Status.FAILED,
    Status.DIVERGED,
    Status.CANCELLED,
)
LIVE = (Status.STARTING, Status.RUNNING)  # a trainer process exists (or is being born); a queued run has none yet
PENDING = (Status.QUEUED, *LIVE)  # not ended yet: pages showing such a run keep refreshing
ENDED = tuple(status for status in (*STATUSES, Status.MISSING) if status not in PENDING)  # nothing will change it
# Ended with a checkpoint to go on from, for a reason resuming removes; a diverged run is not among them: resuming
# would repeat its steps at the learning rate that made the loss non-finite.
RESUMABLE = (Status.STOPPED, Status.STOPPED_EARLY, Status.FAILED)
FAILURES = (Status.FAILED, Status.DIVERGED)  # ended by an error: a command that waited for it exits non-zero
