"""The job's own metrics: what the client counts and sends to the scheduler.

The client counts what happens to each image (:class:`Tally`) and sends its totals to the
scheduler as a Dask event (topic :data:`pipeline.job.metrics_plugin.TOPIC`) at most once a
second and when the job ends. :class:`pipeline.job.metrics_plugin.JobMetrics`, a scheduler plugin
the client registers, serves them beside Dask's own metrics on the scheduler's ``/metrics``,
and on the dashboard's ``/pipeline`` page (:mod:`pipeline.job.dashboard`). A job without a
cluster, or whose cluster never started (a rerun that only skips), sends nothing.

A message stays the same size whatever the number of images: quality is counted in histograms
of fixed bins, and only the last :data:`FAILURES_KEPT` failures are kept.
"""

from __future__ import annotations

import bisect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.results import ImageResult

logger = logging.getLogger(__name__)

#: Seconds between two events of one job (the last one is sent whatever the time).
PUBLISH_SECONDS = 1.0
#: Seconds the job's last event may wait for the scheduler.
LAST_SECONDS = 5.0
#: Bin edges (dB) of the PSNR histogram: a bin below the first edge, one from each edge to the
#: next, one from the last edge up. Lossless images (no PSNR) are counted apart.
PSNR_EDGES = tuple(float(edge) for edge in range(14, 52, 2))
#: Bin edges of the histogram of the images' mean CIEDE2000 colour difference (dE00).
DE00_EDGES = tuple(edge / 2 for edge in range(1, 21))
#: Failures a message keeps: the last ones.
FAILURES_KEPT = 10
#: Characters kept of a failure's reason.
REASON_CHARS = 300


def bin_of(edges: tuple[float, ...], value: float) -> int:
    """Index of the bin of ``value`` in a histogram of ``len(edges) + 1`` bins.

    Bin 0 is below ``edges[0]``; bin ``i`` holds ``edges[i - 1] <= value < edges[i]``; the last
    holds ``value >= edges[-1]``.
    """
    return bisect.bisect_right(edges, value)


def _bins(edges: tuple[float, ...]) -> list[int]:
    return [0] * (len(edges) + 1)


@dataclass
class Totals:
    """What one job has done so far: the message of its events (msgpack-able)."""

    job: str
    store: str
    client: str
    started: float
    done: int = 0
    skipped: int = 0
    failed: int = 0
    pixels: int = 0
    source_bytes: int = 0
    written_bytes: int = 0
    running: bool = True
    updated: float = 0.0
    sequence: int = 0  # events of a job may arrive out of order: the scheduler keeps the last
    expected: int | None = None  # results the job will give (None: not known)
    lossless: int = 0  # images done without loss (no PSNR): in neither histogram
    psnr_edges: tuple[float, ...] = PSNR_EDGES
    psnr_counts: list[int] = field(default_factory=lambda: _bins(PSNR_EDGES))
    de00_edges: tuple[float, ...] = DE00_EDGES
    de00_counts: list[int] = field(default_factory=lambda: _bins(DE00_EDGES))
    failures: list[list[str]] = field(default_factory=list)  # the last: [name, reason]

    def add(self, result: ImageResult) -> None:
        """Count ``result``.

        A done image adds its pixels, input bytes, bytes stored (its palette, labels and the
        labels' pyramid, compressed) and its quality to the histograms; a failed one is kept
        among the last failures.
        """
        setattr(self, result.status, getattr(self, result.status) + 1)
        if result.status == "failed":
            reason = (result.error or "failed").splitlines()[0][:REASON_CHARS]
            self.failures = [*self.failures, [result.name, reason]][-FAILURES_KEPT:]
        if result.status != "done":
            return
        attrs = result.attrs or {}
        shape = attrs.get("image_shape") or (0, 0)
        self.pixels += int(shape[0]) * int(shape[1])
        self.source_bytes += result.size
        metrics = result.metrics
        self.written_bytes += int(metrics.get("stored_bytes", 0) + metrics.get("pyramid_bytes", 0))
        if not metrics:
            return
        if metrics.get("psnr_db") is None:
            self.lossless += 1
            return
        self.psnr_counts[bin_of(self.psnr_edges, float(metrics["psnr_db"]))] += 1
        if metrics.get("ciede2000_mean") is not None:
            self.de00_counts[bin_of(self.de00_edges, float(metrics["ciede2000_mean"]))] += 1


class Tally:
    """Counts a job's results and sends the totals to its cluster's scheduler.

    Parameters
    ----------
    store : str
        The job's store (the ``store`` label of the metrics).
    client : callable
        Returns the cluster's ``distributed.Client`` once the cluster is up, else ``None``:
        nothing is sent while it returns ``None``.
    expected : callable, optional
        Returns how many results the job will give, as known when the totals go out (it grows
        with ``frames: all``); without it, the images left are not known.
    """

    def __init__(
        self, store: str, client: Callable[[], Any], expected: Callable[[], int] | None = None
    ) -> None:
        self._client = client
        self._expected = expected
        self._sent = 0.0
        self._registered: Any = None  # the client the plugin was registered through
        self.totals = Totals(uuid.uuid4().hex, store, "", time.time())

    def each(self, results: Iterable[ImageResult]) -> Iterator[ImageResult]:
        """Yield ``results``, counting each.

        The totals go out at the start (if the cluster is up), then once a second and at the
        end.
        """
        try:
            self.publish()
            for result in results:
                self.totals.add(result)
                if time.monotonic() - self._sent >= PUBLISH_SECONDS:
                    self.publish()
                yield result
        finally:
            self.totals.running = False
            self.publish(last=True)

    def publish(self, last: bool = False) -> None:
        """Send the totals, if the cluster is up (registering the plugin the first time).

        Never holds the job up: the totals go out in the background, except the ``last``,
        which waits for the scheduler at most :data:`LAST_SECONDS`. Nothing is sent while the
        client is not connected (a scheduler gone, or being reconnected to). A failure is noted
        in one line, once; the job goes on without metrics.
        """
        client = self._client()
        if client is None or client.status != "running":
            return
        self._sent = time.monotonic()
        try:
            if self._registered is not client:
                from pipeline.job.metrics_plugin import JobMetrics

                client.register_plugin(JobMetrics())
                self._registered = client
                self.totals.client = client.id
            self.totals.sequence += 1
            self.totals.updated = time.time()
            if self._expected is not None:
                self.totals.expected = self._expected()
            message = asdict(self.totals)
            if last:
                client.sync(_send, client, message, callback_timeout=LAST_SECONDS)
            else:
                client.loop.add_callback(_quietly, _send(client, message))
        except Exception as exc:  # never the job's problem: it still stores every image
            logger.warning("note: job metrics not sent to the scheduler: %s", exc)
            self._client = lambda: None


async def _send(client: Any, message: dict[str, Any]) -> None:
    from pipeline.job.metrics_plugin import TOPIC

    await client.scheduler.log_event(topic=TOPIC, msg=message)


async def _quietly(sending: Awaitable[None]) -> None:
    """Await ``sending``; a failure (the scheduler going away) only loses these totals."""
    try:
        await sending
    except Exception as exc:
        logger.debug("job metrics not sent: %s", exc)
