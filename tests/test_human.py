"""Human votes: the file format and its lock, win/tie/loss and win rates, Bradley–Terry (hand-computed
cases, ties, a run that never wins), agreement with F1, the report hooks, and the human_eval stage in a
real `dvc repro` (no votes, then votes and `dvc metrics diff`)."""

from __future__ import annotations

import json
import math
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_project, run

from ftbench.human import (
    bradley_terry,
    html_section_context,
    make_vote,
    markdown_section,
    read_votes,
    summarise,
    summarise_model,
)
from ftbench.io import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "human_votes.jsonl"
# per-question F1 of each run, for the agreement checks
F1 = {"baseline": {"q1": 0.0, "q2": 0.5, "q3": 0.0}, "lora-s42": {"q1": 1.0, "q2": 0.5, "q3": 1.0},
      "top_layer-s42": {"q1": 0.5, "q2": 1.0, "q3": 0.0}}
PREDICTIONS = {run: {q: {"id": q, "f1": f} for q, f in scores.items()} for run, scores in F1.items()}


def _wins(pairs: dict[tuple[int, int], float], k: int) -> np.ndarray:
    w = np.zeros((k, k))
    for (i, j), n in pairs.items():
        w[i, j] = n
    return w


def _penalised_loglik(theta: np.ndarray, wins: np.ndarray, prior: float) -> float:
    """The objective written out independently of the fit: BT log-likelihood + the drawn virtual games."""
    log_sig = lambda x: -np.log1p(np.exp(-x))  # noqa: E731
    pairwise = (wins * log_sig(theta[:, None] - theta[None, :])).sum()
    return float(pairwise + prior / 2 * (log_sig(theta) + log_sig(-theta)).sum())


# --------------------------------------------------------------------------- Bradley–Terry


def test_bt_mle_two_runs_is_the_log_odds_of_wins():
    """a beats b 2 times, b beats a once: π_a / π_b = 2 (plain MLE), centred: θ = ±½ log 2."""
    theta = bradley_terry(_wins({(0, 1): 2, (1, 0): 1}, 2), prior_games=0)
    assert theta == pytest.approx([math.log(2) / 2, -math.log(2) / 2], abs=1e-9)


def test_bt_tie_counts_half_a_win():
    """a: 2 wins and 1 tie over b, b: the tie only -> wins 2.5 vs 0.5, π_a / π_b = 5 (MLE; a vanishing prior
    only keeps the bootstrap's resamples without b's tie finite)."""
    votes = [make_vote(rater="r", model="m", question_id=i, run_a="a", run_b="b", choice=c)
             for i, c in enumerate(["a", "a", "tie"])]
    model = summarise_model(votes, {}, n_resamples=200, seed=0, prior_games=1e-12)
    theta = model["runs"]["a"]["bt_log_strength"] - model["runs"]["b"]["bt_log_strength"]
    assert theta == pytest.approx(math.log(5), abs=1e-6)
    assert model["runs"]["a"]["win_rate"] == pytest.approx(2.5 / 3)
    assert model["pairs"]["a vs b"] == {"a": "a", "b": "b", "n": 3, "a_wins": 2, "b_wins": 0, "ties": 1,
                                        "both_bad": 0, "a_win_rate": pytest.approx(2.5 / 3)}


def test_bt_never_winning_run_needs_the_prior_and_stays_finite():
    """a beats b 3-0: the MLE is infinite (refused); with one drawn virtual game each against a reference
    of strength 1, symmetry gives θ_b = −θ_a and x = e^θ_a solves 3x²/(x²+1) + x/(x+1) = 3.5."""
    wins = _wins({(0, 1): 3}, 2)
    with pytest.raises(ValueError, match="infinite"):
        bradley_terry(wins, prior_games=0)
    lo, hi = 1.0, 10.0
    for _ in range(200):  # bisection on the hand-derived equation
        x = (lo + hi) / 2
        lo, hi = (x, hi) if 3 * x * x / (x * x + 1) + x / (x + 1) < 3.5 else (lo, x)
    theta = bradley_terry(wins, prior_games=1.0)
    assert theta == pytest.approx([math.log(x), -math.log(x)], abs=1e-9)
    assert theta[0] == pytest.approx(1.1706755, abs=1e-6)


