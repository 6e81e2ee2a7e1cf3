"""Watching a job from its log: progress as images finish, stops at any moment, a quiet log.

Each test runs ``python -m pipeline run`` as a user does, on real PNG files, with a real local
cluster, and reads its output line by line as it comes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.conftest import sklearn_photo

#: Thumbnails in the job of many small images.
THUMBNAILS = 240
#: Crops in the job whose batches last about a second each, and the crops of a batch.
CROPS = 64
CROP_BATCH = 8
#: Lines of a job's log that are the job's own: its cluster, its dashboard, progress, stopping.
OWN_LINE = re.compile(r"^(cluster: |dashboard: |\[\d+/\d+\] |stopping: |interrupted: |error: )")
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def thumbnails(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 48 x 48 PNG crops of flower.jpg, at random places."""
    import imageio.v3 as iio

    folder = tmp_path_factory.mktemp("thumbnails")
    photo = iio.imread(sklearn_photo("flower.jpg"))
    rng = np.random.default_rng(0)
    for i in range(THUMBNAILS):
        row, col = rng.integers(0, photo.shape[0] - 48), rng.integers(0, photo.shape[1] - 48)
        iio.imwrite(folder / f"t{i:04d}.png", photo[row : row + 48, col : col + 48])
    return folder


class Job:
    """``python -m pipeline run ...`` in the background; its stderr lines timed as they come."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._changed.notify_all()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 120) -> None:
        """Wait until ``count`` lines of stderr match ``pattern``."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: (
                    sum(bool(re.search(pattern, ln)) for _, ln in self.lines) >= count
                    or self.process.poll() is not None
                ),
                timeout,
            )
        assert found, self.stderr()
        assert self.process.poll() is None, self.stderr()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        """Exit status and stdout, once the job ended."""
        assert self.process.stdout is not None
        out = self.process.stdout.read()  # stderr is the reader's
        self.process.wait(timeout)
        self._reader.join()
        return self.process.returncode, out

    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def progress(self) -> list[float]:
        """When each line about an image was printed."""
        return [when for when, line in self.lines if re.match(r"\[\d+/\d+\] ", line)]


def counts(summary: str) -> dict[str, int]:
    """The counts of a job's summary's last line: done, skipped, failed, left."""
    last = summary.strip().splitlines()[-1]
    found = {kind: int(n.replace(",", "")) for n, kind in re.findall(r"(\d[\d,]*) (\w+)", last)}
    assert set(found) == {"done", "skipped", "failed", "left"}, last
    return found


