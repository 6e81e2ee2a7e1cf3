"""The dashboard's ``/pipeline`` page: what a job sends, what the scheduler keeps, what it shows.

The aggregation (histograms of fixed bins, the last failures, rates over a thinned history,
images left, a job's state) against plain oracles; then real schedulers: the local cluster's
and ``dask scheduler`` subprocesses (with and without ``--preload pipeline.job.preload``),
asked over real HTTP and opened in headless Chromium, whose numbers must be the job's summary.
"""

import itertools
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from pipeline import compress
from pipeline.job.jobview import History, job_view, left_of, rates, state_of
from pipeline.job.metrics import DE00_EDGES, FAILURES_KEPT, PSNR_EDGES, Tally, Totals
from pipeline.job.metrics_plugin import JOBS_KEPT, TOPIC, JobMetrics, by_store
from pipeline.results import ImageResult
from tests.chromium import assert_not_blank, chromium, needs_chromium, screenshot
from tests.job.test_cluster import DaskCluster
from tests.test_cli import run

# --- what a job sends ---------------------------------------------------------------------------


def done(name, psnr, de00, pixels=(10, 10)):
    metrics = {"psnr_db": psnr, "ciede2000_mean": de00, "stored_bytes": 5, "pyramid_bytes": 0}
    return ImageResult(name, name, "done", attrs={"image_shape": [*pixels, 3], "metrics": metrics})


def in_bins(edges, values):
    """How many of ``values`` fall in each bin: below the first edge, between two, above."""
    bounds = [-math.inf, *edges, math.inf]
    return [sum(lo <= v < hi for v in values) for lo, hi in itertools.pairwise(bounds)]


def test_histograms_count_each_lossy_image_in_its_bin_and_lossless_ones_apart() -> None:
    rng = np.random.default_rng(7)
    psnr = [*rng.uniform(5, 60, 200).round(2), *PSNR_EDGES, 13.999, 50.0]  # edges included
    de00 = [*rng.uniform(0, 14, 200).round(2), *DE00_EDGES, 0.0, 0.4999, 0.5][: len(psnr)]
    totals = Totals("job", "s.zarr", "client", 0.0)
    for i, (p, d) in enumerate(zip(psnr, de00, strict=True)):
        totals.add(done(f"i{i}", p, d))
    for i in range(3):
        totals.add(done(f"lossless{i}", None, 0.0))
    totals.add(ImageResult("s", "s.png", "skipped"))
    totals.add(ImageResult("f", "f.png", "failed", "f.png: bad"))
    assert totals.psnr_counts == in_bins(PSNR_EDGES, psnr)
    assert totals.de00_counts == in_bins(DE00_EDGES, de00)
    assert totals.lossless == 3
    assert sum(totals.psnr_counts) + totals.lossless == totals.done == len(psnr) + 3


def test_a_message_keeps_the_last_failures_each_in_one_line() -> None:
    totals = Totals("job", "s.zarr", "client", 0.0)
    for i in range(25):
        totals.add(ImageResult(f"f{i}", f"f{i}.png", "failed", f"f{i}.png: bad\nsecond line"))
    totals.add(ImageResult("long", "long.png", "failed", "x" * 1000))
    assert totals.failed == 26
    assert [name for name, _ in totals.failures] == [*(f"f{i}" for i in range(16, 25)), "long"]
    assert len(totals.failures) == FAILURES_KEPT
    assert totals.failures[0][1] == "f16.png: bad"
    assert len(totals.failures[-1][1]) == 300
    # the message's size does not grow with the images
    assert len(json.dumps(asdict(totals))) < 3000


def test_the_rates_of_a_steady_job_are_its_rate_however_thinned() -> None:
    history = History(limit=40)
    times = np.arange(0, 300, 0.5)
    for when in times:
        history.add(1000 + when, int(4 * when), int(2_000_000 * when))
    assert len(history.points) <= 40
    assert {p[0] for p in history.points} <= {1000 + t for t in times}
    assert history.points[0][0] == 1000  # the first and the last stay
    assert history.points[-1][0] == 1000 + times[-1]
    assert [p[0] for p in history.points] == sorted({p[0] for p in history.points})
    for _, images, megapixels in rates(history.points):
        assert images == pytest.approx(4)
        assert megapixels == pytest.approx(2)


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        # each rate is measured from the latest point at least 5 s before (or the first)
        (
            [(0, 0, 0), (1, 10, 0), (2, 20, 0), (6, 20, 0), (7, 30, 0)],
            [(1, 10.0), (2, 10.0), (6, 2.0), (7, 2.0)],
        ),
        ([(0, 0, 0), (10, 5, 0), (11, 6, 0)], [(10, 0.5), (11, pytest.approx(6 / 11))]),
        ([(0, 0, 0)], []),
    ],
    ids=["window", "sparse", "one point"],
)
def test_rates_table(points, expected) -> None:
    assert [(when, images) for when, images, _ in rates(points, seconds=5)] == expected


