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
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import dask.config

from pipeline.errors import SettingError, UsageError
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
        "psnr": None,
        "color-profile": "convert",
        "frames": "first",
        "compression": "portable",
        "store": "compressed.zarr",
        # How a job runs (never what it stores: same bytes whatever these are).
        "batch-bytes": 4 << 20,
        "batch-images": 32,
        "batch-seconds": 1.0,
        "batch-pixels": 4_194_304,
        "in-flight": 2,
        "hold-bytes": 512 << 20,
        "stop-grace": 20,
        "lease-seconds": 60,
        # Which local cluster a job without a scheduler starts (pipeline.job.cluster.local_kind).
        "local-cluster": "auto",
        "threads-max-images": 24,
        "threads-max-bytes": 4 << 30,
    }
}
dask.config.update_defaults(DEFAULTS)

#: Values of ``pipeline.local-cluster`` (``--local-cluster``); see
#: :func:`pipeline.job.cluster.local_kind`.
LOCAL_KINDS = ("auto", "threads", "processes")


#: Most colours a palette may have (labels are uint16 above 256 colours).
MAX_COLORS = 65_536
#: Most pixels sampled per image: the fit holds them as float32 colours (1.2 GB at the most).
MAX_SAMPLE = 100_000_000
#: Largest seed: scikit-learn's and numpy's legacy random states take 32-bit seeds.
MAX_SEED = 2**32 - 1
#: Smallest and largest chunk side. A task works on whole chunks, held whole: their RGB pixels
#: and labels (768 and 512 MiB for one chunk at 16384, uint16 labels), even in an image smaller
#: than one chunk, whose partial chunk Zarr fills to the whole chunk's size before writing it.
#: (A large image's tasks take blocks of several chunks, up to ``pipeline.job.graph``'s
#: ``LABEL_PIXELS``; a block is at least one chunk.)
MIN_CHUNK, MAX_CHUNK = 16, 16_384
#: Most Lloyd iterations on the sample (it converges within tens; more only costs time).
MAX_ITER = 1_000
#: Largest tolerance: it bounds the summed squared shift of colours in [0, 1]; from 1 on, a fit
#: stops after its first iteration whatever the value.
MAX_TOL = 1.0
#: Largest image decoded whole (``max_pixels``, ``batch_pixels``): 2^32 pixels, more than the
#: largest JPEG (65,535 pixels a side); 16 GiB of memory to decode and label.
MAX_IMAGE_PIXELS = 2**32
#: Most pixels counted per image: the counts are uint32.
MAX_COUNT_PIXELS = 2**32 - 1
#: Largest dither strength, in spacings of the palette's colours.
MAX_DITHER_STRENGTH = 4.0
#: Most bytes of files batched into one task (read by one worker thread): 1 GiB.
MAX_BATCH_BYTES = 1 << 30
#: Most images batched into one task.
MAX_BATCH_IMAGES = 10_000
#: Most tasks in flight per thread of the cluster.
MAX_IN_FLIGHT = 64
#: Most bytes of an image's decoded chunks held between its fit and its labelling: 1 TiB.
MAX_HOLD_BYTES = 1 << 40
#: Longest stop grace and lease: one day (a lease of less than a second cannot be renewed in
#: time, every third of it).
MIN_LEASE_SECONDS, MAX_SECONDS = 1.0, 86_400.0
#: Most inputs, and bytes of inputs, a job may have to run on threads (``local-cluster: auto``).
MAX_THREADS_IMAGES, MAX_THREADS_BYTES = 10**9, 1 << 50
#: Most worker processes (or threads) of a local cluster, all on one machine.
MAX_WORKERS = 1_024


