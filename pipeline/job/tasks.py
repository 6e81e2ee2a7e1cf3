"""What the tasks of a job do on the workers: open inputs, compress images, mark them complete.

Everything here runs inside a task and does its own I/O; :mod:`pipeline.job.graph` arranges these
functions into dask graphs. Small images are compressed whole, several per task
(:func:`compress_batch`); a large image is a graph of steps (read, fit, label block by block,
finish) whose functions are the ``*_task`` ones below.

Errors are values: a task that fails for one image returns a :class:`Failed` instead of raising,
and the tasks after it pass that on, so an expected problem (a truncated JPEG, a missing file)
ends as one line in the job's output, with no worker traceback in the logs. Unexpected errors
(bugs) carry their traceback in :attr:`Failed.detail`, shown with ``--debug``. A failed write to
the store fails its image and removes what the image wrote; when no later write could succeed
either (a full or read-only disk), :attr:`Failed.unwritable` says why, and the job stops.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import zarr
from numpy.typing import NDArray

from pipeline.errors import ImageProblem, PipelineError, os_reason, unwritable
from pipeline.inputs.sources import Probe, decode, probe, read_whole, work_chunks
from pipeline.job.news import NEWS_SECONDS, announce
from pipeline.quantize import rgba
from pipeline.quantize.assign import label_block
from pipeline.quantize.colours import merge_histograms
from pipeline.quantize.count import grid_histogram, grid_stride
from pipeline.quantize.fit import Fit, fit_palette, fits_sample, sample_points, seed
from pipeline.quantize.lloyd import MOST_POINTS, Start, full, lloyd_samples
from pipeline.quantize.metrics import DE_UNIT, colour_error, psnr
from pipeline.quantize.quality import Target, search_colours
from pipeline.quantize.sample import gather_pixels, sample_positions, take_pixels
from pipeline.settings import Settings
from pipeline.store.fence import Fenced, Interfered
from pipeline.store.location import Location
from pipeline.store.write import (
    ChunkDigest,
    LevelDigest,
    create_image,
    finalize,
    marker_tag,
    remove_image,
    remove_marker,
    stored_chunks,
    write_block_levels,
    write_image,
    write_labels,
    write_level,
    write_marker,
)


@dataclass(frozen=True)
class Job:
    """What every task of one run needs: where it writes, how, and the run's lease.

    Attributes
    ----------
    store : Location
        The output store, as every process sees it (:func:`pipeline.store.location.job_location`),
        fenced by the run's lease: nothing is written once another job holds the store
        (:mod:`pipeline.store.fence`).
    settings : Settings
    run : str
        The run's id, recorded in each image it writes.
    batch_pixels : int
        Most pixels of an image compressed inside a batch (see :class:`Deferred`).
    """

    store: Location
    settings: Settings
    run: str
    batch_pixels: int


@dataclass(frozen=True)
class Spec:
    """One input image as planned on the client, from its listing only.

    Attributes
    ----------
    name : str
        Group name in the store.
    path : str
        The input as given (a path, a URL or ``"<array>"``).
    token : str
        Identifies this version of the input (path, size and modification time or ETag).
    key : str
        Digest of the settings it is stored with (:func:`pipeline.store.write.digest`).
    stale : str or None
        Digest of a completion marker left by an earlier run, removed before rewriting.
    size : int
        Bytes of the input file (0 when unknown).
    fresh : bool
        The store's listing had no group of this name (nothing to delete before writing it).
    frame : int or None
        The frame or page of a multi-frame file this image is (``frames: all``,
        :mod:`pipeline.inputs.frames`); None for a file's first, named after the file.
    """

    name: str
    path: str
    token: str
    key: str
    stale: str | None = None
    size: int = 0
    fresh: bool = False
    frame: int | None = None


class Specs(tuple[Spec, ...]):
    """A batch's specs as one task argument: a tuple whose type tells dask not to look inside.

    dask searches a task's plain lists and tuples, and each dataclass in them field by field,
    for other tasks' results (0.1 ms a spec); specs never hold any.
    """

    __slots__ = ()


def probe_spec(spec: Spec, settings: Settings, *, listed: bool = False) -> Probe:
    """:func:`~pipeline.inputs.sources.probe` of ``spec``'s file, its frame, as ``settings`` say."""
    return probe(
        spec.path,
        settings.max_pixels,
        listed=listed,
        frame=spec.frame or 0,
        convert=settings.color_profile == "convert",
    )