def test_a_time_sent_twice_replaces_the_counts_there() -> None:
    history = History()
    history.add(5.0, 1, 10)
    history.add(5.0, 3, 30)
    history.add(4.0, 4, 40)  # a clock gone back: the counts are the latest
    assert history.points == [(5.0, 4, 40)]


@pytest.mark.parametrize(
    ("fields", "left", "state"),
    [
        ({"running": True, "expected": 10, "done": 3}, 7, "running"),
        ({"running": False, "expected": 10, "done": 8, "skipped": 1, "failed": 1}, 0, "finished"),
        ({"running": False, "expected": 10, "done": 3, "failed": 1}, 6, "stopped"),
        ({"running": False, "gone": True, "expected": 10, "done": 3}, 7, "client gone"),
        ({"running": False, "done": 3}, None, "finished"),  # a job that did not say how many
        ({"running": False, "expected": 2, "done": 3}, 0, "finished"),
    ],
)
def test_left_and_state(fields, left, state) -> None:
    assert left_of(fields) == left
    assert state_of(fields) == state


# --- what the scheduler keeps -------------------------------------------------------------------


def message(job, started, **fields):
    """The first event of job ``job`` (of store s.zarr), sent 10 s after it started."""
    return asdict(
        Totals(job, "s.zarr", "client", started, sequence=1, updated=started + 10, **fields)
    )


def test_the_scheduler_keeps_the_latest_jobs_and_its_counters_never_go_down() -> None:
    plugin = JobMetrics()
    plugin.log_event(TOPIC, message("running", 0.0, done=1, expected=5))
    for i in range(JOBS_KEPT + 5):
        plugin.log_event(TOPIC, message(f"old{i}", 1.0 + i, done=2, running=False))
    assert len(plugin.jobs) == JOBS_KEPT
    assert "running" in plugin.jobs  # the oldest, but running
    views = plugin.views()
    assert [view["job"] for view in views][:2] == [f"old{JOBS_KEPT + 4}", f"old{JOBS_KEPT + 3}"]
    summed = by_store([*plugin.jobs.values(), *plugin.let_go.values()])
    assert summed["s.zarr"]["done"] == 1 + 2 * (JOBS_KEPT + 5)
    assert summed["s.zarr"]["running"] == 1


def test_events_out_of_order_keep_the_latest_and_its_history() -> None:
    plugin = JobMetrics()
    first, second = message("j", 100.0, done=1), message("j", 100.0, done=4, pixels=400)
    second["sequence"], second["updated"] = 2, 104.0
    plugin.log_event(TOPIC, second)
    plugin.log_event(TOPIC, first)
    plugin.log_event("another-topic", {"job": "j", "sequence": 9})
    (view,) = plugin.views()
    assert view["done"] == 4
    assert plugin.histories["j"].points == [(100.0, 0, 0), (104.0, 4, 400)]
    assert view["series"]["images_per_s"] == [1.0]
    plugin.remove_client(None, "client")
    assert plugin.views()[0]["state"] == "client gone"


def test_the_view_of_a_finished_job_is_its_totals() -> None:
    totals = Totals("j", "s.zarr", "c", 100.0)
    for result in [done("a", 30.0, 2.0, (10, 20)), done("b", None, 0.0, (5, 5))]:
        totals.add(result)
    totals.add(ImageResult("c", "c.png", "failed", "c.png: bad"))
    totals.running, totals.updated, totals.expected = False, 104.0, 3
    history = History()
    history.add(100.0, 0, 0)
    history.add(104.0, 3, 225)
    view = job_view(asdict(totals), history)
    assert {key: view[key] for key in ("state", "done", "skipped", "failed", "left")} == {
        "state": "finished",
        "done": 2,
        "skipped": 0,
        "failed": 1,
        "left": 0,
    }
    assert (view["pixels"], view["elapsed"], view["average_images_per_s"]) == (225, 4.0, 0.75)
    assert view["psnr"]["lossless"] == 1
    assert sum(view["psnr"]["counts"]) == 1
    assert view["failures"] == [{"name": "c", "reason": "c.png: bad"}]
    json.dumps(view, allow_nan=False)


