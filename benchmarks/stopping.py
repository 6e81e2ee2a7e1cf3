"""Stopping a job with SIGTERM at a random moment, and finishing it with a rerun.

A 200-image job (``--count``; 400x300 PNG crops of the bundled photos, each rolled differently,
made in ``--work``; about 20 s undisturbed on 2 cores) runs as ``python -m pipeline run IN -o
STORE --workers 2 -k 32``: first undisturbed into ``ref.zarr``, then ``--repeat`` times into a
fresh ``stop.zarr``, each time sent SIGTERM (to the CLI process only, started in its own
session) at a random moment (``random.Random(--seed)``) between its first progress line and 80%
of the undisturbed run's duration, and then run again without a signal.

Reported per repeat: the exit status (143 expected) and seconds from the signal to the exit;
images reported done on stderr (``[i/N] NAME: done after ...``), images complete in the store
(group attribute ``status == "complete"``) and images left with another status; whether every
image reported done is complete and every complete one was reported done; processes of the
job's session still running after it exited (killed then); the rerun's exit status and counts,
and whether its store's chunks are byte-identical to ``ref.zarr`` (every file but ``zarr.json``
and ``.pipeline/``). A totals line follows.

Usage: python benchmarks/stopping.py [--count 200] [--repeat 10] [--seed 0] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from streaming import write_pngs

from tests.conftest import store_files

HEIGHT, WIDTH = 300, 400
#: Seconds a job may take before the benchmark gives up.
TIMEOUT = 600
DONE = re.compile(r"^\[\d+/\d+\] (.+): done after ")
SUMMARY = re.compile(r"\d+ done, \d+ skipped, \d+ failed")


def command(inputs: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "run", str(inputs), "-o", str(store),
            "--workers", "2", "-k", "32"]  # fmt: skip


def make_photos(folder: Path, count: int) -> Path:
    """``count`` WIDTH x HEIGHT PNG crops of the bundled photos, each rolled differently, in
    ``folder/photos{count}`` (kept between runs)."""
    import numpy as np

    def crop(image: np.ndarray, i: int) -> np.ndarray:
        return np.roll(image, (i * 37, i * 53), axis=(0, 1))[:HEIGHT, :WIDTH]

    return write_pngs(folder / f"photos{count}", count, crop)


class Job:
    """``python -m pipeline run`` in its own session; its stderr lines kept by a thread."""

    def __init__(self, inputs: Path, store: Path) -> None:
        shutil.rmtree(store, ignore_errors=True)
        Path(f"{store}.lease.json").unlink(missing_ok=True)
        self.lines: list[str] = []
        self.first: float | None = None  # seconds from the start to the first progress line
        self.progress = threading.Event()  # set at the first progress line
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command(inputs, store),
            cwd=store.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("[") and self.first is None:
                self.first = time.monotonic() - self.started
                self.progress.set()

    def wait(self) -> int:
        """The exit status (its time in ``ended``), once stderr is read to its end and the
        session's other processes are gone."""
        code = self.process.wait(timeout=TIMEOUT)
        self.ended = time.monotonic()
        self._reader.join(timeout=60)
        self.stragglers = stragglers(self.process.pid)
        return code

    def done(self) -> set[str]:
        return {m[1] for line in self.lines if (m := DONE.match(line))}


def stragglers(session: int) -> int:
    """Processes of ``session`` still running (zombies aside) 10 s after its leader exited;
    they are killed."""
    import psutil

    deadline = time.monotonic() + 10
    while True:
        found = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (OSError, psutil.Error):
                continue
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for process in found:
        process.kill()
    return len(found)


def statuses(store: Path) -> dict[str, str]:
    """Each image group's ``status`` attribute."""
    found = {}
    for group in store.iterdir():
        if group.is_dir() and not group.name.startswith("."):
            meta = group / "zarr.json"
            attributes = json.loads(meta.read_text())["attributes"] if meta.exists() else {}
            found[group.name] = attributes.get("status", "none")
    return found