@dataclass(frozen=True)
class Bound:
    """The values a numeric setting may take: ``low`` to ``high``, integers unless ``real``."""

    low: float
    high: float
    real: bool = False

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (``must be 1..65536``), or None if it fits."""
        kind = (int, float) if self.real else int
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"must be {'a number' if self.real else 'an integer'}"
        if not self.low <= value <= self.high:  # NaN included
            return f"must be {self.text()}"
        return None

    def text(self) -> str:
        """The bounds as help texts show them: ``16..16384``."""
        show = "{:g}" if self.real else "{:.0f}"
        return f"{show.format(self.low)}..{show.format(self.high)}"


#: Bounds of every numeric setting (job-file keys; options and dask.config keys with dashes).
BOUNDS: dict[str, Bound] = {
    "colors": Bound(1, MAX_COLORS),
    "sample": Bound(1, MAX_SAMPLE),
    "seed": Bound(0, MAX_SEED),
    "chunk": Bound(MIN_CHUNK, MAX_CHUNK),
    "max_iter": Bound(1, MAX_ITER),
    "tol": Bound(0, MAX_TOL, real=True),
    "effort": Bound(0, 3),
    "max_pixels": Bound(1, MAX_IMAGE_PIXELS),
    "count_pixels": Bound(1, MAX_COUNT_PIXELS),
    "dither_strength": Bound(0, MAX_DITHER_STRENGTH, real=True),
    "batch_bytes": Bound(0, MAX_BATCH_BYTES),
    "batch_images": Bound(1, MAX_BATCH_IMAGES),
    "batch_seconds": Bound(0, MAX_SECONDS, real=True),
    "batch_pixels": Bound(0, MAX_IMAGE_PIXELS),
    "in_flight": Bound(1, MAX_IN_FLIGHT),
    "hold_bytes": Bound(0, MAX_HOLD_BYTES),
    "stop_grace": Bound(0, MAX_SECONDS, real=True),
    "lease_seconds": Bound(MIN_LEASE_SECONDS, MAX_SECONDS, real=True),
    "threads_max_images": Bound(0, MAX_THREADS_IMAGES),
    "threads_max_bytes": Bound(0, MAX_THREADS_BYTES),
    "workers": Bound(1, MAX_WORKERS),
}


def check_bounds(values: Mapping[str, Any]) -> None:
    """Raise :class:`SettingError` for the first of ``values`` (by name) outside its bounds."""
    for name, value in values.items():
        problem = BOUNDS[name].problem(value) if name in BOUNDS else None
        if problem is not None:
            raise SettingError(name, problem, value)


#: Prefix of the environment variables dask reads into its configuration (then lower-cased,
#: ``__`` for a level: ``DASK_PIPELINE__MAX_ITER`` is ``pipeline.max_iter``, the same key as
#: ``pipeline.max-iter``).
DASK_PREFIX = "DASK_"


def _pipeline_variables() -> Iterator[tuple[str, str, str]]:
    """``(variable, text, key)`` of each environment variable dask reads into ``pipeline.*``.

    ``key`` is the part after ``pipeline``, with dashes and dots as dask keys have them
    (``max-iter``; ``""`` for a variable setting ``pipeline`` itself).
    """
    for variable, text in os.environ.items():
        if variable.startswith(DASK_PREFIX):
            top, _, key = variable[len(DASK_PREFIX) :].lower().partition("__")
            if top == "pipeline":
                yield variable, text, key.replace("__", ".").replace("_", "-")


def check_environment() -> None:
    """Refuse a ``DASK_PIPELINE__*`` environment variable that names no setting.

    dask would keep its value under a key nothing reads (a misspelled
    ``DASK_PIPELINE__COLOURS=32`` is silently ignored otherwise).

    Raises
    ------
    UsageError
        Naming the first such variable and the settings there are.
    """
    known = DEFAULTS["pipeline"]
    for variable, _, key in _pipeline_variables():
        if key not in known:
            names = ", ".join(k.replace("-", "_").upper() for k in known)
            raise UsageError(f"{variable} is not a pipeline setting (known: {names})")


def configured(error: SettingError) -> SettingError:
    """``error``, about a value from dask's configuration, naming it as it was set there.

    The ``DASK_PIPELINE__*`` environment variable that set it, if one holds its value
    (``DASK_PIPELINE__CHUNK=8: must be 16..16384``); else the key ``pipeline.<name>`` when its
    value is not the package's default (a YAML file, a ``dask.config.set``); else as it is.
    """
    key = error.name.replace("_", "-")
    value = dask.config.get(f"pipeline.{key}")
    for variable, text, name in _pipeline_variables():
        if name == key and dask.config.interpret_value(text) == value:
            return error.set_by(variable, text)
    return error if value == DEFAULTS["pipeline"][key] else error.named(f"pipeline.{key}")


def _configured(
    names: Sequence[str], overrides: dict[str, Any], check: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Settings ``names`` from dask.config ``pipeline.*``, ``overrides`` on top, ``check`` ed.

    ``None`` overrides are ignored; one that is not in ``names`` raises :class:`UsageError`, as
    does an environment variable naming no setting (:func:`check_environment`). A
    :class:`SettingError` of ``check`` about a value from the configuration names it as set
    there (:func:`configured`).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(names))
    if unknown:
        verb = "is not a setting" if len(unknown) == 1 else "are not settings"
        raise UsageError(f"{', '.join(unknown)} {verb} (known: {', '.join(names)})")
    check_environment()
    values = {name: dask.config.get(f"pipeline.{name.replace('_', '-')}") for name in names}
    values.update(given)
    try:
        check(values)
    except SettingError as exc:
        if exc.name in given:
            raise
        raise configured(exc) from None
    return values


def check_configured(*names: str) -> None:
    """Check the values dask's configuration holds for settings ``names`` (``threads_max_images``).

    Raises
    ------
    SettingError
        For the first one out of its bounds, named as it was set (:func:`configured`).
    """
    _configured(names, {}, check_bounds)


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
    batch_seconds : float
        Seconds of a worker thread's work per batch, as expected from the files' sizes
        (:class:`pipeline.job.plan.WorkEstimate`): batches end there, so that tasks, and the
        progress they report, come at a steady pace.
    batch_pixels : int
        Most pixels of an image compressed inside a batch; a larger one gets its own graph.
    in_flight : int
        Work submitted at once, in tasks per thread of the cluster: new work is submitted as
        work completes.
    hold_bytes : int
        An image read chunk by chunk (tiled TIFF, Zarr, a dask array) is read once to fit its
        palette and once more to label it, except for as many chunks as these bytes of decoded
        pixels: the cluster holds those from the first read until they are labelled.
    stop_grace : float
        Seconds that images in flight get to finish after a first SIGINT/SIGTERM (Kubernetes
        waits 30 s before it kills a pod; give Slurm ``--signal=...@N`` with N above this).
    lease_seconds : float
        The store's lease lasts this long unless renewed; a job that died without releasing
        it blocks another job on the store for at most this long (at once on the same host).
    """

    batch_bytes: int
    batch_images: int
    batch_seconds: float
    batch_pixels: int
    in_flight: int
    hold_bytes: int
    stop_grace: float
    lease_seconds: float

    @classmethod
    def from_config(cls, **overrides: Any) -> Running:
        """Values from dask.config ``pipeline.*``, non-None ``overrides`` on top, validated."""
        return cls(**_configured([f.name for f in fields(cls)], overrides, check_bounds))


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
        ``"MIN-MAX"`` on pngquant's 0-100 scale (libimagequant's mapping of the error to
        quality: :mod:`pipeline.quantize.quality`), or pngquant's other forms
        (:func:`quality_range`): use the fewest colours (up to ``colors``) whose quality
        reaches MAX, and fail an image whose quality stays below MIN even at ``colors``.
    psnr : str or None
        ``"MIN-MAX"`` or ``"MAX"`` (MIN 0), a target as ``quality`` is, in PSNR (dB); one of
        ``quality`` and ``psnr`` at most.
    color_profile : str
        ``"convert"``: pixels in an embedded colour profile are converted to sRGB before
        anything else (:mod:`pipeline.inputs.profiles`); ``"keep"``: their values are stored
        as they are, with the profile's bytes (CMYK is converted either way).
    frames : str
        ``"first"``: the first frame or page of an animated or multi-page file; ``"all"``:
        every frame or page as an image of its own (:mod:`pipeline.inputs.frames`).
    compression : str
        How labels and palette are compressed (:data:`pipeline.store.write.COMPRESSIONS`):
        ``"portable"`` (zstd, read by every Zarr v3 reader) or ``"archival"`` (LZMA, smaller,
        read by zarr-python only). Never changes the palette or labels, so it is no part of
        what decides whether a stored image is reused.
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
    psnr: str | None = None
    color_profile: str = "convert"
    frames: str = "first"
    compression: str = "portable"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Names of the settings."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_config(cls, **overrides: Any) -> Settings:
        """Settings from dask.config ``pipeline.*``, non-None ``overrides`` on top, validated."""
        names = cls.names()
        return cls(**_configured(names, overrides, lambda values: cls(**values).validate()))

    def validate(self) -> None:
        """Raise :class:`SettingError` naming the first setting that cannot work (see BOUNDS)."""
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise SettingError(name, f"must be one of {', '.join(choices)}", value)
        if self.quality is not None:
            quality_range(self.quality)
        if self.psnr is not None:
            psnr_range(self.psnr)
            if self.quality is not None:
                raise SettingError("psnr", "cannot be used with quality (one target)", self.psnr)
        check_bounds({name: getattr(self, name) for name in self.names() if name in BOUNDS})
        if self.sample < self.colors:
            raise SettingError("sample", f"must be at least colors ({self.colors})", self.sample)

    def target(self) -> tuple[str, float, float, str] | None:
        """What the palette size is chosen for, if anything: ``(measure, MIN, MAX, text)``.

        ``measure`` is ``"quality"`` (pngquant's 0-100) or ``"psnr"`` (dB); ``text`` is the
        setting as given, for messages.
        """
        if self.quality is not None:
            return ("quality", *quality_range(self.quality), str(self.quality))
        if self.psnr is not None:
            return ("psnr", *psnr_range(self.psnr), str(self.psnr))
        return None

    def fit_settings(self) -> dict[str, Any]:
        """The settings that shape the palette and labels, as recorded in the store.

        Settings added since the first stores are left out at the value those stores were
        made with (:data:`ORIGINAL`), so that their images are still found complete with the
        same settings; so is the strength of a dither that is off. Keys are the settings'
        names, but for :data:`RECORDED_AS` (read back with :func:`recorded_settings`).
        """
        recorded = asdict(self)
        for key in ("colors", "sample", "seed", "chunk", "max_pixels", "frames", "compression"):
            recorded.pop(key)
        if self.dither == "none":
            recorded.pop("dither_strength")
        for key, value in ORIGINAL.items():
            if recorded[key] == value:
                recorded.pop(key)
        return {RECORDED_AS.get(key, key): value for key, value in recorded.items()}


