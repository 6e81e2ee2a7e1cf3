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
        """Decode the tiles under ``region``."""
        import tifffile
        import zarr

        try:
            with tifffile.imread(self.path, aszarr=True, key=self.page) as store:
                return np.asarray(zarr.open_array(store, mode="r")[region])
        except Exception as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(self.path, f"cannot read tiles {_describe(region)}: {text}") from None


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
