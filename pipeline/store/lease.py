"""One writer per store: a lease file beside the store that a job holds, renews and releases.

Two jobs writing one store at once would mix their chunks into each other's images, so a job
holds the store's lease (:func:`hold`) while it writes, and a second job on the same store is
refused with :class:`StoreBusy`, whose one-line message names the holder. The lease is the JSON
file next to the store named like it plus :data:`LEASE_SUFFIX` (``out.zarr.lease.json`` for
``out.zarr``). It is not inside the store because zarr-python warns about, and with warnings as
errors fails on, every entry of a group's folder that is not a Zarr node. It names its holder
(run id, host, pid, start time, its epoch: the fencing token) and when it expires; a daemon
thread renews it every ``ttl / 3`` seconds. Every write of the job is checked against it right
before it happens (:meth:`Lease.fence`, :mod:`pipeline.store.fence`), so a job whose lease
expired or was taken over writes nothing more, whichever of its processes was paused.

The lease sits beside the store, on the same filesystem: when it cannot be written for a reason
every later write would meet too (:func:`pipeline.errors.unwritable`: the disk is full,
read-only, ...), taking it fails and renewing it gives the store up (the job can no longer prove
it holds it), with :class:`~pipeline.errors.StoreUnwritable`. Releasing it is best effort.

A holder that died does not block the store forever. A lease is *stale*, and the next job takes
it over, at once when its holder ran in this pid namespace (this host or container) and its
process no longer exists (a rerun right after ``kill -9`` or ``scancel``), and, for a holder
elsewhere, once it expired (its holder stopped renewing it ``ttl`` seconds ago: stopped, evicted
or on a lost machine). A holder here whose process exists is never deposed, even stopped.
Expiry compares unix times of different hosts, so their clocks must agree to well within
``ttl``. A lease file that cannot be parsed counts as stale (this module never leaves one
half-written: its local writes are renames and links, and an object store's put replaces an
object whole).

Local stores (paths, ``file://`` URLs)
    Exact. A lease is created by hard-linking a fully written temporary file onto the lease path
    (``os.link`` fails if the lease exists, like ``O_CREAT | O_EXCL``, and readers never see a
    half-written lease); it is renewed by ``os.replace`` of a temporary file after re-reading that
    it is still ours. A stale lease is taken over by renaming it aside, checking that what was
    moved is the stale lease judged (if another taker replaced it meanwhile, the moved lease is
    linked back, unless an even newer one exists, and the judgement starts over), and creating
    ours. Racing jobs end with exactly one holder; in a three-way race over a stale lease a job
    may see itself hold the lease until its next renewal finds it lost (fencing covers it).
URL stores (fsspec)
    Best effort, through the filesystem's own operations. A lease is created with
    ``pipe_file(mode="create")``, which is exclusive where the filesystem can do it (S3 through
    s3fs: ``If-None-Match: *``, honoured by AWS and moto) and otherwise checks for an existing file
    first; ours is then read back to confirm it names our run. On S3, taking over is conditional
    on the ETag read (``If-Match``) and renewing on the ETag of our own last write, so both fail
    instead of overwriting a lease someone else wrote meanwhile, and a renewal is one request
    (elsewhere it reads the lease first). Remaining windows: on filesystems without conditional
    writes, two jobs that both find no lease (or the same stale one) and write within the same
    moment can both read their own lease back, and the first learns it lost the store at its
    next renewal (``ttl / 3``); and :meth:`Lease.release` deletes after checking that the lease
    is ours, so a job that takes over in between (possible only once ours expired) loses its new
    lease.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.errors import PipelineError, StoreUnwritable, UsageError, os_reason, unwritable
from pipeline.paths import create_unique, protocols, read_object
from pipeline.store.fence import Fenced
from pipeline.store.location import Location

#: Added to the store's path to name its lease file: ``out.zarr.lease.json`` for ``out.zarr``.
LEASE_SUFFIX = ".lease.json"
#: How often acquiring starts over when the lease changes under it before giving up.
_ATTEMPTS = 10
#: Seconds a writer trusts a lease it read before reading it again (:mod:`pipeline.store.fence`);
#: a job taking over a lease that has not expired (its holder's process is gone) waits this
#: long before it writes, so that no process of the old holder still trusts the old lease.
RECHECK_SECONDS = 2.0


@dataclass(frozen=True)
class Holder:
    """What a lease file holds: who holds the store, until when, and how long a renewal lasts.

    ``epoch`` is the lease's fencing token: higher than that of every lease of the store before
    it (:func:`_next_epoch`), so that a writer can tell its own lease from the one that replaced
    it. ``space`` names the process namespace the holder's ``pid`` belongs to (the machine's
    boot id and the pid namespace), and ``born`` when that process started (clock ticks since
    boot): together they say whether the holder's process still exists (:func:`_alive`).
    """

    run: str
    host: str
    pid: int
    started: str
    expires: float
    ttl: float
    epoch: int = 0
    space: str = ""
    born: int = 0

    def describe(self) -> str:
        """The holder for a message: host, pid, run id and start time."""
        return f"host {self.host}, pid {self.pid}, run {self.run}, since {self.started}"


class StoreBusy(UsageError):
    """Another job holds the store's lease; the message names it."""

    def __init__(self, store: Location, holder: Holder) -> None:
        if _here(holder) and _state(holder.pid) == "T":
            advice = (
                "its process is stopped (SIGSTOP, Ctrl-Z): resume it with kill -CONT, or end it;"
                " a stopped job on this host is never taken over"
            )
        else:
            advice = (
                f"wait for it to finish, or stop it (the lease expires {holder.ttl:g} s after its"
                " holder stops renewing it)"
            )
        super().__init__(f"{store}: in use by another job ({holder.describe()}); {advice}")
        self.store = store.url
        self.holder = holder


