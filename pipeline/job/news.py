"""News of images finishing inside a batch task, sent to the job's client as each one finishes.

A batch (:func:`pipeline.job.tasks.compress_batch`) compresses several small images in one task,
whose value reaches the client only when the whole batch returns. So that the job's progress
lines, its metrics and the dashboard move as images finish, the task announces each image's
outcome as soon as it is complete in the store (:func:`announce`):

* on a worker of a distributed cluster, as a Dask event (topic :data:`TOPIC`), which the
  scheduler passes on to the clients subscribed to the topic and keeps the last
  ``distributed.admin.low-level-log-length`` of (1,000 by default: bounded, whatever the
  number of images);
* in the job's own process (no cluster, or a cluster of threads in it), straight to the
  listener registered for the job's run.

The client (:class:`Listener`) subscribes before it submits any work, and its job's runner
(:mod:`pipeline.job.run`) reads the news between two checks of the work in flight. News is
only early: the batch's value says the same when it returns, and the runner reports each image
once, whichever arrives first. A news item lost (the client subscribed late, a connection
dropped) only delays that image's line to the batch's end.

Messages are plain dicts (msgpack, as Dask events must be): ``run``, ``batch`` (the batch's
id) and ``images``, a list of ``[index, outcome]`` pairs: the image's place in the batch and its
outcome (:func:`pipeline.job.tasks.message_of`). A batch sends its first image at once, then
the images finished since its last message at most every :data:`NEWS_SECONDS` (and its last
ones as it ends): an event costs its worker and the scheduler the same for one image as for
ten, and a worker finishes up to a hundred thumbnails a second.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

#: Topic of the Dask events announcing an image finished inside a batch.
TOPIC = "pipeline-image"

#: Least time between two messages of one batch (its images finished meanwhile wait).
NEWS_SECONDS = 0.05

#: Listeners of the runs of this process, by run id (see :class:`Listener`).
_local: dict[str, Callable[[dict[str, Any]], None]] = {}
_local_lock = threading.Lock()


def announce(run: str, batch: str, images: list[tuple[int, dict[str, Any]]]) -> None:
    """Tell run ``run``'s client that ``images`` of batch ``batch`` finished (best effort).

    ``images``: ``(index, outcome)`` of each, its place in the batch and its outcome as a
    msgpack-able dict. Never raises: the batch's value tells the same later.
    """
    news = {"run": run, "batch": batch, "images": [[i, outcome] for i, outcome in images]}
    with _local_lock:
        listener = _local.get(run)
    if listener is not None:  # the job runs in this process
        listener(news)
        return
    try:
        from distributed import get_worker

        get_worker().log_event(TOPIC, news)
    except Exception:  # not on a worker, or it is closing: the batch's value will tell
        return


class Listener:
    """News of one run's images, gathered from wherever its tasks run, read by its runner.

    Use as a context manager around the run. While entered, the run's news from tasks in this
    process arrives directly; :meth:`subscribe` also subscribes a cluster's client to the Dask
    events (once per client: its handler passes each event on to the run it is about, so jobs
    sharing a client do not take each other's news). :meth:`take` returns what arrived since it
    was last called.
    """

    def __init__(self, run: str) -> None:
        self.run = run
        self._clients: list[Any] = []
        self._news: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def __enter__(self) -> Listener:
        with _local_lock:
            _local[self.run] = self._news.put
        return self

    def __exit__(self, *exc: object) -> None:
        with _local_lock:
            _local.pop(self.run, None)
            alone = not _local
        for client in self._clients if alone else ():
            if client.status == "running":
                try:
                    client.unsubscribe_topic(TOPIC)
                except Exception:  # the scheduler is gone: nothing to unsubscribe from
                    continue

    def subscribe(self, client: Any) -> None:
        """Receive the news that ``client``'s cluster passes on (None: no cluster; once each).

        Call before submitting work: the subscription and the work travel to the scheduler in
        that order.
        """
        if client is not None and client not in self._clients:
            client.subscribe_topic(TOPIC, _dispatch)
            self._clients.append(client)

    def take(self) -> list[dict[str, Any]]:
        """The news that arrived since the last call, oldest first."""
        taken = []
        while True:
            try:
                taken.append(self._news.get_nowait())
            except queue.Empty:
                return taken


def _dispatch(event: tuple[float, Any]) -> None:
    """A Dask event of :data:`TOPIC`, from any job of the scheduler: to its run's listener."""
    news = event[1]
    if not isinstance(news, dict):
        return
    with _local_lock:
        listener = _local.get(str(news.get("run")))
    if listener is not None:
        listener(news)
