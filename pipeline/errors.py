"""Exceptions the pipeline raises for expected problems (reported as one line, no traceback).

Also how a failed write to the store is told apart: one that every later write would meet too
(:func:`unwritable`: the disk is full, read-only, ...) stops the job (:class:`StoreUnwritable`);
any other fails one image.
"""

from __future__ import annotations

import errno

#: errno values of a write that no other write to the same store can escape: the filesystem is
#: full, over quota, read-only, or refuses this process.
UNWRITABLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class PipelineError(Exception):
    """An expected problem with a job: bad input, bad settings, or a store that does not fit."""


class InputError(PipelineError):
    """An input cannot be used; the message names the file and the problem."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class ImageProblem(PipelineError):
    """An image cannot be stored as asked, found where its input's name is not known.

    The message says what is wrong; whoever reports it names the input.
    """


class UsageError(PipelineError):
    """Settings that cannot work (bad option values, clashing names); exit code 2."""


class SettingError(UsageError):
    """A setting whose value cannot work, named as the user gave it once that is known.

    Attributes
    ----------
    name : str
        The setting's name (``dither_strength``).
    problem : str
        What is wrong, to follow the name: ``must be 0..4, got 5``.
    """

    def __init__(self, name: str, problem: str, label: str | None = None) -> None:
        super().__init__(f"{label or name} {problem}")
        self.name = name
        self.problem = problem

    def named(self, label: str) -> SettingError:
        """The same error naming the setting ``label``: ``--dither-strength``, a job file's key."""
        return SettingError(self.name, self.problem, label)


class StoreUnwritable(PipelineError):
    """The store can no longer be written (full, read-only, ...): the job stops.

    Attributes
    ----------
    store : str
    reason : str
        The operating system's error, e.g. ``[Errno 28] No space left on device``.
    """

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"{store}: the store can no longer be written: {reason}")
        self.store = store
        self.reason = reason


class LeaseLost(PipelineError):
    """The job no longer holds its store's lease: it writes nothing more and stops."""


class SchedulerLost(PipelineError):
    """The client lost its scheduler (gone, or unreachable past the reconnect timeout)."""

    def __init__(self) -> None:
        super().__init__("lost the connection to the scheduler")


def os_reason(error: OSError) -> str:
    """``error`` in one line without its file name: ``[Errno 28] No space left on device``.

    The file is one deep inside the store, which says less than the store a message names.
    """
    if error.errno is not None and error.strerror:
        return f"[Errno {error.errno}] {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def unwritable(error: OSError) -> str | None:
    """The reason of a write ``error`` that every later write to the store would meet, else None.

    Object stores report a refused write (S3's AccessDenied) as a PermissionError without an
    errno.
    """
    if error.errno in UNWRITABLE or isinstance(error, PermissionError):
        return os_reason(error)
    return None
