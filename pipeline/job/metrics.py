"""The job's own metrics: what the client counts and sends to the scheduler.

The client counts what happens to each image (:class:`Tally`) and sends its totals to the
scheduler as a Dask event (topic :data:`pipeline.job.metrics_plugin.TOPIC`) at most once a
second and when the job ends. :class:`pipeline.job.metrics_plugin.JobMetrics`, a scheduler plugin
the client registers, serves
them beside Dask's own metrics on the scheduler's ``/metrics``. A job without a cluster, or
whose cluster never started (a rerun that only skips), sends nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.results import ImageResult

logger = logging.getLogger(__name__)

#: Seconds between two events of one job (the last one is sent whatever the time).
PUBLISH_SECONDS = 1.0
#: Seconds the job's last event may wait for the scheduler.
LAST_SECONDS = 5.0


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

    def add(self, result: ImageResult) -> None:
        """Count ``result``; a done image adds its pixels, input bytes and bytes stored.

        Bytes stored: its palette, labels and the labels' pyramid, compressed.
        """
        setattr(self, result.status, getattr(self, result.status) + 1)
        if result.status == "done":
            attrs = result.attrs or {}
            shape = attrs.get("image_shape") or (0, 0)
            self.pixels += int(shape[0]) * int(shape[1])
            self.source_bytes += result.size
            metrics = result.metrics
            self.written_bytes += int(
                metrics.get("stored_bytes", 0) + metrics.get("pyramid_bytes", 0)
            )


class Tally:
    """Counts a job's results and sends the totals to its cluster's scheduler.

    Parameters
    ----------
    store : str
        The job's store (the ``store`` label of the metrics).
    client : callable
        Returns the cluster's ``distributed.Client`` once the cluster is up, else ``None``:
        nothing is sent while it returns ``None``.
    """

    def __init__(self, store: str, client: Callable[[], Any]) -> None:
        self._client = client
        self._sent = 0.0
        self._registered: Any = None  # the client the plugin was registered through
        self.totals = Totals(uuid.uuid4().hex, store, "", time.time())

    def each(self, results: Iterable[ImageResult]) -> Iterator[ImageResult]:
        """Yield ``results``, counting each; the totals go out once a second and at the end."""
        try:
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
