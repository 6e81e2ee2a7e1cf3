"""Inputs read chunk by chunk: tiled TIFF (through tifffile's Zarr interface) and Zarr arrays.

These are the only inputs larger than memory can come through: every task reads just the tiles
of its own chunk, so no task holds more than a chunk. Work chunks are rounded to whole tiles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import InputError
from pipeline.inputs.looks import TIFF_SEPARATED, tiff_pages
from pipeline.paths import join, read_bytes, zarr_store


def is_zarr_array(path: str) -> bool:
    """Whether ``path`` (a folder or URL) holds a Zarr array (v2 or v3), not a group."""
    try:
        return json.loads(read_bytes(join(path, "zarr.json"))).get("node_type") == "array"
    except (OSError, ValueError, AttributeError):
        pass
    try:
        read_bytes(join(path, ".zarray"), 1)
    except OSError:
        return False
    return True


def tiff_layout(
    path: str, frame: int = 0
) -> tuple[tuple[int, ...], np.dtype, tuple[int, int], bool] | None:
    """Shape, pixel type, tile size and CMYK-ness of a TIFF's image ``frame`` if tiled, else None.

    ``frame`` counts the pages that are images (:func:`pipeline.inputs.looks.tiff_pages`).
    """
    if not path.lower().endswith((".tif", ".tiff")):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = tiff_pages(tif) or [0]
            page = tif.pages[pages[frame]]
            if not isinstance(page, tifffile.TiffPage) or not page.is_tiled:
                return None
            shape = tuple(int(s) for s in page.shape)
            cmyk = int(page.photometric) == TIFF_SEPARATED and len(shape) == 3 and shape[2] == 4
            tile = (int(page.tilelength), int(page.tilewidth))
            return shape, np.dtype(page.dtype), tile, cmyk
    except Exception:
        return None


def is_tiled_tiff(path: str) -> bool:
    """Whether ``path`` is a TIFF file whose first image is stored in tiles."""
    return tiff_layout(path) is not None


def aligned(chunk: int, tile: int) -> int:
    """``chunk`` rounded down to whole tiles (at least one tile)."""
    return max(tile, chunk // tile * tile)


@dataclass(frozen=True)
class TiffTiles:
    """Array-like view of one image of a tiled TIFF; each read opens the file on its own.

    ``page``: the image's index in the file's pages (its first by default). Only the path
    travels to workers; a read of a region decodes just the tiles it touches.
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    page: int = 0

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def __getitem__(self, region: Any) -> NDArray[Any]:
        """Decode the tiles under ``region``.

        Straight from the file, tile by tile (:func:`read_tiles`), where the page is plainly
        tiled; else through tifffile's Zarr interface.
        """
        import tifffile
        import zarr

        try:
            with tifffile.TiffFile(self.path) as tif:
                found = read_tiles(tif, tif.pages[self.page], region)
            if found is not None:
                return found
            with tifffile.imread(self.path, aszarr=True, key=self.page) as store:
                return np.asarray(zarr.open_array(store, mode="r")[region])
        except Exception as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(self.path, f"cannot read tiles {_describe(region)}: {text}") from None


def read_tiles(tif: Any, page: Any, region: Any) -> NDArray[Any] | None:
    """The pixels of ``page`` (a tifffile page of ``tif``) under ``region``, or None.

    Each tile under the region is read and decoded on its own (tifffile's decoder of the page:
    its compression, predictor and JPEG tables), then copied into place: the same pixels as
    tifffile's Zarr interface gives, in about 70% of its time on a zlib TIFF of 512-pixel
    tiles (whose chunks pass through zarr's codec pipeline). A tile not written in the file is
    zeros, as there. ``region`` is a tuple of slices of step 1, rows and columns first. None
    when the page is not plainly tiled (tiles in depth, samples stored in planes) or the region
    is not such.
    """
    if not page.is_tiled or page.tiledepth != 1 or page.planarconfig != 1:
        return None
    if len(region) < 2 or not all(isinstance(s, slice) for s in region):
        return None
    height, width = page.shape[:2]
    top, bottom, step_rows = region[0].indices(height)
    left, right, step_cols = region[1].indices(width)
    if (
        step_rows != 1
        or step_cols != 1
        or tuple(page.chunks[:2])
        != (
            page.tilelength,
            page.tilewidth,
        )
    ):
        return None
    tile_rows, tile_cols = page.tilelength, page.tilewidth
    out = np.zeros((max(bottom - top, 0), max(right - left, 0), *page.shape[2:]), page.dtype)
    options: dict[str, Any] = {"_fullsize": True}
    if page.jpegtables is not None:
        options["jpegtables"] = page.jpegtables
    if page.jpegheader is not None:
        options["jpegheader"] = page.jpegheader
    handle, across = tif.filehandle, page.chunked[1]
    for i in range(top // tile_rows, -(-bottom // tile_rows)):
        for j in range(left // tile_cols, -(-right // tile_cols)):
            index = i * across + j
            if not page.databytecounts[index]:
                continue  # a tile not in the file: zeros
            handle.seek(page.dataoffsets[index])
            data = handle.read(page.databytecounts[index])
            tile = page.decode(data, index, **options)[0].reshape(page.chunks)
            y0, y1 = max(top, i * tile_rows), min(bottom, (i + 1) * tile_rows)
            x0, x1 = max(left, j * tile_cols), min(right, (j + 1) * tile_cols)
            out[y0 - top : y1 - top, x0 - left : x1 - left] = tile[
                y0 - i * tile_rows : y1 - i * tile_rows, x0 - j * tile_cols : x1 - j * tile_cols
            ]
    return out[(slice(None), slice(None), *region[2:])]


def _describe(region: Any) -> str:
    parts = [f"{s.start}:{s.stop}" for s in region if isinstance(s, slice)]
    return "[" + ", ".join(parts[:2]) + "]"


def open_zarr_array(path: str) -> Any:
    """The Zarr array at ``path``, opened for reading (its metadata only)."""
    import zarr

    try:
        return zarr.open_array(zarr_store(path), mode="r")
    except Exception as exc:
        raise InputError(path, f"not a readable Zarr array: {exc}") from None
