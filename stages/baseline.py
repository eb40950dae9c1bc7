"""Stage baseline: the untuned model on the test split (zero-shot), same prompts and metrics as evaluate.

    python stages/baseline.py --model smollm2-135m
"""

from ftbench.evaluation import evaluate
from ftbench.registry import load_model, load_tokenizer
from ftbench.stage import main, model_run, predictions_path, run_metrics_dir


def run() -> None:
    r = model_run(__doc__, tuned=False)

    def load():
        return load_model(r.model, r.spec, dtype=r.dtype, device=r.device), load_tokenizer(r.model, r.spec)

    result = evaluate(load, r.params, device=r.device, identity={"model": r.model, "method": "baseline"},
                      out_dir=run_metrics_dir(r.model, r.run_id), predictions_path=predictions_path(r.model, r.run_id))
    print(f"baseline {r.model}: F1={result['f1']:.4f} EM={result['em']:.4f} n={result['n']}")


if __name__ == "__main__":
    main(run)
