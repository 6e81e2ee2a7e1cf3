"""Stores that image viewers open: every image an OME-NGFF 0.5 multiscale label image.

Real jobs write real stores on disk; ome-zarr-py's reader (what napari-ome-zarr builds on) and
ome-zarr-models' 0.5 models read them back.
"""

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader
from ome_zarr_models.v05.image_label import ImageLabel
from ome_zarr_models.v05.labels import VALID_DTYPES
from pydantic_zarr.v3 import ArraySpec, GroupSpec

from pipeline import FORMAT_VERSION, compress, verify_store
from pipeline.cli import main
from pipeline.inputs.sources import probe, read_whole
from pipeline.job.tasks import (
    Failed,
    Job,
    Spec,
    create_task,
    finish_task,
    fit_block,
    label_task,
    level_task,
    recorded,
)
from pipeline.settings import Settings
from pipeline.store import lease, ngff
from pipeline.store.location import Location
from pipeline.store.read import MAX_DOCUMENT_BYTES
from pipeline.store.write import COMPLETE, list_store, prepare
from tests.conftest import store_files

SETTINGS = {"colors": 32, "sample": 2000, "chunk": 512}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, china):
    """A 3000 x 2000 image (6 x 4 chunks of 512), a 300 x 200 one, and a 600 x 400 one with
    transparency (2 x 1 chunks)."""
    folder = tmp_path_factory.mktemp("inputs")
    y, x = np.mgrid[0:3000, 0:2000]
    large = np.stack([(x // 7) % 256, (y // 11) % 256, ((x + y) // 13) % 256], axis=-1)
    iio.imwrite(folder / "large.png", large.astype(np.uint8))
    iio.imwrite(folder / "small.png", china[:300, :200])
    alpha = np.full((600, 400, 1), 255, dtype=np.uint8)
    alpha[:200] = 0
    alpha[200:300] = 128
    iio.imwrite(
        folder / "alpha.png", np.concatenate([np.tile(china[:300, :400], (2, 1, 1)), alpha], -1)
    )
    return folder


@pytest.fixture(scope="module")
def written(tmp_path_factory, inputs):
    """The three images compressed by one job."""
    store = tmp_path_factory.mktemp("ngff") / "out.zarr"
    results = compress([str(inputs)], str(store), **SETTINGS)
    assert {r.status for r in results} == {"done"}, [r.error for r in results]
    return store


def read_node(store: Path, name: str):
    """The node ome-zarr-py's reader makes of an image group (the one viewers show)."""
    (node,) = list(Reader(parse_url(str(store / name)))())
    return node


def expected_colours(palette: np.ndarray) -> dict[int, list[float]]:
    alpha = palette[:, 3] if palette.shape[1] == 4 else np.full(len(palette), 255)
    return {i: [c / 255 for c in (*palette[i, :3], alpha[i])] for i in range(len(palette))}


@pytest.mark.parametrize(
    ("name", "levels", "channels"), [("large.png", 4, 3), ("small.png", 1, 3), ("alpha.png", 1, 4)]
)
def test_an_image_opens_as_a_label_image_coloured_by_its_palette(written, name, levels, channels):
    group = zarr.open_group(str(written / name), mode="r")
    palette, labels = group["palette"][...], group["labels"][...]
    node = read_node(written, name)
    assert {type(spec) for spec in node.specs} == {Label, Multiscales}
    assert node.metadata["name"] == name
    assert palette.shape[1] == channels
    assert node.metadata["color"] == expected_colours(palette)
    assert len(node.data) == levels
    for level, data in enumerate(node.data):
        assert np.array_equal(data.compute(), labels[:: 2**level, :: 2**level])
        assert data.chunksize == tuple(min(512, size) for size in data.shape)
    assert node.metadata["coordinateTransformations"] == [
        [{"type": "scale", "scale": [2.0**level] * 2}] for level in range(levels)
    ]


def test_the_store_root_is_no_image(written):
    assert list(Reader(parse_url(str(written)))()) == []


def test_the_metadata_validates_against_the_ome_ngff_0_5_models(written):
    for name in ("large.png", "small.png", "alpha.png"):
        # ImageLabel.from_zarr would also look for an optional "labels" *group* of an image
        # and refuse our "labels" array; the model itself checks the whole metadata
        spec = GroupSpec.from_zarr(zarr.open_group(str(written / name), mode="r"), depth=-1)
        model = ImageLabel(attributes=spec.attributes, members=spec.members)
        (multiscale,) = model.attributes.ome.multiscales
        assert model.attributes.ome.version == "0.5"
        assert model.attributes.ome.image_label is not None
        colours = model.attributes.ome.image_label.colors
        assert colours is not None
        assert len(colours) == spec.attributes["colors"]
        for dataset in multiscale.datasets:
            array = spec.members[dataset.path]
            assert isinstance(array, ArraySpec)
            assert len(array.shape) == len(multiscale.axes) == 2
            assert np.dtype(array.data_type) in VALID_DTYPES


def test_more_than_256_colours_give_uint16_labels_and_a_long_colour_table(tmp_path, small_photo):
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    iio.imwrite(path, small_photo)  # 120 x 170: 2 x 3 chunks of 64
    store = tmp_path / "s.zarr"
    assert compress([str(path)], str(store), colors=300, sample=3000, chunk=64)[0].status == "done"
    group = zarr.open_group(str(store / "photo.png"), mode="r")
    palette, labels = group["palette"][...], group["labels"][...]
    assert len(palette) > 256
    node = read_node(store, "photo.png")
    assert [d.dtype for d in node.data] == [np.uint16]  # shown whole: no pyramid
    assert node.metadata["color"] == expected_colours(palette)
    assert np.array_equal(node.data[0].compute(), labels)


def test_the_colour_table_of_the_largest_palette_fits_a_readable_document():
    palette = np.full((65536, 4), 255, dtype=np.uint8)
    attributes = {"ome": ngff.metadata("x" * 200, palette, 20), "other": "x" * 4096}
    document = json.dumps({"attributes": attributes}, indent=2)  # as zarr writes it
    assert len(document) < MAX_DOCUMENT_BYTES


def test_levels_are_added_until_one_chunk_holds_a_level():
    assert ngff.level_count((512, 512), (512, 512), 0) == 1
    assert ngff.level_count((513, 10), (512, 512), 0) == 2
    assert ngff.level_count((3000, 2000), (512, 512)) == 4  # 375 x 250 on top
    assert ngff.level_count((100, 4000), (256, 300)) == 5  # chunks need not be square
    assert ngff.level_shape((3000, 2001), 3) == (375, 251)
    assert ngff.level_grid((3000, 2000), (512, 512), 2) == [(0, 0), (1, 0)]
    assert [ngff.level_of(p) for p in ("labels", "labels_3", "labels_03", "palette")] == [
        0,
        3,
        None,
        None,
    ]


def test_an_image_a_viewer_shows_whole_has_no_pyramid():
    assert ngff.level_count((2048, 1500), (512, 512)) == 1
    assert ngff.level_count((2049, 1500), (512, 512)) == 4  # 513 x 375, then 257 x 188
    assert ngff.level_count((513, 10), (512, 512)) == 1


def test_a_block_of_labels_makes_the_pyramid_chunks_it_holds_every_source_of():
    shape, chunks = (5000, 3000), (512, 512)  # 10 x 6 chunks; levels 1 to 4 above them
    assert ngff.level_count(shape, chunks) == 5

    def block(row, col, rows, cols):  # in chunks
        return slice(row * 512, (row + rows) * 512), slice(col * 512, (col + cols) * 512)

    assert ngff.covered_levels(block(0, 0, 1, 1), shape, chunks) == 0
    assert ngff.covered_levels(block(0, 0, 2, 2), shape, chunks) == 1
    assert ngff.covered_levels(block(4, 2, 2, 2), shape, chunks) == 1
    assert ngff.covered_levels(block(2, 1, 2, 2), shape, chunks) == 0  # not on a level-1 chunk
    assert ngff.covered_levels(block(0, 0, 4, 4), shape, chunks) == 2
    assert ngff.covered_levels(block(4, 0, 4, 2), shape, chunks) == 1  # 2 wide: level 1
    assert ngff.covered_levels(block(8, 4, 4, 4), shape, chunks) == 2  # cut by the edge: whole
    assert ngff.covered_levels(block(8, 0, 4, 4), shape, chunks) == 2  # 2 rows, at the bottom
    assert ngff.covered_levels(block(0, 0, 16, 16), shape, chunks) == 4  # the image: every level
    assert ngff.covered_levels((slice(None), slice(None)), shape, chunks) == 4
    assert ngff.covered_levels(block(0, 0, 2, 3), shape, chunks) == 0  # half a level-1 chunk
    assert ngff.covered_levels(block(0, 0, 4, 4), (2000, 2000), chunks) == 0  # no pyramid


def test_the_pyramid_does_not_depend_on_the_path_an_image_takes(tmp_path, inputs, written):
    # in the job above the large image had a graph of its own (label blocks, then one task per
    # level chunk); here one task of a batch labels it whole, which writes its pyramid too
    store = tmp_path / "batch.zarr"
    running = {"batch_bytes": 1 << 30, "batch_pixels": 1 << 30}
    path = str(inputs / "large.png")
    assert compress([path], str(store), running=running, **SETTINGS)[0].status == "done"
    graph = store_files(written / "large.png", metadata=True)
    assert store_files(store / "large.png", metadata=True) == graph
    assert any(key.startswith("labels_3/c/") for key in graph)


@pytest.fixture
def copy(tmp_path, written):
    target = tmp_path / "copy.zarr"
    shutil.copytree(written, target)
    return target


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out


DAMAGE = {
    "deleted level chunk": lambda s: (s / "large.png/labels_2/c/1/0").unlink(),
    "deleted level": lambda s: shutil.rmtree(s / "large.png/labels_3"),
    "wrong but valid level chunk": lambda s: _rewrite(s / "large.png", "labels_1", (0, 1)),
    "changed colour table": lambda s: _recolour(s / "large.png"),
}
PROBLEM = {
    "deleted level chunk": "1 of 2 labels_2 chunks missing (1/0)",
    "deleted level": "labels_3 array unreadable (",
    "wrong but valid level chunk": "the pyramid does not match its recorded digests",
    "changed colour table": "OME-NGFF metadata (ome) is not that of the palette and pyramid",
}
#: What a listing tells of them (from the completion marker: 24 + 6 + 2 + 1 chunks).
LISTED = {
    "deleted level chunk": "1 of 33 labels chunks missing",
    "deleted level": "1 of 33 labels chunks missing",
}


def _rewrite(group: Path, level: str, index: tuple[int, int]) -> None:
    """Labels within the palette, with a valid checksum, where others were written."""
    array = zarr.open_array(str(group / level), mode="r+")
    colors = zarr.open_group(str(group), mode="r").attrs["colors"]
    array.blocks[index] = (np.asarray(array.blocks[index]) + 1) % colors


def _recolour(group: Path) -> None:
    document = json.loads((group / "zarr.json").read_text())
    document["attributes"]["ome"]["image-label"]["colors"][0]["rgba"] = [1, 2, 3, 255]
    (group / "zarr.json").write_text(json.dumps(document))


@pytest.mark.parametrize("case", list(DAMAGE))
def test_verify_names_a_damaged_pyramid_and_repair_restores_it(capsys, copy, written, case):
    DAMAGE[case](copy)
    code, out = cli(capsys, "verify", copy)
    assert code == 1
    damaged = [line for line in out.splitlines() if line.startswith("damaged:")]
    assert len(damaged) == 1, out
    assert damaged[0].startswith(f"damaged: large.png: {PROBLEM[case]}"), out
    assert cli(capsys, "verify", copy, "--repair")[0] == 0
    assert store_files(copy) == store_files(written)
    assert cli(capsys, "verify", copy)[0] == 0


@pytest.mark.parametrize("case", ["deleted level chunk", "deleted level"])
def test_a_rerun_redoes_an_image_whose_pyramid_lacks_chunks(copy, written, inputs, case):
    DAMAGE[case](copy)
    assert list_store(Location.at(str(copy))).damaged == {"large.png": LISTED[case]}
    results = {r.name: r.status for r in compress([str(inputs)], str(copy), **SETTINGS)}
    assert results == {"large.png": "done", "small.png": "skipped", "alpha.png": "skipped"}
    assert store_files(copy) == store_files(written)


def test_a_level_without_its_metadata_document_is_seen_by_a_listing(copy):
    (copy / "large.png/labels_1/zarr.json").unlink()
    assert list_store(Location.at(str(copy))).damaged == {
        "large.png": "metadata missing (labels_1/zarr.json)"
    }


def test_a_failed_pyramid_step_leaves_no_image_marked_complete(tmp_path, inputs):
    # the steps of an image's graph one by one: create, label, a level that fails, finish
    store = str(tmp_path / "s.zarr")
    prepare(Location.at(store), list_store(Location.at(store)))
    job = Job(Location.at(store), Settings.from_config(**SETTINGS), "run", 0)
    path = str(inputs / "large.png")  # 3000 x 2000: 6 x 4 chunks, three levels above them
    spec = Spec("large.png", path, token="t", key="0" * 16, fresh=True)
    found = probe(path)
    pixels = read_whole(found)
    fit = fit_block(pixels, job.settings)
    attrs = recorded(found.record(), found.shown, job.settings, job.run)
    with lease.hold(Location.at(store), run=job.run):
        target = create_task(job, spec, attrs, (3000, 2000), (512, 512))
        whole = (slice(None), slice(None))
        labelled = [label_task(pixels, fit, target, whole, job.settings)]
        assert not isinstance(labelled[0], Failed)  # it wrote the labels and their pyramid
        shutil.rmtree(Path(store) / "large.png" / "labels_1")  # lost under the job's feet
        levels = [level_task(target, 1, (0, 0), *labelled)]
        assert isinstance(levels[0], Failed)
        outcome = finish_task(job, spec, fit, target, labelled, 3000 * 2000, levels)
    assert outcome == levels[0]
    assert not (Path(store) / "large.png").exists()
    assert list_store(Location.at(store)).complete == {}


def test_an_image_of_one_colour_has_every_pyramid_chunk_written(tmp_path):
    path = tmp_path / "in" / "flat.png"
    path.parent.mkdir()
    iio.imwrite(path, np.full((2100, 600, 3), 90, dtype=np.uint8))
    store = tmp_path / "s.zarr"
    assert compress([str(path)], str(store), **SETTINGS)[0].status == "done"
    assert sorted(p.name for p in (store / "flat.png").glob("labels*")) == [
        "labels",
        "labels_1",
        "labels_2",
        "labels_3",
    ]
    assert len(list((store / "flat.png").glob("labels_*/c/*/*"))) == 3 + 2 + 1  # all-zero, written
    assert list_store(Location.at(str(store))).damaged == {}
    (finding,) = verify_store(str(store))
    assert finding.whole, finding.problems


def test_a_version_2_store_is_read_verified_and_rerun_as_it_is(capsys, copy, inputs):
    # as the previous version wrote it: no pyramid, no OME metadata, markers counting labels
    for name in ("large.png", "small.png", "alpha.png"):
        group = copy / name
        for level in group.glob("labels_*"):
            shutil.rmtree(level)
        document = json.loads((group / "zarr.json").read_text())
        attributes = document["attributes"]
        del (
            attributes["ome"],
            attributes["digests"]["levels"],
            attributes["metrics"]["pyramid_bytes"],
        )
        attributes["format_version"] = 2
        (group / "zarr.json").write_text(json.dumps(document))
    for marker in (copy / COMPLETE).iterdir():
        tag, _, name = marker.name.partition("-")
        chunks = len(list((copy / name / "labels/c").glob("*/*")))
        marker.rename(marker.with_name(f"{tag.split('.')[0]}.{chunks}-{name}"))
    root = json.loads((copy / "zarr.json").read_text())
    root["attributes"]["format_version"] = 2
    (copy / "zarr.json").write_text(json.dumps(root))
    assert list_store(Location.at(str(copy))).damaged == {}
    code, out = cli(capsys, "verify", copy)
    assert code == 0
    assert f"{copy}: 3 images, 3 whole, 0 damaged" in out
    results = {r.name: r.status for r in compress([str(inputs)], str(copy), **SETTINGS)}
    assert set(results.values()) == {"skipped"}
    # writing into it made it the current version; its images are as they were, and still whole
    assert json.loads((copy / "zarr.json").read_text())["attributes"]["format_version"] == (
        FORMAT_VERSION
    )
    assert not any(Path(copy).glob("*/labels_*"))
    assert cli(capsys, "verify", copy)[0] == 0


# napari's import brings deprecation warnings of its own dependencies (pydantic's, ...)
@pytest.mark.napari
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["large.png", "alpha.png"])
def test_napari_ome_zarr_shows_a_labels_layer_in_the_palettes_colours(copy, name):
    """What napari gets from its OME-Zarr plugin (no window needed: the plugin's reader)."""
    reader = pytest.importorskip(
        "napari_ome_zarr", reason="the napari extra is not installed: pip install '.[test,napari]'"
    )
    napari_get_reader = reader.napari_get_reader

    path = str(copy / name)
    group = zarr.open_group(path, mode="r")
    palette, labels = group["palette"][...], group["labels"][...]
    ((data, meta, kind),) = napari_get_reader(path)(path)
    assert kind == "labels"
    assert meta["colormap"] == expected_colours(palette)
    assert len(data) == ngff.level_count(labels.shape, (512, 512))
    for level, array in enumerate(data):
        assert np.array_equal(np.asarray(array), labels[:: 2**level, :: 2**level])
