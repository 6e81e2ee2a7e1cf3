"""What a job has to do, from listings only: inputs and the store's listing -> work items.

Nothing here reads an image or its header: the client learns every input's name, size and
version from listing its folder or bucket (with ``frames: all``, the frames of the files that
can hold several from their headers, :mod:`pipeline.inputs.frames`, before they reach the
plan), and what is already complete from listing the store
(:func:`pipeline.store.write.list_store`). Work items come out lazily, in input order:

* :class:`Skip` - already complete with the same settings;
* :class:`Refuse` - stored with other settings (and no ``overwrite``);
* :class:`Batch` - small files, several per task: as many as :class:`WorkEstimate` expects a
  worker thread to compress in ``batch_seconds`` (about a second), so that tasks, and the
  progress they report, come at a steady pace whatever the images' sizes;
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

import math
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


class WorkEstimate:
    """Seconds a worker thread is expected to spend on a small image, from its file's size.

    ``per_image + per_byte * size``, times a scale learned from the images done so far (a
    running mean of the log of measured over expected seconds, so one slow image moves it
    little). The defaults were measured on 2 cores: 32x32 PNGs took 15-25 ms each, 0.2-MP
    photos 0.1-0.2 s (about 0.3 us per byte of PNG, 1.5 us per byte of JPEG).
    """

    #: Weight of the newest measurement in the running mean.
    LEARN = 0.1

    def __init__(self, per_image: float = 0.02, per_byte: float = 5e-7) -> None:
        self.per_image = per_image
        self.per_byte = per_byte
        self._log_scale = 0.0

    def seconds(self, size: int) -> float:
        """Expected seconds for an image whose file has ``size`` bytes."""
        return math.exp(self._log_scale) * (self.per_image + self.per_byte * size)

    def learn(self, size: int, seconds: float) -> None:
        """Take in that an image of ``size`` bytes took ``seconds``."""
        if seconds > 0:
            measured = math.log(seconds / (self.per_image + self.per_byte * size))
            self._log_scale += self.LEARN * (measured - self._log_scale)


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
    batch_seconds: float = math.inf,
    estimate: WorkEstimate | None = None,
) -> Iterator[Item]:
    """Work items for ``images`` (files, or frames of files), lazily and in input order.

    ``images``: what :mod:`pipeline.inputs.frames` makes of the job's inputs. A frame image's
    token and reuse values include its frame. ``check(name, values)`` reads a stored image's
    metadata and says ``"complete"`` (same settings), ``"incomplete"`` or ``"absent"``, or
    raises :class:`PipelineError` for other settings (see
    :func:`pipeline.store.write.existing_status`).

    A batch ends at ``batch_images`` images, ``batch_bytes`` bytes of files, or ``batch_seconds``
    of work as ``estimate`` (read as each batch is made: it may learn as the job runs) expects.
    """
    estimate = estimate or WorkEstimate()
    batch: list[Spec] = []
    size = 0
    seconds = 0.0
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
                batch, size, seconds = [], 0, 0.0
            yield Large(spec)
            continue
        batch.append(spec)
        size += spec.size
        seconds += estimate.seconds(spec.size)
        if len(batch) >= batch_images or size >= batch_bytes or seconds >= batch_seconds:
            yield Batch(tuple(batch))
            batch, size, seconds = [], 0, 0.0
    if batch:
        yield Batch(tuple(batch))
