"""The store lease: one writer per store, with real processes holding, racing, dying and stalling.

Holders run in child processes (``HOLD``) that print ``held <run>`` once they hold the lease (or
``busy <message>``), hold it until a line arrives on stdin, then print ``kept`` or ``lost``. The
children load ``pipeline.store.lease`` without the package's ``__init__``, which imports dask, zarr
and scikit-learn (seconds per process on two cores); the lease needs only it, ``errors`` and
``paths``. The S3 tests use a real moto server on 127.0.0.1, as tests/test_s3.py does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import zarr

import pipeline.store.lease
from pipeline.errors import UsageError
from pipeline.store.fence import Fenced
from pipeline.store.lease import LEASE_SUFFIX, Fence, Holder, StoreBusy, hold, holder
from pipeline.store.location import Location

PRELUDE = f"""
import sys, time, types
package = types.ModuleType("pipeline")
package.__path__ = [{str(Path(pipeline.store.lease.__file__).parents[1])!r}]
sys.modules["pipeline"] = package
from pipeline.store.lease import StoreBusy, hold
from pipeline.store.location import Location
"""

HOLD = (
    PRELUDE
    + """
store, ttl, start = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
try:
    with hold(Location.at(store), ttl=ttl) as lease:
        print("held", lease.run, flush=True)
        sys.stdin.readline()
        print("lost" if lease.lost() else "kept", flush=True)
except StoreBusy as exc:
    print("busy", exc, flush=True)
"""
)

FOREIGN = "elsewhere.example"
#: Runs a command in a pid namespace of its own, as in another container of the same machine:
#: it cannot see this one's processes, so a lease is judged by its expiry alone.
ELSEWHERE = ["unshare", "--user", "--map-root-user", "--pid", "--fork"]


def other_namespaces_work() -> bool:
    try:
        return subprocess.run([*ELSEWHERE, "true"], capture_output=True).returncode == 0
    except OSError:
        return False


needs_namespaces = pytest.mark.skipif(
    not other_namespaces_work(), reason="unshare cannot make a user and pid namespace here"
)
OTHER_RUN = "f" * 32


Start = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def start() -> Iterator[Start]:
    """Starts children that try to hold a store (at unix time ``at``, if given); kills leftovers."""
    children: list[subprocess.Popen[str]] = []

    def start(
        store: str, ttl: float = 60.0, at: float = 0.0, elsewhere: bool = False
    ) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [
                *(ELSEWHERE if elsewhere else []),
                sys.executable,
                "-c",
                HOLD,
                store,
                str(ttl),
                str(at),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate()


def first(child: subprocess.Popen[str]) -> tuple[str, str]:
    """What the child said first: ("held", run) or ("busy", message)."""
    assert child.stdout is not None
    word, _, rest = child.stdout.readline().rstrip("\n").partition(" ")
    return word, rest


def finish(child: subprocess.Popen[str]) -> str:
    """Let a holding child release the lease; what it said last ("kept" or "lost")."""
    out, _ = child.communicate("\n", timeout=30)
    assert child.returncode == 0
    return out.strip()


def foreign_lease(**fields: object) -> str:
    """A lease written by someone else: by default on another host, live for a minute."""
    defaults = {"run": OTHER_RUN, "host": FOREIGN, "pid": 1, "started": "2026-01-01T00:00:00Z",
                "expires": time.time() + 60, "ttl": 60.0}  # fmt: skip
    return json.dumps(asdict(Holder(**{**defaults, **fields})))


def write_lease(store: str, **fields: object) -> None:
    Path(store + LEASE_SUFFIX).write_text(foreign_lease(**fields))


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def is_holder(store: Location, run: str) -> bool:
    """Whether the store's lease names ``run`` and has not expired."""
    found = holder(store)
    return found is not None and found.run == run and found.expires >= time.time()


def holder_run(store: str) -> str | None:
    found = holder(Location.at(store))
    return None if found is None else found.run


def test_a_second_process_is_refused_with_one_line_naming_the_holder(store, start):
    first_job = start(store)
    word, run = first(first_job)
    assert word == "held"
    second_job = start(store)
    word, message = first(second_job)
    assert second_job.wait(timeout=30) == 0
    assert word == "busy"
    assert message.startswith(f"{store}: in use by another job (")
    assert f"host {socket.gethostname()}, pid {first_job.pid}, run {run}, since " in message
    assert message.endswith("(the lease expires 60 s after its holder stops renewing it)")
    assert "\n" not in message
    assert holder_run(store) == run  # the refused job took nothing
    with (
        pytest.raises(StoreBusy, match=f"run {run}"),
        hold(Location.at(store)),
    ):  # nor can this process
        pass
    assert finish(first_job) == "kept"
    assert not os.path.exists(store + LEASE_SUFFIX)


