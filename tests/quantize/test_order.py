"""The modified-Zeng palette order against plain-Python oracles written here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.quantize.order import (
    adjacent_pairs,
    colour_chain,
    cooccurrence_order,
    new_labels,
    palette_order,
    reordered,
)


def pairs_oracle(labels, k):
    """Adjacent pairs of different labels, counted one pixel pair at a time."""
    counts = [[0] * k for _ in range(k)]
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            for dy, dx in ((0, 1), (1, 0)):
                if y + dy < height and x + dx < width:
                    a, b = int(labels[y, x]), int(labels[y + dy, x + dx])
                    if a != b:
                        counts[a][b] += 1
                        counts[b][a] += 1
    return np.array(counts)


def zeng_oracle(pairs):
    """The greedy steps of the modified Zeng method, spelled out in plain Python."""
    k = len(pairs)
    if k <= 2:
        return list(range(k))
    sums = [sum(row) for row in pairs]
    first = max(range(k), key=lambda i: (sums[i], -i))
    second = max((i for i in range(k) if i != first), key=lambda i: (pairs[first][i], -i))
    placed = [first, second]
    while len(placed) < k:
        left = [i for i in range(k) if i not in placed]
        label = max(left, key=lambda i: (sum(pairs[i][j] for j in placed), -i))
        # total co-occurrence-weighted distance at either end of the list
        at_front = sum(pairs[label][j] * (pos + 1) for pos, j in enumerate(placed))
        at_back = sum(pairs[label][j] * (len(placed) - pos) for pos, j in enumerate(placed))
        placed = [label, *placed] if at_front < at_back else [*placed, label]
    return placed


def random_labels(seed, k, shape=(23, 31)):
    """Blocky random labels: neighbours often equal, some colours touching more than others."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, k, (shape[0] // 3 + 1, shape[1] // 4 + 1))
    labels = np.repeat(np.repeat(coarse, 3, axis=0), 4, axis=1)[: shape[0], : shape[1]]
    noise = rng.random(shape) < 0.1
    labels[noise] = rng.integers(0, k, np.count_nonzero(noise))
    return labels.astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_pair_counts_match_counting_one_pixel_pair_at_a_time(seed):
    k = 3 + seed
    labels = random_labels(seed, k)
    assert np.array_equal(adjacent_pairs([labels], k), pairs_oracle(labels, k))


@pytest.mark.parametrize("rows", [1, 2, 5, 23, 100])
def test_pairs_counted_band_by_band_include_the_pairs_across_bands(rows):
    labels = random_labels(7, 9)
    bands = [labels[top : top + rows] for top in range(0, len(labels), rows)]
    assert np.array_equal(adjacent_pairs(bands, 9), pairs_oracle(labels, 9))


@pytest.mark.parametrize("seed", range(12))
def test_the_order_is_the_greedy_steps_of_modified_zeng(seed):
    k = 3 + seed % 8
    labels = random_labels(seed, k, (17 + seed, 29))
    pairs = pairs_oracle(labels, k)
    order = cooccurrence_order(pairs)
    assert order.tolist() == zeng_oracle(pairs.tolist())
    assert np.array_equal(palette_order(labels, k), order)


def test_a_chain_of_stripes_is_put_back_in_its_chain_order():
    # stripes 3 4 0 2 1 5: each colour touches only its two neighbours in the chain, the
    # order whose cost (co-occurrence times distance) is smallest of all 720
    chain = [3, 4, 0, 2, 1, 5]
    widths = [5, 4, 6, 3, 7, 2]
    row = np.repeat(chain, widths)
    labels = np.tile(row, (10, 1)).astype(np.uint8)
    pairs = adjacent_pairs([labels], 6)

    def cost(order):
        position = np.argsort(order)
        return sum(pairs[a, b] * abs(position[a] - position[b]) for a in range(6) for b in range(a))

    best = min(cost(list(p)) for p in itertools.permutations(range(6)))
    order = palette_order(labels, 6).tolist()
    assert order in (chain, chain[::-1])
    assert cost(order) == best


@pytest.mark.parametrize("k", [1, 2, 3, 17, 256])
def test_always_a_permutation_and_the_same_twice(k):
    labels = random_labels(k, k, (40, 50)) if k > 1 else np.zeros((4, 5), np.uint8)
    order = palette_order(labels, k)
    assert order.dtype == np.intp
    assert sorted(order.tolist()) == list(range(k))
    assert np.array_equal(palette_order(labels.copy(), k), order)


def test_unused_and_isolated_colours_come_last_in_increasing_order():
    labels = random_labels(3, 4) * 2  # uses 0, 2, 4, 6 of 9
    order = palette_order(labels, 9).tolist()
    assert sorted(order[:4]) == [0, 2, 4, 6]
    assert order[4:] == [1, 3, 5, 7, 8]
    one_colour = np.full((6, 7), 2, dtype=np.uint8)
    assert palette_order(one_colour, 5).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_reordering_keeps_every_pixel_and_the_label_type(dtype):
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (12, 3), dtype=np.uint8)
    labels = random_labels(1, 12).astype(dtype)
    order = palette_order(labels, 12)
    new_palette, labels_now = reordered(palette, labels, order)
    assert labels_now.dtype == dtype
    assert np.array_equal(new_palette[labels_now], palette[labels])
    assert np.array_equal(new_labels(order)[order], np.arange(12))


def test_a_label_beyond_the_palette_is_refused():
    with pytest.raises(IndexError):
        adjacent_pairs([np.array([[0, 1], [3, 1]], dtype=np.uint8)], 3)


def chain_oracle(palette):
    """colour_chain written plainly: darkest first, then the nearest not visited, ties lowest."""
    colours = [tuple(int(v) for v in entry[:3]) for entry in palette]
    current = min(range(len(colours)), key=lambda i: (sum(colours[i]), i))
    order, left = [current], set(range(len(colours))) - {current}
    while left:
        here = colours[current]
        current = min(
            left,
            key=lambda i: (sum((a - b) ** 2 for a, b in zip(colours[i], here, strict=True)), i),
        )
        order.append(current)
        left.remove(current)
    return order


@pytest.mark.parametrize("k", [1, 2, 7, 64, 256])
def test_the_colour_chain_is_the_plain_one(k):
    rng = np.random.default_rng(k)
    palette = rng.integers(0, 256, (k, 3), dtype=np.uint8)
    if k > 2:
        palette[1] = palette[2]  # equal entries and equal distances: ties go to the lowest
    assert colour_chain(palette).tolist() == chain_oracle(palette)


def test_a_gray_ramp_chains_from_dark_to_light():
    levels = np.array([200, 10, 90, 255, 0, 30], dtype=np.uint8)
    palette = np.repeat(levels[:, None], 3, axis=1)
    assert palette[colour_chain(palette), 0].tolist() == sorted(levels.tolist())


def test_stored_palettes_are_in_chain_order_with_exact_labels(tmp_path):
    import imageio.v3 as iio
    import skimage.data

    from pipeline import compress, open_store
    from pipeline.quantize.colours import nearest

    photo = skimage.data.astronaut()[:128, :160]
    iio.imwrite(tmp_path / "a.png", photo)
    (result,) = compress([str(tmp_path / "a.png")], str(tmp_path / "s.zarr"), colors=32)
    assert result.status == "done", result
    image = open_store(str(tmp_path / "s.zarr"))["a.png"]
    assert colour_chain(image.palette).tolist() == list(range(len(image.palette)))
    labels = np.asarray(image.labels[...])
    exact = nearest(photo.reshape(-1, 3), image.palette, space="rgb").reshape(labels.shape)
    assert np.array_equal(labels, exact)
