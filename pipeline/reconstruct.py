"""Rebuild images from a store: ``palette[labels]``, lazily and chunk by chunk."""

from __future__ import annotations

import os
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


def write_images(
    store: str, out_dir: str, names: list[str] | None = None, extension: str = ".png"
) -> dict[str, str]:
    """Write rebuilt images of ``store`` into ``out_dir`` with imageio (format from ``extension``).

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
        pixels = rebuild(read_image(root, name)).compute()
        target = os.path.join(out_dir, file_name)
        iio.imwrite(target, pixels, extension=extension)
        written[name] = target
    return written
