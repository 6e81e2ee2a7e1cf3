"""The job's own metrics on the scheduler's ``/metrics``, beside Dask's (Prometheus).

:class:`JobMetrics` is a scheduler plugin that the job's client registers
(:class:`pipeline.job.metrics.Tally`). It keeps the latest totals each job sends as a Dask event
and serves them, summed by store, from the Prometheus registry of the scheduler's process,
which distributed serves at ``/metrics`` on the dashboard port when ``prometheus-client`` is
installed where the scheduler runs (the ``deploy`` extra). The metrics are listed in
deploy/README.md ("Metrics").

The scheduler imports this module to unpickle the plugin: it imports only the standard library
and ``distributed``. The client's side (:mod:`pipeline.job.metrics`) imports it when it first
sends, so that a job that never starts a cluster does not import ``distributed``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

#: Topic of the Dask events that carry a job's totals.
TOPIC = "pipeline-job"
#: Prefix of every metric name.
NAMESPACE = "pipeline"
#: Statuses of :class:`~pipeline.results.ImageResult`, each a value of the ``status`` label.
STATUSES = ("done", "skipped", "failed")

#: Plugins of the schedulers of this process (tests and local clusters may run several).
_plugins: weakref.WeakSet[JobMetrics] = weakref.WeakSet()
_collector_registered = False


class JobMetrics(SchedulerPlugin):
    """Scheduler plugin: the latest totals of every job, served as Prometheus metrics.

    Registered by the job's client (idempotent: a long-lived scheduler keeps one across jobs
    and sums them by store). A job counts as running until its last event, or until its client
    disconnects (a client killed without a last word).
    """

    name = "pipeline-job-metrics"
    idempotent = True

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    async def start(self, scheduler: Any) -> None:
        """Serve the metrics from this process's Prometheus registry (once per process)."""
        global _collector_registered
        _plugins.add(self)
        if _collector_registered:
            return
        try:
            from prometheus_client import REGISTRY
        except ModuleNotFoundError:  # the scheduler's /metrics says it serves nothing
            return
        REGISTRY.register(_Collector())
        _collector_registered = True

    async def close(self) -> None:
        """Stop serving this scheduler's jobs."""
        _plugins.discard(self)

    def log_event(self, topic: str, msg: Any) -> None:
        """Keep the latest totals a job sends (they may arrive out of order)."""
        if topic == TOPIC and isinstance(msg, dict) and "job" in msg:
            kept = self.jobs.get(str(msg["job"]))
            if kept is None or kept.get("sequence", 0) < msg.get("sequence", 0):
                self.jobs[str(msg["job"])] = msg

    def remove_client(self, scheduler: Any, client: str) -> None:
        """A job whose client left is no longer running, whatever it last said."""
        for totals in self.jobs.values():
            if totals.get("client") == client:
                totals["running"] = False


#: Fields of :class:`Totals` summed over a store's jobs (``running`` counts the jobs running,
#: ``updated`` is the latest).
_SUMMED = (*STATUSES, "pixels", "source_bytes", "written_bytes", "running", "updated")


def by_store(jobs: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The totals of ``jobs`` (messages of :class:`Totals`), summed by store."""
    summed: dict[str, dict[str, float]] = {}
    for totals in jobs:
        into = summed.setdefault(str(totals["store"]), dict.fromkeys(_SUMMED, 0.0))
        for key in _SUMMED[:-1]:
            into[key] += float(totals.get(key, 0))
        into["updated"] = max(into["updated"], float(totals.get("updated", 0.0)))
    return summed


class _Collector:
    """Prometheus collector over the jobs of this process's schedulers."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        images = CounterMetricFamily(
            f"{NAMESPACE}_images",
            "Images whose result is known, by status: done (compressed and complete in the "
            "store), skipped (already complete with the same settings), failed",
            labels=["store", "status"],
        )
        counters = {
            key: CounterMetricFamily(f"{NAMESPACE}_{key}", text, labels=["store"])
            for key, text in (
                ("pixels", "Pixels of the images done"),
                ("source_bytes", "Bytes of the input files of the images done"),
                (
                    "written_bytes",
                    "Compressed bytes of palette, labels and pyramid of the images done",
                ),
            )
        }
        running = GaugeMetricFamily(
            f"{NAMESPACE}_jobs_running", "Jobs writing the store now", labels=["store"]
        )
        updated = GaugeMetricFamily(
            f"{NAMESPACE}_last_update_timestamp_seconds",
            "When a job of the store last sent its totals (Unix time)",
            labels=["store"],
        )
        summed = by_store(totals for plugin in list(_plugins) for totals in plugin.jobs.values())
        for store, values in sorted(summed.items()):
            for status in STATUSES:
                images.add_metric([store, status], values[status])
            for key, family in counters.items():
                family.add_metric([store], values[key])
            running.add_metric([store], values["running"])
            updated.add_metric([store], values["updated"])
        yield images
        yield from counters.values()
        yield running
        yield updated
