"""Job settings: defaults live in dask's configuration under ``pipeline.*``.

Every default can be changed without code through dask's own mechanisms: a YAML file in
``~/.config/dask/``, or environment variables such as ``DASK_PIPELINE__COLORS=64`` (read when dask
is imported). Command-line options and function arguments take precedence.

Job files (:func:`read_job_file`): one TOML file holding everything ``python -m pipeline run``
takes. A scheduled job (a Kubernetes CronJob, a Slurm script) keeps its settings in a file rather
than in a long command line. Keys are the command-line options with underscores, at the top
level::

    inputs = ["s3://photos/incoming/", "/data/scans/*.tif"]
    out = "s3://photos/compressed.zarr"
    colors = 128
    effort = 1
    report = "report.html"

Command-line options given as well win over the file; settings neither gives come from dask's
configuration (``DASK_PIPELINE__*`` environment variables, dask YAML files), then the defaults.
Local relative paths in the file are relative to the file's folder. Unknown keys and bad values
are reported, naming the file, before any work starts.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, fields
from typing import Any

import dask.config

from pipeline.errors import UsageError
from pipeline.paths import is_url

#: Defaults registered with dask.config (keys use dashes, like dask's own settings).
DEFAULTS: dict[str, Any] = {
    "pipeline": {
        "colors": 128,
        "sample": 5_000,
        "seed": 0,
        "chunk": 1024,
        "max-iter": 1,
        "tol": 1e-4,
        "effort": 1,
        "max-pixels": 178_956_970,
        "count-pixels": 4_194_304,
        "space": "rgb",
        "dither": "none",
        "dither-strength": 0.75,
        "quality": None,
        "store": "compressed.zarr",
        # How a job runs (never what it stores: same bytes whatever these are).
        "batch-bytes": 4 << 20,
        "batch-images": 32,
        "batch-pixels": 4_194_304,
        "in-flight": 2,
        "stop-grace": 20,
        "lease-seconds": 60,
        # Which local cluster a job without a scheduler starts (pipeline.job.cluster.local_kind).
        "local-cluster": "auto",
        "threads-max-images": 24,
        "threads-max-bytes": 64 << 20,
    }
}
dask.config.update_defaults(DEFAULTS)

#: Values of ``pipeline.local-cluster`` (``--local-cluster``); see
#: :func:`pipeline.job.cluster.local_kind`.
LOCAL_KINDS = ("auto", "threads", "processes")


def _configured(cls: type, overrides: dict[str, Any]) -> dict[str, Any]:
    """The fields of dataclass ``cls`` from dask.config ``pipeline.*``, ``overrides`` on top.

    ``None`` overrides are ignored; one that is not a field raises :class:`UsageError`.
    """
    values = {f.name: dask.config.get(f"pipeline.{f.name.replace('_', '-')}") for f in fields(cls)}
    unknown = set(overrides) - set(values)
    if unknown:
        raise UsageError(f"unknown settings: {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


@dataclass(frozen=True)
class Running:
    """How a job runs: batching, work in flight, stopping; none of it changes a stored byte.

    Attributes
    ----------
    batch_bytes : int
        Inputs are batched, several per task, until their files add up to this many bytes;
        a larger file gets a graph of its own (chunk-parallel).
    batch_images : int
        Most images per batch (fewer when the job is small: every worker gets some).
    batch_pixels : int
        Most pixels of an image compressed inside a batch; a larger one gets its own graph.
    in_flight : int
        Work submitted at once, in tasks per thread of the cluster: new work is submitted as
        work completes.
    stop_grace : float
        Seconds that images in flight get to finish after a first SIGINT/SIGTERM (Kubernetes
        waits 30 s before it kills a pod; give Slurm ``--signal=...@N`` with N above this).
    lease_seconds : float
        The store's lease lasts this long unless renewed; a job that died without releasing
        it blocks another job on the store for at most this long (at once on the same host).
    """

    batch_bytes: int
    batch_images: int
    batch_pixels: int
    in_flight: int
    stop_grace: float
    lease_seconds: float

    @classmethod
    def from_config(cls, **overrides: Any) -> Running:
        """Values from dask.config ``pipeline.*``, non-None ``overrides`` on top, validated."""
        values = _configured(cls, overrides)
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise UsageError(f"{name.replace('_', '-')} must be a number >= 0, got {value!r}")
        for name in ("batch_images", "in_flight"):
            if values[name] < 1:
                raise UsageError(f"{name.replace('_', '-')} must be >= 1, got {values[name]}")
        return cls(**values)


#: Most colours a palette may have (labels are uint16 above 256 colours).
MAX_COLORS = 65_536


@dataclass(frozen=True)
class Settings:
    """How images are compressed.

    Attributes
    ----------
    colors : int
        Palette size asked for, 1..65536 (labels are uint8 up to 256, uint16 above).
    sample : int
        Pixels drawn at random from each image for the dask-ml KMeans fit (>= colors).
    seed : int
        Seed of the sample and of the fit: same inputs and seed give identical stores.
    chunk : int
        Side in pixels of the square chunks the work and the stored labels are split into.
    max_iter, tol : int, float
        Lloyd iterations and tolerance (absolute centre shift on [0, 1] colours) of dask-ml.
    effort : int
        0 to 3: work put into refining the palette over every pixel after the sample fit
        (0: none, only rounding and polishing; 1: default; 3: best quality, slowest).
    max_pixels : int
        Largest image decoded whole (JPEG, PNG, ...; tiled TIFF and Zarr have no limit). The
        default is Pillow's decompression-bomb limit; a worker needs about 4 bytes per pixel.
    count_pixels : int
        Most pixels whose colours the refinement counts: every pixel of an image up to this
        size, a regular grid of pixels of a larger one (labels and metrics always cover every
        pixel).
    space : str
        Colour space the palette is fitted and pixels are labelled in: ``"rgb"`` (squared
        distances between uint8 sRGB values) or ``"oklab"`` (perceptual).
    dither : str
        ``"none"``, ``"ordered"`` (a Bayer matrix) or ``"blue-noise"``: pixels are nudged by
        a threshold map fixed to their position before labelling, which breaks gradients' bands
        into fine patterns; the same bytes whatever the chunking.
    dither_strength : float
        Scale of the nudge in spacings of the palette's colours (the median distance from an
        entry to its nearest other), 0 to 4; 0.75 by default (see :mod:`pipeline.quantize.dither`).
    quality : str or None
        ``"MIN-MAX"`` or ``"MAX"``, PSNR in dB: use the fewest colours (up to ``colors``) whose
        PSNR reaches MAX, and fail an image whose PSNR stays below MIN even at ``colors``.
    """

    colors: int
    sample: int
    seed: int
    chunk: int
    max_iter: int
    tol: float
    effort: int
    max_pixels: int
    count_pixels: int
    space: str = "rgb"
    dither: str = "none"
    dither_strength: float = 0.75
    quality: str | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Names of the settings."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_config(cls, **overrides: Any) -> Settings:
        """Settings from dask.config ``pipeline.*``, non-None ``overrides`` on top, validated."""
        settings = cls(**_configured(cls, overrides))
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the first setting that cannot work."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in CHOICES:
                if value not in CHOICES[f.name]:
                    choices = ", ".join(CHOICES[f.name])
                    raise UsageError(f"{f.name} must be one of {choices}, got {value!r}")
                continue
            if f.name == "quality":
                if value is not None:
                    quality_range(value)
                continue
            kind = float if f.name in ("tol", "dither_strength") else int
            if isinstance(value, bool) or not isinstance(value, (kind, int)):
                raise UsageError(f"{f.name} must be a number, got {value!r}")
        checks = [
            (1 <= self.colors <= MAX_COLORS, f"colors must be 1..{MAX_COLORS}, got {self.colors}"),
            (
                self.sample >= self.colors,
                f"sample ({self.sample}) must be at least colors ({self.colors})",
            ),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.chunk >= 16, f"chunk must be >= 16 pixels, got {self.chunk}"),
            (self.max_iter >= 1, f"max_iter must be >= 1, got {self.max_iter}"),
            (self.tol >= 0, f"tol must be >= 0, got {self.tol}"),
            (0 <= self.effort <= 3, f"effort must be 0..3, got {self.effort}"),
            (self.max_pixels >= 1, f"max_pixels must be >= 1, got {self.max_pixels}"),
            (self.count_pixels >= 1, f"count_pixels must be >= 1, got {self.count_pixels}"),
            (
                0 <= self.dither_strength <= 4,
                f"dither_strength must be 0..4, got {self.dither_strength}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def fit_settings(self) -> dict[str, Any]:
        """The settings that shape the palette and labels, as recorded in the store.

        Settings added since the first stores are left out at the value those stores were
        made with (:data:`ORIGINAL`), so that their images are still found complete with the
        same settings; so is the strength of a dither that is off.
        """
        recorded = asdict(self)
        for key in ("colors", "sample", "seed", "chunk", "max_pixels"):
            recorded.pop(key)
        if self.dither == "none":
            recorded.pop("dither_strength")
        for key, value in ORIGINAL.items():
            if recorded[key] == value:
                recorded.pop(key)
        return recorded


#: Settings that take one of a few names.
CHOICES = {"space": ("rgb", "oklab"), "dither": ("none", "ordered", "blue-noise")}
#: Settings added after the first stores, with the value those stores were made with.
ORIGINAL: dict[str, Any] = {"space": "rgb", "dither": "none", "quality": None}


def quality_range(text: str) -> tuple[float, float]:
    """``(MIN, MAX)`` in dB from ``"MIN-MAX"`` or ``"MAX"`` (then MIN is 0).

    Raises :class:`UsageError` unless 0 <= MIN <= MAX <= 100.
    """
    parts = str(text).split("-")
    try:
        low, high = (0.0, float(parts[0])) if len(parts) == 1 else map(float, parts)
    except ValueError:
        low = high = -1.0
    if len(parts) > 2 or not 0 <= low <= high <= 100:
        raise UsageError(f"quality must be MIN-MAX or MAX, PSNR in dB, 0..100; got {text!r}")
    return low, high


#: Keys of a job file that are not compression settings, with their types.
JOB_KEYS: dict[str, type] = {
    "inputs": list,
    "out": str,
    "scheduler": str,
    "workers": int,
    "local_cluster": str,
    "overwrite": bool,
    "report": str,
    "stop_grace": float,
}
#: Every key a job file may hold.
KEYS = tuple(JOB_KEYS) + Settings.names()
#: Keys holding local paths (or URLs), resolved against the job file's folder.
PATH_KEYS = ("out", "report")


def _resolve(folder: str, path: str) -> str:
    return path if is_url(path) or os.path.isabs(path) else os.path.join(folder, path)


def read_job_file(path: str) -> dict[str, Any]:
    """Read and check a job file; returns its values by key (only the keys it sets).

    Raises
    ------
    UsageError
        If the file cannot be read or parsed, has an unknown key, or a value of the wrong type
        or out of range (the message names the file and the key).
    """
    try:
        with open(path, "rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such job file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read job file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise UsageError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(known: {', '.join(KEYS)})"
        )
    for key, kind in JOB_KEYS.items():
        if key not in values:
            continue
        value = values[key]
        number = kind is float and isinstance(value, int)  # TOML's 20 for 20.0
        wrong = not (isinstance(value, kind) or number) or (
            kind in (int, float) and isinstance(value, bool)
        )
        if key == "inputs" and not wrong:
            wrong = not all(isinstance(item, str) for item in value)
        if wrong:
            expected = "a list of strings" if key == "inputs" else f"a {kind.__name__}"
            raise UsageError(f"{path}: {key} must be {expected}, got {value!r}")
    if values.get("stop_grace", 0) < 0:
        raise UsageError(f"{path}: stop_grace must be >= 0, got {values['stop_grace']}")
    if values.get("workers", 1) < 1:
        raise UsageError(f"{path}: workers must be >= 1, got {values['workers']}")
    if values.get("local_cluster", "auto") not in LOCAL_KINDS:
        raise UsageError(
            f"{path}: local_cluster must be one of {', '.join(LOCAL_KINDS)}, "
            f"got {values['local_cluster']!r}"
        )
    settings = {k: v for k, v in values.items() if k not in JOB_KEYS}
    try:
        Settings.from_config(**settings)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    folder = os.path.dirname(os.path.abspath(path))
    if "inputs" in values:
        values["inputs"] = [_resolve(folder, p) for p in values["inputs"]]
    for key in PATH_KEYS:
        if key in values:
            values[key] = _resolve(folder, values[key])
    return values
