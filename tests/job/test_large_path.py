"""The large-image path: an image decoded whole is labelled in blocks of whole chunks.

Whatever the path, the store holds the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline import compress
from pipeline.cli import main
from pipeline.job.graph import fewest_blocks, label_block_shape
from tests.conftest import store_files

#: Every input a large image of its own (a graph decoding it whole), not part of a batch.
LARGE = {"batch_bytes": 0, "batch_pixels": 0}


def test_blocks_hold_whole_chunks_and_leave_work_to_share():
    assert label_block_shape((1024, 1024), (10_000, 10_000)) == (4096, 4096)  # 9 blocks
    assert label_block_shape((1024, 1024), (4472, 4472)) == (2048, 2048)  # not 1: 9 blocks
    assert label_block_shape((1024, 1024), (2000, 2000)) == (1024, 1024)  # 4 chunks: 4 blocks
    assert label_block_shape((1024, 512), (10_000, 10_000)) == (4096, 2048)  # chunks, not pixels
    # a power of two chunks across: a block makes the pyramid chunks above it (3 would not)
    assert label_block_shape((1024, 1024), (7000, 7000)) == (2048, 2048)
    # read chunk by chunk: two blocks per thread at least, as large as that leaves them
    assert label_block_shape((1024, 1024), (15_360, 15_360), fewest_blocks(2)) == (4096, 4096)
    assert label_block_shape((1024, 1024), (15_360, 15_360), fewest_blocks(16)) == (2048, 2048)
    assert label_block_shape((1024, 1024), (15_360, 15_360), fewest_blocks(100)) == (1024, 1024)


def labels_and_palette(store: str, name: str) -> tuple[bytes, bytes, dict[str, object]]:
    group = zarr.open_group(store, mode="r", path=name)
    chunks = store_files(Path(store) / name)
    return group["palette"][...].tobytes(), group["labels"][...].tobytes(), chunks


def test_an_image_decoded_whole_stores_the_same_bytes_as_one_of_a_batch(
    tmp_path, write_image, china
):
    path = write_image("china.png", china)
    settings = {"colors": 32, "sample": 2000, "chunk": 32}
    batch, large = str(tmp_path / "batch.zarr"), str(tmp_path / "large.zarr")
    assert compress([path], batch, **settings)[0].status == "done"
    assert compress([path], large, running=LARGE, **settings)[0].status == "done"
    assert labels_and_palette(batch, "china.png") == labels_and_palette(large, "china.png")


@pytest.mark.slow
def test_two_workers_sharing_an_image_store_the_same_bytes(tmp_path, write_image, china, client):
    path = write_image("china.png", china)
    settings = {"colors": 32, "sample": 2000, "chunk": 32}
    alone, shared = str(tmp_path / "alone.zarr"), str(tmp_path / "shared.zarr")
    assert compress([path], alone, running=LARGE, **settings)[0].status == "done"
    result = compress([path], shared, client=client, running=LARGE, **settings)[0]
    assert result.status == "done"
    assert labels_and_palette(alone, "china.png") == labels_and_palette(shared, "china.png")


@pytest.mark.parametrize(
    "case",
    [
        {},
        {"compression": "archival"},
        {"colors": 300},  # uint16 labels
        {"alpha": True},  # an RGBA palette
        {"black": True},  # a palette of zeros, which zarr would not write by default
    ],
    ids=["portable", "archival", "uint16", "rgba", "black"],
)
def test_an_image_of_one_chunk_written_in_one_go_holds_what_the_chunked_path_writes(
    tmp_path, write_image, small_photo, case
):
    """A small image of a batch is written file by file without zarr (write.write_image); the
    large path writes the same image through zarr arrays: every file the same, byte for byte
    (the group's document but for the job's id and end time)."""
    settings = {"colors": 32, "sample": 2000, **case}
    pixels = np.zeros_like(small_photo) if settings.pop("black", False) else small_photo
    if settings.pop("alpha", False):
        alpha = np.where(np.arange(pixels.shape[1]) % 3 == 0, 0, 255).astype(np.uint8)
        pixels = np.dstack([pixels, np.broadcast_to(alpha, pixels.shape[:2])])
    path = write_image("photo.png", pixels)
    batch, large = tmp_path / "batch.zarr", tmp_path / "large.zarr"
    assert compress([path], str(batch), **settings)[0].status == "done"
    assert compress([path], str(large), running=LARGE, **settings)[0].status == "done"
    assert store_files(batch, metadata=True) == store_files(large, metadata=True)
    for array in ("labels", "palette"):
        document = Path("photo.png", array, "zarr.json")
        assert (batch / document).read_bytes() == (large / document).read_bytes()
    assert main(["verify", str(batch)]) == 0
