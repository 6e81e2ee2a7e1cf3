#!/usr/bin/env python
r"""Run a pipeline job on a Slurm cluster, its Dask workers submitted as Slurm jobs.

    python deploy/slurm/launch.py --jobs 4 --cores 8 --memory 16GiB --walltime 02:00:00 \
        --partition cpu --account myproject -- --config job.toml

Options before ``--`` are the launcher's; everything after it is passed to
``python -m pipeline run`` (inputs, ``--out``, ``--config JOB.toml``, ...), which gets the
cluster's ``--scheduler`` from the launcher. The launcher starts a Dask scheduler in this process
(dask-jobqueue's ``SLURMCluster``), submits ``--jobs`` Slurm jobs that each run ``--processes``
single-threaded workers started with ``--preload pipeline.job.preload``, waits for the first
``--min-workers`` of them, runs the pipeline, and cancels the worker jobs when it ends. Workers
that start later join the running job.

Run it where the compute nodes can reach this host (a login node, or inside a small Slurm job
of its own) with the environment the workers use: the same Python, with the project installed,
on a file system every node sees (``--python`` otherwise). ``--dry-run`` prints the workers'
job script (the scheduler's address left as a placeholder) and starts and submits nothing.

Exit status: the pipeline's (0 all images done, 1 some image failed, 2 usage or job-file error,
130/143 stopped by SIGINT/SIGTERM: a rerun resumes); 2 for a launcher usage error; 1 when no
worker joined within ``--wait`` seconds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

#: dask's configuration, as an environment variable, of the environment the nanny gives each
#: worker process before it starts (when glibc reads its malloc settings).
PRE_SPAWN_VARIABLE = "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON"

#: Options the launcher sets itself on the pipeline's command line.
RESERVED = ("--scheduler", "--workers")

EXIT_NO_WORKERS = 1


def build_parser() -> argparse.ArgumentParser:
    """The launcher's own options (those before ``--``)."""
    parser = argparse.ArgumentParser(
        prog="launch.py",
        usage="%(prog)s [options] [-- PIPELINE-RUN-ARGS ...]",
        description="Run `python -m pipeline run` on Dask workers submitted as Slurm jobs "
        "(dask-jobqueue).",
        epilog="Arguments after `--` go to `python -m pipeline run`, e.g. `-- --config job.toml` "
        "or `-- photos/ --out /scratch/photos.zarr --colors 64`.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--jobs", type=int, default=1, metavar="N", help="Slurm jobs to submit (default: 1)")
    add("--cores", type=int, default=4, help="CPUs of each job (default: 4)")
    add(
        "--processes",
        type=int,
        help="worker processes per job, sharing its cores and memory (default: --cores, so one "
        "thread each, as on a local cluster)",
    )
    add("--memory", default="8GiB", help="memory of each job (default: 8GiB, 2 GiB per worker)")
    add("--walltime", default="01:00:00", help="time limit of each job (default: 01:00:00)")
    add("--queue", "--partition", dest="queue", help="Slurm partition (default: Slurm's)")
    add("--account", help="Slurm account to charge")
    add(
        "--job-extra",
        action="append",
        default=[],
        metavar="DIRECTIVE",
        help="extra #SBATCH directive for the worker jobs, e.g. --job-extra=--qos=normal "
        "(repeatable)",
    )
    add("--interface", help="network interface the workers and scheduler use, e.g. ib0")
    add(
        "--local-directory",
        help="workers' scratch directory, on a node-local disk (e.g. '$TMPDIR', expanded on the "
        "node)",
    )
    add("--log-directory", help="directory for the worker jobs' Slurm output files")
    add("--python", help="Python the worker jobs run (default: this one)")
    add(
        "--dashboard-address",
        default=":8787",
        help="where this process serves the Dask dashboard (default: :8787)",
    )
    add(
        "--min-workers",
        type=int,
        default=1,
        metavar="N",
        help="workers to wait for before starting the pipeline (default: 1)",
    )
    add(
        "--wait",
        type=float,
        default=3600,
        metavar="SECONDS",
        help="longest wait for them, queueing included (default: 3600)",
    )
    add(
        "--dry-run",
        action="store_true",
        help="print the worker job script (scheduler address as a placeholder); start and "
        "submit nothing",
    )
    return parser


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split at the first ``--``: the launcher's arguments, then the pipeline's."""
    argv = list(argv)
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


def worker_environment() -> dict[str, str]:
    """Environment variables the worker jobs export: the pipeline's malloc settings.

    The same values a local cluster gives its workers (:data:`pipeline.job.cluster.WORKER_MALLOC`),
    as dask configuration (a dict literal) that the nanny merges with dask's own defaults.
    """
    from pipeline.job.cluster import WORKER_MALLOC

    return {PRE_SPAWN_VARIABLE: json.dumps(dict(WORKER_MALLOC))}


def cluster_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``dask_jobqueue.SLURMCluster`` keyword arguments for the launcher's options."""
    for name in ("jobs", "cores", "min_workers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    processes = args.processes or args.cores
    if not 1 <= processes <= args.cores:
        raise ValueError(f"--processes must be 1..--cores ({args.cores}), got {processes}")
    kwargs: dict[str, Any] = {
        "cores": args.cores,
        "processes": processes,
        "memory": args.memory,
        "walltime": args.walltime,
        "job_name": "pipeline-worker",
        "worker_extra_args": ["--preload", "pipeline.job.preload"],
        "job_script_prologue": [
            f"export {name}={shlex.quote(value)}" for name, value in worker_environment().items()
        ],
        "scheduler_options": {"dashboard_address": args.dashboard_address},
    }
    optional = {
        "queue": args.queue,
        "account": args.account,
        "interface": args.interface,
        "local_directory": args.local_directory,
        "log_directory": args.log_directory,
        "python": args.python,
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    if args.job_extra:
        kwargs["job_extra_directives"] = list(args.job_extra)
    return kwargs


#: Where the rendered script of ``--dry-run`` names the scheduler (dask-jobqueue's own
#: placeholder): the real address is only known once a scheduler runs.
PLACEHOLDER_ADDRESS = "tcp://<insert-scheduler-address-here>:8786"


def job_script(kwargs: dict[str, Any]) -> str:
    """The worker jobs' Slurm script for these ``SLURMCluster`` arguments, starting nothing.

    dask-jobqueue's ``SLURMJob`` renders it as ``SLURMCluster.job_script()`` does, without the
    scheduler a cluster starts; the scheduler's address is :data:`PLACEHOLDER_ADDRESS`.
    """
    from dask_jobqueue.slurm import SLURMJob

    job_kwargs = {key: value for key, value in kwargs.items() if key != "scheduler_options"}
    job = SLURMJob(scheduler=PLACEHOLDER_ADDRESS, name="dummy-name", **job_kwargs)
    return str(job.job_script())


def pipeline_argv(pipeline_args: Sequence[str], scheduler_address: str) -> list[str]:
    """``pipeline.cli.main`` arguments: ``run``, the user's arguments, the cluster's address."""
    return ["run", *pipeline_args, "--scheduler", scheduler_address]


def _stop(signum: int, frame: FrameType | None) -> None:
    from pipeline.job.stopping import Interrupted

    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher; returns the exit status."""
    own, passed = split_argv(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(own)  # exits 2 on a usage error
    for flag in RESERVED:
        if any(arg == flag or arg.startswith(flag + "=") for arg in passed):
            parser.error(f"{flag} is the launcher's to set; leave it out of the pipeline's args")
    try:
        kwargs = cluster_kwargs(args)
    except ValueError as exc:
        parser.error(str(exc))

    if args.dry_run:
        print(job_script(kwargs))
        return 0

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    from pipeline.cli import main as pipeline_main

    # Until the pipeline installs its own handlers: SIGTERM (scancel, a time limit) unwinds like
    # Ctrl-C, so the worker jobs are cancelled on the way out.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with SLURMCluster(**kwargs) as cluster:
            print(f"scheduler: {cluster.scheduler_address}", file=sys.stderr)
            print(f"dashboard: {cluster.dashboard_link}", file=sys.stderr)
            cluster.scale(jobs=args.jobs)
            print(
                f"submitted {args.jobs} Slurm job(s) of {kwargs['processes']} worker(s); "
                f"waiting for {args.min_workers} worker(s), up to {args.wait:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            with Client(cluster) as client:
                try:
                    client.wait_for_workers(args.min_workers, timeout=args.wait)
                except TimeoutError:
                    print(
                        f"error: fewer than {args.min_workers} worker(s) joined in "
                        f"{args.wait:.0f} s (squeue -u $USER shows the worker jobs)",
                        file=sys.stderr,
                    )
                    return EXIT_NO_WORKERS
            return pipeline_main(pipeline_argv(passed, cluster.scheduler_address))
    except KeyboardInterrupt as exc:
        print("interrupted: worker jobs cancelled; run again to resume", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
