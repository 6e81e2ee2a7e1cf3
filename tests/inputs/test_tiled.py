"""Inputs read chunk by chunk: tiled TIFF and Zarr arrays, on real files and stores."""

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from dask.utils import key_split
from distributed import get_task_stream

from pipeline import compress, open_store
from pipeline.errors import InputError, UsageError
from pipeline.inputs.discover import discover
from pipeline.inputs.sources import probe
from pipeline.inputs.tiled import aligned, is_tiled_tiff
from pipeline.job.cluster import connect
from pipeline.job.graph import (
    LEVEL_TASK,
    fewest_blocks,
    fit_graph,
    held_blocks,
    open_file,
    source_from_probe,
    write_graph,
)
from pipeline.job.tasks import Job, Spec
from pipeline.settings import Settings
from pipeline.store.location import Location
from tests.conftest import store_files

FAST = {"colors": 32, "sample": 2000}


@pytest.fixture
def tiled_tiff(tmp_path, china):
    path = tmp_path / "china_tiled.tif"
    tifffile.imwrite(path, china, tile=(128, 128), photometric="rgb")
    return str(path)


@pytest.fixture
def zarr_image(tmp_path, china):
    path = tmp_path / "china.zarr"
    array = zarr.create_array(path, shape=china.shape, chunks=(100, 160, 3), dtype="uint8")
    array[...] = china
    return str(path)


def found(inputs, exclude=None):
    entries, errors = discover(inputs, exclude and Location.at(exclude))
    assert errors == []
    return [e.path for e in entries]


def stored(store, name):
    image = open_store(store)[name]
    return image.palette, image.labels[...], image.labels.chunks


def test_tiled_tiff_reads_tiles_into_aligned_chunks(tiled_tiff, china):
    assert is_tiled_tiff(tiled_tiff)
    source = open_file(tiled_tiff, "t", chunk=300)
    assert source.streamed
    assert source.image.chunks[:2] == ((256, 171), (256, 256, 128))
    assert np.array_equal(source.image.compute(), china)


def test_aligned_chunks():
    assert aligned(1024, 256) == 1024
    assert aligned(1000, 256) == 768
    assert aligned(100, 256) == 256


@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_streamed_inputs_store_the_same_bytes_as_a_png(
    tmp_path, write_image, china, tiled_tiff, zarr_image, kind
):
    png = write_image("china.png", china)
    compress([png], str(tmp_path / "png.zarr"), **FAST)
    source = tiled_tiff if kind == "tiff" else zarr_image
    result = compress([source], str(tmp_path / "s.zarr"), chunk=300, **FAST)[0]
    assert result.status == "done", result.error
    palette, labels, chunks = stored(str(tmp_path / "s.zarr"), result.name)
    ref_palette, ref_labels, _ = stored(str(tmp_path / "png.zarr"), "china.png")
    assert np.array_equal(palette, ref_palette)
    assert np.array_equal(labels, ref_labels)
    assert chunks == ((256, 256) if kind == "tiff" else (300, 160))  # whole tiles


def chunk_files(store: Path, name: str) -> dict[str, object]:
    """The chunk files of image ``name``, by their path in its group."""
    return {
        path.split("/", 1)[1]: data
        for path, data in store_files(store).items()
        if path.startswith(f"{name}/")
    }


