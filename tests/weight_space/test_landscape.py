"""The plane through three models and the angles between deltas, on tiny state dicts worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tests.weight_space.state_dirs import state_dirs
from wiseft_lab.weight_space.landscape import Plane, angle_between_deltas, interpolation_advantage, pairwise_angles

R2 = math.sqrt(2.0)


def _state(w, b, n, dtype=torch.float64):
    return {"w": torch.tensor(w, dtype=dtype), "b": torch.tensor(b, dtype=dtype), "n": torch.tensor(n)}


# Spanned entries flattened as (w0, w1, w2, b): d1 = (3, 0, 0, 0), d2 = (1, 2, 0, 2).
# u = (1, 0, 0, 0); <d2, u> = 1; v_raw = (0, 2, 0, 2), |v_raw| = 2 sqrt 2, v = (0, 1, 0, 1) / sqrt 2.
# Coordinates: theta_0 (0, 0), theta_1 (3, 0), theta_2 (1, 2 sqrt 2). "n" is an integer buffer.
THETA_0 = _state([0.0, 0.0, 0.0], [1.0], 5)
THETA_1 = _state([3.0, 0.0, 0.0], [1.0], 7)
THETA_2 = _state([1.0, 2.0, 0.0], [3.0], 9)


def _close(state, expected):
    assert sorted(state) == sorted(expected)
    for key in expected:
        assert state[key].dtype == expected[key].dtype, key
        torch.testing.assert_close(state[key], expected[key], rtol=0, atol=1e-12)


def test_plane_by_hand(tmp_path):
    for models in ([THETA_0, THETA_1, THETA_2], state_dirs(tmp_path, [THETA_0, THETA_1, THETA_2])):
        plane = Plane.through(*models)
        assert [pytest.approx(c) for c in [(0.0, 0.0), (3.0, 0.0), (1.0, 2 * R2)]] == plane.coordinates
        torch.testing.assert_close(plane.u["w"], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
        torch.testing.assert_close(plane.v["b"], torch.tensor([1 / R2], dtype=torch.float64))
        # The three models come back at their coordinates (integer buffers: theta_0's everywhere).
        _close(plane.point_state(0.0, 0.0), THETA_0)
        _close(plane.point_state(3.0, 0.0), {**THETA_1, "n": THETA_0["n"]})
        _close(plane.point_state(1.0, 2 * R2), {**THETA_2, "n": THETA_0["n"]})
        # (2, sqrt 2) is the midpoint of theta_1 and theta_2: w (2, 1, 0), b 2
        _close(plane.point_state(2.0, R2), _state([2.0, 1.0, 0.0], [2.0], 5))
        # (-0.6, 3 sqrt 2): theta_0 - 0.6 u + 3 sqrt 2 v = w (-0.6, 3, 0), b 1 + 3
        _close(plane.point_state(-0.6, 3 * R2), _state([-0.6, 3.0, 0.0], [4.0], 5))
        assert plane.project(_state([2.0, 1.0, 0.0], [2.0], 0)) == pytest.approx((2.0, R2))
        # Off the plane: w2 moves orthogonally to both directions and does not change the projection.
        assert plane.project(_state([2.0, 1.0, 7.0], [2.0], 0)) == pytest.approx((2.0, R2))


def test_grid_spans_the_models_with_a_margin():
    plane = Plane.through(THETA_0, THETA_1, THETA_2)
    xs, ys = plane.grid(resolution=5, margin=0.25)
    # x: the models span [0, 3], widened by 0.75 each side; y: [0, 2 sqrt 2] widened by sqrt(2) / 2
    assert xs == pytest.approx([-0.75, 0.375, 1.5, 2.625, 3.75])
    assert ys == pytest.approx([-R2 / 2 + i * 3 * R2 / 4 for i in range(5)])
    # Garipov's defaults (21 points, margin 0.2): alpha * |d1| for alpha in linspace(-0.2, 1.2, 21)
    xs, _ = plane.grid()
    assert xs == pytest.approx([3.0 * (-0.2 + 1.4 * i / 20) for i in range(21)])
    with pytest.raises(ValueError, match="at least 2"):
        plane.grid(resolution=1)


def test_excluded_entries_stay_at_theta_0_and_dtypes_are_kept():
    plane = Plane.through(THETA_0, THETA_1, THETA_2, exclude=["b"])
    # Over w only: d2 = (1, 2, 0) -> (1, 2)
    assert [pytest.approx(c) for c in [(0.0, 0.0), (3.0, 0.0), (1.0, 2.0)]] == plane.coordinates
    assert plane.point_state(1.0, 2.0)["b"].tolist() == [1.0]
    half = [_state(s["w"].tolist(), s["b"].tolist(), 0, torch.float16) for s in (THETA_0, THETA_1, THETA_2)]
    point = Plane.through(*half).point_state(3.0, 0.0)
    assert point["w"].dtype == torch.float16 and point["w"].tolist() == [3.0, 0.0, 0.0]


def test_degenerate_planes_are_refused():
    with pytest.raises(ValueError, match="span no plane"):
        Plane.through(THETA_0, THETA_0, THETA_2)
    on_line = _state([6.0, 0.0, 0.0], [1.0], 0)  # theta_0 + 2 d1
    with pytest.raises(ValueError, match="lies on the line"):
        Plane.through(THETA_0, THETA_1, on_line)


def test_angles_by_hand(tmp_path):
    origin = {"w": torch.tensor([1.0, 1.0]), "b": torch.tensor([2.0])}

    def at(w, b=0.0):  # origin + delta
        return {"w": torch.tensor([1.0 + w[0], 1.0 + w[1]]), "b": torch.tensor([2.0 + b])}

    assert angle_between_deltas(origin, at([1, 0]), at([1, 1])) == pytest.approx(45.0)
    assert angle_between_deltas(origin, at([1, 0]), at([0, 2])) == pytest.approx(90.0)
    assert angle_between_deltas(origin, at([1, 0]), at([-3, 0])) == pytest.approx(180.0)
    # Flattened over entries: delta (1, 0 | 0) against (0, 0 | 1) is 90 degrees; against (1, 0 | 1) 45.
    assert angle_between_deltas(origin, at([1, 0]), at([0, 0], 1.0)) == pytest.approx(90.0)
    assert angle_between_deltas(origin, at([1, 0]), at([1, 0], 1.0)) == pytest.approx(45.0)
    assert angle_between_deltas(origin, at([1, 0]), at([1, 0], 1.0), exclude=["b"]) == pytest.approx(0.0, abs=1e-6)
    # 60 degrees between (2, 0) and (1, sqrt 3); 120 between (2, 0) and (-1, sqrt 3); 60 between those two.
    pool = [at([2, 0]), at([1, math.sqrt(3)]), at([-1, math.sqrt(3)])]
    for models in (pool, state_dirs(tmp_path, pool)):
        angles = pairwise_angles(origin, models)
        assert angles == [pytest.approx(row, abs=1e-4) for row in [[0, 60, 120], [60, 0, 60], [120, 60, 0]]]
    with pytest.raises(ValueError, match="equals theta_0"):
        angle_between_deltas(origin, at([1, 0]), origin)


def test_interpolation_advantage():
    # acc(midpoint) 0.80 against the endpoints' mean (0.70 + 0.76) / 2 = 0.73
    assert interpolation_advantage(0.80, 0.70, 0.76) == pytest.approx(0.07)
