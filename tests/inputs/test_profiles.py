"""Colour profiles against littleCMS as Pillow calls it (``ImageCms.profileToProfile``).

Profiles built with :func:`matrix_profile` (sRGB, Display P3, Adobe RGB) and Debian's packaged
ones (sRGB, gray, CMYK; skipped when absent).
"""

import numpy as np
import pytest
from PIL import ImageCms

from pipeline.inputs.profiles import (
    D65,
    STRIP_PIXELS,
    ProfileError,
    fits,
    gray_profile,
    is_identity,
    png_profile,
    read_profile,
    to_srgb,
)
from tests.viewing import (
    ADOBE,
    ADOBE_FILE,
    CMYK_FILE,
    GRAY_FILE,
    P3,
    SRGB,
    SRGB_FILE,
    converted,
    packaged,
)

RNG = np.random.default_rng(7)
COLOURS = RNG.integers(0, 256, (64, 96, 3), dtype=np.uint8)


def test_built_srgb_maps_colours_to_themselves():
    profile = read_profile(SRGB)
    assert profile.description == "sRGB, built"
    assert profile.channels == 3
    steps = np.arange(0, 256, 5, dtype=np.uint8)
    every = np.stack(np.meshgrid(steps, steps, steps), -1).reshape(-1, len(steps), 3)
    assert np.abs(to_srgb(every, profile).astype(int) - every).max() <= 1
    assert np.abs(to_srgb(COLOURS, profile).astype(int) - COLOURS).max() <= 1
    assert is_identity(profile)


def test_packaged_srgb_is_identity():
    profile = read_profile(packaged(SRGB_FILE))
    assert np.abs(to_srgb(COLOURS, profile).astype(int) - COLOURS).max() <= 1
    assert is_identity(profile)


def test_display_p3_is_not_identity_and_its_red_clips_to_srgb_red():
    profile = read_profile(P3)
    assert profile.description == "Display P3"
    assert not is_identity(profile)
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    red, green, blue = to_srgb(primaries, profile)[0]
    assert tuple(red) == (255, 0, 0)  # outside sRGB: clipped
    assert green[1] == 255
    assert green[0] == 0
    assert tuple(blue[1:]) == (0, 255)  # within 1 of sRGB's blue: P3 and sRGB share it nearly
    white_gray_black = np.array([[[255] * 3, [128] * 3, [0] * 3]], dtype=np.uint8)
    assert np.array_equal(to_srgb(white_gray_black, profile), white_gray_black)  # same white


@pytest.mark.parametrize("icc", [P3, ADOBE], ids=["p3", "adobe"])
def test_rgb_and_rgba_are_pillows_conversion_exactly(icc):
    profile = read_profile(icc)
    assert np.array_equal(to_srgb(COLOURS, profile), converted(COLOURS, icc))
    rgba = RNG.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    out = to_srgb(rgba, profile)
    assert out.shape == rgba.shape
    assert np.array_equal(out, converted(rgba, icc))
    assert np.array_equal(out[..., 3], rgba[..., 3])  # alpha kept
    assert np.array_equal(out[..., :3], to_srgb(rgba[..., :3], profile))


def test_packaged_adobe_rgb_is_pillows_conversion_and_near_the_built_one():
    icc = packaged(ADOBE_FILE)
    profile = read_profile(icc)
    assert np.array_equal(to_srgb(COLOURS, profile), converted(COLOURS, icc))
    built = to_srgb(COLOURS, read_profile(ADOBE)).astype(int)
    assert np.abs(to_srgb(COLOURS, profile).astype(int) - built).max() <= 2


@pytest.mark.parametrize("source", ["packaged", "built"])
def test_gray_becomes_rgb_as_pillow_converts_l_to_rgb(source):
    icc = packaged(GRAY_FILE) if source == "packaged" else gray_profile(1.8, D65, "gamma 1.8")
    profile = read_profile(icc)
    assert profile.channels == 1
    gray = COLOURS[:, :, 0]
    out = to_srgb(gray, profile)
    assert out.shape == (*gray.shape, 3)
    assert np.array_equal(out, converted(gray, icc))
    assert np.array_equal(to_srgb(gray[:, :, None], profile), out)
    la = np.dstack([gray, COLOURS[:, :, 1]])  # gray + alpha: the alpha kept
    assert np.array_equal(to_srgb(la, profile), np.dstack([out, COLOURS[:, :, 1]]))


def test_cmyk_is_pillows_conversion():
    icc = packaged(CMYK_FILE)
    profile = read_profile(icc)
    assert profile.channels == 4
    cmyk = RNG.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    out = to_srgb(cmyk, profile)
    assert out.shape == (40, 50, 3)
    assert np.array_equal(out, converted(cmyk, icc))
    assert not is_identity(profile)


def test_fits_pairs_profiles_and_channels():
    rgb, gray = read_profile(P3), read_profile(gray_profile(2.2, D65, "g"))
    assert [fits(rgb, c) for c in (1, 2, 3, 4)] == [False, False, True, True]
    assert [fits(gray, c) for c in (1, 2, 3, 4)] == [True, True, False, False]


def test_unreadable_profiles_are_refused():
    with pytest.raises(ProfileError, match="unreadable ICC profile"):
        read_profile(b"\0" * 200)
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    with pytest.raises(ProfileError, match="unsupported colour space 'Lab'"):
        read_profile(lab)


def test_png_chunks_saying_srgb_give_no_profile():
    assert png_profile({}, 3) is None
    assert png_profile({"srgb": b"\0"}, 3) is None
    assert png_profile({"srgb": b"\0", "gamma": 1.0}, 3) is None  # sRGB wins
    assert png_profile({"gamma": 0.45455}, 3) is None
    assert png_profile({"gamma": 0.45455}, 1) is None
    srgb_xy = [0.3127, 0.329, 0.64, 0.33, 0.3, 0.6, 0.15, 0.06]
    assert png_profile({"gamma": 0.45455, "chromaticity": srgb_xy}, 3) is None


def test_png_linear_gamma_gives_a_profile():
    profile = png_profile({"gamma": 1.0}, 3)
    assert profile is not None
    assert profile.origin == "PNG gAMA/cHRM"
    assert profile.channels == 3
    # linear values: mid-gray 128 is brighter in sRGB's curve (about 188)
    mid = to_srgb(np.full((1, 1, 3), 128, np.uint8), profile)[0, 0]
    assert np.all(np.abs(mid.astype(int) - 188) <= 1)
    gray = png_profile({"gamma": 1.0}, 1)
    assert gray is not None
    assert gray.channels == 1


def test_png_chromaticities_other_than_srgbs_give_a_profile():
    p3_xy = [0.3127, 0.329, 0.68, 0.32, 0.265, 0.69, 0.15, 0.06]
    profile = png_profile({"gamma": 0.45455, "chromaticity": p3_xy}, 3)
    assert profile is not None
    assert tuple(to_srgb(np.array([[[255, 0, 0]]], np.uint8), profile)[0, 0]) == (255, 0, 0)
    assert not is_identity(profile)


def test_large_images_converted_in_strips_on_threads_are_the_same():
    profile = read_profile(P3)
    large = np.random.default_rng(5).integers(0, 256, (2100, 2000, 4), dtype=np.uint8)
    assert large.shape[0] * large.shape[1] > STRIP_PIXELS  # converted in strips
    out = to_srgb(large, profile)
    assert np.array_equal(out, to_srgb(large, profile, threads=0))
    assert np.array_equal(out, converted(large, P3))
