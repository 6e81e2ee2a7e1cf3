"""The fence: every write checked against the lease; chunks written only where none exists."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.store.fence import Fenced, FencedStore, Interfered
from pipeline.store.lease import LEASE_SUFFIX, RECHECK_SECONDS, Fence, hold, holder
from pipeline.store.location import Location
from pipeline.store.write import PORTABLE, remove_image, write_image


def rewrite_lease(store: str, **fields: object) -> None:
    """Change fields of the store's lease file in place (as another job would replace it)."""
    path = Path(store + LEASE_SUFFIX)
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.fixture
def held(tmp_path):
    store = str(tmp_path / "out.zarr")
    with hold(Location.at(store), ttl=30) as lease:
        yield store, lease


def test_a_chunk_is_written_once_and_only_the_same_bytes_again(held):
    store, lease = held
    fenced = Location.at(store).fenced(lease.fence())
    array = zarr.create_array(
        fenced.zarr, name="labels", shape=(4, 4), chunks=(2, 2), dtype="uint8", fill_value=0
    )
    array[:2, :2] = 7
    array[:2, :2] = 7  # a task run again (its worker died) writes the same chunk: fine
    with pytest.raises(Interfered, match=r"chunk .*labels/c/0/0 was written by another job"):
        array[:2, :2] = 8
    assert np.asarray(zarr.open_array(store, path="labels")[:2, :2]).tolist() == [[7, 7]] * 2
    assert not list(Path(store, "labels", "c", "0").glob(".*"))  # no staged file left


def test_a_taken_over_lease_stops_every_write_within_the_recheck(held):
    store, lease = held
    fenced = Location.at(store).fenced(lease.fence())
    group = zarr.create_group(fenced.zarr, path="a.png")  # checked: the lease is ours
    rewrite_lease(store, run="f" * 32, epoch=lease.epoch + 1)  # another job took it over
    time.sleep(RECHECK_SECONDS + 0.1)
    with pytest.raises(Fenced, match=f"run {'f' * 32} holds it now"):
        group.create_group("b")
    with pytest.raises(Fenced):
        fenced.guard()
    assert "b" not in zarr.open_group(store, path="a.png", mode="r")
    rewrite_lease(store, run=lease.run, epoch=lease.epoch)
    with pytest.raises(Fenced):  # once deposed, a run never writes the store again
        fenced.guard()


def test_writes_stop_a_margin_before_the_lease_expires(tmp_path):
    store = str(tmp_path / "out.zarr")
    with hold(Location.at(store), ttl=30) as lease:
        fence = Fence(Location.at(store), lease.run, lease.epoch, margin=10.0)
        rewrite_lease(store, expires=time.time() + 5)  # a renewal late, as if stopped
        with pytest.raises(Fenced, match="lease was not renewed in time"):
            fence.check()
        assert holder(Location.at(store)).run == lease.run


def test_a_fenced_location_travels_with_its_fence(held):
    import pickle

    store, lease = held
    fenced = Location.at(store).fenced(lease.fence())
    again = pickle.loads(pickle.dumps(fenced))
    assert again.fence == fenced.fence
    assert isinstance(again.zarr, FencedStore)
    assert Location.at(store).fence is None


class Planting:
    """A fence that, at its ``at``-th check, lets another job's chunk appear (then checks)."""

    def __init__(self, fence: Fence, at: int, plant) -> None:
        self.fence, self.at, self.plant, self.calls = fence, at, plant, 0
        self.run = fence.run

    def check(self) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.plant()
        self.fence.check()


def one_chunk_image(store: Location, run: str) -> None:
    """An image of one chunk written in one go (what small images of a batch take)."""
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    palette = np.array([[0, 0, 0], [128, 128, 128], [255, 255, 255]], dtype=np.uint8)
    write_image(store, "a.png", {"run": run}, palette, labels, {}, compression=PORTABLE, fresh=True)


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_an_image_written_in_one_go_never_replaces_another_jobs_chunk(where, tmp_path, request):
    if where == "s3":
        request.getfixturevalue("s3")
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir("fenced")
        store = "s3://fenced/out.zarr"
    else:
        store = str(tmp_path / "out.zarr")
    foreign = b"another job's chunk"
    with hold(Location.at(store), ttl=30) as lease:
        plain = Location.at(store)
        chunk = plain.path("a.png", "labels", "c", "0", "0")

        def plant() -> None:
            if plain.local:
                Path(chunk).parent.mkdir(parents=True, exist_ok=True)
                Path(chunk).write_bytes(foreign)
            else:
                plain.fs.pipe_file(chunk, foreign)

        # locally the group is renamed into place after the one check; on S3, check 1 is the
        # group's document, check 2 right before the arrays' files
        at, says = (1, "a.png: its group") if plain.local else (2, "chunk .*a.png/labels/c/0/0")
        fenced = plain.fenced(Planting(lease.fence(), at, plant))  # type: ignore[arg-type]
        with pytest.raises(Interfered, match=f"{says} was written by another"):
            one_chunk_image(fenced, lease.run)
        assert plain.read("a.png", "labels", "c", "0", "0") == foreign
        fenced = plain.fenced(lease.fence())
        remove_image(fenced, "a.png")  # then written again, as the job does (compress_whole)
        one_chunk_image(fenced, lease.run)
        assert plain.read("a.png", "labels", "c", "0", "0") != foreign
