"""Weight-space geometry of fine-tuning: the plane through three models and the angles between fine-tuning deltas.

* :class:`Plane` (model soups, Wortsman et al. 2022, Fig. 2; construction of Garipov et al. 2018,
  timgaripov/dnn-mode-connectivity ``plane.py``): with ``d1 = theta_1 - theta_0`` and ``d2 = theta_2 - theta_0``,
  ``u = d1 / |d1|`` and ``v`` is ``d2`` minus its projection on ``u``, normalised. The point ``(x, y)`` of the plane
  is ``theta_0 + x u + y v``; the three models sit at ``(0, 0)``, ``(|d1|, 0)`` and ``(<d2, u>, |v_raw|)``.
  Garipov's script flattens the network's parameters (and recomputes BatchNorm statistics at every point); here the
  plane spans every floating state-dict entry (floating buffers included, as WiSE-FT's interpolation mixes them)
  except ``exclude``; integer and bool buffers, and excluded entries, are ``theta_0``'s at every point.
* :func:`pairwise_angles` / :func:`angle_between_deltas` (model soups Fig. 3): the angle between
  ``theta_a - theta_0`` and ``theta_b - theta_0``, each flattened over all floating entries (minus ``exclude``)
  into one vector. Which entries the paper flattens (e.g. whether the head is included) is not stated in the
  official repository; the default includes everything floating.

Checkpoints are streamed one tensor at a time; a :class:`Plane` keeps its two directions (two models in float32
or wider) and re-reads ``theta_0`` for every point.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from wiseft_lab.weight_space.deltas import degrees, delta_gram, floating_keys, iter_aligned
from wiseft_lab.weight_space.ingredients import Source, StateDict, check_pool, iter_tensors

# |v_raw| below this fraction of |d2| means theta_2 is on the line through theta_0 and theta_1 (to fp32 precision).
COLLINEAR_TOLERANCE = 1e-6


@dataclass
class Plane:
    origin: Source
    u: StateDict                          # unit direction towards theta_1, per spanned key
    v: StateDict                          # unit direction orthogonal to u, in the plane of theta_2
    coordinates: list[tuple[float, float]]  # of theta_0, theta_1, theta_2

    @classmethod
    def through(cls, theta_0: Source, theta_1: Source, theta_2: Source, *, exclude: Collection[str] = (),
                names: Sequence[str] = ("theta_0", "theta_1", "theta_2")) -> Plane:
        """The plane through three models sharing keys and shapes (theta_0: the origin, e.g. the zero-shot model)."""
        specs = check_pool([theta_0, theta_1, theta_2], names)
        spanned = floating_keys(specs, exclude)
        d1: StateDict = {}
        d2: StateDict = {}
        norm1 = dot12 = 0.0
        for key, (t0, t1, t2) in iter_aligned([theta_0, theta_1, theta_2], spanned):
            compute = torch.promote_types(t0.dtype, torch.float32)
            d1[key] = t1.to(compute) - t0.to(compute)
            d2[key] = t2.to(compute) - t0.to(compute)
            norm1 += float(d1[key].double().square().sum())
            dot12 += float((d1[key].double() * d2[key].double()).sum())
        length = math.sqrt(norm1)
        if length == 0.0:
            raise ValueError(f"{names[1]} equals {names[0]} on every spanned entry: the three models span no plane.")
        x2 = dot12 / length
        norm_v = norm2 = 0.0
        for key in spanned:  # in place: d1 becomes u, d2 becomes v_raw
            d1[key].div_(length)
            norm2 += float(d2[key].double().square().sum())
            d2[key].sub_(d1[key], alpha=x2)
            norm_v += float(d2[key].double().square().sum())
        y2 = math.sqrt(norm_v)
        if y2 <= COLLINEAR_TOLERANCE * math.sqrt(norm2):
            raise ValueError(f"{names[2]} lies on the line through {names[0]} and {names[1]}: no plane to span.")
        for key in spanned:
            d2[key].div_(y2)
        return cls(theta_0, d1, d2, [(0.0, 0.0), (length, 0.0), (x2, y2)])

    def point_state(self, x: float, y: float) -> StateDict:
        """``theta_0 + x u + y v`` on the spanned entries (theta_0's dtypes); ``theta_0`` elsewhere."""
        state: StateDict = {}
        for key, t0 in iter_tensors(self.origin):
            if key in self.u:
                point = t0.to(self.u[key].dtype) + self.u[key] * float(x) + self.v[key] * float(y)
                state[key] = point.to(t0.dtype)
            else:
                state[key] = t0.clone()
        return state

    def project(self, state: Source) -> tuple[float, float]:
        """Coordinates of ``state``'s orthogonal projection on the plane: ``(<s - theta_0, u>, <s - theta_0, v>)``."""
        keys = list(self.u)
        x = y = 0.0
        for key, (t0, t) in iter_aligned([self.origin, state], keys):
            delta = t.double() - t0.double()
            x += float((delta * self.u[key].double()).sum())
            y += float((delta * self.v[key].double()).sum())
        return x, y

    def grid(self, resolution: int = 21, margin: float = 0.2) -> tuple[list[float], list[float]]:
        """``resolution`` evenly spaced x and y values over the three models' bounding box, widened on each side by
        ``margin`` times its extent (Garipov's defaults: 21 points, margin 0.2; when theta_2's x lies between the
        other two this is exactly his grid). The grid's points are all pairs ``(x, y)``."""
        if resolution < 2:
            raise ValueError(f"A grid needs at least 2 points per axis, got {resolution}")
        xs, ys = zip(*self.coordinates, strict=True)
        return _span(min(xs), max(xs), resolution, margin), _span(min(ys), max(ys), resolution, margin)


def _span(low: float, high: float, points: int, margin: float) -> list[float]:
    pad = margin * (high - low)
    low, high = low - pad, high + pad
    return [low + (high - low) * i / (points - 1) for i in range(points)]


def pairwise_angles(theta_0: Source, pool: Sequence[Source], *, exclude: Collection[str] = (),
                    names: Sequence[str] | None = None) -> list[list[float]]:
    """Degrees between every pair of deltas ``pool[i] - theta_0`` (a symmetric matrix, zeros on the diagonal).

    One pass over the models: the Gram matrix of the deltas is accumulated entry by entry in float64.
    """
    sources = [theta_0, *pool]
    specs = check_pool(sources, None if names is None else ["theta_0", *names])
    gram = torch.zeros(len(pool), len(pool), dtype=torch.float64)
    for _, (t0, *tensors) in iter_aligned(sources, floating_keys(specs, exclude)):
        gram += delta_gram(t0, tensors)
    norms = gram.diagonal().sqrt()
    zero = [i for i in range(len(pool)) if norms[i] == 0]
    if zero:
        raise ValueError(f"Model #{zero[0]} equals theta_0 on every entry: its angle to the others is undefined.")
    cosines = gram / torch.outer(norms, norms)
    return [[0.0 if i == j else degrees(float(cosines[i, j])) for j in range(len(pool))] for i in range(len(pool))]


def angle_between_deltas(theta_0: Source, theta_a: Source, theta_b: Source, *,
                         exclude: Collection[str] = ()) -> float:
    """The angle (degrees) between ``theta_a - theta_0`` and ``theta_b - theta_0`` (model soups Fig. 3's phi)."""
    return pairwise_angles(theta_0, [theta_a, theta_b], exclude=exclude)[0][1]


def interpolation_advantage(midpoint: float, first: float, second: float) -> float:
    """Model soups Fig. 3's y-axis: ``acc(theta_1 / 2 + theta_2 / 2) - (acc(theta_1) + acc(theta_2)) / 2``."""
    return midpoint - (first + second) / 2.0
