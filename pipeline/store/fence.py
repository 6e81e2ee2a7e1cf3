"""A job's right to write its store, checked right before every write (fencing).

A lease (:mod:`pipeline.store.lease`) says which job may write a store, but a job cannot know
that it still holds it at the moment a write lands: its client may have been stopped past the
lease's expiry (a frozen VM, SIGSTOP, a swap storm) while another job took the store over, and
its workers may be anywhere in a task. So every write of a job's client and of its tasks is
checked by the lease's :class:`~pipeline.store.lease.Fence` right before it happens: the job's
store is a :class:`~pipeline.store.location.Location` made with ``Location.fenced``, whose
zarr store is a :class:`FencedStore` and whose other writes call ``Location.guard``. A check
passes only while the lease file names the job's run and epoch and will not expire within the
fence's margin (a third of the lease's lifetime).

A process reads the lease file again at most every ``RECHECK_SECONDS`` (2 s), by both the wall
clock and the monotonic clock, and never past ``expires - margin``: a process that was stopped
reads it again before its next write, and finds out. A job taking over a lease that has not
expired waits ``RECHECK_SECONDS`` before it writes; one taking over an expired lease finds every
check of the old job failing since ``margin`` seconds before. What is left is a write that
passed its check and then stalled, between the check and the moment it lands, for longer than
that: a process stopped in the microseconds between the check and the system call (a rename, a
link, a delete) on a local disk, or an object store request held in flight. Chunks of labels and
palettes are written only where none exists (a hard link locally, ``If-None-Match: *`` on S3),
so even such a write cannot replace a chunk of the job that took over: it fails, or the taker's
own write of that chunk fails (:class:`Interfered`) and its image is written again, never kept.
docs/store-format.md ("Fencing") says what remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from zarr.abc.store import Store
from zarr.core.buffer import Buffer
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from pipeline.errors import PipelineError
from pipeline.paths import protocols


class Fenced(PipelineError):
    """The job no longer holds the store's lease: it must not write the store."""


class Interfered(PipelineError):
    """A chunk this job was to write exists already: a job that lost the store wrote it."""


def is_chunk(key: str) -> bool:
    """Whether the store key ``key`` is an array's chunk (``.../c/...``), written only once."""
    return key.startswith("c/") or "/c/" in key


class Check(Protocol):
    """What a fenced store asks before each write (:class:`pipeline.store.lease.Fence`)."""

    def check(self) -> None:
        """Return if the write may happen; raise :class:`Fenced` if not."""


class FencedStore(WrapperStore[Store]):
    """A zarr store that checks its fence before each write, and writes chunks only once.

    A chunk is written only where none exists: locally by linking a fully written file into
    place, on S3 with ``If-None-Match: *``; finding one raises :class:`Interfered`.
    """

    def __init__(self, store: Store, fence: Check) -> None:
        super().__init__(store)
        self.fence = fence

    def _with_store(self, store: Store) -> FencedStore:
        return type(self)(store, self.fence)

    async def getsize(self, key: str) -> int:
        """The size of ``key``, as the wrapped store tells it (S3: one request, not a read)."""
        return await self._store.getsize(key)

    async def getsize_prefix(self, prefix: str) -> int:
        """The size of everything under ``prefix``, as the wrapped store tells it."""
        return await self._store.getsize_prefix(prefix)

    @property
    def local(self) -> bool:
        """Whether the wrapped store is a local folder (chunks: :meth:`create_chunk`)."""
        return isinstance(self._store, LocalStore)

    def create_chunk(self, key: str, data: Any) -> None:
        """Write chunk ``key`` of a local store here, in the calling thread, as :meth:`set` does.

        The fence is checked first and again right before the chunk appears
        (:func:`create_file`).
        """
        assert isinstance(self._store, LocalStore)
        self.fence.check()
        create_file(os.path.join(self._store.root, key), data, self.fence)

    async def set(self, key: str, value: Buffer) -> None:
        """Write ``value`` at ``key`` if the fence allows it; a chunk only where none exists."""
        self.fence.check()
        if not is_chunk(key):
            await self._store.set(key, value)
        elif self.local:
            await asyncio.to_thread(self.create_chunk, key, value.as_buffer_like())
        elif isinstance(self._store, FsspecStore) and "s3" in protocols(self._store.fs):
            await _create_object(self._store, key, value.to_bytes())
        else:
            await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Write ``value`` at ``key`` unless it exists, if the fence allows it."""
        self.fence.check()
        await self._store.set_if_not_exists(key, value)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        await asyncio.gather(*(self.set(key, value) for key, value in values))

    async def delete(self, key: str) -> None:
        """Delete ``key`` if the fence allows it."""
        self.fence.check()
        await self._store.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        """Delete everything under ``prefix`` if the fence allows it."""
        self.fence.check()
        await self._store.delete_dir(prefix)


def create_file(path: str, data: Any, fence: Check | None) -> None:
    """Write a new file at ``path`` whole; if one exists, it must hold the same bytes.

    The same bytes are a task run again (its worker died): labelling is deterministic.
    Other bytes raise :class:`Interfered`.
    """
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    staged = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.partial")
    try:
        with open(staged, "xb") as file:
            file.write(data)
        if fence is not None:
            fence.check()  # last, right before the chunk appears
        os.link(staged, path)
    except FileExistsError:
        with open(path, "rb") as file:
            _same(path, file.read(), bytes(data))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)


async def _create_object(store: FsspecStore, key: str, data: bytes) -> None:
    """Put a new object for ``key``; if one exists, it must hold the same bytes."""
    path = f"{store.path.rstrip('/')}/{key}"
    try:
        await store.fs._pipe_file(path, data, mode="create")
    except FileExistsError:
        _same(path, await store.fs._cat_file(path), data)


def create_objects(fs: Any, files: dict[str, bytes]) -> None:
    """Put new objects ``files`` (path -> bytes) on ``fs`` at once, each only where none exists.

    On S3 with ``If-None-Match: *`` (one concurrent batch); an object found there must hold the
    same bytes (else :class:`Interfered`). Other object stores have no conditional put: a plain
    put.
    """
    if "s3" not in protocols(fs):
        fs.pipe(files)
        return
    try:
        fs.pipe(files, mode="create")
    except FileExistsError:  # which one is not said: each again, alone
        for path, data in files.items():
            try:
                fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                _same(path, fs.cat_file(path), data)


def _same(path: str, found: bytes, written: bytes) -> None:
    """Raise :class:`Interfered` unless the chunk found at ``path`` is the one to write."""
    if found != written:
        raise Interfered(f"chunk {path} was written by another job meanwhile")
