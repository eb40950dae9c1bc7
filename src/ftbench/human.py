"""Human judgements as data: blind pairwise votes and flags, and what they say about the runs.

The compare app (``ftbench.compare``) appends votes to ``data/human/votes.jsonl``; the ``human_eval``
stage turns them into ``metrics/human.json``; the report shows that file beside the automatic metrics.
Design choices, and why:

* **Append-only JSONL under an exclusive lock.** Votes are never rewritten, so the atomic
  write-to-temp-and-rename of ``ftbench.io`` (which replaces the whole file) would lose a vote that
  another rater appended meanwhile. Each record is one ``write`` to a file opened for appending while
  holding ``fcntl.flock``, so concurrent raters (threads of one server or separate processes) interleave
  whole lines and lose nothing.
* **Ties count half.** "tie" and "both bad" express no preference between the two runs: each run gets
  half a win, for win rates and for Bradley–Terry alike. They stay separate in the counts, because
  "both bad" also says something about the model.
* **Bradley–Terry with a small prior.** P(i beats j) = π_i / (π_i + π_j). The maximum-likelihood π of a
  run that never wins is 0 (log-strength −∞), which no CI or table can show. Each run therefore also
  plays :data:`BT_PRIOR_GAMES` virtual games against a fixed reference of strength 1 and draws them
  (half a win each). That is a weak prior pulling log-strengths towards 0; it keeps every estimate
  finite and vanishes as real votes accumulate. Reported log-strengths are centred to mean 0 per model.
* **Bootstrap over votes.** CIs resample the model's votes with replacement and refit, percentile 95 %.
* **Agreement with F1.** For a vote with a preference (A or B) on a question where the two runs' token
  F1 differ, the human agrees with F1 when the preferred run has the higher F1.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ftbench.io import DataError, read_json, read_jsonl
from ftbench.stage import predictions_path

VOTES_PATH = Path("data/human/votes.jsonl")
FLAGS_PATH = Path("data/human/flags.jsonl")
HUMAN_METRICS = Path("metrics/human.json")
PREDICTIONS_DIR = Path("predictions")

CHOICES = ("a", "b", "tie", "both_bad")
SCORE_A = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}  # run_a's share of the vote
VOTE_KEYS = ("rater", "time", "model", "question_id", "run_a", "run_b", "choice")
BT_PRIOR_GAMES = 1.0  # virtual drawn games per run against a reference of strength 1 (see module docstring)

START_COMMAND = "python -m ftbench.compare"
# How to start rating, as (text, command or None): plain text, so the report's Markdown and HTML can each
# format the commands their own way.
HOW_TO_RATE = [
    ("Start the compare app (then open http://127.0.0.1:7860)", START_COMMAND),
    ("In the Rate (blind) tab, enter your name, pick a model and vote on pairs of answers (A better / B better / "
     "tie / both bad); the runs are named after each vote", None),
    ("Votes are appended to data/human/votes.jsonl; commit them and rerun the pipeline (then "
     "dvc metrics diff --targets metrics/human.json shows the human scores moving)",
     "git add data/human/votes.jsonl && dvc repro"),
]


def utc_now() -> str:
    """The vote/flag timestamp: UTC, ISO 8601, seconds, with a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def append_record(path: str | Path, record: dict) -> None:
    """Append one JSON line to ``path`` under an exclusive ``flock`` (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def make_vote(*, rater: str, model: str, question_id: Any, run_a: str, run_b: str, choice: str) -> dict:
    """A well-formed vote record, timestamped now; raises ``DataError`` for what the file must not hold."""
    vote = {"rater": (rater or "").strip(), "time": utc_now(), "model": model, "question_id": question_id,
            "run_a": run_a, "run_b": run_b, "choice": choice}
    _check_vote(vote, "vote")
    return vote


def _check_vote(vote: Any, where: str) -> None:
    fix = "the compare app writes this file; delete or repair that line (git diff shows what changed)"
    if not isinstance(vote, dict):
        raise DataError(f"{where}: a vote must be a JSON object", fix=fix)
    missing = [k for k in VOTE_KEYS if k not in vote]
    if missing:
        raise DataError(f"{where}: vote lacks {', '.join(missing)}", fix=fix)
    if not isinstance(vote["rater"], str) or not vote["rater"].strip():
        raise DataError(f"{where}: vote has no rater name", fix="enter your name before voting")
    if vote["choice"] not in CHOICES:
        raise DataError(f"{where}: choice '{vote['choice']}' is not one of {', '.join(CHOICES)}", fix=fix)
    if not all(isinstance(vote[k], str) and vote[k] for k in ("model", "run_a", "run_b")):
        raise DataError(f"{where}: model, run_a and run_b must be non-empty strings", fix=fix)
    if vote["run_a"] == vote["run_b"]:
        raise DataError(f"{where}: run_a and run_b are both '{vote['run_a']}'", fix=fix)


def read_votes(path: str | Path = VOTES_PATH) -> list[dict]:
    """Every vote in ``path`` (none if the file is missing or empty), each checked, naming the line."""
    path = Path(path)
    if not path.exists():
        return []
    votes = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            vote = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n} is not JSON ({e.msg})",
                            fix="delete or repair that line (was it merged by hand?)") from None
        _check_vote(vote, f"{path}: line {n}")
        votes.append(vote)
    return votes


def model_predictions(root: str | Path, model: str) -> dict[str, dict[str, dict]]:
    """run -> question id -> prediction row of one model, from the committed ``predictions/`` files."""
    folder = Path(root) / predictions_path(model, "baseline").parent
    return {path.stem: {str(r["id"]): r for r in read_jsonl(path)} for path in sorted(folder.glob("*.jsonl"))}


def read_predictions(root: str | Path = ".") -> dict[str, dict[str, dict[str, dict]]]:
    """model -> run -> question id -> prediction row, for every model with predictions."""
    folders = sorted(p.name for p in (Path(root) / PREDICTIONS_DIR).glob("*") if p.is_dir())
    return {m: runs for m in folders if (runs := model_predictions(root, m))}


def winner(vote: dict) -> str | None:
    """The run the rater preferred, or None for a tie / both bad."""
    return vote[f"run_{vote['choice']}"] if vote["choice"] in ("a", "b") else None


# --------------------------------------------------------------------------- statistics


def _encode(runs: Sequence[str], votes: Sequence[dict]) -> np.ndarray:
    """(n, 3) array of votes: index of run_a, index of run_b, run_a's share (1, 0 or ½)."""
    index = {r: i for i, r in enumerate(runs)}
    return np.array([(index[v["run_a"]], index[v["run_b"]], SCORE_A[v["choice"]]) for v in votes],
                    dtype=np.float64).reshape(-1, 3)


