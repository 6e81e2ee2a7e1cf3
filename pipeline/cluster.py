"""Which Dask cluster a job runs on: the address given, ``DASK_SCHEDULER_ADDRESS``, or local."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask.config
from distributed import Client, LocalCluster

from pipeline.errors import UsageError

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


def package_version() -> str:
    """Version of this package, as the process running it sees it (see :func:`check_workers`)."""
    from pipeline import __version__

    return __version__


def check_workers(client: Client) -> None:
    """Make sure the scheduler and every worker can run the job's tasks.

    Tasks refer to this package's functions, so the scheduler and each worker must import the
    same version of it. Workers that join later are not checked.

    Raises
    ------
    UsageError
        Naming the processes that cannot import the package, or that have another version.
    """
    here = package_version()
    answers = {"scheduler": _ask(client.run_on_scheduler, package_version)}
    workers = client.run(package_version, on_error="return")
    answers.update({f"worker {address}": answer for address, answer in workers.items()})
    wrong = {who: answer for who, answer in answers.items() if answer != here}
    if not wrong:
        return
    who, answer = next(iter(wrong.items()))
    problem = (
        f"cannot import the pipeline package ({answer})"
        if isinstance(answer, BaseException)
        else f"has pipeline {answer}"
    )
    others = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
    raise UsageError(
        f"the {who}{others} {problem}; install pipeline {here} where the scheduler and "
        "workers run (the same image or environment as this job), and start workers with "
        "--preload pipeline.preload"
    )


def _ask(run: Any, function: Any) -> Any:
    try:
        return run(function)
    except Exception as exc:  # the error raised where it ran, e.g. ModuleNotFoundError
        return exc


@contextmanager
def connect(
    address: str | None = None,
    *,
    workers: int | None = None,
    timeout: float | str | None = None,
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
    timeout : float or str, optional
        How long to wait for a remote scheduler before giving up (seconds, or a dask duration
        such as ``"10s"``); default: dask's ``distributed.comm.timeouts.connect`` (30 s, set
        with ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``).

    Raises
    ------
    UsageError
        If the scheduler cannot be reached in time, or its workers cannot import this package.
    dashboard_address : str
        Where a local cluster serves its dashboard (port 0: any free port).
    """
    resolved = scheduler_address(address)
    if resolved is not None:
        limit = timeout or dask.config.get("distributed.comm.timeouts.connect")
        try:
            client = Client(resolved, timeout=limit)
        except (OSError, TimeoutError, ValueError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise UsageError(f"cannot reach the Dask scheduler at {resolved}: {reason}") from None
        with client:
            check_workers(client)
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
