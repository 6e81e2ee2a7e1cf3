"""Run a job's work items: one loop, on a distributed cluster or in this process.

At most ``in_flight`` tasks' worth of work per thread of the cluster is submitted at once (the
count follows workers joining and leaving); new work is submitted as work completes, so the
client and the scheduler hold a bounded amount whatever the number of images, and images
complete roughly in input order. A large image counts as its chunks (up to half the bound).

A first SIGINT/SIGTERM stops submitting; work in flight gets ``stop_grace`` seconds to finish,
then the rest is cancelled and :class:`~pipeline.job.stopping.Interrupted` is raised. A second
signal interrupts at once. Either way every image reported done is complete in the store, and
images left ``"writing"`` are redone by the next run.

An image failing because the store can no longer be written (a full or read-only disk: see
:attr:`pipeline.job.tasks.Failed.unwritable`), or a lease renewal failing for that reason, stops the
job without a grace period (work in flight would fail the same way): the rest is cancelled and
:class:`~pipeline.errors.StoreUnwritable` is raised after the results known so far.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dask

from pipeline.errors import LeaseLost, PipelineError, SchedulerLost, StoreUnwritable
from pipeline.inputs.sources import Probe, Source
from pipeline.job import stopping
from pipeline.job.cluster import OnDemand
from pipeline.job.graph import (
    Placement,
    batch_graph,
    fewest_blocks,
    fit_graph,
    held_blocks,
    probe_graph,
    source_from_probe,
    whole_graph,
    write_graph,
)
from pipeline.job.news import Listener
from pipeline.job.plan import Given, Item, Large, Refuse, Skip, WorkEstimate
from pipeline.job.tasks import Deferred, Done, Failed, Job, Spec, failure, outcome_of
from pipeline.results import ImageResult
from pipeline.settings import Running
from pipeline.store.lease import RECHECK_SECONDS, Lease
from pipeline.store.read import read_attrs
from pipeline.store.write import remove_marker, write_marker

#: Seconds between checks for finished work (and for a stop request).
POLL_SECONDS = 0.1
#: Seconds between refreshes of the cluster's thread count.
REFRESH_SECONDS = 1.0


class LocalExecutor:
    """Work computed one item at a time in this process, on dask's current scheduler."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pipeline")

    def threads(self) -> int:
        """Threads working (one)."""
        return 1

    def workers(self) -> list[str]:
        """No workers to place tasks on."""
        return []

    def start(self) -> None:
        """Nothing to start: no cluster (no client to listen through)."""

    def submit(self, graph: Any) -> concurrent.futures.Future[Any]:
        """Start computing ``graph``."""
        return self._pool.submit(lambda: dask.compute(graph)[0])

    def wait(self, futures: Iterable[Any], timeout: float) -> set[Any]:
        """Futures among ``futures`` done within ``timeout`` seconds."""
        done, _ = concurrent.futures.wait(
            list(futures), timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
        )
        return done

    def outcome(self, future: Any) -> Any:
        """A finished future's value, or the :class:`Failed` of the exception its work raised."""
        return _outcome(future)

    def chain(self, future: Any) -> Any:
        """What a later graph uses of a finished future: its value."""
        return future.result()

    def cancel(self, futures: Iterable[Any]) -> None:
        """Cancel work not started yet."""
        for future in futures:
            future.cancel()

    def live_client(self) -> None:
        """No cluster: nothing to report to."""

    def close(self) -> None:
        """Stop the thread (after its current item)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class ClusterExecutor:
    """Work computed on a distributed cluster.

    ``cluster``: a ``distributed.Client``, or a :class:`pipeline.job.cluster.OnDemand` whose
    cluster starts when the first work is submitted.
    """

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._threads = (0, 0.0)

    @property
    def client(self) -> Any:
        """The cluster's client (started now if it is not up yet)."""
        cluster = self._cluster
        return cluster.client() if isinstance(cluster, OnDemand) else cluster

    def live_client(self) -> Any:
        """The cluster's client if the cluster is up, else ``None`` (never starts it)."""
        cluster = self._cluster
        return None if isinstance(cluster, OnDemand) and not cluster.up else self.client

    def threads(self) -> int:
        """Threads of the cluster's workers now (refreshed at most once a second).

        Of a cluster started on demand and not up yet, the threads it will have.
        """
        cluster = self._cluster
        if isinstance(cluster, OnDemand) and not cluster.up and cluster.planned is not None:
            return cluster.planned
        count, when = self._threads
        now = time.monotonic()
        if now - when > REFRESH_SECONDS:
            count = sum(self.client.nthreads().values())
            self._threads = (count, now)
        return count

    def workers(self) -> list[str]:
        """Addresses of the workers, for placing the tasks of an image decoded whole."""
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def start(self) -> Any:
        """The cluster's client, starting the cluster if it is not up yet."""
        return self.client

    def submit(self, graph: Any) -> Any:
        """Start computing ``graph`` on the cluster."""
        return self.client.compute(graph)

    def wait(self, futures: Iterable[Any], timeout: float) -> set[Any]:
        """Futures among ``futures`` done within ``timeout`` seconds.

        Raises
        ------
        SchedulerLost
            Once the client gave up reconnecting to the scheduler.
        """
        from distributed import wait
        from distributed.client import FuturesCancelledError

        try:
            done, _ = wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return set()
        except FuturesCancelledError as exc:
            if any(g.reason == "scheduler-connection-lost" for g in exc.error_groups):
                raise SchedulerLost() from None
            raise
        return set(done)

    def outcome(self, future: Any) -> Any:
        """A finished future's value, or the :class:`Failed` of the exception its work raised.

        Raises
        ------
        SchedulerLost
            If the scheduler went away before the value came back (the value comes through it).
        """
        from distributed.client import FutureCancelledError

        try:
            return _outcome(future)
        except OSError:  # distributed's CommClosedError: the work's own errors come as values
            raise SchedulerLost() from None
        except FutureCancelledError as exc:
            if exc.reason == "scheduler-connection-lost":
                raise SchedulerLost() from None
            raise

    def chain(self, future: Any) -> Any:
        """What a later graph uses of a finished future: the future (its data stays put)."""
        return future

    def cancel(self, futures: Iterable[Any]) -> None:
        """Cancel work in flight (nothing to do without a scheduler: its work is gone).

        A cluster still starting has nothing in flight, and is not waited for.
        """
        client = self.live_client()
        if client is not None and client.status == "running":
            client.cancel(list(futures))

    def close(self) -> None:
        """Nothing to stop: the cluster belongs to the caller."""