@dataclass(frozen=True)
class Failed:
    """An image that could not be compressed.

    Attributes
    ----------
    problem : str
        One line; it starts with the input's name when ``named``.
    named : bool
    detail : str or None
        Traceback of an unexpected error (a bug, not a problem with the input).
    unwritable : str or None
        Why the store can no longer be written, when the image failed because of that (a full
        or read-only disk): no other image can be written either.
    """

    problem: str
    named: bool = True
    detail: str | None = None
    unwritable: str | None = None

    def line(self, path: str) -> str:
        """The one-line message, naming the input ``path``."""
        return self.problem if self.named else f"{path}: {self.problem}"


@dataclass(frozen=True)
class Done:
    """An image compressed and marked complete: its attributes and its own time.

    ``attrs``: the image group's attributes as stored, but for the OME-NGFF metadata (``ome``,
    which repeats the colour table: read it from the store), so that what a task returns, or
    announces as news, stays small.
    """

    name: str
    attrs: dict[str, Any]
    seconds: float

    @classmethod
    def of(cls, name: str, stored: dict[str, Any], seconds: float) -> Done:
        """The outcome of image ``name``, from the attributes it was stored with."""
        return cls(name, {k: v for k, v in stored.items() if k != "ome"}, seconds)


def message_of(outcome: Done | Failed) -> dict[str, Any]:
    """``outcome`` as a msgpack-able dict, as news of it travels (:func:`outcome_of`).

    Its fields as they are, not copied (``asdict`` would copy the attributes, 0.2 ms a
    thumbnail): outcomes are never changed once made.
    """
    return {
        "kind": type(outcome).__name__,
        **{f.name: getattr(outcome, f.name) for f in fields(outcome)},
    }


def outcome_of(message: dict[str, Any]) -> Done | Failed:
    """The outcome :func:`message_of` made ``message`` from."""
    values = {k: v for k, v in message.items() if k != "kind"}
    return Done(**values) if message["kind"] == "Done" else Failed(**values)


@dataclass(frozen=True)
class Deferred:
    """An image found too large for a batch: the client gives it a graph of its own."""

    spec: Spec
    found: Probe


class StoreWriteError(PipelineError):
    """Writing an image into the store failed; ``unwritable`` when no later write can succeed."""

    def __init__(self, error: OSError) -> None:
        super().__init__(f"cannot write to the store: {os_reason(error)}")
        self.unwritable = unwritable(error)


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """Within the block, an OSError is a failed write to the store (:class:`StoreWriteError`)."""
    try:
        yield
    except OSError as exc:
        raise StoreWriteError(exc) from exc


def _undo(remove: Callable[..., None], *args: Any) -> None:
    """Remove what a failed image wrote with ``remove(*args)``, if the store still lets us.

    A full disk still lets files be removed; a read-only one does not, and what stays is never
    marked complete: a group stays ``"writing"``, which the next run redoes. Nothing is removed
    once the run no longer holds the store: the group may be another job's now.
    """
    with contextlib.suppress(OSError, Fenced):
        remove(*args)


def failure(exc: BaseException) -> Failed:
    """The :class:`Failed` value of an exception raised while working on one image."""
    if isinstance(exc, StoreWriteError):
        return Failed(str(exc), named=False, unwritable=exc.unwritable)
    if isinstance(exc, ImageProblem):
        return Failed(str(exc), named=False)
    if isinstance(exc, PipelineError):
        return Failed(str(exc))
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError):  # storage and file system problems: expected, no traceback
        return Failed(f"{type(exc).__name__}: {text}", named=False)
    detail = "".join(traceback.format_exception(exc))
    return Failed(f"{type(exc).__name__}: {text}", named=False, detail=detail)


def first_failure(*values: object) -> Failed | None:
    """The first :class:`Failed` among ``values`` (looking inside lists too), else None."""
    for value in values:
        if isinstance(value, Failed):
            return value
        if isinstance(value, list | tuple) and (found := first_failure(*value)) is not None:
            return found
    return None


R = TypeVar("R")


