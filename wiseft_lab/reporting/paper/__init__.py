"""The paper tables: our numbers from run directories, the published numbers, and the differences, per cell.

``wiseft-lab-report [--table <name> RUN_OR_MULTIRUN_DIR... --out DIR`` (see :mod:`wiseft_lab.report_cli`) reads
every ``results.jsonl`` under the given paths (and the ``config.yaml`` beside it: method, seed, model), maps our
evaluation sets onto the paper's columns, aggregates several runs (seeds) per cell as mean ± std (n), and writes
``report.md``, ``report.tex``, ``report.csv``, ``report.json`` and ``report.png`` (the WiSE-FT curve against the
published points, or the soups scatter). A cell our runs did not produce is shown as missing ("—"), never filled.

Row semantics (the table's data file names them): ``zeroshot`` / ``finetuned`` / ``wiseft`` at a given alpha;
"optimal alpha" follows the paper: every column, the average included, takes its own best alpha
(:func:`wiseft_lab.reporting.tables.table1_rows`), chosen on the seed-mean of the sweep; the cell shows the mean
± std across runs at that alpha. Soup rows are the ``model`` names the soups merge writes (``uniform_soup``,
``greedy_soup``, ``learned_soup``, ``learned_soup_per_layer``, ``ensemble``; the best individual model is the
``ingredient`` row with ``best_individual: true``).
"""

from wiseft_lab.reporting.paper.render import report
from wiseft_lab.reporting.paper.runs import ReportError

__all__ = ["ReportError", "report"]