Executor = LocalExecutor | ClusterExecutor


def _outcome(future: Any) -> Any:
    """A finished future's value, or the :class:`Failed` of the exception its work raised."""
    error = future.exception()
    return failure(error) if error is not None else future.result()


@dataclass
class Flight:
    """Work submitted and not finished yet.

    ``phase``: ``"batch"``, ``"probe"`` (a large input's header), ``"fit"`` (of an image read
    chunk by chunk) or ``"image"`` (a graph ending in the image's finish task).
    """

    phase: str
    units: int
    specs: tuple[Spec, ...]
    started: float = field(default_factory=time.monotonic)
    source: Source | None = None
    keep: Any = None  # a fit future the image's graph uses
    batch: str = ""  # a batch's id in the news of its images (pipeline.job.news)
    reported: set[int] = field(default_factory=set)  # images of a batch reported from news


class Runner:
    """Submit work items as capacity frees and report one :class:`ImageResult` per image.

    Images of a batch are reported as the batch announces them (:mod:`pipeline.job.news`),
    the rest when the batch returns.
    """

    def __init__(
        self,
        job: Job,
        running: Running,
        executor: Executor,
        lease: Lease | None = None,
        notify: Callable[[str], None] | None = None,
        estimate: WorkEstimate | None = None,
    ) -> None:
        self.job = job
        self.running = running
        self.executor = executor
        self.lease = lease
        self.notify = notify or (lambda text: None)
        self.pending: dict[Any, Flight] = {}
        self.batches: dict[str, Flight] = {}  # batches in flight, by id
        self.units = 0
        self.ready: deque[tuple[Spec, Probe | Source]] = deque()  # large images to submit
        self.unwritable: str | None = None  # why the store can no longer be written
        self.news = Listener(job.run)
        self.cancelled: float | None = None  # when work in flight was cancelled (stopping)
        self.estimate = estimate or WorkEstimate()  # learns the batched images' times

    def limit(self) -> int:
        """Most units in flight now."""
        return self.running.in_flight * max(1, self.executor.threads())

    def run(self, items: Iterable[Item]) -> Iterator[ImageResult]:
        """Results in completion order (skips and refusals as soon as they are planned).

        When the job stops early (any of the errors below), the work in flight is cancelled;
        :meth:`settle` then says which of its images were completed all the same.

        Raises
        ------
        StoreUnwritable
            After the results known so far, once the store can no longer be written.
        LeaseLost
            Once the job no longer holds the store's lease (taken over, or not renewed in time).
        SchedulerLost
            Once the cluster's scheduler is gone (the images done so far are complete).
        stopping.Interrupted
            When asked to stop by a signal.
        """
        with self.news, stopping.checked():
            try:
                yield from self._loop(iter(items))
            except (stopping.Interrupted, StoreUnwritable, LeaseLost, SchedulerLost):
                self.executor.cancel(self.pending)
                self.cancelled = time.monotonic() if self.pending else None
                yield from self._news()
                raise
            except BaseException:  # a bug, or the caller closing the results early
                self.executor.cancel(self.pending)
                raise

    def settle(self) -> Iterator[ImageResult]:
        """After the job stopped early and gave up the store: what its work in flight completed.

        Call once the run's lease is released. Tasks that were cancelled may still be running
        (a task cannot be stopped midway), but from then on none of their writes passes the
        store's fence, once the processes running them have read the lease again (at most
        :data:`~pipeline.store.lease.RECHECK_SECONDS` later: waited for here, when there was
        work in flight). An image is done if the store then holds it complete, written by this
        run (its attributes read: one request per image in flight, whatever the job's size);
        the others are left for the next run. So the results agree with the store.
        """
        if self.cancelled is not None:
            time.sleep(max(0.0, self.cancelled + RECHECK_SECONDS - time.monotonic()))
        unreported = [
            spec
            for flight in self.pending.values()
            for index, spec in enumerate(flight.specs)
            if index not in flight.reported
        ]
        self.pending.clear()
        self.batches.clear()
        for spec in unreported:
            try:
                attrs = read_attrs(self.job.store, spec.name)
            except (PipelineError, OSError):  # not there, or not whole: not done
                continue
            if attrs.get("status") == "complete" and attrs.get("run") == self.job.run:
                yield _result(spec, "done", attrs=Done.of(spec.name, attrs, 0.0).attrs)

    def _loop(self, todo: Iterator[Item]) -> Iterator[ImageResult]:
        exhausted = False
        deadline: float | None = None
        while True:
            if stopping.hard():  # a second signal: stop now
                raise stopping.Interrupted(stopping.requested())
            if deadline is None and stopping.requested():
                deadline = time.monotonic() + self.running.stop_grace
                flying = len(self.pending)
                these = f"{flying:,} tasks in flight get" if flying > 1 else "1 task in flight gets"
                self.notify(
                    f"stopping: submitting nothing more; {these} "
                    f"{self.running.stop_grace:g} s to finish (a second signal stops at once)"
                    if flying
                    else "stopping: submitting nothing more, nothing was in flight"
                )
            if self.lease is not None and self.lease.lost():
                if (reason := self.lease.unwritable()) is not None:
                    raise StoreUnwritable(self.job.store.url, reason)
                raise LeaseLost(f"{self.job.store}: {self.lease.why_lost()}")
            while not stopping.requested() and self.units < self.limit():
                if self.ready:
                    self._submit_image(*self.ready.popleft())
                    continue
                if exhausted:
                    break
                item = next(todo, None)
                if item is None:
                    exhausted = True
                    break
                yield from self._start(item)
            if not self.pending:
                if deadline is not None:
                    raise stopping.Interrupted(stopping.requested())
                if exhausted and not self.ready:
                    return
                continue
            try:  # the scheduler may go away while waiting or while fetching a result
                finished = self.executor.wait(self.pending, POLL_SECONDS)
                yield from self._news()
                for future in finished:
                    yield from self._finished(future, self.pending.pop(future))
            except SchedulerLost:
                if stopping.requested():  # asked to stop, and the cluster went first
                    raise stopping.Interrupted(stopping.requested()) from None
                raise
            if self.unwritable is not None:
                raise StoreUnwritable(self.job.store.url, self.unwritable)
            if deadline is not None and time.monotonic() >= deadline:
                self.notify(f"stopping: cancelled {len(self.pending)} tasks still in flight")
                raise stopping.Interrupted(stopping.requested())

    def _news(self) -> Iterator[ImageResult]:
        """Images of batches in flight that their tasks announced finished since last time."""
        for news in self.news.take():
            flight = self.batches.get(news["batch"])
            if flight is None:
                continue  # its batch returned already
            for index, outcome in news["images"]:
                if index in flight.reported or not 0 <= index < len(flight.specs):
                    continue  # the image was reported already
                flight.reported.add(index)
                yield self._outcome(flight.specs[index], outcome_of(outcome))

    def _start(self, item: Item) -> Iterator[ImageResult]:
        if isinstance(item, Skip):
            if item.heal:  # complete by its metadata: record it, so the next run lists it
                if item.spec.stale is not None:
                    remove_marker(self.job.store, item.spec.name, item.spec.stale)
                write_marker(self.job.store, item.spec.name, item.spec.key)
            yield _result(item.spec, "skipped")
        elif isinstance(item, Refuse):
            yield _result(item.spec, "failed", error=item.error)
        elif isinstance(item, Given):
            self.ready.append((item.spec, item.source))
        else:
            # the cluster, started now if need be (seconds): asked to stop meanwhile, the item
            # is left for the next run; news is subscribed to before any work is submitted
            self.news.subscribe(self.executor.start())
            if stopping.requested():
                return
            if isinstance(item, Large):
                self._launch(probe_graph(item.spec, self.job), Flight("probe", 1, (item.spec,)))
                return
            graph = batch_graph(item.specs, self.job)
            flight = Flight("batch", 1, item.specs, batch=graph.key)
            self.batches[flight.batch] = flight
            self._launch(graph, flight)

    def _launch(self, graph: Any, flight: Flight) -> None:
        self.pending[self.executor.submit(graph)] = flight
        self.units += flight.units

    def _share(self, chunks: int) -> int:
        return max(1, min(chunks, self.limit() // 2))

    def _submit_image(self, spec: Spec, opened: Probe | Source) -> None:
        """Submit the graph of a large image (after its probe) or of an array."""
        settings = self.job.settings
        if isinstance(opened, Probe) and opened.kind == "whole":
            workers = self.executor.workers()
            placed: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if workers:  # left to itself, the scheduler ships the decoded image around
                n = len(self.pending)
                place = Placement(workers[n % len(workers)], workers[(n + 1) % len(workers)])
                placed = dask.annotate(workers=place, allow_other_workers=True)
            with placed:
                graph, chunks = whole_graph(spec, opened, self.job)
            self._launch(graph, Flight("image", self._share(chunks), (spec,)))
            return
        source = (
            opened
            if isinstance(opened, Source)
            else source_from_probe(
                opened,
                spec.name,
                settings.chunk,
                spec.token,
                fewest_blocks(self.executor.threads()),
            )
        )
        held = held_blocks(source.image, self.running.hold_bytes) if source.streamed else None
        if held == 0:  # no chunk held: fit first, then label (two graphs, read twice)
            flight = Flight("fit", self._share(source.image.npartitions), (spec,), source=source)
            self._launch(fit_graph(source, settings), flight)
        else:
            fit = fit_graph(source, settings)
            graph, chunks = write_graph(source, spec, self.job, fit, held)
            self._launch(graph, Flight("image", self._share(chunks), (spec,)))

    def _finished(self, future: Any, flight: Flight) -> Iterator[ImageResult]:
        self.units -= flight.units
        self.batches.pop(flight.batch, None)
        value = self.executor.outcome(future)
        if flight.phase == "batch" and not isinstance(value, Failed):
            # fewer outcomes than images when the store became unwritable: the rest not attempted
            for index, (spec, outcome) in enumerate(zip(flight.specs, value, strict=False)):
                if isinstance(outcome, Deferred):
                    self.ready.append((spec, outcome.found))
                elif index not in flight.reported:
                    yield self._outcome(spec, outcome)
            return
        seconds = time.monotonic() - flight.started
        if isinstance(value, Failed):  # a whole batch fails only if its task was lost
            for index, spec in enumerate(flight.specs):
                if index not in flight.reported:  # those announced are complete
                    yield self._outcome(spec, value, seconds)
            return
        (spec,) = flight.specs
        if flight.phase == "probe":
            self.ready.append((spec, value))
        elif flight.phase == "fit":
            assert flight.source is not None
            fit = self.executor.chain(future)
            graph, _ = write_graph(flight.source, spec, self.job, fit)
            following = Flight("image", flight.units, (spec,), started=flight.started, keep=fit)
            self._launch(graph, following)
        else:
            yield self._outcome(spec, value, seconds)

    def _outcome(
        self, spec: Spec, outcome: Done | Failed, seconds: float | None = None
    ) -> ImageResult:
        """The result of an image that finished; noting why, if the store became unwritable.

        ``seconds``: the image's time, if its outcome does not say (an image with a graph of
        its own, timed by the client).
        """
        if isinstance(outcome, Done):
            if seconds is None:  # compressed inside a batch: its own time
                self.estimate.learn(spec.size, outcome.seconds)
            own = outcome.seconds if seconds is None else seconds
            return _result(spec, "done", attrs=outcome.attrs, seconds=own)
        self.unwritable = self.unwritable or outcome.unwritable
        return _result(spec, "failed", error=outcome.line(spec.path), detail=outcome.detail)


def _result(spec: Spec, status: str, **fields: Any) -> ImageResult:
    return ImageResult(spec.name, spec.path, status, size=spec.size, **fields)
