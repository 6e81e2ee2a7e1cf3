"""Local paths and fsspec URLs (``s3://``, ``gs://``, ``file://``, ...) for inputs and stores.

Workers on different machines share no disk, so a cluster job reads its inputs and writes its
store through URLs that every process can open, with fsspec (the filesystem layer dask and zarr
use). Credentials come the usual way for each filesystem (for S3: ``AWS_*`` environment
variables, ``~/.aws``, instance roles; ``AWS_ENDPOINT_URL`` for S3-compatible servers) and never
appear in paths, messages or the store.

Every local file and folder the package creates follows the process umask (group-readable with
the usual 022 or 002), so that a store on a shared cluster file system can be read by the group:
:func:`create_unique` is the way to make a uniquely named one (not :mod:`tempfile`'s, which are
private to their owner).
"""

from __future__ import annotations

import errno
import os
from typing import Any


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL with a protocol, rather than a local path."""
    return "://" in path


def protocols(fs: Any) -> tuple[str, ...]:
    """The protocols an fsspec filesystem answers to (``("s3", "s3a")`` for s3fs)."""
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def create_unique(parent: str, prefix: str, suffix: str = "", *, folder: bool = False) -> str:
    """Create a new empty file (or folder) with a unique name in ``parent``; return its path.

    Like :func:`tempfile.mkstemp` (:func:`tempfile.mkdtemp`), but with the permissions of any
    other file (folder): ``0o666 & ~umask`` (``0o777 & ~umask``), not private to the owner.

    Parameters
    ----------
    parent : str
        An existing local folder.
    prefix, suffix : str
        The name is ``prefix``, 8 random hex digits, then ``suffix``.
    folder : bool
        Create a folder rather than a file.

    Returns
    -------
    str
        The path created: ``parent`` joined with the new name.

    Raises
    ------
    OSError
        If it cannot be created (other than for a name taken already: another is tried).
    """
    while True:
        path = os.path.join(parent, f"{prefix}{os.urandom(4).hex()}{suffix}")
        try:
            if folder:
                os.mkdir(path, 0o777)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path


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


def zarr_store(path: str) -> Any:
    """What zarr should open for ``path``: a local path as it is, a URL as an fsspec store.

    On S3 the store reads each object in one request: s3fs otherwise asks for an object's size
    (a HEAD) before every whole read, to decide whether to read it in concurrent parts, which
    for Zarr chunks and metadata documents never pays.
    """
    if not is_url(path):
        return path
    from zarr.storage import FsspecStore

    options = {"max_concurrency": 1} if path.startswith(("s3://", "s3a://")) else {}
    return FsspecStore.from_url(path, storage_options=options)


def join(url: str, name: str) -> str:
    """``url`` with ``name`` appended as one more path component."""
    return url.rstrip("/") + "/" + name


def read_bytes(path: str, length: int | None = None) -> bytes:
    """The content of a local file or URL (only its first ``length`` bytes, if given)."""
    if not is_url(path):
        with open(path, "rb") as file:
            if length is None:
                return file.read()
            # a read of ``length`` bytes allocates them all first, however small the file
            return file.read(min(length, os.fstat(file.fileno()).st_size + 1))
    return read_object(*filesystem(path), length)


def read_object(fs: Any, inner: str, length: int | None = None) -> bytes:
    """An object's bytes (its first ``length``) in one request: a range read from 0.

    A plain whole read costs s3fs a size lookup (a HEAD) first, to decide whether to read in
    concurrent parts.
    """
    try:
        data: bytes = fs.cat_file(inner, start=0, end=length)
    except OSError as exc:
        # S3 answers a range read of an empty object with 416 (s3fs: EINVAL): read it whole.
        if exc.errno != errno.EINVAL:
            raise
        data = fs.cat_file(inner)
    return data