def complete_images(store: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "info", str(store), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    images = json.loads(done.stdout)["images"]
    return sum(attrs.get("status") == "complete" for attrs in images.values())


@pytest.mark.slow
def test_images_of_batches_are_reported_as_they_finish(tmp_path: Path) -> None:
    # Worker processes, batches of 8 crops of 200 x 200 (about 0.1 s each at the default 128
    # colours): every image's line comes as it is complete, so a batch's lines are printed at
    # several moments across its second of work; reported when the batch returned, they would
    # be printed at one moment. (A count of moments, not a measure of gaps: the runner prints
    # at least every POLL_SECONDS, and a machine under load only spreads the lines further.)
    import imageio.v3 as iio

    crops = tmp_path / "crops"
    crops.mkdir()
    photo = iio.imread(sklearn_photo("flower.jpg"))
    rng = np.random.default_rng(0)
    for i in range(CROPS):
        row, col = rng.integers(0, photo.shape[0] - 200), rng.integers(0, photo.shape[1] - 200)
        iio.imwrite(crops / f"c{i:03d}.png", photo[row : row + 200, col : col + 200])
    batch = {"DASK_PIPELINE__BATCH_IMAGES": str(CROP_BATCH), "DASK_PIPELINE__BATCH_SECONDS": "1000"}
    job = Job(str(crops), "-o", "s.zarr", "--local-cluster", "processes", cwd=tmp_path, env=batch)
    status, out = job.finish()
    assert status == 0, job.stderr()
    assert counts(out) == {"done": CROPS, "skipped": 0, "failed": 0, "left": 0}
    printed: dict[int, list[float]] = {}
    for when, line in job.lines:
        if found := re.match(r"\[\d+/\d+\] c(\d+)\.png: done", line):
            printed.setdefault(int(found[1]) // CROP_BATCH, []).append(when)
    assert sorted(printed) == list(range(CROPS // CROP_BATCH)), job.stderr()
    for times in printed.values():
        moments = 1 + sum(b - a > 0.02 for a, b in itertools.pairwise(sorted(times)))
        assert moments >= 3, (times, job.stderr())


def test_a_stop_during_start_up_stops_there(thumbnails: Path, tmp_path: Path) -> None:
    # A job small enough to run on threads in its own process, whose cluster starts with its
    # first work: a first Ctrl-C before that starts no cluster, creates no store, and says
    # what is left.
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(thumbnails.iterdir())[:8]:
        shutil.copy(path, few)
    job = Job(str(few), "-o", "s.zarr", cwd=tmp_path)
    job.wait_for("^cluster: local, .* threads")
    job.signal(signal.SIGINT)
    status, out = job.finish()
    assert status == 130, job.stderr()
    assert counts(out) == {"done": 0, "skipped": 0, "failed": 0, "left": 8}
    assert "dashboard: " not in job.stderr()  # no cluster was started


def test_a_job_keeps_its_ctrl_c_in_the_environment_a_local_cluster_leaves(
    thumbnails: Path, tmp_path: Path
) -> None:
    # distributed's nanny leaves its workers' pre-spawn environment in the process that started
    # the cluster (a notebook, this suite), and processes started from it inherit it: a job
    # started there still stops on SIGINT; only the cluster's worker processes ignore it.
    from pipeline.job.cluster import WORKER_SIGINT

    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(thumbnails.iterdir())[:8]:
        shutil.copy(path, few)
    job = Job(str(few), "-o", "s.zarr", cwd=tmp_path, env=WORKER_SIGINT)
    job.wait_for("^cluster: local, .* threads")
    job.signal(signal.SIGINT)
    status, out = job.finish()
    assert status == 130, job.stderr()
    assert counts(out)["done"] == 0
    assert not (tmp_path / "s.zarr").exists()
    assert job.stderr().endswith("interrupted: complete images are kept; run again to finish")


def test_a_stop_while_worker_processes_start_does_not_wait_for_them(
    thumbnails: Path, tmp_path: Path
) -> None:
    # Worker processes start in the background while the job imports its libraries: a first
    # signal then submits nothing, and the job leaves without waiting for them to be up; they
    # end with it (their parent gone), none is left behind.
    job = Job(str(thumbnails), "-o", "s.zarr", "--local-cluster", "processes", cwd=tmp_path)
    job.wait_for(r"^cluster: local, \d+ worker processes")
    job.signal(signal.SIGINT)
    spawned: set[psutil.Process] = set()
    while job.process.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            spawned.update(psutil.Process(job.process.pid).children(recursive=True))
        time.sleep(0.05)
    status, out = job.finish()
    assert status == 130, job.stderr()
    assert counts(out) == {"done": 0, "skipped": 0, "failed": 0, "left": THUMBNAILS}
    _, alive = psutil.wait_procs(spawned, timeout=30)
    assert not alive, [p.cmdline() for p in alive]


def test_a_second_signal_stops_at_once_and_the_summary_agrees_with_the_store(
    thumbnails: Path, tmp_path: Path
) -> None:
    job = Job(str(thumbnails), "-o", "s.zarr", "--colors", "16", "--local-cluster",
              "processes", cwd=tmp_path)  # fmt: skip
    job.wait_for(r"^\[\d+/\d+\] .*: done", count=20)
    job.signal(signal.SIGTERM)
    time.sleep(0.2)
    job.signal(signal.SIGTERM)
    status, out = job.finish()
    assert status == 128 + signal.SIGTERM, job.stderr()
    summary = counts(out)
    assert 20 <= summary["done"] < THUMBNAILS
    assert summary["left"] == THUMBNAILS - summary["done"]
    # images completed by tasks still running when the job stopped are counted too
    assert complete_images(tmp_path / "s.zarr") == summary["done"]
    # a rerun does the rest, and only the rest
    rerun = Job(str(thumbnails), "-o", "s.zarr", "--colors", "16", cwd=tmp_path)
    status, out = rerun.finish()
    assert status == 0, rerun.stderr()
    assert counts(out) == {
        "done": THUMBNAILS - summary["done"],
        "skipped": summary["done"],
        "failed": 0,
        "left": 0,
    }


@pytest.mark.slow
@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} not installed")
def test_the_log_stays_the_jobs_own_while_a_browser_watches_the_dashboard(
    thumbnails: Path, tmp_path: Path
) -> None:
    job = Job(str(thumbnails), "-o", "s.zarr", "--colors", "16", "--local-cluster",
              "processes", cwd=tmp_path)  # fmt: skip
    job.wait_for("^dashboard: ")
    link = next(line for _, line in job.lines if line.startswith("dashboard: ")).split()[1]
    root = link.rsplit("/", 1)[0]
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    browsers = [
        subprocess.Popen(
            [
                *browser,
                f"--user-data-dir={tmp_path / f'profile{i}'}",
                "--virtual-time-budget=60000",
                "--dump-dom",
                f"{root}/{page}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, page in enumerate(("status", "workers", "tasks", "individual-task-stream"))
    ]
    time.sleep(2)
    browsers[0].kill()  # a browser gone with its websockets open
    status, _ = job.finish()
    for opened in browsers:
        opened.kill()
        opened.wait()
    assert status == 0, job.stderr()
    foreign = [line for _, line in job.lines if not OWN_LINE.match(line)]
    assert not foreign, foreign
