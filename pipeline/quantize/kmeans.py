"""k-means kernels on colours: k-means++ seeding, weighted Lloyd iterations, split-merge search.

Points are colours, as their coordinates in the fit's colour space (RGB values 0..255, or OKLab:
:func:`pipeline.quantize.colours.coordinates`), with a weight each (how many pixels have that
colour), so k-means over every pixel of an image costs one row per distinct colour. Per-cluster sums
are kept up to date incrementally, and after the first pass only what moved centres can change is
looked at again, so iterations get cheap as a fit settles. Distances here only steer the fit; stored
labels are computed exactly elsewhere (:mod:`pipeline.quantize.colours`).
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from pipeline.quantize.colours import axes_of, nearest_centre, squared_distance

Float = NDArray[np.float64]
Index = NDArray[np.intp]


@numba.njit(nogil=True, cache=True)
def _greedy_plusplus(points, first, uniforms, axes):  # type: ignore[no-untyped-def]
    # scikit-learn's greedy k-means++ (see plusplus), one compiled pass per candidate.
    n = points.shape[0]
    k, trials = uniforms.shape[0] + 1, uniforms.shape[1]
    chosen = np.empty(k, dtype=np.intp)
    chosen[0] = first
    closest = ((points - points[first]) ** 2).sum(axis=1)
    potential = closest.sum()
    trial = np.empty(n)
    best = np.empty(n)
    for c in range(1, k):
        cumulative = np.cumsum(closest)
        best_potential = np.inf
        for t in range(trials):
            candidate = min(np.searchsorted(cumulative, uniforms[c - 1, t] * potential), n - 1)
            total = 0.0
            for i in range(n):
                trial[i] = min(closest[i], squared_distance(points, i, points, candidate, axes))
                total += trial[i]
            if total < best_potential:
                best_potential, chosen[c] = total, candidate
                best, trial = trial, best
        closest, best = best, closest
        potential = best_potential
    return chosen


def plusplus(points: NDArray[np.floating], k: int, random_state: int) -> Index:
    """Indices of ``k`` k-means++ starting centres among ``points`` (n, d), n >= k.

    The greedy variant scikit-learn's ``kmeans_plusplus`` uses: each new centre is the best, by
    the potential it leaves, of ``2 + int(log k)`` candidates drawn with probability proportional
    to the squared distance to the nearest centre so far. Compiled, it is several times faster
    than scikit-learn's, whose per-centre NumPy calls dominate on a few thousand points.
    """
    rng = np.random.default_rng(random_state)
    first = int(rng.integers(len(points)))
    uniforms = rng.random((k - 1, 2 + int(np.log(k))))
    points64 = np.asarray(points, dtype=np.float64)
    return _greedy_plusplus(points64, first, uniforms, axes_of(points64))


def per_cluster(labels: Index, values: Float, k: int) -> Float:
    """Sum of ``values`` (shape (n,) or (n, c)) over each of ``k`` clusters."""
    if values.ndim == 1:
        return np.bincount(labels, weights=values, minlength=k).astype(np.float64, copy=False)
    return np.stack(
        [np.bincount(labels, weights=values[:, c], minlength=k) for c in range(values.shape[1])],
        axis=1,
    )


def cluster_errors(mass: Float, sums: Float, squares: Float) -> Float:
    """Weighted squared error of each cluster about its mean, from its sums (0 when empty)."""
    full = mass > 0
    errors = np.zeros_like(mass)
    errors[full] = squares[full] - (sums[full] ** 2).sum(axis=1) / mass[full]
    return errors


def neediest(error: NDArray[np.number], most: int) -> Index:
    """Indices, ascending, of the ``most`` points adding most ``error`` (only those adding any).

    Ties go to the lower index.
    """
    worst = np.argsort(-error, kind="stable")[:most]
    return np.sort(worst[error[worst] > 0])


def update(points: Float, weights: Float, labels: Index, centres: Float) -> Float:
    """Weighted means of the clusters ``labels`` defines; an empty cluster keeps its centre."""
    k = len(centres)
    mass = per_cluster(labels, weights, k)
    sums = per_cluster(labels, weights[:, None] * points, k)
    new = centres.copy()
    full = mass > 0
    new[full] = sums[full] / mass[full, None]
    return new


class Clusters:
    """A weighted k-means state: centres, each point's nearest centre, and per-cluster sums.

    Parameters
    ----------
    points : ndarray (n, d)
        Colours' coordinates (see :func:`pipeline.quantize.colours.coordinates`).
    weights : ndarray (n,)
        Pixel count of each colour.
    centres : ndarray (k, d)
        Starting centres.
    """

    def __init__(self, points: Float, weights: Float, centres: Float) -> None:
        self.points = np.asarray(points, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.wp = self.weights[:, None] * self.points
        self.wpp = self.weights * (self.points * self.points).sum(axis=1)
        self.centres = np.array(centres, dtype=np.float64)
        self.labels, self.dist = nearest_centre(self.points, self.centres)
        k = len(self.centres)
        self.mass = per_cluster(self.labels, self.weights, k)
        self.sums = per_cluster(self.labels, self.wp, k)
        self.squares = per_cluster(self.labels, self.wpp, k)

    @property
    def k(self) -> int:
        """Number of centres."""
        return len(self.centres)

    def inertia(self) -> float:
        """Weighted sum of squared distances of the points to their clusters' means."""
        return float(cluster_errors(self.mass, self.sums, self.squares).sum())

    def candidates(self, centres: Float, moved: Index) -> tuple[Index, Float]:
        """Nearest centres if the centres became ``centres``, of which only ``moved`` changed.

        A point whose centre did not move can only switch to a moved centre, so it is compared
        with those alone; points of moved centres are compared with every centre.
        """
        labels = self.labels.copy()
        dist = self.dist.copy()
        if len(moved) < len(centres):
            j, d = nearest_centre(self.points, centres[moved])
            better = d < dist
            labels[better] = moved[j[better]]
            dist[better] = d[better]
        flag = np.zeros(len(centres), dtype=bool)
        flag[moved] = True
        mine = np.flatnonzero(flag[self.labels])
        if len(mine):
            labels[mine], dist[mine] = nearest_centre(self.points[mine], centres, labels[mine])
        return labels, dist

    def _sums_after(self, labels: Index) -> tuple[Index, Float, Float, Float]:
        """Points that change cluster under ``labels``, and the per-cluster sums after."""
        changed = np.flatnonzero(labels != self.labels)
        old, new = self.labels[changed], labels[changed]

        def moved(total: Float, values: Float) -> Float:
            values = values[changed]
            return total + per_cluster(new, values, self.k) - per_cluster(old, values, self.k)

        return (
            changed,
            moved(self.mass, self.weights),
            moved(self.sums, self.wp),
            moved(self.squares, self.wpp),
        )

    def trial_inertia(self, labels: Index) -> float:
        """:meth:`inertia` if the points had ``labels`` (the state is not changed)."""
        return float(cluster_errors(*self._sums_after(labels)[1:]).sum())

    def _adopt(self, labels: Index, dist: Float) -> Index:
        """Take new labels; returns the clusters whose membership changed."""
        changed, self.mass, self.sums, self.squares = self._sums_after(labels)
        touched = np.union1d(self.labels[changed], labels[changed])
        self.labels, self.dist = labels, dist
        return touched

    def _recentre(self, touched: Index) -> Index:
        """Move the ``touched`` centres to their clusters' means; returns those that moved.

        An empty cluster's centre jumps to the point adding most error instead.
        """
        full = self.mass[touched] > 0
        idx = touched[full]
        means = self.sums[idx] / self.mass[idx, None]
        moved = idx[np.any(means != self.centres[idx], axis=1)]
        self.centres[idx] = means
        empty = touched[~full]
        if len(empty):
            worst = np.argsort(self.weights * self.dist, kind="stable")[::-1][: len(empty)]
            self.centres[empty[: len(worst)]] = self.points[worst]
            moved = np.union1d(moved, empty[: len(worst)])
        return moved

    def lloyd(self, max_iter: int, touched: Index | None = None) -> int:
        """Lloyd iterations until no point changes cluster, at most ``max_iter``; returns how many.

        ``touched``: clusters whose membership changed since their centres were last set
        (default: all).
        """
        if touched is None:
            touched = np.arange(self.k)
        for it in range(1, max_iter + 1):
            moved = self._recentre(touched)
            if not len(moved):
                return it
            touched = self._adopt(*self.candidates(self.centres, moved))
            if not len(touched):
                return it
        self._recentre(touched)
        return max_iter

    def try_centres(self, centres: Float, moved: Index, max_iter: int) -> bool:
        """Adopt ``centres`` (differing in ``moved``) and iterate, if that lowers the inertia."""
        labels, dist = self.candidates(centres, moved)
        if self.trial_inertia(labels) >= self.inertia():
            return False
        self.centres = centres.copy()
        touched = np.union1d(self._adopt(labels, dist), moved)
        self.lloyd(max_iter, touched)
        return True


