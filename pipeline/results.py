"""What happened to each image of a job, as the job reports it; an image's outcome, briefly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Longest error shown in a result's ``repr`` (the whole one is its ``error``).
REPR_ERROR = 100


def is_number(value: Any) -> bool:
    """Whether an attribute value read from JSON is a number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def brief(attrs: dict[str, Any]) -> list[str]:
    """An image's outcome in a few words, from its group attributes ``attrs``.

    ``["16 colours", "26.8 dB", "11.2x"]``: colours stored, PSNR (``lossless``) and the bytes
    of raw pixels over the bytes stored; what the attributes lack (or hold as no number) is
    left out, such as every figure of an image not complete yet.
    """
    metrics = attrs.get("metrics")
    metrics = metrics if isinstance(metrics, dict) else {}
    words = []
    if is_number(attrs.get("colors")):
        words.append(f"{attrs['colors']:,} colour" + ("" if attrs["colors"] == 1 else "s"))
    psnr = metrics.get("psnr_db", "")
    if psnr is None:
        words.append("lossless")
    elif is_number(psnr):
        words.append(f"{psnr:.1f} dB")
    if is_number(metrics.get("ratio")):
        words.append(f"{metrics['ratio']:.1f}x")
    return words


@dataclass(frozen=True, repr=False)
class ImageResult:
    """What happened to one image of a job.

    Attributes
    ----------
    name : str
        Group name in the store.
    source : str
        Input path (or ``"<array>"``).
    status : str
        ``"done"``, ``"skipped"`` (already complete with the same settings) or ``"failed"``.
    error : str or None
        One-line reason for a failure, naming the input.
    attrs : dict or None
        The image group's attributes once done (settings, fit, metrics). Not read for skipped
        images: the store's listing tells they are complete (see :func:`pipeline.open_store`).
    seconds : float
        The image's own time: its compression inside a batch, or its graph from submission.
    size : int
        Bytes of the input file (0 when unknown).
    detail : str or None
        Traceback of an unexpected error (a bug rather than a bad input).
    """

    name: str
    source: str
    status: str
    error: str | None = None
    attrs: dict[str, Any] | None = None
    seconds: float = 0.0
    size: int = 0
    detail: str | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        """The ``metrics`` attribute of the stored image (empty unless done)."""
        return dict((self.attrs or {}).get("metrics", {}))

    def __repr__(self) -> str:
        """One line: ``ImageResult(name='china.jpg', done, 16 colours, 26.8 dB, 11.2x, 5.2 s)``.

        A failure shows its error (cut at :data:`REPR_ERROR` characters); the attributes,
        with their colour table, are left out.
        """
        words = [f"name={self.name!r}", self.status]
        if self.error is not None:
            error = self.error
            cut = error if len(error) <= REPR_ERROR else error[: REPR_ERROR - 3] + "..."
            words[-1] += f": {cut}"
        words += brief(self.attrs or {})
        words.append(f"{self.seconds:.1f} s")
        return f"ImageResult({', '.join(words)})"


#: What is said of an image stored in more bytes than its source file (progress, report).
LARGER_THAN_SOURCE = "stored larger than its source"


def larger_than_source(metrics: dict[str, Any]) -> bool:
    """Whether an image's ``metrics`` say its stored bytes exceed its source file's."""
    ratio = metrics.get("ratio_source")
    return isinstance(ratio, int | float) and ratio < 1
