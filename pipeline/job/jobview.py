"""What the dashboard's ``/pipeline`` page shows of a job, from the totals the job sends.

Pure functions over the messages of :class:`pipeline.job.metrics.Totals` (plain dicts, as they
reach the scheduler); the scheduler plugin (:mod:`pipeline.job.metrics_plugin`) keeps the
messages and a :class:`History` per job, and :mod:`pipeline.job.dashboard` serves
:func:`job_view` as JSON. Imports only the standard library (the scheduler imports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Points of a job's history kept (older points are thinned out as new ones come).
POINTS_KEPT = 240
#: Seconds a rate is measured over (at least; longer where the history is thinner).
RATE_SECONDS = 5.0

#: One point of a history: (Unix time, images with a result, pixels of the images done).
Point = tuple[float, int, int]


@dataclass
class History:
    """A job's counts at the times its totals were sent, in bounded memory.

    The counts are cumulative, so thinning out old points loses only detail: a rate between
    any two points kept is still exact.
    """

    limit: int = POINTS_KEPT
    points: list[Point] = field(default_factory=list)

    def add(self, when: float, images: int, pixels: int) -> None:
        """Add the counts at ``when`` (a time before the last point's counts as the last's).

        Once more than ``limit`` points are kept, every other point of the older half goes
        (the first and the newest half stay): old times keep coarser detail than recent ones.
        """
        if self.points and when <= self.points[-1][0]:
            self.points[-1] = (self.points[-1][0], images, pixels)
            return
        self.points.append((when, images, pixels))
        if len(self.points) > self.limit:
            half = len(self.points) // 2
            self.points = [*self.points[:half:2], *self.points[half:]]


def rates(points: list[Point], seconds: float = RATE_SECONDS) -> list[tuple[float, float, float]]:
    """Images per second and megapixels per second at each point after the first.

    Each is measured from the latest earlier point at least ``seconds`` before it (or the
    first point, when none is): ``(time, images/s, megapixels/s)``.
    """
    series = []
    start = 0
    for end in range(1, len(points)):
        when = points[end][0]
        while start + 1 < end and when - points[start + 1][0] >= seconds:
            start += 1
        then, images, pixels = points[start]
        span = when - then
        series.append(
            (
                when,
                (points[end][1] - images) / span,
                (points[end][2] - pixels) / span / 1e6,
            )
        )
    return series


def results_of(totals: dict[str, Any]) -> int:
    """Images of a job with a result: done, skipped or failed."""
    return int(totals.get("done", 0)) + int(totals.get("skipped", 0)) + int(totals.get("failed", 0))


def left_of(totals: dict[str, Any]) -> int | None:
    """Images of a job with no result yet (None when the job did not say how many it has)."""
    expected = totals.get("expected")
    return None if expected is None else max(0, int(expected) - results_of(totals))


def state_of(totals: dict[str, Any]) -> str:
    """What became of a job: ``running``, ``finished``, ``stopped`` or ``client gone``.

    ``finished``: every image has a result; ``stopped``: it ended with images left; ``client
    gone``: its client left without a last word.
    """
    if totals.get("running"):
        return "running"
    if totals.get("gone"):
        return "client gone"
    return "stopped" if left_of(totals) else "finished"


def job_view(totals: dict[str, Any], history: History) -> dict[str, Any]:
    """A job as the page shows it (JSON-able): its totals, state, rates and their history."""
    started, updated = float(totals["started"]), float(totals.get("updated") or totals["started"])
    elapsed = max(updated - started, 0.0)
    series = rates(history.points)
    now = series[-1] if series else (updated, 0.0, 0.0)
    return {
        "job": str(totals["job"]),
        "store": str(totals["store"]),
        "state": state_of(totals),
        "started": started,
        "updated": updated,
        "elapsed": elapsed,
        "expected": totals.get("expected"),
        "done": int(totals.get("done", 0)),
        "skipped": int(totals.get("skipped", 0)),
        "failed": int(totals.get("failed", 0)),
        "left": left_of(totals),
        "pixels": int(totals.get("pixels", 0)),
        "source_bytes": int(totals.get("source_bytes", 0)),
        "written_bytes": int(totals.get("written_bytes", 0)),
        "images_per_s": now[1],
        "megapixels_per_s": now[2],
        "average_images_per_s": results_of(totals) / elapsed if elapsed else 0.0,
        "average_megapixels_per_s": int(totals.get("pixels", 0)) / elapsed / 1e6
        if elapsed
        else 0.0,
        "series": {
            "seconds": [when - started for when, _, _ in series],
            "images_per_s": [value for _, value, _ in series],
            "megapixels_per_s": [value for _, _, value in series],
        },
        "psnr": {
            "edges": list(totals.get("psnr_edges", [])),
            "counts": list(totals.get("psnr_counts", [])),
            "lossless": int(totals.get("lossless", 0)),
        },
        "de00": {
            "edges": list(totals.get("de00_edges", [])),
            "counts": list(totals.get("de00_counts", [])),
        },
        "failures": [
            {"name": str(name), "reason": str(reason)}
            for name, reason in totals.get("failures", [])
        ],
    }
