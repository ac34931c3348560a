"""Learned soups: mixing coefficients trained on held-out data, without holding the ingredients in memory.

The soup is ``theta(alpha) = sum_i alpha_i theta_i`` with ``alpha = softmax(logits)`` (one softmax for the whole
model, or one per state-dict tensor for the ``per_layer`` variant, the reference's ``learned_bylayer.py``),
and the model's logits are multiplied by a learnable temperature ``beta`` (starting at 1). Logits start
uniform; AdamW (lr 0.05, no weight decay) trains them on the shuffled held-out split for 5 epochs.

The reference stacks every ingredient in memory and lets autograd differentiate through the sum. Here the
loss depends on the coefficients only through ``theta``, so ``dL/dalpha_i = <dL/dtheta, theta_i>``: each step
streams the ingredients once to build ``theta(alpha)``, runs one forward/backward pass through that merged
model, then streams them again to take the dot products (per tensor for the per-layer variant). Memory:
``theta``, its gradient and one ingredient tensor, whatever the pool size. ``streaming=False`` keeps the
reference's in-memory path (all ingredients loaded) for small pools; both give the same gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from wiseft_lab.distributed import all_reduce_gradients, all_reduce_sum, current, split_batch
from wiseft_lab.precision import autocast
from wiseft_lab.weight_space.ingredients import (
    Source,
    StateDict,
    check_pool,
    float_keys,
    iter_tensors,
    load_all,
    nbytes,
)

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LearnedSoupConfig:
    epochs: int = 5
    lr: float = 0.05
    per_layer: bool = False
    # True: stream the ingredients (bounded memory); False: load them all (the reference); None: in memory
    # only when the whole pool is at most ``max_memory_gb``.
    streaming: bool | None = None
    max_memory_gb: float = 2.0
    precision: str = "fp32"   # bf16: autocast of the forward pass


@dataclass
class LearnedResult:
    state: StateDict
    coefficients: torch.Tensor          # (rows, ingredients): softmax of the learned logits
    beta: float                         # the learned logit temperature
    rows: list[str]                     # the tensors each row mixes ("*" for the whole model)
    streaming: bool
    history: list[dict[str, Any]] = field(default_factory=list)


class SoupCoefficients(nn.Module):
    """The learnable part: ``logits`` of shape (rows, ingredients) and the temperature ``beta``."""

    def __init__(self, rows: int, ingredients: int):
        super().__init__()
        # As the reference: raw values softmax(ones) = 1/N, so the first softmax is uniform.
        self.logits = nn.Parameter(torch.full((rows, ingredients), 1.0 / ingredients))
        self.beta = nn.Parameter(torch.tensor(1.0))

    def alphas(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=1)


class PoolMixer:
    """Mixes a pool of ingredients with (rows, ingredients) coefficients, streamed or in memory."""

    def __init__(self, sources: Sequence[Source], *, per_layer: bool, streaming: bool,
                 device: str | torch.device = "cpu", names: Sequence[str] | None = None,
                 grad_keys: Collection[str] | None = None, order: Sequence[str] | None = None,
                 keys: Collection[str] | None = None):
        self.sources = list(sources)
        self.specs = check_pool(self.sources, names)
        # Rows follow ``order`` (the module's state_dict order), whatever order the files store tensors in.
        rank = {k: i for i, k in enumerate(order or ())}
        # ``keys``: the floating tensors to mix (default: all); the others are the first ingredient's, fixed.
        self.mixed = sorted((k for k in float_keys(self.specs) if keys is None or k in keys),
                            key=lambda k: rank.get(k, len(rank)))
        if not self.mixed:
            raise ValueError("The ingredients have no floating-point tensors to mix.")
        # The tensors the loss is differentiated through: the module's parameters. Floating buffers (BatchNorm
        # statistics) are mixed with the same coefficients but carry no gradient (their rows stay uniform).
        self.grad_keys = [k for k in self.mixed if grad_keys is None or k in grad_keys]
        self.device = torch.device(device)
        self.per_layer = per_layer
        self.row = {k: (i if per_layer else 0) for i, k in enumerate(self.mixed)}
        self.rows = list(self.mixed) if per_layer else ["*"]
        self.streaming = streaming
        first = dict(iter_tensors(self.sources[0]))
        mixed = set(self.mixed)
        self.fixed = {k: t.to(self.device, copy=True) for k, t in first.items() if k not in mixed}
        # what the module is called with besides theta: its own entries (a head-only module has no tower entries)
        own = set(order) if order is not None else None
        self.call_fixed = {k: t for k, t in self.fixed.items() if own is None or k in own}
        self.dtypes = {k: first[k].dtype for k in self.mixed}
        del first
        self.states = [load_all(s, self.device) for s in self.sources] if not streaming else None

    @property
    def n(self) -> int:
        return len(self.sources)

    def _tensors(self, index: int):
        if self.states is not None:
            return ((k, self.states[index][k]) for k in self.mixed)
        return iter_tensors(self.sources[index], keys=self.mixed)

    @torch.no_grad()
    def merge(self, alphas: torch.Tensor) -> StateDict:
        """``sum_i alphas[row(k), i] * theta_i[k]`` in fp32 (at least), plus the fixed tensors."""
        weights = alphas.detach().double().cpu().tolist()
        theta: StateDict = {}
        for i in range(self.n):
            for key, tensor in self._tensors(i):
                if i == 0:
                    theta[key] = torch.zeros(tensor.shape, device=self.device,
                                             dtype=torch.promote_types(tensor.dtype, torch.float32))
                theta[key].add_(tensor.to(self.device), alpha=weights[self.row[key]][i])
        return theta

    def output(self, alphas: torch.Tensor) -> StateDict:
        """The soup in the ingredients' dtypes, keys in the first ingredient's order."""
        theta = self.merge(alphas)
        return {k: self.fixed[k] if k in self.fixed else theta.pop(k).to(self.dtypes[k]) for k in self.specs}

    def differentiable(self, alphas: torch.Tensor) -> StateDict:
        """The in-memory path: ``theta(alphas)`` with autograd through the sum (as the reference)."""
        if self.states is None:
            raise RuntimeError("differentiable() needs the in-memory path (streaming=False)")
        grad_keys = set(self.grad_keys)
        return {k: sum((alphas if k in grad_keys else alphas.detach())[self.row[k], i] * self.states[i][k].float()
                       for i in range(self.n)) for k in self.mixed}

    @torch.no_grad()
    def dot_products(self, grads: Mapping[str, torch.Tensor | None]) -> torch.Tensor:
        """``G[row(k), i] += <dL/dtheta_k, theta_i[k]>``: the gradient with respect to the coefficients."""
        out = torch.zeros(len(self.rows), self.n, dtype=torch.float64, device=self.device)
        for i in range(self.n):
            for key, tensor in self._tensors(i):
                grad = grads.get(key)
                if grad is not None:  # fp32 dot (BLAS), summed over tensors in fp64 on the device (no sync)
                    value = torch.dot(grad.reshape(-1), tensor.to(device=grad.device, dtype=grad.dtype).reshape(-1))
                    out[self.row[key], i] += value.to(out.device, torch.float64)
        return out.cpu()


class HeadOnly(nn.Module):
    """A classifier's head under its own key prefix (``head.*``), applied to image features.

    When every ingredient has the same image tower (linear-classifier fine-tunes), mixing the towers gives that tower
    back and adds the same term to every coefficient's gradient, which the softmax cancels: the learned soup then
    trains on the tower's outputs, computed once, instead of running the tower at every step.
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def soup_loss(module: nn.Module, theta: Mapping[str, torch.Tensor], fixed: Mapping[str, torch.Tensor],
              beta: torch.Tensor, batch: Batch, loss_fn: LossFn = F.cross_entropy,
              precision: str = "fp32") -> torch.Tensor:
    images, labels = batch
    with autocast(images.device, precision):
        logits = functional_call(module, {**theta, **fixed}, (images,))
    return loss_fn(beta * logits.float(), labels)


