"""The image filters of scipy, scikit-image and OpenCV that the ImageNet-C reference code calls,
re-implemented in numpy so that :mod:`.corruptions` needs neither (tests compare them with the
originals where those libraries are installed).
"""

from __future__ import annotations

import math

import numpy as np


def gauss_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def conv1d(x: np.ndarray, k: np.ndarray, axis: int, mode: str) -> np.ndarray:
    r = len(k) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode=mode)
    out = np.zeros_like(x, dtype=np.float64)
    n = x.shape[axis]
    for i, w in enumerate(k):
        out += w * np.take(xp, np.arange(i, i + n), axis=axis)
    return out


def gaussian_filter(x: np.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0) -> np.ndarray:
    """skimage ``gaussian`` over the two spatial axes (``edge`` = its default ``nearest``)."""
    k = gauss_kernel(sigma, truncate)
    return conv1d(conv1d(x.astype(np.float64), k, 0, mode), k, 1, mode)


def filter2d(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """OpenCV ``filter2D`` (correlation, BORDER_REFLECT_101) of every channel."""
    kh, kw = kernel.shape
    pad = ((kh // 2, kh // 2), (kw // 2, kw // 2)) + ((0, 0),) * (x.ndim - 2)
    xp = np.pad(x, pad, mode="reflect")
    out = np.zeros_like(x, dtype=np.float64)
    h, w = x.shape[:2]
    for i in range(kh):
        for j in range(kw):
            if kernel[i, j]:
                out += kernel[i, j] * xp[i : i + h, j : j + w]
    return out


def bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, mode: str = "edge") -> np.ndarray:
    """``img`` (H x W [x C]) sampled at float coordinates, order 1 (``edge`` or ``symmetric`` outside)."""
    h, w = img.shape[:2]

    def fold(v, n):
        if mode == "edge":
            return np.clip(v, 0, n - 1)
        period = 2 * n  # scipy 'reflect' == numpy 'symmetric': ... 1 0 | 0 1 2 ... n-1 | n-1 ...
        v = np.mod(v, period)
        return np.where(v >= n, period - 1 - v, v)

    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    fy, fx = ys - y0, xs - x0
    if img.ndim == 3:
        fy, fx = fy[..., None], fx[..., None]
    y0f, y1f, x0f, x1f = fold(y0, h), fold(y0 + 1, h), fold(x0, w), fold(x0 + 1, w)
    top = img[y0f, x0f] * (1 - fx) + img[y0f, x1f] * fx
    bottom = img[y1f, x0f] * (1 - fx) + img[y1f, x1f] * fx
    return top * (1 - fy) + bottom * fy


def zoom(img: np.ndarray, factor: float) -> np.ndarray:
    """scipy ``zoom(img, (factor, factor, 1), order=1)`` (corner-aligned grid)."""
    h, w = img.shape[:2]
    oh, ow = int(round(h * factor)), int(round(w * factor))
    ys = np.arange(oh) * ((h - 1) / (oh - 1) if oh > 1 else 0.0)
    xs = np.arange(ow) * ((w - 1) / (ow - 1) if ow > 1 else 0.0)
    return bilinear(img, ys[:, None] + 0 * xs[None, :], xs[None, :] + 0 * ys[:, None])


def clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """Zoom into the centre; like imagecorruptions 1.1.2, the caller keeps the top-left ``H x W``."""
    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / zoom_factor)), int(np.ceil(w / zoom_factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    return zoom(img[top : top + ch, left : left + cw], zoom_factor)[:h, :w]


def shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The reference's ``shift``: roll, then repeat the edge row / column into the vacated part."""
    if dx < 0:
        shifted = np.roll(image, shift=image.shape[1] + dx, axis=1)
        shifted[:, dx:] = shifted[:, dx - 1 : dx]
    elif dx > 0:
        shifted = np.roll(image, shift=dx, axis=1)
        shifted[:, :dx] = shifted[:, dx : dx + 1]
    else:
        shifted = image
    if dy < 0:
        shifted = np.roll(shifted, shift=image.shape[0] + dy, axis=0)
        shifted[dy:, :] = shifted[dy - 1 : dy, :]
    elif dy > 0:
        shifted = np.roll(shifted, shift=dy, axis=0)
        shifted[:dy, :] = shifted[dy : dy + 1, :]
    return shifted


def motion_blur_layer(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    width = radius * 2 + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    kernel /= kernel.sum()  # getMotionBlurKernel
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(*point)
    blurred = np.zeros_like(x, dtype=np.float64)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break  # the simulated motion left the image
        blurred = blurred + kernel[i] * shift(x, dx, dy)
    return blurred


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """skimage ``rgb2hsv`` for floats in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(v > 0, delta / v, 0.0)
        rc, gc, bc = [np.where(delta > 0, (v - c) / delta, 0.0) for c in (r, g, b)]
    h = np.where(r == v, bc - gc, np.where(g == v, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, v], -1)


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hsv.shape, dtype=np.float64)
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        out[m] = np.stack([r[m], g[m], b[m]], -1)
    return out


def rgb2gray(x: np.ndarray) -> np.ndarray:
    """OpenCV ``COLOR_RGB2GRAY`` weights."""
    return x @ np.array([0.299, 0.587, 0.114])


def plasma_fractal(rng: np.random.Generator, mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """Diamond-square height map in [0, 1] (the reference's ``plasma_fractal``)."""
    assert mapsize & (mapsize - 1) == 0
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2 : mapsize : stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def next_pow2(n: int) -> int:
    return 1 << (int(n) - 1).bit_length()


def disk(radius: int, alias_blur: float) -> np.ndarray:
    if radius <= 8:
        coords, ksize = np.arange(-8, 8 + 1), 3
    else:
        coords, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(coords, coords)
    aliased = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float64)
    aliased /= aliased.sum()
    # cv2.GaussianBlur(aliased, (ksize, ksize), sigmaX=alias_blur): a ksize-tap kernel, reflect-101.
    t = np.arange(ksize) - ksize // 2
    k = np.exp(-(t**2) / (2 * alias_blur**2))
    k /= k.sum()
    return conv1d(conv1d(aliased, k, 0, "reflect"), k, 1, "reflect")
