"""Command line: ``python -m pipeline run | reconstruct | info``.

Exit codes: 0 when every image is done, 1 when some image failed (the others are still done and
stored), 2 on a usage or configuration error, 128 + the signal number when stopped by SIGINT
(130, Ctrl-C) or SIGTERM (143, how Kubernetes and Slurm stop a job). A stopped job keeps every
complete image; running it again finishes the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from pipeline.errors import PipelineError, UsageError
from pipeline.stopping import Interrupted, stop_on_signals

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

RUN_EPILOG = """\
inputs: image files (JPEG, PNG, TIFF, BMP, GIF, WebP, ... anything imageio reads), folders (their
image files) and glob patterns; with none, the two sample photos shipped with scikit-learn.
Inputs and the store may be fsspec URLs (s3://bucket/photos/, gs://..., file://...), which the
workers read and write themselves; credentials come from the usual places (for S3: AWS_*
environment variables, ~/.aws, AWS_ENDPOINT_URL for compatible servers) and are never printed.

A job file (--config job.toml) may hold any option, with keys named as the long options
(inputs = [...], out = "...", colors = 64, max_iter = 1, overwrite = true, ...); options given on
the command line win. Other defaults come from dask's configuration (pipeline.*), so they can also
be set with environment variables, e.g. DASK_PIPELINE__COLORS=64. The cluster is --scheduler, else
the DASK_SCHEDULER_ADDRESS environment variable, else a local cluster started for the job.

Progress: one line per image as it finishes (images and input bytes done of all), and on a
terminal a live status line. The dashboard address is printed at start; --report keeps a copy of
what it showed.

The client only lists the inputs and the store; workers open, decode and compress the images,
small ones several per task, with at most two tasks per worker thread in flight. Images already
complete in the store with the same settings are skipped (the store's listing says which), so
rerunning an interrupted job finishes it; --overwrite recomputes them. One job writes a store at
a time: another job on it is refused with a line naming it, until its lease (a file beside the
store) is released, expires, or its process on this host is gone.

A first SIGINT/SIGTERM stops submitting work and lets the images in flight finish for up to
--stop-grace seconds; a second one stops at once. Every image reported done is complete.

exit status: 0 all images done, 1 some image failed (the rest are stored), 2 usage error (the
store in use by another job included), 130/143 stopped by SIGINT/SIGTERM (complete images are
kept; a rerun finishes the rest).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m pipeline`` argument parser."""
    from pipeline import __version__

    parser = _Parser(
        prog="python -m pipeline",
        description="Compress images by k-means colour quantization on a Dask cluster, "
        "into Zarr v3 stores of palette + labels.",
    )
    parser.add_argument("--version", action="version", version=_versions(__version__))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="compress images into a store",
        description="Compress images into a Zarr store: one group per image with a palette of "
        "at most --colors colours and one label per pixel.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image file, folder or glob; local or a URL"
    )
    run.add_argument(
        "-o",
        "--out",
        metavar="STORE",
        help="output store, a folder or a URL (default: compressed.zarr)",
    )
    run.add_argument("-k", "--colors", type=_positive, help="palette size, 1..65536 (default: 128)")
    run.add_argument(
        "--sample",
        type=_positive,
        help="pixels sampled per image for the KMeans fit (default: 5000)",
    )
    run.add_argument("--seed", type=_positive, help="random seed (default: 0)")
    run.add_argument(
        "--chunk", type=_positive, metavar="PX", help="chunk side in pixels (default: 1024)"
    )
    run.add_argument(
        "--max-iter", type=_positive, help="dask-ml KMeans iterations on the sample (default: 1)"
    )
    run.add_argument(
        "--effort",
        type=_positive,
        help="0-3: work refining the palette over every pixel after the sample fit; 0 none, "
        "3 best quality and slowest (default: 1)",
    )
    run.add_argument(
        "--max-pixels",
        type=_positive,
        metavar="N",
        help="largest image decoded whole (JPEG, PNG, ...); tiled TIFF and Zarr inputs have no "
        "limit (default: Pillow's 178956970)",
    )
    run.add_argument(
        "--scheduler", metavar="ADDRESS", help="Dask scheduler address (default: see below)"
    )
    run.add_argument(
        "--workers", type=_positive, help="worker processes of a local cluster (default: cores)"
    )
    run.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        help="recompute images already in the store (default: skip them)",
    )
    run.add_argument(
        "--config",
        metavar="JOB.toml",
        help="job file holding any of these options (keys as the long option names, with "
        "underscores); options given here win over it",
    )
    run.add_argument(
        "--stop-grace",
        type=float,
        metavar="SECONDS",
        help="after a first SIGINT/SIGTERM, how long images in flight may finish before the job "
        "stops (default: 20; pipeline.stop-grace)",
    )
    run.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an image that failed because of an unexpected error",
    )
    run.add_argument(
        "--report",
        metavar="HTML",
        help="save a Dask performance report (task stream, worker profiles) to this file",
    )

    rec = commands.add_parser(
        "reconstruct",
        help="write images back from a store",
        description="Rebuild images from a store (palette[labels]) and write them as files.",
    )
    rec.add_argument("store", metavar="STORE")
    rec.add_argument("-o", "--out", metavar="DIR", default=".", help="output folder (default: .)")
    rec.add_argument(
        "--format",
        default="png",
        help="file extension: tif (tiled TIFF) and zarr are written chunk by chunk, for images "
        "of any size; png, webp, bmp, ... (anything imageio writes) need the whole image in "
        "memory (default: png)",
    )
    rec.add_argument("--name", action="append", help="only this image (repeatable)")

    info = commands.add_parser(
        "info",
        help="list what a store holds",
        description="List the images of a store with their status, size and quality.",
    )
    info.add_argument("store", metavar="STORE")
    info.add_argument("--json", action="store_true", help="every attribute, as JSON")
    return parser


def _versions(own: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"pipeline {own}"]
    for dist in ("dask", "distributed", "dask-ml", "scikit-learn", "numpy", "zarr", "imageio"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} missing")
    return "\n".join(parts)


def _job(args: argparse.Namespace) -> dict[str, Any]:
    """The run's values: command-line options over the job file (``--config``)."""
    from pipeline.jobfile import KEYS, read_job_file

    job = read_job_file(args.config) if args.config else {}
    given = {key: getattr(args, key, None) for key in KEYS}
    given["inputs"] = args.inputs or None
    return {**job, **{k: v for k, v in given.items() if v is not None}}


def _run(args: argparse.Namespace) -> int:
    import dask.config
    from distributed import performance_report

    from pipeline.api import find_inputs, stream
    from pipeline.cluster import connect, scheduler_address
    from pipeline.config import Settings
    from pipeline.lease import check_free
    from pipeline.progress import Progress
    from pipeline.report import Summary
    from pipeline.sources import sample_images

    job = _job(args)
    settings = Settings.from_config(**{k: v for k, v in job.items() if k in Settings.names()})
    store = job.get("out") or dask.config.get("pipeline.store")
    inputs = job.get("inputs") or sample_images()
    address = scheduler_address(job.get("scheduler"))
    # Nothing to do, or a job already writing the store: say so before starting a cluster.
    found = find_inputs(inputs, store)
    check_free(store)
    gathered = Summary()
    print(f"cluster: {address or 'local'}", file=sys.stderr)
    with connect(address, workers=job.get("workers")) as client:
        print(f"dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)
        report = job.get("report")
        with (
            performance_report(filename=report) if report else contextlib.nullcontext(),
            Progress() as progress,
        ):
            for result in stream(
                found,
                store,
                overwrite=bool(job.get("overwrite")),
                client=client,
                on_start=progress.start,
                notify=progress.note,
                running={"stop_grace": job.get("stop_grace")},
                **vars(settings),
            ):
                progress(result)
                gathered.add(result)
                if args.debug and result.detail:
                    progress.note(result.detail.rstrip())
    print(f"\nstore: {store}")
    if report:
        print(f"report: {report}")
    print(gathered.text())
    return EXIT_FAILED if gathered.failed else EXIT_OK


def _reconstruct(args: argparse.Namespace) -> int:
    from pipeline.reconstruct import write_images

    extension = "." + args.format.lstrip(".").lower()
    for name, path in write_images(args.store, args.out, args.name, extension).items():
        print(f"{name} -> {path}")
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    from pipeline.report import image_row, table
    from pipeline.store import image_names, open_root

    root = open_root(args.store)
    images = {name: dict(root[name].attrs) for name in image_names(root)}
    if args.json:
        print(json.dumps({"store": dict(root.attrs), "images": images}, indent=2))
    else:
        print(
            f"{args.store}: format version {root.attrs.get('format_version')}, {len(images)} images"
        )
        print(table([image_row(n, str(a.get("status", "?")), a) for n, a in images.items()]))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="dask_ml")
    handlers = {"run": _run, "reconstruct": _reconstruct, "info": _info}
    try:
        with stop_on_signals():
            return handlers[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        print("interrupted: complete images are kept; run again to finish", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
