"""Progress of a job, for logs and terminals: images done of all, input bytes done of all.

Every image done or failed gets one plain line (what a scheduled job's log keeps), e.g.::

    [3/12] china.jpg: done after 0.3 s, 34.51 dB, 6.4x; 0.4 of 1.6 MB (25%)

with the image's own time; an image that is one frame or page of a file that has several says
which (``, frame 1 of 3``). Images skipped because they are already complete get a line each
for the first :data:`SKIP_LINES`, then one line per :data:`SKIP_EVERY` (a rerun of a large job
skips most of its images). On a terminal, a live status line under them is redrawn twice a
second with a bar, the counts and the elapsed time.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from pipeline.results import LARGER_THAN_SOURCE, ImageResult, larger_than_source

#: Seconds between redraws of the live line on a terminal.
REDRAW_SECONDS = 0.5
#: Width of the live bar in characters.
BAR_WIDTH = 30
#: Skipped images that get a line each; after them, one line per SKIP_EVERY skipped.
SKIP_LINES = 20
SKIP_EVERY = 1000


class Progress:
    """Report a job's progress to ``stream`` (default: stderr); use as ``with Progress() as p``.

    Pass :meth:`start` as ``on_start`` and the object itself as ``on_result`` to
    :func:`pipeline.compress`. ``live`` (default: whether ``stream`` is a terminal) adds the
    redrawn status line.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.images = self.bytes = 0
        self.images_done = self.bytes_done = self.skipped = 0
        self.started = time.monotonic()
        self._sized = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.live:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            with self._lock:
                self._write(self._status() + "\n")

    def start(self, images: int, size: int) -> None:
        """Record the size of the job: images to report on, bytes of their files.

        Called again when the job finds more images (``frames: all``: a file of several
        frames is several images, known once its header is read): the counts grow, the clock
        runs on.
        """
        with self._lock:
            if not self._sized:
                self.started = time.monotonic()
            self.images, self.bytes, self._sized = images, size, True

    def __call__(self, result: ImageResult) -> None:
        """Record one image's result and log its line."""
        with self._lock:
            self.images_done += 1
            self.bytes_done += result.size
            if result.status == "skipped":
                self.skipped += 1
                if self.skipped > SKIP_LINES and self.skipped % SKIP_EVERY:
                    return
            self._write(self._line(result) + "\n" + (self._status() if self.live else ""))

    def note(self, text: str) -> None:
        """Log a line that is not an image's (the job stopping, a traceback)."""
        with self._lock:
            self._write(text + "\n" + (self._status() if self.live else ""))

    def _line(self, result: ImageResult) -> str:
        line = f"[{self.images_done}/{self.images}] {result.name}: {result.status}"
        if result.status == "skipped" and self.skipped > SKIP_LINES:
            line += f" ({self.skipped:,} already complete so far)"
        elif result.status == "done":
            metrics = result.metrics
            psnr = metrics.get("psnr_db")
            quality = "lossless" if psnr is None else f"{psnr:.2f} dB"
            line += f" after {result.seconds:.1f} s, {quality}"
            if "ciede2000_mean" in metrics:
                line += f", dE00 {metrics['ciede2000_mean']:.2f}"
            line += f", {metrics.get('ratio', 0):.1f}x raw"
            if "ratio_source" in metrics:
                line += f", {metrics['ratio_source']:.2f}x source"
                if larger_than_source(metrics):
                    line += f" ({LARGER_THAN_SOURCE})"
            line += _frame_note(result)
        elif result.error:  # said once, without the name the line starts with
            line += f": {result.error.removeprefix(f'{result.name}: ')}"
        if self.bytes:
            share = self.bytes_done / self.bytes
            line += f"; {self.bytes_done / 1e6:.1f} of {self.bytes / 1e6:.1f} MB ({share:.0%})"
        return line

    def _status(self) -> str:
        share = self.bytes_done / self.bytes if self.bytes else 0.0
        filled = int(BAR_WIDTH * share)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        elapsed = time.monotonic() - self.started
        done = f"{self.images_done}/{self.images} images, {share:.0%} of input bytes"
        return f"[{bar}] {done}, {elapsed:.0f} s"

    def _write(self, text: str) -> None:
        if self.live:
            text = "\r\x1b[K" + text  # replace the live line
        self.stream.write(text)
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(REDRAW_SECONDS):
            with self._lock:
                self._write(self._status())


def _frame_note(result: ImageResult) -> str:
    """``, frame 1 of 3`` for an image that is one frame (or page) of several, else nothing."""
    source = (result.attrs or {}).get("source", {})
    frames = source.get("frames", 1)
    if not isinstance(frames, int) or frames <= 1:
        return ""
    kind = "page" if "page " in str(source.get("conversion", "")) else "frame"
    return f", {kind} {int(source.get('frame', 0)) + 1} of {frames}"
