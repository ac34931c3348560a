"""Console entry point ``wiseft-lab-report`` (and ``python -m wiseft_lab.report_cli``): a paper's table from our runs.

    wiseft-lab-report --table wiseft_table1_e2e outputs/multirun/wiseft_vit_l14_336_e2e/<time> --out reports/t1
    wiseft-lab-report --list

Prints the Markdown table (ours, the paper's, the difference, per cell) and writes report.md, report.tex,
report.csv, report.json and report.png into --out (default outputs/reports/<table>).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from wiseft_lab.reporting.paper.published import tables
from wiseft_lab.reporting.paper.render import report, to_markdown
from wiseft_lab.reporting.paper.runs import ReportError


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
    parser.add_argument("--table", help="which table (see --list)")
    parser.add_argument("--out", help="output directory (default outputs/reports/<table>)")
    parser.add_argument("--columns", action="append", metavar="PAPER=OURS[,...]",
                        help="map paper columns to our evaluation sets (repeatable)")
    parser.add_argument("--method", help="finetune.method of runs that do not record one (e2e, lc, ...)")
    parser.add_argument("--no-figure", action="store_true", help="skip report.png")
    parser.add_argument("--quiet", action="store_true", help="do not print the Markdown table")
    parser.add_argument("--list", action="store_true", help="list the tables and their sources, then exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_tables())
        return 0
    if not args.table or not args.paths:
        parser.error("give --table NAME and at least one run / multirun directory (or --list)")
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
