"""Compress images by k-means colour quantization as a Dask job, into Zarr v3 stores.

The public names below are imported on first use (PEP 562), so that ``python -m pipeline
--help`` or a usage error answers without importing dask.array, zarr and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.api import DamagedImageWarning, compress, compress_array, open_store
    from pipeline.config import Settings
    from pipeline.fit import Fit, fit_palette
    from pipeline.outputs import write_images
    from pipeline.rebuild import reconstruct
    from pipeline.results import ImageResult
    from pipeline.store import FORMAT_VERSION, StoredImage
    from pipeline.verify import verify_store

__version__ = "0.1.0"

#: Where each public name lives.
_HOMES = {
    "FORMAT_VERSION": "pipeline.store",
    "DamagedImageWarning": "pipeline.api",
    "Fit": "pipeline.fit",
    "ImageResult": "pipeline.results",
    "Settings": "pipeline.config",
    "StoredImage": "pipeline.store",
    "compress": "pipeline.api",
    "compress_array": "pipeline.api",
    "fit_palette": "pipeline.fit",
    "open_store": "pipeline.api",
    "reconstruct": "pipeline.rebuild",
    "verify_store": "pipeline.verify",
    "write_images": "pipeline.outputs",
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