#: Settings that take one of a few names.
CHOICES = {
    "space": ("rgb", "oklab"),
    "dither": ("none", "ordered", "blue-noise"),
    "color_profile": ("convert", "keep"),
    "frames": ("first", "all"),
    "compression": ("portable", "archival"),
}
#: Settings added after the first stores, with the value those stores were made with (stores
#: made before colour profiles were converted are taken as made with ``convert``: an image
#: without a profile is the same either way).
ORIGINAL: dict[str, Any] = {
    "space": "rgb",
    "dither": "none",
    "quality": None,
    "psnr": None,
    "color_profile": "convert",
}
#: Settings recorded in ``fit_settings`` under another key than their name: stores written
#: before ``psnr`` existed recorded PSNR targets as ``quality``, so pngquant's 0-100 quality
#: is recorded as ``pngquant_quality``.
RECORDED_AS = {"quality": "pngquant_quality"}
#: Keys of ``fit_settings`` that name another setting than their own: those of
#: :data:`RECORDED_AS`, and ``quality``, a PSNR target in the stores that recorded it.
RECORDED_KEYS = {"quality": "psnr", **{key: name for name, key in RECORDED_AS.items()}}


def recorded_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The settings, by name, of an image's recorded ``fit_settings`` (old stores' included).

    ``{"quality": "30-40"}`` (a PSNR target, as stores written before ``psnr`` recorded it)
    is ``{"psnr": "30-40"}``; ``{"pngquant_quality": "65-80"}`` is ``{"quality": "65-80"}``.
    """
    return {RECORDED_KEYS.get(key, key): value for key, value in record.items()}


#: The forms ``quality`` takes, pngquant's: ``MIN-MAX``, ``MAX`` (MIN is 90% of it),
#: ``-MAX`` (MIN 0), ``MIN-`` (MAX 100); whole numbers.
QUALITY_FORM = re.compile(r"(?P<low>\d+)?(?P<dash>-)?(?P<high>\d+)?")


def _text(value: Any) -> str:
    """A target's text: a job file's or environment variable's number (80, -80) as typed."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def quality_range(value: Any) -> tuple[int, int]:
    """``(MIN, MAX)`` on pngquant's 0-100 scale, from its forms as pngquant reads them.

    ``"65-80"``; ``"80"``: MIN is ``80 * 9 // 10`` (72); ``"-80"``: MIN 0; ``"65-"``: MAX 100.

    Raises
    ------
    SettingError
        Unless one of these forms with whole numbers 0 <= MIN <= MAX <= 100.
    """
    text = _text(value)
    found = QUALITY_FORM.fullmatch(text.strip()) if isinstance(text, str) else None
    if found is not None and (found["low"] or found["high"]):
        low, dash, high = found["low"], found["dash"], found["high"]
        bounds = (int(low or 0), int(high or 100)) if dash else (int(low) * 9 // 10, int(low))
        if bounds[0] <= bounds[1] <= 100:
            return bounds
    raise SettingError("quality", "must be MIN-MAX, MAX, -MAX or MIN-, 0..100 (pngquant's)", value)


def psnr_range(value: Any) -> tuple[float, float]:
    """``(MIN, MAX)`` in dB from ``"MIN-MAX"`` or ``"MAX"`` (then MIN is 0).

    Raises
    ------
    SettingError
        Unless 0 <= MIN <= MAX <= 100.
    """
    parts = str(_text(value)).split("-")
    try:
        low, high = (0.0, float(parts[0])) if len(parts) == 1 else map(float, parts)
    except ValueError:
        low = high = -1.0
    if len(parts) > 2 or not 0 <= low <= high <= 100:
        raise SettingError("psnr", "must be MIN-MAX or MAX, in dB, 0..100", value)
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
    if values.get("local_cluster", "auto") not in LOCAL_KINDS:
        raise UsageError(
            f"{path}: local_cluster must be one of {', '.join(LOCAL_KINDS)}, "
            f"got {values['local_cluster']!r}"
        )
    try:
        check_bounds({k: v for k, v in values.items() if k in JOB_KEYS})
        Settings.from_config(**{k: v for k, v in values.items() if k not in JOB_KEYS})
    except SettingError as exc:  # one of the file's values, or of dask's configuration
        raise exc.named(f"{path}: {exc.name}") if exc.name in values else exc from None
    folder = os.path.dirname(os.path.abspath(path))
    if "inputs" in values:
        values["inputs"] = [_resolve(folder, p) for p in values["inputs"]]
    for key in PATH_KEYS:
        if key in values:
            values[key] = _resolve(folder, values[key])
    return values