@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_a_streamed_image_worked_in_blocks_of_chunks_stores_the_files_of_a_png(
    tmp_path, write_image, china, kind
):
    wide = np.concatenate([china, china[:, ::-1]] * 2, axis=1)  # 427 x 2560: it has a pyramid
    if kind == "tiff":
        source = str(tmp_path / "wide.tif")
        tifffile.imwrite(source, wide, tile=(128, 128), photometric="rgb")
    else:
        source = str(tmp_path / "wide.zarr")
        array = zarr.create_array(source, shape=wide.shape, chunks=(128, 128, 3), dtype="uint8")
        array[...] = wide
    opened = open_file(source, "s", chunk=128)
    assert opened.chunks == (128, 128)
    assert opened.image.chunks[1] == (512,) * 5  # blocks of 4 x 4 chunks (at least 4 blocks)
    settings = Settings.from_config(**FAST, chunk=128)
    job = Job(Location.at("unused.zarr"), settings, "run", 0)
    spec = Spec("s", source, token="t", key="0" * 16, fresh=True)
    graph, blocks = write_graph(opened, spec, job, fit_graph(opened, settings))
    assert blocks == 5
    steps = [k for k in graph.__dask_graph__() if str(k).startswith(LEVEL_TASK)]
    # levels 1 and 2 (2 x 10 and 1 x 5 chunks) are made by the blocks, and the last block
    # (at the edge, 2048 pixels in) makes the last chunk of levels 3 and 4 too
    assert Counter(int(k.split("-")[-3]) for k in steps) == {3: 3 - 1, 4: 2 - 1, 5: 1}
    result = compress([source], str(tmp_path / "s.zarr"), chunk=128, **FAST)[0]
    assert result.status == "done", result.error
    compress([write_image("wide.png", wide)], str(tmp_path / "png.zarr"), chunk=128, **FAST)
    files = chunk_files(tmp_path / "s.zarr", result.name)
    assert len([f for f in files if f.startswith("labels_1/")]) == 2 * 10
    assert len([f for f in files if f.startswith("labels_5/")]) == 1
    assert files == chunk_files(tmp_path / "png.zarr", "wide.png")  # labels, pyramid, palette


def test_a_streamed_image_is_cut_into_two_blocks_per_thread_at_least(tmp_path, china):
    wide = np.concatenate([china, china[:, ::-1]] * 2, axis=1)  # 427 x 2560, 128-pixel tiles
    source = str(tmp_path / "wide.tif")
    tifffile.imwrite(source, wide, tile=(128, 128), photometric="rgb")
    probed = probe(source, 1 << 30)
    images = {
        threads: source_from_probe(probed, "s", 128, "t", fewest_blocks(threads)).image
        for threads in (2, 8, 64)
    }
    assert [images[n].chunks[1][0] for n in (2, 8, 64)] == [512, 256, 128]
    assert [images[n].npartitions for n in (2, 8, 64)] == [5, 20, 80]  # one chunk at least
    # other blocks, other keys: a cluster never takes one block shape's read for another's
    assert not set(images[2].__dask_graph__()) & set(images[8].__dask_graph__())
    # a job cuts it for the threads of the cluster it runs on
    with (
        connect(kind="threads", workers=8, dashboard_address="127.0.0.1:0") as client,
        get_task_stream(client) as stream,
    ):
        store = str(tmp_path / "s.zarr")
        alone = {"batch_bytes": 0, "batch_pixels": 0}  # a graph of its own, not in a batch
        result = compress([source], store, chunk=128, client=client, running=alone, **FAST)
    assert result[0].status == "done", result[0].error
    assert sum(key_split(task["key"]) == "label-block" for task in stream.data) == 20


#: Bytes of one decoded chunk of ``tiled_tiff`` at ``chunk=300`` (its tiles' 256 x 256 RGB).
CHUNK_BYTES = 256 * 256 * 3


def test_chunks_held_for_the_labelling_are_read_once_and_the_others_twice(tiled_tiff):
    source = open_file(tiled_tiff, "t", chunk=300)
    settings = Settings.from_config(**FAST, chunk=300)
    job = Job(Location.at("unused.zarr"), settings, "run", 0)
    spec = Spec("t", tiled_tiff, token="t", key="0" * 16, fresh=True)
    chunks = source.image.npartitions  # 2 x 3
    assert held_blocks(source.image, 2 * CHUNK_BYTES + 1) == 2
    assert held_blocks(source.image, 100 * CHUNK_BYTES) == chunks
    assert held_blocks(source.image, CHUNK_BYTES - 1) == 0
    for held in (0, 2, chunks):
        graph, _ = write_graph(source, spec, job, fit_graph(source, settings), held)
        needed = graph.__dask_graph__().cull({graph.key})  # what computing it runs
        tasks = Counter(key_split(key) for key in needed)
        assert tasks["tiff"] == chunks + (chunks - held)  # the tiles read: once, or twice
        assert "shown_colours" not in tasks  # 8-bit sRGB: shown as stored, no task per block
        assert tasks["sample_and_count_chunk"] == chunks  # the fit's sample and counts
        assert tasks["label-block"] == chunks


