"""The verdict a user came for: which methods are on the quality-versus-cost front, and which are dominated.

Quality is test F1; cost is one axis at a time (training time, peak training memory). Dominance follows the
same significance rule as every other sentence of the report, so the front never rests on a quality
difference the test could not see:

    B dominates A on a cost axis  ⇔  cost(B) ≤ (1 + tol)·cost(A) and F1(B) is significantly higher
                                      (Holm-adjusted p < α),
                                  or  cost(B) < (1 − tol)·cost(A), the F1 difference is not significant
                                      and F1(B) ≥ F1(A) (B is cheaper and not even nominally worse).

"Not significant" is not "equal": a dearer method whose F1 is higher but not significantly so (the test
split cannot tell) stays on the front rather than being called dominated by a cheaper, nominally worse one.

``tol`` (``COST_TOLERANCE``) treats costs within a few per cent as equal: a single timing of a run varies
that much, and a 1 % difference must not decide a verdict. The baseline is not trained, so it is not on
either axis (its F1 is drawn as a reference line). A method whose cost was not measured is neither on the
front nor dominated.
"""

from __future__ import annotations

from typing import Any

#: Cost axes of the front: (row field, words used in the report).
COSTS: tuple[tuple[str, str], ...] = (("train_seconds", "training time"), ("peak_memory_mb", "peak memory"))
COST_TOLERANCE = 0.05
METRIC = "f1"


def f1_test(pairwise: dict[str, dict], a: str, b: str) -> dict:
    """The F1 test oriented as b − a, whichever order the pair was tested in."""
    if f"{b}_vs_{a}" in pairwise:
        return pairwise[f"{b}_vs_{a}"][METRIC]
    test = pairwise[f"{a}_vs_{b}"][METRIC]
    return {**test, "delta": -test["delta"]}


def dominance(cost_b: float, cost_a: float, test: dict, tol: float = COST_TOLERANCE) -> str | None:
    """Why B dominates A (``"better"``: significantly higher F1 at no more cost; ``"cheaper"``: clearly
    cheaper, and an F1 not lower, the difference not significant), or None. ``test`` is the F1 test of b − a."""
    if test["significant"]:
        return "better" if test["delta"] > 0 and cost_b <= (1 + tol) * cost_a else None
    return "cheaper" if cost_b < (1 - tol) * cost_a and test["delta"] >= 0 else None


def front(rows: dict[str, dict], pairwise: dict[str, dict], cost: str) -> dict[str, Any]:
    """``{"front": [methods], "dominated": {a: {"by": b, "reason": ..., "p_adjusted": ...}}, "not_measured"}``."""
    tuned = [m for m in rows if m != "baseline"]
    measured = [m for m in tuned if rows[m].get(cost) is not None and rows[m].get(METRIC) is not None]
    dominated: dict[str, dict] = {}
    for a in measured:
        for b in measured:
            if a == b:
                continue
            test = f1_test(pairwise, a, b)
            reason = dominance(rows[b][cost], rows[a][cost], test)
            if reason:
                dominated[a] = {"by": b, "reason": reason, "delta": test["delta"], "p_adjusted": test["p_adjusted"]}
                break
    return {"front": [m for m in measured if m not in dominated], "dominated": dominated,
            "not_measured": [m for m in tuned if m not in measured]}


def fronts(rows: dict[str, dict], pairwise: dict[str, dict]) -> dict[str, dict]:
    """:func:`front` for every cost axis of one model."""
    return {cost: front(rows, pairwise, cost) for cost, _ in COSTS}


def _names(methods: list[str]) -> str:
    return ", ".join(methods) if methods else "none"


def best(rows: dict[str, dict], pairwise: dict[str, dict]) -> list[str]:
    """The tuned method with the highest F1, then every other whose F1 is not significantly lower (Holm):
    the methods the test split cannot tell apart at the top, in params order."""
    scored = [m for m in rows if m != "baseline" and rows[m].get(METRIC) is not None]
    if not scored:
        return []
    top = max(scored, key=lambda m: rows[m][METRIC])
    return [m for m in scored if m == top or not f1_test(pairwise, top, m)["significant"]]


def verdict(rows: dict[str, dict], pairwise: dict[str, dict], frontier: dict[str, dict]) -> dict[str, str]:
    """One model's verdict as a few strings, the study's DVC metric (metrics/verdict.json): the best methods on
    F1 and the front on each cost axis. Keys end with the per-run metric they rank (``best_f1``,
    ``front_train_seconds``, ``front_peak_memory_mb``), so the README's ``dvc exp show`` filter keeps both."""
    return {f"best_{METRIC}": _names(best(rows, pairwise)),
            **{f"front_{cost}": _names(frontier[cost]["front"]) for cost, _ in COSTS}}


def _why(a: str, d: dict, cost_words: str) -> str:
    b = d["by"]
    if d["reason"] == "better":
        return (f"{a} by {b} ({b} is better than {a} on F1, adjusted p = {d['p_adjusted']:.2g}, at no more "
                f"{cost_words}, within {COST_TOLERANCE:.0%})")
    delta = f"{'−' if round(d['delta'], 3) < 0 else '+'}{abs(d['delta']):.3f}"  # never "−0.000"
    return f"{a} by {b} ({b} needs less {cost_words} and its F1 is not lower: ΔF1 = {delta}, not significant)"


def verdict_sentence(model: str, frontier: dict[str, dict]) -> str:
    """One sentence per model: the front and the dominated methods on each cost axis, with the reason."""
    parts = []
    for cost, words in COSTS:
        f = frontier[cost]
        text = f"on F1 vs {words} the front is {_names(f['front'])}"
        if f["dominated"]:
            text += "; dominated: " + "; ".join(_why(a, d, words) for a, d in f["dominated"].items())
        if f["not_measured"]:
            text += f"; not measured: {_names(f['not_measured'])}"
        parts.append(text)
    return f"{model}: " + ", and ".join(parts) + "."
