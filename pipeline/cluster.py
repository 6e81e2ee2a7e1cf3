"""Which Dask cluster a job runs on: the address given, ``DASK_SCHEDULER_ADDRESS``, or local."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask.config
from distributed import Client, LocalCluster

#: Environment variable the Dask Kubernetes operator sets in a DaskJob's pod.
ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"

#: glibc malloc settings for worker processes. Dask's default (MALLOC_TRIM_THRESHOLD_=65536)
#: also switches off glibc's adaptive mmap threshold, so every NumPy temporary over 128 KiB is a
#: fresh mmap whose pages fault in again: the palette fit ran 2x slower on a worker than in a
#: plain process. Keeping up to 64 MiB of freed heap, and mapping only arrays over 8 MiB, gives
#: back the plain-process speed while memory is still returned to the system.
WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(64 << 20), "MALLOC_MMAP_THRESHOLD_": str(8 << 20)}


def scheduler_address(explicit: str | None) -> str | None:
    """The scheduler to connect to: ``explicit``, else ``$DASK_SCHEDULER_ADDRESS``, else None."""
    return explicit or os.environ.get(ADDRESS_VARIABLE) or None


@contextmanager
def connect(
    address: str | None = None,
    *,
    workers: int | None = None,
    timeout: float = 30,
    dashboard_address: str = "127.0.0.1:8787",
) -> Iterator[Client]:
    """Connect to a Dask cluster, or start a local one for the duration of the block.

    Parameters
    ----------
    address : str, optional
        Scheduler address; see :func:`scheduler_address` for the fallbacks.
    workers : int, optional
        Worker processes of a local cluster (default: one per core, one thread each), which
        import the job's libraries as they start (:mod:`pipeline.preload`) and use the malloc
        settings :data:`WORKER_MALLOC`.
    timeout : float
        Seconds to wait for a remote scheduler before giving up.
    dashboard_address : str
        Where a local cluster serves its dashboard (port 0: any free port).
    """
    resolved = scheduler_address(address)
    if resolved is not None:
        with Client(resolved, timeout=timeout) as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    # set before the worker processes start, when glibc reads it (the ``env`` argument is later)
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_MALLOC}
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            preload=["pipeline.preload"],
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
