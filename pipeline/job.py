"""Wire one job: for each image, sample -> fit -> assign -> store -> metrics, as one dask graph.

Images are independent graphs submitted together, so a cluster works on several at once and one
failing image does not stop the others. Nothing here computes anything itself.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import dask
import numpy as np
import zarr
from dask import delayed
from dask.base import tokenize
from dask.delayed import Delayed
from numpy.typing import NDArray

from pipeline import stopping
from pipeline.assign import label_block, label_dtype
from pipeline.config import Settings
from pipeline.count import colour_counts, grid_histogram, grid_stride
from pipeline.errors import InputError, PipelineError
from pipeline.fit import Fit, fit_palette
from pipeline.metrics import psnr
from pipeline.paths import location
from pipeline.sample import sample_pixels, sample_positions
from pipeline.sources import Source
from pipeline.store import (
    block_regions,
    create_image,
    existing_status,
    finalize,
    open_root,
    remove_image,
    write_labels,
)

#: Name of the tasks that label and write one chunk (followed by a token and the chunk index).
LABEL_TASK = "label"

#: Seconds between checks for finished images (and for a stop request) on a cluster.
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class ImageResult:
    """What happened to one image of a job.

    Attributes
    ----------
    name : str
        Group name in the store.
    source : str
        Input path (or ``"<array>"``).
    status : str
        ``"done"``, ``"skipped"`` (already complete with the same settings) or ``"failed"``.
    error : str or None
        One-line reason for a failure.
    attrs : dict
        The image group's attributes once complete (settings, fit, metrics).
    seconds : float
        Wall time from submission to completion.
    pixels : int
        Pixels of the image (0 when it could not be opened).
    """

    name: str
    source: str
    status: str
    error: str | None = None
    attrs: dict[str, Any] | None = None
    seconds: float = 0.0
    pixels: int = 0

    @property
    def metrics(self) -> dict[str, Any]:
        """The ``metrics`` attribute of the stored image (empty unless done or skipped)."""
        return dict((self.attrs or {}).get("metrics", {}))


def recorded_settings(source: Source, settings: Settings) -> dict[str, Any]:
    """Attributes recorded for an image before any work: its source and the job settings."""
    path = source.path if source.path == "<array>" else location(source.path)
    return {
        "source": {
            "path": path,
            "shape": list(source.shape),
            "dtype": source.dtype,
            "conversion": source.conversion,
        },
        "image_shape": [int(source.image.shape[0]), int(source.image.shape[1]), 3],
        "colors_requested": settings.colors,
        "sample_size_requested": settings.sample,
        "seed": settings.seed,
        "chunk": settings.chunk,
        "fit_settings": settings.fit_settings(),
    }


def _fit(
    sample: NDArray[np.uint8],
    counts: tuple[NDArray[np.uint32], NDArray[np.int64]],
    settings: Settings,
) -> Fit:
    keys, freq = counts
    return fit_palette(
        sample,
        keys,
        freq,
        settings.colors,
        random_state=settings.seed,
        max_iter=settings.max_iter,
        tol=settings.tol,
        effort=settings.effort,
    )


def _finish(store: str, name: str, fit: Fit, errors: list[int], n_pixels: int) -> dict[str, Any]:
    # ``errors`` are the chunks' summed squared errors, computed while labelling: the error of
    # every pixel with the labels the store holds.
    mse = sum(errors) / (3 * n_pixels)
    attrs: dict[str, Any] = {
        "colors": len(fit.palette),
        "fit": fit.info,
        "metrics": {"psnr_db": psnr(mse), "mse": mse, "raw_bytes": 3 * n_pixels},
        "completed": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return finalize(store, name, fit.palette, attrs)


def _fit_block(block: NDArray[np.uint8], settings: Settings) -> Fit:
    # The whole fit of an image held as one block, in one task: the same sample and counts as
    # sample_pixels and colour_counts take chunk by chunk.
    rows, cols = sample_positions(block.shape[:2], settings.sample, settings.seed)
    stride = grid_stride(block.shape[:2], settings.count_pixels)
    return _fit(block[rows, cols], grid_histogram(block, 0, 0, stride), settings)


def fit_graph(source: Source, settings: Settings) -> Delayed:
    """The lazy fit of one image: sample and colour counts, then the palette.

    Both read the image chunk by chunk; an image held as one block (a file decoded whole, or an
    image of one chunk) is fitted by one task.
    """
    image = source.image if source.whole is None else source.whole
    if image.npartitions == 1:
        (block,) = image.to_delayed(optimize_graph=False).ravel()  # keys shared with the job
        return delayed(_fit_block, pure=True)(block, settings)
    return delayed(_fit, pure=True)(
        sample_pixels(image, settings.sample, settings.seed),
        colour_counts(image, settings.count_pixels),
        settings,
    )


def write_graph(
    source: Source, store: str, settings: Settings, target: zarr.Array, fit: object
) -> Delayed:
    """The lazy labelling of one image, ending in marking it complete; returns its attributes.

    ``fit`` is the image's :class:`~pipeline.fit.Fit`, or a lazy one (:func:`fit_graph`, or a
    distributed future); ``target`` its empty labels array (see
    :func:`pipeline.store.create_image`). An image of one chunk is labelled, written and
    marked complete by one task.
    """
    image = source.image
    dtype = label_dtype(settings.colors)
    token = tokenize(image.name, fit, store, source.name, dtype, uuid.uuid4())  # one per run
    n_pixels = int(image.shape[0] * image.shape[1])
    blocks = image.to_delayed(optimize_graph=False).ravel()
    regions = block_regions(image)
    # bound here, the zarr array is not searched for dask collections in every task's arguments
    write = partial(_label_and_write, dtype=dtype, target=target)
    if len(blocks) == 1:
        finish = partial(_label_and_finish, write, store=store, name=source.name)
        return delayed(finish)(blocks[0], fit, regions[0], dask_key_name=f"{LABEL_TASK}-{token}-0")
    label = delayed(write, pure=True)
    errors = [
        label(block, fit, region=region, dask_key_name=f"{LABEL_TASK}-{token}-{i}")
        for i, (block, region) in enumerate(zip(blocks, regions, strict=True))
    ]
    return delayed(_finish, pure=False)(store, source.name, fit, errors, n_pixels)


def _label_and_write(
    block: NDArray[np.uint8],
    fit: Fit,
    dtype: np.dtype,
    target: zarr.Array,
    region: tuple[slice, slice],
) -> int:
    # One task labels a chunk and writes it: no labels stay in memory between tasks.
    labels, error = label_block(block, fit, dtype)
    write_labels(target, region, labels)
    return error


def _label_and_finish(
    write: Callable[..., int],
    block: NDArray[np.uint8],
    fit: Fit,
    region: tuple[slice, slice],
    *,
    store: str,
    name: str,
) -> dict[str, Any]:
    # An image of one chunk: label and write it (``write``: _label_and_write with its array
    # bound), then mark it complete, in one task.
    error = write(block, fit, region=region)
    return _finish(store, name, fit, [error], block.shape[0] * block.shape[1])


def _describe(exc: BaseException, source: str) -> str:
    if isinstance(exc, PipelineError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{source}: {type(exc).__name__}: {text}"


def compress_sources(
    sources: Sequence[Source],
    store: str,
    settings: Settings,
    *,
    overwrite: bool = False,
    client: Any = None,
    on_result: Callable[[ImageResult], None] | None = None,
) -> list[ImageResult]:
    """Compress opened sources into ``store``; returns one result per source, in order.

    Complete images stored with the same settings are skipped (so a rerun resumes an interrupted
    job); images stored with other settings fail unless ``overwrite``. An image that fails while
    being computed has its partly written group removed; one interrupted with the process stays
    ``"writing"`` and is redone by the next run. With a distributed ``client`` every image is
    submitted at once; without one, images run one after another on the default dask scheduler.
    """
    root = open_root(store, mode="a")
    results: dict[str, ImageResult] = {}
    wanted: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()

    pixels = {s.name: int(s.image.shape[0] * s.image.shape[1]) for s in sources}

    def report(result: ImageResult) -> None:
        result = replace(result, pixels=pixels[result.name])
        results[result.name] = result
        if on_result is not None:
            on_result(result)

    for source in sources:
        stopping.check()
        recorded = recorded_settings(source, settings)
        try:
            state = "absent" if overwrite else existing_status(root, source.name, recorded)
        except PipelineError as exc:
            report(ImageResult(source.name, source.path, "failed", error=str(exc)))
            continue
        if state == "complete":
            report(
                ImageResult(
                    source.name, source.path, "skipped", attrs=dict(root[source.name].attrs)
                )
            )
            continue
        wanted[source.name] = recorded

    by_name = {s.name: s for s in sources}

    def done(name: str, attrs: dict[str, Any] | None, exc: BaseException | None) -> None:
        seconds = time.perf_counter() - started
        path = by_name[name].path
        if exc is None:
            report(ImageResult(name, path, "done", attrs=attrs, seconds=seconds))
        else:
            remove_image(root, name)
            report(ImageResult(name, path, "failed", error=_describe(exc, path), seconds=seconds))

    def first_pass(source: Source) -> Delayed:
        return fit_graph(source, settings)

    def second_pass(source: Source, fit: object) -> Delayed:
        # The group is created (status "writing") just before its labels are: workers start on
        # the first images while the client still prepares the others.
        rows, cols = source.image.chunks[:2]
        target = create_image(
            root,
            source.name,
            source.image.shape[:2],
            (rows[0], cols[0]),
            settings.colors,
            wanted[source.name],
        )
        return write_graph(source, store, settings, target, fit)

    todo = [s for s in sources if s.name in wanted]
    if client is not None:
        _run_on_cluster(client, todo, first_pass, second_pass, done)
    else:
        for source in todo:
            stopping.check()
            try:
                fit: object = first_pass(source)
                if source.streamed:
                    fit = dask.compute(fit)[0]
                attrs = second_pass(source, fit).compute()
            except Exception as exc:  # one image failing must not stop the others
                done(source.name, None, exc)
            else:
                done(source.name, attrs, None)
    return [results[s.name] for s in sources]


@dataclass(frozen=True)
class Placement:
    """Where the tasks of an image decoded whole start (a ``workers`` annotation, by key).

    Everything starts on ``home``, which decodes the image and cuts it into chunks, except the
    labelling of every other chunk, which starts on ``helper`` and fetches just its chunk.
    Restrictions are loose: the scheduler may still move tasks. Without them it takes the
    chunk splits for root tasks and ships the whole decoded image to another worker.
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


