"""The fine-tuning methods' registry: it knows no method. The methods register themselves when
:mod:`wiseft_lab.training.methods` (the package face) imports them."""

from __future__ import annotations

from wiseft_lab.registry import Registry
from wiseft_lab.training.job import FinetuneMethod

METHODS: Registry[type[FinetuneMethod]] = Registry(FinetuneMethod, "fine-tuning method", "fine-tuning method")

register_method = METHODS.register  # class decorator: @register_method("<finetune.method>")
get_method = METHODS.get
list_methods = METHODS.names


def is_method(name: str) -> bool:
    return name in METHODS
