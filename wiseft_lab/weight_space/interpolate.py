"""WiSE-FT weight-space interpolation: ``theta(alpha) = (1 - alpha) * theta_0 + alpha * theta_1``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


def _describe(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_compatible(reference: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor],
                     names: tuple[str, str] = ("first", "second")) -> None:
    """Refuse state dicts whose key sets or tensor shapes differ, naming the offending keys."""
    only_ref = sorted(set(reference) - set(other))
    only_other = sorted(set(other) - set(reference))
    problems = []
    if only_ref:
        problems.append(f"keys only in the {names[0]}: {_describe(only_ref)}")
    if only_other:
        problems.append(f"keys only in the {names[1]}: {_describe(only_other)}")
    mismatched = [f"{k} {tuple(reference[k].shape)} vs {tuple(other[k].shape)}"
                  for k in reference if k in other and reference[k].shape != other[k].shape]
    if mismatched:
        problems.append(f"shape mismatch: {_describe(mismatched)}")
    if problems:
        raise ValueError("Cannot combine state dicts: " + "; ".join(problems))


def interpolation_path(theta_0: Mapping[str, torch.Tensor], theta_1: Mapping[str, torch.Tensor]
                       ) -> Callable[[float], dict[str, torch.Tensor]]:
    """``alpha -> (1 - alpha) * theta_0 + alpha * theta_1``, with the checks and the comparisons done once.

    A sweep asks for many alphas of one pair: the key and shape check and the search for entries equal in both
    endpoints (a whole pass over both state dicts) happen here, once, and each alpha then mixes only the entries
    that differ. Semantics per alpha are :func:`interpolate`'s.
    """
    check_compatible(theta_0, theta_1, names=("zero-shot (alpha=0)", "fine-tuned (alpha=1)"))
    shared = {key for key, t0 in theta_0.items()
              if t0.dtype == theta_1[key].dtype and torch.equal(t0, theta_1[key].to(t0.device))}

    def at(alpha: float) -> dict[str, torch.Tensor]:
        alpha = float(alpha)
        merged: dict[str, torch.Tensor] = {}
        for key, t0 in theta_0.items():
            t1 = theta_1[key]
            if key in shared:  # the tensor itself (``detach`` would make a new object, and a loader keys on them)
                merged[key] = t0.detach() if t0.requires_grad else t0
            elif alpha == 0.0 or alpha == 1.0 or not t0.is_floating_point():
                merged[key] = (t1 if alpha >= 0.5 else t0).detach().clone()
            else:
                compute = torch.float64 if t0.dtype == torch.float64 else torch.float32
                mixed = (1.0 - alpha) * t0.to(compute) + alpha * t1.to(device=t0.device, dtype=compute)
                merged[key] = mixed.to(t0.dtype)
        return merged

    return at


def interpolate(theta_0: Mapping[str, torch.Tensor], theta_1: Mapping[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """Return a new state dict ``(1 - alpha) * theta_0 + alpha * theta_1`` over every entry.

    Floating tensors are mixed in float32 (float64 stays float64) and cast back to ``theta_0``'s dtype.
    Integer and bool buffers cannot be mixed: they are copied from the endpoint with the larger weight.
    ``alpha == 0`` and ``alpha == 1`` return exact copies of the endpoints (bit for bit, signed zeros included).
    An entry equal in both endpoints is ``theta_0``'s tensor itself at every alpha (not a copy: treat the result as
    read-only): that is the exact value of the mix, which floating-point mixing can miss by an ulp, and it keeps a
    shared tower bit-identical along the path, as the very same tensors, at no cost (a linear-classifier sweep then
    loads only the head for each alpha and scores it on one pass of image features, see
    :class:`~wiseft_lab.models.loader.ModelLoader` and :mod:`wiseft_lab.evaluation.features`).
    Alphas outside [0, 1] extrapolate, as in the WiSE-FT paper's figures. For many alphas of one pair use
    :func:`interpolation_path`.
    """
    return interpolation_path(theta_0, theta_1)(alpha)
