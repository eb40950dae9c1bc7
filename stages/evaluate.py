"""Stage evaluate: a tuned model (base + what train saved) on the test split.

    python stages/evaluate.py --model smollm2-135m --method lora --seed 42
"""

from ftbench.evaluation import evaluate
from ftbench.methods import load_tuned
from ftbench.params import load_params
from ftbench.registry import load_tokenizer, pick_device, pick_dtype
from ftbench.stage import main, model_dir, parser, predictions_path, run_metrics_dir, run_name


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=int, required=True)
    args = p.parse_args()
    params = load_params(args.params)
    spec, cfg = params.model(args.model), params.method(args.method)
    device = pick_device(params.run.device)
    dtype = pick_dtype(params.train.dtype, device)
    run_id = run_name(args.method, args.seed)

    def load():
        model = load_tuned(args.method, args.model, spec, cfg, model_dir(args.model, run_id), dtype=dtype,
                           device=device)
        return model, load_tokenizer(args.model, spec)

    result = evaluate(load, params, device=device,
                      identity={"model": args.model, "method": args.method, "seed": args.seed},
                      out_dir=run_metrics_dir(args.model, run_id),
                      predictions_path=predictions_path(args.model, run_id))
    print(f"{args.model}/{run_id}: F1={result['f1']:.4f} EM={result['em']:.4f} n={result['n']}")


if __name__ == "__main__":
    main(run)
