"""What a job has to do, from listings only: inputs and the store's listing -> work items.

Nothing here reads an image or its header: the client learns every input's name, size and
version from listing its folder or bucket (with ``frames: all``, the frames of the files that
can hold several from their headers, :mod:`pipeline.inputs.frames`, before they reach the
plan), and what is already complete from listing the store
(:func:`pipeline.store.write.list_store`). Work items come out lazily, in input order:

* :class:`Skip` - already complete with the same settings;
* :class:`Refuse` - stored with other settings (and no ``overwrite``);
* :class:`Batch` - small files, several per task;
* :class:`Large` - a file too large for a batch, or a Zarr array: its header is opened on a
  worker, then it gets a chunked graph of its own.

Only images the listing cannot vouch for (a group without a completion marker: a store
written before markers existed, or an image whose job died between marking it complete and
writing its marker) cost one metadata read, through ``check``. An image whose marker names more
labels chunks than the listing shows, whose metadata documents are gone or too large, whose
group is a file or gone (:attr:`pipeline.store.write.Listing.damaged`), or whose documents the
job found damaged before planning (:func:`pipeline.store.read.check_complete`, a batched read of
the small documents of the images markers vouch for), is redone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from dask.base import tokenize

from pipeline.errors import PipelineError
from pipeline.inputs.frames import Image
from pipeline.inputs.sources import Source
from pipeline.job.tasks import Spec
from pipeline.paths import location
from pipeline.settings import Settings
from pipeline.store.write import Listing, digest, reuse_values, tag_digest


@dataclass(frozen=True)
class Skip:
    """An image already complete with the same settings; ``heal``: write its missing marker."""

    spec: Spec
    heal: bool = False


@dataclass(frozen=True)
class Refuse:
    """An image stored with other settings: not touched without ``overwrite``."""

    spec: Spec
    error: str


@dataclass(frozen=True)
class Batch:
    """Small images compressed one after another by one task."""

    specs: tuple[Spec, ...]


@dataclass(frozen=True)
class Large:
    """An image with a graph of its own, chunk-parallel."""

    spec: Spec


@dataclass(frozen=True)
class Given:
    """An image given as an array (Python API), already wrapped as a lazy source."""

    spec: Spec
    source: Source


Item = Skip | Refuse | Batch | Large | Given


def batch_size(images: int, threads: int, most: int) -> int:
    """Images per batch: at most ``most``, fewer when the job is small, so every thread works."""
    return max(1, min(most, -(-images // max(1, 4 * threads))))


def prior(
    spec: Spec, values: dict[str, Any], check: Callable[[str, dict[str, Any]], str]
) -> Skip | Refuse | None:
    """What an image whose group exists in the store needs: nothing, a refusal, or work (None).

    Its completion marker vouches for it; without one (or with another settings digest), its
    metadata is read through ``check``.
    """
    if spec.stale is not None and tag_digest(spec.stale) == spec.key:
        return Skip(spec)
    try:
        state = check(spec.name, values)
    except PipelineError as exc:
        return Refuse(spec, str(exc))
    return Skip(spec, heal=True) if state == "complete" else None


def plan(
    images: Iterable[Image],
    listing: Listing,
    settings: Settings,
    *,
    overwrite: bool,
    check: Callable[[str, dict[str, Any]], str],
    batch_bytes: int,
    batch_images: int,
) -> Iterator[Item]:
    """Work items for ``images`` (files, or frames of files), lazily and in input order.

    ``images``: what :mod:`pipeline.inputs.frames` makes of the job's inputs. A frame image's
    token and reuse values include its frame. ``check(name, values)`` reads a stored image's
    metadata and says ``"complete"`` (same settings), ``"incomplete"`` or ``"absent"``, or
    raises :class:`PipelineError` for other settings (see
    :func:`pipeline.store.write.existing_status`).
    """
    batch: list[Spec] = []
    size = 0
    for image in images:
        entry, name = image.entry, image.name
        where = location(entry.path)
        values = reuse_values(where, settings, image.frame)
        version = (where, entry.size, entry.version)
        spec = Spec(
            name=name,
            path=entry.path,
            token=tokenize(*version) if image.frame is None else tokenize(*version, image.frame),
            key=digest(values),
            stale=listing.complete.get(name),
            size=image.size,
            fresh=name not in listing.groups,
            frame=image.frame,
        )
        if not overwrite and name in listing.groups and name not in listing.damaged:
            decided = prior(spec, values, check)
            if decided is not None:
                yield decided
                continue
        if entry.zarr or spec.size > batch_bytes:
            if batch:
                yield Batch(tuple(batch))
                batch, size = [], 0
            yield Large(spec)
            continue
        batch.append(spec)
        size += spec.size
        if len(batch) >= batch_images or size >= batch_bytes:
            yield Batch(tuple(batch))
            batch, size = [], 0
    if batch:
        yield Batch(tuple(batch))
