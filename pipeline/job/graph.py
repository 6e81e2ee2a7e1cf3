"""The dask graphs of a job's work items: the only module that makes graphs.

* a batch of small images: one task (:func:`pipeline.job.tasks.compress_batch`);
* a probe: one task opening a large input's header on a worker;
* a large image decoded whole: read, fit, then per block of chunks a cut and a
  label-and-write task, then a finish task (:func:`whole_graph`), with :class:`Placement`
  keeping the decoded image where it was decoded;
* an image read chunk by chunk (tiled TIFF, Zarr, a dask or numpy array): its fit
  (:func:`fit_graph`), then its labelling with that fit (:func:`write_graph`).

In both, one task per chunk of each level of the labels' pyramid writes that chunk once the
tasks writing its source are done (:func:`pyramid_graph`), and the finish task waits for all.
Every graph of an image ends in one task returning :class:`~pipeline.job.tasks.Done` or
:class:`~pipeline.job.tasks.Failed`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dask import delayed
from dask.array.core import normalize_chunks
from dask.base import tokenize
from dask.delayed import Delayed

from pipeline.inputs.sources import Probe, Source, work_chunks
from pipeline.job.tasks import (
    Job,
    Spec,
    compress_batch,
    create_task,
    cut_task,
    finish_task,
    fit_sampled_task,
    fit_task,
    label_task,
    level_task,
    probe_task,
    read_task,
    recorded,
)
from pipeline.quantize.count import colour_counts
from pipeline.quantize.sample import sample_pixels
from pipeline.settings import Settings
from pipeline.store import ngff
from pipeline.store.write import block_regions

#: Name of the tasks that label and write one block (followed by a token and the block index).
LABEL_TASK = "label"
#: Name of the tasks that write one chunk of a pyramid level (then a token, the level and the
#: chunk's row and column).
LEVEL_TASK = "level"
#: Pixels labelled by one task of an image decoded whole, at most (in whole chunks). Between
#: two tasks a worker's thread waits for the worker's event loop, which in a cluster of threads
#: also waits for the interpreter lock: on 2 cores a 100-megapixel JPEG took 1.86 s in tasks
#: of 1 megapixel, 1.61 s in tasks of 4 and 1.47 s in tasks of 16 (2 worker processes: 2.15
#: and 1.87 s in tasks of 1 and 4).
LABEL_PIXELS = 1 << 24
#: Fewest blocks an image decoded whole is labelled in (when it has that many chunks), so that
#: two workers or threads share it.
LABEL_BLOCKS = 4


def _token(spec: Spec, job: Job) -> str:
    # one per image and run: the tasks of a run write, so they are never shared with another
    return tokenize(spec.token, spec.name, job.run)


def batch_graph(specs: Sequence[Spec], job: Job) -> Delayed:
    """One task compressing ``specs`` one after another."""
    key = "batch-" + tokenize([s.token for s in specs], job.run)
    return delayed(compress_batch)(list(specs), job, dask_key_name=key)


def probe_graph(spec: Spec, job: Job) -> Delayed:
    """One task opening ``spec``'s header (a :class:`~pipeline.inputs.sources.Probe` or Failed)."""
    return delayed(probe_task)(
        spec.path, job.settings.max_pixels, dask_key_name=f"probe-{_token(spec, job)}"
    )


def whole_graph(spec: Spec, found: Probe, job: Job) -> tuple[Delayed, int]:
    """The graph of a large image decoded whole by one task, and its number of blocks.

    The image is labelled in blocks of whole chunks (:func:`label_block_shape`), numbered in
    row-major order.
    """
    token = _token(spec, job)
    settings = job.settings
    shape = (found.shape[0], found.shape[1])
    chunks = work_chunks(found, settings.chunk)
    regions = block_regions(normalize_chunks(label_block_shape(chunks, shape), shape))
    pixels = delayed(read_task)(found, dask_key_name=f"read-{token}")
    fit = delayed(fit_task)(pixels, settings, dask_key_name=f"fit-{token}")
    attrs = recorded(spec.path, found.shape, found.dtype, found.conversion, settings, job.run)
    target = delayed(create_task)(job, spec, attrs, shape, chunks, dask_key_name=f"create-{token}")
    errors = [
        delayed(label_task)(
            delayed(cut_task)(pixels, region, dask_key_name=f"cut-{token}-{i}"),
            fit,
            target,
            region,
            settings,
            dask_key_name=f"{LABEL_TASK}-{token}-{i}",
        )
        for i, region in enumerate(regions)
    ]
    return _finish(job, spec, fit, target, errors, regions, shape, chunks), len(regions)


