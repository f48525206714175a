"""Formula-driven images for pretraining without a download (FractalDB, Kataoka et al. 2020).

"Pre-training without Natural Images" (ACCV 2020) pretrains a CNN to classify fractals, each
category one *iterated function system* (IFS): ``N`` affine maps ``w_i(x) = A_i x + b_i``
of the plane, ``N`` drawn from 2..8 and every one of the six parameters per map uniformly
from [-1, 1], each map picked with probability proportional to ``|det A_i|``. Many such
systems draw diffuse clouds; Anderson and Farrell (WACV 2022) sample the maps by their
singular values instead (the *sigma factor*), which gives structured shapes: the default
here (:func:`sample_ifs`). The
fractal is the attractor of the *chaos game* (start anywhere, apply a random map, repeat).
Degenerate systems (a few dots, a line) are rejected by their *filling rate*: the share
of pixels the attractor covers, at least 0.2 in the paper (:data:`MIN_FILLING`). Instances
of a category vary by one parameter weighted by 0.8..1.2 and by a flip; they are what the
network must recognize as the same category.

This module renders such categories with NumPy (no TensorFlow):

- :func:`sample_ifs`, :func:`chaos_game`, :func:`rasterize`, :func:`filling_rate`;
- :func:`make_categories`: ``count`` accepted systems from one seed;
- :func:`render_instance`: one ``size x size`` uint8 mask of a category, with the
  intra-category variation above plus a random rotation, scale and position;
- :func:`colourize`: a mask as an RGB image, the fractal in a random colour with noise on a
  random 1/f texture (so colour and background carry no category information).

``tfzoo.pretrain`` trains the backbones on them.
"""
from __future__ import annotations

import math

import numpy as np

#: Affine maps per system (inclusive), as in the paper.
MIN_MAPS, MAX_MAPS = 2, 8
#: The paper's threshold on the filling rate.
MIN_FILLING = 0.2
#: Grid on which the filling rate is measured.
FILLING_GRID = 64
#: Intra-category weights of one parameter (the paper's 0.8, 0.9, 1.0, 1.1, 1.2).
WEIGHTS = (0.8, 0.9, 1.0, 1.1, 1.2)


def sample_ifs(rng, maps=None, sigma_factor=True):
    """``(A [N, 2, 2], b [N, 2], p [N])`` of a random system, each map picked with
    probability ``p`` proportional to ``|det A|``.

    ``sigma_factor=False``: every parameter uniform in [-1, 1] (Kataoka et al. 2020).
    ``True`` (default): each ``A = R(theta) diag(s1, d * s2) R(phi)`` with singular values
    ``1 >= s1 >= s2 >= 0``, ``d = +-1``, drawn until ``sum(s1 + 2 * s2)`` lies in
    ``[(5 + N) / 2, (6 + N) / 2]`` (Anderson and Farrell 2022, "Improving Fractal
    Pre-training"): contractive systems of structured shapes rather than point clouds.
    Translations are uniform in [-1, 1] either way."""
    n = int(rng.integers(MIN_MAPS, MAX_MAPS + 1)) if maps is None else int(maps)
    if not sigma_factor:
        params = rng.uniform(-1.0, 1.0, size=(n, 6))
        a = params[:, :4].reshape(n, 2, 2)
        b = params[:, 4:]
    else:
        low, high = 0.5 * (5 + n), 0.5 * (6 + n)
        for _ in range(10000):
            s1 = rng.uniform(0.0, 1.0, size=n)
            s2 = s1 * rng.uniform(0.0, 1.0, size=n)
            if low <= float(np.sum(s1 + 2 * s2)) <= high:
                break
        theta, phi = rng.uniform(0, 2 * math.pi, size=(2, n))
        d = rng.choice([-1.0, 1.0], size=n)

        def rotation(t):
            return np.stack([np.stack([np.cos(t), -np.sin(t)], -1), np.stack([np.sin(t), np.cos(t)], -1)], -2)

        a = rotation(theta) @ (np.eye(2)[None] * np.stack([s1, d * s2], -1)[:, None, :]) @ rotation(phi)
        b = rng.uniform(-1.0, 1.0, size=(n, 2))
    det = np.abs(np.linalg.det(a))
    p = det / det.sum() if det.sum() > 0 else np.full(n, 1.0 / n)
    return a, b, p


