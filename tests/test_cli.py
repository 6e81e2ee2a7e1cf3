"""``python -m pipeline`` as a user runs it: real processes, real local clusters, real files."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import zarr

from pipeline.cli import build_parser
from tests.conftest import store_files


def run(*args, cwd, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def failures(log: str) -> dict[str, str]:
    """Why each image failed, by name, from a job's progress lines."""
    found = {}
    for line in log.splitlines():
        matched = re.match(r"\[\d+/\d+\] (.+?): failed: (.*?)(; [\d.]+ of [\d.]+ MB .*)?$", line)
        if matched:
            found[matched[1]] = matched[2]
    return found


@pytest.mark.slow
def test_default_run_compresses_the_sample_photos(tmp_path):
    import contextlib
    import socket

    with contextlib.ExitStack() as held:
        dashboard = held.enter_context(socket.socket())
        # as distributed binds: connections of an earlier dashboard waiting out TIME_WAIT on
        # the port do not keep this one from taking it
        dashboard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # taken already: the same case
            dashboard.bind(("127.0.0.1", 8787))
            dashboard.listen()
        done = run("run", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "dashboard: http://127.0.0.1:" in done.stderr
    assert "dashboard: http://127.0.0.1:8787/" not in done.stderr
    assert "Warning" not in done.stderr  # distributed's "Port 8787 is already in use"
    assert "china.jpg: done" in done.stderr
    for name in ("china.jpg", "flower.jpg"):
        row = next(line for line in done.stdout.splitlines() if line.startswith(name))
        cells = row.split()
        assert cells[1] == "done"
        assert cells[2] == "273,280"
        assert cells[3] == "128"
        assert 33 < float(cells[4]) < 45
    assert (tmp_path / "compressed.zarr" / "china.jpg" / "labels" / "zarr.json").exists()

    info = run("info", "compressed.zarr", "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    images = json.loads(info.stdout)["images"]
    assert images["china.jpg"]["status"] == "complete"
    assert images["flower.jpg"]["metrics"]["ratio"] > 5

    rebuilt = run("reconstruct", "compressed.zarr", "--out", "png", cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    pixels = iio.imread(tmp_path / "png" / "china.png")
    assert pixels.shape == (427, 640, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) <= 128

    again = run("run", "--workers", "1", cwd=tmp_path)
    assert again.returncode == 0
    assert "china.jpg: skipped" in again.stderr


@pytest.mark.slow
def test_bad_inputs_fail_alone_with_one_line_each(tmp_path, small_photo):
    iio.imwrite(tmp_path / "good.png", small_photo)
    (tmp_path / "notes.jpg").write_text("hello")
    iio.imwrite(tmp_path / "whole.jpg", small_photo)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # decodes on a worker, then fails
    os.symlink("loop.png", tmp_path / "loop.png")
    done = run(
        "run",
        "good.png",
        "notes.jpg",
        "missing.png",
        "cut.jpg",
        "loop.png",
        "-o",
        "s.zarr",
        "-k",
        "16",
        "--sample",
        "1000",
        "--workers",
        "1",
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    errors = failures(done.stderr)
    assert errors.pop("cut.jpg").startswith("cannot decode image: ")
    assert errors == {
        "loop.png": "symbolic link loop",
        "missing.png": "no such file",
        "notes.jpg": "not a readable image: unknown or unsupported format",
    }
    assert "good.png: done" in done.stderr
    assert "1 done, 0 skipped, 4 failed, 0 left (the reasons: " in done.stdout
    assert "no such file" not in done.stdout  # said once, in the image's line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--colors", "0"], "colors must be 1..65536"),
        (
            ["run", "--colors", "64", "--sample", "10"],
            "--sample must be at least colors (64), got 10",
        ),
        (["run", "--chunk", "abc"], "not an integer"),
        (["run", "--chunk", "8"], "--chunk must be 16..16384, got 8"),
        (["run", "--workers", "0"], "--workers must be 1..1024, got 0"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    done = run(*args, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "job", "env", "message"),
    [
        (["--chunk", "4294967296"], None, {}, "--chunk must be 16..16384, got 4294967296"),
        (["--colors", "70000"], None, {}, "--colors must be 1..65536, got 70000"),
        (["--sample", str(10**10)], None, {}, "--sample must be 1..100000000, got 10000000000"),
        (["--seed", str(2**32)], None, {}, "--seed must be 0..4294967295, got 4294967296"),
        (["--max-iter", "1001"], None, {}, "--max-iter must be 1..1000, got 1001"),
        (["--dither-strength", "4.5"], None, {}, "--dither-strength must be 0..4, got 4.5"),
        (
            ["--max-pixels", str(2**33)],
            None,
            {},
            "--max-pixels must be 1..4294967296, got 8589934592",
        ),
        (["--workers", "100000"], None, {}, "--workers must be 1..1024, got 100000"),
        (["--stop-grace", "-1"], None, {}, "--stop-grace must be 0..86400, got -1"),
        ([], "chunk = 4294967296", {}, "job.toml: chunk must be 16..16384, got 4294967296"),
        ([], "tol = 2.0", {}, "job.toml: tol must be 0..1, got 2.0"),
        ([], "count_pixels = -1", {}, "job.toml: count_pixels must be 1..4294967295, got -1"),
        ([], "stop_grace = 1e9", {}, "job.toml: stop_grace must be 0..86400, got 1000000000.0"),
        (
            [],
            None,
            {"DASK_PIPELINE__CHUNK": "4294967296"},
            "DASK_PIPELINE__CHUNK=4294967296: must be 16..16384",
        ),
        (
            [],
            None,
            {"DASK_PIPELINE__DITHER_STRENGTH": "9"},
            "DASK_PIPELINE__DITHER_STRENGTH=9: must be 0..4",
        ),
        (
            [],
            None,
            {"DASK_PIPELINE__COLORS": "abc"},
            "DASK_PIPELINE__COLORS=abc: must be an integer",
        ),
        (
            [],
            None,
            {"DASK_PIPELINE__LEASE_SECONDS": "0"},
            "DASK_PIPELINE__LEASE_SECONDS=0: must be 1..86400",
        ),
        (
            [],
            None,
            {"DASK_PIPELINE__BATCH_IMAGES": str(10**6)},
            "DASK_PIPELINE__BATCH_IMAGES=1000000: must be 1..10000",
        ),
        (
            [],
            None,
            {"DASK_PIPELINE__THREADS_MAX_BYTES": "-1"},
            "DASK_PIPELINE__THREADS_MAX_BYTES=-1: must be 0..1125899906842624",
        ),
        (
            [],
            None,
            {"DASK_PIPELINE__COLOURS": "32"},
            "DASK_PIPELINE__COLOURS is not a pipeline setting (known: COLORS, SAMPLE, SEED,",
        ),
        # the option wins over the environment (and then the variable is never looked at)
        (["--colors", "70000"], None, {"DASK_PIPELINE__COLORS": "abc"}, "--colors must be"),
    ],
)
def test_numbers_out_of_bounds_stop_the_job_before_anything_starts(
    tmp_path, small_photo, args, job, env, message
):
    iio.imwrite(tmp_path / "a.png", small_photo)
    if job is not None:
        (tmp_path / "job.toml").write_text(job + "\n")
        args = [*args, "--config", "job.toml"]
    done = run("run", "a.png", "-o", "out.zarr", *args, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}")
    assert not (tmp_path / "out.zarr").exists()
    assert not (tmp_path / "out.zarr.lease.json").exists()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["empty"], "error: no inputs found: no image files in empty"),
        (["nothing*.png"], "error: no inputs found: nothing*.png: no file matches this pattern"),
        (["missing.png"], "error: no inputs found: missing.png: no such file"),
        (["missing.png", "empty"], "error: no inputs found: missing.png: no such file"),
    ],
)
def test_no_inputs_is_a_usage_error_before_any_cluster_or_store(tmp_path, inputs, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    done = run("run", *inputs, "-o", "out.zarr", cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [message]  # one line, and no cluster started
    assert not (tmp_path / "out.zarr").exists()
    assert not (tmp_path / "out.zarr.lease.json").exists()


def test_a_store_among_the_inputs_or_over_other_files_is_refused(tmp_path, small_photo):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    iio.imwrite(photos / "a.png", small_photo)
    cases = [
        (["photos", "-o", "photos"], "the output store is the input folder"),
        (["photos", "-o", "photos/out.zarr"], f"the output store is inside input {photos}"),
        (["photos/**/*.png", "-o", "photos/sub/out.zarr"], "is inside input"),
        (["photos/a.png", "-o", "photos"], "a folder that is not a store"),
    ]
    for args, message in cases:
        done = run("run", *args, cwd=tmp_path, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: "), (args, line)
        assert message in line, (args, line)
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "sub"]  # nothing written there
    assert not any((photos / "sub").iterdir())


def test_environment_sets_defaults(tmp_path):
    done = run(
        "run", "--sample", "10", cwd=tmp_path, env={"DASK_PIPELINE__COLORS": "64"}, timeout=60
    )
    assert done.returncode == 2
    assert "at least colors (64)" in done.stderr


def test_reconstruct_and_info_on_a_missing_store(tmp_path):
    for command in ("info", "reconstruct"):
        done = run(command, "nowhere.zarr", cwd=tmp_path, timeout=60)
        assert done.returncode == 1
        assert done.stderr.strip() == "error: nowhere.zarr: no such store"


def test_help_documents_every_option():
    parser = build_parser()
    text = parser.format_help()
    assert all(c in text for c in ("run", "reconstruct", "info"))
    run_help = parser._subparsers._group_actions[0].choices["run"].format_help()
    for option in (
        "--out",
        "--colors",
        "--sample",
        "--seed",
        "--chunk",
        "--scheduler",
        "--overwrite",
        "--effort",
        "DASK_SCHEDULER_ADDRESS",
        "exit status",
    ):
        assert option in run_help


def test_version_lists_dependencies(tmp_path):
    done = run("--version", cwd=tmp_path, timeout=60)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("pipeline ")
    assert len(lines) == 14  # one line per package, none folded
    assert any(line.startswith("dask-ml ") for line in lines)
    assert any(line.startswith("zarr 3.") for line in lines)


def test_reconstruct_any_imageio_format(tmp_path, small_photo):
    from pipeline import compress_array

    compress_array(small_photo, str(tmp_path / "s.zarr"), "crop.png", colors=16, sample=1000)
    done = run("reconstruct", "s.zarr", "--format", "tif", "-o", "out", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert iio.imread(Path(tmp_path / "out" / "crop.tif")).shape == small_photo.shape


class Job:
    """``python -m pipeline`` in the background, its stderr lines collected as they come."""

    def __init__(self, *args, cwd):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            # as from a terminal: a shell's background jobs (CI, this suite) ignore SIGINT
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text, timeout=120):
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, "\n".join(self.lines)
            time.sleep(0.05)

    def finish(self, timeout=120):
        out = self.process.stdout.read()
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.process.returncode, out, "\n".join(self.lines)


def photos(folder, small_photo, count):
    folder.mkdir(exist_ok=True)
    for i in range(count):
        iio.imwrite(folder / f"p{i:02d}.png", np.roll(small_photo, 3 * i, axis=0))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_keeps_every_finished_image_and_a_rerun_finishes_the_job(
    tmp_path, small_photo, signum
):

    photos(tmp_path / "in", small_photo, 40)
    command = ["run", "in", "--workers", "1", "-k", "32", "-o", "s.zarr"]
    job = Job(*command, cwd=tmp_path)
    job.wait_for("[3/40]")
    if signum == signal.SIGINT:  # Ctrl-C: the terminal signals every process of the job
        os.killpg(job.process.pid, signum)
    else:  # how Kubernetes stops a pod: its first process
        job.process.send_signal(signum)
    code, out, err = job.finish()
    assert code == 128 + signum, err
    assert "stopping: submitting nothing more" in err
    assert "interrupted: complete images are kept; run again to finish" in err
    assert "Traceback" not in err  # the worker processes ignore SIGINT: no dumps from them
    assert "CancelledError" not in err
    done = {line.split()[1].rstrip(":") for line in err.splitlines() if ": done after" in line}
    assert 3 <= len(done) < 40
    assert f"{len(done)} done, 0 skipped, 0 failed" in out  # the summary of what was done
    root = zarr.open_group(tmp_path / "s.zarr", mode="r")
    complete = {n for n in root.group_keys() if root[n].attrs.get("status") == "complete"}
    assert complete == done  # every image reported done is complete, and only those

    rerun = run(*command, cwd=tmp_path, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{40 - len(done)} done, {len(done)} skipped, 0 failed" in rerun.stdout
    undisturbed = run("run", "in", "--workers", "1", "-k", "32", "-o", "u.zarr", cwd=tmp_path)
    assert undisturbed.returncode == 0, undisturbed.stderr
    assert store_files(tmp_path / "s.zarr") == store_files(tmp_path / "u.zarr")


def started_job(folder, small_photo, count):
    """A job on ``count`` photos that has finished its first image, and its command."""
    photos(folder / "in", small_photo, count)
    command = ["run", "in", "--workers", "1", "-k", "16", "--sample", "500", "-o", "s.zarr"]
    job = Job(*command, cwd=folder)
    job.wait_for(f"[1/{count}]")
    return job, command


@pytest.mark.slow
def test_a_second_job_on_a_store_is_refused_until_the_first_ends(tmp_path, small_photo):
    first, command = started_job(tmp_path, small_photo, 200)
    second = run(*command, cwd=tmp_path, timeout=120)
    assert second.returncode == 2, second.stderr
    (line,) = [x for x in second.stderr.splitlines() if x.startswith("error:")]
    assert "s.zarr: in use by another job" in line
    assert f"pid {first.process.pid}" in line
    code, _, err = first.finish()
    assert code == 0, err
    again = run(*command, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "0 done, 200 skipped, 0 failed" in again.stdout


@pytest.mark.slow
def test_a_job_killed_outright_does_not_block_the_store(tmp_path, small_photo):
    first, command = started_job(tmp_path, small_photo, 30)
    os.killpg(first.process.pid, signal.SIGKILL)  # the job and its local cluster
    first.finish()
    started = time.monotonic()
    again = run(*command, cwd=tmp_path, timeout=180)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 60  # no waiting for the lease to expire
    root = zarr.open_group(tmp_path / "s.zarr", mode="r")
    names = [n for n in root.group_keys() if not n.startswith(".")]
    assert len(names) == 30
    assert {root[n].attrs["status"] for n in names} == {"complete"}


def test_info_shows_each_palette_on_request(tmp_path, small_photo, capsys):
    from pipeline import compress_array, open_store
    from pipeline.cli import main

    store = str(tmp_path / "s.zarr")
    compress_array(small_photo, store, "p.png", colors=8, sample=500)
    palette = open_store(store)["p.png"].palette
    assert main(["info", store, "--palette"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == "p.png: 8 colours: " + " ".join("#" + bytes(c).hex() for c in palette)
    assert main(["info", store, "--palette", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["images"]["p.png"]["palette"]
    assert listed == palette.tolist()
    assert main(["info", store, "--json"]) == 0
    assert "palette" not in json.loads(capsys.readouterr().out)["images"]["p.png"]


def test_output_piped_into_a_reader_that_stops_ends_quietly(tmp_path):
    from pipeline import compress_array

    store = str(tmp_path / "s.zarr")
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    compress_array(noise, store, "n.png", colors=4000, sample=5000, effort=0)
    reader = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "info", store, "--palette", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader.stdout.read(10)  # more than a pipe holds is still to come: then the reader leaves
    reader.stdout.close()
    err = reader.stderr.read().decode()
    reader.stderr.close()
    assert reader.wait(timeout=60) == 128 + signal.SIGPIPE
    assert err == ""


def test_run_help_shows_the_defaults_in_force(tmp_path):
    plain = " ".join(run("run", "--help", cwd=tmp_path, timeout=60).stdout.split())
    assert "palette size, 1..65536 (default: 128)" in plain
    assert "(default: none)" in plain
    changed = run(
        "run",
        "--help",
        cwd=tmp_path,
        timeout=60,
        env={"DASK_PIPELINE__COLORS": "64", "DASK_PIPELINE__DITHER": "blue-noise"},
    )
    text = " ".join(changed.stdout.split())
    assert "palette size, 1..65536 (default: 64)" in text
    assert "(default: blue-noise)" in text


def test_a_small_job_runs_in_process_and_a_rerun_starts_no_cluster(tmp_path):
    done = run("run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "threads in this process" in done.stderr
    # the cluster's own address is inproc://; the dashboard listens on loopback
    assert "dashboard: http://127.0.0.1:" in done.stderr
    assert "2 done, 0 skipped" in done.stdout
    again = run("run", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 done, 2 skipped" in again.stdout
    assert "dashboard:" not in again.stderr  # nothing to do: no cluster was started


@pytest.mark.slow
def test_threads_and_worker_processes_store_the_same_bytes(tmp_path, small_photo):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):  # two batched together, one alone
        iio.imwrite(folder / f"p{i}.png", np.rot90(small_photo, i).copy())
    for kind in ("threads", "processes"):
        done = run(
            "run", "photos", "-o", f"{kind}.zarr", "--local-cluster", kind, "--dither",
            "blue-noise", cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert ("threads in this process" in done.stderr) == (kind == "threads")
    threads = store_files(tmp_path / "threads.zarr", metadata=True)
    assert any(key.startswith("p1.png/labels/c") for key in threads)
    assert threads == store_files(tmp_path / "processes.zarr", metadata=True)
