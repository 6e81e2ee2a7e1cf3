"""Split brain, for real: a job paused past its lease, a second job taking over, the first resumed.

:func:`split_brain` runs job A (``python -m pipeline run`` on a local cluster of worker
processes, a short lease), pauses it with SIGSTOP at a given moment of its writing - its client
(and so its scheduler: the workers go on with the tasks they hold) or its worker processes (and
then kills its client, as an eviction or ``scancel`` of the client would) - starts job B on the
same store with other settings, resumes A once B has reported images done, and waits for both.
:func:`check_invariants` then checks, with plain zarr and the files' modification times, the
three promises of the fence (docs/store-format.md, "Fencing"):

1. every image B reported done is complete, with B's palette, labels and every pyramid level
   (B's colours and run; labels within the palette at every level; the picture rebuilt from
   the store scores the PSNR it records against its source; ``verify`` finds the store whole);
2. A changed no byte of the store after it lost the lease: every file modified since A's lease
   ran out belongs to an image B wrote (or to B's bookkeeping);
3. B never counted A's write as its own: an image B reported done records B's run.

Used by tests/job/test_fencing.py (a few pause points) and benchmarks/fencing.py (many).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import zarr

#: Runs a command in a user, pid and mount namespace of its own: as in another container of the
#: same machine, it cannot see job A's processes, so it judges A's lease by its expiry alone.
ELSEWHERE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]
LEASE_SECONDS = 3.0
A_COLORS, B_COLORS = 64, 32


def namespaces_work() -> bool:
    """Whether :data:`ELSEWHERE` can run a command here."""
    try:
        return subprocess.run([*ELSEWHERE, "true"], capture_output=True).returncode == 0
    except OSError:
        return False


def make_photos(folder: Path, count: int = 16) -> list[Path]:
    """``count`` JPEG crops (400x600) of scikit-learn's two sample photos."""
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    photos = load_sample_images().images
    paths = []
    for i in range(count):
        y, x = (i * 7) % 20, (i * 13) % 40
        path = folder / f"p{i:02d}.jpg"
        iio.imwrite(path, np.ascontiguousarray(photos[i % 2][y : y + 400, x : x + 600]))
        paths.append(path)
    return paths


@dataclass
class Outcome:
    """What the two jobs said and did."""

    a_out: str
    a_code: int | None
    b_out: str
    b_code: int
    b_done: list[str]
    a_expired: float
    paused_at: float
    notes: list[str] = field(default_factory=list)


