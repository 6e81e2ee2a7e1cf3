"""Inputs read chunk by chunk: tiled TIFF (through tifffile's Zarr interface) and Zarr arrays.

These are the only inputs larger than memory can come through: every task reads just the tiles
of its own chunk, so no task holds more than a chunk. Work chunks are rounded to whole tiles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from pipeline.errors import InputError
from pipeline.paths import join, read_bytes


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


def is_tiled_tiff(path: str) -> bool:
    """Whether ``path`` is a TIFF file whose first image is stored in tiles."""
    if not path.lower().endswith((".tif", ".tiff")):
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.pages[0].is_tiled)
    except Exception:
        return False


def aligned(chunk: int, tile: int) -> int:
    """``chunk`` rounded down to whole tiles (at least one tile)."""
    return max(tile, chunk // tile * tile)


@dataclass(frozen=True)
class TiffTiles:
    """Array-like view of a tiled TIFF's first image; each read opens the file on its own.

    Only the path travels to workers; a read of a region decodes just the tiles it touches.
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def __getitem__(self, region: Any) -> NDArray[Any]:
        """Decode the tiles under ``region``."""
        import tifffile
        import zarr

        try:
            with tifffile.imread(self.path, aszarr=True, key=0) as store:
                return np.asarray(zarr.open_array(store, mode="r")[region])
        except Exception as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(self.path, f"cannot read tiles {_describe(region)}: {text}") from None


def _describe(region: Any) -> str:
    parts = [f"{s.start}:{s.stop}" for s in region if isinstance(s, slice)]
    return "[" + ", ".join(parts[:2]) + "]"


def open_tiff(path: str, chunk: int) -> da.Array:
    """Lazy dask array of a tiled TIFF's first image, chunked in whole tiles near ``chunk``."""
    import tifffile

    from pipeline.sources import file_token

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        shape = tuple(int(s) for s in page.shape)
        dtype = np.dtype(page.dtype)
        tile = (int(page.tilelength), int(page.tilewidth))
    chunks = (aligned(chunk, tile[0]), aligned(chunk, tile[1]), *shape[2:])
    name = "tiff-" + file_token(path, chunks)
    return da.from_array(
        TiffTiles(path, shape, dtype), chunks=chunks, name=name, asarray=False, fancy=False
    )


def open_zarr(path: str, chunk: int) -> da.Array:
    """Lazy dask array of a Zarr array, chunked in whole Zarr chunks near ``chunk``."""
    import zarr

    try:
        array = zarr.open_array(path, mode="r")
    except Exception as exc:
        raise InputError(path, f"not a readable Zarr array: {exc}") from None
    tile = array.chunks
    chunks = tuple(aligned(chunk, t) if i < 2 else -1 for i, t in enumerate(tile))
    return da.from_zarr(array, chunks=chunks)
