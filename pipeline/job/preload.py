"""Preload for workers and schedulers of a cluster the pipeline runs on.

A worker that preloads it gets, once when it starts, the fixed costs of the job's first task.

Importing scikit-learn and dask-ml takes 2-3 s (imageio another 0.1 s), and numba loads
dask-ml's k-means kernel and the pipeline's own kernels on their first call (0.7-0.9 s more
once they are in numba's on-disk cache, about 4 s the first time); without this, the first
image each worker reads, fits and labels pays for all of it. Local
clusters started by :func:`pipeline.job.cluster.connect` preload this module; start workers of
other clusters with ``dask worker --preload pipeline.job.preload`` (or the
``distributed.worker.preload`` setting) to the same effect.

Worker processes of a local cluster (``PIPELINE_IGNORE_SIGINT=1`` in their environment, see
:data:`pipeline.job.cluster.WORKER_SIGINT`) ignore SIGINT
from the moment this module is imported: Ctrl-C in a terminal reaches every process of the
job's process group, and the job's own process decides how to stop (finishing the images in
flight); the worker processes end when their cluster closes. Only processes started by
``multiprocessing`` (as a nanny starts its worker) do: distributed's nanny also leaves that
environment in the process that started the cluster, and the job's own process, or any
process it starts, must keep its Ctrl-C.

A scheduler that preloads it (``dask scheduler --preload pipeline.job.preload``) serves the jobs'
metrics and the dashboard's ``/pipeline`` page from the start, before any job registers
:class:`~pipeline.job.metrics_plugin.JobMetrics`; it imports none of the libraries the warm-up
does.
"""

import contextlib
import gc
import multiprocessing
import os
import signal
import threading
from collections.abc import Awaitable

from pipeline.job import garbage

if os.environ.get("PIPELINE_IGNORE_SIGINT") == "1" and multiprocessing.parent_process():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: Environment variable of a worker process that serves one job: that job's colour space and
#: dithering (``"rgb none"``), whose kernels alone its warm-up loads (see :func:`load_kernels`);
#: empty or unset, every kernel. Local clusters set it (:func:`pipeline.job.cluster.connect`).
JOB_KERNELS = "PIPELINE_JOB_KERNELS"


def warm_up(space: str | None = None, dither: str | None = None) -> None:
    """Fit and label a tiny synthetic image: imports every library and compiles the kernels.

    ``space`` and ``dither``: see :func:`load_kernels`. Garbage collection waits while the
    libraries are imported (:mod:`pipeline.job.garbage`), not while the kernels load.
    """
    import_libraries()
    load_kernels(space, dither)


def import_libraries() -> None:
    """Import the decoders and the package's task modules (with zarr and dask).

    Garbage collection waits meanwhile (:mod:`pipeline.job.garbage`).
    """
    with garbage.collection_paused():
        import imagecodecs  # noqa: F401  (decodes JPEG and PNG)
        import imageio.v3  # noqa: F401  (decodes the other formats)

        import pipeline.job.graph  # noqa: F401  (zarr, dask, the task functions)


def load_kernels(space: str | None = None, dither: str | None = None) -> None:
    """Fit and label a tiny synthetic image: imports dask-ml, loads the numba kernels.

    Garbage collection waits while dask-ml is imported (:mod:`pipeline.job.garbage`), not
    while the kernels load: a first run compiles them for tens of seconds, and numba's compiler
    makes garbage. The counting kernel comes first, as a job's first tasks count colours.

    Those a job fitting in colour ``space`` and labelling with ``dither`` uses, else (None)
    those of every space and dithering, as a worker that may serve any job needs: the other
    colour space and the dithering add 0.1 s of loading compiled code, which holds the
    interpreter lock, to every process's start.

    Safe beside tasks that need the same: dask-ml is imported by one thread at a time
    (:func:`pipeline.quantize.lloyd.dask_ml_k_means`), and numba compiles or loads a kernel
    under its own lock, once.
    """
    import numpy as np

    from pipeline.quantize.assign import label_block, label_dtype
    from pipeline.quantize.colours import histogram
    from pipeline.quantize.fit import fit_palette
    from pipeline.quantize.lloyd import dask_ml_k_means

    spaces = ("rgb", "oklab") if space is None else (space,)  # oklab's kernels are 6-D
    dither = "blue-noise" if dither is None else dither
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    histogram(image[::2, ::2])  # counting a grid of a decoded image
    keys, counts = histogram(image)
    with garbage.collection_paused():
        dask_ml_k_means()  # imported once, by one thread at a time
    fits = [
        fit_palette(image.reshape(-1, 3), keys, counts, 16, random_state=0, space=space)
        for space in spaces
    ]
    fit = fits[0]
    # contiguous chunks and views of a decoded image; colours the fit has not seen
    for block in (image, image[:, ::2], 255 - image, (128 - image)[:, ::2], 100 - image[:2, :2]):
        label_block(block, fit, label_dtype(16))
    if dither != "none":
        label_block(image, fit, label_dtype(16), dither)  # the mask and the dither kernels


def warm_up_meanwhile(space: str | None = None, dither: str | None = None) -> threading.Thread:
    """Import the libraries now, and load the kernels in a thread of their own, started here.

    The first tasks (decoding a large image takes a second or more, in compiled code that
    lets other threads run) start while dask-ml is imported and the kernels are loaded, 1.5-2 s
    of a job's start-up; a task that needs them first waits for them. Join the thread once the
    work is done (a daemon thread: a process stopping early need not wait for it). An error
    there is left to the task that meets it again, naming its image. ``space`` and ``dither``:
    the job's, whose kernels are loaded (see :func:`load_kernels`). Garbage collection waits
    while the libraries are imported (:mod:`pipeline.job.garbage`), not while the kernels load.
    """
    import_libraries()

    def load() -> None:
        with contextlib.suppress(Exception):
            load_kernels(space, dither)

    thread = threading.Thread(target=load, name="pipeline-warm-up", daemon=True)
    thread.start()
    return thread


def dask_setup(server: object) -> Awaitable[None] | None:
    """Warm up a worker that preloads this module; on a scheduler, register the jobs' metrics.

    Distributed calls this as the server starts. A scheduler gets
    :class:`~pipeline.job.metrics_plugin.JobMetrics` (and so the ``/pipeline`` page). A
    worker's process is the pipeline's: the objects of the libraries its warm-up imports are
    frozen once imported (:func:`pipeline.job.garbage.freeze_after_pauses`).

    Not done at import: ``dask worker --preload`` also imports the module in the command-line
    process, to look for options, where the warm-up would only cost time.
    """
    from distributed import Scheduler

    if isinstance(server, Scheduler):
        from pipeline.job.metrics_plugin import JobMetrics

        return server.register_scheduler_plugin(JobMetrics(), idempotent=True)
    garbage.freeze_after_pauses()  # a worker's process: the libraries' objects stay
    warm_up(*os.environ.get(JOB_KERNELS, "").split())
    return None


def dask_teardown(worker: object) -> None:
    """Skip the worker process's last garbage collections (distributed calls this as it closes).

    As the process exits, the interpreter would walk every object that scikit-learn, dask-ml
    and numba created (0.5-0.7 s) while the job waits for the worker to be gone; frozen objects
    are skipped, as in ``python -m pipeline`` itself.
    """
    gc.freeze()
