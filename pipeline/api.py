"""The Python API: compress files or arrays into a store, open it, rebuild images lazily.

This is the edge where a store's path or URL becomes a :class:`~pipeline.store.location.Location`
(:func:`~pipeline.store.location.job_location` for a job, ``Location.at`` for a reader); everything
below takes the value.
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from dask.base import tokenize
from numpy.typing import NDArray

from pipeline.errors import LeaseLost, SchedulerLost, StoreUnwritable, UsageError
from pipeline.inputs.discover import Entry, Inputs, discover, find_inputs
from pipeline.inputs.frames import Image, expand, frame_of, named_frame, plain
from pipeline.inputs.names import node_name, unique_names
from pipeline.job import stopping
from pipeline.job.graph import rebuild, source_from_array
from pipeline.job.metrics import Tally
from pipeline.job.plan import Given, Item, WorkEstimate, batch_size, plan, prior
from pipeline.job.run import ClusterExecutor, LocalExecutor, Runner
from pipeline.job.tasks import Job, Spec
from pipeline.outputs.files import Outputs, write_each
from pipeline.results import ImageResult
from pipeline.settings import Running, Settings, recorded_settings
from pipeline.store import lease
from pipeline.store.location import Location, job_location
from pipeline.store.read import (
    Damaged,
    Incomplete,
    check_complete,
    open_image,
    read_image,
    reuse_status,
    scan,
)
from pipeline.store.verify import Finding, verify
from pipeline.store.write import (
    Listing,
    StoredImage,
    digest,
    list_store,
    open_root,
    prepare,
    remove_image,
    remove_marker,
    reuse_values,
)

if TYPE_CHECKING:
    import dask.array as da


def stream(
    inputs: Sequence[str] | str | Inputs,
    store: str | Location,
    *,
    overwrite: bool = False,
    client: Any = None,
    on_start: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
    running: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[ImageResult]:
    """Compress image files into a store, yielding each image's result as soon as it is known.

    Parameters are those of :func:`compress`, plus ``notify`` (called with a line of text when
    the job is stopping) and ``running``: overrides of :class:`pipeline.settings.Running` (how
    the job is batched and stopped; never changes a stored byte). ``inputs`` may also be what
    :func:`find_inputs` found. Nothing is kept per image but its plan, so a job over millions
    of inputs holds little memory.
    """
    config = Settings.from_config(**settings)
    how = Running.from_config(**(running or {}))
    store = job_location(store)
    found = inputs if isinstance(inputs, Inputs) else find_inputs(inputs, store)
    entries = found.entries
    total = len(entries) + len(found.errors)
    size = sum(e.size or 0 for e in entries)
    if on_start is not None:
        on_start(total, size)
    names = unique_names([e.path for e in entries])

    def more(images: int) -> None:  # a file found to hold several frames (frames: all)
        nonlocal total
        total += images
        if on_start is not None:
            on_start(total, size)

    executor = _executor(client)
    estimate = WorkEstimate()  # what batches are made of, learned as images finish
    unlisted = (  # named as given: they never reach the store
        ImageResult(
            os.path.basename(error.source.rstrip("/")) or error.source,
            error.source,
            "failed",
            str(error),
        )
        for error in found.errors
    )

    def items(ours: Location, listing: Listing) -> Iterator[Item]:
        if config.frames == "all":
            images = expand(entries, names, on_more=more)
            planned = _with_frames(names, listing)
        else:
            images, planned = plain(entries, names), names
        return plan(
            images,
            _to_plan(ours, listing, planned, overwrite),
            config,
            overwrite=overwrite,
            check=_checker(store),
            batch_bytes=how.batch_bytes,
            batch_images=batch_size(len(entries), executor.threads(), how.batch_images),
            batch_seconds=how.batch_seconds,
            estimate=estimate,
        )

    yield from _tallied(
        store,
        executor,
        itertools.chain(unlisted, _execute(store, config, how, executor, items, notify, estimate)),
        expected=lambda: total,
    )


def _executor(client: Any) -> LocalExecutor | ClusterExecutor:
    """Where the work runs: on ``client``'s cluster, else in this process."""
    return ClusterExecutor(client) if client is not None else LocalExecutor()