def _run_on_cluster(
    client: Any,
    sources: Sequence[Source],
    first_pass: Callable[[Source], Delayed],
    second_pass: Callable[[Source, object], Delayed],
    done: Callable[[str, dict[str, Any] | None, BaseException | None], None],
) -> None:
    """Run every image at once on a distributed cluster, reporting each as it finishes.

    An image decoded whole runs as one graph (the decoded image is held once and used by every
    step). A streamed image runs in two passes, so that no chunk is held between them: its fit,
    then, as soon as that is done, its labelling with the fit (a future on the cluster).
    """
    from distributed import as_completed

    pending: dict[str, tuple[Source, str]] = {}
    futures = []
    workers = sorted(client.scheduler_info()["workers"])
    for n, source in enumerate(sources):
        fit = first_pass(source)
        if source.streamed:
            future = client.compute(fit)
            pending[future.key] = (source, "fit")
        else:
            # Left to itself, the scheduler sends the whole decoded image to another worker
            # to cut it into chunks; see Placement.
            home = workers[n % len(workers)] if workers else None
            helper = workers[(n + 1) % len(workers)] if workers else None
            with dask.annotate(workers=Placement(home, helper), allow_other_workers=True):
                future = client.compute(second_pass(source, fit))
            pending[future.key] = (source, "write")
        futures.append(future)
    fits: dict[str, Any] = {}
    queue = as_completed(futures)
    while not queue.is_empty():
        batch = queue.next_batch(block=False)
        if not batch:
            stopping.pause(POLL_SECONDS)  # wait, but stop promptly when asked
        for future in batch:
            source, phase = pending.pop(future.key)
            error = future.exception()
            if error is None and phase == "fit":
                fits[source.name] = future  # keep the fit on the cluster until labels are done
                following = client.compute(second_pass(source, future))
                pending[following.key] = (source, "write")
                queue.add(following)
                continue
            fits.pop(source.name, None)
            done(source.name, future.result() if error is None else None, error)


def failed_inputs(errors: Sequence[InputError]) -> list[ImageResult]:
    """Results for inputs that could not even be opened."""
    return [
        ImageResult(os.path.basename(e.source), e.source, "failed", error=str(e)) for e in errors
    ]
