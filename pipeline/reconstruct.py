"""Rebuild images from a store: ``palette[labels]``, lazily and chunk by chunk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from pipeline.store import StoredImage, image_names, open_root, read_image


def rebuild_block(labels: NDArray[np.integer], palette: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(h, w, 3) uint8 pixels of an (h, w) labels block."""
    return palette[labels]


def rebuild(image: StoredImage) -> da.Array:
    """Lazy (H, W, 3) uint8 rebuild of a stored image, chunked like its labels."""
    labels = da.from_zarr(image.labels)
    return labels.map_blocks(
        rebuild_block,
        image.palette,
        new_axis=2,
        chunks=(*labels.chunks, (3,)),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), dtype=np.uint8),
    )


def reconstruct(store: str, name: str) -> da.Array:
    """Lazy (H, W, 3) uint8 rebuild of image ``name`` of ``store``.

    Parameters
    ----------
    store : str
        Path of a store written by :func:`pipeline.compress`.
    name : str
        Image group name (see :func:`pipeline.open_store`).
    """
    return rebuild(read_image(open_root(store), name))


def output_names(names: list[str], extension: str) -> dict[str, str]:
    """File names for rebuilt images: the name's stem plus ``extension``, unless stems clash."""
    stems = [Path(n).stem for n in names]
    return {
        n: (s if stems.count(s) == 1 else n) + extension for n, s in zip(names, stems, strict=True)
    }


#: Extensions written chunk by chunk, for images too large to rebuild in one piece.
STREAMED_EXTENSIONS = (".tif", ".tiff", ".zarr")


def write_tiled_tiff(pixels: da.Array, target: str, tile: int = 256) -> None:
    """Write a lazy (H, W, 3) uint8 image as a tiled TIFF, one row of chunks at a time.

    Only one row of chunks (image width x chunk height) is in memory at once.
    """
    import tifffile

    tile = max(16, tile // 16 * 16)  # TIFF tiles are multiples of 16
    height, width = pixels.shape[:2]
    rows = pixels.rechunk({0: tile, 1: -1, 2: -1})

    def tiles() -> Iterator[NDArray[np.uint8]]:
        for block in rows.to_delayed().ravel():
            strip = block.compute()
            for x in range(0, width, tile):
                part = np.zeros((tile, tile, 3), dtype=np.uint8)
                piece = strip[:, x : x + tile]
                part[: piece.shape[0], : piece.shape[1]] = piece
                yield part

    tifffile.imwrite(
        target,
        tiles(),
        shape=(height, width, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        photometric="rgb",
        compression="zlib",
        bigtiff=height * width * 3 > 2**31,
    )


def write_images(
    store: str, out_dir: str, names: list[str] | None = None, extension: str = ".png"
) -> dict[str, str]:
    """Write rebuilt images of ``store`` into ``out_dir``, in the format ``extension`` names.

    ``.tif``/``.tiff`` write tiled TIFF and ``.zarr`` a Zarr array, chunk by chunk, so images of
    any size can be written; other formats (PNG, JPEG, WebP, ...; anything imageio writes) need
    the whole image in memory at once.

    Returns
    -------
    dict
        Image name -> file written.
    """
    import imageio.v3 as iio

    root = open_root(store)
    chosen = names or image_names(root)
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for name, file_name in output_names(chosen, extension).items():
        image = read_image(root, name)
        pixels = rebuild(image)
        target = os.path.join(out_dir, file_name)
        if extension == ".zarr":
            pixels.to_zarr(target, overwrite=True)
        elif extension in STREAMED_EXTENSIONS:
            write_tiled_tiff(pixels, target, tile=min(image.labels.chunks))
        else:
            iio.imwrite(target, pixels.compute(), extension=extension)
        written[name] = target
    return written
