"""The config's value schema: one table of rules, checked right after composition, before anything is built.

:mod:`wiseft_lab.config` binds ``_target_`` nodes to their callables (a misspelt key fails); this module checks the
*values* a user sets: types, ranges and allowed choices (torchtune validates its recipes' configs up front the same
way). Every violation is reported at once, one line each, naming the key, the value and what is allowed. A rule
whose key is absent from the composed config (an option of another method or merge) is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from wiseft_lab.config import ConfigError

_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """What ``key`` may hold: a number (``integer``) in a range, or one of ``choices``; ``each``: a list of them.

    ``unless`` names a boolean key that lifts the range (``merge.extrapolate`` for alphas outside [0, 1]);
    ``also``: words allowed besides the numbers (``auto`` workers).
    """

    key: str
    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False      # ``low`` itself is not allowed
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    each: bool = False
    unless: str | None = None
    also: tuple[str, ...] = ()

    def allowed(self, ranged: bool = True) -> str:
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        else:
            text = "an integer" if self.integer else "a number"
            bounds = []
            if ranged and self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if ranged and self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            if bounds:
                text += " " + " and ".join(bounds)
        if self.also:
            text += ", or " + ", ".join(self.also)
        if self.each:
            text = f"a list, each item {text}"
        return text + (" (or null)" if self.nullable else "")

    def fits(self, value: Any, ranged: bool = True) -> bool:
        """Whether one item is allowed (``ranged=False``: the type only)."""
        if self.choices or value in self.also:
            return value in self.choices or value in self.also
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if not ranged:
            return True
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return not (too_low or too_high)

    def violation(self, value: Any, ranged: bool = True) -> str | None:
        """``"<key>=<value>: must be <allowed>"`` when ``value`` breaks the rule, else None."""
        if value is None and self.nullable:
            return None
        if self.each:
            ok = isinstance(value, list | tuple | ListConfig) and all(self.fits(item, ranged) for item in value)
        else:
            ok = self.fits(value, ranged)
        if ok:
            return None
        shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        hint = f" (or set {self.unless}=true)" if self.unless and ranged else ""
        return f"{self.key}={shown!r}: must be {self.allowed(ranged)}{hint}"


def positive(key: str, integer: bool = False, nullable: bool = False) -> Rule:
    return Rule(key, integer=integer, low=0, low_open=True, nullable=nullable)


def at_least(key: str, low: float, integer: bool = True, nullable: bool = False) -> Rule:
    return Rule(key, integer=integer, low=low, nullable=nullable)


def alphas(key: str) -> Rule:
    return Rule(key, low=0.0, high=1.0, each=True, unless="merge.extrapolate")


RULES: tuple[Rule, ...] = (
    Rule("seed", integer=True),
    Rule("precision", choices=("auto", "bf16", "fp32")),
    at_least("threads", 1, nullable=True),
    # fine-tuning (keys of methods that do not have them are skipped)
    at_least("finetune.epochs", 1),
    at_least("finetune.batch_size", 1),
    at_least("finetune.grad_accum_steps", 1),
    positive("finetune.clip_grad_norm", nullable=True),
    Rule("finetune.label_smoothing", low=0.0, high=1.0, high_open=True),
    at_least("finetune.keep_checkpoints", 1, nullable=True),
    at_least("finetune.mixup_alpha", 0.0, integer=False),
    at_least("finetune.kd_lambda", 0.0, integer=False),
    at_least("finetune.lp_epochs", 1),
    at_least("finetune.checkpoint_every_steps", 1, nullable=True),
    # optimiser and schedule
    positive("optimizer.lr"),
    at_least("optimizer.weight_decay", 0.0, integer=False),
    Rule("optimizer.momentum", low=0.0, high=1.0),
    Rule("optimizer.betas", low=0.0, high=1.0, high_open=True, each=True),
    positive("optimizer.eps"),
    Rule("optimizer.fused", choices=("auto", True, False), nullable=True),
    Rule("finetune.channels_last", choices=(True, False)),
    Rule("finetune.compile", choices=(True, False)),
    at_least("scheduler.warmup_steps", 0),
    at_least("scheduler.warmup_epochs", 0),
    at_least("scheduler.warmup_lr", 0.0, integer=False),
    # data
    Rule("data.holdout_fraction", low=0.0, high=1.0, high_open=True),
    at_least("data.shots", 1, nullable=True),
    Rule("data.num_workers", integer=True, low=0, also=("auto",)),
    Rule("data.short_classes", choices=("error", "keep")),
    Rule("data.skip_corrupt", choices=(True, False)),
    # evaluation
    at_least("eval.batch_size", 1),
    Rule("eval.num_workers", integer=True, low=0, also=("auto",)),
    Rule("eval.cache_device", choices=("auto", "cpu", "device")),
    at_least("eval.cache_max_gb", 0.0, integer=False),
    # merging
    alphas("merge.alphas"),
    alphas("merge.save_alphas"),
    alphas("merge.wiseft_alphas"),
    Rule("merge.extrapolate", choices=(True, False)),
    at_least("merge.learned.epochs", 1),
    positive("merge.learned.lr"),
    at_least("merge.learned.batch_size", 1),
    positive("merge.learned.max_memory_gb"),
    positive("merge.fisher.floor"),
    at_least("merge.fisher.n_examples", 1, nullable=True),
    # the run
    Rule("logger.mode", choices=("online", "offline", "disabled")),
    Rule("checkpoints.verify", choices=(True, False)),
)


def select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)


def violations(cfg: DictConfig, rules: Sequence[Rule] = RULES) -> list[str]:
    """One line per rule the config breaks (interpolations resolved), in the table's order."""
    found = []
    for rule in rules:
        value = select(cfg, rule.key)
        if value is _ABSENT:
            continue
        ranged = not (rule.unless and select(cfg, rule.unless) is True)
        problem = rule.violation(value, ranged)
        if problem:
            found.append(problem)
    return found


def validate(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` listing every value of ``cfg`` that breaks a rule of :data:`RULES`."""
    found = violations(cfg)
    if found:
        raise ConfigError("Invalid config value" + ("s" if len(found) > 1 else "") + ":\n  " + "\n  ".join(found))
