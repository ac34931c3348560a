"""Hendrycks & Dietterich's common corruptions (ICLR 2019), natively: numpy, scipy, Pillow, matplotlib only.

The ``imagecorruptions`` package (bethgelab, 1.1.2, the latest release) does not work with this project's
environment: it imports ``pkg_resources`` (gone from setuptools >= 81), its ``fog`` uses ``np.float_`` (removed
in numpy 2) and its ``glass_blur`` / ``gaussian_blur`` pass ``multichannel=`` to scikit-image (removed in 0.19+);
it also needs OpenCV, scikit-image and numba. So the corruptions that need nothing beyond numpy / scipy / Pillow
are ported here from the code that made the releases, hendrycks/robustness ``ImageNet-C/create_c/``
(``make_imagenet_c.py``: ImageNet-C, 224 px; ``make_tinyimagenet_c.py``: Tiny-ImageNet-C, 64 px;
``make_cifar_c.py``: CIFAR-10-C, 32 px), with their parameters per release (:data:`PARAMETERS`).

Faithful, up to the random draws (a seeded ``numpy.random.Generator`` per image instead of the unseeded global
state) and to library interpolation details: 12 of the 15 benchmark corruptions and 3 of the 4 extra ones.
Left out (:data:`UNSUPPORTED`): ``motion_blur`` and ``snow`` (ImageMagick's motion blur through Wand),
``frost`` (needs the release's frost photographs) and ``spatter`` (a chain of OpenCV filters). Sizes that the
original code hard-codes (224 / 64 / 32) are taken from the image, so any size works; square images of the
release's size follow the original exactly.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage

# The benchmark's 15 corruptions (the order of the papers' tables) and the 4 held-out extra ones.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
UNSUPPORTED = {
    "motion_blur": "needs ImageMagick's MotionBlurImage (Wand), which the original calls",
    "snow": "needs ImageMagick's MotionBlurImage (Wand), which the original calls",
    "frost": "needs the frost photographs shipped with the original code",
    "spatter": "is a chain of OpenCV filters (Canny, distance transform, histogram equalisation)",
}

# Per release: {corruption: (parameters of severity 1, ..., severity 5)}, copied from the make_*_c.py files.
# zoom_blur: (start, stop, step) of np.arange; elastic_transform: (alpha, sigma, affine jitter) in pixels.
PARAMETERS: dict[str, dict[str, tuple]] = {
    "imagenet": {  # make_imagenet_c.py
        "gaussian_noise": (.08, .12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (.03, .06, .09, 0.17, 0.27),
        "speckle_noise": (.15, .2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1, 2, 3, 4, 6),
        "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
        "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
        "brightness": (.1, .2, .3, .4, .5),
        "contrast": (0.4, .3, .2, .1, .05),
        "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
        "jpeg_compression": (25, 18, 15, 10, 7),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        # "244 should have been 224, but ultimately nothing is incorrect" (the original's comment)
        "elastic_transform": ((244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
                              (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
                              (244 * 0.12, 244 * 0.01, 244 * 0.02)),
    },
    "tiny_imagenet": {  # make_tinyimagenet_c.py (= make_imagenet_64_c.py)
        "gaussian_noise": (0.04, 0.08, .12, .15, .18),
        "shot_noise": (250, 100, 50, 30, 15),
        "impulse_noise": (.01, .02, .05, .08, .14),
        "speckle_noise": (.15, .2, 0.25, 0.3, 0.35),
        "gaussian_blur": (.5, .75, 1, 1.25, 1.5),
        "glass_blur": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
        "defocus_blur": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
        "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
        "fog": ((.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
        "brightness": (.1, .2, .3, .4, .5),
        "contrast": (.4, .3, .2, .1, 0.05),
        "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
        "jpeg_compression": (65, 58, 50, 40, 25),
        "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
        "elastic_transform": ((64 * 0, 64 * 0, 64 * 0.08), (64 * 0.05, 64 * 0.3, 64 * 0.06),
                              (64 * 0.1, 64 * 0.08, 64 * 0.06), (64 * 0.1, 64 * 0.03, 64 * 0.03),
                              (64 * 0.16, 64 * 0.03, 64 * 0.02)),
    },
    "cifar": {  # make_cifar_c.py
        "gaussian_noise": (0.04, 0.06, .08, .09, .10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (.01, .02, .03, .05, .07),
        "speckle_noise": (.06, .1, .12, .16, .2),
        "gaussian_blur": (.4, .6, 0.7, .8, 1),
        "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
        "fog": ((.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "brightness": (.05, .1, .15, .2, .3),
        "contrast": (.75, .5, .4, .3, 0.15),
        "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "elastic_transform": ((32 * 0, 32 * 0, 32 * 0.08), (32 * 0.05, 32 * 0.2, 32 * 0.07),
                              (32 * 0.08, 32 * 0.06, 32 * 0.06), (32 * 0.1, 32 * 0.04, 32 * 0.05),
                              (32 * 0.1, 32 * 0.03, 32 * 0.03)),
    },
}
RELEASE_SIZE = {"imagenet": 224, "tiny_imagenet": 64, "cifar": 32}
FOG_MAPSIZE = {"imagenet": 256, "tiny_imagenet": 64, "cifar": 32}  # plasma_fractal's mapsize per file
# ImageNet-C and Tiny-ImageNet-C were saved as JPEG (quality 85); CIFAR-10-C as raw uint8 arrays
RELEASE_JPEG_QUALITY = {"imagenet": 85, "tiny_imagenet": 85, "cifar": None}

SUPPORTED = tuple(c for c in CORRUPTIONS + EXTRA_CORRUPTIONS if c not in UNSUPPORTED)


def table_for(height: int, width: int) -> str:
    """The release whose image size is nearest (in ratio) to ``min(height, width)``: its parameters fit best."""
    side = min(height, width)
    return min(RELEASE_SIZE, key=lambda t: abs(math.log(side / RELEASE_SIZE[t])))


# ------------------------------------------------------------------------------------------------ helpers
def skimage_gaussian(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """``skimage.filters.gaussian`` (defaults ``mode='nearest'``, ``truncate=4``): the channel axis is not blurred."""
    sigmas = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return ndimage.gaussian_filter(x, sigma=sigmas, mode=mode, truncate=truncate)


def opencv_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """``cv2.getGaussianKernel(size, sigma)`` for sigma > 0: ``exp(-(i - (size-1)/2)^2 / (2 sigma^2))``, normalised."""
    offsets = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(offsets ** 2) / (2 * sigma ** 2))
    return kernel / kernel.sum()


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """The original's defocus kernel: a normalised disk on a 17x17 grid (larger radii: ``2r+1``), anti-aliased by
    ``cv2.GaussianBlur`` (3x3, or 5x5 for r > 8; OpenCV's default border, reflect-101 = scipy's ``mirror``)."""
    if radius <= 8:
        grid, size = np.arange(-8, 8 + 1), 3
    else:
        grid, size = np.arange(-radius, radius + 1), 5
    xs, ys = np.meshgrid(grid, grid)
    aliased = np.array((xs ** 2 + ys ** 2) <= radius ** 2, dtype=np.float32)
    aliased /= np.sum(aliased)
    kernel = opencv_gaussian_kernel(size, alias_blur)
    for axis in (0, 1):
        aliased = ndimage.correlate1d(aliased, kernel, axis=axis, mode="mirror")
    return aliased


def plasma_fractal(mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """The diamond-square height map of the original's ``fog`` (``mapsize`` a power of two), in [0, 1]."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=0)
        squares += np.roll(squares, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squares)
        centres = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        left = (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1))
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(left)
        top = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(top)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """Zoom into the centre (bilinear) and crop back to the input size (the original's, per axis)."""
    height, width = img.shape[:2]
    crop_h, crop_w = int(np.ceil(height / zoom_factor)), int(np.ceil(width / zoom_factor))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    zoomed = ndimage.zoom(img[top:top + crop_h, left:left + crop_w], (zoom_factor, zoom_factor, 1), order=1)
    trim_top, trim_left = (zoomed.shape[0] - height) // 2, (zoomed.shape[1] - width) // 2
    return zoomed[trim_top:trim_top + height, trim_left:trim_left + width]


