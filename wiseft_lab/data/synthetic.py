"""A procedurally drawn, seeded image benchmark with one reference style and several shifted styles.

It is the offline stand-in for ImageNet and its distribution shifts: ten simple object classes are drawn
in five styles that are genuinely different image distributions,

* ``photo`` (the reference): a shape filled with a natural-looking texture on a textured, lit, blurred
  and noisy background -- the hardest style, and the one the demo fine-tunes on;
* ``sketch``: thin, jittered, dark pencil strokes (sometimes hatched) on paper, like ImageNet-Sketch;
* ``cartoon``: flat bright fills with thick black outlines, like ImageNet-R's cartoons;
* ``painting``: blotchy brush strokes for both the object and the canvas;
* ``clutter``: a small, rotated, off-centre object among distractor objects, like ObjectNet.

Every image is a pure function of ``(seed, style, split, index)`` (see :func:`sample_rng`), so splits
never overlap, any index can be rendered alone, and the data needs no storage: rendering is pure
PIL/numpy and fast enough to run on the fly.

:func:`caption` writes varied natural captions for contrastive pretraining. It draws the same leading
random attributes as :func:`render`, so a caption made with a generator seeded like the one given to
``render`` describes that very image (colour, size); :data:`TEMPLATES` are the prompts of the zero-shot
head and appear verbatim among those captions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

CLASSNAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "heart", "cross", "arrow", "moon", "hexagon", "lightning bolt",
)
STYLES: tuple[str, ...] = ("photo", "sketch", "cartoon", "painting", "clutter")
REFERENCE_STYLE: str = "photo"
SHIFT_STYLES: tuple[str, ...] = STYLES[1:]
SPLITS: tuple[str, ...] = ("train", "test", "pretrain")
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a sketch of a {}.",
    "a cartoon {}.",
    "a painting of a {}.",
    "a {} among other objects.",
    "a drawing of a {}.",
    "a {}.",
)

# Named colours: the words appear in captions, so the RGB values must look like the word.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 215, 40),
    "green": (50, 160, 60),
    "blue": (40, 80, 210),
    "purple": (130, 50, 170),
    "pink": (240, 120, 180),
    "brown": (120, 75, 40),
    "cyan": (40, 200, 210),
    "gray": (128, 128, 128),
    "black": (25, 25, 25),
    "white": (240, 240, 240),
}
_COLOR_NAMES = tuple(COLORS)
_SKETCH_INKS: dict[str, tuple[int, int, int]] = {
    "pencil": (60, 60, 60), "charcoal": (25, 25, 25), "blue ink": (30, 50, 150), "brown ink": (90, 55, 30),
}


# --------------------------------------------------------------------------------------------- shapes
def _regular(n: int, phase: float = math.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(inner: float) -> np.ndarray:
    outer = _regular(5)
    inner_pts = _regular(5, math.pi / 2 + math.pi / 5) * inner
    return np.stack([outer, inner_pts], axis=1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y + 2.5], axis=1)


def _cross(w: float) -> np.ndarray:
    return np.array([(-w, 1), (w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w),
                     (-1, -w), (-1, w), (-w, w)], dtype=float)


def _arrow(shaft: float, head: float) -> np.ndarray:
    return np.array([(-1, -shaft), (0.15, -shaft), (0.15, -head), (1, 0), (0.15, head), (0.15, shaft),
                     (-1, shaft)], dtype=float)


def _moon(offset: float) -> np.ndarray:
    """A crescent: the outer unit circle's arc minus a circle shifted right by ``offset``."""
    a = math.radians(42)
    ex, ey = math.cos(a), math.sin(a)
    r = math.hypot(ex - offset, ey)
    phi = math.atan2(ey, ex - offset)
    outer_t = np.linspace(a, 2 * math.pi - a, 30)
    inner_t = np.linspace(2 * math.pi - phi, phi, 24)
    outer = np.stack([np.cos(outer_t), np.sin(outer_t)], axis=1)
    inner = np.stack([offset + r * np.cos(inner_t), r * np.sin(inner_t)], axis=1)
    return np.concatenate([outer, inner]) + np.array([0.2, 0.0])


