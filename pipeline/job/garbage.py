"""Cyclic garbage collection paused while a process imports the job's libraries.

Importing distributed, dask, zarr, scikit-learn and dask-ml creates some 350,000 objects that
live as long as the process, and next to no garbage. Left to itself, the collector walks every
one of them again each time their number has grown by a quarter: six full collections, about
0.55 s of a 100-MP JPEG's job, holding the interpreter lock that its first tasks wait for; the
young collections add 0.2 s.

While any pause is held (they may overlap, from several threads: the job's start and the
warm-up thread), nothing is collected. When the last one ends, every object so far is frozen
(:func:`gc.freeze`: later collections skip them; they are still freed when no longer
referenced) and collection resumes. The cost: a reference cycle that became garbage during a
pause is kept until the process ends. So a pause covers imports only, which make next to no
garbage and take seconds at most: not the loading of the kernels, which on a first run compiles
them for tens of seconds (numba's compiler makes much garbage) while the first tasks run.
"""

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_held = 0  # pauses held now
_enabled = True  # collection was enabled when the first of them began


def pause() -> None:
    """Pause collection until the matching :func:`resume` (which may come from another thread)."""
    global _held, _enabled
    with _lock:
        if _held == 0:
            _enabled = gc.isenabled()
            gc.disable()
        _held += 1


def resume() -> None:
    """End a :func:`pause`.

    The last of those held freezes the objects so far and enables collection again, unless it
    was disabled before the first began.
    """
    global _held
    with _lock:
        _held -= 1
        if _held == 0 and _enabled:
            gc.freeze()
            gc.enable()


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection inside this block (nor beside it, in other threads)."""
    pause()
    try:
        yield
    finally:
        resume()