def _job(
    inputs: Path, store: str, colors: int, *, extra: list[str], prefix: list[str], env: dict
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "pipeline", "run", str(inputs), "-o", store]
    command += ["--colors", str(colors), "--chunk", "128", *extra]
    return subprocess.Popen(
        [*prefix, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def _signal(pids: list[int], number: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)


def _fs(store: str) -> tuple[object, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(store)
    return fs, root.rstrip("/")


def _lease(store: str) -> dict:
    fs, root = _fs(store)
    try:
        return json.loads(fs.cat_file(root + ".lease.json"))
    except FileNotFoundError:
        return {"expires": 0.0}


def _groups(store: str) -> int:
    fs, root = _fs(store)
    fs.invalidate_cache(root)
    try:
        names = [path.rsplit("/", 1)[-1] for path in fs.ls(root, detail=False)]
    except FileNotFoundError:
        return 0
    return sum(1 for name in names if not name.startswith(".") and name.endswith(".jpg"))


def _files(store: str) -> dict[str, float]:
    """Every file of the store (path relative to it) with its modification time (unix)."""
    fs, root = _fs(store)
    fs.invalidate_cache(root)
    found = {}
    for path, info in fs.find(root, detail=True).items():
        when = info.get("mtime") or info.get("LastModified")
        found[path[len(root) + 1 :]] = when if isinstance(when, float) else when.timestamp()
    return found


def split_brain(
    inputs: Path, store: str, *, pause: str, after: float, timeout: float = 240.0
) -> Outcome:
    """Run the scenario; ``pause`` is ``"client"`` or ``"workers"``, ``after`` seconds after
    A's first image group appears."""
    env = {**os.environ, "DASK_PIPELINE__LEASE_SECONDS": str(LEASE_SECONDS)}
    a = _job(
        inputs,
        store,
        A_COLORS,
        extra=["--local-cluster", "processes", "--workers", "2"],
        prefix=[],
        env=env,
    )
    deadline = time.monotonic() + timeout
    while _groups(store) == 0:
        if a.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"job A never wrote: {a.communicate()[0]}")
        time.sleep(0.02)
    time.sleep(after)
    paused_at = time.time()
    workers = []
    if pause == "client":
        a.send_signal(signal.SIGSTOP)
        expired = _lease(store)["expires"]
        time.sleep(max(0.0, expired - time.time()) + 0.5)
        prefix = ELSEWHERE
    else:
        nannies = _children(a.pid)
        workers = [w for n in nannies for w in _children(n)] + nannies
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        expired = _lease(store)["expires"]
        a.kill()  # its client gone: on this host its lease is taken over at once
        a.wait()  # reaped, as a shell or Slurm does (a zombie's pid still exists)
        prefix = []
    b = _job(
        inputs,
        store,
        B_COLORS,
        extra=["--local-cluster", "threads", "--overwrite"],
        prefix=prefix,
        env=env,
    )
    assert b.stdout is not None
    b_lines, done = [], []
    resumed = False
    for line in b.stdout:
        b_lines.append(line)
        if ": done after" in line:
            done.append(line.split("] ", 1)[1].split(":", 1)[0])
            if len(done) == 2 and not resumed:
                resumed = True
                _signal([a.pid] if pause == "client" else workers, signal.SIGCONT)
    b_code = b.wait(timeout=timeout)
    if not resumed:  # B finished before two images: resume A now
        _signal([a.pid] if pause == "client" else workers, signal.SIGCONT)
    try:
        a_out, _ = a.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        a.kill()
        a_out, _ = a.communicate()
    time.sleep(1.0 if pause == "workers" else 0.0)  # resumed workers: a moment to misbehave
    _signal(workers, signal.SIGKILL)
    return Outcome(a_out, a.returncode, "".join(b_lines), b_code, done, expired, paused_at)


def check_invariants(store: str, inputs: Path, outcome: Outcome) -> list[str]:
    """The broken promises (empty if none), checked with plain zarr and file times."""
    problems = []
    root = zarr.open_group(store, mode="r")
    runs = {}
    for name in outcome.b_done:
        group = root[name]
        attrs = dict(group.attrs)
        runs[name] = attrs.get("run")
        if attrs.get("status") != "complete" or attrs.get("colors_requested") != B_COLORS:
            problems.append(f"{name}: B reported it done, the store holds {attrs.get('status')}")
            continue
        palette = np.asarray(group["palette"][:])
        for level in range(len(attrs["digests"]["levels"]) + 1):
            labels = np.asarray(group["labels" if level == 0 else f"labels_{level}"][:])
            if labels.max() >= len(palette):
                problems.append(f"{name}: level {level} holds label {labels.max()}")
        source = iio.imread(inputs / name).astype(np.float64)
        rebuilt = palette[np.asarray(group["labels"][:])].astype(np.float64)
        psnr = 10 * np.log10(255.0**2 / np.mean((rebuilt - source) ** 2))
        if abs(psnr - attrs["metrics"]["psnr_db"]) > 0.01:
            problems.append(f"{name}: rebuilt {psnr:.3f} dB, records {attrs['metrics']['psnr_db']}")
    b_runs = set(runs.values())
    if len(b_runs) > 1:
        problems.append(f"B's images record runs {b_runs}: B counted another job's write")
    b_run = next(iter(b_runs), None)
    # Invariant 2: nothing changed after A's lease ran out but B's images (A's own writes end a
    # third of the lease before then).
    owners: dict[str, object] = {}
    for path, when in sorted(_files(store).items()):
        image = path.split("/", 1)[0]
        if when <= outcome.a_expired or image == ".pipeline" or "/" not in path:
            continue
        if image not in owners:
            try:
                owners[image] = root[image].attrs.get("run")
            except (KeyError, ValueError):
                owners[image] = None
        if b_run is not None and owners[image] != b_run:
            problems.append(f"{path}: changed after A's lease ran out, not by B")
    verify = subprocess.run(
        [sys.executable, "-m", "pipeline", "verify", store], capture_output=True, text=True
    )
    if verify.returncode != 0:
        problems.append(f"verify: exit {verify.returncode}: {verify.stdout[-500:]}")
    return problems