def _lightning() -> np.ndarray:
    return np.array([(-0.15, 1), (0.55, 1), (0.15, 0.25), (0.6, 0.25), (-0.4, -1), (-0.05, -0.1),
                     (-0.5, -0.1)], dtype=float)


def _normalise(points: np.ndarray) -> np.ndarray:
    """Centre on the bounding box and scale so the farthest vertex is at radius 1."""
    points = points - (points.max(0) + points.min(0)) / 2
    return points / np.linalg.norm(points, axis=1).max()


def _outline(class_index: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-radius polygon of a class, with a little per-instance variation of its proportions."""
    name = CLASSNAMES[class_index]
    if name == "circle":
        pts = _regular(40) * np.array([1.0, rng.uniform(0.88, 1.0)])
    elif name == "square":
        pts = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)
        pts = pts * np.array([1.0, rng.uniform(0.85, 1)])
    elif name == "triangle":
        pts = _regular(3) * np.array([rng.uniform(0.85, 1.1), 1.0])
    elif name == "star":
        pts = _star(rng.uniform(0.36, 0.48))
    elif name == "heart":
        pts = _heart()
    elif name == "cross":
        pts = _cross(rng.uniform(0.24, 0.36))
    elif name == "arrow":
        pts = _arrow(rng.uniform(0.16, 0.26), rng.uniform(0.5, 0.7))
    elif name == "moon":
        pts = _moon(rng.uniform(0.4, 0.55))
    elif name == "hexagon":
        pts = _regular(6, 0.0)
    elif name == "lightning bolt":
        pts = _lightning()
    else:  # pragma: no cover - CLASSNAMES and this table are kept in sync
        raise AssertionError(name)
    return _normalise(pts)


def _densify(points: np.ndarray, step: float) -> np.ndarray:
    """Insert vertices every ``step`` pixels so that per-vertex jitter bends edges (hand-drawn look)."""
    delta = np.roll(points, -1, axis=0) - points
    counts = np.maximum(1, (np.linalg.norm(delta, axis=1) / step).astype(int))
    edge = np.repeat(np.arange(len(points)), counts)
    start = np.cumsum(counts) - counts
    frac = (np.arange(counts.sum()) - start[edge]) / counts[edge]
    return points[edge] + delta[edge] * frac[:, None]


# ------------------------------------------------------------------------------------------ textures
def _smooth_noise(rng: np.random.Generator, n: int, cells: int, channels: int = 3) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid upsampled bicubically."""
    grid = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
    mode = "RGB" if channels == 3 else "L"
    img = Image.fromarray(grid if channels == 3 else grid[..., 0], mode).resize((n, n), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr if channels == 3 else arr[..., None]


def _jitter_color(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.normal(0, amount, 3), 0, 255)


def _texture(rng: np.random.Generator, n: int, base: np.ndarray) -> np.ndarray:
    """A natural-looking fill around ``base``: mottled noise, stripes, checks or a gradient."""
    yy, xx = _grid(n)
    other = _jitter_color(tuple(base * rng.uniform(0.45, 0.8)), rng, 20)
    kind = rng.integers(4)
    if kind == 0:
        t = _smooth_noise(rng, n, int(rng.integers(4, 12)), 1)
    elif kind == 1:
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 10) / n
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period
        t = (0.5 + 0.5 * np.sin(phase))[..., None]
    elif kind == 2:
        size = rng.integers(4, 9) / n
        t = (((xx // size) + (yy // size)) % 2)[..., None] * 0.8
    else:
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
    grain = rng.standard_normal((n, n, 1), dtype=np.float32) * 10
    return base * (1 - t) + other * t + grain


@cache
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(yy, xx)`` in [-0.5, 0.5), cached per image size."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n - 0.5
    return yy, xx


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------------------------- attributes
@dataclass(frozen=True)
class _Attributes:
    """The leading random draws shared by :func:`render` and :func:`caption` (so captions match)."""

    color: str
    scale: float
    angle: float
    center: tuple[float, float]
    ink: str


_SCALES: dict[str, tuple[float, float]] = {
    "photo": (0.5, 0.85), "sketch": (0.5, 0.85), "cartoon": (0.5, 0.85), "painting": (0.55, 0.85),
    "clutter": (0.3, 0.45),
}


def _attributes(style: str, rng: np.random.Generator, n: int) -> _Attributes:
    color = _COLOR_NAMES[int(rng.integers(len(_COLOR_NAMES)))]
    lo, hi = _SCALES[style]
    scale = float(rng.uniform(lo, hi))
    angle = float(rng.uniform(-math.pi, math.pi)) if style == "clutter" else float(rng.uniform(-0.6, 0.6))
    radius = scale * n / 2
    margin = radius * 0.85
    cx = float(rng.uniform(margin, n - margin)) if margin < n / 2 else n / 2
    cy = float(rng.uniform(margin, n - margin)) if margin < n / 2 else n / 2
    ink = tuple(_SKETCH_INKS)[int(rng.integers(len(_SKETCH_INKS)))]
    return _Attributes(color, scale, angle, (cx, cy), ink)


def _place(points: np.ndarray, attrs: _Attributes, n: int) -> np.ndarray:
    c, s = math.cos(attrs.angle), math.sin(attrs.angle)
    rot = np.array([[c, -s], [s, c]])
    # image y points down; flip so that shapes (hearts, arrows) are upright at angle 0
    pts = (points * np.array([1.0, -1.0])) @ rot.T * (attrs.scale * n / 2)
    return pts + np.asarray(attrs.center)


def _poly(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points]


def _mask(points: np.ndarray, n: int) -> Image.Image:
    mask = Image.new("L", (n, n), 0)
    ImageDraw.Draw(mask).polygon(_poly(points), fill=255)
    return mask


# ------------------------------------------------------------------------------------------- styles
def _render_photo(pts: np.ndarray, attrs: _Attributes, rng: np.random.Generator, n: int) -> Image.Image:
    # background: layered low-frequency colour noise + soft out-of-focus blobs + grain
    bg_base = rng.uniform(40, 220, 3).astype(np.float32)
    bg = bg_base + (_smooth_noise(rng, n, int(rng.integers(2, 5))) - 0.5) * rng.uniform(60, 160)
    bg = bg + (_smooth_noise(rng, n, int(rng.integers(6, 14))) - 0.5) * rng.uniform(30, 90)
    bg_img = _to_image(bg)
    draw = ImageDraw.Draw(bg_img)
    for _ in range(int(rng.integers(2, 6))):
        x, y = rng.uniform(0, n, 2)
        rx, ry = rng.uniform(3, n / 4, 2)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=tuple(int(v) for v in rng.uniform(20, 235, 3)))
    bg_img = bg_img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.5)))
    obj = _to_image(_texture(rng, n, _jitter_color(COLORS[attrs.color], rng, 25)))
    # a soft cast shadow sells the "photo"
    shadow_pts = pts + rng.uniform(1, 4, 2)
    shadow = _mask(shadow_pts, n).filter(ImageFilter.GaussianBlur(2))
    bg_arr = np.asarray(bg_img, dtype=np.float32)
    bg_arr *= 1 - 0.45 * (np.asarray(shadow, dtype=np.float32)[..., None] / 255)
    img = Image.composite(obj, _to_image(bg_arr), _mask(pts, n))
    # lighting: a linear gradient plus a vignette, then lens blur and sensor noise
    yy, xx = _grid(n)
    ang = rng.uniform(0, 2 * math.pi)
    light = 1 + rng.uniform(0.2, 0.6) * (xx * math.cos(ang) + yy * math.sin(ang))
    light = light - rng.uniform(0.0, 0.8) * (xx**2 + yy**2)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    arr = np.asarray(img, dtype=np.float32) * light[..., None] * rng.uniform(0.75, 1.2)
    arr += rng.standard_normal((n, n, 3), dtype=np.float32) * rng.uniform(3, 12)
    return _to_image(arr)


