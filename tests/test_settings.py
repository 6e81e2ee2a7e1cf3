"""Bounds of the settings: every number has both, checked before anything starts."""

from __future__ import annotations

import dask.config
import pytest

from pipeline import compress
from pipeline.errors import SettingError
from pipeline.settings import BOUNDS, DEFAULTS, Running, Settings


def test_every_numeric_default_has_bounds_that_hold_it():
    numbers = {
        key.replace("-", "_"): value
        for key, value in DEFAULTS["pipeline"].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    assert set(numbers) <= set(BOUNDS)
    assert {name: BOUNDS[name].problem(value) for name, value in numbers.items()} == dict.fromkeys(
        numbers
    )


def test_a_value_out_of_bounds_is_named_as_it_was_given(tmp_path):
    store = tmp_path / "out.zarr"
    with pytest.raises(SettingError, match=r"^chunk must be 16\.\.16384, got 4294967296$"):
        compress([str(tmp_path / "a.png")], str(store), chunk=2**32)
    assert not store.exists()
    with dask.config.set({"pipeline.batch-images": 0}):
        with pytest.raises(
            SettingError, match=r"^pipeline\.batch-images must be 1\.\.10000, got 0$"
        ):
            Running.from_config()
        assert Running.from_config(batch_images=5).batch_images == 5  # an override wins
    with (
        dask.config.set({"pipeline.sample": 100}),  # not the default: named as configured
        pytest.raises(
            SettingError, match=r"^pipeline\.sample must be at least colors \(200\), got 100$"
        ),
    ):
        Settings.from_config(colors=200)
    with pytest.raises(SettingError, match=r"^tol must be a number, got '1'$"):
        Settings.from_config(tol="1")
