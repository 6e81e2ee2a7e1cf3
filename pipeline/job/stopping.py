"""Stopping a job at a safe point when SIGINT (Ctrl-C) or SIGTERM arrives.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to be,
which may be inside an import lock callback (where it is swallowed) or inside dask's or
distributed's own machinery. A job run from the command line instead records the signal
(:func:`requested`): the job's loop (:mod:`pipeline.job.run`) then submits nothing more, lets the
work in flight finish within its grace period and raises :class:`Interrupted`. A second signal
interrupts at once: where the main thread is, or, while a loop that checks (:func:`checked`)
runs, at that loop's next check (a tenth of a second), so that it can still say what the job
completed. A third signal interrupts at once wherever the main thread is.

Code that runs before a job's loop (listing inputs, starting a cluster) calls
:func:`stop_point` between its steps, so a first signal stops it there.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_requested = threading.Event()
_hard = threading.Event()
_signal_number = 0
_checking = 0  # loops now checking for a second signal (see checked())


class Interrupted(KeyboardInterrupt):
    """The job was asked to stop by a signal; ``signum`` says which one."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Within the block, a first signal asks the job to stop; a second one interrupts at once.

    Must be entered from the main thread. Signals the process ignores (a job started in the
    background with SIGINT ignored) stay ignored.
    """
    global _signal_number
    previous: dict[int, object] = {}

    def request(signum: int, frame: FrameType | None) -> None:
        global _signal_number
        if _requested.is_set():
            if _checking and not _hard.is_set():
                _hard.set()
                return
            raise Interrupted(signum)
        _signal_number = signum
        _requested.set()

    for signum in signums:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, request)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        _requested.clear()
        _hard.clear()
        _signal_number = 0


def requested() -> int:
    """The signal number of a stop request, 0 when none was made."""
    return _signal_number if _requested.is_set() else 0


def hard() -> bool:
    """Whether a second signal asked to stop at once (see :func:`checked`)."""
    return _hard.is_set()


def stop_point() -> None:
    """Raise :class:`Interrupted` if a signal asked to stop (between two steps of a job)."""
    if requested():
        raise Interrupted(requested())


@contextmanager
def checked() -> Iterator[None]:
    """Within the block, a second signal is recorded (:func:`hard`) for a loop to act on.

    The loop must check :func:`hard` at least every fraction of a second.
    """
    global _checking
    _checking += 1
    try:
        yield
    finally:
        _checking -= 1