def _wins_matrix(k: int, coded: np.ndarray) -> np.ndarray:
    """W[i, j] = wins of run i over run j, a tie or "both bad" counting half to each."""
    i, j, s = coded[:, 0].astype(int), coded[:, 1].astype(int), coded[:, 2]
    wins = np.zeros((k, k))
    np.add.at(wins, (i, j), s)
    np.add.at(wins, (j, i), 1.0 - s)
    return wins


def bradley_terry(wins: np.ndarray, prior_games: float = BT_PRIOR_GAMES, *, tol: float = 1e-10,
                  max_iter: int = 100) -> np.ndarray:
    """Log-strengths θ (mean 0) maximising the Bradley–Terry log-likelihood of ``wins`` plus the prior.

    Newton's method on the concave penalised log-likelihood, each run also drawing ``prior_games`` games
    against a reference of strength 1 (θ = 0). With ``prior_games > 0`` the optimum is finite and unique.
    ``prior_games = 0`` is the plain MLE, which exists only when every run both wins and loses something
    (a ``ValueError`` otherwise; a full check would also need the comparison graph to be connected).
    """
    if prior_games < 0:
        raise ValueError(f"prior_games must be >= 0, got {prior_games}")
    games = wins + wins.T
    won = wins.sum(axis=1)
    if prior_games == 0 and (np.any(won <= 0) or np.any(won >= games.sum(axis=1))):
        raise ValueError("the Bradley–Terry MLE is infinite: a run never wins or never loses; use prior_games > 0")
    theta = np.zeros(len(wins))
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # p[i, j] = P(i beats j)
        q = 1.0 / (1.0 + np.exp(-theta))  # P(i beats the reference)
        grad = won - (games * p).sum(axis=1) + prior_games * (0.5 - q)
        w = games * p * (1.0 - p)
        hess = w - np.diag(w.sum(axis=1) + prior_games * q * (1.0 - q))
        step = np.linalg.lstsq(hess, -grad, rcond=None)[0]  # lstsq: the plain MLE's Hessian is singular
        theta = theta + step
        if np.max(np.abs(step)) < tol:
            break
    return theta - theta.mean()


def _win_rates(wins: np.ndarray) -> np.ndarray:
    games = (wins + wins.T).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, wins.sum(axis=1) / np.maximum(games, 1e-300), np.nan)


