"""Stage evaluate: a tuned model (base + what train saved) on the test split.

    python stages/evaluate.py --model smollm2-135m --method lora --seed 42
"""

from ftbench.evaluation import evaluate
from ftbench.methods import load_tuned
from ftbench.registry import load_tokenizer
from ftbench.stage import main, model_dir, model_run, predictions_path, run_metrics_dir


def run() -> None:
    r = model_run(__doc__, tuned=True)

    def load():
        model = load_tuned(r.method, r.model, r.spec, r.cfg, model_dir(r.model, r.run_id), dtype=r.dtype,
                           device=r.device)
        return model, load_tokenizer(r.model, r.spec)

    result = evaluate(load, r.params, device=r.device,
                      identity={"model": r.model, "method": r.method, "seed": r.seed},
                      out_dir=run_metrics_dir(r.model, r.run_id), predictions_path=predictions_path(r.model, r.run_id))
    print(f"{r.model}/{r.run_id}: F1={result['f1']:.4f} EM={result['em']:.4f} n={result['n']}")


if __name__ == "__main__":
    main(run)
