"""Exceptions the pipeline raises for expected problems (reported as one line, no traceback).

Also how a failed write to the store is told apart: one that every later write would meet too
(:func:`unwritable`: the disk is full, read-only, ...) stops the job (:class:`StoreUnwritable`);
any other fails one image.
"""

from __future__ import annotations

import errno
from typing import Any

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

    The message names the setting, says what is wrong and shows the value:
    ``dither_strength must be 0..4, got 5`` (a keyword of the Python API, a job file's key once
    :meth:`named` with the file), ``--dither-strength must be 0..4, got 5`` (an option, with the
    text typed), ``DASK_PIPELINE__DITHER_STRENGTH=5: must be 0..4`` (:meth:`set_by`).

    Attributes
    ----------
    name : str
        The setting's name (``dither_strength``).
    problem : str
        What is wrong, to follow the name: ``must be 0..4``.
    value : object
        The value that cannot work.
    """

    def __init__(self, name: str, problem: str, value: Any, message: str | None = None) -> None:
        super().__init__(message or f"{name} {problem}, got {value!r}")
        self.name = name
        self.problem = problem
        self.value = value

    def named(self, label: str, typed: str | None = None) -> SettingError:
        """The same error naming the setting ``label``.

        ``--dither-strength``, ``job.toml: dither_strength``; the value is shown as ``typed``
        when that text is known.
        """
        given = repr(self.value) if typed is None else typed
        message = f"{label} {self.problem}, got {given}"
        return SettingError(self.name, self.problem, self.value, message)

    def set_by(self, variable: str, text: str) -> SettingError:
        """The same error naming the environment variable that set it, as it was set.

        ``DASK_PIPELINE__DITHER_STRENGTH=5: must be 0..4``.
        """
        message = f"{variable}={text}: {self.problem}"
        return SettingError(self.name, self.problem, self.value, message)


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
