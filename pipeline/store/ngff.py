"""OME-NGFF 0.5 for image viewers: the labels pyramid's geometry and the ``ome`` attribute.

Each image group is an OME-NGFF multiscale label image. Level 0 is the ``labels`` array
itself; level ``n`` (array ``labels_<n>``) holds every ``2**n``-th pixel of it, in both
directions, so that pixel ``(y, x)`` of level ``n`` is pixel ``(y * 2**n, x * 2**n)`` of
``labels``. Every level has the chunk shape of ``labels``, and levels are added until one
chunk holds a whole level, for images longer than :data:`WHOLE_SIDE` on a side only (a viewer
shows a smaller one whole). A chunk ``(i, j)`` of level ``n`` is made from the chunks
``(2i .. 2i + 1, 2j .. 2j + 1)`` of level ``n - 1`` (:func:`source_region`), so the writer of
a chunk depends on four chunks at most, whatever the image's size. The palette is the colour
table of the label image (``image-label.colors``). Nothing here does any I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Version of OME-NGFF the ``ome`` attribute follows.
NGFF_VERSION = "0.5"
#: Name of level 0, the full-resolution labels.
LABELS = "labels"
#: Longest side of an image without a pyramid: a viewer shows it whole (it fits a 2K screen,
#: and its labels are at most 4 MP, 4 MB as uint8). Images written before format version 4
#: (``pipeline.store.write.WHOLE_VERSION``) have a pyramid whenever they exceed one chunk.
WHOLE_SIDE = 2048


def level_path(level: int) -> str:
    """Name of the array of pyramid ``level`` in its image group (``labels`` for level 0)."""
    return LABELS if level == 0 else f"{LABELS}_{level}"


def level_of(path: str) -> int | None:
    """The pyramid level of the array named ``path`` (0 for ``labels``); None for other names."""
    if path == LABELS:
        return 0
    head, sep, level = path.partition("_")
    valid = head == LABELS and sep and level.isdigit() and level[0] != "0" and len(level) < 3
    return int(level) if valid else None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def level_count(
    shape: tuple[int, int], chunks: tuple[int, int], whole_side: int = WHOLE_SIDE
) -> int:
    """Levels of the pyramid of labels of ``shape`` in ``chunks``, level 0 included.

    An image no longer than ``whole_side`` on either side has level 0 only (``0``: as images
    written before format version 4 are). Levels are added until one chunk holds a whole
    level: an image of one chunk has level 0 only.
    """
    if max(shape) <= whole_side:
        return 1
    levels = 1
    while any(_ceil_div(s, 2 ** (levels - 1)) > c for s, c in zip(shape, chunks, strict=True)):
        levels += 1
    return levels


def level_shape(shape: tuple[int, int], level: int) -> tuple[int, int]:
    """Shape of pyramid ``level`` of labels of ``shape``: every ``2**level``-th pixel."""
    step = 2**level
    return _ceil_div(shape[0], step), _ceil_div(shape[1], step)


def level_grid(
    shape: tuple[int, int], chunks: tuple[int, int], level: int
) -> list[tuple[int, int]]:
    """Indices of the chunks of pyramid ``level``, in row-major order."""
    rows, cols = (_ceil_div(s, c) for s, c in zip(level_shape(shape, level), chunks, strict=True))
    return [(i, j) for i in range(rows) for j in range(cols)]


def source_region(index: tuple[int, int], chunks: tuple[int, int]) -> tuple[slice, slice]:
    """The region of the level below that chunk ``index`` of a level is made from.

    Two chunks across and down (cut to the level below by the reader), read every second
    pixel.
    """
    (i, j), (rows, cols) = index, chunks
    return slice(2 * i * rows, 2 * (i + 1) * rows, 2), slice(2 * j * cols, 2 * (j + 1) * cols, 2)


def covered_levels(
    region: tuple[slice, slice], shape: tuple[int, int], chunks: tuple[int, int]
) -> int:
    """The highest pyramid level whose chunks under ``region`` are made from it alone.

    ``region`` is a block of whole chunks of level 0 (of labels of ``shape`` in ``chunks``);
    the writer of that block also writes the chunks of levels 1 to the one returned that lie
    under it (0: none), from its own labels, as every ``2**n``-th pixel. A level's chunk is
    covered when the block holds every level-0 chunk it is made from: the block starts on a
    multiple of that many chunks and spans a multiple of them, or reaches the image's edge.
    """
    level = 0
    while level + 1 < level_count(shape, chunks):
        step = 2 ** (level + 1)
        for side, span, cut in zip(shape, chunks, region, strict=True):
            start, stop = cut.start or 0, side if cut.stop is None else min(cut.stop, side)
            whole = span * step
            if start % whole or ((stop - start) % whole and stop != side):
                return level
        level += 1
    return level


def metadata(
    name: str, palette: NDArray[np.uint8], levels: int, colours: bool = True
) -> dict[str, Any]:
    """The ``ome`` attribute of an image group: a multiscale label image and its colours.

    Parameters
    ----------
    name : str
        The image's name (the multiscale's ``name``).
    palette : ndarray of uint8, shape (k, 3) or (k, 4)
        Its palette: the colour of label ``i`` is entry ``i``, opaque unless it has alpha.
    levels : int
        Levels of its pyramid (:func:`level_count`).
    colours : bool
        Whether to hold the colour table (``image-label.colors``, ~40 bytes per palette entry);
        without it a viewer colours the labels its own way (the palette array still holds
        the colours).
    """
    opaque = np.full((len(palette), 1), 255, dtype=np.uint8)
    rgba = palette if palette.shape[1] == 4 else np.hstack([palette, opaque])
    table = [{"label-value": value, "rgba": colour} for value, colour in enumerate(rgba.tolist())]
    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": [
                    {
                        "path": level_path(level),
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [float(2**level)] * 2}
                        ],
                    }
                    for level in range(levels)
                ],
                "type": "nearest",
            }
        ],
        "image-label": {"colors": table} if colours else {},
    }
