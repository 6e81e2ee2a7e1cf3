"""Progress of a job, for logs and terminals: images done of all, pixels done of all.

Every finished image gets one plain line (what a scheduled job's log keeps), e.g.::

    [3/12] china.jpg: done after 1.9 s, 34.51 dB, 6.4x; 0.8 of 3.3 MP (25%)

On a terminal, a live status line under them is redrawn twice a second with a bar, the counts
and the elapsed time.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from pipeline.job import ImageResult

#: Seconds between redraws of the live line on a terminal.
REDRAW_SECONDS = 0.5
#: Width of the live bar in characters.
BAR_WIDTH = 30


class Progress:
    """Report a job's progress to ``stream`` (default: stderr); use as ``with Progress() as p``.

    Pass :meth:`start` as ``on_start`` and the object itself as ``on_result`` to
    :func:`pipeline.compress`. ``live`` (default: whether ``stream`` is a terminal) adds the
    redrawn status line.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.images = self.pixels = 0
        self.images_done = self.pixels_done = 0
        self.started = time.monotonic()
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

    def start(self, images: int, pixels: int) -> None:
        """Record the size of the job: images to report on, pixels of those opened."""
        with self._lock:
            self.images, self.pixels = images, pixels
            self.started = time.monotonic()

    def __call__(self, result: ImageResult) -> None:
        """Record one image's result and log its line."""
        with self._lock:
            self.images_done += 1
            self.pixels_done += result.pixels
            self._write(self._line(result) + "\n" + (self._status() if self.live else ""))

    def _line(self, result: ImageResult) -> str:
        line = f"[{self.images_done}/{self.images}] {result.name}: {result.status}"
        if result.status == "done":
            metrics = result.metrics
            psnr = metrics.get("psnr_db")
            quality = "lossless" if psnr is None else f"{psnr:.2f} dB"
            line += f" after {result.seconds:.1f} s, {quality}, {metrics.get('ratio', 0):.1f}x"
        elif result.error:
            line += f": {result.error}"
        if self.pixels:
            share = self.pixels_done / self.pixels
            line += f"; {self.pixels_done / 1e6:.1f} of {self.pixels / 1e6:.1f} MP ({share:.0%})"
        return line

    def _status(self) -> str:
        share = self.pixels_done / self.pixels if self.pixels else 0.0
        filled = int(BAR_WIDTH * share)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        elapsed = time.monotonic() - self.started
        done = f"{self.images_done}/{self.images} images, {share:.0%} of pixels"
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
