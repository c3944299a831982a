"""The 15 ImageNet-C corruptions: run, keep shape and dtype, change the image, grow with severity."""

import numpy as np
import pytest

from visprune import shapes
from visprune.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corrupt_pil, parse_corruptions

IMAGENET_C = {"gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
              "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
              "jpeg_compression"}


@pytest.fixture(scope="module")
def image():
    # a shapes scene at 112 px and not square, so nothing depends on 224 x 224
    return np.asarray(shapes.make_samples(1, seed=5)[0].image.resize((112, 96)))


def _distortion(image, name, severity):
    # RMS difference, averaged over two seeds so one random draw does not decide
    outs = [corrupt(image, name, severity, seed=s).astype(np.float64) for s in (0, 1)]
    return float(np.mean([np.sqrt(((o - image) ** 2).mean()) for o in outs]))


def test_the_fifteen():
    assert set(CORRUPTIONS) == IMAGENET_C


@pytest.mark.parametrize("name", sorted(IMAGENET_C))
def test_corruption(image, name):
    d = {}
    for s in SEVERITIES:
        out = corrupt(image, name, s, seed=3)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, corrupt(image, name, s, seed=3))  # seeded: reproducible
        d[s] = _distortion(image, name, s)
        assert d[s] > 0.5  # the image changed
    # the reference's severities are not strictly monotone for every image and measure (frost's
    # blend weights, glass_blur's shuffles), but the heaviest level always distorts more than the lightest
    assert d[5] > d[1]
    assert d[4] + d[5] > d[1] + d[2]


def test_strictly_monotone_ones(image):
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur", "zoom_blur",
                 "fog", "brightness", "contrast", "elastic_transform", "pixelate"):
        d = [_distortion(image, name, s) for s in SEVERITIES]
        assert d == sorted(d), (name, d)


def test_pil_and_parsing(image):
    from PIL import Image

    out = corrupt_pil(Image.fromarray(image), "fog", 2, seed=1)
    assert out.size == (112, 96) and out.mode == "RGB"
    assert parse_corruptions(["fog:2", "fog:2", "snow"]) == [("fog", 2)] + [("snow", s) for s in SEVERITIES]
    assert len(parse_corruptions(["all"])) == 75
    with pytest.raises(ValueError, match="unknown corruption"):
        parse_corruptions(["rain:1"])
    with pytest.raises(ValueError, match="1..5"):
        parse_corruptions(["fog:0"])
    with pytest.raises(ValueError, match="uint8"):
        corrupt(image.astype(np.float32), "fog", 1)


def test_filters_match_the_reference_libraries(image):
    """The scipy / scikit-image / OpenCV operations the reference uses, re-implemented here, agree with
    them (run where those libraries are installed; they are not dependencies of visprune)."""
    cv2 = pytest.importorskip("cv2")
    ndimage = pytest.importorskip("scipy.ndimage")
    skcolor = pytest.importorskip("skimage.color")
    skfilters = pytest.importorskip("skimage.filters")
    from visprune.evaluation import imagefilters as c

    x = image / 255.0
    assert np.allclose(c.gaussian_filter(x, 1.5), skfilters.gaussian(x, sigma=1.5, channel_axis=-1), atol=1e-12)
    for radius, alias in ((3, 0.1), (10, 0.5)):
        lin = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
        xx, yy = np.meshgrid(lin, lin)
        disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
        disk = cv2.GaussianBlur(disk / disk.sum(), ksize=(3, 3) if radius <= 8 else (5, 5), sigmaX=alias)
        ref = np.stack([cv2.filter2D(x[..., d], -1, disk) for d in range(3)], -1)
        assert np.allclose(c.filter2d(x, c.disk(radius, alias)), ref, atol=1e-7)
    h, w = x.shape[:2]
    ch, cw = int(np.ceil(h / 1.2)), int(np.ceil(w / 1.2))
    crop = x[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
    assert np.allclose(c.clipped_zoom(x, 1.2), ndimage.zoom(crop, (1.2, 1.2, 1), order=1)[:h, :w], atol=1e-7)
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    dy, dx = rng.normal(0, 3, (h, w)), rng.normal(0, 3, (h, w))
    ref = np.stack([ndimage.map_coordinates(x[..., d], [yy + dy, xx + dx], order=1, mode="reflect")
                    for d in range(3)], -1)
    assert np.allclose(c.bilinear(x, yy + dy, xx + dx, mode="symmetric"), ref, atol=1e-12)
    assert np.allclose(c.rgb2hsv(x), skcolor.rgb2hsv(x), atol=1e-12)
    assert np.allclose(c.hsv2rgb(skcolor.rgb2hsv(x)), x, atol=1e-12)
