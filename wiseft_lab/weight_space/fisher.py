"""Fisher merging (Matena & Raffel, 2021) as the WiSE-FT code does it, for a pool of N ingredients.

* Fisher: the diagonal of the Fisher information of each ingredient, estimated one example at a time: the label
  is *sampled* from the model's own softmax, the cross-entropy is back-propagated, and the squared gradients are
  averaged over the examples (WiSE-FT's ``src/models/fisher.py``). The examples differ: wise-ft's
  ``compute_fisher`` iterates its dataset's *test* loader (``get_dataloader(dataset, is_train=False)``, eval
  preprocessing) with the model in train mode; the pipeline here feeds the held-out split of the training set, in
  eval mode by default (:meth:`wiseft_lab.merging.registry.MergeContext.fisher`), so no test image shapes a model.
* Merge: per parameter, ``theta = sum_i w_i F_i theta_i / sum_i w_i F_i`` with ``F_i`` floored at
  ``fisher_floor`` (1e-8 there), uniform weights ``w_i``; a tensor without a Fisher (a buffer, or a parameter
  that received no gradient) gets ``F = 1``, i.e. the plain average (WiSE-FT's ``_merge``).

Ingredients are visited one at a time: memory is the two running sums, one ingredient and its Fisher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from wiseft_lab.distributed import all_reduce_tensors
from wiseft_lab.precision import autocast
from wiseft_lab.weight_space.ingredients import Source, StateDict, check_pool, float_keys, load_all
from wiseft_lab.weight_space.interpolate import check_compatible, interpolate

log = logging.getLogger(__name__)

FISHER_FLOOR = 1e-8


def example_generator(seed: int, index: int) -> torch.Generator:
    """The generator that samples example ``index``'s label: one per example, so that the estimate does not depend
    on which rank (or in which order) an example is visited."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))


def diagonal_fisher(module: nn.Module, state: Mapping[str, torch.Tensor],
                    examples: Iterable[tuple[int, torch.Tensor]], *, seed: int = 0, train_mode: bool = False,
                    precision: str = "fp32") -> StateDict:
    """Average squared gradient of ``-log p(y_sampled | x)`` per floating tensor of ``state``, one example at a time.

    ``examples`` yields ``(index, image)``; each image is used on its own (batch size 1, as the reference), its label
    sampled with :func:`example_generator` ``(seed, index)``. Under N ranks each passes its share of the examples
    and the sums and counts are all-reduced: every rank gets the estimate one process gets over all of them.
    ``module`` only provides the architecture (``functional_call`` with ``state``); it is not modified.
    Only the module's parameters get a Fisher, as in the reference (buffers such as BatchNorm statistics, and
    parameters that never receive a gradient, are absent from the result: the merge averages them plainly).
    """
    device = next(module.parameters()).device
    names = {name for name, _ in module.named_parameters()}
    params = {k: v.detach().to(device).float().requires_grad_() if k in names and v.is_floating_point()
              else v.to(device) for k, v in state.items()}
    trainable = [k for k, v in params.items() if v.requires_grad]
    sums = [torch.zeros_like(params[k]) for k in trainable]
    counts = torch.zeros(len(trainable) + 1, dtype=torch.float64, device=device)  # per tensor, then examples
    was_training = module.training
    module.train(train_mode)
    try:
        for index, image in examples:
            with autocast(device, precision):
                logits = functional_call(module, params, (image.unsqueeze(0).to(device),)).float()
            probs = torch.softmax(logits.detach(), dim=-1).cpu()
            target = torch.multinomial(probs, 1, generator=example_generator(seed, index)).view(-1).to(device)
            loss = F.cross_entropy(logits, target)
            grads = torch.autograd.grad(loss, [params[k] for k in trainable], allow_unused=True)
            for position, grad in enumerate(grads):
                if grad is not None:
                    sums[position].add_(grad.detach().square())
                    counts[position] += 1
            counts[-1] += 1
    finally:
        module.train(was_training)
    all_reduce_tensors([*sums, counts])
    if counts[-1] == 0:
        raise ValueError("No examples to estimate the Fisher information from (empty held-out split?)")
    missing = [k for k, n in zip(trainable, counts.tolist(), strict=False) if n == 0]
    if missing:
        log.info("No gradient for %d tensors (e.g. %s): merged by plain averaging", len(missing), missing[0])
    return {k: total / n for k, total, n in zip(trainable, sums, counts.tolist(), strict=False) if n}


