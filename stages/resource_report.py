"""Stage resource_report: the quality-vs-cost verdict, every run side by side, paired tests, charts and HTML.

    python stages/resource_report.py

Writes metrics/comparison.{json,csv,md}, metrics/verdict.json (the only one declared a DVC metric: a few
strings per model), plots/ (quality.csv, cost.csv, PNGs) and reports/index.html.
"""

from ftbench.params import load_params
from ftbench.report.build import build, summary_line
from ftbench.stage import main, parser


def run() -> None:
    args = parser(__doc__).parse_args()
    print(summary_line(build(load_params(args.params))))


if __name__ == "__main__":
    main(run)
