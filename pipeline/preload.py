"""Worker preload: get, once when a worker starts, the fixed costs of the job's first task.

Importing scikit-learn and dask-ml takes 2-3 s (imageio another 0.1 s), and dask-ml's k-means
kernels are compiled by numba on their first call (about 1 s more); without this, the first
image each worker reads and fits pays for all of it. Local clusters started by
:func:`pipeline.cluster.connect` preload this module; start workers of other clusters with
``dask worker --preload pipeline.preload`` (or the ``distributed.worker.preload`` setting) to
the same effect.
"""

import imagecodecs  # noqa: F401  (decodes JPEG)
import imageio.v3  # noqa: F401  (decodes the other formats)
import numpy as np

import pipeline.job  # noqa: F401  (zarr, dask, the task functions)
from pipeline.colours import histogram
from pipeline.fit import fit_palette


def warm_up() -> None:
    """Fit a palette to a tiny synthetic image: imports every library and compiles the kernels."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(64, 3), dtype=np.uint8)
    keys, counts = histogram(pixels)
    fit_palette(pixels, keys, counts, 4, random_state=0)


warm_up()
