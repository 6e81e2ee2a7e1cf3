import io
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InputError
from pipeline.inputs.sources import (
    _decode_fast,
    decode,
    probe,
    read_file,
    to_rgb8,
)
from pipeline.job.graph import open_file, source_from_array


def opened(path, chunk=64):
    source = open_file(path, os.path.basename(path), chunk)
    return source, source.image.compute()


def test_rgb_jpeg_is_chunked_lazily(write_image, china):
    path = write_image("c.jpg", china)
    source = open_file(path, "c.jpg", 100)
    assert source.image.shape == china.shape
    assert source.image.chunks[0] == (100, 100, 100, 100, 27)
    assert source.conversion == "none"
    assert source.image.dtype == np.uint8


def test_grayscale_becomes_gray_rgb(write_image):
    gray = np.arange(40 * 30, dtype=np.uint8).reshape(40, 30)
    source, rgb = opened(write_image("g.png", gray))
    assert source.conversion == "gray to RGB"
    assert np.array_equal(rgb, np.repeat(gray[:, :, None], 3, axis=2))


def test_alpha_is_dropped(write_image):
    rgba = np.random.default_rng(0).integers(0, 256, (20, 25, 4), dtype=np.uint8)
    source, rgb = opened(write_image("a.png", rgba))
    assert source.conversion == "alpha dropped"
    assert np.array_equal(rgb, rgba[:, :, :3])


def test_alpha_is_kept_by_whole_decoding_unless_opaque(write_image):
    rgba = np.random.default_rng(0).integers(0, 256, (20, 25, 4), dtype=np.uint8)
    found = probe(write_image("a.png", rgba))
    assert found.conversion == "alpha kept unless fully opaque"
    assert np.array_equal(decode(found), rgba)
    rgba[..., 3] = 255
    assert np.array_equal(decode(probe(write_image("b.png", rgba))), rgba[..., :3])
    la = np.random.default_rng(1).integers(0, 256, (20, 25, 2), dtype=np.uint8)
    kept = decode(probe(write_image("la.png", la)))
    assert np.array_equal(kept, np.dstack([np.repeat(la[:, :, :1], 3, axis=2), la[:, :, 1]]))


def test_gray_alpha_keeps_the_gray(write_image):
    la = np.random.default_rng(1).integers(0, 256, (20, 25, 2), dtype=np.uint8)
    source, rgb = opened(write_image("la.png", la))
    assert source.conversion == "alpha dropped+gray to RGB"
    assert np.array_equal(rgb, np.repeat(la[:, :, :1], 3, axis=2))


def test_16_bit_is_scaled_with_rounding(write_image):
    values = np.array([[0, 128, 129, 257, 32896, 65535]], dtype=np.uint16)
    rgb16 = np.repeat(values[:, :, None], 3, axis=2)
    source, rgb = opened(write_image("deep.tif", rgb16))
    assert source.dtype == "uint16"
    assert "16-bit rounded to 8-bit" in source.conversion
    assert rgb[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255]