def coefficient_gradients(module: nn.Module, mixer: PoolMixer, coefficients: SoupCoefficients, batch: Batch, *,
                          loss_fn: LossFn = F.cross_entropy, precision: str = "fp32") -> torch.Tensor:
    """Accumulate ``dL/dlogits`` and ``dL/dbeta`` into ``coefficients``' ``.grad``; return the loss.

    Streaming: one forward/backward through the merged model, then ``dL/dalpha`` by dot products with the
    streamed ingredients, then the softmax's chain rule by autograd. In memory: autograd end to end.
    """
    alphas = coefficients.alphas()
    if not mixer.streaming:
        theta = mixer.differentiable(alphas)
        loss = soup_loss(module, theta, mixer.call_fixed, coefficients.beta, batch, loss_fn, precision)
        loss.backward()
        return loss.detach()
    theta = mixer.merge(alphas)
    leaves = [theta[k].requires_grad_() for k in mixer.grad_keys]
    loss = soup_loss(module, theta, mixer.call_fixed, coefficients.beta, batch, loss_fn, precision)
    grads = torch.autograd.grad(loss, [*leaves, coefficients.beta], allow_unused=True)
    if grads[-1] is not None:
        beta_grad = grads[-1].detach()
        coefficients.beta.grad = beta_grad if coefficients.beta.grad is None else coefficients.beta.grad + beta_grad
    by_key = dict(zip(mixer.grad_keys, grads[:-1], strict=True))
    del theta, leaves, grads
    alpha_grad = mixer.dot_products(by_key)
    alphas.backward(alpha_grad.to(alphas.dtype))
    return loss.detach()


