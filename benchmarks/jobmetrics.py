"""Job metrics at 10^5 images: what counting and sending the totals costs the client.

Feeds N synthetic results (done, with attributes like a real image's; every 50th failed)
through :class:`pipeline.job.metrics.Tally`, once with no cluster (counting only) and once
sending to a real scheduler (a threaded ``LocalCluster`` in this process, as a small job has),
and scrapes the scheduler's ``/metrics`` at the end. Reported per N: microseconds per result
(median of ``--repeat`` runs, alternating), events sent (at most one a second, plus the last),
the scrape's time and size (they depend on the number of stores, not of images), and whether
the scraped totals equal the results fed.

Usage: python benchmarks/jobmetrics.py [--sizes 1000 10000 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from distributed import Client, LocalCluster
from prometheus_client.parser import text_string_to_metric_families

from pipeline.job.metrics import Tally
from pipeline.job.metrics_plugin import TOPIC
from pipeline.results import ImageResult

ATTRS = {"image_shape": [64, 64, 3], "metrics": {"stored_bytes": 2100}}


def results(n: int) -> Iterator[ImageResult]:
    for i in range(n):
        if i % 50 == 49:
            yield ImageResult(f"i{i}", f"i{i}.png", "failed", f"i{i}.png: bad", size=900)
        else:
            yield ImageResult(f"i{i}", f"i{i}.png", "done", attrs=ATTRS, seconds=0.01, size=9000)


def feed(n: int, client: Any, store: str) -> float:
    """Seconds per result of a tally of ``n`` results (sent to ``client``'s scheduler)."""
    tally = Tally(store, lambda: client)
    start = time.perf_counter()
    for _ in tally.each(results(n)):
        pass
    return (time.perf_counter() - start) / n


def scrape(port: int, store: str) -> tuple[float, int, dict[str, float]]:
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        text = response.read().decode()
    seconds = time.perf_counter() - start
    values = {
        sample.name + (f":{sample.labels['status']}" if "status" in sample.labels else ""): (
            sample.value
        )
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("store") == store
    }
    return seconds, len(text), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        port = cluster.scheduler.http_server.port
        for n in args.sizes:
            alone, sent = [], []
            for r in range(args.repeat):
                alone.append(feed(n, None, "none"))
                before = len(client.get_events(TOPIC))
                sent.append(feed(n, client, f"s{n}-{r}"))
                events = len(client.get_events(TOPIC)) - before
            seconds, size, values = scrape(port, f"s{n}-{args.repeat - 1}")
            failed = n // 50
            right = (
                values["pipeline_images_total:done"] == n - failed
                and values["pipeline_images_total:failed"] == failed
                and values["pipeline_pixels_total"] == (n - failed) * 64 * 64
                and values["pipeline_written_bytes_total"] == (n - failed) * 2100
            )
            rows.append((n, alone, sent, events, seconds, size, right))
    print(
        "| results | counting only, us/result | counting + sending, us/result | events sent "
        "(last run) | scrape ms | scrape bytes | scraped totals right |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, alone, sent, events, seconds, size, right in rows:
        print(
            f"| {n:,} | {statistics.median(alone) * 1e6:.2f} | "
            f"{statistics.median(sent) * 1e6:.2f} | {events} | {seconds * 1e3:.1f} | {size:,} | "
            f"{'yes' if right else 'NO'} |"
        )


if __name__ == "__main__":
    main()
