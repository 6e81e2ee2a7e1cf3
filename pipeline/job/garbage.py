"""Cyclic garbage collection paused while a process imports the job's libraries.

Importing distributed, dask, zarr, scikit-learn and dask-ml creates some 350,000 objects that
live as long as the process, and next to no garbage. Left to itself, the collector walks every
one of them again each time their number has grown by a quarter: six full collections, about
0.55 s of a 100-MP JPEG's job, holding the interpreter lock that its first tasks wait for; the
young collections add 0.2 s.

While any pause is held (they may overlap, from several threads: the job's start and the
warm-up thread), nothing is collected: the collector's first threshold is zero. When the last
one ends, collection resumes. A cycle that became garbage meanwhile waits for the next
collection, so a pause covers imports only, which take seconds at most: not the loading of the
kernels, which on a first run compiles them for tens of seconds (numba's compiler makes much
garbage) while the first tasks run.

In a process of the pipeline's own (``python -m pipeline``, a worker that preloads
:mod:`pipeline.job.preload`: see :func:`freeze_after_pauses`), the end of the pauses also
freezes every object so far (:func:`gc.freeze`): later collections skip them (they are still
freed when no longer referenced), but a cycle that became garbage during a pause is kept for
good. Not in someone else's process (the Python API in a notebook), whose own objects would be
frozen too: there the first full collection after the pauses walks them all once.
"""

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_held = 0  # pauses held now
_thresholds = gc.get_threshold()  # the collector's thresholds before the first of them
_freeze = False  # the end of the pauses freezes the objects so far


def freeze_after_pauses() -> None:
    """In this process, the end of the pauses (now or later) freezes the objects so far.

    For processes the pipeline owns (its command line, its workers): see the module's text.
    """
    global _freeze
    with _lock:
        _freeze = True


def pause() -> None:
    """Pause collection until the matching :func:`resume` (which may come from another thread).

    A first threshold of zero: :func:`gc.isenabled` still says True, which code imported
    meanwhile may record (dask's ``disable_gc`` decorator of ``dask.array.slicing`` keeps, from
    its import, whether to enable collection again after each call).
    """
    global _held, _thresholds
    with _lock:
        if _held == 0:
            _thresholds = gc.get_threshold()
            gc.set_threshold(0, *_thresholds[1:])
        _held += 1


def resume() -> None:
    """End a :func:`pause`.

    The last of those held gives the collector its thresholds back, after freezing the objects
    so far if :func:`freeze_after_pauses` was called.
    """
    global _held
    with _lock:
        _held -= 1
        if _held == 0:
            if _freeze:
                gc.freeze()
            gc.set_threshold(*_thresholds)


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection inside this block (nor beside it, in other threads)."""
    pause()
    try:
        yield
    finally:
        resume()
