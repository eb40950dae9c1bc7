"""Stage human_eval: blind pairwise votes -> win/tie/loss, win rates and Bradley–Terry strengths with CIs.

    python stages/human_eval.py

Reads data/human/votes.jsonl (appended by the compare app, `python -m ftbench.compare`) and the
predictions (for the agreement with F1); writes metrics/human.json, also when there are no votes yet.
"""

from ftbench.human import HUMAN_METRICS, VOTES_PATH, read_predictions, read_votes, summarise
from ftbench.io import write_json
from ftbench.params import load_params
from ftbench.stage import main, parser


def run() -> None:
    args = parser(__doc__).parse_args()
    params = load_params(args.params)
    votes = read_votes(VOTES_PATH)
    result = summarise(votes, read_predictions(), n_resamples=params.eval.bootstrap_resamples, seed=params.seed)
    write_json(HUMAN_METRICS, result)
    print(f"human_eval: {len(votes)} votes over {len(result['models'])} model(s) -> {HUMAN_METRICS}")


if __name__ == "__main__":
    main(run)
