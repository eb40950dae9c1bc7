"""Time the resampling paths of ftbench.metrics (run: python benchmarks/bench_metrics.py).

Why: bootstrap CIs and paired tests run for every metric and every pair of systems, so they must stay
in the millisecond range; BLEU resampling reuses sentence statistics instead of re-tokenising.
"""

from __future__ import annotations

import time

import numpy as np

from ftbench.metrics import bleu_corpus, bleu_from_stats, bleu_sentence_stats, bootstrap_ci, paired_test


def main(n: int = 500, n_resamples: int = 10000) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    refs = [" ".join(rng.choice(words, size=rng.integers(3, 15))) for _ in range(n)]
    preds_a = [" ".join(r.split()[: max(1, len(r.split()) - 2)]) for r in refs]
    preds_b = [" ".join(rng.choice(words, size=rng.integers(3, 15))) for _ in range(n)]
    a = [{"f1": float(v)} for v in rng.random(n)]
    b = [{"f1": float(v)} for v in rng.random(n)]
    stats = bleu_sentence_stats(preds_a, refs)
    assert abs(bleu_from_stats(stats.sum(0)) - bleu_corpus(preds_a, refs)) < 1e-9
    for label, fn in [
        ("bootstrap_ci f1", lambda: bootstrap_ci(a, "f1", n_resamples=n_resamples)),
        ("paired_test f1", lambda: paired_test(a, b, "f1", n_resamples=n_resamples)),
        (
            "bootstrap_ci bleu",
            lambda: bootstrap_ci(a, "bleu", n_resamples=n_resamples, predictions=preds_a, references=refs),
        ),
        (
            "paired_test bleu",
            lambda: paired_test(
                a,
                b,
                "bleu",
                n_resamples=n_resamples,
                predictions_a=preds_a,
                predictions_b=preds_b,
                references=refs,
            ),
        ),
    ]:
        t0 = time.perf_counter()
        fn()
        print(f"{label:20s} n={n} resamples={n_resamples}: {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
