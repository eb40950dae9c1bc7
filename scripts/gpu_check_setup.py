"""Set up `scripts/gpu-check-distributed`: a random model of SmolLM2-135M's shape (no download) with a BPE
tokenizer trained on data/processed, and one params file per check.

    python scripts/gpu_check_setup.py <work dir>
"""

import json
import os
import sys
from pathlib import Path

import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# (name, accelerate config, method): what issue #10's GPU check asks for, one process each
CHECKS = [("fsdp-qlora", "configs/accelerate/fsdp-qlora.yaml", "qlora"),
          ("ddp-lora", "configs/accelerate/ddp.yaml", "lora")]
LAYERS = int(os.environ.get("GPU_CHECK_LAYERS", "30"))  # fewer for a quick try on a CPU


def main() -> None:
    work = Path(sys.argv[1])
    texts = [" ".join(str(r.get(k, "")) for k in ("instruction", "input", "output"))
             for f in sorted(Path("data/processed").glob("*.jsonl")) for r in map(json.loads, f.open())]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=4096, special_tokens=special))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                  pad_token="<|endoftext|>", chat_template=CHATML)
    model_dir = work / "model"
    tok.save_pretrained(model_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=LAYERS,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(model_dir)
    base = yaml.safe_load(Path("params.yaml").read_text())
    base["models"] = {"gpu-check": {"path": str(model_dir)}}
    base["train"].update({"max_seq_len": 256, "batch_size": 8, "checkpoint_every": 2, "launcher": "accelerate",
                          "num_processes": 1})
    base["monitor"]["interval_s"] = 0.2
    for name, config_file, method in CHECKS:
        params = {**base, "train": {**base["train"], "accelerate_config": config_file},
                  "run": {**base["run"], "models": ["gpu-check"], "methods": [method]}}
        (work / f"params-{name}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    print(f"model: {sum(p.numel() for p in LlamaForCausalLM(config).parameters()):,} parameters in {model_dir}")


if __name__ == "__main__":
    main()
