"""One optimizer step's gradients, as `torchrun --nproc_per_node N tests/dist_step.py ...` computes them, or one
plain process when run with `python` (test_distributed.py compares the two).

    python tests/dist_step.py <tiny model dir> <lora|top_layer> <out.pt>
"""

import sys

import torch
from transformers import AutoTokenizer

from ftbench.distributed import start
from ftbench.methods import prepare
from ftbench.params import LoraParams, ModelSpec, TopLayerParams, TrainParams
from ftbench.training import AnswerLoss, accumulate_step, encode_examples

# Micro-batches of one step, global ones: 5 examples (ranks take 3 and 2), then 2, then 1 (rank 1 gets none).
MICRO_BATCHES = [[0, 1, 2, 3, 4], [5, 6], [7]]
CONFIGS = {"lora": LoraParams(dropout=0.0), "top_layer": TopLayerParams()}


def main() -> None:
    model_dir, method, out = sys.argv[1:4]
    dist = start("cpu", TrainParams(launcher="torchrun"))  # a plain process when not launched
    torch.manual_seed(0)
    model = prepare(method, "tiny", ModelSpec(path=model_dir), CONFIGS[method], dtype=torch.float32, device="cpu")
    tok = AutoTokenizer.from_pretrained(model_dir)
    examples = [{"instruction": "Which unit moved?", "input": "The report says " + "word " * (3 + 5 * i),
                 "output": " ".join(["answer"] * (1 + i % 4))} for i in range(8)]
    data = encode_examples(tok, examples, max_seq_len=128, style="alpaca", system_prompt=None, completion_only=True,
                           counts={})
    wrapped, _ = dist.wrap(AnswerLoss(model), lambda ps: torch.optim.SGD(ps, lr=0.1), TrainParams(batch_size=4))
    wrapped.train()
    done = accumulate_step(wrapped, data, MICRO_BATCHES, pad_id=tok.pad_token_id, device="cpu", dist=dist)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    every = dist.gather(grads)
    if dist.is_main:
        torch.save({"done": done, "grads": grads, "world_size": dist.world_size, "ranks_agree": all(
            torch.equal(g[n], grads[n]) for g in every for n in grads)}, out)


if __name__ == "__main__":
    main()
