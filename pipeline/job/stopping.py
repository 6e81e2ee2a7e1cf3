"""Stopping a job at a safe point when SIGINT (Ctrl-C) or SIGTERM arrives.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to be,
which may be inside an import lock callback (where it is swallowed) or inside dask's or
distributed's own machinery. A job run from the command line instead records the signal
(:func:`requested`): the job's loop (:mod:`pipeline.job.run`) then submits nothing more, lets the
work in flight finish within its grace period and raises :class:`Interrupted`. A second signal
interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_requested = threading.Event()
_signal_number = 0


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
        _signal_number = 0


def requested() -> int:
    """The signal number of a stop request, 0 when none was made."""
    return _signal_number if _requested.is_set() else 0