def test_bt_three_runs_with_a_loser_maximises_the_objective():
    """a and b split 1-1 and each beat c twice; c never wins. θ_a = θ_b > θ_c, all finite, and no
    small move (nor a shift of the whole scale) raises the penalised likelihood."""
    wins = _wins({(0, 1): 1, (1, 0): 1, (0, 2): 2, (1, 2): 2}, 3)
    theta = bradley_terry(wins, prior_games=1.0)
    assert np.isfinite(theta).all() and theta.mean() == pytest.approx(0, abs=1e-12)
    assert theta[0] == pytest.approx(theta[1], abs=1e-9) and theta[2] < theta[0]
    shifts = np.linspace(-3, 3, 60001)
    best = theta + shifts[np.argmax([_penalised_loglik(theta + s, wins, 1.0) for s in shifts])]
    top = _penalised_loglik(best, wins, 1.0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert _penalised_loglik(best + rng.normal(size=3) * 1e-3, wins, 1.0) <= top + 1e-9


# --------------------------------------------------------------------------- counts, win rates, agreement


def test_fixture_counts_win_rates_and_f1_agreement_by_hand():
    """tests/fixtures/human_votes.jsonl, counted by hand: the baseline never wins (not even a tie)."""
    result = summarise(read_votes(FIXTURE), {"tiny": PREDICTIONS}, n_resamples=300, seed=1)
    tiny = result["models"]["tiny"]
    assert result["status"] == "ok" and result["n_votes"] == 7 and tiny["raters"] == 2
    runs = tiny["runs"]
    assert {r: (s["n"], s["wins"], s["ties"], s["losses"]) for r, s in runs.items()} == {
        "baseline": (5, 0, 0, 5), "lora-s42": (5, 4, 1, 0), "top_layer-s42": (4, 2, 1, 1)}
    assert [runs[r]["win_rate"] for r in ("baseline", "lora-s42", "top_layer-s42")] == \
        pytest.approx([0.0, 0.9, 0.625])
    pairs = {k: (p["n"], p["a_wins"], p["b_wins"], p["ties"], p["both_bad"]) for k, p in tiny["pairs"].items()}
    assert pairs == {"baseline vs lora-s42": (3, 0, 3, 0, 0), "baseline vs top_layer-s42": (2, 0, 2, 0, 0),
                     "lora-s42 vs top_layer-s42": (2, 1, 0, 0, 1)}
    assert tiny["pairs"]["lora-s42 vs top_layer-s42"]["a_win_rate"] == pytest.approx(0.75)
    bt = {r: s["bt_log_strength"] for r, s in runs.items()}
    assert bt["lora-s42"] > bt["top_layer-s42"] > bt["baseline"] and all(map(math.isfinite, bt.values()))
    for s in runs.values():  # bootstrap CIs bracket the estimates
        assert s["bt_ci95"][0] <= s["bt_log_strength"] + 1e-9 and s["bt_log_strength"] - 1e-9 <= s["bt_ci95"][1]
        assert s["win_rate_ci95"][0] <= s["win_rate"] <= s["win_rate_ci95"][1]
    assert runs["baseline"]["win_rate_ci95"] == [0.0, 0.0]
    # F1 agreement: 5 votes with a preference and unequal F1, 4 agree (q2 lora > top disagrees); q2 lora vs
    # baseline has equal F1; the both-bad vote has no preference.
    agreement = tiny["f1_agreement"]
    assert agreement == {"n": 5, "agree": 4, "rate": pytest.approx(0.8), "ci95": agreement["ci95"], "f1_tied": 1,
                         "no_preference": 1, "no_f1": 0}
    assert agreement["ci95"][0] <= 0.8 <= agreement["ci95"][1]
    again = summarise(read_votes(FIXTURE), {"tiny": PREDICTIONS}, n_resamples=300, seed=1)
    assert again == result  # seeded bootstrap: same votes, same file


def test_no_votes_says_so_and_lists_runs():
    result = summarise([], {"tiny": PREDICTIONS}, n_resamples=100, seed=0)
    assert result["status"] == "no votes" and result["n_votes"] == 0 and "ftbench.compare" in result["message"]
    assert set(result["models"]["tiny"]["runs"]) == set(F1)
    runs = result["models"]["tiny"]["runs"].values()
    assert all(s["win_rate"] is None and s["bt_ci95"] == [None, None] for s in runs)
    json.dumps(result, allow_nan=False)  # writable as metrics (no NaN)


# --------------------------------------------------------------------------- the votes file


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2 is not JSON"),
    ('{"rater": "x", "time": "t", "model": "m", "question_id": 1, "run_a": "a", "run_b": "b", "choice": "A"}',
     "choice 'A' is not one of"),
    ('{"rater": "x", "time": "t", "model": "m", "question_id": 1, "run_a": "a", "run_b": "a", "choice": "a"}',
     "run_a and run_b are both 'a'"),
    ('{"rater": "", "time": "t", "model": "m", "question_id": 1, "run_a": "a", "run_b": "b", "choice": "a"}',
     "no rater name"),
    ('{"rater": "x", "model": "m"}', "vote lacks time, question_id, run_a, run_b, choice"),
])
def test_malformed_vote_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "votes.jsonl"
    path.write_text(FIXTURE.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_votes(path)
    assert str(path) in str(err.value) and "line 2" in str(err.value)


def _append_many(path: str, rater: str, n: int) -> None:
    from ftbench.human import append_record

    for i in range(n):
        append_record(path, make_vote(rater=rater, model="m", question_id=i, run_a="a", run_b="b", choice="tie")
                      | {"padding": "x" * 5000})  # bigger than a pipe buffer page: a torn write would show


def test_two_processes_appending_lose_no_vote(tmp_path):
    path = tmp_path / "human" / "votes.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), name, 150)) for name in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    votes = read_votes(path)
    assert len(votes) == 300
    assert sorted((v["rater"], v["question_id"]) for v in votes) == sorted(
        (name, i) for name in ("p1", "p2") for i in range(150))


# --------------------------------------------------------------------------- report hooks


def test_report_hooks_without_and_with_votes():
    empty = markdown_section(None)
    assert "No human votes yet" in empty and "python -m ftbench.compare" in empty
    assert "git add data/human/votes.jsonl && dvc repro" in empty
    assert markdown_section(summarise([], {}, n_resamples=100, seed=0)) == empty
    ctx = html_section_context(None)
    assert ctx["has_votes"] is False and ctx["how_to"] and ctx["models"] == []

    human = summarise(read_votes(FIXTURE), {"tiny": PREDICTIONS}, n_resamples=200, seed=0)
    md = markdown_section(human)
    assert "### tiny (7 votes, 2 raters)" in md and "| baseline | lora-s42 | 3 | 0 | 3 | 0 | 0 | 0.00 |" in md
    assert "| lora-s42 | 5 | 4 | 1 | 0 | 0.90 [" in md and "won 4 of 5 votes" in md
    ctx = html_section_context(human)
    assert ctx["has_votes"] and ctx["models"][0]["model"] == "tiny"
    assert len(ctx["models"][0]["runs"][0]) == len(ctx["run_columns"])
    assert all(isinstance(c, str) and "<" not in c for row in ctx["models"][0]["runs"] for c in row)


# --------------------------------------------------------------------------- the stage in a real dvc repro


def test_human_eval_stage_in_dvc_repro_without_then_with_votes(tmp_path, tiny_llama):
    """One scratch project: `dvc repro human_eval` with the committed empty votes file, then with votes
    appended (as the app appends them) and committed; `dvc metrics diff` shows the scores moving."""
    root = make_project(tmp_path / "project", tiny_llama,
                        **{"run.methods": ["lora"], "eval.bootstrap_resamples": 100})
    # conftest.PIPELINE_FILES copies data/human: the votes file is committed empty in the repository
    assert (root / "data/human/votes.jsonl").read_text() == (REPO / "data/human/votes.jsonl").read_text() == ""

    run(["dvc", "repro", "human_eval"], root)
    empty = json.loads((root / "metrics/human.json").read_text())
    assert empty["status"] == "no votes" and empty["n_votes"] == 0
    assert set(empty["models"]["tiny"]["runs"]) == {"baseline", "lora-s42"}
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "no votes"], root)

    ids = [json.loads(line)["id"] for line in (root / "predictions/tiny/baseline.jsonl").read_text().splitlines()]
    votes = [make_vote(rater="ann", model="tiny", question_id=ids[i % len(ids)], run_a="baseline", run_b="lora-s42",
                       choice=c) for i, c in enumerate(["b", "b", "b", "tie", "a"])]
    (root / "data/human/votes.jsonl").write_text("".join(json.dumps(v) + "\n" for v in votes))
    proc = run(["dvc", "repro", "human_eval"], root)
    assert "Running stage 'human_eval'" in proc.stdout
    assert "Running stage 'evaluate@tiny-lora-42'" not in proc.stdout  # only the votes changed
    human = json.loads((root / "metrics/human.json").read_text())
    lora = human["models"]["tiny"]["runs"]["lora-s42"]
    assert human["n_votes"] == 5 and (lora["wins"], lora["ties"], lora["losses"]) == (3, 1, 1)
    assert lora["win_rate"] == pytest.approx(0.7) and lora["win_rate_ci95"][0] <= 0.7 <= lora["win_rate_ci95"][1]
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "votes"], root)

    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json", "--targets", "metrics/human.json"],
                          root).stdout)["metrics/human.json"]
    assert diff["n_votes"] == {"old": 0, "new": 5, "diff": 5}
    moved = diff["models.tiny.runs.lora-s42.win_rate"]
    assert moved["old"] is None and moved["new"] == pytest.approx(0.7)
    assert "up to date" in run(["dvc", "status", "human_eval"], root).stdout
