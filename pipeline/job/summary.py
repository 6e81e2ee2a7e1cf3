"""Human-readable tables and one-line messages for job results and store contents."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pipeline.results import ImageResult
from pipeline.settings import DEFAULTS


def human_bytes(n: float) -> str:
    """``n`` bytes for a person: B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _psnr(value: float | None) -> str:
    return "lossless" if value is None else f"{value:.2f}"


def _figure(value: object, form: str) -> str:
    """``value`` formatted with ``form``, or blank when absent (images stored before it)."""
    return format(value, form) if isinstance(value, int | float) else ""


def image_row(name: str, status: str, attrs: dict[str, Any]) -> list[str]:
    """Table cells for one image (see :data:`HEADER`)."""
    metrics = attrs.get("metrics", {})
    shape = attrs.get("image_shape", [0, 0])
    pixels = f"{shape[0] * shape[1]:,}" if shape[0] else ""
    if not metrics:
        return [name, status, pixels, "", "", "", "", "", ""]
    ratio_source = _figure(metrics.get("ratio_source"), ".2f")
    return [
        name,
        status,
        pixels,
        str(attrs.get("colors", "")),
        _psnr(metrics.get("psnr_db")),
        _figure(metrics.get("ciede2000_mean"), ".2f"),
        human_bytes(metrics["stored_bytes"]),
        f"{metrics['ratio']:.1f}x",
        ratio_source and f"{ratio_source}x",
    ]


#: Columns of a table of images: the ratios are the raw bytes (3 per pixel, 4 for an image with
#: transparency) and those of the source file over the bytes stored.
HEADER = [
    "image",
    "status",
    "pixels",
    "colors",
    "PSNR dB",
    "dE00",
    "stored",
    "vs raw",
    "vs source",
]


def table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    """Rows as an aligned plain-text table (numbers right-aligned)."""
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        parts = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


#: How a settings line names the settings (:func:`pipeline.store.read.image_settings`); any
#: other is named by its key.
SETTING_LABELS = {
    "colors": "colours asked",
    "sample": "sample",
    "seed": "seed",
    "effort": "effort",
    "space": "space",
    "dither": "dither",
    "dither_strength": "strength",
    "quality": "quality",
    "psnr": "PSNR target dB",
    "color_profile": "colour profile",
    "frame": "frame (from 0)",
    "chunk": "chunk",
    "max_iter": "KMeans iterations",
    "tol": "tolerance",
    "count_pixels": "pixels counted",
    "compression": "compression",
}
#: Settings a settings line always shows; the others only when not at the package's default.
MAIN_SETTINGS = ("colors", "sample", "seed", "effort", "space", "dither", "dither_strength")


def _setting(value: Any) -> str:
    """A setting's value in a settings line: ``4,194,304``, ``0.0001``, ``off``, ``ordered``."""
    if value is None:
        return "off"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value)


def _at_default(key: str, value: Any) -> bool:
    """Whether setting ``key`` has the package's default value (unknown settings never do)."""
    defaults = DEFAULTS["pipeline"]
    name = key.replace("_", "-")
    return name in defaults and defaults[name] == value


def settings_line(settings: dict[str, Any]) -> str:
    """An image's settings in one line: ``colours asked 16, sample 2,000, seed 0, ...``.

    ``settings`` as :func:`pipeline.store.read.image_settings` gives them: the main ones
    (:data:`MAIN_SETTINGS`) are always shown, the others when not at the package's default;
    settings this version does not know are shown by their own name.
    """
    shown = [key for key in MAIN_SETTINGS if key in settings] + [
        key
        for key, value in settings.items()
        if key not in MAIN_SETTINGS and not _at_default(key, value)
    ]
    return ", ".join(f"{SETTING_LABELS.get(key, key)} {_setting(settings[key])}" for key in shown)


def settings_text(named: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The settings of images ``(name, settings)``: one line when they are all the same.

    ``settings: colours asked 16, ...`` for one image or images made alike; else a
    ``settings:`` line and an aligned line per image. Empty without images.
    """
    lines = [settings_line(settings) for _, settings in named]
    if not lines:
        return ""
    if len(set(lines)) == 1:
        every = " (every image)" if len(lines) > 1 else ""
        return f"settings{every}: {lines[0]}"
    width = max(len(name) for name, _ in named)
    rows = [f"  {name.ljust(width)}  {line}" for (name, _), line in zip(named, lines, strict=True)]
    return "\n".join(["settings:", *rows])


def is_dithered(settings: dict[str, Any]) -> bool:
    """Whether an image with these recorded settings was dithered."""
    return settings.get("dither", "none") != "none"


#: Images listed in a job's summary table; the rest are counted (``info`` lists every one).
SUMMARY_ROWS = 50


class Summary:
    """A job's summary, gathered result by result in bounded memory (any number of images).

    Why an image failed is said once, in its progress line (:mod:`pipeline.job.progress`), not
    again here.
    """

    def __init__(self, images: int = 0) -> None:
        self.rows: list[list[str]] = []
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.images = images

    def expect(self, images: int, size: int = 0) -> None:
        """Record how many results the job will give (it grows with ``frames: all``).

        Takes the arguments of the ``on_start`` callback of :func:`pipeline.compress`.
        """
        self.images = images

    @property
    def left(self) -> int:
        """Images of the job with no result: not done (a stopped job's next run does them)."""
        return max(0, self.images - sum(self.counts.values()))

    def add(self, result: ImageResult) -> None:
        """Count one image's result (and keep its row while there is room)."""
        self.counts[result.status] += 1
        if len(self.rows) < SUMMARY_ROWS:
            self.rows.append(image_row(result.name, result.status, result.attrs or {}))

    @property
    def failed(self) -> int:
        """Images that failed."""
        return self.counts["failed"]

    def text(self) -> str:
        """Per-image table (the first :data:`SUMMARY_ROWS`), then the counts, ``left`` included."""
        total = sum(self.counts.values())
        text = table(self.rows)
        if total > len(self.rows):
            text += f"\n... and {total - len(self.rows):,} more images"
        counts = {**self.counts, "left": self.left}
        text += "\n\n" + ", ".join(f"{n:,} {s}" for s, n in counts.items())
        if self.failed:
            text += " (the reasons: each image's 'failed:' line of the progress log, on stderr)"
        return text
