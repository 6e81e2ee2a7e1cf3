"""The job's own metrics on the scheduler's /metrics, beside Dask's, scraped over real HTTP."""

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import compress
from pipeline.job.metrics import Tally, Totals
from pipeline.results import ImageResult
from tests.job.test_cluster import DaskCluster

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``http://127.0.0.1:port/metrics``, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def job_samples(samples: Samples, store: str) -> dict[str, float]:
    """The pipeline's samples of ``store``, by name (``images_total`` by ``status``)."""
    found = {}
    for (name, labels), value in samples.items():
        tags = dict(labels)
        if name.startswith("pipeline_") and tags.get("store") == store:
            found[name + (f":{tags['status']}" if "status" in tags else "")] = value
    return found


def scheduler_port(client) -> int:
    return int(client.scheduler_info()["services"]["dashboard"])


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(40, 60), (33, 17)]):
        iio.imwrite(folder / f"i{i}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_totals_count_pixels_and_bytes_of_done_images_only() -> None:
    totals = Totals("job", "s.zarr", "client", 0.0)
    done = {"image_shape": [4, 5, 3], "metrics": {"stored_bytes": 70, "pyramid_bytes": 9}}
    totals.add(ImageResult("a", "a.png", "done", attrs=done, size=100))
    totals.add(ImageResult("b", "b.png", "skipped", size=1000))
    totals.add(ImageResult("c", "c.png", "failed", "c.png: bad", size=10))
    assert (totals.done, totals.skipped, totals.failed) == (1, 1, 1)
    assert (totals.pixels, totals.source_bytes, totals.written_bytes) == (20, 100, 79)


def test_a_job_without_a_cluster_sends_nothing_and_yields_every_result() -> None:
    results = [ImageResult("a", "a.png", "failed", "a.png: bad")]
    tally = Tally("s.zarr", lambda: None)
    assert list(tally.each(results)) == results
    assert tally.totals.failed == 1
    assert not tally.totals.running


def test_the_scheduler_serves_the_jobs_totals_by_store(client, images: Path, tmp_path) -> None:
    store = str(tmp_path / "s.zarr")
    port = scheduler_port(client)
    results = compress([str(images)], store, client=client, colors=8)
    assert sorted(r.status for r in results) == ["done", "done", "failed"]
    first = job_samples(scrape(port), store)
    assert first == {
        "pipeline_images_total:done": 2,
        "pipeline_images_total:skipped": 0,
        "pipeline_images_total:failed": 1,
        "pipeline_pixels_total": 40 * 60 + 33 * 17,
        "pipeline_source_bytes_total": sum(r.size for r in results if r.status == "done"),
        "pipeline_written_bytes_total": sum(
            r.metrics["stored_bytes"] for r in results if r.status == "done"
        ),
        "pipeline_jobs_running": 0,
        "pipeline_last_update_timestamp_seconds": pytest.approx(time.time(), abs=60),
    }
    # a second job on the same scheduler adds to the store's counters
    again = compress([str(images)], store, client=client, colors=8)
    assert sorted(r.status for r in again) == ["failed", "skipped", "skipped"]
    second = job_samples(scrape(port), store)
    assert second["pipeline_images_total:skipped"] == 2
    assert second["pipeline_images_total:failed"] == 2
    assert second["pipeline_images_total:done"] == 2
    assert second["pipeline_pixels_total"] == first["pipeline_pixels_total"]
    # Dask's own metrics are served beside them
    assert any(name == "dask_scheduler_workers" for name, _ in scrape(port))


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    cluster = DaskCluster(tmp_path, workers=1)
    yield cluster
    cluster.close()


@pytest.mark.slow
def test_a_dask_scheduler_serves_a_running_jobs_metrics_and_workers_serve_theirs(
    tmp_path: Path, dask_cluster: DaskCluster
) -> None:
    from distributed import Client

    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(40):
        iio.imwrite(folder / f"p{i:02}.png", rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    store = str(tmp_path / "many.zarr")
    with Client(dask_cluster.address) as client:
        port = scheduler_port(client)
        (worker,) = client.scheduler_info()["workers"].values()
        worker_port = int(worker["services"]["dashboard"])
    assert any(name.startswith("dask_worker_") for name, _ in scrape(worker_port))

    job = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(folder), "-o", store, "--colors", "8",
         "--scheduler", dask_cluster.address],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        seen: dict[str, float] = {}
        while time.monotonic() < deadline and job.poll() is None:
            seen = job_samples(scrape(port), store)
            if seen.get("pipeline_images_total:done", 0) >= 1:
                break
            time.sleep(0.2)
        assert seen.get("pipeline_jobs_running") == 1, seen
        assert 1 <= seen["pipeline_images_total:done"] < 40
        # a client killed without a last word no longer counts as running
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
        deadline = time.monotonic() + 60
        while job_samples(scrape(port), store)["pipeline_jobs_running"] and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert job_samples(scrape(port), store)["pipeline_jobs_running"] == 0
    finally:
        job.kill()
        job.wait()
