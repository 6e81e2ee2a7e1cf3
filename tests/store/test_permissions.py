"""Stores and rebuilt files follow the process umask: group-readable on shared file systems."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from pipeline import compress, write_images
from pipeline.paths import create_unique


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and of every file and folder below it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for folder, subs, files in os.walk(root):
        for name in subs + files:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["022", "002"])
def test_stores_and_rebuilt_files_follow_the_umask(tmp_path, write_image, mask):
    pixels = np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3)
    source = write_image("a.png", pixels)
    store, out = tmp_path / "out.zarr", tmp_path / "rebuilt"
    with umask(mask):
        assert [r.status for r in compress([source], str(store), colors=8, chunk=16)] == ["done"]
        assert len(write_images(str(store), str(out), extension=".png").written) == 1
    for root in (store, out):
        found = modes(root)
        folders = {path for path in found if (root / path).is_dir()}
        assert folders
        assert len(found) > len(folders)
        assert {found[path] for path in folders} == {0o777 & ~mask}, found
        assert {mode for path, mode in found.items() if path not in folders} == {0o666 & ~mask}


def test_create_unique_makes_new_files_and_folders(tmp_path):
    with umask(0o027):
        made = {create_unique(str(tmp_path), ".x.", ".tmp") for _ in range(20)}
        folder = create_unique(str(tmp_path), "f-", folder=True)
    assert len(made) == 20
    for path in made:
        name = os.path.basename(path)
        assert name.startswith(".x.")
        assert name.endswith(".tmp")
        assert len(name) == 3 + 8 + 4
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert os.path.getsize(path) == 0
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o750
    assert os.listdir(folder) == []


@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["022", "002"])
def test_the_lease_file_follows_the_umask(tmp_path, mask):
    from pipeline.store.lease import LEASE_SUFFIX, hold
    from pipeline.store.location import Location

    store = tmp_path / "out.zarr"
    with umask(mask), hold(Location.at(str(store))):
        lease_file = Path(str(store) + LEASE_SUFFIX)
        assert stat.S_IMODE(lease_file.stat().st_mode) == 0o666 & ~mask
