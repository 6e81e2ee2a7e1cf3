"""The dask graphs of a job's work items: the only module that makes graphs.

* a batch of small images: one task (:func:`pipeline.job.tasks.compress_batch`);
* a probe: one task opening a large input's header on a worker;
* a large image decoded whole: read, fit, then per block of chunks a cut and a
  label-and-write task, then a finish task (:func:`whole_graph`), with :class:`Placement`
  keeping the decoded image where it was decoded;
* an image read chunk by chunk (tiled TIFF, Zarr, a dask or numpy array): its fit
  (:func:`fit_graph`), then its labelling with that fit (:func:`write_graph`), in one graph
  where the chunks the fit read are held for the labelling up to a bound, the others read
  again.

In both, one task per chunk of each level of the labels' pyramid writes that chunk once the
tasks writing its source are done (:func:`pyramid_graph`), and the finish task waits for all.
Every graph of an image ends in one task returning :class:`~pipeline.job.tasks.Done` or
:class:`~pipeline.job.tasks.Failed`.

The lazy arrays those graphs start from are made here too, from the kernels of
:mod:`pipeline.quantize` and the readers of :mod:`pipeline.inputs` and :mod:`pipeline.store`:
an input's image (:func:`source_from_probe`, :func:`source_from_array`), its sample and
colour counts (:func:`sample_and_counts`), its labels
(:func:`assign`), and a stored image rebuilt (:func:`rebuild`). Other modules compute or
iterate the arrays they are given; none makes a graph of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import dask.array as da
import numpy as np
from dask import delayed
from dask.array.core import normalize_chunks
from dask.base import tokenize
from dask.delayed import Delayed
from dask.graph_manipulation import bind
from numpy.typing import NDArray

from pipeline.errors import InputError
from pipeline.inputs.orientation import orient
from pipeline.inputs.profiles import Profile
from pipeline.inputs.sources import (
    ALPHA_DROPPED,
    ALPHA_KEPT,
    PILLOW_LIMIT,
    Probe,
    Source,
    conversion_for,
    decode_rgb,
    probe,
    read_chunks,
    shown_colours,
    tiled_array,
    work_chunks,
)
from pipeline.job.tasks import (
    Job,
    Spec,
    Specs,
    compress_batch,
    create_task,
    cut_task,
    finish_task,
    fit_sampled_task,
    fit_task,
    gather_chunk_samples,
    gather_task,
    label_task,
    level_task,
    merge_chunk_counts,
    probe_task,
    read_task,
    recorded,
    sample_and_count_chunk,
)
from pipeline.paths import location
from pipeline.quantize.assign import assign_block, label_dtype
from pipeline.quantize.colours import merge_histograms
from pipeline.quantize.count import FAN_IN, grid_stride
from pipeline.quantize.fit import Fit
from pipeline.quantize.sample import sample_positions
from pipeline.settings import Settings
from pipeline.store import ngff
from pipeline.store.read import CheckedLabels, rebuild_block
from pipeline.store.write import StoredImage, block_regions

#: Names of the tasks, as the dashboard shows them (each followed by a token; the task stream
#: and progress bars group tasks by name). A batch of small images compressed whole:
BATCH_TASK = "compress-small-images"
#: A large input's header opened.
PROBE_TASK = "read-header"
#: A large image decoded whole.
DECODE_TASK = "decode-image"
#: A palette fitted to an image's sample.
FIT_TASK = "fit-palette"
#: An image's group created in the store.
CREATE_TASK = "create-group"
#: A block cut from an image decoded whole (then the block index).
CUT_TASK = "cut-block"
#: A block labelled and written (then the block index).
LABEL_TASK = "label-block"
#: One chunk of a pyramid level written (then the level and the chunk's row and column).
LEVEL_TASK = "pyramid-level"
#: An image's palette and metrics written and the image marked complete.
FINISH_TASK = "finish-image"
#: The results of an image's label or pyramid tasks put in one list for its finish task
#: (Delayed objects passed in a list cost an optimization of their whole graph per call:
#: 4-5 s of building a 250-megapixel TIFF's graph, whose label tasks held the fit's graph).
GATHER_TASK = "gather-results"
#: Pixels one task labels, at most (in whole chunks); of an image read chunk by chunk, the
#: pixels one task also reads, and the unit the job holds between the fit and the labelling.
#: Between two tasks a worker's thread waits for the worker's event loop, which in a cluster
#: of threads also waits for the interpreter lock: on 2 cores a 100-megapixel JPEG took 1.86 s
#: in tasks of 1 megapixel, 1.61 s in tasks of 4 and 1.47 s in tasks of 16 (2 worker
#: processes: 2.15 and 1.87 s in tasks of 1 and 4); the 236-megapixel TIFF, 6.1-6.7 s in
#: blocks of 16 against 6.6-7.2 s in blocks of 4 (the event loop's work goes with the tasks).
LABEL_PIXELS = 1 << 24
#: Fewest blocks an image is labelled in (when it has that many chunks), so that two workers or
#: threads share it. An image read chunk by chunk is cut into at least two blocks per thread of
#: the cluster (:func:`fewest_blocks`).
LABEL_BLOCKS = 4


def _token(spec: Spec, job: Job) -> str:
    # one per image and run: the tasks of a run write, so they are never shared with another
    return tokenize(spec.token, spec.name, job.run)


def batch_graph(specs: Sequence[Spec], job: Job) -> Delayed:
    """One task compressing ``specs`` one after another, announcing each as it finishes.

    The task's key is also the batch's id in its news (:mod:`pipeline.job.news`).
    """
    key = f"{BATCH_TASK}-" + tokenize([s.token for s in specs], job.run)
    return delayed(compress_batch)(Specs(specs), job, key, dask_key_name=key)


def probe_graph(spec: Spec, job: Job) -> Delayed:
    """One task opening ``spec``'s header (a :class:`~pipeline.inputs.sources.Probe` or Failed)."""
    return delayed(probe_task)(
        spec, job.settings, dask_key_name=f"{PROBE_TASK}-{_token(spec, job)}"
    )