def guarded(function: Callable[..., R]) -> Callable[..., R | Failed]:
    """``function`` as a task step: returns a :class:`Failed` given one, or instead of raising."""

    @functools.wraps(function)
    def step(*args: Any, **kwargs: Any) -> R | Failed:
        failed = first_failure(*args, *kwargs.values())
        if failed is not None:
            return failed
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            return failure(exc)

    return step


def fit_sampled(
    sample: NDArray[np.uint8],
    counts: tuple[NDArray[np.uint32], NDArray[np.int64]],
    settings: Settings,
    fitted: tuple[NDArray[np.float32], int] | None = None,
) -> Fit:
    """The palette of an image from its pixel sample and colour counts.

    An RGBA sample (an image with transparency) gets an RGBA palette
    (:mod:`pipeline.quantize.rgba`). ``fitted``: the dask-ml fit of the sample, when done
    already with other images' (:func:`shares_fit`, :func:`pipeline.quantize.lloyd.lloyd_samples`).
    """
    keys, freq = counts

    def fit_with(colors: int, fitted: tuple[NDArray[np.float32], int] | None = None) -> Fit:
        if sample.shape[1] == 4:
            palette, labels, info = rgba.fit_rgba(
                sample, keys, freq, colors, random_state=settings.seed, effort=settings.effort
            )
            return Fit(palette=palette, keys=keys, labels=labels.astype(np.uint16), info=info)
        return fit_palette(
            sample,
            keys,
            freq,
            colors,
            random_state=settings.seed,
            max_iter=settings.max_iter,
            tol=settings.tol,
            effort=settings.effort,
            space=settings.space,
            fitted=fitted,
        )

    target = settings.target()
    if target is None:
        return fit_with(settings.colors, fitted)
    return search_colours(fit_with, settings.colors, Target(*target), freq)


def shares_fit(
    sample: NDArray[np.uint8],
    counts: tuple[NDArray[np.uint32], NDArray[np.int64]],
    settings: Settings,
) -> Start | None:
    """Where the dask-ml fit of an image's sample starts, if it can share one with other images.

    It can when :func:`fit_sampled` makes exactly one dask-ml fit of it, for ``settings.colors``
    (no quality target, RGB, not gray, more colours than that: see
    :func:`pipeline.quantize.fit.fits_sample`) of a sample small enough
    (:data:`pipeline.quantize.lloyd.MOST_POINTS`). Returns the sample's points and their
    k-means++ seeds, as :func:`~pipeline.quantize.fit.fit_palette` would start from, or None.
    """
    colors = settings.colors
    if (
        settings.target() is not None
        or sample.shape[1] != 3
        or len(sample) > MOST_POINTS
        or not fits_sample(counts[0], colors)
    ):
        return None
    points = sample_points(sample, settings.space)
    return points, seed(points, colors, settings.seed)


#: Sampled pixels and a colour histogram: an image's (:func:`sample_block`), or a chunk's part
#: of them (:func:`sample_and_count_chunk`).
SampleCounts = tuple[NDArray[np.uint8], tuple[NDArray[np.uint32], NDArray[np.int64]]]


def sample_block(block: NDArray[np.uint8], settings: Settings) -> SampleCounts:
    """The pixel sample and colour counts of an image held as one array, as chunk by chunk."""
    rows, cols = sample_positions(block.shape[:2], settings.sample, settings.seed)
    stride = grid_stride(block.shape[:2], settings.count_pixels)
    if block.shape[2] == 4:
        counts = rgba.histogram(block[::stride, ::stride])
    else:
        counts = grid_histogram(block, 0, 0, stride)
    return block[rows, cols], counts


def sample_and_count_chunk(
    block: NDArray[np.uint8],
    row: int,
    col: int,
    stride: int,
    rows: NDArray[np.intp],
    cols: NDArray[np.intp],
) -> SampleCounts:
    """A chunk's sampled pixels (at its local ``rows``, ``cols``) and its grid's histogram.

    The chunk starts at ``row``, ``col`` of its image; the grid is every ``stride``-th row and
    column of the image (:func:`~pipeline.quantize.count.grid_histogram`).
    """
    return take_pixels(block, rows, cols), grid_histogram(block, row, col, stride)


def merge_chunk_counts(*parts: SampleCounts) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """The histogram of the chunks of ``parts`` together."""
    return merge_histograms(*(counts for _, counts in parts))


