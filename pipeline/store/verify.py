"""Prove a store whole, chunk by chunk, and redo exactly the images that are not.

For every image (:func:`verify_image`): its metadata parses and has the types readers need; its
status is complete; its arrays agree with its attributes; every chunk of its labels, of their
pyramid's levels and of its palette exists, decodes and passes its CRC-32C; every label lies
within the palette; every array hashes to the digest recorded when the image was written; and
its OME-NGFF metadata is the one its palette and pyramid call for. A listing is enough to find
missing chunks; the rest reads every chunk once, several chunks at a time.

:func:`pipeline.api.repair` compresses the damaged images again from their recorded sources
with their recorded settings, so a repaired store holds the bytes an undisturbed run would have
written.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from pipeline.store import ngff
from pipeline.store.location import Location
from pipeline.store.read import (
    Damaged,
    Entry,
    Incomplete,
    entry,
    has_pyramid,
    listed,
    one_line,
    open_image,
    open_pyramid,
)
from pipeline.store.write import (
    StoredImage,
    chunk_digest,
    labels_digest,
    open_root,
    palette_digest,
    viewer_colours,
)


@dataclass(frozen=True, repr=False)
class Finding:
    """What :func:`verify_image` found of one image.

    Attributes
    ----------
    name : str
    problems : list of str
        One line each; empty when the image is whole.
    attrs : dict or None
        Its attributes when they could be read (what :func:`repair` needs).
    bytes_read : int
        Compressed bytes of the chunks read.
    checked : bool
        Whether digests were compared (images written before checksums have none).
    writing : bool
        Whether its only problem is that its status says ``"writing"``: being written by a
        running job, or left by a stopped one.
    """

    name: str
    problems: list[str]
    attrs: dict[str, Any] | None
    bytes_read: int = 0
    checked: bool = False
    writing: bool = False

    def __repr__(self) -> str:
        """One line, without the attributes: whole or its first problem, and what was read."""
        more = len(self.problems) - 1
        state = (
            "whole"
            if self.whole
            else f"damaged: {self.problems[0]}" + (f" (and {more} more)" if more else "")
        )
        checks = "digests checked" if self.checked else "no digests"
        read = f"{self.bytes_read:,} bytes read"
        return f"Finding(name={self.name!r}, {state}, {checks}, {read})"

    @property
    def whole(self) -> bool:
        """Whether nothing is wrong with the image."""
        return not self.problems

    @property
    def repairable(self) -> str | None:
        """Why :func:`repair` cannot redo this image, or None when it can."""
        if self.attrs is None:
            return (
                "the store holds no readable record of its source and settings; "
                "run the job again on its inputs to redo it"
            )
        source = self.attrs.get("source")
        path = source.get("path") if isinstance(source, dict) else None
        if not isinstance(path, str):
            return "its metadata records no source; run the job again on its inputs to redo it"
        if path == "<array>":
            return "it was compressed from an array; compress the array again"
        if not isinstance(self.attrs.get("fit_settings"), dict):
            return "its metadata records no fit settings"
        return None


def _chunk_keys(store: Location, name: str, array: str) -> set[tuple[int, ...]]:
    """Grid indices of the chunks of ``name/array`` present in the store (one listing)."""
    root = store.path(name, array, "c")
    try:
        found = store.fs.find(root)
    except FileNotFoundError:
        return set()
    prefix = root.rstrip("/") + "/"
    keys = set()
    for path in found:
        parts = path[len(prefix) :].split("/")
        if all(part.isdigit() for part in parts):
            keys.add(tuple(int(part) for part in parts))
    return keys


def _grid(array: zarr.Array) -> list[tuple[int, ...]]:
    counts = [-(-size // chunk) for size, chunk in zip(array.shape, array.chunks, strict=True)]
    return [tuple(int(i) for i in index) for index in np.ndindex(*counts)]


def _check_chunk(
    array: zarr.Array, name: str, index: tuple[int, ...], colors: int
) -> tuple[bytes | None, str | None]:
    """Digest of one chunk of label array ``name``, or the problem met reading it."""
    try:
        block = np.asarray(array.blocks[index])
    except Exception as exc:
        return None, f"{name} chunk {_at(index)}: {one_line(exc)}"
    if block.size and int(block.max()) >= colors:
        return None, (
            f"{name} chunk {_at(index)} holds label {int(block.max())}; "
            f"the palette has {colors} entries"
        )
    return chunk_digest(block), None


def _at(index: tuple[int, ...]) -> str:
    return "/".join(str(i) for i in index)


def verify_image(
    store: Location, entry: Entry, pool: concurrent.futures.Executor | None = None
) -> Finding:
    """Check one image of ``store`` (an :class:`~pipeline.store.read.Entry` of its scan) whole.

    ``pool`` reads the chunks of its labels and their pyramid concurrently.
    """
    if entry.attrs is None:
        return Finding(entry.name, [str(entry.problem)], entry.raw)
    try:
        image = open_image(store, entry.name, entry.attrs)
        pyramid = open_pyramid(image)
    except (Damaged, Incomplete) as exc:
        problem = exc.problem if isinstance(exc, Damaged) else str(exc).split(": ", 1)[1]
        writing = isinstance(exc, Incomplete) and entry.attrs.get("status") == "writing"
        return Finding(entry.name, [problem], entry.attrs, writing=writing)
    return _verify_arrays(store, image, pyramid, pool)


def _verify_level(
    store: Location,
    image: str,
    level: int,
    array: zarr.Array,
    colors: int,
    mapper: Callable[..., Iterator[Any]],
) -> tuple[str | None, list[str]]:
    """The digest of pyramid ``level`` of ``image`` (None if a chunk is bad), and its problems."""
    problems = []
    name = ngff.level_path(level)
    present = _chunk_keys(store, image, name)
    grid = _grid(array)
    missing = [index for index in grid if index not in present]
    if missing:
        shown = ", ".join(_at(i) for i in missing[:3]) + (" ..." if len(missing) > 3 else "")
        problems.append(f"{len(missing)} of {len(grid)} {name} chunks missing ({shown})")
    results = list(mapper(lambda index: _check_chunk(array, name, index, colors), grid))
    problems += [problem for _, problem in results if problem is not None]
    return None if problems else labels_digest(d for d, _ in results if d is not None), problems


def _verify_arrays(
    store: Location,
    image: StoredImage,
    pyramid: list[zarr.Array],
    pool: concurrent.futures.Executor | None,
) -> Finding:
    attrs, arrays = image.attrs, [image.labels, *pyramid]
    problems = []
    if (0, 0) not in _chunk_keys(store, image.name, "palette"):
        problems.append("palette chunk missing")
    colors = len(image.palette)
    mapper: Callable[..., Iterator[Any]] = pool.map if pool is not None else map
    hashes = []
    for level, array in enumerate(arrays):
        digest, found = _verify_level(store, image.name, level, array, colors, mapper)
        hashes.append(digest)
        problems += found
    digests = attrs.get("digests")
    checked = isinstance(digests, dict)
    modern = has_pyramid(attrs)
    if isinstance(digests, dict) and not problems:
        if hashes[0] != digests["labels"]:
            problems.append("labels do not match their recorded digest")
        if modern and hashes[1:] != digests.get("levels"):
            problems.append("the pyramid does not match its recorded digests")
        if palette_digest(image.palette) != digests["palette"]:
            problems.append("palette does not match its recorded digest")
    ome = ngff.metadata(image.name, image.palette, len(arrays), viewer_colours(attrs))
    if modern and attrs.get("ome") != ome:
        problems.append("OME-NGFF metadata (ome) is not that of the palette and pyramid")
    read = sum(int(array.nbytes_stored()) for array in arrays)
    return Finding(image.name, problems, attrs, read, checked)


#: Images verified at once per chunk-reading thread: on object storage each image is several
#: round trips (metadata, listings, chunks), which other images' requests overlap.
IMAGES_PER_THREAD = 4


def verify(
    store: Location, names: list[str] | None = None, threads: int | None = None
) -> Iterator[Finding]:
    """The findings of :func:`pipeline.api.verify_store` on ``store``, in name order.

    ``threads`` threads read chunks, for up to :data:`IMAGES_PER_THREAD` images each at once.
    """
    open_root(store)
    listing, chosen = listed(store, names)
    workers = threads or os.cpu_count() or 1
    window = IMAGES_PER_THREAD * workers

    def one(name: str) -> Finding:
        return verify_image(store, entry(store, name, listing), chunks)

    with (
        concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="chunks") as chunks,
        concurrent.futures.ThreadPoolExecutor(window, thread_name_prefix="images") as images,
    ):
        pending: deque[concurrent.futures.Future[Finding]] = deque()
        for name in chosen:
            pending.append(images.submit(one, name))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