def whole_graph(spec: Spec, found: Probe, job: Job) -> tuple[Delayed, int]:
    """The graph of a large image decoded whole by one task, and its number of blocks.

    The image is labelled in blocks of whole chunks (:func:`label_block_shape`), numbered in
    row-major order.
    """
    token = _token(spec, job)
    settings = job.settings
    shape = found.shown
    chunks = work_chunks(found, settings.chunk)
    regions = block_regions(normalize_chunks(label_block_shape(chunks, shape), shape))
    pixels = delayed(read_task)(found, dask_key_name=f"{DECODE_TASK}-{token}")
    fit = delayed(fit_task)(pixels, settings, dask_key_name=f"{FIT_TASK}-{token}")
    attrs = recorded(found.record(), shape, settings, job.run)
    target = delayed(create_task)(
        job, spec, attrs, shape, chunks, dask_key_name=f"{CREATE_TASK}-{token}"
    )
    errors = [
        delayed(label_task)(
            delayed(cut_task)(pixels, region, dask_key_name=f"{CUT_TASK}-{token}-{i}"),
            fit,
            target,
            region,
            settings,
            dask_key_name=f"{LABEL_TASK}-{token}-{i}",
        )
        for i, region in enumerate(regions)
    ]
    return _finish(job, spec, fit, target, errors, regions, shape, chunks), len(regions)


