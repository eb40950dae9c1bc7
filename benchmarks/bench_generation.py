"""Evaluation throughput: ftbench's batched generation vs a plain ``model.generate`` loop at batch size 1.

    python benchmarks/bench_generation.py [--n 32] [--model smollm2-135m|DIR] [--src SRC] [--old-src OLD/src]
                                          [--sides ftbench,unshared,dynamic,wide,whole,plain] [--repeat N]

Both sides answer the same first ``--n`` questions of data/processed/test.jsonl with the same prompts
(``ftbench.generation.prompts_for``: eval.prompt, eval.system_prompt, contexts fitted to train.max_seq_len),
greedy, eval.max_new_tokens, on the base model as ``ftbench.registry.load_model`` loads it; one after the
other, each in a fresh process after one untimed warm-up generation; the timer covers rendering the
prompts and generating (model load excluded). ftbench's side is
``generate_answers`` with eval.batch_size and the latency probe off; the plain side is the loop a user
would write first. Prints examples/s of each, the ratio, and how many greedy answers differ: batched
greedy decoding with left padding can flip a near-tie token, so a few differences are expected; many
would mean the batched path is broken. A third side, ``unshared``, is ftbench with ``eval.share_prefix``
off (every prompt prefilled whole): what sharing the same document's prefix buys. A fourth, ``dynamic``, is
ftbench with ``static_cache=False`` (transformers' growing DynamicCache instead of the preallocated one):
what writing the key/value cache in place buys. A fifth, ``wide``, is ftbench with ``weight_first=False``
(every linear layer as ``F.linear``, also on the few rows of a decoding step): what
``ftbench.skinny.weight_first`` buys. A sixth, ``whole``, is ftbench with the packed prefill's attention over
whole packed rows instead of segment by segment (``ftbench.prefix.segment_attention`` off): what that buys.
``--old-src`` adds ftbench's generation imported from an
older checkout (``git worktree add``) as a last side: the issue's "2x main at 864b65d", measured in the
same run. ``--sides`` picks sides (ftbench always runs); ``--repeat N`` runs them all N times, the order
rotated each round, and prints the median [min, max] of each ratio over the rounds, the figure to quote on
machines whose speed swings between runs.
Why: evaluation cost is dominated by generation; the issue's target is a ratio measured in one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import (
    Settings,
    add_common_args,
    call,
    emit,
    forwarded,
    ftbench_origin,
    load_settings,
    old_side_argv,
    print_ratio_medians,
    read_rows,
    rotated,
    run_rounds,
    use_src,
)


def _model(s: Settings) -> tuple[Any, Any]:
    from ftbench.registry import load_model, load_tokenizer

    return load_model(s.name, s.spec, dtype=s.dtype, device=s.device), load_tokenizer(s.name, s.spec)


def _prompts(s: Settings, tok: Any, rows: list[dict]) -> list[str]:
    from ftbench.generation import prompts_for

    return call(prompts_for, tok, rows, style=s.eval.prompt, system_prompt=s.eval.system_prompt,
                max_prompt_tokens=s.train.max_seq_len, context_truncation=getattr(s.eval, "context_truncation", None))


def _generate_ftbench(s: Settings, model: Any, tok: Any, rows: list[dict], batch_size: int,
                      share_prefix: bool = True, static_cache: bool = True, weight_first: bool = True) -> list[str]:
    from ftbench.generation import generate_answers

    answers, _ = call(generate_answers, model, tok, rows, style=s.eval.prompt, system_prompt=s.eval.system_prompt,
                      max_new_tokens=s.eval.max_new_tokens, batch_size=batch_size,
                      max_prompt_tokens=s.train.max_seq_len, device=s.device, latency_examples=0,
                      context_truncation=getattr(s.eval, "context_truncation", None), share_prefix=share_prefix,
                      static_cache=static_cache, weight_first=weight_first)
    return answers


def side_ftbench(s: Settings, args: argparse.Namespace, share_prefix: bool = True, static_cache: bool = True,
                 weight_first: bool = True) -> dict:
    model, tok = _model(s)
    rows = read_rows("test", args.n)
    _generate_ftbench(s, model, tok, rows[:1], 1, static_cache=static_cache, weight_first=weight_first)  # warm-up
    start = time.perf_counter()
    answers = _generate_ftbench(s, model, tok, rows, s.eval.batch_size, share_prefix, static_cache, weight_first)
    return {"seconds": time.perf_counter() - start, "answers": answers, "batch_size": s.eval.batch_size}


def side_unshared(s: Settings, args: argparse.Namespace) -> dict:
    return side_ftbench(s, args, share_prefix=False)


def side_dynamic(s: Settings, args: argparse.Namespace) -> dict:
    return side_ftbench(s, args, static_cache=False)


def side_wide(s: Settings, args: argparse.Namespace) -> dict:
    return side_ftbench(s, args, weight_first=False)


def side_whole(s: Settings, args: argparse.Namespace) -> dict:
    """ftbench with the packed prefill's attention over whole rows (no ``prefix.segment_attention``)."""
    from contextlib import nullcontext

    from ftbench import generation

    generation.segment_attention = lambda spans: nullcontext()  # this side's own process: nothing else sees it
    return side_ftbench(s, args)


