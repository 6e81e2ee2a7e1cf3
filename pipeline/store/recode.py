"""Move a store's images to another compression without refitting: same palette and labels.

Each complete image is copied, array by array and chunk by chunk, into a staging group
(:data:`STAGING`, inside the bookkeeping group, so never taken for an image) with the codecs of
the new compression; its attributes are those of the image with ``compression``, the stored
sizes and the OME-NGFF metadata updated (digests are of values, so they stay). Then it is
swapped in by two renames: the old group aside, the new one into its place. A run stopped at
any point leaves every image whole or restores it on the next run (:func:`resume`), so running
the command again finishes the work. Local stores only (object stores cannot rename a group).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import zarr

from pipeline.errors import UsageError
from pipeline.store import lease, ngff
from pipeline.store.location import Location
from pipeline.store.read import open_image, open_pyramid, scan
from pipeline.store.write import (
    META,
    PORTABLE,
    create_level,
    create_palette,
    group_document,
    open_root,
    sized_metrics,
    viewer_colours,
    write_group,
)

#: Group where images are rebuilt with their new codecs before being swapped in.
STAGING = META + "/recoding"
#: Suffix of an image's old group, set aside during the swap.
ASIDE = ".old"


@dataclass(frozen=True)
class Recoded:
    """One image of :func:`recode_store`.

    Its name, its compression and stored bytes before, and its stored bytes after (None for
    an image that already had the compression asked for).
    """

    name: str
    previous: str
    before: int
    after: int | None


def resume(store: Location) -> None:
    """Finish what a stopped run left in :data:`STAGING`.

    An image set aside whose new group is not in place goes back; whatever else is staged is
    dropped.
    """
    folder = store.path(STAGING)
    if not os.path.isdir(folder):
        return
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if entry.endswith(ASIDE) and not os.path.isdir(store.path(entry[: -len(ASIDE)])):
            store.guard()
            os.rename(path, store.path(entry[: -len(ASIDE)]))
        elif os.path.isdir(path):
            store.guard()
            shutil.rmtree(path)


def recode_store(store: Location, compression: str) -> Iterator[Recoded]:
    """Move every complete image of ``store`` to ``compression``, one image at a time.

    Holds the store's lease throughout (:func:`pipeline.store.lease.hold`), every write
    fenced by it. Images already stored with ``compression`` are left as they are; damaged or
    incomplete images are skipped (``verify --repair`` is for them).

    Raises
    ------
    UsageError
        For a store that is not local.
    PipelineError
        For no such store, or not a Zarr v3 store.
    """
    if not store.local:
        raise UsageError(f"{store}: recompress works on local stores only")
    open_root(store)
    with lease.hold(store) as held:
        yield from _recode(store.fenced(held.fence()), compression)


def _recode(store: Location, compression: str) -> Iterator[Recoded]:
    resume(store)
    for found in scan(store):
        if found.attrs is None or found.attrs.get("status") != "complete":
            continue
        before = int(found.attrs["metrics"]["stored_bytes"])
        previous = str(found.attrs.get("compression", PORTABLE))
        if previous == compression:
            yield Recoded(found.name, previous, before, None)
            continue
        attrs = _stage(store, found.name, found.attrs, compression)
        _swap(store, found.name)
        yield Recoded(found.name, previous, before, int(attrs["metrics"]["stored_bytes"]))


def _stage(store: Location, name: str, attrs: dict[str, Any], compression: str) -> dict[str, Any]:
    """Copy image ``name`` into :data:`STAGING` with the codecs of ``compression``."""
    image = open_image(store, name, attrs)
    staged = f"{STAGING}/{name}"
    group = zarr.create_group(store.zarr, path=staged, zarr_format=3, overwrite=True)
    levels = []
    for level, old in enumerate([image.labels, *open_pyramid(image)]):
        new = create_level(group, level, old.shape, old.chunks, old.dtype, compression)
        for region in _chunk_regions(old):
            new[region] = old[region]
        levels.append(new)
    palette = create_palette(group, image.palette, compression)
    recoded = {**attrs, "compression": compression}
    recoded["metrics"] = sized_metrics(attrs["metrics"], palette, levels)
    if "ome" in attrs:
        recoded["ome"] = ngff.metadata(name, image.palette, len(levels), viewer_colours(recoded))
    write_group(store, staged, group_document(recoded))
    return recoded


def _chunk_regions(array: zarr.Array) -> Iterator[tuple[slice, slice]]:
    """The region of each chunk of a 2-D ``array``, row by row."""
    (height, width), (rows, cols) = array.shape, array.chunks
    for top in range(0, height, rows):
        for left in range(0, width, cols):
            yield slice(top, top + rows), slice(left, left + cols)


def _swap(store: Location, name: str) -> None:
    """Put the staged group of image ``name`` in place of its group (two renames)."""
    aside = store.path(f"{STAGING}/{name}{ASIDE}")
    store.guard()
    os.rename(store.path(name), aside)
    store.guard()
    os.rename(store.path(f"{STAGING}/{name}"), store.path(name))
    shutil.rmtree(aside)
