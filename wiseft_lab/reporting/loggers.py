"""Experiment loggers: W&B (offline by default) or nothing. Local files are written by the runner.

Every W&B run is finished in ``close()`` (the runner calls it in a ``finally``): jobs of a Hydra multirun
share one process, and an unfinished run would silently swallow the next job's metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wiseft_lab.evaluation.suite import AVG_SHIFTS, score_key
from wiseft_lab.io import union_columns
from wiseft_lab.reporting.tables import scores

log = logging.getLogger(__name__)

# logged series with a step of their own: prefix -> the step key (wiseft/alpha, greedy/step, learned_soup/step, ...)
STEP_METRICS = {"wiseft": "alpha", "greedy": "step", "learned_soup": "step", "learned_soup_per_layer": "step"}
EPOCH_PREFIX = "epoch_"  # per-epoch checkpoints (resume state), not artifacts


class NullLogger:
    """``logger=none``: metrics only go to the run directory."""

    url: str | None = None
    directory: str | None = None

    def __init__(self, **run_fields: Any):  # the run's directory, config, group and name: nothing to record them in
        pass

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...

    def log_results(self, rows: Sequence[Mapping[str, Any]], reference: str) -> None: ...

    def log_image(self, key: str, path: str | Path) -> None: ...

    def log_table(self, key: str, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def summary(self, metrics: Mapping[str, Any]) -> None: ...

    def log_checkpoints(self, directory: str | Path) -> None: ...

    def close(self, exit_code: int = 0) -> None: ...


def resolve_wandb_mode(configured: str) -> str:
    """``WANDB_MODE`` in the environment wins over the config (the W&B convention users expect)."""
    mode = os.environ.get("WANDB_MODE") or configured
    if mode not in {"online", "offline", "disabled", "dryrun", "run"}:
        raise ValueError(f"logger.mode (or WANDB_MODE) must be online, offline or disabled, not {mode!r}")
    return mode


class WandbLogger:
    """One W&B run per job, written inside the run directory; sweeps share a ``group``."""

    def __init__(self, *, project: str, run_dir: str | Path, config: Mapping[str, Any], mode: str = "offline",
                 entity: str | None = None, group: str | None = None, name: str | None = None,
                 job_type: str | None = None, tags: Sequence[str] = (), log_checkpoints: bool = False,
                 verbose: bool = False, run_id: str | None = None):
        """``run_id``: continue that W&B run (a resumed job), else start a new one."""
        import wandb

        self._wandb = wandb
        mode = resolve_wandb_mode(mode)
        # silent: W&B's own banner and closing summary stay off the console; the line below says where the run is
        self.run = wandb.init(project=project, entity=entity, group=group, name=name, job_type=job_type,
                              tags=list(tags), dir=str(run_dir), config=dict(config), mode=mode,
                              reinit="finish_previous", settings=wandb.Settings(silent=not verbose), id=run_id,
                              resume="allow" if run_id else None)
        written = mode != "disabled" and getattr(self.run, "dir", None)  # a disabled run writes no files
        self.directory = str(Path(self.run.dir).parent) if written else None
        self.url = self.run.url if mode in ("online", "run") else None  # offline, asking warns "URL not available"
        self.checkpoints = log_checkpoints
        for prefix, step in STEP_METRICS.items():  # their curves plot against their own step, not W&B's
            self.run.define_metric(f"{prefix}/{step}")
            self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/{step}")
        log.info("W&B run %s (%s): %s", self.run.name or self.run.id, mode, self.url or self.directory)

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def log_results(self, rows: Sequence[Mapping[str, Any]], reference: str) -> None:
        """The results as a table, each WiSE-FT alpha as a point of ``wiseft/*``, and the curve as a plot."""
        table = self._table(rows)
        payload: dict[str, Any] = {"results": table}
        ingredients = [r for r in rows if r["model"] == "ingredient"]
        if ingredients:  # one row per ingredient: a table, not ingredient/* keys each overwriting the last
            payload["ingredients"] = self._table(ingredients)
        sweep = sorted((r for r in rows if r["model"] == "wiseft"), key=lambda r: r["alpha"])
        for row in sweep:
            self.run.log({"wiseft/alpha": row["alpha"],
                          **{f"wiseft/{k}": v for k, v in scores(row).items()}})
        x_key, y_key = (score_key(sweep[0], c) if sweep else None for c in (reference, AVG_SHIFTS))
        if x_key and y_key:
            payload["wiseft_curve"] = self._wandb.plot.line(
                table, x=x_key, y=y_key, stroke="model", title="WiSE-FT: reference vs. average over the shifts")
        self.run.log(payload)

    def log_image(self, key: str, path: str | Path) -> None:
        self.run.log({key: self._wandb.Image(str(path))})

    def log_table(self, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.run.log({key: self._table(rows)})

    def _table(self, rows: Sequence[Mapping[str, Any]]):
        """Rows (dicts) as one W&B table over the union of their keys; lists and dicts in cells become text."""
        columns = union_columns(rows)

        def cell(value: Any) -> Any:
            return str(value) if isinstance(value, (list, tuple, dict)) else value

        return self._wandb.Table(columns=columns, data=[[cell(r.get(c)) for c in columns] for r in rows])

    def summary(self, metrics: Mapping[str, Any]) -> None:
        self.run.summary.update(dict(metrics))

    def log_checkpoints(self, directory: str | Path) -> None:
        """With ``logger.log_checkpoints=true``: every final checkpoint of the run (not the per-epoch ones) as a
        ``model`` artifact named ``<checkpoint>-<run id>``, its ``meta.json`` essentials as metadata."""
        from wiseft_lab.models.checkpoint import is_checkpoint, read_meta

        if not self.checkpoints or not Path(directory).is_dir():
            return
        for path in sorted(Path(directory).iterdir()):
            if not is_checkpoint(path) or path.name.startswith(EPOCH_PREFIX):
                continue
            meta = read_meta(path)
            artifact = self._wandb.Artifact(f"{path.name}-{self.run.id}", type="model", metadata={
                "arch": meta.arch, "pretrained": meta.pretrained, "method": meta.method, "dataset": meta.dataset,
                "seed": meta.seed, "precision": meta.precision, "metrics": meta.metrics})
            artifact.add_dir(str(path))
            self.run.log_artifact(artifact, aliases=["latest", path.name])
        log.info("W&B: logged the checkpoints of %s as artifacts", directory)

    def close(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def wandb_run_id(run_dir: Path) -> str | None:
    """The id of the newest W&B run written in a run directory (``wandb/<offline->run-<time>-<id>``), or None."""
    runs = sorted(p for p in Path(run_dir).glob("wandb/*run-*") if p.is_dir())
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def create_logger(cfg: Mapping[str, Any] | None, run_dir: Path, config: Mapping[str, Any], **run_fields: Any):
    """Instantiate ``logger`` (a ``_target_`` partial: W&B or none) for one run; no config: :class:`NullLogger`."""
    if not cfg:
        return NullLogger()
    from hydra.utils import instantiate

    return instantiate(cfg)(run_dir=run_dir, config=config, **run_fields)