# --- real schedulers ----------------------------------------------------------------------------


def dashboard_port(client) -> int:
    return int(client.scheduler_info()["services"]["dashboard"])


def get(port, path, method="GET"):
    """(status, content type, body) of a request to the scheduler's HTTP server."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def jobs_of(port, store) -> list[dict]:
    status, kind, body = get(port, "/pipeline/data.json")
    assert (status, kind) == (200, "application/json")
    return [job for job in json.loads(body)["jobs"] if job["store"] == store]


class Cards(HTMLParser):
    """The jobs the page shows: by job id, its state, store and fields (``data-value``)."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, dict] = {}
        self._job: dict | None = None
        self._store = False

    def handle_starttag(self, tag, attrs) -> None:
        found = dict(attrs)
        if tag == "details" and "data-job" in found:
            self._job = self.jobs.setdefault(found["data-job"], {"state": found["data-state"]})
        elif self._job is not None and tag == "dd" and "data-field" in found:
            self._job[found["data-field"]] = found.get("data-value")
        elif self._job is not None and "store" in (found.get("class") or "").split():
            self._store = True

    def handle_data(self, data) -> None:
        if self._store:
            self._job["store"] = data
            self._store = False


def page_jobs(tmp_path, port) -> dict[str, dict]:
    """The jobs on ``/pipeline`` once Chromium ran its script (no network but the scheduler)."""
    done = chromium(
        tmp_path, f"http://127.0.0.1:{port}/pipeline", "--dump-dom", reach=f"127.0.0.1:{port}"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cards = Cards()
    cards.feed(done.stdout)
    return cards.jobs


def summary_counts(output: str) -> dict[str, int]:
    """done, skipped, failed and left from a job's summary line."""
    found = re.search(r"([\d,]+) done, ([\d,]+) skipped, ([\d,]+) failed, ([\d,]+) left", output)
    assert found, output[-2000:]
    counts = [int(n.replace(",", "")) for n in found.groups()]
    return dict(zip(("done", "skipped", "failed", "left"), counts, strict=True))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(12):
        iio.imwrite(folder / f"i{i:02}.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    iio.imwrite(folder / "flat.png", np.full((20, 20, 3), 7, np.uint8))  # lossless
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


@needs_chromium
def test_a_local_cluster_serves_the_page_while_a_job_runs(client, images, tmp_path) -> None:
    port = dashboard_port(client)
    store = str(tmp_path / "s.zarr")
    results: list[ImageResult] = []
    job = threading.Thread(
        target=lambda: results.extend(compress([str(images)], store, client=client, colors=8))
    )
    job.start()
    try:
        deadline = time.monotonic() + 120
        while get(port, "/pipeline")[0] == 404 or not jobs_of(port, store):
            assert time.monotonic() < deadline, "the job never showed on the page"
            time.sleep(0.1)
        shown = page_jobs(tmp_path, port)
        assert_not_blank(
            screenshot(tmp_path, f"http://127.0.0.1:{port}/pipeline", reach=f"127.0.0.1:{port}"),
            spread=5,
            colours=16,
        )
    finally:
        job.join()
    ours = [card for card in shown.values() if card.get("store") == store]
    assert len(ours) == 1, shown
    assert ours[0]["state"] in ("running", "finished")
    # at the end, the numbers are the job's
    (final,) = jobs_of(port, store)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    assert counts == {"done": 13, "skipped": 0, "failed": 1}
    assert {key: final[key] for key in (*counts, "left", "state")} == {
        **counts,
        "left": 0,
        "state": "finished",
    }
    assert final["psnr"]["lossless"] == 1
    assert sum(final["psnr"]["counts"]) == 12
    assert final["failures"] == [
        {"name": "broken.png", "reason": next(r.error for r in results if r.status == "failed")}
    ]
    assert final["pixels"] == 12 * 48 * 64 + 20 * 20


def test_a_job_stopped_early_shows_what_is_left(client, tmp_path) -> None:
    port = dashboard_port(client)
    store = str(tmp_path / "stopped.zarr")
    tally = Tally(store, lambda: client, expected=lambda: 8)
    results = (ImageResult(f"f{i}", f"f{i}.png", "failed", f"f{i}.png: bad") for i in range(8))
    counting = tally.each(results)
    for _ in range(3):
        next(counting)
    counting.close()  # the job stops after three results: its last totals go out
    (view,) = jobs_of(port, store)
    assert {key: view[key] for key in ("state", "failed", "left", "expected")} == {
        "state": "stopped",
        "failed": 3,
        "left": 5,
        "expected": 8,
    }


@pytest.fixture
def plain_cluster(tmp_path: Path):
    cluster = DaskCluster(tmp_path, workers=1)
    yield cluster
    cluster.close()


@pytest.mark.slow
@needs_chromium
def test_a_dask_scheduler_shows_the_jobs_summary_once_the_job_registered(
    tmp_path, images, plain_cluster
) -> None:
    from distributed import Client

    with Client(plain_cluster.address) as client:
        port = dashboard_port(client)
    assert get(port, "/pipeline")[0] == 404  # no job has registered the page yet
    done = run(
        "run", str(images), "-o", "s.zarr", "--colors", "8", "--scheduler", plain_cluster.address,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # broken.png failed
    summary = summary_counts(done.stdout)
    assert summary == {"done": 13, "skipped": 0, "failed": 1, "left": 0}
    store = str(tmp_path / "s.zarr")
    (view,) = jobs_of(port, store)
    assert {key: view[key] for key in summary} == summary
    assert view["state"] == "finished"
    (card,) = [card for card in page_jobs(tmp_path, port).values() if card["store"] == store]
    assert card["state"] == "finished"
    assert {key: int(card[key]) for key in summary} == summary
    # a rerun skips every image: a second job, listed first
    again = run("run", str(images), "-o", "s.zarr", "--scheduler", plain_cluster.address,
                "--colors", "8", cwd=tmp_path)  # fmt: skip
    rerun = summary_counts(again.stdout)
    assert rerun == {"done": 0, "skipped": 13, "failed": 1, "left": 0}
    latest, first = jobs_of(port, store)
    assert {key: latest[key] for key in rerun} == rerun
    assert first["job"] == view["job"]


@pytest.mark.slow
def test_a_preloaded_dask_scheduler_serves_the_page_from_the_start_and_shrugs_off_odd_requests(
    tmp_path,
) -> None:
    cluster = DaskCluster(tmp_path, workers=0, scheduler_args=("--preload", "pipeline.job.preload"))
    try:
        from distributed import Client

        with Client(cluster.address) as client:
            port = dashboard_port(client)
        status, kind, page = get(port, "/pipeline")
        assert (status, kind) == (200, "text/html; charset=utf-8")
        assert b"data.json" in page
        assert not re.search(rb"""(src|href)=["']?(https?:)?//""", page)  # nothing from elsewhere
        assert json.loads(get(port, "/pipeline/data.json")[2])["jobs"] == []
        answers = {
            (method, path): get(port, path, method)[::2]
            for method, path in [
                ("HEAD", "/pipeline"),
                ("HEAD", "/pipeline/data.json"),
                ("GET", "/pipeline/"),
                ("GET", "/pipeline/data.json?job=%ff&&=x"),
                ("POST", "/pipeline/data.json"),
                ("DELETE", "/pipeline"),
                ("GET", "/pipeline/nothing-here"),
            ]
        }
        assert {key: status for key, (status, _) in answers.items()} == {
            ("HEAD", "/pipeline"): 200,
            ("HEAD", "/pipeline/data.json"): 200,
            ("GET", "/pipeline/"): 200,
            ("GET", "/pipeline/data.json?job=%ff&&=x"): 200,
            ("POST", "/pipeline/data.json"): 405,
            ("DELETE", "/pipeline"): 405,
            ("GET", "/pipeline/nothing-here"): 404,
        }
        assert answers["HEAD", "/pipeline"][1] == b""
        assert b'href="pipeline"' in get(port, "/status")[2]  # the dashboard's top bar links it
        assert get(port, "/metrics")[0] == 200
    finally:
        cluster.close()
    log = (tmp_path / "dask-0.log").read_text()
    assert "Run preload setup: pipeline.job.preload" in log
    assert not re.search(r"Traceback|ERROR|Exception|Uncaught", log), log
