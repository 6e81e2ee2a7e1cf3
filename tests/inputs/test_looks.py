"""``read_looks``: orientation, profile and frames from real files' headers (Pillow's oracle)."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.inputs.looks import read_looks
from tests.viewing import (
    ADOBE,
    P3,
    SRGB,
    chunks,
    exif_after_pixels,
    save,
    with_chunks,
    write_tiff,
)

PIXELS = np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)


def pillow_orientation(path):
    """The orientation Pillow reads (before loading: Pillow turns a TIFF as it loads it)."""
    with Image.open(path) as image:
        return image.getexif().get(0x0112, 1)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_pillow_written_files_say_their_orientation_and_profile(tmp_path, suffix, orientation):
    path = save(tmp_path / f"o{suffix}", PIXELS, orientation, P3)
    looks = read_looks(path)
    assert looks.orientation == orientation == pillow_orientation(path)
    assert looks.profile is not None
    assert looks.profile.icc == P3
    assert looks.profile.description == "Display P3"
    assert looks.profile.origin == "ICC"
    assert looks.frames == 1
    assert read_looks(Path(path).read_bytes()) == looks  # the bytes say the same as the path


def test_an_image_over_pillows_limit_keeps_its_looks_and_warns_nothing(tmp_path, monkeypatch):
    # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that: a 100-megapixel phone
    # photo printed Pillow's warning into the job's output, and one over 179 megapixels (with
    # --max-pixels raised) lost its orientation and profile. 24 x 40 is 960 pixels.
    path = save(tmp_path / "o.jpg", PIXELS, 6, P3)
    says = {
        600: pytest.warns(Image.DecompressionBombWarning),
        400: pytest.raises(Image.DecompressionBombError),
    }
    for limit, pillow in says.items():
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pillow, Image.open(path):
            pass
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            looks = read_looks(path)
        assert looks.orientation == 6
        assert looks.profile is not None
        assert looks.profile.icc == P3
        assert limit == Image.MAX_IMAGE_PIXELS  # put back


@pytest.mark.parametrize("place", ["before", "after"])
def test_png_exif_is_found_before_and_after_the_pixels(tmp_path, place):
    path = save(tmp_path / "o.png", PIXELS, 6, ADOBE)
    data = Path(path).read_bytes()
    if place == "after":
        data = exif_after_pixels(data)
        (tmp_path / "o.png").write_bytes(data)
    kinds = [kind for kind, _ in chunks(data)]
    assert (kinds.index(b"eXIf") < kinds.index(b"IDAT")) == (place == "before")
    assert pillow_orientation(path) == 6  # Pillow finds it once the pixels are read
    looks = read_looks(path)
    assert looks.orientation == 6
    assert looks.profile is not None
    assert looks.profile.icc == ADOBE
    assert (looks.shape, looks.dtype, looks.bits) == ((24, 40, 3), "uint8", 0)


def test_png_gamma_chunks(tmp_path):
    data = Path(save(tmp_path / "p.png", PIXELS)).read_bytes()
    linear = with_chunks(data, [(b"gAMA", (100_000).to_bytes(4, "big"))])
    looks = read_looks(linear)
    assert looks.profile is not None
    assert looks.profile.origin == "PNG gAMA/cHRM"
    srgb_gamma = with_chunks(data, [(b"gAMA", (45_455).to_bytes(4, "big"))])
    assert read_looks(srgb_gamma).profile is None
    srgb = with_chunks(data, [(b"sRGB", b"\0"), (b"gAMA", (100_000).to_bytes(4, "big"))])
    assert read_looks(srgb).profile is None


def test_sixteen_bit_png_header(tmp_path):
    import imagecodecs

    path = tmp_path / "deep.png"
    path.write_bytes(imagecodecs.png_encode(np.zeros((5, 7, 4), np.uint16)))
    looks = read_looks(str(path))
    assert (looks.bits, looks.shape, looks.dtype) == (16, (5, 7, 4), "uint16")


@pytest.mark.parametrize("orientation", [1, 5, 6, 7, 8])
def test_tiff_orientation_tag_and_icc_profile(tmp_path, orientation):
    path = write_tiff(tmp_path / "t.tif", PIXELS, orientation, P3)
    looks = read_looks(path)
    assert looks.orientation == orientation == pillow_orientation(path)
    assert looks.profile is not None
    assert looks.profile.icc == P3
    assert (looks.frames, looks.paged, looks.shape, looks.dtype) == (1, True, (24, 40, 3), "uint8")
    assert not looks.cmyk


def test_a_profile_that_does_not_fit_the_pixels_is_ignored_and_said(tmp_path):
    gray = save(tmp_path / "g.jpg", PIXELS[:, :, 0], icc=P3)
    looks = read_looks(gray)
    assert looks.profile is None
    assert looks.ignored == "RGB profile 'Display P3' on 1-channel pixels: ignored"


def test_an_srgb_profile_is_still_read(tmp_path):
    looks = read_looks(save(tmp_path / "s.jpg", PIXELS, icc=SRGB))
    assert looks.profile is not None
    assert looks.profile.description == "sRGB, built"


def frames(count):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)][:count]
    return [Image.new("RGB", (12, 10), colour) for colour in colours]


@pytest.mark.parametrize("suffix", [".png", ".gif", ".webp"])
def test_animations_count_their_frames(tmp_path, suffix):
    first, *rest = frames(3)
    path = tmp_path / f"anim{suffix}"
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0)
    if suffix == ".png":
        assert b"acTL" in path.read_bytes()  # an APNG
    looks = read_looks(str(path))
    assert looks.frames == 3
    assert not looks.paged
    first.save(tmp_path / f"still{suffix}")
    assert read_looks(str(tmp_path / f"still{suffix}")).frames == 1


def test_multi_page_tiff_pages_have_their_own_orientation_and_profile(tmp_path):
    import tifffile

    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(PIXELS, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
        tif.write(PIXELS[:, :, 0], photometric="minisblack")
        tif.write(PIXELS, photometric="rgb", iccprofile=ADOBE, extratags=[(274, "H", 1, 3, True)])
    looks = [read_looks(str(path), page) for page in range(3)]
    assert [one.frames for one in looks] == [3, 3, 3]
    assert all(one.paged for one in looks)
    assert [one.orientation for one in looks] == [6, 1, 3]
    assert [one.shape for one in looks] == [(24, 40, 3), (24, 40), (24, 40, 3)]
    assert looks[0].profile is None
    assert looks[1].profile is None
    assert looks[2].profile is not None
    assert looks[2].profile.icc == ADOBE


def test_reduced_resolution_pages_are_not_counted(tmp_path):
    import tifffile

    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(PIXELS, photometric="rgb", subifds=1)
        tif.write(PIXELS[::2, ::2], photometric="rgb", subfiletype=1)
        tif.write(PIXELS[::-1], photometric="rgb")
    assert read_looks(str(path)).frames == 2