def fisher_merge(sources: Sequence[Source], fisher_of: Callable[[int, StateDict], Mapping[str, torch.Tensor]], *,
                 floor: float = FISHER_FLOOR, weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None) -> StateDict:
    """Fisher-weighted average of the ingredients; ``fisher_of(i, state_i)`` returns ingredient i's Fisher."""
    specs = check_pool(sources, names)
    floats = set(float_keys(specs))
    n = len(sources)
    weights = [1.0 / n] * n if weights is None else [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"{n} ingredients but {len(weights)} weights")
    numerator: StateDict = {}
    denominator: StateDict = {}
    fixed: StateDict = {}
    dtypes: dict[str, torch.dtype] = {}
    for index, source in enumerate(sources):
        state = load_all(source)
        fisher = fisher_of(index, state)
        for key, theta in state.items():
            if key not in floats:
                if index == 0:
                    fixed[key] = theta
                continue
            if index == 0:
                dtypes[key] = theta.dtype
                compute = torch.promote_types(theta.dtype, torch.float32)
                numerator[key] = torch.zeros(theta.shape, dtype=compute)
                denominator[key] = torch.zeros(theta.shape, dtype=compute)
            f = fisher.get(key)
            f = torch.ones_like(numerator[key]) if f is None else f.detach().to("cpu", numerator[key].dtype)
            c = torch.clamp_min(f, floor) * weights[index]
            numerator[key].addcmul_(c, theta.to(numerator[key].dtype))
            denominator[key].add_(c)
        del state, fisher
    return {k: fixed.pop(k) if k not in floats else numerator.pop(k).div_(denominator.pop(k)).to(dtypes[k])
            for k in specs}


def fisher_interpolate(theta_0: Mapping[str, torch.Tensor], theta_1: Mapping[str, torch.Tensor], alpha: float,
                       fishers: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], *,
                       floor: float = FISHER_FLOOR) -> StateDict:
    """WiSE-FT's ``--fisher`` interpolation (``_merge`` in mlfoundations/wise-ft ``src/wise_ft.py``), per element:

    ``theta = (c_0 theta_0 + c_1 theta_1) / (c_0 + c_1)`` with ``c_0 = (1 - alpha) max(F_0, floor)`` and
    ``c_1 = alpha max(F_1, floor)``; ``F_0`` is the zero-shot model's Fisher, ``F_1`` the fine-tuned one's. An entry
    without a Fisher (a buffer, a parameter without gradient) gets ``F = 1`` in both, i.e. plain interpolation; an
    entry must have a Fisher in both or in neither (the reference asserts it).

    ``alpha`` must lie in [0, 1] (outside, ``c_0 + c_1`` can vanish). With ``floor > 0`` the formula gives the
    endpoints at alpha 0 and 1 in exact arithmetic (one rounding off in floating point); they are returned as exact
    copies, like :func:`~wiseft_lab.weight_space.interpolate.interpolate`. Where a Fisher is below the floor the
    floor decides: with ``F_0 = 0`` and ``F_1 = 1`` even alpha = 0.01 gives almost ``theta_1`` (and ``floor=0`` with
    both Fishers zero gives 0/0). Floating entries are
    mixed in float32 (float64 stays float64) and cast back to ``theta_0``'s dtype; integer and bool buffers are
    copied from the endpoint with the larger weight (the reference would mix and truncate them).
    """
    check_compatible(theta_0, theta_1, names=("zero-shot (alpha=0)", "fine-tuned (alpha=1)"))
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Fisher-weighted interpolation needs alpha in [0, 1], got {alpha}")
    fisher_0, fisher_1 = fishers
    one_sided = sorted(set(fisher_0) ^ set(fisher_1))
    if one_sided:
        raise ValueError(f"Fisher present for only one endpoint: {one_sided[:8]}")
    if alpha in (0.0, 1.0):
        return interpolate(theta_0, theta_1, alpha)
    merged: StateDict = {}
    for key, t0 in theta_0.items():
        t1 = theta_1[key]
        if not t0.is_floating_point():
            merged[key] = (t1 if alpha >= 0.5 else t0).detach().clone()
            continue
        compute = torch.float64 if t0.dtype == torch.float64 else torch.float32
        ones = torch.ones(t0.shape, dtype=compute, device=t0.device)
        f0 = fisher_0[key].to(t0.device, compute) if key in fisher_0 else ones
        f1 = fisher_1[key].to(t0.device, compute) if key in fisher_1 else ones
        c0 = (1.0 - alpha) * torch.clamp_min(f0, floor)
        c1 = alpha * torch.clamp_min(f1, floor)
        mixed = (c0 * t0.to(compute) + c1 * t1.to(device=t0.device, dtype=compute)) / (c0 + c1)
        merged[key] = mixed.to(t0.dtype)
    return merged
