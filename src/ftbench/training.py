"""The training loop: setup, train, save (torchtune-recipe style, explicit rather than a Trainer).

An explicit loop keeps three things visible that the comparison depends on: the loss covers the
answer tokens only, tokens/s counts non-padding tokens, and checkpoints hold everything needed to
resume bit-for-bit on the CPU (trainable weights, optimiser, scheduler, RNG state, step).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ftbench.io import write_json
from ftbench.params import TrainParams
from ftbench.prompts import fit_context, render_prompt

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode_examples(tokenizer: Any, examples: list[dict], *, max_seq_len: int, style: str,
                    system_prompt: str | None, completion_only: bool, counts: dict) -> list[Encoded]:
    """Prompt + answer + EOS as token ids; labels mask the prompt when ``completion_only``.

    Prompts that do not fit are shortened around the answer (see :func:`fit_context`); pairs
    that cannot fit even then are dropped and counted.
    """
    out = []
    eos = tokenizer.eos_token or ""
    for ex in examples:
        answer_ids = tokenizer(ex["output"] + eos, add_special_tokens=False)["input_ids"]
        fitted = fit_context(tokenizer, ex, max_seq_len - len(answer_ids),
                             lambda e: render_prompt(tokenizer, e, style, system_prompt))
        if fitted is None:
            counts["train_dropped_too_long"] = counts.get("train_dropped_too_long", 0) + 1
            continue
        ex, truncated = fitted
        counts["train_truncated"] = counts.get("train_truncated", 0) + int(truncated)
        prompt = render_prompt(tokenizer, ex, style, system_prompt)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        labels = ([IGNORE] * len(prompt_ids) if completion_only else list(prompt_ids)) + answer_ids
        out.append(Encoded(prompt_ids + answer_ids, labels))
    return out


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    steps: int
    epochs: float
    train_tokens: int          # non-padding tokens through forward+backward
    answer_tokens: int         # tokens the loss was computed on
    samples: int
    train_seconds: float       # time inside the loop (excludes load and save)
    final_loss: float | None
    resumed_from_step: int | None


class Checkpointer:
    """Resumable state in a directory DVC persists across runs but never caches.

    ``state.pt`` is replaced atomically; ``config`` guards against resuming a different run.
    """

    def __init__(self, directory: Path, config: dict):
        self.dir = directory
        self.hash = config_hash(config)

    def load(self) -> dict | None:
        path = self.dir / "state.pt"
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        return state if state.get("config_hash") == self.hash else None

    def save(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.pt.tmp"
        torch.save({**state, "config_hash": self.hash}, tmp)
        tmp.replace(self.dir / "state.pt")
        if os.environ.get("FTBENCH_KILL_AT_STEP") == str(state.get("step")):
            # Crash drill for the resume test and for users checking their setup: a real SIGKILL
            # (what an OOM-killer or a pre-empted node does), right after this checkpoint is on disk.
            os.kill(os.getpid(), signal.SIGKILL)

    def finish(self) -> None:
        """Drop the resumable state; keep a marker so the (persisted) directory still exists."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / "status.json", {"complete": True, "config_hash": self.hash})


def train(model: Any, data: list[Encoded], cfg: TrainParams, *, lr: float, seed: int, pad_id: int, device: str,
          checkpointer: Checkpointer | None = None, log: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train the parameters of ``model`` that require grad; return what the cost report needs."""
    import time

    from transformers import get_linear_schedule_with_warmup

    seed_everything(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    total_micro = max(1, math.ceil(per_epoch * cfg.epochs))
    total_steps = max(1, math.ceil(total_micro / cfg.grad_accum))
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    # The order of all epochs is fixed up front so that a resumed run sees the same batches.
    rng = random.Random(seed)
    order = []
    for _ in range(math.ceil(cfg.epochs)):
        idx = list(range(len(data)))
        rng.shuffle(idx)
        order.extend(idx)
    batches = [order[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(total_micro)]

    step, micro, tokens, answer_tokens, samples, resumed = 0, 0, 0, 0, 0, None
    state = checkpointer.load() if checkpointer else None
    if state is not None:
        named = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in state["trainable"].items():
                named[n].copy_(t.to(named[n].device, named[n].dtype))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        random.setstate(state["rng_py"])
        step, micro, tokens, answer_tokens, samples = (state[k] for k in ("step", "micro", "tokens", "answer_tokens",
                                                                          "samples"))
        resumed = step

    model.train()
    loss_value, running = None, []
    start = time.perf_counter()
    while micro < len(batches):
        batch = collate([data[i] for i in batches[micro]], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        n_answer = int((batch["labels"][:, 1:] != IGNORE).sum())
        loss = model(**batch).loss
        (loss / cfg.grad_accum).backward()
        running.append(float(loss.detach()))
        tokens += int(batch["attention_mask"].sum())
        answer_tokens += n_answer
        samples += len(batches[micro])
        micro += 1
        if micro % cfg.grad_accum == 0 or micro == len(batches):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_value = sum(running) / len(running)
            running = []
            if log and (step % cfg.log_every == 0 or micro == len(batches)):
                log(step, {"loss": loss_value, "lr": scheduler.get_last_lr()[0],
                           "epoch": micro / per_epoch})
            if checkpointer and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and micro < len(batches):
                checkpointer.save({
                    "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng_cpu": torch.get_rng_state(), "rng_py": random.getstate(),
                    "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "step": step, "micro": micro, "tokens": tokens, "answer_tokens": answer_tokens,
                    "samples": samples,
                })
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(steps=step, epochs=micro / per_epoch, train_tokens=tokens, answer_tokens=answer_tokens,
                       samples=samples, train_seconds=seconds, final_loss=loss_value, resumed_from_step=resumed)


@torch.no_grad()
def eval_loss(model: Any, data: list[Encoded], *, batch_size: int, pad_id: int, device: str) -> float | None:
    """Mean answer-token loss on held-out pairs (validation), weighted by token count."""
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        batch = {k: v.to(device) for k, v in collate(data[i:i + batch_size], pad_id).items()}
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total += float(model(**batch).loss) * n
        count += n
    return total / count if count else None


def result_dict(result: TrainResult) -> dict:
    return asdict(result)