def test_a_killed_holder_does_not_block_a_rerun_on_the_same_host(store, start):
    killed = start(store)  # a minute's lease: the rerun must not wait for it
    assert first(killed)[0] == "held"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)  # reaped, as a shell or Slurm does: a zombie's pid still exists
    began = time.monotonic()
    rerun = start(store)
    word, run = first(rerun)
    assert word == "held"
    assert time.monotonic() - began < 10  # process start-up only
    assert is_holder(Location.at(store), run)
    assert finish(rerun) == "kept"


def test_a_lease_from_another_host_is_taken_over_only_once_expired(store):
    write_lease(store)
    match = f"host {FOREIGN}, pid 1, run {OTHER_RUN}, since 2026-01-01T00:00:00Z"
    with pytest.raises(StoreBusy, match=match) as busy, hold(Location.at(store)):
        pass
    assert busy.value.holder.host == FOREIGN
    assert isinstance(busy.value, UsageError)  # reported as one line, exit code 2

    write_lease(store, expires=time.time() - 1)
    with hold(Location.at(store)) as lease:
        assert is_holder(Location.at(store), lease.run)
        assert not is_holder(Location.at(store), OTHER_RUN)
    assert holder(Location.at(store)) is None


def test_a_live_holder_on_this_host_is_refused_a_dead_one_or_garbage_taken_over(store):
    write_lease(store, host=socket.gethostname(), pid=os.getppid())  # alive: pytest's parent
    with pytest.raises(StoreBusy), hold(Location.at(store)):
        pass
    write_lease(store, host=socket.gethostname(), pid=dead_pid())
    with hold(Location.at(store)) as lease:
        assert is_holder(Location.at(store), lease.run)
    Path(store + LEASE_SUFFIX).write_bytes(b"\x00 not json")
    with hold(Location.at(store)) as lease:
        assert is_holder(Location.at(store), lease.run)


def test_renewal_keeps_a_short_lease_alive_and_release_removes_it(store, start):
    with hold(Location.at(store), ttl=1.5) as lease:
        time.sleep(4.5)  # three lease lifetimes
        assert not lease.lost()
        assert is_holder(Location.at(store), lease.run)  # not expired: renewed
        refused = start(store)
        assert first(refused)[0] == "busy"
    assert not os.path.exists(store + LEASE_SUFFIX)
    assert holder(Location.at(store)) is None


def test_of_six_processes_started_together_exactly_one_holds_the_store(store, start):
    at = time.time() + 2.0  # after every child has started up
    children = [start(store, ttl=1.5, at=at) for _ in range(6)]
    said = [first(child) for child in children]
    assert sorted(word for word, _ in said) == ["busy"] * 5 + ["held"]
    [(winner, run)] = [(child, run) for child, (word, run) in zip(children, said, strict=True)
                       if word == "held"]  # fmt: skip
    assert all(f"run {run}" in message for word, message in said if word == "busy")
    assert finish(winner) == "kept"


def test_of_six_processes_racing_for_a_dead_holders_lease_one_ends_up_holding_it(store, start):
    write_lease(store, host=socket.gethostname(), pid=dead_pid())
    at = time.time() + 2.0
    children = [start(store, ttl=1.5, at=at) for _ in range(6)]
    said = [first(child) for child in children]
    time.sleep(1.0)  # two renewal periods: a job deposed within the race has learnt it
    last = [finish(child) if word == "held" else word
            for child, (word, _) in zip(children, said, strict=True)]  # fmt: skip
    # Usually one takes over and five are refused; in a rare three-way interleaving a job sees
    # itself hold the lease until its first renewal, which reports it lost.
    assert last.count("kept") == 1
    assert set(last) <= {"kept", "lost", "busy"}
    assert not os.path.exists(store + LEASE_SUFFIX)


def test_a_stopped_holder_on_this_host_is_never_taken_over(store, start):
    stopped = start(store, ttl=1.5)
    word, run = first(stopped)
    assert word == "held"
    stopped.send_signal(signal.SIGSTOP)  # as a suspended job: alive, no renewals
    try:
        time.sleep(2.0)  # its lease expired
        refused = start(store, ttl=1.5)
        word, message = first(refused)
        assert word == "busy"
        assert f"pid {stopped.pid}, run {run}" in message
        assert "its process is stopped (SIGSTOP, Ctrl-Z): resume it with kill -CONT" in message
    finally:
        stopped.send_signal(signal.SIGCONT)
    assert finish(stopped) == "lost"  # it was not renewed in time: it gave the store up


