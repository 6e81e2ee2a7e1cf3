"""deploy/slurm against a real one-node Slurm cluster (munged, slurmctld, slurmd on 127.0.0.1).

The cluster (:mod:`tests.slurmcluster`) is started once for the module in a directory of its
own; the jobs run the real sbatch script and launcher, with real Dask schedulers and workers
(on the loopback interface) writing real stores, which are then verified chunk by chunk.
Skipped, saying why, without root or the Debian packages slurmctld, slurmd, slurm-client and
munge (CI installs them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.inputs.discover import sample_images
from tests.slurmcluster import SlurmCluster, missing, slurm_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing()), reason=f"no Slurm cluster possible: {missing()}"),
]

SLURM = Path(__file__).parent.parent / "deploy" / "slurm"
SBATCH = SLURM / "pipeline.sbatch"
LAUNCHER = SLURM / "launch.py"
#: Small palettes: quick fits, so the jobs' time is mostly the cluster's start.
FAST = ("--colors", "16")
#: Slower fits for the jobs stopped midway: 40 images take 15-25 s on 2 single-threaded workers.
SLOWER = ("--colors", "16", "--effort", "3")
IMAGES = 40


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        # The jobs find this Python's `python` and `dask` on PATH, and use the loopback
        # interface (the only one sure to be there).
        bin_dir = str(Path(sys.executable).parent)
        cluster.env["PATH"] = f"{bin_dir}{os.pathsep}{cluster.env.get('PATH', '')}"
        cluster.env["PIPELINE_INTERFACE"] = "lo"
        yield cluster


@pytest.fixture(scope="module")
def forty_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 PNGs of 256 x 256 pixels: smooth colour fields with noise (many colours)."""
    import imageio.v3 as iio

    folder = tmp_path_factory.mktemp("forty")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256] / 256
    for i in range(IMAGES):
        a, b, c = rng.random(3) * 6
        fields = [np.sin(a * x + b * y), np.cos(3 * b * x * y + c), np.sin(c * y - a * x * x)]
        image = np.stack(fields, axis=-1) * 100 + 128 + rng.normal(0, 20, (256, 256, 3))
        iio.imwrite(folder / f"img{i:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
    return folder


def submit(slurm: SlurmCluster, workdir: Path, *args: str, sbatch: tuple[str, ...] = ()) -> str:
    """sbatch the script from ``workdir`` (its output file and scheduler file go there)."""
    workdir.mkdir(parents=True, exist_ok=True)
    submitted = subprocess.run(
        ["sbatch", "--parsable", *sbatch, str(SBATCH), *args],
        env=slurm.env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip().split(";")[0]


def output(workdir: Path, job_id: str) -> str:
    return (workdir / f"pipeline-{job_id}.out").read_text(errors="replace")


def finished(slurm: SlurmCluster, workdir: Path, job_id: str) -> tuple[dict[str, str], str]:
    """Wait for the job; its completion record (states, exit codes) and its output."""
    slurm.wait_job(job_id)
    return slurm.completion(job_id), output(workdir, job_id)


def assert_succeeded(record: dict[str, str], text: str) -> None:
    """COMPLETED with exit 0:0 (steps included: no worker killed), no traceback anywhere."""
    assert record["JobState"] == "COMPLETED", text
    assert record["ExitCode"] == "0:0", text
    assert record["DerivedExitCode"] == "0:0", text
    assert "Traceback" not in text, text


def complete_names(store: Path) -> list[str]:
    """Images the store lists as complete (damaged ones would warn, and fail the test)."""
    from pipeline.api import open_store

    return sorted(open_store(str(store)))


def assert_whole(store: Path, names: list[str]) -> None:
    """Every chunk of these images exists, decodes and matches its checksums and digests."""
    from pipeline import verify_store

    findings = list(verify_store(str(store), names))
    assert [f.name for f in findings] == sorted(names)
    assert [f.problems for f in findings if not f.whole] == []


def summary(text: str) -> tuple[int, int, int, int]:
    """The pipeline's last "N done, M skipped, F failed, L left" line, as numbers."""
    found = re.findall(
        r"^([\d,]+) done, ([\d,]+) skipped, ([\d,]+) failed, ([\d,]+) left$", text, re.MULTILINE
    )
    assert found, text
    done, skipped, failed, left = (int(n.replace(",", "")) for n in found[-1])
    return done, skipped, failed, left


def markers(store: Path) -> int:
    """Completion markers written so far (read while the job runs)."""
    folder = store / ".pipeline" / "complete"
    return sum(1 for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else 0


# --- the sbatch script -----------------------------------------------------------------------


def test_sbatch_job_completes_with_exit_0_whole_store_and_no_traceback(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    store = tmp_path / "out.zarr"
    job_id = submit(slurm, tmp_path, *sample_images(), "--out", str(store), *FAST)
    record, text = finished(slurm, tmp_path, job_id)
    assert_succeeded(record, text)
    assert summary(text) == (2, 0, 0, 0)
    # the pipeline started once both workers had joined (problem 4)
    assert re.search(r"^scheduler: tcp://127\.0\.0\.1:\d+, 2 worker\(s\)", text, re.MULTILINE)
    assert complete_names(store) == ["china.jpg", "flower.jpg"]
    assert_whole(store, ["china.jpg", "flower.jpg"])
    assert not list(tmp_path.glob("dask-scheduler-*")), "scheduler file left behind"


def test_two_sbatch_jobs_run_at_once_on_one_node(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Each job's scheduler takes a free port: a second job on the node is no clash."""
    jobs = {
        name: submit(
            slurm,
            tmp_path / name,
            *sample_images(),
            "--out",
            str(tmp_path / name / "out.zarr"),
            *FAST,
            sbatch=("--ntasks=1",),
        )
        for name in ("a", "b")
    }
    deadline = time.monotonic() + 120
    while {slurm.job(j).get("JobState") for j in jobs.values()} != {"RUNNING"}:
        assert time.monotonic() < deadline, [slurm.job(j) for j in jobs.values()]
        time.sleep(0.2)
    ports = set()
    for name, job_id in jobs.items():
        record, text = finished(slurm, tmp_path / name, job_id)
        assert_succeeded(record, text)
        assert summary(text) == (2, 0, 0, 0)
        ports.update(re.findall(r"^scheduler: tcp://127\.0\.0\.1:(\d+)", text, re.MULTILINE))
        assert_whole(tmp_path / name / "out.zarr", complete_names(tmp_path / name / "out.zarr"))
    assert len(ports) == 2


def test_sbatch_job_fails_at_once_when_the_scheduler_cannot_start(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """The wait for the scheduler watches its process: no 120 s wait for a dead scheduler."""
    env = dict(slurm.env, PIPELINE_INTERFACE="nosuchif0")
    submitted = subprocess.run(
        ["sbatch", "--parsable", str(SBATCH), *sample_images(), "--out", str(tmp_path / "o.zarr")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    started = time.monotonic()
    record, text = finished(slurm, tmp_path, job_id)
    assert time.monotonic() - started < 60, text
    assert record["JobState"] == "FAILED", text
    assert record["ExitCode"] == "1:0", text
    assert "error: the Dask scheduler exited" in text
    assert "nosuchif0" in text  # distributed's own message, above
    assert not (tmp_path / "o.zarr").exists()
    assert not list(tmp_path.glob("dask-scheduler-*"))


def test_sbatch_mem_gives_each_worker_its_share_of_the_node(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """--mem (per node) is accepted, and split between the node's 2 tasks (problem 3)."""
    store = tmp_path / "out.zarr"
    job_id = submit(
        slurm, tmp_path, *sample_images(), "--out", str(store), *FAST, sbatch=("--mem=3G",)
    )
    record, text = finished(slurm, tmp_path, job_id)
    assert_succeeded(record, text)
    assert re.search(r"^scheduler: \S+, 2 worker\(s\) of 1.50 GiB; ", text, re.MULTILINE), text
    assert_whole(store, complete_names(store))


def test_sbatch_defaults_fit_a_small_node_and_larger_requests_are_refused(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """The script's own size fits a 2-CPU node; --test-only refuses what never could run."""
    fits = slurm.run("sbatch", "--test-only", str(SBATCH), check=False)
    assert fits.returncode == 0, fits.stderr
    assert "to start at" in fits.stderr
    for too_big in (["--ntasks=3"], ["--nodes=2"], ["--nodes=1", "--ntasks-per-node=8"]):
        refused = slurm.run("sbatch", "--test-only", *too_big, str(SBATCH), check=False)
        assert refused.returncode != 0, (too_big, refused.stderr)
        assert "Requested node configuration is not available" in refused.stderr
    # more memory than the node has is refused at submission, no --test-only needed
    refused = slurm.run("sbatch", "--mem=64G", str(SBATCH), check=False)
    assert refused.returncode != 0
    assert "Requested node configuration is not available" in refused.stderr


@pytest.mark.parametrize("how", ["graceful", "plain"])
def test_stopped_job_keeps_complete_images_and_a_resubmission_finishes_the_rest(
    slurm: SlurmCluster, tmp_path: Path, forty_images: Path, how: str
) -> None:
    """graceful: `scancel --batch --signal=USR1` (what the time limit sends too, via --signal):
    the images in flight finish, exit 143, no traceback. plain: `scancel`, everything at once:
    the images in flight are lost. Either way what is listed complete is whole, and the same
    job submitted again does the rest and skips what was done."""
    store = tmp_path / "out.zarr"
    args = (str(forty_images), "--out", str(store), *SLOWER)
    job_id = submit(slurm, tmp_path, *args)
    deadline = time.monotonic() + 120
    while markers(store) < 3:
        assert time.monotonic() < deadline, output(tmp_path, job_id)
        assert slurm.job(job_id).get("JobState") in {"PENDING", "RUNNING"}, slurm.job(job_id)
        time.sleep(0.1)
    if how == "graceful":
        slurm.run("scancel", "--batch", "--signal=USR1", job_id)
    else:
        slurm.run("scancel", job_id)
    record, text = finished(slurm, tmp_path, job_id)
    kept = complete_names(store)
    assert 3 <= len(kept) < IMAGES, text
    if how == "graceful":
        assert record["JobState"] == "FAILED", text
        assert record["ExitCode"] == "143:0", text
        assert record["DerivedExitCode"] == "0:0", text  # the workers ended by themselves
        assert "USR1: asking the pipeline to stop" in text
        assert "Traceback" not in text, text
        assert summary(text) == (len(kept), 0, 0, IMAGES - len(kept)), text
    else:
        assert record["JobState"] == "CANCELLED", text
    assert_whole(store, kept)

    again = submit(slurm, tmp_path, *args)
    record, text = finished(slurm, tmp_path, again)
    assert_succeeded(record, text)
    assert summary(text) == (IMAGES - len(kept), len(kept), 0, 0)
    names = complete_names(store)
    assert len(names) == IMAGES
    assert_whole(store, names)


# --- the launcher (dask-jobqueue) --------------------------------------------------------------


def test_launcher_runs_the_job_on_worker_jobs_and_cancels_them(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    store = tmp_path / "out.zarr"
    logs = tmp_path / "logs"
    launched = subprocess.run(
        [
            sys.executable, str(LAUNCHER), "--jobs", "1", "--cores", "2", "--memory", "2GiB",
            "--walltime", "00:10:00", "--interface", "lo", "--log-directory", str(logs),
            "--dashboard-address", "127.0.0.1:0", "--min-workers", "2", "--wait", "120",
            "--", *sample_images(), "--out", str(store), *FAST,
        ],
        env=slurm.env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    assert summary(launched.stdout + launched.stderr) == (2, 0, 0, 0)
    (worker_output,) = logs.glob("pipeline-worker-*.out")
    worker_job = worker_output.stem.rsplit("-", 1)[1]
    assert slurm.wait_job(worker_job, timeout=60)["JobState"] == "CANCELLED"
    assert_whole(store, ["china.jpg", "flower.jpg"])
