"""The fine-tuning methods (the registry's package face): importing this package registers every method.

``e2e`` and ``lc`` are WiSE-FT's end-to-end and linear-classifier fine-tuning; ``lpft`` is LP-FT; ``clipfit``,
``bitfit`` and ``flyp`` train (part of) the text tower, so their head is derived from it.
"""

from wiseft_lab.training.methods import bitfit, clipfit, e2e, flyp, lc, lpft  # noqa: F401
from wiseft_lab.training.registry import get_method, is_method, list_methods, register_method

__all__ = ["get_method", "is_method", "list_methods", "register_method"]