def _render_sketch(pts: np.ndarray, attrs: _Attributes, rng: np.random.Generator, n: int) -> Image.Image:
    paper = rng.uniform(225, 255) + rng.normal(0, 3, (n, n, 1)) + rng.uniform(-8, 8, 3)
    img = _to_image(np.broadcast_to(paper, (n, n, 3)))
    draw = ImageDraw.Draw(img)
    ink = tuple(int(v) for v in _jitter_color(_SKETCH_INKS[attrs.ink], rng, 15))
    dense = _densify(pts, rng.uniform(3, 6))
    for _ in range(int(rng.integers(1, 3))):
        wobbly = dense + rng.normal(0, rng.uniform(0.3, 1.0), dense.shape)
        draw.line(_poly(np.concatenate([wobbly, wobbly[:2]])), fill=ink, width=int(rng.integers(1, 3)))
    if rng.random() < 0.4:  # hatching, clipped to the shape
        hatch = Image.new("RGB", (n, n), (255, 255, 255))
        hdraw = ImageDraw.Draw(hatch)
        spacing, tilt = rng.uniform(3, 6), rng.uniform(-n / 2, n / 2)
        for x0 in np.arange(-n, 2 * n, spacing):
            hdraw.line([(x0, 0), (x0 + tilt, n)], fill=ink, width=1)
        img = Image.composite(hatch, img, _mask(pts, n).point(lambda v: v * 0.6))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.5)))


