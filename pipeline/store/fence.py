"""A job's right to write its store, checked right before every write (fencing).

A lease (:mod:`pipeline.store.lease`) says which job may write a store, but a job cannot know
that it still holds it at the moment a write lands: its client may have been stopped past the
lease's expiry (a frozen VM, SIGSTOP, a swap storm) while another job took the store over, and
its workers may be anywhere in a task. So every write of a job's client and of its tasks goes
through a :class:`Fence` (a store's :class:`~pipeline.store.location.Location` made with
:meth:`Location.fenced <pipeline.store.location.Location.fenced>`), which lets it happen only
while the lease file names the job's run and epoch and will not expire within ``margin``
seconds (a third of the lease's lifetime).

A process reads the lease file again at most every
:data:`~pipeline.store.lease.RECHECK_SECONDS` seconds, by both the wall clock and the monotonic
clock, and never past ``expires - margin``: a process that was stopped reads it again before
its next write, and finds out. A job taking over a lease that has not expired waits
``RECHECK_SECONDS`` before it writes; one taking over an expired lease finds every grant of
the old job run out ``margin`` seconds ago. What is left is a write that passed its check and
then stalled for longer than that, between the check and the moment it lands: the few
microseconds between :meth:`Fence.check` and the system call (a rename, a link, a delete) on a
local disk, or the time an object store request is in flight. Chunks of labels and palettes are
written only where none exists (a hard link locally, ``If-None-Match: *`` on S3), so even such a
write cannot replace a chunk of the job that took over: the write fails, or the taker's own
write of that chunk fails (:class:`Interfered`) and its image is redone, never kept.
docs/store-format.md ("Fencing") says what remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zarr.abc.store import Store
from zarr.core.buffer import Buffer
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from pipeline.errors import PipelineError

_lock = threading.Lock()
#: (store URL, run, epoch) -> (wall-clock time, monotonic time) until which writes may go ahead.
_grants: dict[tuple[str, str, int], tuple[float, float]] = {}
#: Runs known to have lost a store: they never write it again.
_deposed: dict[tuple[str, str, int], str] = {}


class Fenced(PipelineError):
    """The job no longer holds the store's lease: it must not write the store."""


class Interfered(PipelineError):
    """A chunk this job was to write exists already: a job that lost the store wrote it."""


@dataclass(frozen=True)
class Fence:
    """The right of run ``run`` (lease epoch ``epoch``) to write the store at ``url``.

    Attributes
    ----------
    url : str
        The store, as the job names it.
    run : str
        The run id the lease must name.
    epoch : int
        The lease's fencing token it must hold.
    margin : float
        Seconds before the lease expires from which nothing more is written.
    """

    url: str
    run: str
    epoch: int
    margin: float

    def check(self) -> None:
        """Return if the job may write now; raise :class:`Fenced` if not.

        Reads the lease file when this process's last reading is older than
        :data:`~pipeline.store.lease.RECHECK_SECONDS` or too close to its expiry.

        Raises
        ------
        Fenced
            The lease names another run or epoch, is gone, or expires within ``margin``.
        OSError
            The lease file could not be read (nothing is written then either).
        """
        key = (self.url, self.run, self.epoch)
        with _lock:
            if key in _deposed:
                raise Fenced(_deposed[key])
            until = _grants.get(key)
            if until is not None and time.time() < until[0] and time.monotonic() < until[1]:
                return
        self._read_lease(key)

    def _read_lease(self, key: tuple[str, str, int]) -> None:
        from pipeline.store.lease import RECHECK_SECONDS, holder
        from pipeline.store.location import Location

        found = holder(Location.at(self.url))
        now, clock = time.time(), time.monotonic()
        if found is None or (found.run, found.epoch) != (self.run, self.epoch):
            who = "its lease is gone" if found is None else f"run {found.run} holds it now"
            reason = f"{self.url}: this job no longer holds the store ({who}); nothing more written"
            with _lock:
                _deposed[key] = reason
            raise Fenced(reason)
        left = found.expires - self.margin - now
        if left <= 0:
            raise Fenced(
                f"{self.url}: the store's lease was not renewed in time (this job was stopped or"
                " starved); nothing more written"
            )
        trust = min(left, RECHECK_SECONDS)
        with _lock:
            _grants[key] = (now + trust, clock + trust)


def is_chunk(key: str) -> bool:
    """Whether the store key ``key`` is an array's chunk (``.../c/...``), written only once."""
    return key.startswith("c/") or "/c/" in key


class FencedStore(WrapperStore[Store]):
    """A zarr store that checks its fence before each write, and writes chunks only once.

    A chunk is written only where none exists: locally by linking a fully written file into
    place, on S3 with ``If-None-Match: *``; finding one raises :class:`Interfered`.
    """

    def __init__(self, store: Store, fence: Fence) -> None:
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

    async def set(self, key: str, value: Buffer) -> None:
        """Write ``value`` at ``key`` if the fence allows it; a chunk only where none exists."""
        self.fence.check()
        if not is_chunk(key):
            await self._store.set(key, value)
        elif isinstance(self._store, LocalStore):
            path = os.path.join(self._store.root, key)
            await asyncio.to_thread(_create_file, path, value.as_buffer_like(), self.fence)
        elif isinstance(self._store, FsspecStore) and "s3" in _protocols(self._store.fs):
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


def _protocols(fs: Any) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _create_file(path: str, data: Any, fence: Fence) -> None:
    """Write a new file at ``path`` whole, or raise :class:`Interfered` if one exists."""
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    staged = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.partial")
    try:
        with open(staged, "xb") as file:
            file.write(data)
        fence.check()  # last, right before the chunk appears
        os.link(staged, path)
    except FileExistsError:
        raise Interfered(f"chunk {path} was written by another job meanwhile") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)


async def _create_object(store: FsspecStore, key: str, data: bytes) -> None:
    """Put a new object for ``key``, or raise :class:`Interfered` if one exists."""
    path = f"{store.path.rstrip('/')}/{key}"
    try:
        await store.fs._pipe_file(path, data, mode="create")
    except FileExistsError:
        raise Interfered(f"chunk {path} was written by another job meanwhile") from None