def _ci(samples: np.ndarray) -> list[float | None]:
    kept = samples[~np.isnan(samples)]
    if kept.size == 0:
        return [None, None]
    lo, hi = np.quantile(kept, [0.025, 0.975])
    return [float(lo), float(hi)]


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _agreement(votes: Sequence[dict], runs_rows: dict[str, dict[str, dict]]) -> tuple[np.ndarray, dict]:
    """Per eligible vote 1 (human agrees with F1) / 0, and the counts of the votes left out."""
    flags, counts = [], {"f1_tied": 0, "no_preference": 0, "no_f1": 0}
    for v in votes:
        if v["choice"] not in ("a", "b"):
            counts["no_preference"] += 1
            continue
        qid = str(v["question_id"])
        f1 = [runs_rows.get(v[k], {}).get(qid, {}).get("f1") for k in ("run_a", "run_b")]
        if None in f1:
            counts["no_f1"] += 1
        elif f1[0] == f1[1]:
            counts["f1_tied"] += 1
        else:
            flags.append(1.0 if (f1[0] > f1[1]) == (v["choice"] == "a") else 0.0)
    return np.asarray(flags), counts


def summarise_model(votes: Sequence[dict], runs_rows: dict[str, dict[str, dict]], *, n_resamples: int,
                    seed: int, prior_games: float = BT_PRIOR_GAMES) -> dict:
    """One model's human scores: per-pair counts, per-run win rates and BT strengths with CIs, F1 agreement."""
    runs = sorted(set(runs_rows) | {v[k] for v in votes for k in ("run_a", "run_b")},
                  key=lambda r: (r != "baseline", r))
    coded = _encode(runs, votes)
    wins = _wins_matrix(len(runs), coded)
    rate, theta = _win_rates(wins), bradley_terry(wins, prior_games)
    rng = np.random.default_rng(seed)
    boot_rate, boot_theta = np.full((n_resamples, len(runs)), np.nan), np.full((n_resamples, len(runs)), np.nan)
    for b in range(n_resamples if votes else 0):
        w = _wins_matrix(len(runs), coded[rng.integers(0, len(votes), len(votes))])
        boot_rate[b], boot_theta[b] = _win_rates(w), bradley_terry(w, prior_games)

    pairs = {}
    for a, b in itertools.combinations(runs, 2):
        between = [v for v in votes if {v["run_a"], v["run_b"]} == {a, b}]
        a_wins = sum(1 for v in between if winner(v) == a)
        b_wins = sum(1 for v in between if winner(v) == b)
        ties = sum(1 for v in between if v["choice"] == "tie")
        both_bad = sum(1 for v in between if v["choice"] == "both_bad")
        pairs[f"{a} vs {b}"] = {"a": a, "b": b, "n": len(between), "a_wins": a_wins, "b_wins": b_wins, "ties": ties,
                                "both_bad": both_bad,
                                "a_win_rate": (a_wins + (ties + both_bad) / 2) / len(between) if between else None}
    index = {r: i for i, r in enumerate(runs)}
    per_run = {}
    for r, i in index.items():
        mine = [v for v in votes if r in (v["run_a"], v["run_b"])]
        won = sum(1 for v in mine if winner(v) == r)
        undecided = sum(1 for v in mine if v["choice"] in ("tie", "both_bad"))
        per_run[r] = {"n": len(mine), "wins": won, "ties": undecided, "losses": len(mine) - won - undecided,
                      "win_rate": _num(rate[i]), "win_rate_ci95": _ci(boot_rate[:, i]),
                      "bt_log_strength": float(theta[i]) if votes else None,
                      "bt_ci95": _ci(boot_theta[:, i])}
    agree, left_out = _agreement(votes, runs_rows)
    boot_agree = np.array([agree[rng.integers(0, agree.size, agree.size)].mean() for _ in range(n_resamples)]) \
        if agree.size else np.array([np.nan])
    return {"n_votes": len(votes), "raters": len({v["rater"] for v in votes}), "runs": per_run, "pairs": pairs,
            "f1_agreement": {"n": int(agree.size), "agree": int(agree.sum()),
                             "rate": float(agree.mean()) if agree.size else None, "ci95": _ci(boot_agree),
                             **left_out}}


