"""Time the resampling paths of ftbench.metrics (run: python benchmarks/bench_metrics.py).

Why: document-level bootstrap CIs and paired tests run for every metric, every pair of systems and, with
several seeds, every seed, so they must stay in the millisecond range; BLEU resampling reuses per-document
sentence statistics instead of re-tokenising.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ftbench.metrics import (
    bleu_corpus,
    bleu_from_stats,
    bleu_sentence_stats,
    bootstrap_ci,
    bootstrap_ci_seeds,
    paired_test,
)


def main(n: int = 500, n_docs: int = 200, n_seeds: int = 3, n_resamples: int = 10000) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    refs = [" ".join(rng.choice(words, size=rng.integers(3, 15))) for _ in range(n)]
    preds_a = [" ".join(r.split()[: max(1, len(r.split()) - 2)]) for r in refs]
    preds_b = [" ".join(rng.choice(words, size=rng.integers(3, 15))) for _ in range(n)]
    docs = [f"d{i}" for i in np.sort(rng.integers(0, n_docs, size=n))]
    a = [{"f1": float(v)} for v in rng.random(n)]
    b = [{"f1": float(v)} for v in rng.random(n)]
    seeds_a = [[{"f1": float(v)} for v in rng.random(n)] for _ in range(n_seeds)]
    seeds_b = [[{"f1": float(v)} for v in rng.random(n)] for _ in range(n_seeds)]
    stats = bleu_sentence_stats(preds_a, refs)
    assert abs(bleu_from_stats(stats.sum(0)) - bleu_corpus(preds_a, refs)) < 1e-9
    bleu_texts = {"predictions_a": preds_a, "predictions_b": preds_b, "references": refs}
    cases: list[tuple[str, Callable[[], object]]] = [
        ("bootstrap_ci f1 pairs", lambda: bootstrap_ci(a, "f1", n_resamples=n_resamples)),
        ("bootstrap_ci f1 docs", lambda: bootstrap_ci(a, "f1", clusters=docs, n_resamples=n_resamples)),
        ("bootstrap_ci_seeds f1", lambda: bootstrap_ci_seeds(seeds_a, "f1", clusters=docs, n_resamples=n_resamples)),
        ("paired_test f1 docs", lambda: paired_test(a, b, "f1", clusters=docs, n_resamples=n_resamples)),
        ("paired_test f1 seeds", lambda: paired_test(seeds_a, seeds_b, "f1", clusters=docs, n_resamples=n_resamples)),
        (
            "bootstrap_ci bleu docs",
            lambda: bootstrap_ci(a, "bleu", clusters=docs, n_resamples=n_resamples, predictions=preds_a,
                                 references=refs),
        ),
        ("paired_test bleu docs", lambda: paired_test(a, b, "bleu", clusters=docs, n_resamples=n_resamples,
                                                      **bleu_texts)),
        (
            "paired_test bleu seeds",
            lambda: paired_test(seeds_a, seeds_b, "bleu", clusters=docs, n_resamples=n_resamples,
                                predictions_a=[preds_a] * n_seeds, predictions_b=[preds_b] * n_seeds,
                                references=refs),
        ),
    ]
    for label, fn in cases:
        t0 = time.perf_counter()
        fn()
        print(f"{label:24s} n={n} docs={len(set(docs))} resamples={n_resamples}: {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