def _affine_from_points(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``cv2.getAffineTransform``: the 2x3 matrix taking the three ``source`` (x, y) points to ``target``."""
    design = np.hstack([source.astype(np.float64), np.ones((3, 1))])
    return np.linalg.solve(design, target.astype(np.float64)).T


def _warp_affine_reflect101(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``cv2.warpAffine(image, matrix, size, borderMode=BORDER_REFLECT_101)``, bilinear, via scipy per channel.

    OpenCV maps every output pixel through the inverse of ``matrix``; scipy's ``affine_transform`` takes that inverse
    directly, in (row, column) order. (OpenCV rounds the interpolation weights to 1/32 pixel; scipy does not.)
    """
    linear = np.linalg.inv(matrix[:, :2])
    shift = -linear @ matrix[:, 2]
    rows_cols = np.array([[linear[1, 1], linear[1, 0]], [linear[0, 1], linear[0, 0]]])
    offset = np.array([shift[1], shift[0]])
    channels = [ndimage.affine_transform(image[..., c], rows_cols, offset=offset, order=1, mode="mirror")
                for c in range(image.shape[2])]
    return np.stack(channels, axis=-1)


# --------------------------------------------------------------------------------------------- corruptions
# Each takes the uint8 RGB image [H, W, 3], the severity's parameters and a Generator; returns values in [0, 255].
def gaussian_noise(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    x = img / 255.
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    x = img / 255.
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    """``skimage.util.random_noise(mode='s&p', amount=c)``: each value is replaced with probability c, by 1 or 0."""
    x = img / 255.
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return np.clip(x, 0, 1) * 255


def speckle_noise(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    x = img / 255.
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    return np.clip(skimage_gaussian(img / 255., sigma=c), 0, 1) * 255


def glass_blur(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    """Blur, locally "shuffle" pixels, blur again.

    The original's swap ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` assigns through numpy views, so it copies
    pixel (h', w') onto (h, w) and leaves (h', w') as it was; that is what the released images show and what
    is done here, in the original's order (rows and columns from the far end, ``max_delta`` from the border).
    """
    sigma, max_delta, iterations = c
    x = np.uint8(skimage_gaussian(img / 255., sigma=sigma) * 255)
    height, width = x.shape[:2]
    rows, cols = range(height - max_delta, max_delta, -1), range(width - max_delta, max_delta, -1)
    pixels = x.reshape(height * width, -1).tolist()
    for _ in range(iterations):
        offsets = iter(rng.integers(-max_delta, max_delta, size=(len(rows) * len(cols), 2)).tolist())
        for h in rows:
            for w in cols:
                dx, dy = next(offsets)
                pixels[h * width + w] = pixels[(h + dy) * width + (w + dx)]
    x = np.asarray(pixels, dtype=np.uint8).reshape(x.shape)
    return np.clip(skimage_gaussian(x / 255., sigma=sigma), 0, 1) * 255


def defocus_blur(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    x = img / 255.
    kernel = disk(radius=c[0], alias_blur=c[1]).astype(np.float64)
    channels = [ndimage.correlate(x[:, :, d], kernel, mode="mirror") for d in range(3)]  # cv2.filter2D
    return np.clip(np.stack(channels, axis=-1), 0, 1) * 255


def zoom_blur(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    x = (img / 255.).astype(np.float32)
    factors = np.arange(*c)
    out = np.zeros_like(x)
    for zoom_factor in factors:
        out += clipped_zoom(x, zoom_factor)
    x = (x + out) / (len(factors) + 1)
    return np.clip(x, 0, 1) * 255


def _fog(mapsize: int):
    def fog(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
        x = img / 255.
        max_val = x.max()
        height, width = x.shape[:2]
        size = max(mapsize, 1 << (max(height, width) - 1).bit_length())
        x += c[0] * plasma_fractal(size, c[1], rng)[:height, :width][..., np.newaxis]
        return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255
    return fog


def brightness(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    x = rgb_to_hsv(img / 255.)  # = skimage.color.rgb2hsv
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(hsv_to_rgb(x), 0, 1) * 255


def contrast(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    x = img / 255.
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def saturate(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    x = rgb_to_hsv(img / 255.)
    x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(hsv_to_rgb(x), 0, 1) * 255


def jpeg_compression(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    return _jpeg(img, quality=c)


def pixelate(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    height, width = img.shape[:2]
    small = Image.fromarray(img).resize((int(width * c), int(height * c)), Image.BOX)
    return np.asarray(small.resize((width, height), Image.BOX))


def elastic_transform(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    alpha, sigma, jitter = c
    image = np.array(img, dtype=np.float32) / 255.
    shape = image.shape
    centre = np.float32(shape[:2]) // 2
    square = min(shape[:2]) // 3
    source = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    target = source + rng.uniform(-jitter, jitter, size=source.shape).astype(np.float32)
    image = _warp_affine_reflect101(image, _affine_from_points(source, target))
    dx = (skimage_gaussian(rng.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3) * alpha)
    dy = (skimage_gaussian(rng.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3) * alpha)
    dx, dy = dx.astype(np.float32)[..., np.newaxis], dy.astype(np.float32)[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    coordinates = np.stack([(y + dy).reshape(-1), (x + dx).reshape(-1), z.reshape(-1)])
    warped = ndimage.map_coordinates(image, coordinates, order=1, mode="reflect").reshape(shape)
    return np.clip(warped, 0, 1) * 255


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


Op = Callable[[np.ndarray, object, np.random.Generator], np.ndarray]
_OPS: dict[str, Op] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise, "gaussian_blur": gaussian_blur, "glass_blur": glass_blur,
    "defocus_blur": defocus_blur, "zoom_blur": zoom_blur, "brightness": brightness, "contrast": contrast,
    "saturate": saturate, "jpeg_compression": jpeg_compression, "pixelate": pixelate,
    "elastic_transform": elastic_transform,
}


def check_corruption(corruption: str, severity: int) -> None:
    """A clear error for unknown or unsupported names and severities outside 1..5."""
    if corruption in UNSUPPORTED:
        raise ValueError(f"{corruption} cannot be generated here: it {UNSUPPORTED[corruption]}. Use the released "
                         f"files (imagenet_c / cifar10_c) for it; supported on the fly: {', '.join(SUPPORTED)}")
    if corruption not in SUPPORTED:
        raise ValueError(f"Unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS + EXTRA_CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5, not {severity!r}")


def corrupt_array(image: np.ndarray, corruption: str, severity: int, rng: np.random.Generator, *,
                  table: str | None = None, release_encoding: bool = True) -> np.ndarray:
    """``corruption`` at ``severity`` of a uint8 RGB image ``[H, W, 3]``, as uint8 (the original's ``np.uint8``:
    truncation). ``table``: the release whose parameters to use (default: :func:`table_for` the image's size).
    ``release_encoding``: then store it as that release did (JPEG quality 85 for ImageNet-C / Tiny-ImageNet-C).
    """
    check_corruption(corruption, severity)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    table = table or table_for(*image.shape[:2])
    if table not in PARAMETERS:
        raise ValueError(f"Unknown corruption table {table!r}; known: {sorted(PARAMETERS)}")
    op = _fog(FOG_MAPSIZE[table]) if corruption == "fog" else _OPS[corruption]
    out = np.uint8(op(np.ascontiguousarray(image), PARAMETERS[table][corruption][severity - 1], rng))
    quality = RELEASE_JPEG_QUALITY[table]
    return _jpeg(out, quality) if release_encoding and quality else out
