"""Local paths and fsspec URLs (``s3://``, ``gs://``, ``file://``, ...) for inputs and stores.

Workers on different machines share no disk, so a cluster job reads its inputs and writes its
store through URLs that every process can open, with fsspec (the filesystem layer dask and zarr
use). Credentials come the usual way for each filesystem (for S3: ``AWS_*`` environment
variables, ``~/.aws``, instance roles; ``AWS_ENDPOINT_URL`` for S3-compatible servers) and never
appear in paths, messages or the store.
"""

from __future__ import annotations

import os
from typing import Any


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL with a protocol, rather than a local path."""
    return "://" in path


def location(path: str) -> str:
    """``path`` as every process of a job must see it: a URL as it is, a local path absolute.

    Workers of a cluster run in other folders (or on other machines), so a relative path would
    name something else there.
    """
    return path if is_url(path) else os.path.abspath(path)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it."""
    from fsspec.core import url_to_fs

    return url_to_fs(url)


def join(url: str, name: str) -> str:
    """``url`` with ``name`` appended as one more path component."""
    return url.rstrip("/") + "/" + name


def read_bytes(path: str, length: int | None = None) -> bytes:
    """The content of a local file or URL (only its first ``length`` bytes, if given)."""
    if not is_url(path):
        with open(path, "rb") as file:
            return file.read() if length is None else file.read(length)
    fs, inner = filesystem(path)
    with fs.open(inner, "rb") as file:
        return file.read() if length is None else file.read(length)