def rerun(inputs: Path, store: Path) -> tuple[int, str]:
    """The exit status and the summary line of a run of the job on ``store`` as it is."""
    done = subprocess.run(
        command(inputs, store),
        cwd=store.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    summary = SUMMARY.search(done.stdout)
    return done.returncode, summary[0] if summary else done.stderr.strip().splitlines()[-1]


def stop(inputs: Path, store: Path, at: float) -> dict[str, object]:
    """A run sent SIGTERM ``at`` seconds after it started (no earlier than its first progress
    line), then finished by a rerun."""
    job = Job(inputs, store)
    if not job.progress.wait(TIMEOUT):
        job.process.kill()
        job.wait()
        raise RuntimeError("no progress line")
    time.sleep(max(0.0, job.started + at - time.monotonic()))
    signalled = time.monotonic()
    job.process.send_signal(signal.SIGTERM)
    code = job.wait()
    done = job.done()
    found = statuses(store)
    complete = {name for name, status in found.items() if status == "complete"}
    return {
        "at": signalled - job.started,
        "exit": code,
        "seconds": job.ended - signalled,
        "done": done,
        "complete": complete,
        "other": Counter(status for status in found.values() if status != "complete"),
        "stragglers": job.stragglers,
        "rerun": rerun(inputs, store),
    }


def subset(part: set[str], whole: set[str]) -> str:
    missing = len(part - whole)
    return "yes" if not missing else f"NO ({missing})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="images (default: 200)")
    parser.add_argument("--repeat", type=int, default=10, help="stops (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stop times")
    parser.add_argument("--work", default=None, help="folder for inputs and stores (kept)")
    args = parser.parse_args()
    folder = Path(args.work or tempfile.mkdtemp(prefix="pipeline-stopping-")).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    inputs = make_photos(folder, args.count)
    reference = folder / "ref.zarr"
    undisturbed = Job(inputs, reference)
    code = undisturbed.wait()
    duration = undisturbed.ended - undisturbed.started
    complete = sum(s == "complete" for s in statuses(reference).values())
    if code != 0 or complete != args.count:
        raise RuntimeError(f"undisturbed run: exit {code}, {complete} complete")
    expected = store_files(reference, metadata=True)
    first = undisturbed.first
    rng = random.Random(args.seed)
    rows = []
    for _ in range(args.repeat):
        row = stop(inputs, folder / "stop.zarr", rng.uniform(first, max(first, 0.8 * duration)))
        row["identical"] = store_files(folder / "stop.zarr", metadata=True) == expected
        rows.append(row)

    print(
        f"\n## {args.count} {WIDTH}x{HEIGHT} PNGs, --workers 2 -k 32: undisturbed {duration:.1f} s "
        f"(first progress line at {first:.1f} s); SIGTERM at a random moment, seed {args.seed}"
    )
    print(
        "| # | signal at s | exit | s to exit | reported done | complete in store "
        "| other status | done all complete | complete all reported | left running "
        "| rerun exit | rerun | rerun identical to ref |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, row in enumerate(rows, 1):
        other = ", ".join(f"{n} {s}" for s, n in row["other"].items()) or "0"
        print(
            f"| {i} | {row['at']:.1f} | {row['exit']} | {row['seconds']:.1f} "
            f"| {len(row['done'])} | {len(row['complete'])} | {other} "
            f"| {subset(row['done'], row['complete'])} | {subset(row['complete'], row['done'])} "
            f"| {row['stragglers']} | {row['rerun'][0]} | {row['rerun'][1]} "
            f"| {'yes' if row['identical'] else 'NO'} |"
        )
    exits = Counter(row["exit"] for row in rows)
    others = sum((row["other"] for row in rows), Counter())
    print(
        f"\ntotals: exits {dict(exits)}; max {max(r['seconds'] for r in rows):.1f} s to exit; "
        f"reported done {sum(len(r['done']) for r in rows)}, complete "
        f"{sum(len(r['complete']) for r in rows)}, other status {dict(others) or 0}; "
        f"reported but not complete {sum(len(r['done'] - r['complete']) for r in rows)}, "
        f"complete but not reported {sum(len(r['complete'] - r['done']) for r in rows)}; "
        f"left running {sum(r['stragglers'] for r in rows)}; "
        f"reruns exit 0 {sum(r['rerun'][0] == 0 for r in rows)}/{len(rows)}, "
        f"identical to ref {sum(r['identical'] for r in rows)}/{len(rows)}"
    )


if __name__ == "__main__":
    main()
