"""Command line: ``python -m pipeline run | info | verify | reconstruct | report``.

Exit codes: 0 when every image is done, 1 when some image failed (the others are still done and
stored) or the store could no longer be written (full, read-only: the job stops), 2 on a usage
or configuration error, 128 + the signal number when stopped by SIGINT
(130, Ctrl-C) or SIGTERM (143, how Kubernetes and Slurm stop a job). A stopped job keeps every
complete image; running it again finishes the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import dask.config

from pipeline.errors import (
    LeaseLost,
    PipelineError,
    SchedulerLost,
    SettingError,
    StoreUnwritable,
    UsageError,
)
from pipeline.job.garbage import collection_paused
from pipeline.job.stopping import Interrupted, requested, stop_on_signals, stop_point
from pipeline.settings import BOUNDS, LOCAL_KINDS

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.store.location import Location

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
the DASK_SCHEDULER_ADDRESS environment variable, else a local cluster started for the job
(threads in this process for a small job, worker processes for a larger one: --local-cluster).

{bounds}

Progress: one line per image as soon as it is complete (images and input bytes done of all),
and on a terminal a live status line; the summary counts images done, skipped, failed and
left. The dashboard address is printed at start; --report keeps a copy of what it showed.

The client only lists the inputs and the store; workers open, decode and compress the images,
small ones several per task, with at most two tasks per worker thread in flight. Images already
complete in the store with the same settings are skipped (the store's listing says which), so
rerunning an interrupted job finishes it; --overwrite recomputes them. A complete image whose
chunks or metadata documents are missing (the same listing shows it) is redone; "verify" reads
every chunk. One job writes a store at a time: another job on it is refused with a line naming
it, until its lease (a file beside the store) is released, expires, or its process on this host
is gone.

A first SIGINT/SIGTERM stops submitting work and lets the images in flight finish for up to
--stop-grace seconds; a second one stops at once. During listing or cluster start, a signal
stops the job there. Every image reported done is complete, and the summary agrees with the
store. A store
that can no longer be written (disk full, read-only) stops the job at once, with one line.

exit status: 0 all images done, 1 some image failed (the rest are stored) or the store could no
longer be written, 2 usage error (the store in use by another job included), 130/143 stopped by
SIGINT/SIGTERM (complete images are kept; a rerun finishes the rest).
"""


VERIFY_EPILOG = """\
Images written before checksums (no digests attribute) are checked for missing chunks, chunks
that do not decode and labels outside the palette only. --repair redoes exactly the damaged
images, each from the source its attributes record, with the settings they record, so the
store ends as an undisturbed run would have left it; an image whose source can no longer be
read, whose metadata is unreadable, or that was compressed from an array is named as not
repairable.

A job holding the store (its lease, a file beside it: not expired, and on this host its process
still there) is named in a first line, "STORE: held by a running job (host ..., pid ..., run
..., since ...)"; the images it is writing (status "writing") are counted as being written, not
as damaged. Without such a job, an image
left "writing" was interrupted: it is damaged, and --repair (or the job run again) redoes it.
Every entry of the store that is not a whole image is named: a file where an image group should
be, and an image group that is gone while its completion marker remains, included.

exit status: 0 every image whole or being written by the job holding the store (after repair,
with --repair), 1 some image damaged or not repaired, or no such store, 2 usage error (a bad
image name; --repair while a job holds the store).
"""

INFO_EPILOG = """\
Each image is listed with its status: complete, writing, or damaged. A job holding the store
(its lease, a file beside it: not expired, and on this host its process still there) is named
in the first lines, and the images it is
writing are counted as being written; without one, an image left writing by a stopped run gets a
line on stderr, as each damaged image does: "error: NAME: why". Every entry of the store that is
not a whole image is named: a file where an image group should be, and an image group that is
gone while its completion marker remains, included. With --json, "held" is the line naming the
job holding the store, or null. info reads each image's metadata; verify reads every chunk.

After the table come the settings the images were made with, as their metadata records them:
one line when every image was made alike, else a line per image. Colours asked for, sample,
seed, effort, space and dither (with its strength) are always shown; the others (chunk, a PSNR
or quality target, colour profile, the frame of a multi-frame file, ...) when not at their
default. With --json, each image has a "settings" object holding every one, by job-file key.

exit status: 0 every image complete or being written by the job holding the store, 1 some image
damaged or left writing by a stopped run (verify --repair or the job run again redoes it), or no
such store.
"""


#: What ``info`` says of an image left "writing" while no job holds the store.
STOPPED_WRITING = "incomplete: left writing by a stopped run; run the job again to finish it"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _integer(value: str) -> int:
    """An option's integer; its bounds are checked with the other settings (``BOUNDS``)."""
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None


def _real(value: str) -> float:
    """An option's number; its bounds are checked with the other settings (``BOUNDS``)."""
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None