def _execute(
    store: Location,
    config: Settings,
    how: Running,
    executor: LocalExecutor | ClusterExecutor,
    items: Callable[[Location, Listing], Iterator[Item]],
    notify: Callable[[str], None] | None,
    estimate: WorkEstimate | None = None,
) -> Iterator[ImageResult]:
    """Run the work ``items`` plans from the store's listing, taken once the store is ours.

    ``items`` is given the store as the job writes it (fenced by its lease) and the listing;
    ``estimate`` (which ``items`` sizes batches with) learns from the images done.
    """
    runner: Runner | None = None
    try:
        stopping.stop_point()  # asked to stop while the inputs were listed: take nothing
        with lease.hold(store, ttl=how.lease_seconds) as held:
            listing = list_store(store)
            stopping.stop_point()  # or while the store was listed: change nothing
            store = store.fenced(held.fence())
            prepare(store, listing)
            job = Job(store, config, held.run, how.batch_pixels)
            runner = Runner(job, how, executor, held, notify, estimate)
            yield from runner.run(items(store, listing))
    except (stopping.Interrupted, StoreUnwritable, LeaseLost, SchedulerLost):
        if runner is not None:  # the lease is given up: what the work in flight completed
            yield from runner.settle()
        raise
    finally:
        executor.close()


def _tallied(
    store: Location,
    executor: LocalExecutor | ClusterExecutor,
    results: Iterator[ImageResult],
    expected: Callable[[], int] | None = None,
) -> Iterator[ImageResult]:
    """``results``, counted for the job's metrics on the cluster's scheduler (if any).

    ``expected`` returns how many results the job will give, as far as known yet.
    """
    return Tally(store.url, executor.live_client, expected).each(results)


def _with_frames(names: Sequence[str], listing: Listing) -> list[str]:
    """``names`` and the store's groups that may be frame images of them (``frames: all``).

    A file's frames are only counted as the job goes; the groups named as frames of one of
    ``names`` are what an earlier run stored of them (:func:`pipeline.inputs.frames.frame_of`).
    """
    known = set(names)
    found = (n for n in listing.groups | listing.strays if n not in known and frame_of(n, known))
    return [*names, *sorted(found)]


def _to_plan(store: Location, listing: Listing, names: Sequence[str], overwrite: bool) -> Listing:
    """The listing a job plans images ``names`` from, once the store is its own.

    A file lying where the group of one of them goes is removed (the image is then written
    there). Unless ``overwrite``, the images among them that completion markers vouch for are
    checked by their metadata documents (:func:`~pipeline.store.read.check_complete`), so that
    a damaged one is redone, not skipped.
    """
    for name in listing.strays.intersection(names):
        remove_image(store, name)
    return listing if overwrite else check_complete(store, listing, names)


def _checker(store: Location) -> Callable[[str, dict[str, Any]], str]:
    """``check`` for :func:`pipeline.job.plan.plan`: reads one image's metadata when asked."""
    return functools.partial(reuse_status, store)


