"""tfzoo.data.fractals: FractalDB-style iterated function systems, rendered with NumPy."""
import numpy as np
import pytest

from tfzoo.data import fractals


@pytest.mark.parametrize("sigma_factor", [False, True])
def test_sample_ifs_shapes_probabilities_and_ranges(sigma_factor):
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b, p = fractals.sample_ifs(rng, sigma_factor=sigma_factor)
        n = len(p)
        assert fractals.MIN_MAPS <= n <= fractals.MAX_MAPS
        assert a.shape == (n, 2, 2) and b.shape == (n, 2)
        assert p.sum() == pytest.approx(1.0) and (p >= 0).all()
        np.testing.assert_allclose(p, np.abs(np.linalg.det(a)) / np.abs(np.linalg.det(a)).sum())
        assert (np.abs(b) <= 1).all()
        if sigma_factor:
            s = np.linalg.svd(a, compute_uv=False)  # [n, 2], descending
            assert (s <= 1 + 1e-9).all()  # every map contracts
            total = float(np.sum(s[:, 0] + 2 * s[:, 1]))
            assert 0.5 * (5 + n) - 1e-6 <= total <= 0.5 * (6 + n) + 1e-6
        else:
            assert (np.abs(a) <= 1).all()


def test_chaos_game_stays_on_the_attractor_of_a_known_system():
    """Sierpinski's triangle: three maps x -> x / 2 + v / 2 for the corners v."""
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
    ifs = (np.stack([np.eye(2) / 2] * 3), corners / 2, np.full(3, 1 / 3))
    points = fractals.chaos_game(ifs, np.random.default_rng(1), points=3000, chains=100)
    assert points.shape == (3000, 2)
    # Inside the triangle, and never in the middle hole (the triangle of the edge midpoints).
    assert (points[:, 1] >= -1e-9).all() and (points[:, 1] <= 2 * points[:, 0] + 1e-9).all()
    assert (points[:, 1] <= 2 * (1 - points[:, 0]) + 1e-9).all()
    x, y = points[:, 0], points[:, 1]
    hole = (y < 0.5 - 1e-6) & (y > 1 - 2 * x + 1e-6) & (y > 2 * x - 1 + 1e-6)
    assert not hole.any()
    # Sierpinski's triangle covers about (3/4)^k of a 2^k grid's triangle: filled well under half.
    assert 0.05 < fractals.filling_rate(points) < 0.5


def test_filling_rate_rejects_degenerate_systems():
    line = (np.array([[[0.5, 0.0], [0.0, 0.0]], [[0.5, 0.0], [0.0, 0.0]]]), np.array([[0.0, 0.0], [0.5, 0.0]]),
            np.array([0.5, 0.5]))
    points = fractals.chaos_game(line, np.random.default_rng(0), points=2000, chains=50)
    assert fractals.filling_rate(points) < fractals.MIN_FILLING  # a segment fills one row
    categories = fractals.make_categories(6, seed=3)
    rng = np.random.default_rng(0)
    assert all(fractals.filling_rate(fractals.chaos_game(c, rng, points=5000, chains=250)) >= 0.15
               for c in categories)


def test_categories_and_instances_are_reproducible():
    first, again = fractals.make_categories(4, seed=7), fractals.make_categories(4, seed=7)
    for x, y in zip(first, again):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    mask = fractals.render_instance(first[0], np.random.default_rng(5), 64)
    np.testing.assert_array_equal(mask, fractals.render_instance(first[0], np.random.default_rng(5), 64))
    assert mask.shape == (64, 64) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert 0.01 < (mask > 0).mean() < 0.9
    image = fractals.colourize(mask, np.random.default_rng(6))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    inside, outside = image[mask > 0].mean(axis=0), image[mask == 0].mean(axis=0)
    luminance = np.array([0.299, 0.587, 0.114])
    assert abs(float(inside @ luminance - outside @ luminance)) > 15  # the fractal stands out