@pytest.mark.parametrize("hold", [0, 2 * CHUNK_BYTES, 100 * CHUNK_BYTES])
def test_a_streamed_image_stores_the_same_bytes_however_many_chunks_are_held(
    tmp_path, tiled_tiff, hold
):
    reference = compress([tiled_tiff], str(tmp_path / "a.zarr"), chunk=300, **FAST)[0]
    store = str(tmp_path / "b.zarr")
    result = compress([tiled_tiff], store, chunk=300, running={"hold_bytes": hold}, **FAST)[0]
    assert result.status == "done", result.error
    assert store_files(Path(store)) == store_files(tmp_path / "a.zarr")
    assert result.attrs["metrics"] == reference.attrs["metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("hold", [0, 2 * CHUNK_BYTES])
def test_a_streamed_input_on_a_cluster_stores_what_it_stores_alone(
    tmp_path, tiled_tiff, client, hold
):
    alone = compress([tiled_tiff], str(tmp_path / "a.zarr"), chunk=300, **FAST)[0]
    running = {"hold_bytes": hold}  # fit first, then label (two graphs); or two chunks held
    store = str(tmp_path / "b.zarr")
    remote = compress([tiled_tiff], store, chunk=300, client=client, running=running, **FAST)[0]
    assert remote.status == "done", remote.error
    assert store_files(Path(store)) == store_files(tmp_path / "a.zarr")
    assert remote.attrs["metrics"] == alone.attrs["metrics"]


def test_zarr_arrays_in_a_folder_are_inputs(tmp_path, zarr_image):
    assert found([str(tmp_path)]) == [zarr_image]
    assert found([zarr_image]) == [zarr_image]


def test_the_output_store_is_never_an_input(tmp_path, zarr_image):
    store = str(tmp_path / "out.zarr")
    with pytest.raises(UsageError, match="the output store is inside input"):
        compress([str(tmp_path)], store, **FAST)
    assert not os.path.exists(store)
    assert compress([zarr_image], store, **FAST)[0].status == "done"
    assert found([str(tmp_path)]) == [zarr_image]  # a Zarr group is not an image
    everything = found([str(tmp_path / "**")])
    assert any(p.startswith(store) for p in everything)
    assert found([str(tmp_path / "**")], exclude=store) == [
        p for p in everything if not p.startswith(store)
    ]
    inside = str(tmp_path / "out.zarr" / "*" / "zarr.json")  # matches files of the store only
    again = compress([zarr_image, inside], store, **FAST)
    assert [(r.name, r.status) for r in again] == [(os.path.basename(zarr_image), "skipped")]


def test_tiff_tiles_that_are_not_rgb_uint8_are_rejected(tmp_path):
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, np.zeros((256, 256, 3), np.float32), tile=(128, 128), photometric="rgb")
    with pytest.raises(InputError, match="unsupported pixel type float32") as info:
        open_file(str(path), "f", 256)
    assert str(path) in str(info.value)


def test_zarr_array_of_the_wrong_shape_is_rejected(tmp_path):
    path = tmp_path / "cube.zarr"
    zarr.create_array(path, shape=(4, 64, 64, 3), chunks=(1, 32, 32, 3), dtype="uint8")
    with pytest.raises(InputError, match=r"not a 2-D image: array of shape \(4, 64, 64, 3\)"):
        open_file(str(path), "cube", 64)