def _render_cartoon(pts: np.ndarray, attrs: _Attributes, rng: np.random.Generator, n: int) -> Image.Image:
    bg = tuple(int(v) for v in rng.uniform(150, 255, 3))
    img = Image.new("RGB", (n, n), bg)
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # a flat "ground" band
        horizon = rng.uniform(0.6, 0.85) * n
        draw.rectangle((0, horizon, n, n), fill=tuple(int(v) for v in rng.uniform(100, 220, 3)))
    if rng.random() < 0.5:  # flat drop shadow
        draw.polygon(_poly(pts + rng.uniform(2, 4, 2)), fill=tuple(int(v * 0.6) for v in bg))
    fill = tuple(int(v) for v in _jitter_color(COLORS[attrs.color], rng, 12))
    poly = _poly(pts)
    draw.polygon(poly, fill=fill)
    draw.line(poly + poly[:2], fill=(10, 10, 10), width=int(rng.integers(2, 5)), joint="curve")
    if rng.random() < 0.6:  # specular highlight
        cx, cy = pts.mean(0) + (pts.min(0) - pts.mean(0)) * 0.35
        r = attrs.scale * n * 0.06
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 255))
    return img


def _strokes(rng: np.random.Generator, n: int, base: np.ndarray, count: int, spread: float) -> Image.Image:
    """A canvas of short thick brush strokes in colours around ``base`` (parameters drawn in one go)."""
    cols = np.clip(np.asarray(base, dtype=np.float32) + rng.normal(0, spread, (count + 1, 3)), 0, 255)
    cols = cols.astype(np.uint8).tolist()
    img = Image.new("RGB", (n, n), tuple(cols[0]))
    draw = ImageDraw.Draw(img)
    xy = rng.uniform(-4, n + 4, (count, 2))
    ang = rng.uniform(0, math.pi) + rng.normal(0, 0.5, count)
    length = rng.uniform(5, 16, count)
    d = np.stack([np.cos(ang) * length, np.sin(ang) * length], axis=1)
    ends = np.concatenate([xy - d, xy + d], axis=1).tolist()
    widths = rng.integers(3, 8, count).tolist()
    for end, col, width in zip(ends, cols[1:], widths, strict=True):
        draw.line(end, fill=tuple(col), width=width)
    return img


def _render_painting(pts: np.ndarray, attrs: _Attributes, rng: np.random.Generator, n: int) -> Image.Image:
    obj_base = np.asarray(COLORS[attrs.color], dtype=np.float32)
    bg_base = rng.uniform(40, 230, 3)
    if np.abs(bg_base - obj_base).sum() < 150:  # keep the object visible against the canvas
        bg_base = 255 - bg_base
    bg = _strokes(rng, n, bg_base, 40, 30)
    obj = _strokes(rng, n, obj_base, 30, 25)
    dense = _densify(pts, 4)
    rough = dense + rng.normal(0, 1.0, dense.shape)
    mask = _mask(rough, n).filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.4)))
    img = Image.composite(obj, bg, mask)
    canvas = rng.standard_normal((n, n, 1), dtype=np.float32) * 6
    return _to_image(np.asarray(img.filter(ImageFilter.SMOOTH), dtype=np.float32) + canvas)


