"""A quiet console: our own INFO lines and everyone's warnings; the rest goes to the run's log file only.

open_clip logs about ten INFO lines per model it builds (``Parsing model identifier...``, the preprocessing
configuration), W&B prints a block of its own, and progress bars written to a file are kilobytes of ``\\r`` frames.
Hydra's job logging (``conf/hydra/default.yaml``) puts :class:`QuietConsole` on the console handler; the file
handler (``<run dir>/wiseft_lab.log``) keeps everything. ``verbose=true`` (or ``hydra.verbose``) lifts the filter.
"""

from __future__ import annotations

import logging
from typing import Any

OWN_LOGGERS = ("wiseft_lab", "hydra", "__main__")


class QuietConsole(logging.Filter):
    """Pass warnings and errors from anyone, and INFO from wiseft-lab and Hydra (a multirun's job list)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OWN_LOGGERS


def is_verbose(cfg: Any) -> bool:
    """``verbose=true`` in the run config, or Hydra's ``hydra.verbose`` (true or a list of loggers)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_verbose = HydraConfig.get().verbose if HydraConfig.initialized() else False
    return bool(cfg.get("verbose")) or bool(hydra_verbose)


def lift_quiet_console() -> None:
    """Remove :class:`QuietConsole` from the root logger's handlers (``verbose=true``: every INFO line shown)."""
    for handler in logging.getLogger().handlers:
        for quiet in [f for f in handler.filters if isinstance(f, QuietConsole)]:
            handler.removeFilter(quiet)