def gather_chunk_samples(order: NDArray[np.intp], *parts: SampleCounts) -> NDArray[np.uint8]:
    """The chunks' sampled pixels put back in sample order (``order[i]``: i's place)."""
    return gather_pixels(order, *(pixels for pixels, _ in parts))


def fit_block(block: NDArray[np.uint8], settings: Settings) -> Fit:
    """The palette of an image held as one array: the same sample and counts as chunk by chunk."""
    return fit_sampled(*sample_block(block, settings), settings)


def recorded(
    source: dict[str, Any], shape: Sequence[int], settings: Settings, run: str
) -> dict[str, Any]:
    """Attributes recorded for an image when its group is created: its source and the settings.

    ``source``: what :meth:`~pipeline.inputs.sources.Probe.record` says of it; ``shape``: the
    picture's height and width as shown (its orientation applied).
    """
    return {
        "source": source,
        "image_shape": [int(shape[0]), int(shape[1]), 3],
        "colors_requested": settings.colors,
        "sample_size_requested": settings.sample,
        "seed": settings.seed,
        "chunk": settings.chunk,
        "fit_settings": settings.fit_settings(),
        "run": run,
    }


def create(
    job: Job, spec: Spec, attrs: dict[str, Any], shape: tuple[int, int], chunks: tuple[int, int]
) -> zarr.Array:
    """(Re)create the image's group, status ``"writing"``, after forgetting an old completion.

    A group the store let be made only in part is removed.
    """
    if spec.stale is not None:
        with _writing():
            remove_marker(job.store, spec.name, spec.stale)
    try:
        with _writing():
            return create_image(
                job.store,
                spec.name,
                shape,
                chunks,
                job.settings.colors,
                attrs,
                compression=job.settings.compression,
                fresh=spec.fresh,
            )
    except StoreWriteError:
        _undo(remove_image, job.store, spec.name)
        raise


@dataclass(frozen=True)
class Labelled:
    """What labelling and writing one block gives: its error figures and its chunks' digests.

    Attributes
    ----------
    error : int
        Sum over the block's pixels and channels of the squared error of the stored labels.
    colour_error : int
        Sum of the CIEDE2000 differences of the block's measured pixels, in units of
        :data:`pipeline.quantize.metrics.DE_UNIT` (:func:`pipeline.quantize.metrics.colour_error`).
    measured : int
        How many measured pixels the block holds.
    digests : list
        Digests of the labels chunks written (:func:`pipeline.store.write.write_labels`).
    levels : list
        Digests of the pyramid chunks the block made alone, with their levels
        (:func:`pipeline.store.write.write_block_levels`).
    """

    error: int
    colour_error: int
    measured: int
    digests: list[ChunkDigest]
    levels: list[LevelDigest] = field(default_factory=list)


def label_region(
    block: NDArray[np.uint8],
    fit: Fit,
    target: zarr.Array,
    region: tuple[slice, slice],
    settings: Settings,
) -> Labelled:
    """Label the block of the image at ``region``, write its labels and measure its error.

    Also writes the chunks of the labels' pyramid that the block makes alone. Blocks with
    transparency are not dithered.
    """
    origin = (region[0].start or 0, region[1].start or 0)
    labels, error = labelled_block(block, fit, np.dtype(target.dtype), origin, settings)
    with _writing():
        digests = write_labels(target, region, labels)
        levels = write_block_levels(target, region, labels)
    height, width = target.shape
    total, measured = colour_error(block, labels, fit.palette, origin, (height, width))
    return Labelled(error, total, measured, digests, levels)


def labelled_block(
    block: NDArray[np.uint8],
    fit: Fit,
    dtype: np.dtype[Any],
    origin: tuple[int, int],
    settings: Settings,
) -> tuple[NDArray[np.integer], int]:
    """The labels of ``block`` (at ``origin`` in its image) and their summed squared error.

    Blocks with transparency are not dithered.
    """
    if block.shape[2] == 4:
        return rgba.label_rgba(block, fit.palette, dtype)
    how = (settings.dither, settings.dither_strength, origin)
    return label_block(block, fit, dtype, *how)


