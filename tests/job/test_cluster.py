"""The job on clusters it did not start: a real ``dask scheduler`` and ``dask worker`` processes.

Also what a scheduled job relies on: the job file, progress lines, the dashboard while a job runs,
the performance report, and clear errors for an unreachable scheduler and for workers that lack
the package.
"""

import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import dask
import dask.config
import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from tests.conftest import free_port, store_files
from tests.test_cli import run

pytestmark = pytest.mark.slow


class DaskCluster:
    """``dask scheduler`` and ``dask worker`` subprocesses on 127.0.0.1."""

    def __init__(
        self,
        folder: Path,
        workers: int,
        worker_env: dict[str, str] | None = None,
        scheduler_args: tuple[str, ...] = (),
    ):
        self.file = folder / "scheduler.json"
        self.processes: list[subprocess.Popen] = []
        dask = [sys.executable, "-m", "dask"]
        local = ["--host", "127.0.0.1"]
        files = ["--scheduler-file", str(self.file)]
        dashboard = ["--dashboard-address", "127.0.0.1:0"]
        self._start([*dask, "scheduler", *local, *files, *dashboard, *scheduler_args])
        deadline = time.monotonic() + 60
        while not self.file.exists():
            if self.processes[0].poll() is not None or time.monotonic() > deadline:
                self.close()
                log = (folder / "dask-0.log").read_text()
                raise RuntimeError(f"dask scheduler did not start:\n{log}")
            time.sleep(0.1)
        for _ in range(workers):
            one = ["--nthreads", "1", "--preload", "pipeline.job.preload"]
            self._start([*dask, "worker", *files, *local, *one], env=worker_env)
        from distributed import Client

        with Client(scheduler_file=str(self.file), timeout=60) as client:
            if workers:
                client.wait_for_workers(workers, timeout=120)
            self.address = client.scheduler.address

    def _start(self, command: list[str], env: dict[str, str] | None = None) -> None:
        log = self.file.parent / f"dask-{len(self.processes)}.log"
        with open(log, "w") as output:
            self.processes.append(
                subprocess.Popen(
                    command,
                    env={**os.environ, **(env or {})},
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )

    def close(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def photos(tmp_path, small_photo):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        iio.imwrite(folder / f"p{i}.png", np.roll(small_photo, 17 * i, axis=1))
    return folder


def test_a_dask_scheduler_gives_the_same_store_as_a_local_cluster(tmp_path, photos):
    cluster = DaskCluster(tmp_path, workers=2)
    try:
        remote = run(
            "run", str(photos), "-o", "remote.zarr", "--colors", "32",
            cwd=tmp_path, env={"DASK_SCHEDULER_ADDRESS": cluster.address},
        )  # fmt: skip
    finally:
        cluster.close()
    assert remote.returncode == 0, remote.stderr
    assert f"cluster: {cluster.address}" in remote.stderr
    local = run("run", str(photos), "-o", "local.zarr", "--colors", "32", "--workers", "2",
                cwd=tmp_path)  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert "cluster: local" in local.stderr
    remote_bytes, local_bytes = (
        store_files(tmp_path / "remote.zarr"),
        store_files(tmp_path / "local.zarr"),
    )
    assert sorted(remote_bytes) == sorted(local_bytes)
    assert len([k for k in local_bytes if "/labels/" in k]) == 3
    assert remote_bytes == local_bytes


def test_an_unreachable_scheduler_fails_fast_with_one_line(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    done = run(
        "run", "-o", "s.zarr", "--scheduler", address,
        cwd=tmp_path, env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: cannot reach the Dask scheduler at {address}: ")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_workers_without_the_package_get_a_clear_message(tmp_path, photos):
    # a worker environment where `import pipeline` fails, as on a worker image without it
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys

            class Block:
                def find_spec(self, name, path=None, target=None):
                    if name == "pipeline" or name.startswith("pipeline."):
                        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

            sys.meta_path.insert(0, Block())
            """
        )
    )
    cluster = DaskCluster(tmp_path, workers=0)
    try:
        # the worker cannot preload pipeline.job.preload either: start it without
        command = [sys.executable, "-m", "dask", "worker", cluster.address, "--nthreads", "1"]
        cluster._start(command, env={"PYTHONPATH": str(blocker)})
        from distributed import Client

        with Client(cluster.address, timeout=30) as client:
            client.wait_for_workers(1, timeout=120)
        done = run("run", str(photos), "-o", "s.zarr", "--scheduler", cluster.address,
                   cwd=tmp_path, timeout=120)  # fmt: skip
    finally:
        cluster.close()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    error = next(line for line in done.stderr.splitlines() if line.startswith("error:"))
    assert "cannot import the pipeline package" in error
    assert "No module named 'pipeline" in error
    assert "--preload pipeline.job.preload" in error
    assert not (tmp_path / "s.zarr").exists()


def test_job_file_with_overrides_progress_and_report(tmp_path, photos):
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "nightly.toml"
    job.write_text(
        textwrap.dedent(
            f"""
            inputs = ["{photos}"]
            out = "nightly.zarr"   # relative to the job file
            colors = 32
            effort = 0
            workers = 2
            report = "report.html"
            """
        )
    )
    done = run("run", "--config", str(job), "--colors", "16", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    root = zarr.open_group(tmp_path / "jobs" / "nightly.zarr", mode="r")
    images = sorted(n for n in root.group_keys() if not n.startswith("."))  # .pipeline: markers
    assert images == ["p0.png", "p1.png", "p2.png"]
    for name in images:
        attrs = root[name].attrs
        assert attrs["colors_requested"] == 16  # the command line wins
        assert attrs["fit_settings"]["effort"] == 0  # the file's value
    lines = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == ["[1/3", "[2/3", "[3/3"]
    assert lines[-1].endswith("(100%)")
    assert " MB (" in lines[0]
    report = (tmp_path / "jobs" / "report.html").read_text()
    assert "Dask Performance Report" in report
    assert "report: " in done.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("colours = 16", "unknown key colours"),
        ('colors = "many"', "colors must be an integer, got 'many'"),
        ("colors = 0", "colors must be 1..65536, got 0"),
        ('inputs = "a.png"', "inputs must be a list of strings"),
        ("workers = 0", "workers must be 1..1024, got 0"),
        ('local_cluster = "fast"', "local_cluster must be one of auto, threads, processes"),
        ("colors = ", "not valid TOML"),
    ],
)
def test_bad_job_files_are_rejected_before_any_work(tmp_path, content, problem):
    job = tmp_path / "job.toml"
    job.write_text(content + "\n")
    done = run("run", "--config", str(job), "-o", "s.zarr", cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {job}: ")
    assert problem in done.stderr
    assert "cluster:" not in done.stderr  # nothing started
    assert not (tmp_path / "s.zarr").exists()


def test_the_dashboard_answers_while_the_job_runs(tmp_path, small_photo):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(40):
        iio.imwrite(photos / f"p{i:02d}.png", np.roll(small_photo, 5 * i, axis=0))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            str(photos),
            *["--workers", "1"],
            "--effort",
            "3",
            "-o",
            "s.zarr",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 120
        while not line.startswith("dashboard:") and time.monotonic() < deadline:
            line = process.stderr.readline()
        url = line.split(" ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/status")
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            page = response.read().decode()
        assert "Dask" in page
        assert process.poll() is None  # fetched while the job was still running
        first = process.stderr.readline()
        assert first.startswith("[1/40] ")
    finally:
        process.terminate()
        process.communicate(timeout=60)


def test_a_small_job_gets_threads_and_a_large_one_worker_processes():
    from pipeline.errors import UsageError
    from pipeline.job.cluster import local_kind

    assert local_kind(2, 300_000) == "threads"
    assert local_kind(24, 4 << 30) == "threads"
    assert local_kind(1, 1_731_811_062) == "threads"  # a gigapixel TIFF: threads run it faster
    assert local_kind(25, 1_000) == "processes"  # many images: processes run them faster
    assert local_kind(1, (4 << 30) + 1) == "processes"
    assert local_kind(2, 300_000, workers=2) == "processes"  # worker processes asked for
    assert local_kind(500, 1 << 30, choice="threads") == "threads"
    assert local_kind(1, 1, choice="processes") == "processes"
    with dask.config.set({"pipeline.threads-max-images": 1000, "pipeline.local-cluster": "auto"}):
        assert local_kind(500, 1_000) == "threads"
    with dask.config.set({"pipeline.local-cluster": "threads"}):
        assert local_kind(500, 1 << 30) == "threads"
    with pytest.raises(UsageError, match="local cluster must be one of"):
        local_kind(1, 1, choice="fibers")


def test_a_threaded_cluster_runs_its_first_tasks_while_it_warms_up():
    # A fresh process: the cluster of threads is handed out and runs a task while its warm-up
    # (dask-ml's import, the kernels) is still held up (here by the lock dask-ml is imported
    # under), and the warm-up is over, dask-ml imported, when the block ends.
    script = textwrap.dedent("""
        import gc, sys, threading, time
        from pipeline.job.cluster import connect
        from pipeline.quantize.lloyd import _IMPORTING

        def warming():
            return any(t.name == "pipeline-warm-up" and t.is_alive() for t in threading.enumerate())

        _IMPORTING.acquire()
        with connect(kind="threads", workers=2, dashboard_address=":0") as client:
            during = client.submit(warming, pure=False).result()
            # the warm-up pauses garbage collection while it imports dask-ml (held up here)
            deadline = time.monotonic() + 60
            while gc.get_threshold()[0] != 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            collecting = gc.get_threshold()[0] != 0
            _IMPORTING.release()
        print(during, warming(), "dask_ml" in sys.modules)
        # after, collection again; nothing frozen in a process not the pipeline's own
        print(collecting, gc.isenabled() and gc.get_threshold()[0] > 0, gc.get_freeze_count())
    """)
    # a warm-up before the cluster is handed out would wait for the lock for ever
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "True", "False", "True", "0"]


def test_local_cluster_from_the_environment_and_its_line(tmp_path, small_photo):
    iio.imwrite(tmp_path / "a.png", small_photo)
    forced = {"DASK_PIPELINE__LOCAL_CLUSTER": "threads", "DASK_PIPELINE__THREADS_MAX_IMAGES": "0"}
    done = run("run", "a.png", "-k", "8", cwd=tmp_path, env=forced)
    assert done.returncode == 0, done.stderr
    assert "threads in this process" in done.stderr  # the forced kind wins over the size rule
    help_text = run("run", "--help", cwd=tmp_path, env={"DASK_PIPELINE__THREADS_MAX_IMAGES": "7"})
    assert "threads for up to 7 inputs" in " ".join(help_text.stdout.split())


@pytest.mark.parametrize("stopped", ["scheduler", "scheduler and job"])
def test_a_scheduler_that_goes_away_ends_the_job_with_one_line(tmp_path, stopped):
    """The scheduler stopped (evicted, or with the whole job as a plain ``scancel`` does): the
    job says so in one line at once, without distributed's traceback or its 30 s of
    reconnecting; complete images stay complete."""
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(40):
        iio.imwrite(folder / f"p{i:02}.png", rng.integers(0, 255, (600, 600, 3), dtype=np.uint8))
    cluster = DaskCluster(tmp_path, workers=1)
    log = tmp_path / "job.log"
    try:
        with open(log, "w") as errors:
            job = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "run", str(folder), "-o", "s.zarr",
                 "--colors", "16", "--scheduler", cluster.address],
                cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                text=True,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while "[2/40]" not in log.read_text() and time.monotonic() < deadline:
            assert job.poll() is None, log.read_text()
            time.sleep(0.1)
        cluster.processes[0].terminate()
        stopped_at = time.monotonic()
        if stopped == "scheduler and job":
            job.terminate()
        out, _ = job.communicate(timeout=120)
        took = time.monotonic() - stopped_at
    finally:
        cluster.close()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "distributed" not in text, text
    if stopped == "scheduler":
        assert job.returncode == 1
        assert "error: lost the connection to the scheduler; stopped, " in text
    else:
        assert job.returncode == 143
        assert "interrupted: complete images are kept" in text
    assert took < 25  # not distributed's 30 s of reconnecting
    done = int(re.search(r"(\d+) done", out)[1])
    assert 2 <= done < 40
    # the workers may have completed a batch the job did not hear of: complete all the same
    complete = sum(p.is_dir() for p in (tmp_path / "s.zarr" / ".pipeline" / "complete").iterdir())
    assert done <= complete < 40
    rerun = run("run", str(folder), "-o", "s.zarr", "--colors", "16", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{40 - complete} done, {complete} skipped, 0 failed" in rerun.stdout


@pytest.mark.parametrize("gone", ["killed, fetched at once", "stopped, fetched after"])
def test_a_result_fetched_after_the_scheduler_went_away_is_a_lost_scheduler(tmp_path, gone):
    """The race the test above can hit: a future finished, then the scheduler went away before
    the job fetched its value (which comes through the scheduler). That is the lost scheduler's
    one line, whether the fetch met the closed connection (killed) or the client had already
    cancelled its futures (stopped)."""
    from distributed import Client, wait

    from pipeline.errors import SchedulerLost
    from pipeline.job.run import ClusterExecutor

    cluster = DaskCluster(tmp_path, workers=1)
    try:
        with Client(cluster.address, timeout=30) as client:
            executor = ClusterExecutor(client)
            kept = executor.submit(dask.delayed(sum)([1, 2, 3]))
            failing = executor.submit(dask.delayed(int)("not a number"))
            wait([kept, failing])
            assert executor.outcome(kept) == 6
            assert "ValueError" in executor.outcome(failing).problem  # the work's error: a value
            scheduler = cluster.processes[0]
            if gone.startswith("killed"):
                scheduler.kill()
            else:
                scheduler.terminate()
                scheduler.wait(timeout=30)
            with pytest.raises(SchedulerLost):
                executor.outcome(kept)
    finally:
        cluster.close()
