"""The job's own metrics on the scheduler: ``/metrics`` (Prometheus) and the ``/pipeline`` page.

:class:`JobMetrics` is a scheduler plugin that the job's client registers
(:class:`pipeline.job.metrics.Tally`), or that a scheduler started with
``--preload pipeline.job.preload`` has from the start. It keeps the latest totals each job
sends as a Dask event, and a history of them (:class:`pipeline.job.jobview.History`), for the
last :data:`JOBS_KEPT` jobs. It serves them:

* summed by store, from the Prometheus registry of the scheduler's process, which distributed
  serves at ``/metrics`` on the dashboard port when ``prometheus-client`` is installed where
  the scheduler runs (the ``deploy`` extra). The metrics are listed in deploy/README.md
  ("Metrics"). A job let go adds its totals to its store's, so counters never go down;
* job by job on the dashboard's ``/pipeline`` page (:mod:`pipeline.job.dashboard`).

The scheduler imports this module to unpickle the plugin: it imports only the standard library,
``distributed`` (and tornado, which distributed serves its pages with). The client's side
(:mod:`pipeline.job.metrics`) imports it when it first sends, so that a job that never starts a
cluster does not import ``distributed``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from pipeline.job.dashboard import serve
from pipeline.job.jobview import History, job_view, results_of

#: Topic of the Dask events that carry a job's totals.
TOPIC = "pipeline-job"
#: Prefix of every metric name.
NAMESPACE = "pipeline"
#: Statuses of :class:`~pipeline.results.ImageResult`, each a value of the ``status`` label.
STATUSES = ("done", "skipped", "failed")
#: Jobs a scheduler keeps (the oldest that are not running are let go first).
JOBS_KEPT = 20

#: Plugins of the schedulers of this process (tests and local clusters may run several).
_plugins: weakref.WeakSet[JobMetrics] = weakref.WeakSet()
_collector_registered = False


class JobMetrics(SchedulerPlugin):
    """Scheduler plugin: the latest totals of every job, as Prometheus metrics and a page.

    Registered by the job's client, or by the scheduler's preload (idempotent: a long-lived
    scheduler keeps one across jobs and sums them by store). A job counts as running until its
    last event, or until its client disconnects (a client killed without a last word: its
    ``gone`` is then set).
    """

    name = "pipeline-job-metrics"
    idempotent = True

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.histories: dict[str, History] = {}
        self.let_go: dict[str, dict[str, Any]] = {}  # the jobs let go, summed by store

    async def start(self, scheduler: Any) -> None:
        """Serve the ``/pipeline`` page, and the metrics from the process's Prometheus registry.

        The registry serves the jobs of every scheduler of the process (registered once).
        """
        global _collector_registered
        _plugins.add(self)
        serve(scheduler, self.name)
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
        """Keep the latest totals a job sends (they may arrive out of order), and their history."""
        if topic != TOPIC or not isinstance(msg, dict) or "job" not in msg:
            return
        job = str(msg["job"])
        kept = self.jobs.get(job)
        if kept is not None and kept.get("sequence", 0) >= msg.get("sequence", 0):
            return
        self.jobs[job] = msg
        history = self.histories.get(job)
        if history is None:
            history = self.histories[job] = History()
            history.add(float(msg.get("started", 0.0)), 0, 0)
        history.add(float(msg.get("updated", 0.0)), results_of(msg), int(msg.get("pixels", 0)))
        if kept is None:
            self._let_go_beyond(JOBS_KEPT)

    def remove_client(self, scheduler: Any, client: str) -> None:
        """A job whose client left is no longer running, whatever it last said."""
        for totals in self.jobs.values():
            if totals.get("client") == client and totals.get("running"):
                totals["running"] = False
                totals["gone"] = True

    def views(self) -> list[dict[str, Any]]:
        """The jobs kept, latest first, as the ``/pipeline`` page shows them."""
        latest = sorted(self.jobs.values(), key=lambda totals: -float(totals.get("started", 0)))
        return [job_view(totals, self.histories[str(totals["job"])]) for totals in latest]

    def _let_go_beyond(self, kept: int) -> None:
        """Let the oldest jobs that are not running go, until ``kept`` jobs are left.

        Their totals are added to their store's (:attr:`let_go`); running jobs stay.
        """
        ended = sorted(
            (totals for totals in self.jobs.values() if not totals.get("running")),
            key=lambda totals: float(totals.get("started", 0)),
        )
        for totals in ended[: max(0, len(self.jobs) - kept)]:
            del self.jobs[str(totals["job"])]
            del self.histories[str(totals["job"])]
            summed = by_store([*self.let_go.values(), totals])
            self.let_go = {store: {"store": store, **values} for store, values in summed.items()}


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
        summed = by_store(
            totals
            for plugin in list(_plugins)
            for totals in [*plugin.jobs.values(), *plugin.let_go.values()]
        )
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
