"""Random hyper-parameter search as a plain Hydra multirun: every value is drawn from the job's ``seed``.

Hydra's basic sweeper only enumerates lists, so a random search is written as a sweep over seeds, with each
searched value an interpolation of the ``draw`` resolver registered here::

    optimizer:
      lr: ${draw:${seed},lr,loguniform,1e-6,1e-4}

    wiseft-lab -m experiment=... 'seed=range(72)'      # 72 configurations, the same ones on every machine

``draw(seed, name, kind, *args)`` seeds its own generator with ``(seed, name)`` (Python's ``random`` seeded with
a string: stable across processes, platforms and Python versions), so each searched value depends only on the
seed and its own name, and adding a searched key never changes the others. Kinds:

- ``loguniform,low,high``: ``exp(U(log low, log high))``
- ``uniform,low,high``: ``U(low, high)``
- ``randint,low,high``: an integer in ``[low, high]`` (both included)
- ``choice,a,b,...``: one of the values
- ``zero_or_uniform,p_zero,low,high``: ``0.0`` with probability ``p_zero``, else ``U(low, high)``
- ``randaugment,p_none,max_magnitude,max_ops``: ``None`` with probability ``p_none``, else timm's
  ``rand-m{M}-n{N}`` with ``M`` in ``[0, max_magnitude]`` and ``N`` in ``[0, max_ops]``

The run's resolved ``config.yaml`` records the drawn values.
"""

from __future__ import annotations

import math
import random
from typing import Any

from omegaconf import OmegaConf

RESOLVER = "draw"


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(f"wiseft-lab/{name}/{int(seed)}")


def draw(seed: int, name: str, kind: str, *args: Any) -> Any:
    """The value of the searched hyper-parameter ``name`` for ``seed`` (see the module docstring for kinds)."""
    rng = _rng(seed, str(name))

    def need(count: int) -> None:
        if len(args) != count:
            raise ValueError(f"draw: kind {kind!r} takes {count} arguments after the name, got {list(args)} "
                             f"(for {name!r})")

    if kind == "loguniform":
        need(2)
        low, high = float(args[0]), float(args[1])
        if not 0 < low <= high:
            raise ValueError(f"draw: loguniform needs 0 < low <= high, got {low}, {high} (for {name!r})")
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if kind == "uniform":
        need(2)
        return rng.uniform(float(args[0]), float(args[1]))
    if kind == "randint":
        need(2)
        return rng.randint(int(args[0]), int(args[1]))
    if kind == "choice":
        if not args:
            raise ValueError(f"draw: choice needs at least one value (for {name!r})")
        return rng.choice(list(args))
    if kind == "zero_or_uniform":
        need(3)
        p_zero, low, high = (float(a) for a in args)
        return 0.0 if rng.random() < p_zero else rng.uniform(low, high)
    if kind == "randaugment":
        need(3)
        p_none, max_m, max_n = float(args[0]), int(args[1]), int(args[2])
        if rng.random() < p_none:
            return None
        return f"rand-m{rng.randint(0, max_m)}-n{rng.randint(0, max_n)}"
    raise ValueError(f"draw: unknown kind {kind!r} (for {name!r}); choose from loguniform, uniform, randint, "
                     "choice, zero_or_uniform, randaugment")


def register_resolvers() -> None:
    """Make ``${draw:...}`` known to OmegaConf (idempotent; done on import of :mod:`wiseft_lab.cli`)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, draw)


register_resolvers()