def compress(
    inputs: Sequence[str] | str,
    store: str,
    *,
    overwrite: bool = False,
    client: Any = None,
    on_result: Callable[[ImageResult], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> list[ImageResult]:
    """Compress image files (paths, folders or glob patterns) into a Zarr store.

    Parameters
    ----------
    inputs : str or sequence of str
        Files, folders (their image files) or glob patterns; local or fsspec URLs.
    store : str
        Output store directory or URL (created if needed). One job writes a store at a time
        (see :mod:`pipeline.store.lease`).
    overwrite : bool
        Recompute images already complete in the store (default: skip them if stored with the
        same settings, fail them if stored with other settings).
    client : distributed.Client, optional
        Run on this cluster, a bounded amount of work at a time; default: one item after
        another on dask's current scheduler.
    on_result : callable, optional
        Called with each :class:`ImageResult` as soon as it is known.
    on_start : callable, optional
        Called once the inputs are listed, with the number of results to come and the bytes
        of the input files (e.g. to report progress); with ``frames="all"``, called again
        with the grown number each time a file is found to hold several frames.
    **settings
        Overrides of :class:`pipeline.settings.Settings` (``colors``, ``sample``, ``seed``,
        ``chunk``, ...).

    Returns
    -------
    list of ImageResult
        One per input, in the order they finished (inputs that cannot be listed first).

    Raises
    ------
    UsageError
        When no input at all is found (see :func:`find_inputs`); no store is created.
    """
    results = []
    for result in stream(
        inputs, store, overwrite=overwrite, client=client, on_start=on_start, **settings
    ):
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


def compress_array(
    array: NDArray[np.generic] | da.Array,
    store: str | Location,
    name: str,
    *,
    overwrite: bool = False,
    client: Any = None,
    **settings: Any,
) -> ImageResult:
    """Compress one in-memory numpy or dask image into group ``name`` of ``store``.

    Accepts the same shapes and pixel types as files (see :mod:`pipeline.inputs.sources`); ``name``
    is escaped like a file name (:func:`pipeline.inputs.names.node_name`). Other parameters are as
    for :func:`compress`.
    """
    config = Settings.from_config(**settings)
    how = Running.from_config()
    where = job_location(store)
    group = node_name(name)
    source = source_from_array(array, group, config.chunk)
    values = reuse_values("<array>", config)

    def items(ours: Location, listing: Listing) -> Iterator[Item]:
        listing = _to_plan(ours, listing, [group], overwrite)
        spec = Spec(
            group,
            "<array>",
            token=tokenize(source.image.name),
            key=digest(values),
            stale=listing.complete.get(group),
        )
        decided = None
        if not overwrite and group in listing.groups and group not in listing.damaged:
            decided = prior(spec, values, _checker(where))
        yield decided or Given(spec, source)

    executor = _executor(client)
    (result,) = _tallied(
        where, executor, _execute(where, config, how, executor, items, None), expected=lambda: 1
    )
    return result


def recompress(
    store: str | Location, images: Sequence[tuple[str, dict[str, Any]]], *, client: Any = None
) -> Iterator[ImageResult]:
    """Compress images of ``store`` again, from their recorded sources and settings.

    Each ``(name, attrs)`` is rewritten under its own name with the settings its attributes
    record (``colors_requested``, ``sample_size_requested``, ``seed``, ``chunk``,
    ``fit_settings``), so the result is what the job that wrote it stored. A source that can
    no longer be read fails that image with one line.
    """
    store = job_location(store)
    how = Running.from_config()
    by_settings: dict[Settings, list[tuple[str, str, dict[str, Any]]]] = {}
    for name, attrs in images:
        path = attrs["source"]["path"]
        try:
            config = Settings.from_config(
                colors=attrs["colors_requested"],
                sample=attrs["sample_size_requested"],
                seed=attrs["seed"],
                chunk=attrs["chunk"],
                compression=attrs.get("compression"),
                **recorded_settings(attrs["fit_settings"]),
            )
        except (UsageError, TypeError, KeyError) as exc:
            problem = f"setting {exc} not recorded" if isinstance(exc, KeyError) else str(exc)
            yield ImageResult(name, path, "failed", f"{name}: {problem}")
            continue
        by_settings.setdefault(config, []).append((name, path, attrs["source"]))
    for config, members in by_settings.items():
        entries, errors = discover(list(dict.fromkeys(path for _, path, _ in members)))
        for error in errors:
            for name, path, _ in members:
                if path == error.source:
                    yield ImageResult(name, path, "failed", f"{name}: {error}")
        found = {entry.path: entry for entry in entries}
        redone = [
            _recorded_image(found[path], name, source)
            for name, path, source in members
            if path in found
        ]

        def items(
            ours: Location,
            listing: Listing,
            redone: list[Image] = redone,
            config: Settings = config,
        ) -> Iterator[Item]:
            return plan(
                redone,
                listing,
                config,
                overwrite=True,
                check=_checker(store),
                batch_bytes=how.batch_bytes,
                batch_images=how.batch_images,
            )

        executor = _executor(client)
        yield from _tallied(store, executor, _execute(store, config, how, executor, items, None))


def _recorded_image(entry: Entry, name: str, source: dict[str, Any]) -> Image:
    """Image ``name`` of ``entry`` as its recorded ``source`` says: the frame it was made of."""
    frame, frames = int(source.get("frame", 0)), int(source.get("frames", 1))
    if named_frame(name, frame, frames):
        return Image(entry, name, frame, frames)
    return Image(entry, name, frame or None)


class DamagedImageWarning(UserWarning):
    """An image of a store that :func:`open_store` left out because it cannot be read."""


def open_store(store: str | Location) -> dict[str, StoredImage]:
    """The complete images of a store by name.

    Incomplete images are left out; so are damaged ones (unreadable metadata, arrays that
    disagree with it, chunks missing by the listing), each with a :class:`DamagedImageWarning`
    naming it and the problem. ``python -m pipeline verify`` checks every chunk.
    """
    store = _reader_store(store)
    open_root(store)
    images = {}
    for entry in scan(store):
        try:
            if entry.attrs is None or entry.problem is not None:
                raise Damaged(entry.name, str(entry.problem))
            images[entry.name] = open_image(store, entry.name, entry.attrs)
        except Incomplete:
            continue
        except Damaged as exc:
            warnings.warn(str(exc), DamagedImageWarning, stacklevel=2)
    return images


def _reader_store(store: str | Location) -> Location:
    """The location of a store to read, named in messages as given."""
    return store if isinstance(store, Location) else Location.at(store)


def reconstruct(store: str | Location, name: str) -> da.Array:
    """Lazy (H, W, 3) uint8 rebuild of image ``name`` of ``store`` ((H, W, 4) with transparency).

    Parameters
    ----------
    store : str or Location
        Path of a store written by :func:`pipeline.compress`.
    name : str
        Image group name (see :func:`pipeline.open_store`).
    """
    store = _reader_store(store)
    open_root(store)
    return rebuild(read_image(store, name))


def verify_store(
    store: str | Location, names: list[str] | None = None, threads: int | None = None
) -> Iterator[Finding]:
    """Verify every image of ``store`` (or those ``names``), yielding findings in name order.

    Chunks are read by ``threads`` threads (default: one per core), and a few images per
    thread are verified at once, so memory stays bounded whatever the number of images. See
    :mod:`pipeline.store.verify` for what is checked.
    """
    return verify(_reader_store(store), names, threads)


def repair(
    store: str | Location, damaged: list[Finding], client: Any = None
) -> Iterator[tuple[Finding, ImageResult | None]]:
    """Compress the ``damaged`` images of ``store`` again; each with its result.

    Images that cannot be redone here (:attr:`Finding.repairable`) come with no result; their
    completion markers are removed, so that the job run again on their inputs (which knows
    their sources) redoes them instead of skipping them. Each redone image comes with the
    :class:`~pipeline.results.ImageResult` of its new compression.
    """
    store = job_location(store)
    todo = []
    unrepairable = [f for f in damaged if f.repairable is not None]
    if unrepairable:
        with lease.hold(store) as held:
            listing = list_store(store)
            for finding in unrepairable:
                tag = listing.complete.get(finding.name)
                if tag is not None:
                    remove_marker(store.fenced(held.fence()), finding.name, tag)
                yield finding, None
    for finding in damaged:
        if finding.repairable is None:
            assert finding.attrs is not None
            todo.append((finding.name, finding.attrs))
    by_name = {f.name: f for f in damaged}
    for result in recompress(store, todo, client=client):
        yield by_name[result.name], result


def write_images(
    store: str | Location,
    out_dir: str,
    names: list[str] | None = None,
    extension: str = ".png",
    *,
    overwrite: bool = False,
    into_sources: bool = False,
) -> Outputs:
    """Write rebuilt images of ``store`` into ``out_dir``, in the format ``extension`` names.

    ``.tif``/``.tiff`` write tiled TIFF and ``.zarr`` a Zarr array, chunk by chunk, so images of
    any size can be written. ``.png``, ``.gif`` and ``.webp`` are written from the palette and
    labels, exactly (:func:`~pipeline.outputs.files.write_palette_image`): PNG and GIF of at most
    256 colours are indexed files that need only the labels in memory (1 byte per pixel); PNG of
    more colours and lossless WebP need the whole image. Other formats (JPEG, BMP, ...; anything
    imageio writes) need the whole image in memory at once. Every complete image is written; the
    others are left out with a reason (see :func:`pipeline.outputs.files.write_each`, which says
    what is written where, and how), including images a format cannot hold
    (:func:`~pipeline.outputs.files.format_problem`).

    Parameters
    ----------
    store : str or Location
        Path or URL of a store written by :func:`pipeline.compress`.
    out_dir : str
        Local folder to write into (created if needed).
    names : list of str, optional
        Only these images (default: every image of the store).
    extension : str
        ``.png``, ``.tif``, ``.zarr``, ... (default ``.png``).
    overwrite : bool
        Replace existing files (or ``.zarr`` folders) of the same names; otherwise they are
        kept and their images left out.
    into_sources : bool
        Allow writing into the folder of an image's recorded source; otherwise such an image
        is left out, so that no original is ever replaced by its lossy rebuild.

    Returns
    -------
    Outputs
        The images written (name -> path) and those left out (name -> why).

    Raises
    ------
    UsageError
        For a name that cannot be an image's, an unknown ``extension``, or an ``out_dir`` that
        is a URL or a file.
    PipelineError
        When the store cannot be opened, or ``out_dir`` cannot be written at all (full,
        read-only): writing stops there.
    """
    outputs = Outputs()
    for outcome in write_each(
        _reader_store(store),
        out_dir,
        names,
        extension,
        overwrite=overwrite,
        into_sources=into_sources,
    ):
        outputs.add(outcome)
    return outputs
