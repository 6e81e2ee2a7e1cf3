"""k-means kernels on colours: k-means++ seeding, weighted Lloyd iterations, split-merge search.

Points are colours, as their coordinates in the fit's colour space (RGB values 0..255, or OKLab:
:func:`pipeline.quantize.colours.coordinates`), with a weight each (how many pixels have that
colour), so k-means over every pixel of an image costs one row per distinct colour. Per-cluster sums
are kept up to date incrementally, and after the first pass only what moved centres can change is
looked at again, so iterations get cheap as a fit settles. Distances here only steer the fit; stored
labels are computed exactly elsewhere (:mod:`pipeline.quantize.colours`).

Lloyd iterations run in one compiled call and a split-merge try in a few (its split's mean,
covariance and eigenvectors stay NumPy and LAPACK), so a small image (a thumbnail: a thousand
colours, 16 clusters) costs about a hundred calls where it took thousands of NumPy calls. The
kernels add in the order NumPy does (``np.bincount``'s: point by point; a row's few coordinates
left to right), so their results are NumPy's to the last bit.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from pipeline.quantize.colours import (
    NEIGHBOURS_KEPT,
    WIDEN,
    axes_of,
    guided,
    nearest_centre,
    nearest_of,
    nearest_search,
    neighbour_table,
    squared_distance,
)

Float = NDArray[np.float64]
Index = NDArray[np.intp]


#: Partial sums a seeding candidate's potential is added in (see :func:`_greedy_plusplus`).
POTENTIAL_LANES = 4


@numba.njit(nogil=True, cache=True)
def _greedy_plusplus(columns, first, uniforms, axes):  # type: ignore[no-untyped-def]
    # scikit-learn's greedy k-means++ (see plusplus) on the points' coordinates as rows of
    # ``columns`` (d, n): each candidate's squared distances to every point, then their sum, in
    # passes the compiler vectorizes. Each distance is squared_distance's, to the bit; the sum
    # is taken in POTENTIAL_LANES interleaved partial sums (point i in sum i % lanes), added
    # in order at the end: a single running sum made the pass wait on each addition (128
    # seeds of a 5,000-pixel sample: 3.6 ms against 4.7-5.1).
    n = columns.shape[1]
    k, trials = uniforms.shape[0] + 1, uniforms.shape[1]
    chosen = np.empty(k, dtype=np.intp)
    chosen[0] = first
    closest = np.empty(n)
    _distances_to(columns, first, np.full(n, np.inf), closest, axes)
    potential = closest.sum()
    trial = np.empty(n)
    best = np.empty(n)
    for c in range(1, k):
        cumulative = np.cumsum(closest)
        best_potential = np.inf
        for t in range(trials):
            candidate = min(np.searchsorted(cumulative, uniforms[c - 1, t] * potential), n - 1)
            total = _distances_to(columns, candidate, closest, trial, axes)
            if total < best_potential:
                best_potential, chosen[c] = total, candidate
                best, trial = trial, best
        closest, best = best, closest
        potential = best_potential
    return chosen


@numba.njit(nogil=True, cache=True)
def _distances_to(columns, j, closest, out, axes):  # type: ignore[no-untyped-def]
    # out[i]: the smaller of closest[i] and point i's squared distance to point j (added over
    # the coordinates in their order); returns the sum of ``out`` in POTENTIAL_LANES lanes.
    n = columns.shape[1]
    centre = columns[:, j].copy()
    for i in range(n):
        total = 0.0
        for c in range(len(axes)):
            diff = columns[c, i] - centre[c]
            total += diff * diff
        nearest = closest[i]
        out[i] = total if total < nearest else nearest
    lanes = np.zeros(POTENTIAL_LANES)
    whole = n - n % POTENTIAL_LANES
    for i in range(0, whole, POTENTIAL_LANES):
        for lane in range(POTENTIAL_LANES):
            lanes[lane] += out[i + lane]
    for i in range(whole, n):
        lanes[i - whole] += out[i]
    return lanes.sum()


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
    columns = np.ascontiguousarray(np.asarray(points, dtype=np.float64).T)
    return _greedy_plusplus(columns, first, uniforms, axes_of(points))


@numba.njit(nogil=True, cache=True)
def _per_cluster(labels, values, k):  # type: ignore[no-untyped-def]
    # Sums of the rows of ``values`` (n, c) per label, added point by point (np.bincount's order).
    sums = np.zeros((k, values.shape[1]))
    for i in range(labels.shape[0]):
        for c in range(values.shape[1]):
            sums[labels[i], c] += values[i, c]
    return sums


def per_cluster(labels: Index, values: NDArray[np.number], k: int) -> Float:
    """Sum of ``values`` (shape (n,) or (n, c)) over each of ``k`` clusters, in float64.

    Added point by point in index order, like ``np.bincount(labels, weights=...)``: the same
    sums to the last bit.
    """
    sums: Float = _per_cluster(labels, values.reshape(len(values), -1), k)
    return sums.reshape(k) if values.ndim == 1 else sums


@numba.njit(nogil=True, cache=True)
def _cell_ranks(colours, bits):  # type: ignore[no-untyped-def]
    # cell_index: each colour's cell, marked in a table of every cell, then the table's marks
    # replaced by their ranks.
    shift = 8 - bits
    cell = np.empty(colours.shape[0], dtype=np.intp)
    rank = np.zeros(1 << (3 * bits), dtype=np.intp)
    for i in range(colours.shape[0]):
        c = (colours[i, 0] >> shift) << (2 * bits)
        c |= (colours[i, 1] >> shift) << bits
        c |= colours[i, 2] >> shift
        cell[i] = c
        rank[c] = 1
    occupied = 0
    for c in range(rank.shape[0]):
        if rank[c]:
            rank[c] = occupied
            occupied += 1
    for i in range(cell.shape[0]):
        cell[i] = rank[cell[i]]
    return cell, occupied


def cell_index(colours: NDArray[np.uint8], bits: int) -> tuple[Index, int]:
    """Which cell of ``bits`` bits per channel (1 to 7) each of ``colours`` (n, 3) falls in.

    Cells are numbered in ascending order of their RGB values (R first), counting only occupied
    ones: the inverse that ``np.unique`` gives for the colours' top ``bits`` bits, in one compiled
    pass over a table of every cell instead of a sort (0.1-0.3 ms against 2-3 ms for a photo's
    70,000 colours at 5 and 6 bits). Returns the indices and the number of occupied cells.
    """
    index, occupied = _cell_ranks(np.ascontiguousarray(colours, dtype=np.uint8), bits)
    return index, int(occupied)


@numba.njit(nogil=True, cache=True)
def cluster_errors(mass, sums, squares):  # type: ignore[no-untyped-def]
    """Weighted squared error of each cluster about its mean, from its sums (0 when empty).

    ``squares - (sums ** 2).sum(axis=1) / mass`` per cluster, in NumPy's order of operations.
    """
    errors = np.zeros_like(mass)
    for c in range(mass.shape[0]):
        if mass[c] > 0:
            total = 0.0
            for j in range(sums.shape[1]):
                total += sums[c, j] * sums[c, j]
            errors[c] = squares[c] - total / mass[c]
    return errors


@numba.njit(nogil=True, cache=True)
def _nearer_moved(points, labels, dist, flag, centres, moved, axes):  # type: ignore[no-untyped-def]
    # _candidates' first search, guided: each point of a centre that did not move (not
    # ``flag``ged) takes its nearest moved centre (first of equals) where that is strictly
    # nearer than ``dist``, in place. As nearest_search's scan from the previous point's answer
    # g, but only for centres that could beat the point's distance so far: such a centre j is
    # within |p - g| + |p - j| < |p - g| + sqrt(min(dist, best)) of g, so the scan stops there
    # (widened as nearest_search's bound), where nearest_search's goes on to 2 |p - g|. The scan
    # mirrors colours._nearest_guided's with that bound; one compiled scan shared by both, called
    # per point, made a photo's fit 30% slower (77 against 58 ms), so each keeps its own loop.
    sub = centres[moved]
    m = moved.shape[0]
    kept = min(NEIGHBOURS_KEPT, m - 1)
    neighbours, spacing = neighbour_table(sub, kept, axes)
    widen = 1.0 + WIDEN
    previous = 0
    for i in range(points.shape[0]):
        if flag[labels[i]]:
            continue
        bound = dist[i]
        g = previous
        best = squared_distance(points, i, sub, g, axes)
        label = g
        radius = np.sqrt(best)
        reach = (radius + np.sqrt(min(bound, best))) * widen
        within = False
        for t in range(kept):
            if spacing[g, t] > reach:
                within = True
                break
            j = neighbours[g, t]
            d = squared_distance(points, i, sub, j, axes)
            if d < best:
                best, label = d, j
                reach = (radius + np.sqrt(min(bound, d))) * widen
            elif d == best and j < label:
                label = j
        if not within and kept < m - 1:
            label, best = nearest_of(points, i, sub, axes)
        previous = label
        if best < bound:
            labels[i] = moved[label]
            dist[i] = best


@numba.njit(nogil=True, cache=True)
def _candidates(points, labels, dist, centres, moved, axes):  # type: ignore[no-untyped-def]
    # Clusters.candidates: the moved centres (ascending) against every point of the others, the
    # nearest (first of equals) taken where strictly nearer (_nearer_moved, or comparing every
    # moved centre); then the points of moved centres against every centre, from their labels
    # so far, with nearest_centre's search, so their labels are its.
    n, k, m = points.shape[0], centres.shape[0], moved.shape[0]
    new_labels = labels.copy()
    new_dist = dist.copy()
    flag = np.zeros(k, dtype=np.bool_)
    flag[moved] = True
    if m < k and guided(n, m):
        _nearer_moved(points, new_labels, new_dist, flag, centres, moved, axes)
    elif m < k:
        for i in range(n):
            if not flag[labels[i]]:
                for j in moved:
                    d_j = squared_distance(points, i, centres, j, axes)
                    if d_j < new_dist[i]:
                        new_labels[i], new_dist[i] = j, d_j
    mine = np.flatnonzero(flag[labels])
    if guided(mine.shape[0], k):
        nearest, d = nearest_search(points[mine], centres, new_labels[mine], axes)
        new_labels[mine] = nearest
        new_dist[mine] = d
    else:
        for i in mine:
            new_labels[i], new_dist[i] = nearest_of(points, i, centres, axes)
    return new_labels, new_dist


@numba.njit(nogil=True, cache=True)
def _sums_after(labels, new, weights, wp, wpp, mass, sums, squares):  # type: ignore[no-untyped-def]
    # Clusters whose membership ``new`` labels change (ascending), and the per-cluster sums after:
    # each ``total + gained - lost``, gained and lost added point by point from 0.
    k, d = sums.shape
    touched = np.zeros(k, dtype=np.bool_)
    gained_mass, lost_mass = np.zeros(k), np.zeros(k)
    gained_sums, lost_sums = np.zeros((k, d)), np.zeros((k, d))
    gained_squares, lost_squares = np.zeros(k), np.zeros(k)
    for i in range(labels.shape[0]):
        was, now = labels[i], new[i]
        if was != now:
            touched[was] = touched[now] = True
            gained_mass[now] += weights[i]
            lost_mass[was] += weights[i]
            for c in range(d):
                gained_sums[now, c] += wp[i, c]
                lost_sums[was, c] += wp[i, c]
            gained_squares[now] += wpp[i]
            lost_squares[was] += wpp[i]
    return (
        np.flatnonzero(touched),
        mass + gained_mass - lost_mass,
        sums + gained_sums - lost_sums,
        squares + gained_squares - lost_squares,
    )


@numba.njit(nogil=True, cache=True)
def _recentre(points, weights, dist, centres, mass, sums, touched):  # type: ignore[no-untyped-def]
    # Moves each touched cluster (ascending) with points to its mean, in place; the centres of
    # empty ones jump to the points adding most error (the last of a stable ascending sort
    # first), as many as there are points. Returns the clusters whose centre changed, ascending.
    k = centres.shape[0]
    moved = np.zeros(k, dtype=np.bool_)
    empty = np.empty(touched.shape[0], dtype=np.intp)
    n_empty = 0
    for t in touched:
        if mass[t] > 0:
            for c in range(centres.shape[1]):
                mean = sums[t, c] / mass[t]
                moved[t] |= mean != centres[t, c]
                centres[t, c] = mean
        else:
            empty[n_empty] = t
            n_empty += 1
    if n_empty:
        worst = np.argsort(weights * dist, kind="mergesort")[::-1][:n_empty]
        for e in range(worst.shape[0]):
            centres[empty[e]] = points[worst[e]]
            moved[empty[e]] = True
    return np.flatnonzero(moved)


@numba.njit(nogil=True, cache=True)
def _lloyd(  # type: ignore[no-untyped-def]
    points, weights, wp, wpp, centres, labels, dist, mass, sums, squares, touched, max_iter, axes
):
    # Clusters.lloyd on the state's arrays: centres in place, the rest returned after the
    # iteration count.
    for it in range(1, max_iter + 1):
        moved = _recentre(points, weights, dist, centres, mass, sums, touched)
        if not moved.shape[0]:
            return it, labels, dist, mass, sums, squares
        new_labels, dist = _candidates(points, labels, dist, centres, moved, axes)
        touched, mass, sums, squares = _sums_after(
            labels, new_labels, weights, wp, wpp, mass, sums, squares
        )
        labels = new_labels
        if not touched.shape[0]:
            return it, labels, dist, mass, sums, squares
    _recentre(points, weights, dist, centres, mass, sums, touched)
    return max_iter, labels, dist, mass, sums, squares


@numba.njit(nogil=True, cache=True)
def _ranked_moves(mass, sums, squares, centres, axes):  # type: ignore[no-untyped-def]
    # split_merge's choices: each cluster's error and nearest other centre (first of equals),
    # the clusters by Ward's cost of merging them with it (ascending, stable) and by error
    # (descending, stable).
    k = mass.shape[0]
    error = cluster_errors(mass, sums, squares)
    partner = np.empty(k, dtype=np.intp)
    merge_cost = np.empty(k)
    for a in range(k):
        gap, nearest = np.inf, 0
        for b in range(k):
            if b != a:
                d = squared_distance(centres, a, centres, b, axes)
                if d < gap:
                    gap, nearest = d, b
        partner[a] = nearest
        together = mass[a] + mass[nearest]
        merge_cost[a] = mass[a] * mass[nearest] / max(together, 1e-12) * gap
    return (
        error,
        partner,
        np.argsort(merge_cost, kind="mergesort"),
        np.argsort(-error, kind="mergesort"),
    )


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
        with those alone; points of moved centres are compared with every centre. ``moved`` is
        in ascending order; ties go to the lowest index, except that a point keeps its centre when
        a moved one is only as near.
        """
        return _candidates(  # type: ignore[no-any-return]
            self.points, self.labels, self.dist, centres, moved, axes_of(self.points)
        )

    def _sums_after(self, labels: Index) -> tuple[Index, Float, Float, Float]:
        """Clusters whose membership changes under ``labels``, and the per-cluster sums after."""
        return _sums_after(  # type: ignore[no-any-return]
            self.labels,
            labels,
            self.weights,
            self.wp,
            self.wpp,
            self.mass,
            self.sums,
            self.squares,
        )

    def trial_inertia(self, labels: Index) -> float:
        """:meth:`inertia` if the points had ``labels`` (the state is not changed)."""
        return float(cluster_errors(*self._sums_after(labels)[1:]).sum())

    def _adopt(self, labels: Index, dist: Float) -> Index:
        """Take new labels; returns the clusters whose membership changed."""
        touched, self.mass, self.sums, self.squares = self._sums_after(labels)
        self.labels, self.dist = labels, dist
        return touched

    def lloyd(self, max_iter: int, touched: Index | None = None) -> int:
        """Lloyd iterations until no point changes cluster, at most ``max_iter``; returns how many.

        ``touched``: clusters whose membership changed since their centres were last set
        (default: all). Each iteration moves the touched centres to their clusters' means (an
        empty cluster's centre jumps to the point adding most error instead), then takes the
        :meth:`candidates` labels; all in one compiled call.
        """
        if touched is None:
            touched = np.arange(self.k)
        n_iter, self.labels, self.dist, self.mass, self.sums, self.squares = _lloyd(
            self.points,
            self.weights,
            self.wp,
            self.wpp,
            self.centres,
            self.labels,
            self.dist,
            self.mass,
            self.sums,
            self.squares,
            touched,
            max_iter,
            axes_of(self.points),
        )
        return n_iter  # type: ignore[no-any-return]

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
        error, partner, merges, splits = _ranked_moves(
            mass, sums, state.squares, centres, axes_of(centres)
        )
        move = next(
            (
                (i, j)
                for j in merges[:4].tolist()
                for i in splits[:4].tolist()
                # a cluster without error (empty, or one colour) has nothing to split
                if error[i] > 0 and i not in (j, partner[j]) and (i, j) not in rejected
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