@dataclass(frozen=True)
class _Version:
    """The bytes of a lease file, with the tag that conditional writes compare (S3's ETag)."""

    data: bytes
    tag: str | None = None


class _LeaseFile(Protocol):
    #: Whether writes are conditional (renew and take over a compare-and-swap on the tag of the
    #: version written last), so a renewal need not read the lease first.
    exclusive: bool

    def read(self, tag: bool = True) -> _Version | None: ...
    def create(self, data: bytes) -> _Version | None: ...
    def renew(self, current: _Version, data: bytes) -> _Version | None: ...
    def take_over(self, stale: _Version, data: bytes) -> _Version | None: ...
    def remove(self, current: _Version) -> None: ...


class _LocalFile:
    """The lease file of a store on a local (or shared, POSIX) filesystem."""

    exclusive = False

    def __init__(self, path: str) -> None:
        self.path = path
        self.folder, self.name = os.path.split(path)

    def read(self, tag: bool = True) -> _Version | None:
        try:
            with open(self.path, "rb") as file:
                return _Version(file.read())
        except FileNotFoundError:
            return None

    def create(self, data: bytes) -> _Version | None:
        os.makedirs(self.folder, exist_ok=True)
        written = self._write_aside(data)
        try:
            os.link(written, self.path)
        except FileExistsError:
            return None
        finally:
            os.unlink(written)
        return _Version(data)

    def renew(self, current: _Version, data: bytes) -> _Version | None:
        written = self._write_aside(data)
        try:
            os.replace(written, self.path)
        except OSError:
            os.unlink(written)
            raise
        return _Version(data)

    def take_over(self, stale: _Version, data: bytes) -> _Version | None:
        return self.create(data) if self._remove_if(stale) else None

    def remove(self, current: _Version) -> None:
        self._remove_if(current)

    def _write_aside(self, data: bytes) -> str:
        path = create_unique(self.folder, self.name + ".", ".tmp")  # mode as the umask says
        try:
            with open(path, "wb") as file:
                file.write(data)
        except BaseException:
            os.unlink(path)  # a full disk left it empty: one more beside the store per renewal
            raise
        return path

    def _remove_if(self, expected: _Version) -> bool:
        """Remove the lease if it still is ``expected``: rename it aside first, then look."""
        aside = f"{self.path}.{uuid.uuid4().hex}.aside"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            with open(aside, "rb") as file:
                if file.read() == expected.data:
                    return True
            # Another job replaced the lease since we read it: give its lease back. If an even
            # newer one exists already, that one wins and the job we moved learns it lost.
            with suppress(FileExistsError):
                os.link(aside, self.path)
            return False
        finally:
            os.unlink(aside)


