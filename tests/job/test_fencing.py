"""A job paused past its lease never writes again: real jobs, SIGSTOP, a second job taking over.

The scenario and the invariants are in tests/fencing.py; benchmarks/fencing.py runs them at many
pause points.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fencing import check_invariants, make_photos, namespaces_work, split_brain

needs_namespaces = pytest.mark.skipif(
    not namespaces_work(), reason="unshare cannot make user, pid and mount namespaces here"
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_photos(folder)
    return folder


def assert_fenced_cleanly(output: str, code: int | None) -> None:
    """Job A's output: one line saying why it stopped, its summary, exit 1, no traceback."""
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert "another job took the store over; stopped, " in errors[0] or "not renewed" in errors[0]
    assert "Traceback" not in output, output
    assert "tornado" not in output, output
    assert re.search(r"^\d+ done, \d+ skipped, \d+ failed", output, re.MULTILINE), output


@needs_namespaces
def test_a_client_paused_past_its_lease_writes_nothing_once_another_job_took_over(photos, tmp_path):
    store = str(tmp_path / "out.zarr")
    outcome = split_brain(photos, store, pause="client", after=0.4)
    assert outcome.b_code == 0, outcome.b_out
    assert len(outcome.b_done) == 16
    assert check_invariants(store, photos, outcome) == []
    assert_fenced_cleanly(outcome.a_out, outcome.a_code)


@pytest.mark.slow
@pytest.mark.parametrize("after", [0.1, 1.0])
def test_workers_paused_past_their_jobs_end_write_nothing_once_another_job_took_over(
    photos, tmp_path, after
):
    store = str(tmp_path / "out.zarr")
    outcome = split_brain(photos, store, pause="workers", after=after)
    assert outcome.b_code == 0, outcome.b_out
    assert len(outcome.b_done) == 16
    assert check_invariants(store, photos, outcome) == []


@pytest.mark.slow
@needs_namespaces
def test_on_s3_a_paused_client_writes_nothing_once_another_job_took_over(photos, s3):
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("fenced")
    store = "s3://fenced/out.zarr"
    outcome = split_brain(photos, store, pause="client", after=0.4)
    assert outcome.b_code == 0, outcome.b_out
    assert check_invariants(store, photos, outcome) == []
    assert_fenced_cleanly(outcome.a_out, outcome.a_code)
