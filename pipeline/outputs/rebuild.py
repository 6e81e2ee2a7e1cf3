"""Rebuild images from a store: ``palette[labels]``, lazily and chunk by chunk."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from pipeline.store.read import Damaged, one_line
from pipeline.store.write import StoredImage


def rebuild_block(labels: NDArray[np.integer], palette: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(h, w, 3) uint8 pixels of an (h, w) labels block ((h, w, 4) RGBA for an RGBA palette)."""
    return palette[labels]


class UnreadableChunk(Damaged):
    """A labels chunk that cannot be read (its checksum does not match, it does not decode)."""

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, for tasks run on other processes
        return (type(self), (self.name, self.problem))


class CheckedLabels:
    """An image's labels array whose read errors become :class:`UnreadableChunk` naming it."""

    def __init__(self, name: str, labels: Any) -> None:
        self.name = name
        self.labels = labels
        self.shape = labels.shape
        self.dtype = labels.dtype
        self.ndim = labels.ndim

    def __getitem__(self, key: Any) -> NDArray[Any]:
        try:
            return np.asarray(self.labels[key])
        except Exception as exc:
            raise UnreadableChunk(self.name, f"labels chunk unreadable ({one_line(exc)})") from None


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