@needs_namespaces
def test_a_holder_that_stalls_past_its_lease_is_deposed_and_fenced(store, start):
    stalled = start(store, ttl=1.5)
    word, old_run = first(stalled)
    assert word == "held"
    old = holder(Location.at(store))
    fence = Fence(Location.at(store), old_run, old.epoch, margin=0.5)
    fence.check()  # its writes may go ahead
    stalled.send_signal(signal.SIGSTOP)  # as a suspended or starved job: no renewals
    try:
        time.sleep(2.0)
        taker = start(store, ttl=1.5, elsewhere=True)  # another container: it sees no pid
        word, new_run = first(taker)
        assert word == "held"
    finally:
        stalled.send_signal(signal.SIGCONT)
    new = holder(Location.at(store))
    assert new.run == new_run
    assert new.epoch > old.epoch  # a higher fencing token
    with pytest.raises(Fenced, match=f"run {new_run} holds it now"):
        fence.check()  # its workers write nothing more
    time.sleep(1.0)
    assert finish(stalled) == "lost"
    assert holder_run(store) == new_run  # the deposed job's release left the new lease alone
    assert finish(taker) == "kept"


def test_lost_when_the_lease_file_names_another_run(store):
    with hold(Location.at(store), ttl=1.5) as lease:
        assert is_holder(Location.at(store), lease.run)
        write_lease(store)  # someone else's lease replaced ours
        deadline = time.monotonic() + 5
        while not lease.lost() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lease.lost()
        assert not is_holder(Location.at(store), lease.run)
    assert holder_run(store) == OTHER_RUN  # not ours to remove


def test_a_file_url_and_a_relative_path_name_the_same_lease(store, monkeypatch):
    monkeypatch.chdir(os.path.dirname(store))
    with (
        hold(Location.at(os.path.basename(store))),
        pytest.raises(StoreBusy),
        hold(Location.at("file://" + store)),
    ):
        pass
    with pytest.raises(UsageError, match="ttl must be positive"), hold(Location.at(store), ttl=0):
        pass


def test_zarr_does_not_see_the_lease(store):
    root = zarr.open_group(store, mode="a", zarr_format=3)
    root.create_group("a.png")
    root.create_group("b.jpg")
    with hold(Location.at(store)), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(root.group_keys()) == ["a.png", "b.jpg"]
        members = zarr.open_group(store, mode="r").members()
        assert sorted(name for name, _ in members) == ["a.png", "b.jpg"]


@pytest.mark.slow
def test_a_store_on_s3(s3, start):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("leases")
    store = "s3://leases/out.zarr"
    lease_file = "leases/out.zarr" + LEASE_SUFFIX

    with hold(Location.at(store), ttl=1.5) as lease:
        refused = start(store)
        word, message = first(refused)
        assert word == "busy"
        assert f"host {socket.gethostname()}, pid {os.getpid()}, run {lease.run}" in message
        written = holder(Location.at(store))
        time.sleep(1.2)  # renewed twice, each on condition of the ETag of its last write
        assert holder(Location.at(store)).expires > written.expires
        assert not lease.lost()
        assert is_holder(Location.at(store), lease.run)
    assert not fs.exists(lease_file)

    with hold(Location.at(store), ttl=1.5) as lease:
        fs.pipe_file(lease_file, foreign_lease().encode())  # another job's lease replaced ours
        deadline = time.monotonic() + 5
        while not lease.lost() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lease.lost()  # the renewal's If-Match failed: it did not write over theirs
        assert not is_holder(Location.at(store), lease.run)
    assert holder(Location.at(store)).host == FOREIGN  # and releasing left it alone
    fs.rm_file(lease_file)

    job = start(store)
    word, run = first(job)
    assert word == "held"
    with pytest.raises(StoreBusy, match=f"run {run}"), hold(Location.at(store)):
        pass
    assert finish(job) == "kept"
    assert not fs.exists(lease_file)

    fs.pipe_file(lease_file, foreign_lease(expires=time.time() - 1).encode())
    with hold(Location.at(store)) as lease:
        assert is_holder(Location.at(store), lease.run)
    fs.pipe_file(lease_file, foreign_lease().encode())
    with pytest.raises(StoreBusy, match=f"host {FOREIGN}"), hold(Location.at(store)):
        pass
    with pytest.raises(UsageError, match="root of a bucket"), hold(Location.at("s3://leases")):
        pass


def test_a_lease_file_that_cannot_be_read_is_one_line_before_any_cluster(tmp_path, capsys):
    from pipeline.cli import main

    photo = tmp_path / "a.png"
    photo.write_bytes(b"")
    store = tmp_path / "out.zarr"
    (tmp_path / "out.zarr.lease.json").mkdir()  # something not a file where the lease goes
    assert main(["run", str(photo), "-o", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"error: {store}: its lease file {store}.lease.json cannot be read "
        "([Errno 21] Is a directory)"
    ]
    assert not store.exists()