def finish(
    job: Job,
    spec: Spec,
    fit: Fit,
    labelled: Sequence[Labelled],
    n_pixels: int,
    levels: Sequence[list[LevelDigest]] = (),
) -> dict[str, Any]:
    """Write the palette and metrics and mark the image complete, if the run still holds the store.

    ``labelled`` holds each block's error figures, computed while labelling (the error of
    every pixel with the labels the store holds), its chunks' digests and those of the
    pyramid chunks it made alone; ``levels`` the digests of the other chunks of the labels'
    pyramid (none for an image of one chunk).
    """
    attrs = final_attributes(spec, fit, labelled, n_pixels)
    with _writing():
        digests = [digest for part in labelled for digest in part.digests]
        pyramid = [digest for part in (*levels, *(p.levels for p in labelled)) for digest in part]
        stored, chunks = finalize(job.store, spec.name, fit.palette, attrs, digests, pyramid)
    mark_complete(job, spec, chunks)
    return stored


def final_attributes(
    spec: Spec, fit: Fit, labelled: Sequence[Labelled], n_pixels: int
) -> dict[str, Any]:
    """The attributes an image gets when it is finished: colours, fit, metrics, time."""
    channels = fit.palette.shape[1]
    # RGBA errors are of the composites over black and white, 6 values (pipeline.quantize.rgba)
    scale, values = (rgba.FULL, 6) if channels == 4 else (1, 3)
    mse = sum(part.error for part in labelled) / scale / (values * n_pixels)
    measured = sum(part.measured for part in labelled)
    metrics = {
        "psnr_db": psnr(mse),
        "mse": mse,
        "ciede2000_mean": sum(p.colour_error for p in labelled) * DE_UNIT / max(measured, 1),
        "ciede2000_pixels": measured,
        "raw_bytes": channels * n_pixels,
    }
    if spec.size:
        metrics["source_bytes"] = spec.size
    return {
        "colors": len(fit.palette),
        "fit": fit.info,
        "metrics": metrics,
        "completed": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def mark_complete(job: Job, spec: Spec, chunks: int) -> None:
    """Write the completion marker of an image finished with ``chunks`` label chunks."""
    tag = marker_tag(spec.key, chunks)
    try:
        with _writing():
            write_marker(job.store, spec.name, tag)
    except StoreWriteError:
        # a marker's folder lists as complete even without its document: the next run would
        # skip the image, whose group the caller removes
        _undo(remove_marker, job.store, spec.name, tag)
        raise


def compress_whole(
    job: Job, spec: Spec, found: Probe, pixels: NDArray[np.uint8], fit: Fit | None = None
) -> dict[str, Any]:
    """Fit, label, store and finish one image held in memory; its labels chunked like the work.

    ``fit``: its palette, when fitted already (else :func:`fit_block` fits it). An image of one
    chunk (no pyramid) is labelled first, then written in one go
    (:func:`pipeline.store.write.write_image`).
    """
    if fit is None:
        fit = fit_block(pixels, job.settings)
    shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    attrs = recorded(found.record(), shape, job.settings, job.run)
    chunks = work_chunks(found, job.settings.chunk)
    if stored_chunks(shape, chunks) == shape:
        return _compress_one_chunk(job, spec, fit, attrs, pixels)
    target = create(job, spec, attrs, shape, chunks)
    try:
        whole = (slice(0, shape[0]), slice(0, shape[1]))
        labelled = label_region(pixels, fit, target, whole, job.settings)  # and its pyramid
        return finish(job, spec, fit, [labelled], shape[0] * shape[1])
    except Fenced:
        raise  # the group may be the other job's now
    except BaseException:
        _undo(remove_image, job.store, spec.name)
        raise


def _compress_one_chunk(
    job: Job, spec: Spec, fit: Fit, attrs: dict[str, Any], pixels: NDArray[np.uint8]
) -> dict[str, Any]:
    """Label, store and finish an image whose labels are one chunk, in one go.

    The store's files are written once each, the same bytes as :func:`create`,
    :func:`label_region` and :func:`finish` make.
    """
    from pipeline.quantize.assign import label_dtype

    shape = pixels.shape[:2]
    dtype = label_dtype(job.settings.colors)
    labels, error = labelled_block(pixels, fit, dtype, (0, 0), job.settings)
    total, measured = colour_error(pixels, labels, fit.palette, (0, 0), shape)
    final = final_attributes(spec, fit, [Labelled(error, total, measured, [])], labels.size)
    if spec.stale is not None:
        with _writing():
            remove_marker(job.store, spec.name, spec.stale)
    try:
        with _writing():
            stored = write_image(
                job.store,
                spec.name,
                attrs,
                fit.palette,
                labels,
                final,
                compression=job.settings.compression,
                fresh=spec.fresh,
            )
        mark_complete(job, spec, 1)
    except Fenced:
        raise  # the group may be the other job's now
    except BaseException:
        _undo(remove_image, job.store, spec.name)
        raise
    return stored


@dataclass(frozen=True)
class Held:
    """An image of a batch read and sampled, waiting for its group's shared dask-ml fit.

    Attributes
    ----------
    spec : Spec
    found : Probe
    pixels : ndarray of uint8, shape (height, width, channels)
    sample, counts : ndarray, tuple
        Its pixel sample and colour counts (:func:`sample_block`).
    start : tuple or None
        Where its dask-ml fit starts, when it shares one (:func:`shares_fit`).
    seconds : float
        Its own time so far.
    """

    spec: Spec
    found: Probe
    pixels: NDArray[np.uint8]
    sample: NDArray[np.uint8]
    counts: tuple[NDArray[np.uint32], NDArray[np.int64]]
    start: Start | None
    seconds: float


def hold(spec: Spec, job: Job) -> Held | Deferred:
    """Open, read and sample one image of a batch; :class:`Deferred` if too large for one."""
    started = time.perf_counter()
    found = probe_spec(spec, job.settings, listed=True)  # batches: listed files only
    if found.pixels > job.batch_pixels:
        return Deferred(spec, found)
    pixels = read_whole(found)
    sample, counts = sample_block(pixels, job.settings)
    start = shares_fit(sample, counts, job.settings)
    return Held(spec, found, pixels, sample, counts, start, time.perf_counter() - started)


def shared_fits(
    group: Sequence[Held | Failed | Deferred], settings: Settings
) -> tuple[list[tuple[NDArray[np.float32], int] | None], float]:
    """The dask-ml fits of ``group``'s images that share one, in one call; None for the others.

    Also returns each sharing image's part of the call's seconds. Should the shared fit fail
    (a bug), every image makes its own, so that a bad image fails alone.
    """
    starts = {
        i: held.start
        for i, held in enumerate(group)
        if isinstance(held, Held) and held.start is not None
    }
    fitted: list[tuple[NDArray[np.float32], int] | None] = [None] * len(group)
    if not starts:
        return fitted, 0.0
    started = time.perf_counter()
    with contextlib.suppress(Exception):  # then each image fits alone, and fails alone
        fits = lloyd_samples(
            list(starts.values()),
            max_iter=settings.max_iter,
            tol=settings.tol,
            random_state=settings.seed,
        )
        for i, fit in zip(starts, fits, strict=True):
            fitted[i] = fit
    return fitted, (time.perf_counter() - started) / len(starts)


def compress_held(
    job: Job, held: Held, fitted: tuple[NDArray[np.float32], int] | None, share: float = 0.0
) -> Done | Failed:
    """Fit (with its shared dask-ml fit ``fitted``, if any), label, store and finish ``held``.

    ``share``: its part of the shared fit's seconds, counted in its own time.
    """
    started = time.perf_counter()
    try:
        fit = fit_sampled(held.sample, held.counts, job.settings, fitted)
        try:
            attrs = compress_whole(job, held.spec, held.found, held.pixels, fit)
        except Interfered:  # a stray write of a job that lost the store: write it again
            attrs = compress_whole(job, held.spec, held.found, held.pixels, fit)
    except Exception as exc:
        return failure(exc)
    own = held.seconds + share + time.perf_counter() - started
    return Done.of(held.spec.name, attrs, own)


def group_full(group: Sequence[Held | Failed | Deferred], job: Job) -> bool:
    """Whether ``group`` should get its shared fit now, before more images are read.

    When the shared fit should take no more images (:func:`pipeline.quantize.lloyd.full`), or
    they hold ``job.batch_pixels`` pixels (so a batch holds at most about twice that in memory).
    """
    held = [image for image in group if isinstance(image, Held)]
    pixels = sum(image.pixels.shape[0] * image.pixels.shape[1] for image in held)
    return pixels >= job.batch_pixels or full([i.start for i in held if i.start is not None])


def compress_batch(
    specs: Sequence[Spec], job: Job, batch: str = ""
) -> list[Done | Failed | Deferred]:
    """Compress small images in one task; one outcome each, in order.

    Images are read a group at a time (:func:`group_full`), then their dask-ml fits on their samples
    are made in one call (:func:`shared_fits`), then each is fitted over its pixels, labelled,
    stored and finished alone. An image found to have more than ``job.batch_pixels`` pixels (a
    small file can hold a large image) is returned as :class:`Deferred`, untouched, for a graph
    of its own. The outcomes end early, at a failure that leaves the store unwritable: the
    images after it are not attempted. Each image done or failed is announced to the job's
    client as it finishes (:func:`pipeline.job.news.announce`, as batch ``batch``; after the
    first, those finished within :data:`~pipeline.job.news.NEWS_SECONDS` of the last message
    together).
    """
    outcomes: list[Done | Failed | Deferred] = []
    group: list[Held | Failed | Deferred] = []
    news: list[tuple[int, dict[str, Any]]] = []
    told = -math.inf  # the first image at once: the batch's first news waits for its group
    for index, spec in enumerate(specs):
        try:
            group.append(hold(spec, job))
        except Exception as exc:
            group.append(failure(exc))
        if index + 1 < len(specs) and not group_full(group, job):
            continue
        fitted, share = shared_fits(group, job.settings)
        for held, fit in zip(group, fitted, strict=True):
            outcome = (
                compress_held(job, held, fit, share if fit is not None else 0.0)
                if isinstance(held, Held)
                else held
            )
            outcomes.append(outcome)
            if isinstance(outcome, Deferred):
                continue
            news.append((len(outcomes) - 1, message_of(outcome)))
            if isinstance(outcome, Failed) and outcome.unwritable is not None:
                announce(job.run, batch, news)
                return outcomes  # the rest would meet the same error, and the job stops
            if time.monotonic() - told >= NEWS_SECONDS:
                announce(job.run, batch, news)
                news, told = [], time.monotonic()
        group = []
    if news:
        announce(job.run, batch, news)
    return outcomes


# Steps of a large image's graph (see pipeline.job.graph).
probe_task = guarded(probe_spec)
read_task = guarded(decode)
fit_task = guarded(fit_block)
fit_sampled_task = guarded(fit_sampled)


@guarded
def cut_task(pixels: NDArray[np.uint8], region: tuple[slice, slice]) -> NDArray[np.uint8]:
    """One block of an image decoded whole (a view: nothing is copied where it was decoded)."""
    return pixels[region]


@guarded
def create_task(
    job: Job, spec: Spec, attrs: dict[str, Any], shape: tuple[int, int], chunks: tuple[int, int]
) -> zarr.Array:
    """:func:`create` as a step."""
    return create(job, spec, attrs, shape, chunks)


#: :func:`label_region` as a step: it writes its labels, so none stay in memory between tasks.
label_task = guarded(label_region)


@guarded
def level_task(
    target: zarr.Array, level: int, index: tuple[int, int], *after: object
) -> list[LevelDigest]:
    """Write one pyramid level's chunk (:func:`~pipeline.store.write.write_level`) as a step.

    It runs after the steps ``after`` (their results), which wrote its source level.
    """
    with _writing():
        return write_level(target, level, index)


def gather_task(*results: object) -> list[object]:
    """The results of several steps, as one list (for a step that takes them as one argument)."""
    return list(results)


def finish_task(
    job: Job,
    spec: Spec,
    fit: Fit | Failed,
    target: object,
    labelled: list[object],
    n_pixels: int,
    levels: Sequence[object] = (),
) -> Done | Failed:
    """The last step: mark the image complete, or remove what it wrote if any step failed.

    ``levels`` are the results of the steps writing the labels' pyramid (none for an image of
    one chunk). The :class:`Done` it returns has no time of its own: the client times the
    whole graph.
    """
    failed = first_failure(fit, target, labelled, levels)
    if failed is None:
        try:
            attrs = finish(job, spec, fit, labelled, n_pixels, levels)  # type: ignore[arg-type]
        except Fenced as exc:
            return failure(exc)
        except Exception as exc:
            failed = failure(exc)
        else:
            return Done.of(spec.name, attrs, 0.0)
    if not isinstance(target, Failed):  # a group made in part was removed by its create step
        _undo(remove_image, job.store, spec.name)
    return failed