class _RemoteFile:
    """The lease file of a store behind an fsspec URL (object storage)."""

    def __init__(self, fs: Any, path: str, conditional: bool) -> None:
        self.fs = fs
        self.path = path
        self.exclusive = conditional

    def read(self, tag: bool = True) -> _Version | None:
        try:
            etag = None
            if tag and self.exclusive:
                # The ETag is read before the bytes: if the lease changes in between, the tag is
                # the older one and a conditional write fails (safe) rather than overwriting.
                self.fs.invalidate_cache(self.path)
                etag = self.fs.info(self.path)["ETag"]
            return _Version(read_object(self.fs, self.path), etag)
        except FileNotFoundError:
            return None

    def create(self, data: bytes) -> _Version | None:
        self.fs.invalidate_cache(self.path)
        try:
            return self._written(data, self.fs.pipe_file(self.path, data, mode="create"))
        except FileExistsError:
            return None

    def renew(self, current: _Version, data: bytes) -> _Version | None:
        return self._swap(current, data)

    def take_over(self, stale: _Version, data: bytes) -> _Version | None:
        return self._swap(stale, data)

    def remove(self, current: _Version) -> None:
        self.fs.rm_file(self.path)

    def _written(self, data: bytes, response: Any) -> _Version:
        """The version just written, tagged with the ETag of s3fs's PutObject response."""
        etag = response.get("ETag") if self.exclusive and isinstance(response, dict) else None
        return _Version(data, etag)

    def _swap(self, current: _Version, data: bytes) -> _Version | None:
        if current.tag is None:
            return self._written(data, self.fs.pipe_file(self.path, data))
        try:
            return self._written(data, self.fs.pipe_file(self.path, data, IfMatch=current.tag))
        except FileNotFoundError:
            return None
        except OSError as exc:
            # s3fs reports a failed If-Match (412 PreconditionFailed) as EINVAL.
            if exc.errno == errno.EINVAL:
                return None
            raise


def _lease_file(store: Location) -> _LeaseFile:
    if store.local:
        return _LocalFile(store.root + LEASE_SUFFIX)
    fs, inner = store.fs, store.root
    answers = protocols(fs)
    if "file" in answers:
        return _LocalFile(inner.rstrip("/") + LEASE_SUFFIX)
    # Object stores (root marker "") have buckets at the top: no file can sit beside a bucket.
    if fs.root_marker == "" and "/" not in inner.strip("/"):
        raise UsageError(f"{store}: a store at the root of a bucket cannot be leased")
    # s3fs passes extra keywords on to PutObject, where S3 honours If-Match.
    return _RemoteFile(fs, inner.rstrip("/") + LEASE_SUFFIX, conditional="s3" in answers)


_grants_lock = threading.Lock()
#: (store URL, run, epoch) -> (wall-clock time, monotonic time) until which writes may go ahead.
_grants: dict[tuple[str, str, int], tuple[float, float]] = {}
#: Runs known to have lost a store: they never write it again.
_deposed: dict[tuple[str, str, int], str] = {}