def chaos_game(ifs, rng, points=20000, chains=500, burn_in=20):
    """``[points, 2]`` attractor points of ``ifs``: ``chains`` chaos games in parallel, each
    dropping its first ``burn_in`` points. Points that diverge (a map that expands) are
    dropped, so fewer than ``points`` may come back."""
    a, b, p = ifs
    steps = burn_in + int(math.ceil(points / chains))
    x = rng.uniform(-1.0, 1.0, size=(chains, 2))
    choices = rng.choice(len(p), size=(steps, chains), p=p)
    out = []
    for step in range(steps):
        k = choices[step]
        x = np.einsum("cij,cj->ci", a[k], x) + b[k]
        if step >= burn_in:
            out.append(x.copy())
    pts = np.concatenate(out)[:points]
    return pts[np.all(np.isfinite(pts), axis=1) & np.all(np.abs(pts) < 1e6, axis=1)]


def rasterize(points, size, margin=0.0):
    """A ``size x size`` bool image of ``points`` scaled to fill it (keeping the aspect ratio,
    centred, ``margin`` of the side left free on each side)."""
    image = np.zeros((size, size), bool)
    if len(points) < 2:
        return image
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = float((hi - lo).max())
    if not extent > 0:
        return image
    usable = size * (1.0 - 2.0 * margin)
    scaled = (points - (lo + hi) / 2.0) / extent * (usable - 1) + (size - 1) / 2.0
    ij = np.clip(np.round(scaled).astype(np.int64), 0, size - 1)
    image[ij[:, 1], ij[:, 0]] = True
    return image


def filling_rate(points, grid=FILLING_GRID):
    """Share of a ``grid x grid`` raster the attractor covers (the paper's filter)."""
    return float(rasterize(points, grid).mean())


def make_categories(count, seed=0, min_filling=MIN_FILLING, max_tries=None):
    """``count`` systems whose attractors pass the filling-rate filter, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    categories = []
    tries = 0
    limit = max_tries or 200 * count
    while len(categories) < count:
        tries += 1
        if tries > limit:
            raise RuntimeError(f"only {len(categories)} of {count} systems passed the filling rate "
                               f"{min_filling} in {limit} tries")
        ifs = sample_ifs(rng)
        if filling_rate(chaos_game(ifs, rng, points=5000, chains=250)) >= min_filling:
            categories.append(ifs)
    return categories


def render_instance(ifs, rng, size, points=None):
    """One ``size x size`` uint8 mask (0/255) of category ``ifs``: one parameter of one map
    weighted by one of :data:`WEIGHTS`, a horizontal flip half the time, a rotation, and the
    fractal scaled to 40-95 % of the side at a random position; rendered with small 2x2
    patches (the paper's patch rendering) where the side is large."""
    a, b, p = (np.array(v, copy=True) for v in ifs)
    which, param = int(rng.integers(len(p))), int(rng.integers(6))
    weight = WEIGHTS[int(rng.integers(len(WEIGHTS)))]
    if param < 4:
        a[which].flat[param] *= weight
    else:
        b[which, param - 4] *= weight
    det = np.abs(np.linalg.det(a))
    p = det / det.sum() if det.sum() > 0 else np.full(len(p), 1.0 / len(p))
    pts = chaos_game((a, b, p), rng, points=points or max(3000, size * size // 2))
    angle = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = pts @ rot.T
    if rng.random() < 0.5:
        pts[:, 0] = -pts[:, 0]
    side = int(round(size * rng.uniform(0.4, 0.95)))
    inner = rasterize(pts, side)
    if side >= 48:  # patch rendering: thicker points on larger renders
        inner = inner | np.roll(inner, 1, axis=0) | np.roll(inner, 1, axis=1)
    mask = np.zeros((size, size), np.uint8)
    y, x = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    mask[y:y + side, x:x + side] = inner.astype(np.uint8) * 255
    return mask


def noise_1f(rng, height, width, beta):
    """Gaussian noise ``[height, width]`` with a 1/f**beta amplitude spectrum (natural
    images have beta near 1), scaled to zero mean and unit standard deviation."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** beta
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(height, width))
    return (field - field.mean()) / (field.std() + 1e-8)


def colourize(mask, rng):
    """``mask`` (uint8 ``[S, S]``) as an RGB uint8 image: the fractal in a random colour with
    noise over a random coloured 1/f texture, the two at least 40 luminance levels apart."""
    size = mask.shape[0]
    base = rng.uniform(30, 225, size=3)
    texture = np.stack([noise_1f(rng, size, size, rng.uniform(1.0, 2.0)) for _ in range(3)], axis=-1)
    background = base + texture * rng.uniform(5, 40)
    lum = lambda c: float(np.dot(c, (0.299, 0.587, 0.114)))  # noqa: E731
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        if abs(lum(colour) - lum(base)) >= 40:
            break
    foreground = colour + rng.normal(0, rng.uniform(2, 20), size=(size, size, 3))
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    image = background * (1 - alpha) + foreground * alpha
    return np.clip(image, 0, 255).astype(np.uint8)