def test_16_bit_grayscale_png(write_image):
    gray = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    source, rgb = opened(write_image("g16.png", gray))
    assert source.conversion == "16-bit rounded to 8-bit+gray to RGB"
    expected = ((gray.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    assert np.array_equal(rgb[:, :, 2], expected)


def test_palette_mode_png_is_expanded(tmp_path, small_photo):
    pal = Image.fromarray(small_photo).quantize(16)
    path = str(tmp_path / "p.png")
    pal.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == "P"
    _, rgb = opened(path)
    assert np.array_equal(rgb, np.asarray(pal.convert("RGB")))


def test_multi_frame_gif_takes_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = str(tmp_path / "anim.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:])
    _, rgb = opened(path)
    assert rgb.shape == (8, 10, 3)
    assert tuple(rgb[0, 0]) == (255, 0, 0)


def test_bilevel_image(tmp_path):
    path = str(tmp_path / "bw.png")
    Image.fromarray(np.eye(6, dtype=bool)).save(path)
    _, rgb = opened(path)
    assert set(np.unique(rgb)) == {0, 255}


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.jpg", None, "no such file"),
        ("text.jpg", b"this is not an image", "not a readable image"),
        ("empty.png", b"", "empty file"),
    ],
)
def test_bad_files_are_reported_with_their_name(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as info:
        open_file(str(path), name, 64)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_float_images_are_rejected(write_image):
    path = write_image("f.tif", np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(InputError, match="unsupported pixel type float32"):
        open_file(path, "f.tif", 64)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_fails_when_decoded(tmp_path, write_image, china, suffix):
    data = Path(write_image("whole" + suffix, china)).read_bytes()
    path = tmp_path / ("cut" + suffix)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot decode image") as info:
        read_file(str(path))
    assert str(path) in str(info.value)


def _viewed_by_pillow(path: Path) -> np.ndarray:
    """The oracle: imageio's pixels, then Pillow's ImageCms to sRGB where the file has a profile."""
    import imageio.v3 as iio
    from PIL import ImageCms

    from pipeline.inputs.profiles import is_identity, read_profile

    expected = to_rgb8(iio.imread(path, index=0), keep_alpha=True)  # imageio, same rules
    image = Image.open(path)
    icc = image.info.get("icc_profile")
    if icc and not is_identity(read_profile(icc)):
        mode = "RGBA" if image.mode == "RGBA" else "RGB"
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.createProfile("sRGB")
        converted = ImageCms.profileToProfile(
            image, source, srgb, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode=mode
        )
        expected = to_rgb8(np.asarray(converted), keep_alpha=True)
    return expected


def test_jpeg_and_png_decode_to_the_same_pixels_as_imageio_and_littlecms(write_image, china):
    import skimage
    import sklearn.datasets

    photos = [
        *(Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"),
        *(Path(skimage.__file__).parent / "data").glob("*.jpg"),
        *(Path(skimage.__file__).parent / "data").glob("*.png"),
        Path(write_image("gray.jpg", china[:, :, 1])),
        Path(write_image("interlaced.png", china, interlace=1)),
    ]
    for path in photos:  # rocket.jpg is Adobe RGB, color.png and page.png have profiles too
        assert np.array_equal(read_file(str(path)), _viewed_by_pillow(path)), path
    rgb = write_image("rgb.png", china)
    assert np.array_equal(_decode_fast(Path(rgb).read_bytes()), china)  # the fast path is taken


def test_cmyk_jpeg_is_converted_not_taken_for_rgba(tmp_path, china):
    path = tmp_path / "print.jpg"
    Image.fromarray(china).convert("CMYK").save(path, quality=95)
    source = open_file(str(path), "print.jpg", 1024)
    assert source.conversion == "CMYK to RGB"
    pixels = source.image.compute()
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(pixels, expected)
    assert np.abs(pixels.astype(int) - china).mean() < 3  # the photo's colours, not inks


def test_probe_reads_only_the_header_and_says_how_to_read(write_image, small_photo, tmp_path):
    import tifffile

    found = probe(write_image("a.png", small_photo))
    assert (found.kind, found.shape, found.dtype, found.pixels) == (
        "whole",
        (120, 170, 3),
        "uint8",
        20400,
    )
    tiled = tmp_path / "t.tif"
    tifffile.imwrite(tiled, small_photo, tile=(64, 64), photometric="rgb")
    found = probe(str(tiled))
    assert (found.kind, found.tile) == ("tiff", (64, 64))


def png_kinds(pixels):
    """PNGs of every colour type and depth Pillow writes (RGB, gray, gray+alpha, RGBA, 1-bit,
    2-bit and 4-bit palettes, a palette with a transparent index, 16-bit gray), as bytes."""
    image = Image.fromarray(pixels)
    kinds = {
        "rgb": image,
        "gray": image.convert("L"),
        "gray+alpha": image.convert("LA"),
        "rgba": image.convert("RGBA"),
        "bilevel": image.convert("1"),
        "palette": image.quantize(16),
        "palette-2bit": image.quantize(4),
        "palette-keyed": image.quantize(16),
        "gray16": Image.fromarray(pixels[..., 0].astype(np.uint16) * 257),
    }
    kinds["palette-keyed"].info["transparency"] = 0
    found = {}
    for kind, made in kinds.items():
        buffer = io.BytesIO()
        made.save(buffer, "PNG", **({"bits": 2} if kind == "palette-2bit" else {}))
        found[kind] = buffer.getvalue()
    return found


def test_a_png_header_says_what_the_decoder_gives(tmp_path, small_photo):
    # probed from the PNG's own chunks (or imageio's header reading where they do not say)
    for kind, data in png_kinds(small_photo).items():
        path = tmp_path / f"{kind}.png"
        path.write_bytes(data)
        found = probe(str(path), convert=False)
        props = iio.improps(path)
        alpha = found.shape[2:] == (4,) and props.shape[2:] == (3,)  # a transparent index kept
        assert alpha == (kind == "palette-keyed"), kind
        expected = (*props.shape[:2], 4) if alpha else props.shape
        assert (found.shape, found.dtype) == (expected, str(props.dtype)), kind


def test_from_array_normalises_like_files(small_photo):
    gray = small_photo[:, :, 0]
    source = source_from_array(gray, "gray", 50)
    assert source.conversion == "gray to RGB"
    assert np.array_equal(source.image.compute(), np.repeat(gray[:, :, None], 3, axis=2))
    with pytest.raises(InputError, match="not a 2-D image"):
        source_from_array(np.zeros((2, 3, 4, 5), np.uint8), "cube", 50)


def test_images_over_max_pixels_are_refused_with_the_way_out(write_image, small_photo):
    path = write_image("big.png", small_photo)
    with pytest.raises(InputError) as info:
        open_file(path, "big.png", 64, max_pixels=10_000)
    message = str(info.value)
    assert message.startswith(f"{path}: 170x120 is 20,400 pixels, over the limit of 10,000")
    assert "--max-pixels" in message
    assert "tiled TIFF" in message


def test_raising_max_pixels_lifts_pillows_own_limit(write_image, small_photo, monkeypatch):
    from PIL import Image

    path = write_image("big.png", small_photo)
    # Pillow refuses images over twice this many pixels as decompression bombs
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    with pytest.raises(Image.DecompressionBombError), Image.open(path) as im:
        im.load()
    source = open_file(path, "big.png", 64, max_pixels=1_000_000)
    assert np.array_equal(source.image.compute(), small_photo)
    assert Image.MAX_IMAGE_PIXELS == 5_000  # restored after reading


@pytest.mark.parametrize("extension", [".png", ".gif"])
def test_a_palette_image_with_a_transparent_index_keeps_it(tmp_path, extension):
    from PIL import Image

    indices = np.random.default_rng(0).integers(0, 4, (30, 40)).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    path = str(tmp_path / f"p{extension}")
    image.save(path, transparency=3)  # PNG: a tRNS chunk; GIF: the transparent index
    found = probe(path)
    assert found.shape == (30, 40, 4)
    assert found.conversion == "alpha kept unless fully opaque"
    pixels = decode(found)
    assert np.array_equal(pixels[..., 3] == 0, indices == 3)
    assert np.array_equal(
        pixels[indices == 0], np.tile([255, 0, 0, 255], ((indices == 0).sum(), 1))
    )