@dataclass(frozen=True)
class Fence:
    """The right of run ``run`` (lease epoch ``epoch``) to write the store at ``url``.

    Attributes
    ----------
    store : Location
        The store (unfenced: where its lease is read).
    run : str
        The run id the lease must name.
    epoch : int
        The lease's fencing token it must hold.
    margin : float
        Seconds before the lease expires from which nothing more is written.
    """

    store: Location
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
        key = (self.store.url, self.run, self.epoch)
        with _grants_lock:
            if key in _deposed:
                raise Fenced(_deposed[key])
            until = _grants.get(key)
            if until is not None and time.time() < until[0] and time.monotonic() < until[1]:
                return
        self._read_lease(key)

    def _read_lease(self, key: tuple[str, str, int]) -> None:
        found = holder(self.store)
        now, clock = time.time(), time.monotonic()
        if found is None or (found.run, found.epoch) != (self.run, self.epoch):
            who = "its lease is gone" if found is None else f"run {found.run} holds it now"
            reason = (
                f"{self.store}: this job no longer holds the store ({who}); nothing more written"
            )
            with _grants_lock:
                _deposed[key] = reason
            raise Fenced(reason)
        left = found.expires - self.margin - now
        if left <= 0:
            raise Fenced(
                f"{self.store}: the store's lease was not renewed in time (this job was stopped or"
                " starved); nothing more written"
            )
        trust = min(left, RECHECK_SECONDS)
        with _grants_lock:
            _grants[key] = (now + trust, clock + trust)


def _encode(holder: Holder) -> bytes:
    return json.dumps(asdict(holder), sort_keys=True).encode()


