"""Which Dask cluster a job runs on: the address given, ``DASK_SCHEDULER_ADDRESS``, or local.

A local cluster is either threads in the job's own process or worker processes
(:func:`local_kind` says which); :class:`OnDemand` starts it only once the job has work for it,
or, for worker processes, in the background while the job lists its store.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import dask.config

from pipeline.errors import UsageError
from pipeline.job.garbage import collection_paused
from pipeline.job.preload import JOB_KERNELS
from pipeline.settings import LOCAL_KINDS

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

    from pipeline.settings import Settings

#: Environment variable the Dask Kubernetes operator sets in a DaskJob's pod.
ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"

#: glibc malloc settings for worker processes. Dask's default (MALLOC_TRIM_THRESHOLD_=65536)
#: also switches off glibc's adaptive mmap threshold, so every NumPy temporary over 128 KiB is a
#: fresh mmap whose pages fault in again: the palette fit ran 2x slower on a worker than in a
#: plain process. Keeping up to 64 MiB of freed heap, and mapping only arrays over 8 MiB, gives
#: back the plain-process speed while memory is still returned to the system.
WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(64 << 20), "MALLOC_MMAP_THRESHOLD_": str(8 << 20)}


#: Environment of worker processes of a local cluster that makes them ignore SIGINT (see
#: :mod:`pipeline.job.preload`): Ctrl-C reaches every process of the terminal's process group, and
#: without this each worker would die with a traceback, losing the images in flight that the
#: job's process means to let finish.
WORKER_SIGINT = {"PIPELINE_IGNORE_SIGINT": "1"}


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
        "--preload pipeline.job.preload"
    )


def _ask(run: Any, function: Any) -> Any:
    try:
        return run(function)
    except Exception as exc:  # the error raised where it ran, e.g. ModuleNotFoundError
        return exc


def local_size(workers: int | None) -> int:
    """Workers of a local cluster of processes, threads of one of threads: ``workers`` or cores."""
    return workers or os.cpu_count() or 1


def local_kind(
    images: int, size: int, *, workers: int | None = None, choice: str | None = None
) -> str:
    """Which local cluster a job of ``images`` inputs, ``size`` bytes of files, starts.

    ``"threads"``: the scheduler and one worker of one thread per core inside the job's own
    process, ready in a fraction of a second; ``"processes"``: one worker process per core (or
    ``workers``), each of which imports scikit-learn, dask-ml and the compiled kernels before its
    first task (3-4 s) and runs without contending for the job's interpreter lock.

    ``choice`` (``--local-cluster``; default: dask config ``pipeline.local-cluster``) decides
    when it is not ``"auto"``; under ``"auto"``, threads for a job of at most
    ``pipeline.threads-max-images`` inputs whose files add up to at most
    ``pipeline.threads-max-bytes``, unless ``workers`` asks for worker processes. Either way
    the store ends up byte for byte the same.

    Raises
    ------
    UsageError
        If the choice is not one of :data:`LOCAL_KINDS`.
    """
    kind = choice or dask.config.get("pipeline.local-cluster")
    if kind not in LOCAL_KINDS:
        raise UsageError(f"local cluster must be one of {', '.join(LOCAL_KINDS)}, got {kind!r}")
    if kind != "auto":
        return str(kind)
    small = images <= dask.config.get("pipeline.threads-max-images") and size <= dask.config.get(
        "pipeline.threads-max-bytes"
    )
    return "threads" if small and workers is None else "processes"


@contextmanager
def connect(
    address: str | None = None,
    *,
    workers: int | None = None,
    timeout: float | str | None = None,
    dashboard_address: str = "127.0.0.1:8787",
    kind: str = "processes",
    settings: Settings | None = None,
) -> Iterator[Client]:
    """Connect to a Dask cluster, or start a local one for the duration of the block.

    Parameters
    ----------
    address : str, optional
        Scheduler address; see :func:`scheduler_address` for the fallbacks.
    workers : int, optional
        Worker processes of a local cluster (default: one per core, one thread each), which
        import the job's libraries as they start (:mod:`pipeline.job.preload`) and use the malloc
        settings :data:`WORKER_MALLOC`; threads of a ``"threads"`` one.
    timeout : float or str, optional
        How long to wait for a remote scheduler before giving up (seconds, or a dask duration
        such as ``"10s"``); default: dask's ``distributed.comm.timeouts.connect`` (30 s, set
        with ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``).
    dashboard_address : str
        Where a local cluster serves its dashboard (port 0: any free port).
    kind : str
        ``"processes"`` or ``"threads"``: the local cluster to start (see :func:`local_kind`).
    settings : Settings, optional
        The job's: a local cluster's threads or worker processes, which serve this job only,
        load only the kernels it uses (:func:`pipeline.job.preload.load_kernels`, through
        :data:`~pipeline.job.preload.JOB_KERNELS` in the workers' environment); without it,
        every kernel.

    Raises
    ------
    UsageError
        If the scheduler cannot be reached in time, or its workers cannot import this package.
    """
    from distributed import Client

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
    with ExitStack() as stack:
        with collection_paused():  # starting it imports the dashboard's libraries
            cluster = stack.enter_context(
                _local_cluster(kind, local_size(workers), dashboard_address, settings)
            )
            client = stack.enter_context(Client(cluster))
        if kind != "threads":
            yield client
            return
        # what worker processes preload, else the first image pays it; meanwhile the first
        # tasks run
        from pipeline.job.preload import warm_up_meanwhile

        warming = warm_up_meanwhile(*_job_kernels(settings).split())
        yield client
        # on a stop or an error the warm-up (a daemon thread; a first run compiles the kernels
        # for tens of seconds) is left to end with the process
        warming.join()


def _job_kernels(settings: Settings | None) -> str:
    """:data:`~pipeline.job.preload.JOB_KERNELS` of a job of ``settings`` ("": any job's)."""
    return "" if settings is None else f"{settings.space} {settings.dither}"


def _local_cluster(
    kind: str, n: int, dashboard_address: str, settings: Settings | None = None
) -> LocalCluster:
    from distributed import LocalCluster

    if kind == "threads":  # the job's own process has imported the package: nothing to check
        return LocalCluster(
            n_workers=1,
            threads_per_worker=n,
            processes=False,
            dashboard_address=dashboard_address,
            worker_dashboard_address="127.0.0.1:0",
        )
    # set before the worker processes start, when glibc reads it (the ``env`` argument is later)
    environ = {
        **dask.config.get("distributed.nanny.pre-spawn-environ", {}),
        **WORKER_MALLOC,
        **WORKER_SIGINT,
    }
    # its workers serve this job only. distributed's nanny leaves its workers' environment in
    # this process, and takes a variable set here over its configuration: a previous
    # cluster's would win
    environ[JOB_KERNELS] = _job_kernels(settings)
    os.environ.pop(JOB_KERNELS, None)
    # distributed sets its log levels as it is imported, before the nanny hands a worker the
    # job's configuration: pass the job's levels on (the command line keeps workers quiet)
    levels = dask.config.get("logging", None)
    if levels:
        environ["DASK_LOGGING"] = repr(dict(levels))
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            preload=["pipeline.job.preload"],
        )


def dashboard_link(client: Client) -> str:
    """Address of the cluster's dashboard, as a browser on this machine reaches it.

    A cluster of threads in this process has an ``inproc://`` address naming no host a browser
    can use (dask's own link names the machine's public address): its dashboard listens on
    127.0.0.1.
    """
    if not str(client.scheduler.address).startswith("inproc://"):
        return str(client.dashboard_link)
    port = client.scheduler_info()["services"].get("dashboard")
    return f"http://127.0.0.1:{port}/status"


class OnDemand:
    """The cluster of a job, connected to or started only once the job has work for it.

    Threads in this process (``kind="threads"``) start when the first work is submitted, so a
    job whose images are all complete already (a rerun) starts none. Worker processes, which
    take seconds to be ready, start in a background thread as soon as this is entered, while
    the job imports its libraries and lists its store. A remote scheduler is connected to on
    entering, so that one that cannot be reached stops the job before it creates its store.
    Use as a context manager; leaving it closes what was started.

    Parameters
    ----------
    address, workers, kind, dashboard_address, settings
        As for :func:`connect`.
    started : callable, optional
        Called with the client once the cluster is up (e.g. to print its dashboard address).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        kind: str = "processes",
        dashboard_address: str = "127.0.0.1:8787",
        started: Callable[[Client], None] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._connect = lambda: connect(
            address,
            workers=workers,
            kind=kind,
            dashboard_address=dashboard_address,
            settings=settings,
        )
        self._started = started or (lambda client: None)
        self._remote = scheduler_address(address) is not None
        self._background = not self._remote and kind == "processes"
        #: Threads of a local cluster, known before it is up.
        self.planned = None if self._remote else local_size(workers)
        self._client: Client | None = None
        self._error: BaseException | None = None
        self._stack = ExitStack()
        self._thread: threading.Thread | None = None
        # distributed's client remembers itself in a context variable, which must be reset
        # in the context it was set in: the cluster is started and closed in this one
        self._context = contextvars.copy_context()

    def __enter__(self) -> OnDemand:
        if self._remote:
            self.client()
        elif self._background:
            self._thread = threading.Thread(
                target=self._context.run, args=(self._start,), name="cluster-start", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if self._thread is not None:
            if isinstance(exc, KeyboardInterrupt) and self._thread.is_alive():
                # Stopped by a signal before the worker processes were up: nothing ran on
                # them, so the job leaves now rather than seconds later; they end with this
                # process (distributed's worker processes watch their parent).
                return
            self._thread.join()
        self._context.run(self._stack.close)

    @property
    def up(self) -> bool:
        """Whether the cluster is connected (or started)."""
        return self._client is not None

    def client(self) -> Client:
        """The client of the cluster, connecting to or starting it first if needed.

        Raises
        ------
        UsageError
            As :func:`connect` does (an unreachable scheduler, workers without this package).
        """
        if self._thread is not None:
            self._thread.join()
        elif self._client is None and self._error is None:
            self._context.run(self._start)
        if self._error is not None:
            raise self._error
        assert self._client is not None
        return self._client

    def _start(self) -> None:
        try:
            self._client = self._stack.enter_context(self._connect())
        except BaseException as exc:  # raised in the job's thread, by client()
            self._error = exc
            return
        self._started(self._client)
