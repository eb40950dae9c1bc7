"""Stage resource_report: every run's quality and cost side by side, with paired tests, charts and HTML.

    python stages/resource_report.py

Writes metrics/comparison.{json,csv,md}, plots/ (quality.csv, cost.csv, PNGs) and reports/index.html.
"""

from ftbench import report
from ftbench.params import load_params
from ftbench.stage import main, parser


def run() -> None:
    args = parser(__doc__).parse_args()
    comparison = report.build(load_params(args.params))
    print(report.summary_line(comparison))


if __name__ == "__main__":
    main(run)
