"""Human-readable tables and one-line messages for job results and store contents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.results import ImageResult


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
