"""The Python API: compress files or arrays into a store, open it, rebuild images lazily."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from pipeline.config import Settings
from pipeline.job import ImageResult, compress_sources, failed_inputs
from pipeline.paths import location
from pipeline.sources import from_array, open_inputs
from pipeline.store import StoredImage, image_names, open_root, read_image


def compress(
    inputs: Sequence[str] | str,
    store: str,
    *,
    overwrite: bool = False,
    client: Any = None,
    on_result: Callable[[ImageResult], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> list[ImageResult]:
    """Compress image files (paths, folders or glob patterns) into a Zarr store.

    Parameters
    ----------
    inputs : str or sequence of str
        Files, folders (their image files) or glob patterns.
    store : str
        Output store directory (created if needed).
    overwrite : bool
        Recompute images already complete in the store (default: skip them if stored with the
        same settings, fail them if stored with other settings).
    client : distributed.Client, optional
        Run every image concurrently on this cluster; default: one after another on dask's
        current scheduler.
    on_result : callable, optional
        Called with each :class:`ImageResult` as soon as it is known.
    on_start : callable, optional
        Called once the inputs are opened, with the number of results to come and the pixels
        of the images that could be opened (e.g. to report progress).
    **settings
        Overrides of :class:`pipeline.config.Settings` (``colors``, ``sample``, ``seed``,
        ``chunk``, ...).

    Returns
    -------
    list of ImageResult
        Inputs that could not be opened first, then one per opened image in input order.
    """
    config = Settings.from_config(**settings)
    store = location(store)
    paths = [inputs] if isinstance(inputs, str) else inputs
    sources, errors = open_inputs(paths, config.chunk, config.max_pixels, exclude=store)
    bad = failed_inputs(errors)
    if on_start is not None:
        on_start(len(bad) + len(sources), sum(s.image.shape[0] * s.image.shape[1] for s in sources))
    for result in bad:
        if on_result is not None:
            on_result(result)
    return bad + compress_sources(
        sources, store, config, overwrite=overwrite, client=client, on_result=on_result
    )


def compress_array(
    array: NDArray[np.generic] | da.Array,
    store: str,
    name: str,
    *,
    overwrite: bool = False,
    client: Any = None,
    **settings: Any,
) -> ImageResult:
    """Compress one in-memory numpy or dask image into group ``name`` of ``store``.

    Accepts the same shapes and pixel types as files (see :mod:`pipeline.sources`). Other
    parameters are as for :func:`compress`.
    """
    config = Settings.from_config(**settings)
    source = from_array(array, name, config.chunk)
    return compress_sources([source], location(store), config, overwrite=overwrite, client=client)[
        0
    ]


def open_store(store: str) -> dict[str, StoredImage]:
    """The complete images of a store by name (incomplete ones are left out)."""
    root = open_root(store)
    return {
        name: read_image(root, name)
        for name in image_names(root)
        if root[name].attrs.get("status") == "complete"
    }