def label_block_shape(
    chunks: tuple[int, int], shape: tuple[int, int], fewest: int = LABEL_BLOCKS
) -> tuple[int, int]:
    """Rows and columns of the blocks of whole ``chunks`` an image of ``shape`` is labelled in.

    As many chunks across as down, a power of two (so that a block makes the pyramid chunks
    under it alone: :func:`pipeline.store.ngff.covered_levels`): as many as
    :data:`LABEL_PIXELS` allows, and few enough for ``fewest`` blocks (at least one chunk).
    """
    chunk = chunks[0] * chunks[1]
    most = min(LABEL_PIXELS // chunk, shape[0] * shape[1] // (fewest * chunk))
    across = 1 << (max(1, math.isqrt(most)).bit_length() - 1)
    return chunks[0] * across, chunks[1] * across


def fewest_blocks(threads: int) -> int:
    """Fewest blocks an image read chunk by chunk is cut into on a cluster of ``threads`` threads.

    Two per thread (and at least :data:`LABEL_BLOCKS`), so that every thread reads and labels
    a part of the image, and none is left alone with the last block of a pass for long: on 2
    threads, 16-megapixel blocks for a 236-megapixel scan; on 100 threads, blocks of one
    1024-pixel chunk for the same scan.
    """
    return max(LABEL_BLOCKS, 2 * threads)


def fit_graph(source: Source, settings: Settings) -> Delayed:
    """The lazy fit of an image read chunk by chunk: its sample and colour counts, then the palette.

    Both read the image chunk by chunk; an image of one chunk is fitted by one task.
    """
    image = source.image
    if image.npartitions == 1:
        (block,) = image.to_delayed(optimize_graph=False).ravel()
        return delayed(fit_task, pure=True)(block, settings)
    return delayed(fit_sampled_task, pure=True)(
        *sample_and_counts(image, settings.sample, settings.seed, settings.count_pixels),
        settings,
    )


def write_graph(
    source: Source, spec: Spec, job: Job, fit: object, held: int | None = None
) -> tuple[Delayed, int]:
    """The labelling of an image read chunk by chunk with ``fit`` (a Fit, a Delayed or a future).

    The image is read and labelled in its blocks of whole chunks (``source.image``'s chunks);
    the labels are stored in ``source.chunks``. ``held``: with ``fit`` the Delayed of
    :func:`fit_graph`, in the same graph, the first ``held`` blocks (row-major) are labelled
    from the reads the fit made, which the cluster holds meanwhile, and the others are read
    again once the fit is done (a copy of the image's reading, bound to the fit:
    ``dask.graph_manipulation.bind``), so that at most ``held`` blocks wait in memory for the
    fit. Default: every block as the graph reads it.

    Returns the graph, ending in the image's finish task, and its number of blocks (tasks
    labelling them).
    """
    token = _token(spec, job)
    image = source.image
    blocks = list(image.to_delayed(optimize_graph=False).ravel())
    if held is not None and held < len(blocks):
        again = bind(image, fit).to_delayed(optimize_graph=False).ravel()
        blocks[held:] = again[held:]
    shape = (int(image.shape[0]), int(image.shape[1]))
    attrs = recorded(source.record, shape, job.settings, job.run)
    chunks = source.chunks
    target = delayed(create_task)(
        job, spec, attrs, shape, chunks, dask_key_name=f"{CREATE_TASK}-{token}"
    )
    regions = block_regions(image.chunks)
    errors = [
        delayed(label_task)(
            block, fit, target, region, job.settings, dask_key_name=f"{LABEL_TASK}-{token}-{i}"
        )
        for i, (block, region) in enumerate(zip(blocks, regions, strict=True))
    ]
    return _finish(job, spec, fit, target, errors, regions, shape, chunks), len(errors)


def held_blocks(image: da.Array, hold_bytes: int) -> int:
    """How many blocks of ``image`` (read chunk by chunk) ``hold_bytes`` of memory holds.

    Between the fit's read and the labelling (see :func:`pipeline.job.graph.write_graph`); a
    block (a chunk of the dask array: :data:`LABEL_PIXELS` at most) is counted at its full size.
    """
    chunk = math.prod(image.chunksize) * image.dtype.itemsize
    return min(image.npartitions, hold_bytes // max(chunk, 1))


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
        delayed(gather_task)(*labelled, dask_key_name=f"{GATHER_TASK}-{token}-labels"),
        shape[0] * shape[1],
        delayed(gather_task)(*levels, dask_key_name=f"{GATHER_TASK}-{token}-levels"),
        dask_key_name=f"{FINISH_TASK}-{token}",
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
    ``labelled``, with the pyramid chunks each makes alone
    (:func:`pipeline.store.ngff.covered_levels`); every other level's chunk is written by a
    task of its own, after the tasks that wrote the (at most four) chunks of the level below
    it is made from, so each chunk has exactly one writer.
    """
    rows, cols = chunks
    levels = ngff.level_count(shape, chunks)
    made: list[dict[tuple[int, int], Delayed]] = [{} for _ in range(levels)]
    for task, (down, across) in zip(labelled, regions, strict=True):
        for level in range(ngff.covered_levels((down, across), shape, chunks) + 1):
            span = 2**level
            for i in range(down.start // (rows * span), -(-down.stop // (rows * span))):
                for j in range(across.start // (cols * span), -(-across.stop // (cols * span))):
                    made[level][i, j] = task
    tasks: list[Delayed] = []
    writers = made[0]
    for level in range(1, levels):
        below, writers = writers, {}
        for i, j in ngff.level_grid(shape, chunks, level):
            if (i, j) in made[level]:
                writers[i, j] = made[level][i, j]
                continue
            sources = [(2 * i + y, 2 * j + x) for y in (0, 1) for x in (0, 1)]
            after = {below[s].key: below[s] for s in sources if s in below}
            writers[i, j] = delayed(level_task)(
                target,
                level,
                (i, j),
                *after.values(),
                dask_key_name=f"{LEVEL_TASK}-{token}-{level}-{i}-{j}",
            )
            tasks.append(writers[i, j])
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


def sample_and_counts(
    image: da.Array, size: int, random_state: int, limit: int
) -> tuple[Delayed, Delayed]:
    """Lazy sample and colour counts of an (H, W, 3) uint8 dask image, in one pass over it.

    The sample: an (n, 3) uint8 array of the pixels at :func:`sample_positions`, in that order.
    The counts: the ``(keys, counts)`` histogram of every pixel of an image of at most
    ``limit`` pixels, else of the pixels of a regular grid (:func:`grid_stride`).

    One task per chunk takes both from it (:func:`~pipeline.job.tasks.sample_and_count_chunk`):
    the image is never gathered in one place, and a chunk is visited by one task, not two (a
    task costs the scheduler and the worker a few milliseconds, more than counting or sampling
    a chunk). The partial histograms are merged in a tree, ``FAN_IN`` at a time; sorted keys
    and a grid fixed to the image make the counts independent of the chunking. The sample is
    put back in its order at the end.
    """
    rows, cols = sample_positions(image.shape[:2], size, random_state)
    row_edges = np.cumsum((0, *image.chunks[0]))
    col_edges = np.cumsum((0, *image.chunks[1]))
    block_row = np.searchsorted(row_edges, rows, side="right") - 1
    block_col = np.searchsorted(col_edges, cols, side="right") - 1
    block = block_row * len(image.chunks[1]) + block_col
    order = np.argsort(block, kind="stable")  # samples grouped by block, raster order within
    edges = np.searchsorted(block[order], np.arange(image.npartitions + 1))
    stride = grid_stride(image.shape[:2], limit)
    blocks = image.to_delayed(optimize_graph=False)[:, :, 0]  # keep keys shared with the job
    visit = delayed(sample_and_count_chunk, pure=True)
    parts = []
    for i, top in enumerate(row_edges[:-1]):
        for j, left in enumerate(col_edges[:-1]):
            index = i * blocks.shape[1] + j  # as ``block`` numbers them
            here = order[edges[index] : edges[index + 1]]  # its samples, in raster order
            local = (rows[here] - top, cols[here] - left)
            parts.append(visit(blocks[i, j], int(top), int(left), stride, *local))
    sample = delayed(gather_chunk_samples, pure=True)(order, *parts)
    merged = [
        delayed(merge_chunk_counts, pure=True)(*parts[i : i + FAN_IN])
        for i in range(0, len(parts), FAN_IN)
    ]
    while len(merged) > 1:
        merged = [
            delayed(merge_histograms, pure=True)(*merged[i : i + FAN_IN])
            for i in range(0, len(merged), FAN_IN)
        ]
    return sample, merged[0]


def assign(image: da.Array, fit: Fit | object, colors: int) -> da.Array:
    """Lazy (H, W) labels of an (H, W, 3) uint8 image, chunked like the image.

    Parameters
    ----------
    image : dask.array.Array
        (H, W, 3) uint8 with a single chunk along the colour axis.
    fit : Fit, dask.delayed.Delayed or distributed.Future
        The fitted palette, possibly still a lazy result of the same graph.
    colors : int
        Colours asked for; decides the label type (:func:`label_dtype`).

    Notes
    -----
    Blocks are built from ``image.to_delayed()`` rather than with ``map_blocks``: dask inlines
    a Delayed argument of ``map_blocks`` into every block, which would redo the whole fit once
    per use instead of sharing one result.
    """
    dtype = label_dtype(colors)
    meta = np.empty((0, 0), dtype=dtype)
    blocks = image.to_delayed(optimize_graph=False)[:, :, 0]
    rows, cols = image.chunks[:2]
    label = delayed(assign_block, pure=True)
    return da.block(
        [
            [
                da.from_delayed(label(block, fit, dtype), shape=(h, w), dtype=dtype, meta=meta)
                for block, w in zip(row, cols, strict=True)
            ]
            for row, h in zip(blocks, rows, strict=True)
        ]
    )


def source_from_probe(
    found: Probe, name: str, chunk: int, token: str, fewest: int = LABEL_BLOCKS
) -> Source:
    """The lazy image of a probed input (no I/O: the graph reads it when it runs).

    ``token`` identifies the input's current version (from its listing: size and modification
    time or ETag), so that a changed file gets new task keys. An input read chunk by chunk has
    its colours converted chunk by chunk, and its orientation applied to the lazy array; it is
    cut into blocks of whole chunks, at least ``fewest`` of them (:func:`label_block_shape`,
    :func:`fewest_blocks`).
    """
    if found.kind == "whole":  # a dask array's channels are fixed before it is decoded: RGB
        height, width = found.shown
        whole = da.from_delayed(
            delayed(decode_rgb, pure=True)(found, dask_key_name=f"{DECODE_TASK}-{token}"),
            shape=(height, width, 3),
            dtype=np.uint8,
        )
        return Source(
            name=name,
            path=found.path,
            image=whole.rechunk((chunk, chunk, 3)),
            chunks=(chunk, chunk),
            shape=found.shape,
            dtype=found.dtype,
            conversion=found.conversion.replace(ALPHA_KEPT, ALPHA_DROPPED),
            record=found.record(),
            whole=whole,
        )
    stored = (found.shape[0], found.shape[1])
    rows, cols = label_block_shape(read_chunks(found, chunk), stored, fewest)
    blocks = (rows, cols, -1, -1)[: len(found.shape)]
    if found.kind == "zarr":
        array = da.from_zarr(found.array, chunks=blocks)
    else:
        array = da.from_array(
            tiled_array(found),
            chunks=blocks,
            name=f"tiff-{token}-{rows}x{cols}",  # keys differ wherever the blocks do
            asarray=False,
            fancy=False,
        )
    source = source_from_array(
        array, name, chunk, path=found.path, keep_chunks=True, profile=found.profile,
        cmyk=found.cmyk,
    )  # fmt: skip
    image = source.image
    chunks = work_chunks(found, chunk)
    if found.looks.orientation != 1:  # turned lazily, then in blocks from the top left again
        turned = orient(image, found.looks.orientation)
        image = turned.rechunk((*label_block_shape(chunks, found.shown, fewest), 3))
    return replace(
        source, image=image, chunks=chunks, conversion=found.conversion, record=found.record()
    )


def open_file(
    path: str, name: str, chunk: int, max_pixels: int = PILLOW_LIMIT, *, frame: int = 0,
    convert: bool = True,
) -> Source:  # fmt: skip
    """Probe an input and return its lazy image (both here: for notebooks and tests)."""
    found = probe(path, max_pixels, frame=frame, convert=convert)
    return source_from_probe(found, name, chunk, tokenize(location(path), frame))


def source_from_array(
    array: NDArray[np.generic] | da.Array,
    name: str,
    chunk: int,
    path: str = "<array>",
    keep_chunks: bool = False,
    profile: Profile | None = None,
    cmyk: bool = False,
) -> Source:
    """Wrap a numpy or dask image as a :class:`Source`, normalised like a file.

    The image is in blocks of whole chunks of ``(chunk, chunk)`` (:func:`label_block_shape`),
    or, with ``keep_chunks``, keeps the dask array's own regular chunking (tile-aligned readers
    use this, and set the chunks; :func:`source_from_probe` cuts them for the job's cluster). A
    dask array is marked ``streamed``.
    ``profile`` and ``cmyk``: the colours of a file's pixels, converted chunk by chunk
    (:func:`~pipeline.inputs.sources.shown_colours`); :func:`source_from_probe` then records
    the file's own conversion. Pixels already shown as stored (8-bit RGB, no profile) are
    used as they are, without a conversion task per block.
    """
    shape = tuple(int(s) for s in array.shape)
    try:
        conversion = conversion_for(shape, np.dtype(array.dtype))
    except ValueError as exc:
        raise InputError(path if path != "<array>" else name, str(exc)) from None
    streamed = isinstance(array, da.Array)
    blocks = label_block_shape((chunk, chunk), (shape[0], shape[1]))
    arr = (
        array
        if isinstance(array, da.Array)
        else da.from_array(array, chunks=(*blocks, -1)[: len(shape)])
    )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = arr.rechunk({2: -1})
    if conversion == "none" and profile is None:  # 8-bit RGB (so not CMYK), shown as stored:
        image = arr  # no task per block that would return its input
    else:
        image = arr.map_blocks(
            shown_colours,
            profile,
            cmyk,
            dtype=np.uint8,
            chunks=(arr.chunks[0], arr.chunks[1], (3,)),
            meta=np.empty((0, 0, 0), dtype=np.uint8),
        )
    record = {"path": path, "shape": list(shape), "dtype": str(np.dtype(array.dtype))}
    return Source(
        name=name,
        path=path,
        image=image if keep_chunks else image.rechunk((*blocks, 3)),
        chunks=(image.chunks[0][0], image.chunks[1][0]) if keep_chunks else (chunk, chunk),
        shape=shape,
        dtype=str(np.dtype(array.dtype)),
        conversion=conversion,
        record={**record, "conversion": conversion},
        streamed=streamed,
    )


def rebuild(image: StoredImage) -> da.Array:
    """Lazy (H, W, 3) uint8 rebuild of a stored image, chunked like its labels.

    (H, W, 4) RGBA for an image stored with transparency (an RGBA palette).

    Computing it raises :class:`UnreadableChunk` (a :class:`pipeline.store.read.Damaged`) naming the
    image when a labels chunk cannot be read.
    """
    labels = da.from_array(
        CheckedLabels(image.name, image.labels),
        chunks=image.labels.chunks,
        name=False,
        meta=np.empty((0, 0), dtype=image.labels.dtype),
    )
    return labels.map_blocks(
        rebuild_block,
        image.palette,
        new_axis=2,
        chunks=(*labels.chunks, (image.palette.shape[1],)),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), dtype=np.uint8),
    )


def thumbnail(pixels: da.Array, factors: tuple[int, int]) -> da.Array:
    """Block means of an (H, W, 3) uint8 image, computed chunk by chunk (edges trimmed)."""
    if factors == (1, 1):
        return pixels
    means = da.coarsen(np.mean, pixels, {0: factors[0], 1: factors[1], 2: 1}, trim_excess=True)
    return means.round().astype(np.uint8)


def block_sums(values: da.Array, factors: tuple[int, int]) -> da.Array:
    """Sums of an (H, W) array over blocks of ``factors`` (edges trimmed), chunk by chunk."""
    return da.coarsen(np.sum, values, {0: factors[0], 1: factors[1]}, trim_excess=True)


def _palette_use(block: NDArray[np.integer], colours: int) -> NDArray[np.int64]:
    """Pixels of a labels block using each palette entry, as a (1, 1, colours) array."""
    return np.bincount(block.ravel(), minlength=colours)[:colours].reshape(1, 1, colours)


def label_counts(image: StoredImage) -> da.Array:
    """Pixels of a stored image using each palette entry, counted chunk by chunk."""
    colours = len(image.palette)
    labels = da.from_array(image.labels, chunks=image.labels.chunks)
    per_block = labels.map_blocks(
        _palette_use,
        colours,
        new_axis=2,
        chunks=(tuple(1 for _ in labels.chunks[0]), tuple(1 for _ in labels.chunks[1]), (colours,)),
        dtype=np.int64,
    )
    return per_block.sum(axis=(0, 1))