def choose_streaming(sources: Sequence[Source], streaming: bool | None, max_memory_gb: float) -> bool:
    if streaming is not None:
        return bool(streaming)
    return sum(nbytes(s) for s in sources) > max_memory_gb * 1e9


def _global_batch_gradients(module: nn.Module, mixer: PoolMixer, coefficients: SoupCoefficients,
                            images: torch.Tensor, labels: torch.Tensor, loss_fn: LossFn, precision: str) -> float:
    """The coefficients' gradient and the loss of one held-out batch; under N ranks each runs the model on its
    contiguous share, weighted by its size, and the gradients are summed: every rank takes the step one process
    takes (up to the order of the sums)."""
    world = current()
    if not world.distributed:
        return float(coefficient_gradients(module, mixer, coefficients, (images, labels), loss_fn=loss_fn,
                                           precision=precision))
    share = split_batch(range(len(labels)), world)
    loss = 0.0
    if share:
        weight = len(share) / len(labels)
        loss = weight * float(coefficient_gradients(module, mixer, coefficients, (images[share], labels[share]),
                                                    loss_fn=loss_fn, precision=precision))
        for param in coefficients.parameters():
            param.grad.mul_(weight)
    all_reduce_gradients(list(coefficients.parameters()))
    return all_reduce_sum(loss)


def learned_soup(module: nn.Module, sources: Sequence[Source], batches: Callable[[int], Iterable[Batch]],
                 config: LearnedSoupConfig | None = None, *, names: Sequence[str] | None = None,
                 device: str | torch.device = "cpu", loss_fn: LossFn = F.cross_entropy,
                 on_step: Callable[[dict[str, Any]], None] | None = None,
                 keys: Collection[str] | None = None) -> LearnedResult:
    """Train the soup's coefficients; ``batches(epoch)`` yields the (shuffled) held-out ``(images, labels)``.

    ``module`` is any model whose ``state_dict`` keys are the ingredients' (its own weights are not used).
    ``keys``: the floating tensors the coefficients mix (default: all); the others are the first ingredient's
    (a cross-dataset soup mixes the shared towers and keeps the target's head fixed).
    """
    config = config or LearnedSoupConfig()
    streaming = choose_streaming(sources, config.streaming, config.max_memory_gb)
    mixer = PoolMixer(sources, per_layer=config.per_layer, streaming=streaming, device=device, names=names,
                      grad_keys={name for name, _ in module.named_parameters()}, order=list(module.state_dict()),
                      keys=keys)
    coefficients = SoupCoefficients(len(mixer.rows), mixer.n)
    optimizer = torch.optim.AdamW(coefficients.parameters(), lr=config.lr, weight_decay=0.0)
    was_training = module.training
    module.eval()
    history: list[dict[str, Any]] = []
    step = 0
    log.info("Learned soup%s over %d ingredients: %d coefficient rows, %s path", " (per layer)" if config.per_layer
             else "", mixer.n, len(mixer.rows), "streaming" if streaming else "in-memory")
    try:
        for epoch in range(config.epochs):
            for images, labels in batches(epoch):
                optimizer.zero_grad(set_to_none=True)
                loss = _global_batch_gradients(module, mixer, coefficients, images, labels, loss_fn,
                                               config.precision)
                optimizer.step()
                record = {"step": step, "epoch": epoch, "loss": float(loss), "beta": coefficients.beta.item()}
                history.append(record)
                if on_step is not None:
                    on_step(record)
                step += 1
    finally:
        module.train(was_training)
    with torch.no_grad():
        alphas = coefficients.alphas().detach()
        state = {k: v.cpu() for k, v in mixer.output(alphas).items()}
    return LearnedResult(state, alphas.cpu(), coefficients.beta.item(), mixer.rows, streaming, history)