def _parse(version: _Version | None) -> Holder | None:
    if version is None:
        return None
    try:
        fields = json.loads(version.data)
        return Holder(
            run=str(fields["run"]),
            host=str(fields["host"]),
            pid=int(fields["pid"]),
            started=str(fields["started"]),
            expires=float(fields["expires"]),
            ttl=float(fields["ttl"]),
            epoch=int(fields.get("epoch", 0)),
            space=str(fields.get("space", "")),
            born=int(fields.get("born", 0)),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _space() -> str:
    """The namespace of this process's pid: the machine's boot id and pid namespace, or "".

    Two processes see each other's pids only when this is the same for both: containers on one
    machine have pid namespaces of their own (and often the same host name).
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            boot = file.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None (no such process)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None


def _born(pid: int) -> int:
    """When process ``pid`` started, in clock ticks since boot (0 when unknown)."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else 0


def _state(pid: int) -> str:
    """The state letter of process ``pid`` (``T``: stopped), "" when unknown."""
    fields = _proc_stat(pid)
    return fields[0] if fields else ""


def _here(holder: Holder) -> bool:
    """Whether the holder's pid is one of this process's namespace (the same host, container)."""
    if holder.space and _SPACE:
        return holder.space == _SPACE
    return holder.host == socket.gethostname()  # where /proc is missing, or an older lease


def _alive(holder: Holder) -> bool:
    """Whether the process of a holder of this namespace still exists, stopped or not."""
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    # a pid reused by a process started since is not the holder
    return not holder.born or _born(holder.pid) in (0, holder.born)


def _stale(holder: Holder | None) -> bool:
    """Whether a lease may be taken over: unreadable, its holder here and gone, or expired.

    A holder of this namespace whose process exists is never deposed, even once its lease
    expired: it may only be stopped (SIGSTOP, a swap storm), and would write again when resumed.
    """
    if holder is None:
        return True
    if _here(holder):
        return not _alive(holder)
    return holder.expires < time.time()


class Lease:
    """A held lease on a store, renewed by a daemon thread until :meth:`release`."""

    def __init__(
        self, store: Location, file: _LeaseFile, holder: Holder, version: _Version
    ) -> None:
        self.store = store
        self.run = holder.run
        self.epoch = holder.epoch
        self._file = file
        self._holder = holder
        self._version = version
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._unwritable: str | None = None
        self._thread = threading.Thread(target=self._keep, name=f"lease {store}", daemon=True)
        self._thread.start()

    def lost(self) -> bool:
        """Whether renewal gave the store up: the lease taken over, unreadable or expired.

        Also when renewal could not write the lease (:meth:`unwritable`), and as soon as the
        lease expired unrenewed (this process was stopped or starved), before renewal notices.
        """
        return self._lost.is_set() or time.time() > self._holder.expires

    def unwritable(self) -> str | None:
        """Why renewal could not write the lease, when no later write could either (disk full).

        Returns
        -------
        str or None
            The operating system's error, e.g. ``[Errno 28] No space left on device``; None
            while renewals succeed, and when the lease was lost for another reason.
        """
        return self._unwritable

    def fence(self) -> Fence:
        """What lets the job's writes happen only while it holds this lease.

        See :mod:`pipeline.store.fence`: nothing is written within a third of the lease's
        lifetime of its expiry.
        """
        return Fence(self.store, self.run, self.epoch, self._holder.ttl / 3)

    def why_lost(self) -> str:
        """Why the store was given up, for a message (once :meth:`lost`)."""
        if self._unwritable is not None:
            return f"its lease could not be renewed ({self._unwritable})"
        if self._lost.is_set():
            return "another job took the store over"
        late = time.time() - self._holder.expires + self._holder.ttl
        return (
            f"its lease was not renewed for {late:.0f} s (this process was stopped or starved)"
            " and may be taken over"
        )

    def release(self) -> None:
        """Stop renewing, and delete the lease if it still names our run.

        Best effort: a lease that cannot be read or removed (a read-only disk, a network
        failure) is left to expire, and on this host a rerun takes it over at once.
        """
        self._stop.set()
        self._thread.join()
        with suppress(OSError):
            current = self._file.read(tag=False)
            found = _parse(current)
            if current is not None and found is not None and found.run == self.run:
                self._file.remove(current)

    def _keep(self) -> None:
        while not self._stop.wait(self._holder.ttl / 3) and not self._lost.is_set():
            try:
                self._renew()
            except OSError as exc:
                # A transient failure (network, server): the next period tries again, and the
                # lease counts as lost only once it expired unrenewed (checked in _renew). A
                # full or read-only disk is not transient: give the store up now.
                reason = unwritable(exc)
                if reason is not None:
                    self._unwritable = reason
                    self._lost.set()

    def _renew(self) -> None:
        # Once our lease expired another job may be taking it over right now: renewing could
        # overwrite its new lease, so a late renewal gives the store up instead.
        if time.time() > self._holder.expires:
            self._lost.set()
            return
        current = self._version
        if not self._file.exclusive:  # no compare-and-swap: look that it is still ours first
            found = self._file.read()
            if found is None:
                return  # moved aside for a moment by a job judging it; the next period looks
            current = found
            theirs = _parse(current)
            if theirs is None or theirs.run != self.run:
                self._lost.set()
                return
        renewed = replace(self._holder, expires=time.time() + self._holder.ttl)
        version = self._file.renew(current, _encode(renewed))
        if version is None:
            self._lost.set()
        else:
            self._holder, self._version = renewed, version


_SPACE = _space()


def _new_holder(run: str, ttl: float, before: Holder | None) -> Holder:
    now = datetime.now(UTC)
    return Holder(
        run=run,
        host=socket.gethostname(),
        pid=os.getpid(),
        started=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        expires=now.timestamp() + ttl,
        ttl=ttl,
        epoch=_next_epoch(before),
        space=_SPACE,
        born=_born(os.getpid()),
    )


def _next_epoch(before: Holder | None) -> int:
    """A fencing token above ``before``'s, and above any earlier one: milliseconds since 1970.

    The clock keeps epochs rising even where the lease file was removed (a released lease).
    """
    return max(int(time.time() * 1000), before.epoch + 1 if before is not None else 0)


def _acquire(store: Location, ttl: float, run: str) -> Lease:
    file = _lease_file(store)
    for _ in range(_ATTEMPTS):
        theirs: Holder | None = None
        mine = _new_holder(run, ttl, None)
        version = file.create(_encode(mine))
        if version is None:
            current = file.read()
            if current is None:
                continue  # released in the meantime
            theirs = _parse(current)
            if theirs is not None and not _stale(theirs):
                raise StoreBusy(store, theirs)
            mine = _new_holder(run, ttl, theirs)
            version = file.take_over(current, _encode(mine))
            if version is None:
                continue  # someone else changed it first: judge again
        # Read back: an S3-compatible server that ignores If-None-Match would let two creates
        # both succeed (the later write wins, and only its job reads itself back).
        confirmed = _parse(file.read(tag=False))
        if confirmed is not None and confirmed.run == run and confirmed.epoch == mine.epoch:
            lease = Lease(store, file, mine, version)
            if theirs is not None and theirs.expires > time.time():
                # Its holder is gone, but a process of its job (a worker) may still trust it.
                try:
                    time.sleep(RECHECK_SECONDS)
                except BaseException:
                    lease.release()
                    raise
            return lease
    raise PipelineError(f"{store}: could not take the store's lease, it keeps changing")


@contextmanager
def hold(store: Location, *, ttl: float = 60.0, run: str | None = None) -> Iterator[Lease]:
    """Hold the lease of ``store`` within the block: the only writer of the store.

    Parameters
    ----------
    store
        The store (its lease file goes beside it).
    ttl
        Seconds the lease lasts unrenewed; it is renewed every ``ttl / 3`` seconds while held.
    run
        The run id to hold it as (a new uuid4 hex by default).

    Yields
    ------
    Lease
        The held lease; its ``run`` is what workers pass to :func:`is_holder`.

    Raises
    ------
    StoreBusy
        Another job holds a lease on the store that is not stale.
    StoreUnwritable
        The lease could not be written, or the block failed writing the store, because the
        filesystem refuses every write (:func:`pipeline.errors.unwritable`: full, read-only,
        ...). The lease is beside the store, so neither can be written: the holder stops.
    """
    if ttl <= 0:
        raise UsageError(f"lease ttl must be positive, not {ttl:g}")
    with _refusing(store):
        lease = _acquire(store, ttl, run or uuid.uuid4().hex)
        try:
            yield lease
        finally:
            lease.release()


@contextmanager
def _refusing(store: Location) -> Iterator[None]:
    """Within the block, an OSError that every later write would meet is StoreUnwritable."""
    try:
        yield
    except OSError as exc:
        reason = unwritable(exc)
        if reason is None:
            raise
        raise StoreUnwritable(store.url, reason) from exc


def holder(store: Location) -> Holder | None:
    """The holder of the store's lease, or None if there is no (readable) lease.

    Parameters
    ----------
    store
        The store.

    Returns
    -------
    Holder or None
        What the lease file says, whether or not it expired.
    """
    return _parse(_lease_file(store).read(tag=False))


def holds_now(found: Holder) -> bool:
    """Whether the holder ``found`` holds its store now (a second job would be refused).

    Parameters
    ----------
    found : Holder
        What the store's lease file says (:func:`holder`).

    Returns
    -------
    bool
        False once its lease may be taken over: its process here is gone, or, for a holder
        elsewhere, its lease expired.
    """
    return not _stale(found)


def check_free(store: Location) -> None:
    """Raise :class:`StoreBusy` now if a live job holds the store (before a job starts a cluster).

    Only a hint: the lease is taken by :func:`hold`, which decides.

    Raises
    ------
    StoreBusy
        When a live job holds it.
    UsageError
        When the lease file exists but cannot be read (permissions, a folder in its place).
    """
    try:
        current = holder(store)
    except OSError as exc:
        raise UsageError(
            f"{store}: its lease file {store.url.rstrip('/')}{LEASE_SUFFIX} cannot be read "
            f"({os_reason(exc)})"
        ) from None
    if current is not None and holds_now(current):
        raise StoreBusy(store, current)