def label_block_shape(chunks: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of the blocks an image of ``shape`` decoded whole is labelled in.

    As many ``chunks`` across as down: as many as :data:`LABEL_PIXELS` allows, and few enough
    for :data:`LABEL_BLOCKS` blocks (at least one chunk).
    """
    chunk = chunks[0] * chunks[1]
    most = min(LABEL_PIXELS // chunk, shape[0] * shape[1] // (LABEL_BLOCKS * chunk))
    across = max(1, math.isqrt(most))
    return chunks[0] * across, chunks[1] * across


def fit_graph(source: Source, settings: Settings) -> Delayed:
    """The lazy fit of an image read chunk by chunk: its sample and colour counts, then the palette.

    Both read the image chunk by chunk; an image of one chunk is fitted by one task.
    """
    image = source.image
    if image.npartitions == 1:
        (block,) = image.to_delayed(optimize_graph=False).ravel()
        return delayed(fit_task, pure=True)(block, settings)
    return delayed(fit_sampled_task, pure=True)(
        sample_pixels(image, settings.sample, settings.seed),
        colour_counts(image, settings.count_pixels),
        settings,
    )


def write_graph(source: Source, spec: Spec, job: Job, fit: object) -> tuple[Delayed, int]:
    """The labelling of an image read chunk by chunk with ``fit`` (a Fit, a Delayed or a future).

    Returns the graph, ending in the image's finish task, and its number of chunks.
    """
    token = _token(spec, job)
    image = source.image
    shape = (int(image.shape[0]), int(image.shape[1]))
    rows, cols = image.chunks[:2]
    attrs = recorded(
        spec.path, source.shape, source.dtype, source.conversion, job.settings, job.run
    )
    chunks = (rows[0], cols[0])
    target = delayed(create_task)(job, spec, attrs, shape, chunks, dask_key_name=f"create-{token}")
    blocks = image.to_delayed(optimize_graph=False).ravel()
    regions = block_regions(image.chunks)
    errors = [
        delayed(label_task)(
            block, fit, target, region, job.settings, dask_key_name=f"{LABEL_TASK}-{token}-{i}"
        )
        for i, (block, region) in enumerate(zip(blocks, regions, strict=True))
    ]
    return _finish(job, spec, fit, target, errors, regions, shape, chunks), len(errors)


def _finish(
    job: Job,
    spec: Spec,
    fit: object,
    target: Delayed,
    labelled: list[Delayed],
    regions: list[tuple[slice, slice]],
    shape: tuple[int, int],
    chunks: tuple[int, int],
) -> Delayed:
    """The finish task of an image whose blocks at ``regions`` the tasks ``labelled`` write."""
    token = _token(spec, job)
    levels = pyramid_graph(token, target, labelled, regions, shape, chunks)
    return delayed(finish_task)(
        job,
        spec,
        fit,
        target,
        labelled,
        shape[0] * shape[1],
        levels,
        dask_key_name=f"finish-{token}",
    )


def pyramid_graph(
    token: str,
    target: Delayed,
    labelled: list[Delayed],
    regions: list[tuple[slice, slice]],
    shape: tuple[int, int],
    chunks: tuple[int, int],
) -> list[Delayed]:
    """One task per chunk of each pyramid level of an image's labels (:mod:`pipeline.store.ngff`).

    The labels' blocks at ``regions`` (whole chunks of ``chunks``) are written by the tasks
    ``labelled``; a level's chunk is written after the tasks that wrote the (at most four)
    chunks of the level below it is made from, so each chunk has exactly one writer.
    """
    rows, cols = chunks
    writers: dict[tuple[int, int], Delayed] = {}
    for task, (down, across) in zip(labelled, regions, strict=True):
        for i in range(down.start // rows, -(-down.stop // rows)):
            for j in range(across.start // cols, -(-across.stop // cols)):
                writers[i, j] = task
    tasks: list[Delayed] = []
    for level in range(1, ngff.level_count(shape, chunks)):
        below, writers = writers, {}
        for i, j in ngff.level_grid(shape, chunks, level):
            sources = [(2 * i + y, 2 * j + x) for y in (0, 1) for x in (0, 1)]
            after = {below[s].key: below[s] for s in sources if s in below}
            writers[i, j] = delayed(level_task)(
                target,
                level,
                (i, j),
                list(after.values()),
                dask_key_name=f"{LEVEL_TASK}-{token}-{level}-{i}-{j}",
            )
        tasks.extend(writers.values())
    return tasks


@dataclass(frozen=True)
class Placement:
    """Where the tasks of an image decoded whole start (a ``workers`` annotation, by key).

    Everything starts on ``home``, which decodes the image and cuts it into blocks, except the
    labelling of every other block, which starts on ``helper`` and fetches just its block.
    Restrictions are loose: the scheduler may still move tasks. Without them it would ship the
    whole decoded image to another worker.
    """

    home: str | None
    helper: str | None

    def __call__(self, key: object) -> list[str]:
        """Workers a task with this ``key`` should start on."""
        odd_label = (
            isinstance(key, str)
            and key.startswith(LABEL_TASK + "-")
            and int(key.rsplit("-", 1)[1]) % 2 == 1
        )
        worker = self.helper if odd_label else self.home
        return [worker] if worker else []