def _render_clutter(pts: np.ndarray, attrs: _Attributes, rng: np.random.Generator, n: int) -> Image.Image:
    base = rng.uniform(70, 200, 3).astype(np.float32)
    table = base + (_smooth_noise(rng, n, 3) - 0.5) * 60
    img = _to_image(table)
    draw = ImageDraw.Draw(img)
    target = tuple(int(v) for v in _jitter_color(COLORS[attrs.color], rng, 15))

    def distractor() -> None:
        col = tuple(int(v) for v in rng.uniform(0, 255, 3))
        kind = rng.integers(4)
        x, y = rng.uniform(0, n, 2)
        if kind == 0:  # a stick
            ang, length = rng.uniform(0, math.pi), rng.uniform(8, 26)
            dx, dy = math.cos(ang) * length / 2, math.sin(ang) * length / 2
            draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=col, width=int(rng.integers(2, 4)))
        elif kind == 1:  # an irregular pebble
            k = int(rng.integers(5, 9))
            t = np.sort(rng.uniform(0, 2 * math.pi, k))
            r = rng.uniform(2, 7) * rng.uniform(0.5, 1.3, k)
            draw.polygon(_poly(np.stack([x + r * np.cos(t), y + r * np.sin(t)], axis=1)), fill=col)
        elif kind == 2:  # an elongated bar
            w, h = rng.uniform(12, 24), rng.uniform(2, 5)
            bar = np.array([(-w, -h), (w, -h), (w, h), (-w, h)]) / 2
            a = rng.uniform(0, math.pi)
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            draw.polygon(_poly(bar @ rot.T + np.array([x, y])), fill=col)
        else:  # a scribble
            walk = np.cumsum(rng.normal(0, 3, (6, 2)), axis=0) + np.array([x, y])
            draw.line(_poly(walk), fill=col, width=1)

    for _ in range(int(rng.integers(4, 9))):
        distractor()
    draw.polygon(_poly(pts + 1.5), fill=tuple(int(v * 0.55) for v in base))  # contact shadow
    draw.polygon(_poly(pts), fill=target)
    if rng.random() < 0.5:  # shading on the object
        shade = Image.new("RGB", (n, n), tuple(int(v * 0.7) for v in target))
        half = _mask(pts, n)
        cut = rng.uniform(pts[:, 1].min(), pts[:, 1].max())
        ImageDraw.Draw(half).rectangle((0, 0, n, cut), fill=0)
        img = Image.composite(shade, img, half)
        draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 2))):  # occasional small occluder
        distractor()
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.6)))


_RENDERERS = {
    "photo": _render_photo,
    "sketch": _render_sketch,
    "cartoon": _render_cartoon,
    "painting": _render_painting,
    "clutter": _render_clutter,
}


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; expected one of {STYLES}.")


def _check_class(classname_index: int) -> None:
    if not 0 <= int(classname_index) < len(CLASSNAMES):
        raise ValueError(f"classname_index must be in 0..{len(CLASSNAMES) - 1}, got {classname_index}.")


def render(classname_index: int, style: str, rng: np.random.Generator, image_size: int = 64) -> Image.Image:
    """Draw one RGB image of class ``classname_index`` in ``style``; all randomness comes from ``rng``."""
    _check_class(classname_index)
    _check_style(style)
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}.")
    attrs = _attributes(style, rng, image_size)
    pts = _place(_outline(int(classname_index), rng), attrs, image_size)
    return _RENDERERS[style](pts, attrs, rng, image_size)


