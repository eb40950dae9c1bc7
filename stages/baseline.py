"""Stage baseline: the untuned model on the test split (zero-shot), same prompts and metrics as evaluate.

    python stages/baseline.py --model smollm2-135m
"""

from ftbench.evaluation import evaluate
from ftbench.params import load_params
from ftbench.registry import load_model, load_tokenizer, pick_device, pick_dtype
from ftbench.stage import main, parser, predictions_path, run_metrics_dir


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="a name from the models registry in params.yaml")
    args = p.parse_args()
    params = load_params(args.params)
    spec = params.model(args.model)
    device = pick_device(params.run.device)
    dtype = pick_dtype(params.train.dtype, device)

    def load():
        return load_model(args.model, spec, dtype=dtype, device=device), load_tokenizer(args.model, spec)

    result = evaluate(load, params, device=device, identity={"model": args.model, "method": "baseline"},
                      out_dir=run_metrics_dir(args.model, "baseline"),
                      predictions_path=predictions_path(args.model, "baseline"))
    print(f"baseline {args.model}: F1={result['f1']:.4f} EM={result['em']:.4f} n={result['n']}")


if __name__ == "__main__":
    main(run)
