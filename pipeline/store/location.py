"""Where a store is: its URL, filesystem and root, made once at the edge and passed down.

A store is named once, by the user, as a local path or an fsspec URL (``s3://...``); the
command line or the Python API turns that name into a :class:`Location` (:meth:`Location.at`),
and everything below takes the value: no module under :mod:`pipeline.api` and
:mod:`pipeline.cli` parses a store's path again. A location sent to a worker travels as its
URL and is made again there, once per task, from that URL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pipeline.paths import filesystem, is_url, location, read_bytes, read_object, zarr_store

if TYPE_CHECKING:
    from pipeline.store.lease import Fence


@dataclass(frozen=True)
class Location:
    """A store's place: what messages name it, and how to reach it.

    Attributes
    ----------
    url : str
        The store as given: a local path or an fsspec URL. Messages name the store by it; a
        job gives its workers an absolute path (:func:`pipeline.paths.location`), since they
        run in other folders.
    root : str
        The store's root within :attr:`fs` (an absolute path for a local store).
    fence : Fence or None
        For a job's writes: checked right before each (:meth:`guard`, and every write zarr
        makes through :attr:`zarr`); see :mod:`pipeline.store.fence`.
    """

    url: str
    root: str = field(compare=False, repr=False)
    fence: Fence | None = field(default=None, compare=False, repr=False)

    @classmethod
    def at(cls, url: str) -> Location:
        """The location of the store at ``url`` (a local path or an fsspec URL)."""
        if not is_url(url):
            return cls(url, os.path.abspath(url))
        fs, root = filesystem(url)
        found = cls(url, root.rstrip("/"))
        found.__dict__["fs"] = fs  # the filesystem the root was found with (see fs)
        return found

    @cached_property
    def fs(self) -> Any:
        """The fsspec filesystem holding the store (made when first used for a local store)."""
        if self.local:
            from fsspec.implementations.local import LocalFileSystem

            return LocalFileSystem()
        return filesystem(self.url)[0]

    @property
    def local(self) -> bool:
        """Whether the store is a folder of this machine's (or a shared POSIX) filesystem."""
        return not is_url(self.url)

    def path(self, *names: str) -> str:
        """The path within :attr:`fs` of node ``names`` of the store (its root without any)."""
        return "/".join((self.root, *names))

    @cached_property
    def zarr(self) -> Any:
        """What zarr opens for this store (see :func:`pipeline.paths.zarr_store`).

        For a fenced location, a store whose every write checks the fence first.
        """
        if self.fence is None:
            return zarr_store(self.url)
        from zarr.storage import LocalStore

        from pipeline.store.fence import FencedStore

        inner = LocalStore(self.root) if self.local else zarr_store(self.url)
        return FencedStore(inner, self.fence)

    def fenced(self, fence: Fence) -> Location:
        """The same store, for writes that only ``fence`` lets happen."""
        return replace(self, fence=fence)  # the fence holds this location, unfenced

    def guard(self) -> None:
        """Check the fence (if any) right before writing: raises :class:`~.fence.Fenced`."""
        if self.fence is not None:
            self.fence.check()

    def read(self, *names: str, length: int | None = None) -> bytes:
        """The bytes of file ``names`` of the store (its first ``length``), in one request."""
        path = self.path(*names)
        return read_bytes(path, length) if self.local else read_object(self.fs, path, length)

    def read_each(self, files: Sequence[tuple[str, ...]], length: int) -> list[bytes | Exception]:
        """The first ``length`` bytes of each file of ``files`` (its names), or the error met.

        On object storage, all in one batch of concurrent range requests (fsspec's
        ``cat_ranges``); locally, one file after another.
        """
        paths = [self.path(*names) for names in files]
        if not self.local:
            found: list[bytes | Exception] = self.fs.cat_ranges(
                paths, [0] * len(paths), [length] * len(paths), on_error="return"
            )
            return found
        return [_read_or_error(path, length) for path in paths]

    def __str__(self) -> str:
        return self.url

    def __reduce__(self) -> tuple[Any, ...]:
        if self.fence is not None:
            return (_fenced_at, (self.url, self.fence))
        return (Location.at, (self.url,))

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("pipeline.store.location", self.url)


def _read_or_error(path: str, length: int) -> bytes | Exception:
    """The first ``length`` bytes of local file ``path``, or the error met reading it."""
    try:
        return read_bytes(path, length)
    except OSError as exc:
        return exc


def job_location(store: str | Location) -> Location:
    """The location of a job's store, as every process of the job must see it.

    A local path is made absolute (:func:`pipeline.paths.location`): workers run in other
    folders, or on other machines. For :mod:`pipeline.api` and :mod:`pipeline.cli` only.
    """
    return store if isinstance(store, Location) else Location.at(location(store))


def _fenced_at(url: str, fence: Fence) -> Location:
    """The location of the store at ``url``, fenced (how a fenced location travels)."""
    return Location.at(url).fenced(fence)