def summarise(votes: Sequence[dict], predictions: dict[str, dict[str, dict[str, dict]]], *, n_resamples: int,
              seed: int) -> dict:
    """The content of ``metrics/human.json``: every model with predictions or votes, and how it was computed."""
    models = sorted(set(predictions) | {v["model"] for v in votes})
    result: dict[str, Any] = {
        "n_votes": len(votes),
        "status": "ok" if votes else "no votes",
        "method": {"ties": "tie and both_bad count half a win to each run",
                   "bradley_terry": f"maximum likelihood with {BT_PRIOR_GAMES:g} drawn virtual game(s) per run "
                                    "against a reference of strength 1 (keeps never-winning runs finite); "
                                    "log-strengths centred to mean 0",
                   "ci": f"percentile 95 % bootstrap over votes, {n_resamples} resamples, seed {seed}"},
        "models": {m: summarise_model([v for v in votes if v["model"] == m], predictions.get(m, {}),
                                      n_resamples=n_resamples, seed=seed) for m in models},
    }
    if not votes:
        result["message"] = "No human votes yet. " + " ".join(
            f"{text}: {command}." if command else f"{text}." for text, command in HOW_TO_RATE)
    return result


# --------------------------------------------------------------------------- report hooks


def load_human(path: str | Path = HUMAN_METRICS) -> dict | None:
    """``metrics/human.json`` if the ``human_eval`` stage has written it, else None."""
    path = Path(path)
    return read_json(path) if path.exists() else None


def _fmt(x: float | None, ci: Sequence[float | None] | None = None, signed: bool = False) -> str:
    if x is None:
        return "–"
    text = f"{x:+.2f}" if signed else f"{x:.2f}"
    if ci and None not in ci:
        text += f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if signed else f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


RUN_COLUMNS = ["run", "votes", "wins", "ties + both bad", "losses", "win rate [95 % CI]", "BT log-strength [95 % CI]"]
PAIR_COLUMNS = ["A", "B", "votes", "A wins", "B wins", "ties", "both bad", "A win rate"]


def _tables(model: dict) -> tuple[list[list[str]], list[list[str]]]:
    runs = [[r, str(s["n"]), str(s["wins"]), str(s["ties"]), str(s["losses"]), _fmt(s["win_rate"], s["win_rate_ci95"]),
             _fmt(s["bt_log_strength"], s["bt_ci95"], signed=True)] for r, s in model["runs"].items() if s["n"]]
    pairs = [[p["a"], p["b"], str(p["n"]), str(p["a_wins"]), str(p["b_wins"]), str(p["ties"]), str(p["both_bad"]),
              _fmt(p["a_win_rate"])] for p in model["pairs"].values() if p["n"]]
    return runs, pairs


def _agreement_text(model: dict) -> str:
    a = model["f1_agreement"]
    if not a["n"]:
        return "Agreement with F1: no vote with a preference on a question where the two runs' F1 differ."
    return (f"Agreement with F1: the run with the higher F1 on the question won {a['agree']} of {a['n']} votes "
            f"({_fmt(a['rate'], a['ci95'])}); left out: {a['no_preference']} tie / both bad, "
            f"{a['f1_tied']} with equal F1.")


def html_section_context(human: dict | None) -> dict:
    """Plain data for the report's Jinja2 template (strings and lists, no HTML)."""
    how_to = [{"text": text, "command": command} for text, command in HOW_TO_RATE]
    context: dict[str, Any] = {"title": "Human evaluation (blind pairwise votes)", "how_to": how_to,
                               "run_columns": RUN_COLUMNS, "pair_columns": PAIR_COLUMNS, "models": []}
    if not human or not human.get("n_votes"):
        context.update(has_votes=False, summary="No human votes yet.", method=[])
        return context
    context.update(has_votes=True, summary=f"{human['n_votes']} votes.", method=list(human["method"].values()))
    for name, model in human["models"].items():
        if model["n_votes"]:
            runs, pairs = _tables(model)
            context["models"].append({"model": name, "n_votes": model["n_votes"], "raters": model["raters"],
                                      "runs": runs, "pairs": pairs, "agreement": _agreement_text(model)})
    return context


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown_section(human: dict | None) -> str:
    """The human-evaluation section of ``comparison.md`` (or how to start rating when there are no votes)."""
    ctx = html_section_context(human)
    lines = [f"## {ctx['title']}", ""]
    if not ctx["has_votes"]:
        steps = (f"{i}. {s['text']}" + (f": `{s['command']}`" if s["command"] else "") + "."
                 for i, s in enumerate(ctx["how_to"], 1))
        lines += [ctx["summary"] + " To start rating:", "", *steps]
        return "\n".join(lines) + "\n"
    lines += [ctx["summary"] + " " + "; ".join(ctx["method"]) + ".", ""]
    for m in ctx["models"]:
        lines += [f"### {m['model']} ({m['n_votes']} votes, {m['raters']} raters)", "",
                  *_md_table(ctx["run_columns"], m["runs"]), "", *_md_table(ctx["pair_columns"], m["pairs"]), "",
                  m["agreement"], ""]
    return "\n".join(lines)