def side_plain(s: Settings, args: argparse.Namespace) -> dict:
    import torch

    model, tok = _model(s)
    model.eval()
    tok.truncation_side = "left"
    stop = model.generation_config.eos_token_id
    stop = list(stop) if isinstance(stop, list | tuple) else [stop] if stop is not None else []
    stop += [tok.eos_token_id] if tok.eos_token_id is not None and tok.eos_token_id not in stop else []

    @torch.no_grad()
    def answer(prompt: str) -> str:
        enc = tok(prompt, return_tensors="pt", truncation=True, max_length=s.train.max_seq_len,
                  add_special_tokens=False).to(s.device)
        out = model.generate(**enc, max_new_tokens=s.eval.max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=stop, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    rows = read_rows("test", args.n)
    answer(_prompts(s, tok, rows[:1])[0])  # untimed warm-up
    start = time.perf_counter()  # prompt building is timed too, as it is inside generate_answers
    answers = [answer(p) for p in _prompts(s, tok, rows)]
    return {"seconds": time.perf_counter() - start, "answers": answers, "batch_size": 1}


SIDES = {"ftbench": side_ftbench, "unshared": side_unshared, "dynamic": side_dynamic, "wide": side_wide,
         "whole": side_whole, "plain": side_plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.add_argument("--n", type=int, default=32, help="first N questions of data/processed/test.jsonl")
    ap.add_argument("--show", type=int, default=3, help="differing answers to print")
    ap.add_argument("--sides", default=",".join(SIDES),
                    help=f"comma-separated sides to run (default all: {','.join(SIDES)}); ftbench always runs")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of all sides, order rotated each round (a multiple of the number of sides runs "
                         "each side in each position equally often); prints each round and the median ratios")
    ap.add_argument("--old-src", help="also run ftbench's generation from this older src/ (same questions)")
    ap.add_argument("--old-params", help="params file of the old side (default: the one beside --old-src)")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be positive")
    if args.repeat < 1:
        ap.error("--repeat must be positive")
    args.sides = list(dict.fromkeys(["ftbench", *(x.strip() for x in args.sides.split(",") if x.strip())]))
    if unknown := [x for x in args.sides if x not in SIDES]:
        ap.error(f"--sides: unknown {', '.join(unknown)} (known: {', '.join(SIDES)})")
    use_src(args)
    s = load_settings(args)
    if args.side:
        emit(SIDES[args.side](s, args))
        return

    from ftbench.registry import resolve

    resolve(s.name, s.spec)  # materialise a GGUF model once, before either side is timed
    argv = ["--n", str(args.n), *forwarded(args, ["model", "src", "threads", "params"])]
    sides = [(side, side, argv) for side in args.sides]
    if args.old_src:
        sides.append(("old", "ftbench", old_side_argv(argv, args.old_src, args.old_params)))
    rounds = run_rounds(__file__, sides, args.repeat)
    n = len(rounds[0]["ftbench"]["answers"])
    print(f"greedy generation on {s.name} ({s.device}, {str(s.dtype).removeprefix('torch.')}); {n} test questions, "
          f"max_new_tokens {s.eval.max_new_tokens}, prompt {s.eval.prompt}")
    print(f"ftbench imported from {ftbench_origin()}")
    if args.old_src:
        print(f"old: ftbench imported from {Path(args.old_src).resolve()}")
    ratios: dict[str, list[float]] = {f"ftbench/{other}": [] for other, _, _ in sides if other != "ftbench"}
    for k, results in enumerate(rounds):
        if len(rounds) > 1:
            print(f"\nround {k + 1} of {len(rounds)} (run in the order {', '.join(rotated(list(results), k))})")
        print(f"{'side':<8} {'batch':>5} {'seconds':>8} {'examples/s':>10}")
        for side, r in results.items():
            r["examples_per_s"] = n / r["seconds"]
            print(f"{side:<8} {r['batch_size']:>5} {r['seconds']:>8.1f} {r['examples_per_s']:>10.2f}")
        a = results["ftbench"]
        for other in results:
            if other == "ftbench":
                continue
            b = results[other]
            ratios[f"ftbench/{other}"].append(a["examples_per_s"] / b["examples_per_s"])
            differ = [i for i, (x, y) in enumerate(zip(a["answers"], b["answers"], strict=True)) if x != y]
            print(f"ratio ftbench/{other}: examples/s {a['examples_per_s'] / b['examples_per_s']:.2f}x; "
                  f"greedy answers differing: {len(differ)} of {n}")
            for i in differ[:args.show]:
                print(f"  #{i}: ftbench {a['answers'][i]!r} | {other} {b['answers'][i]!r}")
    if len(rounds) > 1 and ratios:
        print_ratio_medians({f"{name} examples/s": values for name, values in ratios.items()})


if __name__ == "__main__":
    main()
