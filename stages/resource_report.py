"""Stage resource_report: every run's quality and cost side by side, with paired tests, charts and HTML.

    python stages/resource_report.py

Writes metrics/comparison.{json,csv,md}, plots/ (quality.csv, cost.csv, PNGs) and reports/index.html.
"""

from ftbench import report
from ftbench.params import load_params
from ftbench.stage import main, parser


def run() -> None:
    args = parser(__doc__).parse_args()
    params = load_params(args.params)
    runs = report.load_runs(params)
    data = report.load_data_summary()
    n_resamples = params.eval.bootstrap_resamples
    comparison = report.compare(runs, n_resamples=n_resamples, seed=params.seed)
    charts = report.build_charts(runs, comparison)
    report.write_plots(comparison, charts)
    report.write_tables(comparison, data, n_resamples=n_resamples)
    report.write_html(comparison, runs, data, charts, n_resamples=n_resamples)
    print(report.summary_line(comparison))


if __name__ == "__main__":
    main(run)