class _Typed(argparse.Action):
    """Stores an option's value made by ``convert``, and the text typed in ``args.typed``.

    So that a message about the value shows it as it was typed (``5``, not ``5.0``).
    """

    def __init__(
        self, option_strings: Sequence[str], dest: str, convert: Callable[[str], Any], **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.convert = convert

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, text: Any, *_: Any
    ) -> None:
        try:
            setattr(namespace, self.dest, self.convert(text))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        namespace.typed = {**getattr(namespace, "typed", {}), self.dest: text}


def _positive(value: str) -> int:
    number = _integer(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return number


def _default(name: str) -> Any:
    """The default of setting ``name`` in force.

    From dask's ``pipeline.*`` configuration: YAML files and ``DASK_PIPELINE__*`` environment
    variables included.
    """
    import dask.config

    import pipeline.settings  # noqa: F401  (registers the package's own defaults)

    return dask.config.get(f"pipeline.{name}")


#: Numeric settings that no option of ``run`` sets: keys of job files and dask settings only.
UNFLAGGED = ("tol", "count_pixels")
#: Numeric dask settings (``pipeline.*``) of how a job runs, none of them a job file's key.
RUNNING = (
    "batch_bytes",
    "batch_images",
    "batch_seconds",
    "batch_pixels",
    "in_flight",
    "hold_bytes",
    "lease_seconds",
    "threads_max_images",
    "threads_max_bytes",
)


def _bounds_paragraph() -> str:
    """What ``run --help`` says of the settings' bounds (the options' own are in their help)."""
    import textwrap

    keys = ", ".join(f"{name} {_bounds(name)}" for name in UNFLAGGED)
    running = ", ".join(f"pipeline.{name.replace('_', '-')} {_bounds(name)}" for name in RUNNING)
    text = (
        f"Every number has bounds, given with each option above ({keys} in a job file; {running} "
        "in dask's configuration). They are checked together before anything starts: a value "
        "outside them is one line naming it as it was given (--chunk, the job file's key, "
        "DASK_PIPELINE__CHUNK), exit status 2, and no store is made."
    )
    return textwrap.fill(text, 99, break_on_hyphens=False)


def _bounds(name: str) -> str:
    """The values setting ``name`` may take, for its help: ``16..16384``."""
    return BOUNDS[name].text()


class _Versions(argparse.Action):
    """``--version``: one line per package, as they are (argparse's own action rewraps them)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from pipeline import __version__

        print(_versions(__version__))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m pipeline`` argument parser."""
    parser = _Parser(
        prog="python -m pipeline",
        description="Compress images by k-means colour quantization on a Dask cluster, "
        "into Zarr v3 stores of palette + labels.",
    )
    parser.add_argument(
        "--version", action=_Versions, help="print the versions of pipeline and what it uses"
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="compress images into a store",
        description="Compress images into a Zarr store: one group per image with a palette of "
        "at most --colors colours and one label per pixel.",
        epilog=RUN_EPILOG.format(bounds=_bounds_paragraph()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image file, folder or glob; local or a URL"
    )
    run.add_argument(
        "-o",
        "--out",
        metavar="STORE",
        help=f"output store, a folder or a URL (default: {_default('store')})",
    )
    run.add_argument(
        "-k",
        "--colors",
        type=_integer,
        help=f"palette size, {_bounds('colors')} (default: {_default('colors')})",
    )
    run.add_argument(
        "--sample",
        type=_integer,
        help=f"pixels sampled per image for the KMeans fit, {_bounds('sample')} and at least "
        f"--colors (default: {_default('sample')})",
    )
    run.add_argument(
        "--seed",
        type=_integer,
        help=f"random seed, {_bounds('seed')} (default: {_default('seed')})",
    )
    run.add_argument(
        "--chunk",
        type=_integer,
        metavar="PX",
        help=f"chunk side in pixels of the stored labels, {_bounds('chunk')}: a task works on "
        "whole chunks, held whole (a large image's task on blocks of several, up to 16 MP) "
        f"(default: {_default('chunk')})",
    )
    run.add_argument(
        "--max-iter",
        type=_integer,
        help=f"dask-ml KMeans iterations on the sample, {_bounds('max_iter')} "
        f"(default: {_default('max-iter')})",
    )
    run.add_argument(
        "--effort",
        type=_integer,
        help=f"{_bounds('effort')}: work refining the palette over every pixel after the sample "
        f"fit; 0 none, 3 best quality and slowest (default: {_default('effort')})",
    )
    run.add_argument(
        "--space",
        choices=("rgb", "oklab"),
        help="colour space of the fit and the labels: rgb (best PSNR) or oklab (perceptual: "
        f"lower CIEDE2000) (default: {_default('space')})",
    )
    run.add_argument(
        "--dither",
        choices=("none", "ordered", "blue-noise"),
        help="nudge pixels by a threshold map fixed to their position before labelling, so "
        f"that gradients show fine patterns instead of bands (default: {_default('dither')})",
    )
    run.add_argument(
        "--dither-strength",
        action=_Typed,
        convert=_real,
        metavar="S",
        help="scale of the dither in spacings of the palette's colours, "
        f"{_bounds('dither_strength')} (default: {_default('dither-strength')})",
    )
    target = run.add_mutually_exclusive_group()
    target.add_argument(
        "-Q",
        "--quality",
        metavar="MIN-MAX",
        help="quality 0-100 as pngquant's --quality: use the fewest colours (up to --colors; "
        "pngquant's limit is 256, add --colors 256 for the same) reaching MAX; an image below "
        "MIN even with --colors colours fails. The quality is "
        "libimagequant's mapping of the mean squared error of gamma-adjusted 0..1 RGB (see "
        "README); 80 is about 37 dB of PSNR on those values. Also MAX (MIN is 90%% of it), "
        f"-MAX, MIN- (default: {_default('quality') or 'off'})",
    )
    target.add_argument(
        "--psnr",
        metavar="MIN-MAX",
        help="the same target as PSNR in dB of the RGB values (MAX alone: MIN 0) "
        f"(default: {_default('psnr') or 'off'})",
    )
    run.add_argument(
        "--color-profile",
        choices=("convert", "keep"),
        help="pixels in an embedded colour profile (Display P3, Adobe RGB, gray, CMYK; PNG "
        "gAMA/cHRM): convert them to sRGB with littleCMS, perceptual intent, before anything "
        "else; or keep their values and store the profile beside the palette (CMYK is always "
        f"converted) (default: {_default('color-profile')})",
    )
    run.add_argument(
        "--frames",
        choices=("first", "all"),
        help="animated GIF, WebP and PNG, multi-page TIFF: store the first frame or page, or "
        "every one as an image of its own, named NAME.frame-N or NAME.page-N "
        f"(default: {_default('frames')})",
    )
    run.add_argument(
        "--compression",
        choices=("portable", "archival"),
        help="how labels and palette are stored: portable is zstd level 5 with CRC-32C "
        "checksums, read by every Zarr v3 reader (zarr-python, tensorstore, zarrs); archival is "
        "LZMA (numcodecs' lzma codec) with CRC-32C, about 12%% smaller on photos and 4x "
        "slower to write, read by zarr-python only, without the colour table viewers use "
        "(napari colours its labels its own way). The palette and labels are the same "
        "either way: an "
        "image stored with the other one is complete for a rerun "
        f"(default: {_default('compression')})",
    )
    run.add_argument(
        "--max-pixels",
        type=_integer,
        metavar="N",
        help=f"largest image decoded whole (JPEG, PNG, ...), {_bounds('max_pixels')}; tiled TIFF "
        f"and Zarr inputs have no limit (default: {_default('max-pixels')}, Pillow's own)",
    )
    run.add_argument(
        "--scheduler", metavar="ADDRESS", help="Dask scheduler address (default: see below)"
    )
    run.add_argument(
        "--workers",
        type=_integer,
        help=f"worker processes of a local cluster, {_bounds('workers')}, one thread each; giving "
        "it picks worker processes over threads, unless --local-cluster threads, where it is the "
        "number of threads (default: one per core)",
    )
    run.add_argument(
        "--local-cluster",
        choices=LOCAL_KINDS,
        help="without a scheduler: threads in this process (starts at once) or worker "
        "processes (start in 3-4 s, then run more images per second); auto: threads for "
        f"up to {_default('threads-max-images')} inputs adding up to at most "
        f"{_default('threads-max-bytes') / 2**30:g} GiB, else processes; the stored bytes are the "
        f"same (default: {_default('local-cluster')})",
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
        action=_Typed,
        convert=_real,
        metavar="SECONDS",
        help="after a first SIGINT/SIGTERM, how long images in flight may finish before the job "
        f"stops, {_bounds('stop_grace')} (default: {_default('stop-grace')})",
    )
    run.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an image that failed because of an unexpected error, "
        "and the warnings of distributed and the dashboard's web servers (tornado, bokeh)",
    )
    run.add_argument(
        "--report",
        metavar="HTML",
        help="save a Dask performance report (task stream, worker profiles) to this file",
    )

    rec = commands.add_parser(
        "reconstruct",
        help="write images back from a store",
        description="Rebuild images from a store (palette[labels]) and write each complete one "
        "as a file in --out.\nNothing that exists is replaced without --overwrite, and nothing "
        "is written into the folder of an\nimage's recorded source without --allow-source-folder.",
        epilog="""\
Each image becomes its name's stem plus the format's extension (china.jpg -> china.png), directly
in --out; images whose stems clash keep their whole name (x.jpg.png, x.tif.png). Each file (or
zarr folder) is written under a hidden temporary name in --out (.china.png.tmp-1a2b3c4d) and
renamed once complete, so no file ever has its final name half written; a failure removes the
temporary.

An existing file or folder of an output's name is kept, and its image left out, unless
--overwrite: then it is replaced once the new one is complete. An image whose recorded source
(source.path, compared as real paths) is in --out is left out, so that no original is replaced
by, or mixed with, its lossy rebuild, unless --allow-source-folder; sources behind URLs
(s3://...) never count. Choose another --out to keep the originals apart.

Every complete image is written. Each image left out gets one line on stderr, "error: NAME:
why", and the others are still written: incomplete (still being written, or left by a stopped
run: run the job again), damaged (metadata unreadable, chunks missing, a chunk failing its
checksum: verify --repair redoes it), an output kept, its source's folder, a --name not in the
store, a format that cannot hold it (GIF of over 256 colours or 65,535 pixels across, WebP of
over 16,383 across, JPEG XL of colours kept in their source's ICC profile).

An --out that cannot be written at all (disk full, read-only) stops the command at once, with
one line saying how many images were not written; what was written before is complete.

exit status: 0 every image written, 1 some image left out, the store cannot be read, or --out
cannot be written, 2 usage error (a --name that cannot be an image's, such as a/b or ../x; an
unknown --format; an --effort the format does not take; an --out that is a file or a URL).
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rec.add_argument("store", metavar="STORE")
    rec.add_argument(
        "-o",
        "--out",
        metavar="DIR",
        default=".",
        help="output folder, created if needed; a local folder (default: .)",
    )
    rec.add_argument(
        "--format",
        default="png",
        help="file extension (default: png). png and gif: indexed PNG and GIF of the stored "
        "palette, exactly the stored pixels, holding the labels (and for png one filtered copy) "
        "in memory, 1-2 bytes per pixel, never RGB; png puts colours that touch side by side in "
        "the palette, filters the rows and deflates with libdeflate 12: smaller than oxipng -o 2 "
        "makes, 0.3 s per megapixel; above "
        "256 colours, png is RGB and gif is refused. jxl: lossless JPEG XL, exact, the smallest "
        "(0.57-0.73x pngquant's PNG at 16-256 colours, effort 9), 1.5 s per megapixel; "
        "not for a palette kept in its source's ICC profile. webp: lossless WebP, exact. "
        "tif (tiled TIFF) and zarr are written chunk by chunk, for images of any size; jxl, "
        "webp, RGB png and the others (jpg, bmp, ...: anything imageio writes) need the whole "
        "image in memory",
    )
    rec.add_argument(
        "--effort",
        type=_integer,
        metavar="N",
        help="encoder effort of jxl, 1 to 10 (default: 9; 10 makes files 3%% smaller for 3 "
        "times the time), and of webp, 0 to 6 (libwebp's method; default: 4; 6 makes files "
        "3%% smaller for 20 times the time)",
    )
    rec.add_argument(
        "--name", action="append", help="only this image, as the store names it (repeatable)"
    )
    rec.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing files (zarr: folders) of the outputs' names, once the new one is "
        "complete (default: keep them and leave their images out)",
    )
    rec.add_argument(
        "--allow-source-folder",
        action="store_true",
        help="also write images whose recorded source is in --out (default: leave them out, so "
        "that originals are never replaced by their lossy rebuilds)",
    )

    info = commands.add_parser(
        "info",
        help="list what a store holds",
        description="List the images of a store with their status, size and quality, and the "
        "settings they were made with.",
        epilog=INFO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("store", metavar="STORE")
    info.add_argument(
        "--json", action="store_true", help="every attribute and each image's settings, as JSON"
    )
    info.add_argument(
        "--palette",
        action="store_true",
        help="also each complete image's palette: a line of hex colours (#rrggbb, #rrggbbaa "
        "with transparency) after the table; with --json, a 'palette' list of [r, g, b(, a)]",
    )

    check = commands.add_parser(
        "verify",
        help="check that every image of a store is whole; --repair redoes the damaged ones",
        description="Check every image of a store: its metadata parses and has the right types, "
        "its status is complete, its arrays agree with its attributes, every chunk exists and "
        "passes its CRC-32C checksum, every label lies within the palette, and both arrays "
        "match the digests recorded when the image was written. Prints one line per problem "
        "and a summary.",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("store", metavar="STORE")
    check.add_argument("--name", action="append", help="only this image (repeatable)")
    check.add_argument(
        "--repair",
        action="store_true",
        help="compress the damaged images again from their recorded sources and settings, in "
        "this process (holding the store's lease), then check them again",
    )
    check.add_argument(
        "--threads", type=_positive, help="threads reading chunks (default: one per core)"
    )

    redo = commands.add_parser(
        "recompress",
        help="move a store's images to another --compression, without refitting",
        description="Rewrite every complete image of a local store with the codecs of "
        "--compression: the same palette and labels, copied chunk by chunk, one image at a "
        "time. Each image is copied with its new codecs inside the store's bookkeeping group, "
        "then swapped into place by two renames; a run stopped at any point is finished by "
        "running it again. Images already stored so are left; damaged or incomplete ones too "
        "(verify --repair redoes them). Holds the store's lease, like a job.",
    )
    redo.add_argument("store", metavar="STORE")
    redo.add_argument(
        "--compression",
        choices=("portable", "archival"),
        required=True,
        help="portable: zstd, read by every Zarr v3 reader; archival: LZMA, smallest, read by "
        "zarr-python only (see run --help)",
    )

    page = commands.add_parser(
        "report",
        help="write one self-contained HTML page showing how a store's images were compressed",
        description="Write one HTML file showing a store's images: a summary table (size, "
        "colours, PSNR,\nmean CIEDE2000, bytes stored, ratios to raw RGB and to the source "
        "file) and, for each image,\nthe settings it was made with (dithered images marked as "
        "such), its palette as swatches (most\nused first) and the rebuilt image beside its "
        "original (where the recorded source can still be\nread): a thumbnail and a 1:1 crop of "
        "where they differ most.",
        epilog="""\
The file needs nothing else to be viewed, no network either: styles are inline and pictures are
data: URIs (rebuilt pictures and 1:1 crops PNG, the original's thumbnail JPEG). Pictures are
computed chunk by chunk; only the crops are read at full resolution. It is written under a
hidden temporary name beside --out and renamed once complete; an existing file is kept unless
--overwrite.

Each image left out (incomplete, damaged, a --name not in the store) gets one row in the page
and one line on stderr, "error: NAME: why"; the others are still shown. An image whose source
is gone, unreadable or changed since it was compressed is shown without its original, with a
line saying why.

exit status: 0 written with every image, 1 written with some image left out, no such store, or
--out cannot be written, 2 usage error (a bad --name, an --out that exists without --overwrite,
is a folder or a URL).
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    page.add_argument("store", metavar="STORE")
    page.add_argument(
        "-o", "--out", metavar="HTML", required=True, help="HTML file to write (a local file)"
    )
    page.add_argument(
        "--name", action="append", help="only this image, as the store names it (repeatable)"
    )
    page.add_argument(
        "--overwrite", action="store_true", help="replace an existing file of that name"
    )
    return parser


#: Packages whose versions ``--version`` prints, for bug reports.
DEPENDENCIES = (
    "dask",
    "distributed",
    "dask-ml",
    "scikit-learn",
    "numpy",
    "zarr",
    "numcodecs",
    "imageio",
    "pillow",
    "imagecodecs",
    "tifffile",
    "numba",
    "scipy",
)


def _versions(own: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"pipeline {own}"]
    for dist in DEPENDENCIES:
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} missing")
    return "\n".join(parts)


def _job(args: argparse.Namespace) -> dict[str, Any]:
    """The run's values: command-line options over the job file (``--config``)."""
    from pipeline.settings import KEYS, read_job_file

    job = read_job_file(args.config) if args.config else {}
    given = {key: getattr(args, key, None) for key in KEYS}
    given["inputs"] = args.inputs or None
    return {**job, **{k: v for k, v in given.items() if v is not None}}


def _checked(args: argparse.Namespace, job: dict[str, Any]) -> Settings:
    """The run's settings, with every number of the job checked against its bounds at once.

    Before anything starts: a value that cannot work raises :class:`SettingError` naming it as
    it was given: the option with the text typed (``--chunk must be 16..16384, got 8``), the
    job file's key (``job.toml: chunk ...``), else as dask's configuration holds it
    (``DASK_PIPELINE__CHUNK=8: must be ...``), see :func:`pipeline.settings.configured`.
    """
    from pipeline.settings import Running, Settings, check_bounds, check_configured

    try:
        check_bounds({k: job[k] for k in ("workers",) if k in job})
        Running.from_config(stop_grace=job.get("stop_grace"))
        check_configured("threads_max_images", "threads_max_bytes")
        return Settings.from_config(**{k: v for k, v in job.items() if k in Settings.names()})
    except SettingError as exc:
        value = getattr(args, exc.name, None)
        if value is not None:
            typed = getattr(args, "typed", {}).get(exc.name, value)
            raise exc.named("--" + exc.name.replace("_", "-"), str(typed)) from None
        if exc.name in job:
            raise exc.named(f"{args.config}: {exc.name}") from None
        raise


def _run(args: argparse.Namespace) -> int:
    import dask.config

    with collection_paused():  # the job's libraries: see pipeline.job.garbage
        from pipeline.inputs.discover import find_inputs, sample_images
        from pipeline.job.cluster import local_kind, scheduler_address
        from pipeline.store.lease import check_free
        from pipeline.store.location import job_location

    job = _job(args)
    settings = _checked(args, job)
    store = job.get("out") or dask.config.get("pipeline.store")
    where = job_location(store)
    inputs = job.get("inputs") or sample_images()
    address = scheduler_address(job.get("scheduler"))
    # Nothing to do, or a job already writing the store: say so before importing and starting
    # a cluster.
    found = find_inputs(inputs, where)
    images, size = len(found.entries), sum(e.size or 0 for e in found.entries)

    from pipeline.job.summary import Summary

    def started(client: Any) -> None:
        print(f"dashboard: {dashboard_link(client)}", file=sys.stderr, flush=True)

    def counted(images: int, size: int) -> None:  # the job's size, as it grows
        progress.start(images, size)
        gathered.expect(images)

    gathered = Summary(images + len(found.errors))
    stopped = False
    report = job.get("report")
    with _summary_also_when_interrupted(store, gathered):
        stop_point()  # a signal while listing: stop before anything starts
        check_free(where)
        from pipeline.job.cluster import OnDemand, dashboard_link
        from pipeline.job.progress import Progress

        workers = job.get("workers")
        kind = local_kind(images, size, workers=workers, choice=job.get("local_cluster"))
        print(f"cluster: {address or _local_line(kind, workers)}", file=sys.stderr)
        stop_point()  # before a cluster starts
        with (
            OnDemand(
                address, workers=workers, kind=kind, started=started, settings=settings
            ) as cluster,
            _performance_report(report, cluster),
            Progress() as progress,
        ):
            # dask.array, zarr and the rest: imported while worker processes start
            with collection_paused():
                from pipeline.api import stream

            try:
                for result in stream(
                    found,
                    where,
                    overwrite=bool(job.get("overwrite")),
                    client=cluster,
                    on_start=counted,
                    notify=progress.note,
                    running={"stop_grace": job.get("stop_grace")},
                    **vars(settings),
                ):
                    progress(result)
                    gathered.add(result)
                    if args.debug and result.detail:
                        progress.note(result.detail.rstrip())
            except (StoreUnwritable, SchedulerLost, LeaseLost) as exc:  # a summary of what was done
                stopped = True
                left = _not_done(gathered.left, exc)
                progress.note(f"error: {exc}; {left}")
    _summarize(store, gathered)
    if report:
        from pipeline.outputs.report import drop_remote_icons

        drop_remote_icons(report)
        print(f"report: {report}")
    return EXIT_FAILED if gathered.failed or stopped else EXIT_OK


def _summarize(store: str, gathered: Any) -> None:
    print(f"\nstore: {store}")
    print(gathered.text())


@contextlib.contextmanager
def _summary_also_when_interrupted(store: str, gathered: Any) -> Iterator[None]:
    """Print the summary of what a job did before a signal stopped it, then let it stop."""
    try:
        yield
    except KeyboardInterrupt:
        _summarize(store, gathered)
        raise


def _performance_report(report: str | None, cluster: Any) -> contextlib.AbstractContextManager[Any]:
    """Dask's performance report of the job into file ``report``, if given.

    The report needs the cluster from the start, so it is started at once.
    """
    if not report:
        return contextlib.nullcontext()
    from distributed import performance_report

    cluster.client()
    # mode="inline": bokeh's JavaScript inside the file, so it renders offline
    return performance_report(filename=report, mode="inline")


def _local_line(kind: str, workers: int | None) -> str:
    """How the local cluster of a job runs, for its first line."""
    from pipeline.job.cluster import local_size

    n = local_size(workers)
    if kind == "threads":
        return f"local, {n} threads in this process (--local-cluster)"
    return f"local, {n} worker processes (--local-cluster)"


def _not_done(left: int, why: PipelineError) -> str:
    """What a job stopped by ``why`` (the store or the scheduler gone) left, and how to finish."""
    images = "image" if left == 1 else "images"
    when = " to finish"
    if isinstance(why, StoreUnwritable):
        when = " once the store can be written"
    elif isinstance(why, LeaseLost):
        when = " once no other job holds the store"
    return f"stopped, {left:,} {images} not done (run again{when})"


def _stop_point() -> None:
    """Between two images of ``reconstruct`` or ``verify``: stop here if a signal asked to."""
    if requested():
        raise Interrupted(requested())


def _reconstruct(args: argparse.Namespace) -> int:
    from pipeline.outputs.files import write_each
    from pipeline.store.location import Location

    images = written = damaged = 0
    for outcome in write_each(
        Location.at(args.store),
        args.out,
        args.name,
        args.format.strip(),
        overwrite=args.overwrite,
        into_sources=args.allow_source_folder,
        effort=args.effort,
    ):
        images += 1
        if outcome.path is not None:
            written += 1
            print(f"{outcome.name} -> {outcome.path}", flush=True)
        else:
            damaged += outcome.kind == "damaged"
            print(f"error: {outcome.name}: {outcome.problem}", file=sys.stderr, flush=True)
        _stop_point()
    if written == images:
        return EXIT_OK
    repair = f"; python -m pipeline verify {args.store} --repair redoes damaged ones"
    print(
        f"{images - written} of {images} {'image' if images == 1 else 'images'} left out, "
        f"{written} written" + (repair if damaged else ""),
        file=sys.stderr,
    )
    return EXIT_FAILED


def _info(args: argparse.Namespace) -> int:
    from pipeline.job.summary import image_row, settings_text, table
    from pipeline.store.location import Location
    from pipeline.store.read import image_settings, scan
    from pipeline.store.write import open_root

    store = Location.at(args.store)
    root = open_root(store)
    held = _held(store)
    entries = list(scan(store))
    damaged = [e for e in entries if e.problem is not None]
    writing = [
        e.name for e in entries if e.problem is None and (e.attrs or {})["status"] != "complete"
    ]
    palettes = _palettes(store, entries) if args.palette else {}
    if args.json:
        images: dict[str, Any] = {
            e.name: {**e.attrs, "settings": image_settings(e.attrs)}
            if e.attrs is not None and e.problem is None
            else {"problem": e.problem}
            for e in entries
        }
        for name, palette in palettes.items():
            images[name] = {**images[name], "palette": palette.tolist()}
        print(json.dumps({"store": dict(root.attrs), "held": held, "images": images}, indent=2))
    else:
        counts = {
            "complete": len(entries) - len(damaged) - len(writing),
            "being written" if held else "left writing by a stopped run": len(writing),
            "damaged": len(damaged),
        }
        shown = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        print(
            f"{args.store}: format version {root.attrs.get('format_version')}, "
            f"{len(entries)} images" + (f": {shown}" if shown else "")
        )
        if held:
            print(f"{args.store}: {held}")
        rows = [
            image_row(e.name, "damaged", {})
            if e.attrs is None or e.problem is not None
            else image_row(e.name, str(e.attrs["status"]), e.attrs)
            for e in entries
        ]
        print(table(rows))
        made = settings_text(
            [(e.name, image_settings(e.attrs)) for e in entries if e.attrs and e.problem is None]
        )
        if made:
            print(made)
        for name, palette in palettes.items():
            colours = " ".join("#" + bytes(entry).hex() for entry in palette)
            print(f"{name}: {len(palette)} colours: {colours}")
    for entry in damaged:
        print(f"error: {entry.name}: {entry.problem}", file=sys.stderr)
    stopped = [] if held else writing
    for name in stopped:
        print(f"error: {name}: {STOPPED_WRITING}", file=sys.stderr)
    if damaged:
        print(
            f"{len(damaged)} of {len(entries)} images damaged; "
            f"python -m pipeline verify {args.store} --repair redoes them",
            file=sys.stderr,
        )
    return EXIT_FAILED if damaged or stopped else EXIT_OK


def _held(store: Location) -> str | None:
    """``"held by a running job (...)"`` when a job holds ``store`` (a second would be refused).

    A job on this host whose process is gone holds it no more, even before its lease expires.
    """
    from pipeline.errors import os_reason
    from pipeline.store.lease import holder, holds_now

    try:
        found = holder(store)
    except OSError as exc:
        return f"its lease file cannot be read ({os_reason(exc)}); a job may be writing it"
    if found is None or not holds_now(found):
        return None
    return f"held by a running job ({found.describe()})"


def _palettes(store: Location, entries: list[Any]) -> dict[str, Any]:
    """Palette of each complete, undamaged image among ``entries`` (one small read each)."""
    from pipeline.store.read import Damaged, Incomplete, open_image

    found = {}
    for entry in entries:
        if entry.problem is None and entry.attrs is not None:
            with contextlib.suppress(Damaged, Incomplete):  # info lists such images already
                found[entry.name] = open_image(store, entry.name, entry.attrs).palette
    return found


def _verify(args: argparse.Namespace) -> int:
    import time

    from pipeline.job.summary import human_bytes
    from pipeline.store.location import Location
    from pipeline.store.verify import verify

    store = Location.at(args.store)
    started = time.perf_counter()
    held = _held(store)
    if held:
        print(f"{args.store}: {held}; the images it is writing are not damaged", flush=True)
    findings, writing = [], 0
    for finding in verify(store, args.name, args.threads):
        if held and finding.writing:
            print(f"writing: {finding.name}: being written by the running job", flush=True)
            writing += 1
        else:
            findings.append(finding)
            for problem in finding.problems:
                print(f"damaged: {finding.name}: {problem}", flush=True)
        _stop_point()
    seconds = time.perf_counter() - started
    damaged = [f for f in findings if not f.whole]
    unchecked = sum(1 for f in findings if f.whole and not f.checked)
    read = sum(f.bytes_read for f in findings)
    print(
        f"{args.store}: {len(findings) + writing} images, {len(findings) - len(damaged)} whole, "
        + (f"{writing} being written, " if writing else "")
        + f"{len(damaged)} damaged; {human_bytes(read)} of chunks checked in {seconds:.1f} s"
    )
    if unchecked:
        print(
            f"{unchecked} images have no recorded digests (written before checksums): checked "
            "for missing chunks, decoding and labels within the palette only"
        )
    if not damaged:
        return EXIT_OK
    if not args.repair:
        print(f"python -m pipeline verify {args.store} --repair redoes the damaged images")
        return EXIT_FAILED
    from pipeline.api import repair  # a job: dask.array and the rest

    left = 0
    for finding, result in repair(args.store, damaged):
        if result is None:
            print(f"cannot repair: {finding.name}: {finding.repairable}")
            left += 1
        elif result.status != "done":
            print(f"cannot repair: {result.error}")
            left += 1
        else:
            (again,) = verify(store, [finding.name], args.threads)
            print(f"repaired: {finding.name}" if again.whole else f"still damaged: {finding.name}")
            left += not again.whole
    print(f"{len(damaged) - left} of {len(damaged)} damaged images repaired")
    return EXIT_FAILED if left else EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from pipeline.outputs.report import write_report
    from pipeline.store.location import Location

    images = left = damaged = 0
    with contextlib.closing(
        write_report(Location.at(args.store), args.out, args.name, overwrite=args.overwrite)
    ) as outcomes:
        for shown in outcomes:
            images += 1
            if shown.problem is not None:
                left += 1
                damaged += shown.kind == "damaged"
                print(f"error: {shown.name}: {shown.problem}", file=sys.stderr, flush=True)
            elif shown.note is not None:
                print(f"{shown.name}: {shown.note}", flush=True)
            _stop_point()
    counted = f"{images} {'image' if images == 1 else 'images'}"
    print(f"report: {args.out}: {images - left} of {counted} shown")
    if not left:
        return EXIT_OK
    repair = f"; python -m pipeline verify {args.store} --repair redoes damaged ones"
    print(f"{left} of {counted} left out" + (repair if damaged else ""), file=sys.stderr)
    return EXIT_FAILED


#: Loggers of the libraries under a job (every one distributed sets a level of, and those of
#: the dashboard's web servers): silent (:data:`SILENT`) unless ``--debug``.
LIBRARY_LOGGERS = (
    "distributed",
    "distributed.client",
    "distributed.gc",
    "bokeh",
    "tornado",
    "tornado.access",
    "tornado.application",
    "tornado.general",
)
#: A level above every record's: nothing is shown.
SILENT = logging.CRITICAL + 10


#: What a command stopped by a signal leaves, said in its last line.
def _recompress(args: argparse.Namespace) -> int:
    from pipeline.store.location import Location
    from pipeline.store.recode import recode_store

    moved = kept = 0
    for image in recode_store(Location.at(args.store), args.compression):
        if image.after is None:
            kept += 1
        else:
            moved += 1
            print(
                f"{image.name}: {image.previous} -> {args.compression}, "
                f"{image.before:,} -> {image.after:,} bytes",
                flush=True,
            )
        _stop_point()
    print(f"{args.store}: {moved} images recompressed, {kept} already {args.compression}")
    return EXIT_OK


INTERRUPTED = {
    "run": "complete images are kept; run again to finish",
    "reconstruct": "every file written is complete; nothing half-written is left",
    "info": "stopped",
    "verify": "stopped; images repaired so far are complete",
    "report": "stopped; no report written",
    "recompress": "images recompressed so far are complete; run it again to finish",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    # distributed's records (a dashboard port taken, a worker slow to stop, tasks cancelled by
    # a stop, a scheduler lost), and those of the dashboard's web servers (tornado, bokeh: a
    # browser's websocket dropped) are their own business: the job says what matters in its
    # own lines; --debug shows their warnings. The levels are also put in dask's configuration,
    # which distributed applies when it is imported (later) and local worker processes get.
    levels = dict.fromkeys(LIBRARY_LOGGERS, "warning" if debug else SILENT)
    dask.config.set({"logging": {**dask.config.get("logging", {}), **levels}})
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level.upper() if isinstance(level, str) else level)
    warnings.filterwarnings("ignore", module="dask_ml")
    if not debug:  # the dashboard line gives the port used instead
        warnings.filterwarnings("ignore", r"Port \d+ is already in use", UserWarning)
    handlers = {
        "run": _run,
        "reconstruct": _reconstruct,
        "info": _info,
        "verify": _verify,
        "report": _report,
        "recompress": _recompress,
    }
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
        print(f"interrupted: {INTERRUPTED[args.command]}", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of stdout went away (``| head``): end quietly, as a shell tool does; the
        # rest of stdout goes nowhere, so that flushing it at exit raises nothing either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
