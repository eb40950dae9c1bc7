"""The resource_report stage's library: compare every run and write tables, charts and one HTML report.

One module per seam, each importing only the ones above it in this list:

* ``runs``     — loading eval.json / train.json / predictions, checked for comparability;
* ``frontier`` — the verdict: which methods are on the quality-versus-cost front, by the significance rule;
* ``compare``  — rows, document-clustered CIs and paired tests, Holm–Bonferroni over the report's family;
* ``tables``   — table cells, the wording rule, metrics/comparison.md and CSV text;
* ``charts``   — PNG charts (frontier, forest plot, quality, cost, time series), byte-stable;
* ``html``     — reports/index.html from ``templates/report.html.j2`` (Jinja2, autoescape on);
* ``build``    — the stage: load, compare, write every output atomically.

Published figures are data files here, not code: ``study.json`` (the reference study's table) and
``definitions.yaml`` (what every number means). This file imports nothing, so that ``dvc.yaml`` can list
exactly the modules the stage uses (tests/test_dvc_deps.py follows ``from ftbench.report.x import`` lines).
"""
