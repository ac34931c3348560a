"""The merge stage: what becomes of the checkpoints (the registry's package face: importing it registers every
strategy). ``none`` and ``wiseft`` (:mod:`.wiseft`), ``soups`` (:mod:`.soups`, over pools of
:mod:`.pool`), ``model_stock`` (:mod:`.model_stock`), ``cross_dataset_soup`` (:mod:`.cross_soups`), ``landscape``
(:mod:`.landscape`)."""

from wiseft_lab.merging import cross_soups, landscape, model_stock, soups, wiseft  # noqa: F401
from wiseft_lab.merging.registry import get_merge, is_merge, list_merges, register_merge

__all__ = ["get_merge", "is_merge", "list_merges", "register_merge"]
