"""Compress images by k-means colour quantization as a Dask job, into Zarr v3 stores.

The public names below are imported on first use (PEP 562), so that ``python -m pipeline
--help`` or a usage error answers without importing dask.array, zarr and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.api import (
        DamagedImageWarning,
        compress,
        compress_array,
        open_store,
        reconstruct,
        verify_store,
        write_images,
    )
    from pipeline.inputs.discover import sample_images
    from pipeline.quantize.fit import Fit, fit_palette
    from pipeline.results import ImageResult
    from pipeline.settings import Settings
    from pipeline.store.write import FORMAT_VERSION, StoredImage

__version__ = "0.1.0"

#: Where each public name lives.
_HOMES = {
    "FORMAT_VERSION": "pipeline.store.write",
    "DamagedImageWarning": "pipeline.api",
    "Fit": "pipeline.quantize.fit",
    "ImageResult": "pipeline.results",
    "Settings": "pipeline.settings",
    "StoredImage": "pipeline.store.write",
    "compress": "pipeline.api",
    "compress_array": "pipeline.api",
    "fit_palette": "pipeline.quantize.fit",
    "open_store": "pipeline.api",
    "reconstruct": "pipeline.api",
    "sample_images": "pipeline.inputs.discover",
    "verify_store": "pipeline.api",
    "write_images": "pipeline.api",
}

__all__ = [
    "FORMAT_VERSION",
    "DamagedImageWarning",
    "Fit",
    "ImageResult",
    "Settings",
    "StoredImage",
    "__version__",
    "compress",
    "compress_array",
    "fit_palette",
    "open_store",
    "reconstruct",
    "sample_images",
    "verify_store",
    "write_images",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
