"""Console entry point ``wiseft-lab-report`` (and ``python -m wiseft_lab.report_cli``): tables of our runs.

    wiseft-lab-report outputs/multirun/demo/<time>             # any runs or sweeps: grouped, seeds aggregated
    wiseft-lab-report --table wiseft_table1_e2e outputs/multirun/wiseft_vit_l14_336_e2e/<time> --out reports/t1
    wiseft-lab-report --list

Without ``--table``: runs grouped by the config keys that differ (the seed aside), mean ± std over each group's
seeds; runs.md and runs.csv in --out (default outputs/reports/runs). With ``--table``: the paper's table (ours, the
paper's, the difference, per cell); report.md, report.tex, report.csv, report.json and report.png in --out
(default outputs/reports/<table>).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from wiseft_lab.io import atomic_write_text, write_csv
from wiseft_lab.reporting.paper.published import tables
from wiseft_lab.reporting.paper.render import report, to_markdown
from wiseft_lab.reporting.paper.runs import ReportError, find_results, load_run
from wiseft_lab.reporting.run_groups import runs_table


def list_tables() -> str:
    lines = []
    for name, spec in sorted(tables().items()):
        src = spec.source
        lines.append(f"{name}: {spec.title}\n    source: arXiv {src['arxiv']}, {src['table']}\n"
                     f"    published numbers: {spec.verification['status']}; presets: "
                     f"{', '.join(spec.view.get('presets', [])) or '-'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wiseft-lab-report", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render a paper's table from run / multirun directories: our number (mean ± std over runs), "
                    "the published number and the difference, per cell.",
        epilog=textwrap.dedent("""\
            Our evaluation-set names are mapped onto the paper's columns by the names each column accepts
            (imagenet, imagenet_v2, imagenet_r, imagenet_sketch, objectnet, imagenet_a, ...). Runs whose sets
            have other names are refused unless --columns says what they stand for, e.g.
              --columns IN=photo,V2=sketch,R=cartoon,Sketch=painting,ObjectNet=clutter
            For clipfit_b2n, --columns maps the paper's data-set rows to ours (e.g. --columns dtd=my_textures)."""))
    parser.add_argument("paths", nargs="*", help="run directories, multirun directories or results.jsonl files")
    parser.add_argument("--table", help="which paper table (see --list); without it, a table of the runs themselves")
    parser.add_argument("--out", help="output directory (default outputs/reports/<table>, or outputs/reports/runs)")
    parser.add_argument("--columns", action="append", metavar="PAPER=OURS[,...]",
                        help="map paper columns to our evaluation sets (repeatable)")
    parser.add_argument("--method", help="finetune.method of runs that do not record one (e2e, lc, ...)")
    parser.add_argument("--no-figure", action="store_true", help="skip report.png")
    parser.add_argument("--quiet", action="store_true", help="do not print the Markdown table")
    parser.add_argument("--list", action="store_true", help="list the tables and their sources, then exit")
    return parser


def runs_report(paths: Sequence[str], out: str | None, quiet: bool = False) -> int:
    """The table of the runs themselves (no paper): grouped by what differs, aggregated over seeds."""
    try:
        runs = [load_run(p) for p in find_results(paths)]
    except ReportError as err:
        print(f"wiseft-lab-report: error: {err}", file=sys.stderr)
        return 2
    text, rows = runs_table(runs)
    out_dir = Path(out or Path("outputs") / "reports" / "runs")
    written = [atomic_write_text(out_dir / "runs.md", text), write_csv(out_dir / "runs.csv", rows)]
    if not quiet:
        print(text)
    print("Written: " + ", ".join(str(p) for p in written))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_tables())
        return 0
    if not args.paths:
        parser.error("give at least one run / multirun directory (or --list)")
    if not args.table:
        return runs_report(args.paths, args.out, quiet=args.quiet)
    try:
        built, written = report(args.table, args.paths, args.out, columns=args.columns, method=args.method,
                                figure=not args.no_figure)
    except (ReportError, KeyError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"wiseft-lab-report: error: {message}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(to_markdown(built))
    print("Written: " + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
