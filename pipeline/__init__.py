"""Compress images by k-means colour quantization as a Dask job, into Zarr v3 stores."""

from pipeline.api import DamagedImageWarning, compress, compress_array, open_store
from pipeline.config import Settings
from pipeline.fit import Fit, fit_palette
from pipeline.outputs import write_images
from pipeline.reconstruct import reconstruct
from pipeline.results import ImageResult
from pipeline.store import FORMAT_VERSION, StoredImage
from pipeline.verify import verify_store

__version__ = "0.1.0"

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