def _split(points: Float, weights: Float) -> tuple[Float, Float]:
    """Two centres splitting a cluster along its main axis: mean -/+ one standard deviation."""
    mean = weights @ points / weights.sum()
    centred = points - mean
    cov = (centred.T * weights) @ centred / weights.sum()
    values, vectors = np.linalg.eigh(cov)
    step = vectors[:, -1] * np.sqrt(max(values[-1], 0.0))
    return mean - step, mean + step


def split_merge(state: Clusters, *, tries: int, max_iter: int = 100) -> int:
    """Improve a converged k-means by moving centres from where they matter least to most.

    Each try merges the pair of clusters that costs least to merge (Ward's cost) and splits the
    cluster with the largest error in two along its main axis, re-examining only the points those
    three centres can affect; the move is kept, and followed by Lloyd iterations, if the error
    after re-centring drops. A rejected pair is not tried again until some move is kept.

    Returns
    -------
    int
        Moves kept.
    """
    k = state.k
    if k < 3:
        return 0
    rejected: set[tuple[int, int]] = set()
    kept = 0
    for _ in range(tries):
        mass, sums, centres = state.mass, state.sums, state.centres
        error = cluster_errors(mass, sums, state.squares)
        gap = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        np.fill_diagonal(gap, np.inf)
        partner = gap.argmin(axis=1)
        pm = mass[partner]
        merge_cost = mass * pm / np.maximum(mass + pm, 1e-12) * gap[np.arange(k), partner]
        move = next(
            (
                (int(i), int(j))
                for j in np.argsort(merge_cost, kind="stable")[:4]
                for i in np.argsort(-error, kind="stable")[:4]
                # a cluster without error (empty, or one colour) has nothing to split
                if error[i] > 0 and i not in (j, partner[j]) and (int(i), int(j)) not in rejected
            ),
            None,
        )
        if move is None:
            break
        i, j = move
        p = int(partner[j])
        trial = centres.copy()
        trial[p] = (sums[p] + sums[j]) / max(mass[p] + mass[j], 1e-12)
        members = state.labels == i
        trial[i], trial[j] = _split(state.points[members], state.weights[members])
        if state.try_centres(trial, np.array(sorted({i, j, p}), dtype=np.intp), max_iter):
            rejected.clear()
            kept += 1
        else:
            rejected.add(move)
    return kept
