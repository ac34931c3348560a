"""The base-to-novel table of the CoOp/CoCoOp/CLIPFit papers, from the run directories of a sweep.

Per data set: base and novel top-1 averaged over seeds, and HM = 2BN/(B+N) of those averages; the last row
averages base and novel over the data sets and takes HM of the averages (as the papers do)::

    python -m wiseft_lab.reporting.base_to_novel outputs/multirun/b2n_clipfit/<time>   # writes base_to_novel.md
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from statistics import mean
from typing import Any

from omegaconf import OmegaConf

from wiseft_lab.evaluation.metrics import harmonic_mean
from wiseft_lab.io import atomic_write_text, read_jsonl, write_json
from wiseft_lab.reporting.tables import markdown_table

COOP_ORDER = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "flowers102", "food101", "fgvc_aircraft",
              "sun397", "dtd", "eurosat", "ucf101")
MODEL_LABELS = {"zeroshot": "zero-shot", "finetuned": "fine-tuned"}


def model_label(row: dict[str, Any]) -> str:
    if row["model"] == "wiseft":
        return f"WiSE-FT α={row['alpha']:g}"
    return MODEL_LABELS.get(row["model"], row["model"])


def _roles(cfg) -> dict[str, str]:
    """``{"base": set name, "novel": set name}`` from the run's eval config (``classes`` of each set)."""
    roles = {}
    for name, ds in (cfg.get("eval", {}).get("datasets") or {}).items():
        classes = ds.get("classes") if hasattr(ds, "get") else None
        if classes in ("base", "novel", "new"):
            roles["novel" if classes == "new" else classes] = name
    return roles


def collect(root: str | Path) -> list[dict[str, Any]]:
    """One record per (run, evaluated model): method, data set, seed, model label, base and novel top-1."""
    records = []
    for results in sorted(Path(root).rglob("results.jsonl")):
        config = results.parent / "config.yaml"
        if not config.is_file():
            continue
        cfg = OmegaConf.load(config)
        roles = _roles(cfg)
        if set(roles) != {"base", "novel"}:
            continue
        for row in read_jsonl(results):
            base, novel = row.get(f"{roles['base']}/top1"), row.get(f"{roles['novel']}/top1")
            if base is None or novel is None:
                continue
            records.append({"method": cfg.finetune.method, "dataset": str(cfg.data.name), "seed": int(cfg.seed),
                            "model": model_label(row), "base": float(base), "novel": float(novel),
                            "run": str(results.parent)})
    return records


def _dataset_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    known = [n for n in COOP_ORDER if n in names]
    return known + sorted(names - set(known))


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{method: {"models": [...], "datasets": {name: {model: {base, novel, hm, seeds}}}, "average": {...}}}``."""
    out: dict[str, dict[str, Any]] = {}
    by_method: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_method[record["method"]].append(record)
    for method, rows in by_method.items():
        models = list(dict.fromkeys(r["model"] for r in rows))
        datasets: dict[str, dict[str, dict]] = {}
        for name in _dataset_order(r["dataset"] for r in rows):
            datasets[name] = {}
            for model in models:
                picked = [r for r in rows if r["dataset"] == name and r["model"] == model]
                if picked:
                    b, n = mean(r["base"] for r in picked), mean(r["novel"] for r in picked)
                    datasets[name][model] = {"base": b, "novel": n, "hm": harmonic_mean(b, n),
                                             "seeds": sorted(r["seed"] for r in picked)}
        average = {}
        for model in models:
            cells = [d[model] for d in datasets.values() if model in d]
            b, n = mean(c["base"] for c in cells), mean(c["novel"] for c in cells)
            average[model] = {"base": b, "novel": n, "hm": harmonic_mean(b, n), "datasets": len(cells)}
        out[method] = {"models": models, "datasets": datasets, "average": average}
    return out


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    """One table per method: a row per data set plus the average, base / novel / HM per evaluated model."""
    text = ("# Base-to-novel generalisation\n\n"
            "Top-1 accuracy (%), averaged over seeds; HM = 2BN/(B+N) of the averages.\n")
    for method, part in summary.items():
        models = part["models"]
        header = ["data set", "seeds", *[f"{m} {col}" for m in models for col in ("base", "novel", "HM")]]
        body = []
        for name, cells in part["datasets"].items():
            seeds = sorted({s for c in cells.values() for s in c["seeds"]})
            body.append([name, ",".join(map(str, seeds)),
                         *[_fmt(cells.get(m), k) for m in models for k in ("base", "novel", "hm")]])
        count = max((a["datasets"] for a in part["average"].values()), default=0)
        body.append([f"**average** ({count})", "",
                     *[_fmt(part["average"].get(m), k) for m in models for k in ("base", "novel", "hm")]])
        text += f"\n## {method}\n\n" + markdown_table(header, body)
    return text


def _fmt(cell: dict | None, key: str) -> str:
    return "-" if cell is None else f"{100 * cell[key]:.2f}"


def report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write ``base_to_novel.md`` and ``base_to_novel.json`` (next to ``out`` or in ``root``)."""
    records = collect(root)
    if not records:
        raise FileNotFoundError(f"No base-to-novel results (results.jsonl + config.yaml with base/novel eval sets) "
                                f"under {root}")
    summary = summarize(records)
    target = Path(out) if out else Path(root) / "base_to_novel.md"
    atomic_write_text(target, markdown(summary))
    write_json(target.with_suffix(".json"), {"summary": summary, "records": records})
    return target


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a run directory or a multirun directory (searched recursively)")
    parser.add_argument("--out", help="markdown file to write (default: <root>/base_to_novel.md)")
    args = parser.parse_args(argv)
    path = report(args.root, args.out)
    print(path.read_text())
    print(f"Written: {path} (+ {path.with_suffix('.json').name})")


if __name__ == "__main__":
    main()
