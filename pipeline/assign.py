"""Label every pixel with its exact nearest palette entry, chunk by chunk.

The fit (:class:`pipeline.fit.Fit`) already knows the exact label of every distinct colour of the
image; assignment is then a table lookup keyed by the 24-bit colour. Colours missing from the table
(which only happens if the input changed after it was counted) fall back to the brute-force kernel,
so the result is always :func:`pipeline.colours.nearest` of the stored palette.
"""

from __future__ import annotations

import weakref

import dask.array as da
import numpy as np
from dask import delayed
from numpy.typing import NDArray

from pipeline.colours import nearest, pack
from pipeline.fit import Fit


def label_dtype(colors: int) -> np.dtype:
    """uint8 labels up to 256 colours, uint16 above."""
    return np.dtype(np.uint8 if colors <= 256 else np.uint16)


#: Lookup tables of the fits in use in this process, by ``id`` (dropped with their fit).
_TABLES: dict[int, NDArray[np.uint16]] = {}


def lookup_table(fit: Fit) -> NDArray[np.uint16]:
    """1 + label of every 24-bit colour the fit knows, 0 for the others (2**24 entries, 32 MiB).

    Built once per fit and process, and shared by every block labelled with that fit.
    """
    table = _TABLES.get(id(fit))
    if table is None:
        table = np.zeros(1 << 24, dtype=np.uint16)
        table[fit.keys] = fit.labels + 1
        _TABLES[id(fit)] = table
        weakref.finalize(fit, _TABLES.pop, id(fit), None)
    return table


def assign_block(
    block: NDArray[np.uint8], fit: Fit, dtype: np.dtype
) -> NDArray[np.unsignedinteger]:
    """Labels (h, w) of an (h, w, 3) uint8 block for ``fit``'s palette."""
    labels = lookup_table(fit)[pack(block)]
    missing = labels == 0
    labels -= 1
    if missing.any():
        labels[missing] = nearest(block[missing], fit.palette)
    return labels.astype(dtype, copy=False)


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