def test_truncated_tile_fails_one_image_and_leaves_nothing(
    tmp_path, tiled_tiff, write_image, small_photo
):
    data = Path(tiled_tiff).read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) * 2 // 3])
    good = write_image("good.png", small_photo)
    store = str(tmp_path / "s.zarr")
    results = {r.name: r for r in compress([str(cut), good], store, **FAST)}
    assert results["good.png"].status == "done"
    failed = results["cut.tif"]
    assert failed.status == "failed"
    assert failed.error.startswith(f"{cut}: cannot read tiles")
    assert "\n" not in failed.error
    assert list(open_store(store)) == ["good.png"]
    assert "cut.tif" not in zarr.open_group(store, mode="r")


def tiff_kinds(folder: Path, image: np.ndarray) -> dict[str, Path]:
    """Tiled TIFFs of ``image`` (RGB uint8, not a whole number of tiles) in several layouts."""
    gray16 = image[..., 0].astype(np.uint16) * 257
    kinds = {
        "rgb zlib predictor": (image, {"compression": "zlib", "predictor": True}),
        "rgb jpeg": (image, {"compression": "jpeg"}),
        "rgb lzw": (image, {"compression": "lzw"}),
        "gray 16-bit": (gray16, {"compression": "zstd"}),
        "rgba": (np.dstack([image, image[..., :1]]), {"extrasamples": "unassalpha"}),
        "rgb planar": (image, {"planarconfig": "separate"}),
    }
    paths = {}
    for kind, (pixels, options) in kinds.items():
        path = folder / (kind.replace(" ", "_") + ".tif")
        photometric = "minisblack" if pixels.ndim == 2 else "rgb"
        tifffile.imwrite(path, pixels, tile=(64, 96), photometric=photometric, **options)
        paths[kind] = path
    return paths


def test_tiles_read_straight_from_the_file_are_what_tifffiles_zarr_gives(tmp_path, china):
    from pipeline.inputs.tiled import TiffTiles, read_tiles

    image = china[:300, :350]
    regions = [
        (slice(0, 300), slice(0, 350)),
        (slice(64, 192), slice(96, 288)),  # whole tiles
        (slice(10, 75), slice(300, 350)),  # parts of tiles, at the right edge
        (slice(299, 300), slice(0, 1)),
        (slice(5, 5), slice(0, 10)),  # empty
    ]
    straight = 0
    for kind, path in tiff_kinds(tmp_path, image).items():
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tiles = TiffTiles(str(path), page.shape, page.dtype)
            for rows, cols in regions:
                region = (rows, cols, *(slice(None),) * (len(page.shape) - 2))
                with tifffile.imread(path, aszarr=True) as store:
                    expected = np.asarray(zarr.open_array(store, mode="r")[region])
                found = read_tiles(tif, page, region)
                assert (found is None) == (kind == "rgb planar"), kind
                straight += found is not None
                if found is not None:
                    assert found.dtype == expected.dtype, kind
                    assert np.array_equal(found, expected), kind
                assert np.array_equal(tiles[region], expected), kind
    assert straight == 5 * len(regions)


def test_a_tile_missing_from_the_file_reads_as_zeros(tmp_path, china):
    from pipeline.inputs.tiled import read_tiles

    path = tmp_path / "sparse.tif"
    image = china[:128, :128]
    tifffile.imwrite(path, image, tile=(64, 64), photometric="rgb")
    with tifffile.TiffFile(path, mode="r+") as tif:  # the second tile's byte count set to 0
        page = tif.pages[0]
        counts = page.tags["TileByteCounts"]
        values = list(counts.value)
        values[1] = 0
        counts.overwrite(values)
    with tifffile.TiffFile(path) as tif:
        found = read_tiles(tif, tif.pages[0], (slice(0, 128), slice(0, 128), slice(None)))
    assert found is not None
    assert not found[:64, 64:].any()
    assert np.array_equal(found[64:], image[64:])
    assert np.array_equal(found[:64, :64], image[:64, :64])
