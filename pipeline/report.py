"""Human-readable tables and one-line messages for job results and store contents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.job import ImageResult


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _psnr(value: float | None) -> str:
    return "lossless" if value is None else f"{value:.2f}"


def image_row(name: str, status: str, attrs: dict[str, Any]) -> list[str]:
    """Table cells for one image: name, status, pixels, colours, PSNR, stored bytes, ratio."""
    metrics = attrs.get("metrics", {})
    shape = attrs.get("image_shape", [0, 0])
    if not metrics:
        return [name, status, f"{shape[0] * shape[1]:,}" if shape[0] else "", "", "", "", ""]
    return [
        name,
        status,
        f"{shape[0] * shape[1]:,}",
        str(attrs.get("colors", "")),
        _psnr(metrics.get("psnr_db")),
        _human_bytes(metrics["stored_bytes"]),
        f"{metrics['ratio']:.1f}x",
    ]


HEADER = ["image", "status", "pixels", "colors", "PSNR dB", "stored", "vs raw RGB"]


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


def summary(results: Sequence[ImageResult]) -> str:
    """Per-image table of a job, followed by its failures, one line each."""
    rows = [image_row(r.name, r.status, r.attrs or {}) for r in results]
    text = table(rows)
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    text += "\n\n" + ", ".join(f"{n} {s}" for s, n in counts.items())
    if failed:
        text += "\n" + "\n".join(f"error: {r.error}" for r in failed)
    return text