# ------------------------------------------------------------------------------------------- captions
_CAPTIONS: dict[str, tuple[str, ...]] = {
    "photo": (
        "a photo of a {}.", "a photo of a {c} {}.", "a photo of the {}", "a close-up photo of a {}.",
        "a {c} {} on a textured background", "a blurry photo of a {s} {}.", "a textured {c} {}",
        "a real {} in a photo", "a {c} {}.", "a {}.",
    ),
    "sketch": (
        "a sketch of a {}.", "a {i} sketch of a {}.", "a drawing of a {}.", "a line drawing of the {}",
        "a rough sketch of a {s} {}", "a {i} drawing of a {}.", "a black and white sketch of a {}",
        "a hand-drawn {}", "a {}.",
    ),
    "cartoon": (
        "a cartoon {}.", "a cartoon of a {c} {}.", "a {c} {} in a cartoon", "a clip art {c} {}",
        "a cartoon drawing of a {}.", "a bright {c} cartoon {}", "a drawing of a {}.", "a {c} {}.", "a {}.",
    ),
    "painting": (
        "a painting of a {}.", "an oil painting of a {c} {}.", "a {c} {} painted with a brush",
        "an artwork of a {}.", "a painting of a {s} {c} {}", "a colourful painting of the {}",
        "a {c} {}.", "a {}.",
    ),
    "clutter": (
        "a {} among other objects.", "a small {c} {} in a cluttered scene", "a photo of a {} among clutter",
        "a {c} {} among other objects.", "a {} lying among sticks and pebbles", "a rotated {c} {}",
        "a {c} {}.", "a {}.",
    ),
}


_PLAIN_CAPTIONS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.", "a {}."),
    "sketch": ("a sketch of a {}.", "a drawing of a {}."),
    "cartoon": ("a cartoon {}.", "a drawing of a {}."),
    "painting": ("a painting of a {}.", "a {}."),
    "clutter": ("a {} among other objects.", "a {}."),
}
PLAIN_CAPTION_RATE = 0.7


def caption(classname_index: int, style: str, rng: np.random.Generator) -> str:
    """A varied natural caption of class ``classname_index`` in ``style`` for contrastive pretraining.

    Given a generator in the same state as the one passed to :func:`render`, the colour and size words
    describe that rendered image (both functions draw the same leading attributes).
    """
    _check_class(classname_index)
    _check_style(style)
    attrs = _attributes(style, rng, 64)
    lo, hi = _SCALES[style]
    third = (hi - lo) / 3
    size = "small" if attrs.scale < lo + third else "large" if attrs.scale > hi - third else ""
    # Mostly the plain prompts of the zero-shot head: colour/size words are true but easy to match, and
    # too many of them make a tiny CLIP spend its capacity on colour instead of on the object's shape.
    plain = rng.random() < PLAIN_CAPTION_RATE
    options = _PLAIN_CAPTIONS[style] if plain else _CAPTIONS[style]
    text = options[int(rng.integers(len(options)))]
    text = text.replace("{c}", attrs.color).replace("{i}", attrs.ink).replace("{s}", size)
    return " ".join(text.format(CLASSNAMES[classname_index]).split())


# -------------------------------------------------------------------------------------------- dataset
def sample_rng(seed: int, style: str, split: str, index: int) -> np.random.Generator:
    """The generator that fully determines sample ``index`` of ``(seed, style, split)``."""
    _check_style(style)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    entropy = [int(seed), STYLES.index(style), SPLITS.index(split), int(index)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


class SyntheticShapes(torch.utils.data.Dataset):
    """``n_per_class`` images per class of one style and split; ``label = index % len(CLASSNAMES)``.

    Images are rendered on access from :func:`sample_rng`, so any index is deterministic on its own and
    the ``train``/``test``/``pretrain`` splits never share an image.
    """

    classnames: tuple[str, ...] = CLASSNAMES

    def __init__(self, style: str, split: str, n_per_class: int, seed: int = 0, image_size: int = 64,
                 transform: Any = None) -> None:
        _check_style(style)
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
        if n_per_class < 1:
            raise ValueError(f"n_per_class must be positive, got {n_per_class}.")
        self.style, self.split, self.n_per_class = style, split, int(n_per_class)
        self.seed, self.image_size, self.transform = int(seed), int(image_size), transform

    def __len__(self) -> int:
        return self.n_per_class * len(CLASSNAMES)

    @property
    def targets(self) -> np.ndarray:
        """All labels without rendering a single image (splits and few-shot sampling read these)."""
        return np.arange(len(self), dtype=np.int64) % len(CLASSNAMES)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        label = index % len(CLASSNAMES)
        img = render(label, self.style, sample_rng(self.seed, self.style, self.split, index), self.image_size)
        return (self.transform(img) if self.transform is not None else img), label

    def __repr__(self) -> str:
        return (f"SyntheticShapes(style={self.style!r}, split={self.split!r}, n={len(self)}, "
                f"seed={self.seed}, image_size={self.image_size})")
